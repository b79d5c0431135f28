//! Encoding: the one reader of a stored event, and the encoders that turn it into what a sink
//! puts on the wire.
//!
//! Owns the shape of a stored event as sinks, replay and retention see it ([`Envelope`]) and the
//! choice of wire format ([`Format`], a sink's `format` key). A body is a pure function of the
//! stored bytes and whether it is a replay: in CloudEvents it is the stored bytes or a slice of
//! them (never re-serialized; a replay's marker is appended), in OCSF a record built from them
//! alone, so every redelivery of an event by the same rollcall is byte-identical, and a replay
//! too but for its marker. It must never do I/O, and it knows no sink and no store beyond the
//! stored bytes.

pub mod cloudevents;
mod layout;
pub mod ocsf;
pub mod table;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chain::{self, Link};
use crate::event::EventType;
use crate::store::{StoreError, StoredEvent};

pub use cloudevents::{Binding, Mode};

/// A stored event that is not the CloudEvent rollcall wrote (or whose `data` does not have the
/// shape its `type` promises): the store is damaged, or was written by another rollcall version.
#[derive(Debug, thiserror::Error)]
#[error("the stored event at offset {offset} is not a readable CloudEvent")]
pub struct Unreadable {
    pub offset: u64,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl From<Unreadable> for StoreError {
    fn from(e: Unreadable) -> StoreError {
        StoreError::Corrupt {
            what: format!("event at offset {}", e.offset),
            detail: e.source.to_string(),
        }
    }
}

/// The attributes of a stored event, borrowed from its bytes: encoding must not re-serialize
/// `data`, so a binary-mode body is the stored `data` byte for byte.
#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(skip)]
    pub offset: u64,
    /// The event exactly as stored.
    #[serde(skip)]
    pub bytes: &'a [u8],
    /// What holds `bytes`, so that a body borrowed from them can be shared rather than copied
    /// (see [`crate::sink::Message::encode`]).
    #[serde(skip)]
    pub stored: Option<&'a sled::IVec>,
    /// This delivery re-sends history at an operator's request (`rollcall replay`), so the
    /// encoded event carries the replay marker (docs/integrity.md, Replays are marked); never
    /// read from the stored bytes, which hold none.
    #[serde(skip)]
    pub replayed: bool,
    #[serde(borrow)]
    pub specversion: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub event_type: Cow<'a, str>,
    #[serde(borrow)]
    pub subject: Cow<'a, str>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub datacontenttype: Cow<'a, str>,
    /// Absent from events stored before rollcall named their schemas.
    #[serde(borrow, default)]
    pub dataschema: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub sequence: Cow<'a, str>,
    /// The JSON of `data`, as stored. Not checked when the event is in the store's layout
    /// (see `layout`): an encoder that reads values from it parses it, and says so if it cannot.
    #[serde(borrow, deserialize_with = "raw_json")]
    pub data: &'a str,
    /// The hash chain's attributes (`chainprevid`, `chainprev`, `chainhash`), absent from
    /// events stored before the store chained them; read them as a [`Link`] with
    /// [`Envelope::link`].
    #[serde(borrow, default)]
    pub chainprevid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub chainprev: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub chainhash: Option<Cow<'a, str>>,
}

/// `data` as serde_json reads it: any JSON value, kept as its text.
fn raw_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'de str, D::Error> {
    <&RawValue>::deserialize(d).map(RawValue::get)
}

