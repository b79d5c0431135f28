//! The event envelope: CloudEvents 1.0 in structured JSON mode.
//!
//! Owns the envelope and the list of event types. It must never import other rollcall modules
//! (sinks, the store and the diff all depend on it) and never assign ids or offsets itself.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Declares [`EventType`] once: each variant with its CloudEvents `type` string, from which
/// serde's names, [`EventType::ALL`] and [`EventType::as_str`] all follow.
macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// Every event type rollcall emits, with its CloudEvents `type` string.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            schemars::JsonSchema,
        )]
        pub enum EventType {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant,
            )+
        }

        impl EventType {
            pub const ALL: [EventType; [$($name),+].len()] = [$(EventType::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)+
                }
            }
        }
    };
}

event_types! {
    UserObserved => "user.observed",
    UserCreated => "user.created",
    UserUpdated => "user.updated",
    UserDeactivated => "user.deactivated",
    UserReactivated => "user.reactivated",
    UserDeleted => "user.deleted",
    UserRoleAdded => "user.role_added",
    UserRoleRemoved => "user.role_removed",
    UserGroupAdded => "user.group_added",
    UserGroupRemoved => "user.group_removed",
    UserLogin => "user.login",
    UserLoginFailed => "user.login_failed",
    /// Kylin locked the account after failed logins (docs/kylin.md K29, K48).
    UserLocked => "user.locked",
    /// A Kylin lock was lifted: a login after it expired, or a password change (K49).
    UserUnlocked => "user.unlocked",
    /// Kylin's `default_password` went true → false: the user set their own password (K52).
    UserPasswordChanged => "user.password_changed",
    /// A row of Superset's action log (`/api/v1/log/`): what a user did.
    AuditAction => "audit.action",
    /// One MCP tool call an AI agent made through Superset's MCP service: the action-log rows
    /// of the call joined (docs/superset.md S48–S53).
    AgentToolCalled => "agent.tool_called",
    /// rollcall's own: a signature over the hash chain's head (docs/integrity.md).
    Checkpoint => "rollcall.checkpoint",
    /// rollcall's own, about one source: a full reconcile of it ended, and what it saw
    /// (docs/events.md, Completeness).
    SyncCompleted => "sync.completed",
}

impl EventType {
    /// The `$id` of this type's JSON Schema in `schemas/`, which events carry as `dataschema`.
    pub fn dataschema(self) -> String {
        format!("urn:rollcall:schema:{}", self.as_str())
    }

    /// What a source's users or its log produce; the others rollcall writes itself (the
    /// checkpoints of the hash chain, the end of a full reconcile), about no user.
    pub fn from_source(self) -> bool {
        !matches!(self, EventType::Checkpoint | EventType::SyncCompleted)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before it gets an id, a time and an offset: what the diff derives and a source
/// reads natively.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub event_type: EventType,
    /// The user the event is about (its key); `None` for an action-log row without a user.
    pub subject: Option<String>,
    pub data: serde_json::Value,
}

/// What a `sync.completed` carries: one full reconcile of a source, as it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncCompleted {
    /// What the cycle read: `full`, every user (the only cycles that end with one).
    pub mode: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Users the source handed over in this read.
    pub users_seen: usize,
    /// Users the store holds for the source after it.
    pub users_known: usize,
    /// Events the read derived (before this one): zero means nothing changed.
    pub events: usize,
    /// Deletions the mass-delete guard held back: while any are, the copy is not complete.
    pub held_deletions: usize,
}

/// The `subject` of a `sync.completed`: it is about the source, no user.
pub const SYNC_SUBJECT: &str = "sync";

pub const SPEC_VERSION: &str = "1.0";
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// One event, exactly as stored in the log and as delivered to every sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub specversion: String,
    /// UUIDv7 assigned when the event is derived; reused on every redelivery and replay, so
    /// consumers can de-duplicate.
    pub id: Uuid,
    /// `superset://<source name>` or `kylin://<source name>`; with the shard of the process
    /// that polls it as a query when the config sets `shard` (`superset://prod?shard=eu-1`,
    /// see [`source_uri`]).
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The Superset user id, as a string, or the Kylin username; `anonymous` for an action-log row without a user
    /// (an anonymous request, or a user deleted since, whose rows Superset keeps without id),
    /// and for an agent's tool call no row of which names the user it ran as.
    pub subject: String,
    /// When rollcall observed the change.
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    /// The JSON Schema of this type's events, as its `$id` names it (`schemas/`). Events
    /// stored before it was added have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// The log offset, zero-padded to 20 digits: the CloudEvents `sequence` extension requires
    /// a string whose lexicographic order is the event order.
    pub sequence: String,
    pub data: serde_json::Value,
}

/// The query that names the shard in a `source`.
const SHARD_QUERY: &str = "?shard=";

/// The `source` of a source's events: its kind's URI (`superset://prod`), with the shard of the
/// process polling it as a query when there is one (`superset://prod?shard=eu-1`), so that
/// processes publishing into one topic say which of them wrote each event. No shard: the
/// kind's URI exactly, as before shards existed.
pub fn source_uri(kind_uri: &str, shard: Option<&str>) -> String {
    match shard {
        Some(shard) => format!("{kind_uri}{SHARD_QUERY}{shard}"),
        None => kind_uri.to_owned(),
    }
}

/// The source a `source` names, whichever process polled it: without its shard. What a user's
/// identity rests on (the Kafka key, an SSF subject), so that a source moved to another shard
/// keeps its users' keys.
pub fn unsharded(source: &str) -> &str {
    source.split_once(SHARD_QUERY).map_or(source, |(s, _)| s)
}

/// The shard a `source` names, if any.
pub fn shard_of(source: &str) -> Option<&str> {
    source.split_once(SHARD_QUERY).map(|(_, shard)| shard)
}

impl Event {
    /// The log offset this event was stored at.
    pub fn offset(&self) -> Option<u64> {
        self.sequence.parse().ok()
    }

    /// The `sequence` string for a log offset.
    pub fn sequence_for(offset: u64) -> String {
        format!("{offset:020}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_a_query_of_the_source_and_no_shard_keeps_the_kind_uri_exactly() {
        assert_eq!(source_uri("superset://prod", None), "superset://prod");
        let sharded = source_uri("superset://prod", Some("eu-1"));
        assert_eq!(sharded, "superset://prod?shard=eu-1");
        assert_eq!(unsharded(&sharded), "superset://prod");
        assert_eq!(shard_of(&sharded), Some("eu-1"));
        assert_eq!(unsharded("kylin://bi"), "kylin://bi");
        assert_eq!(shard_of("kylin://bi"), None);
    }
}
