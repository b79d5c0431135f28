//! What the Superset source remembers between cycles: the high-water marks of incremental
//! polls, how far the action log was read, what the release allows, and which records could
//! not be read.
//!
//! Owns the cursor's shape (the store keeps it as JSON beside the source's state, so a field
//! added here needs `#[serde(default)]`) and what `status` shows of it. It never reads
//! Superset and never writes the store: the reads fill it in, and the cycle commits it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::LogCursor;
use super::capabilities::Capabilities;

/// What the Superset source remembers between cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Newest `changed_on` and `last_login` seen: incremental polls ask for what is newer.
    pub hwm_changed_on: Option<DateTime<Utc>>,
    pub hwm_last_login: Option<DateTime<Utc>>,
    /// How far the action log has been read.
    #[serde(default)]
    pub log: LogCursor,
    /// Why the action log could not be read on the last try (the users stream goes on).
    #[serde(default)]
    pub log_error: Option<LogError>,
    /// Action-log rows that could not be read, ever.
    #[serde(default)]
    pub log_malformed_rows: u64,
    /// Users whose latest read could not be understood, by id, with why. Their stored records
    /// stand as they are until a read succeeds: no event, and never a deletion, is inferred
    /// from a record rollcall could not read.
    #[serde(default)]
    pub unreadable_users: BTreeMap<u64, String>,
    /// What the release allows, as last detected (at start and at each full reconcile).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// The id of the account rollcall logs in with: its reads of the action log are rollcall's
    /// own noise.
    #[serde(default)]
    pub service_account_id: Option<u64>,
    /// When an incremental poll last compared membership through the roles list.
    #[serde(default)]
    pub membership_read_at: Option<DateTime<Utc>>,
}

/// A failed read of the action log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogError {
    pub at: DateTime<Utc>,
    pub message: String,
}

impl Cursor {
    /// The action log's health, for `status`: never the ids of rows seen.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "release": self.capabilities.as_ref().map(|caps| serde_json::json!({
                "detected_at": caps.detected_at,
                "filterable_user_columns": caps.user_filters,
                "role_search": caps.role_search,
                "strategy": caps.strategy(),
            })),
            "action_log": {
                "read_up_to": self.log.hwm,
                "last_error": self.log_error,
                "unreadable_rows": self.log_malformed_rows,
                "mcp_calls_open": self.log.calls.open(),
                "mcp_calls_given_up": self.log.calls.unfinished,
            },
            "unreadable_users": self.unreadable_users.iter()
                .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
                .collect::<Vec<_>>(),
        })
    }
}