impl<'a> Envelope<'a> {
    pub fn parse(stored: &'a StoredEvent) -> Result<Envelope<'a>, Unreadable> {
        let unreadable = |source: Box<dyn std::error::Error + Send + Sync>| Unreadable {
            offset: stored.offset,
            source,
        };
        // UTF-8 checked once for the whole event: parsing bytes checks each string on its own,
        // which costs more on events of many short strings.
        let text = std::str::from_utf8(&stored.bytes).map_err(|e| unreadable(e.into()))?;
        let mut e = match layout::read(text) {
            Some(e) => e,
            None => serde_json::from_str(text).map_err(|e| unreadable(e.into()))?,
        };
        e.offset = stored.offset;
        e.bytes = &stored.bytes;
        e.stored = Some(&stored.bytes);
        Ok(e)
    }

    /// The ordering key: events with the same key reach a consumer in log order. A user's
    /// events share one, `<source>:<subject>`. Each action-log row has its own,
    /// `<source>:log/<log_id>`: rows are independent, so one busy actor's rows must not wait
    /// behind one another (and be re-sent together after a restart). An agent's tool call is
    /// keyed by the row that finished it, like that row. The source is named without its shard
    /// ([`crate::event::unsharded`]): a source moved to another shard keeps its keys, so a
    /// user's events stay in one partition, in order, across the move.
    pub fn key(&self) -> String {
        let source = crate::event::unsharded(&self.source);
        #[derive(Deserialize)]
        struct Row {
            log_id: u64,
        }
        if self.event_type == EventType::AuditAction.as_str()
            || self.event_type == EventType::AgentToolCalled.as_str()
        {
            if let Ok(row) = serde_json::from_str::<Row>(self.data) {
                return format!("{source}:log/{}", row.log_id);
            }
        }
        format!("{source}:{}", self.subject)
    }

    /// The event's place in the hash chain, for an encoder that carries it (the hash, the
    /// previous event's hash and id); `None` for an event stored before the chain began, or
    /// whose chain attributes are not what the store writes.
    pub fn link(&self) -> Option<Link> {
        let prev_id = match &self.chainprevid {
            Some(id) => Some(uuid::Uuid::parse_str(id).ok()?),
            None => None,
        };
        Some(Link {
            hash: chain::unhex(self.chainhash.as_deref()?)?,
            prev: chain::unhex(self.chainprev.as_deref()?)?,
            prev_id,
        })
    }

    pub fn id(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.id).ok()
    }

    pub fn time(&self) -> Result<DateTime<Utc>, Unreadable> {
        parse_time(&self.time).map_err(|e| Unreadable {
            offset: self.offset,
            source: e.into(),
        })
    }
}

/// A stored time: RFC 3339 as rollcall writes it, read by chrono's RFC 3339 parser, which is
/// several times faster than its general one; anything else as the general one reads it (and
/// with its error), so that what was accepted before still is.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .or_else(|_| text.parse())
}

/// What a sink sends: its `format` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The stored CloudEvent, unchanged (binary or structured per the sink's `mode`).
    #[default]
    Cloudevents,
    /// One OCSF record per event, as JSON, in the sink's `ocsf_version` (see [`ocsf`]).
    Ocsf,
    /// A row per user: the user's current record, a tombstone after a deletion (see
    /// [`table`]). A Kafka sink's `table = true`, never written as `format`.
    #[serde(skip)]
    #[schemars(skip)]
    Table,
}

/// One event as it goes on the wire.
pub struct Encoded<'a> {
    /// The ordering key (see [`Envelope::key`]).
    pub key: String,
    /// Attribute headers in the order they are sent; empty when the body carries them.
    pub headers: Vec<(&'static str, &'a str)>,
    pub content_type: &'a str,
    /// Borrowed from the stored bytes in CloudEvents (no copy); built, so owned, in OCSF.
    pub body: Cow<'a, [u8]>,
}

/// Turns envelopes into [`Encoded`] events for one sink.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    pub format: Format,
    pub mode: Mode,
    pub binding: Binding,
    /// The OCSF version of [`Format::Ocsf`] records; CloudEvents ignores it.
    pub ocsf: ocsf::Version,
}

impl Encoder {
    /// Whether this format has a form for events of this `type`: CloudEvents for every one,
    /// OCSF for those a source emits (a checkpoint is no OCSF event; the chain reaches OCSF
    /// records through their own integrity attributes; nor is the end of a full reconcile, which
    /// tells of no activity). Events it has none for are not sent, and count as done.
    pub fn carries(&self, event_type: &str) -> bool {
        match self.format {
            Format::Cloudevents => true,
            Format::Ocsf => !EventType::ALL
                .iter()
                .any(|t| !t.from_source() && t.as_str() == event_type),
            Format::Table => table::carries(event_type),
        }
    }

    /// Whether the event's message removes its key rather than giving it a value (a table's
    /// row of a deleted user).
    pub fn tombstone(&self, event_type: &str) -> bool {
        self.format == Format::Table && table::tombstone(event_type)
    }

    /// The event `e` of the log of the store whose id is `store` (an OCSF record names that
    /// store's chain). Never fails in CloudEvents; in OCSF, fails when `data` lacks what its
    /// `type` promises.
    pub fn encode<'a>(
        &self,
        e: &'a Envelope<'a>,
        store: &'a str,
    ) -> Result<Encoded<'a>, Unreadable> {
        match self.format {
            Format::Cloudevents => Ok(cloudevents::encode(e, self.mode, self.binding)),
            Format::Ocsf => ocsf::encode(e, self.ocsf, store),
            Format::Table => table::encode(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(event: serde_json::Value) -> String {
        let stored = StoredEvent {
            offset: 0,
            bytes: serde_json::to_vec(&event).unwrap().into(),
        };
        Envelope::parse(&stored).unwrap().key()
    }

    fn event(event_type: &str, subject: &str, data: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "specversion": "1.0", "id": "01900000-0000-7000-8000-000000000000",
            "source": "superset://prod", "type": event_type, "subject": subject,
            "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
            "sequence": "00000000000000000000", "data": data,
        })
    }

    #[test]
    fn ocsf_carries_every_type_but_checkpoints_and_cloudevents_every_one() {
        let encoder = |format| Encoder {
            format,
            mode: Mode::Structured,
            binding: Binding::Http,
            ocsf: ocsf::Version::default(),
        };
        for t in EventType::ALL {
            assert!(encoder(Format::Cloudevents).carries(t.as_str()));
            assert_eq!(
                encoder(Format::Ocsf).carries(t.as_str()),
                t.from_source(),
                "{t}"
            );
        }
    }

    #[test]
    fn the_chain_attributes_are_read_as_a_link_and_travel_as_binary_headers() {
        let hash = crate::chain::hex(&[0xab; 32]);
        let prev = crate::chain::hex(&[0xcd; 32]);
        let mut e = event("user.created", "7", serde_json::json!({}));
        e["chainprevid"] = serde_json::json!("01900000-0000-7000-8000-000000000001");
        e["chainprev"] = serde_json::json!(prev);
        e["chainhash"] = serde_json::json!(hash);
        let stored = StoredEvent {
            offset: 0,
            bytes: serde_json::to_vec(&e).unwrap().into(),
        };
        let envelope = Envelope::parse(&stored).unwrap();
        let link = envelope.link().unwrap();
        assert_eq!((link.hash, link.prev), ([0xab; 32], [0xcd; 32]));
        assert_eq!(
            link.prev_id.unwrap().to_string(),
            "01900000-0000-7000-8000-000000000001"
        );
        for (binding, prefix) in [(Binding::Kafka, "ce_"), (Binding::Http, "ce-")] {
            let encoded = cloudevents::encode(&envelope, Mode::Binary, binding);
            let header = |name: &str| {
                encoded
                    .headers
                    .iter()
                    .find(|(k, _)| *k == format!("{prefix}{name}"))
                    .map(|(_, v)| *v)
            };
            assert_eq!(header("chainhash"), Some(hash.as_str()));
            assert_eq!(header("chainprev"), Some(prev.as_str()));
            assert!(header("chainprevid").is_some());
        }
    }

    #[test]
    fn audit_rows_of_one_actor_are_ordered_by_row_and_user_events_by_user() {
        let row = |id: u64| event("audit.action", "7", serde_json::json!({"log_id": id}));
        assert_eq!(key_of(row(41)), "superset://prod:log/41");
        assert_ne!(key_of(row(41)), key_of(row(42)), "independent rows");
        let call = event("agent.tool_called", "7", serde_json::json!({"log_id": 43}));
        assert_eq!(key_of(call), "superset://prod:log/43", "independent calls");
        assert_eq!(
            key_of(event(
                "user.updated",
                "7",
                serde_json::json!({"log_id": 41})
            )),
            "superset://prod:7",
            "a user's events keep their key"
        );
    }

    #[test]
    fn the_key_names_the_source_without_the_shard_that_polled_it() {
        let mut user = event("user.updated", "7", serde_json::json!({}));
        user["source"] = serde_json::json!("superset://prod?shard=eu-1");
        assert_eq!(key_of(user), "superset://prod:7");
        let mut row = event("audit.action", "7", serde_json::json!({"log_id": 41}));
        row["source"] = serde_json::json!("superset://prod?shard=eu-2");
        assert_eq!(key_of(row), "superset://prod:log/41");
    }
}
