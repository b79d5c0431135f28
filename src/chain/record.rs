//! One delivered event as the verifier reads it, from what a destination holds: a CloudEvent in
//! structured JSON (a JSONL line, a structured Kafka value or webhook body, a stored event), or
//! in binary mode (attributes as headers, `data` as the body).
//!
//! Owns turning either form into the same JSON object, so an event hashes alike however it
//! travelled, and recomputing its hash from it. It never judges the chain: that is `verify`'s.

use std::fmt;

use std::borrow::Cow;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::canonical::{self, Members};
use super::checkpoint;
use super::{unhex, Hash, Link, HASH, PREV, PREV_ID, REPLAYED};
use crate::event::EventType;

/// Where a delivered event is: what a verifier names when it finds a break there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A line of a file, from 1.
    Line(u64),
    /// An offset of the store's log.
    Offset(u64),
    /// A message of a Kafka topic.
    Message { partition: i32, offset: i64 },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Offset(o) => write!(f, "log offset {o}"),
            Place::Message { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
        }
    }
}

/// One event read from a copy of the log, and where it was.
pub type Delivered = (Place, Result<Record, Unreadable>);

/// An event as a destination holds it.
pub enum Wire<'a> {
    /// The whole CloudEvent as JSON.
    Structured(&'a [u8]),
    /// Binary mode: the attributes by their CloudEvents names (the protocol's `ce_`/`ce-` prefix
    /// taken off; the content type as `datacontenttype`), and `data`.
    Binary {
        attributes: Vec<(&'a str, &'a str)>,
        data: &'a [u8],
    },
}

/// What the verifier needs of one delivered event.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its log offset, from `sequence`.
    pub offset: u64,
    pub id: String,
    pub event_type: String,
    /// Its `source`, if it has one: which shard wrote it, where shards share a topic.
    pub source: Option<String>,
    /// `None` for an event without chain attributes.
    pub chain: Option<Chained>,
    /// In a form that cannot carry the chain (an OCSF 1.8.0 record): only the store proves it.
    pub unchainable: bool,
}

/// A chained event: what it claims, and what its content hashes to.
#[derive(Debug, Clone)]
pub struct Chained {
    /// The link as the event's attributes state it.
    pub link: Link,
    /// What the content must hash to: a CloudEvent's `chainhash`, an OCSF record's
    /// fingerprint ([`super::attested`]).
    pub claimed: Hash,
    /// What the content hashes to: a CloudEvent's hash recomputed from its content and its
    /// `chainprev`; an OCSF record's fingerprint recomputed.
    pub computed: Hash,
    /// Where `claimed` is stated, for the message (`` `chainhash` ``).
    pub claim: &'static str,
    /// A checkpoint's `data`, or why it is not one; `None` for other types.
    pub checkpoint: Option<Result<checkpoint::Data, String>>,
    /// The store whose chain the event names (an OCSF record's `chain_uid`): what a checkpoint
    /// left out of the copy is recognised by ([`checkpoint::id`]). `None` for a CloudEvent,
    /// whose copy holds its checkpoints.
    pub store: Option<String>,
}

/// A delivered event that is not a CloudEvent rollcall wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event rollcall wrote: {0}")]
pub struct Unreadable(pub String);

/// Read one delivered event.
pub fn read(wire: Wire<'_>) -> Result<Record, Unreadable> {
    let bad = |what: String| Unreadable(what);
    match wire {
        Wire::Structured(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
            match Members::scan(bytes) {
                Some(members) => from_members(members),
                None => {
                    let map: Map<String, Value> =
                        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
                    from_members(Members::of(&map))
                }
            }
        }
        Wire::Binary { attributes, data } => {
            let not_json = |e: String| bad(format!("its data is not JSON: {e}"));
            std::str::from_utf8(data).map_err(|e| not_json(e.to_string()))?;
            let data = canonical::value(data).map_err(|e| not_json(e.to_string()))?;
            let mut members: Vec<_> = attributes
                .into_iter()
                .map(|(k, v)| {
                    let text = serde_json::to_vec(v).expect("a string serialises");
                    (Cow::Borrowed(k), Cow::Owned(text))
                })
                .collect();
            members.push((Cow::Borrowed("data"), data));
            from_members(Members(members))
        }
    }
}

/// A member's string value, read from its JSON text.
fn text(members: &Members<'_>, name: &str) -> Result<String, Unreadable> {
    let raw = members
        .get(name)
        .ok_or_else(|| Unreadable(format!("it has no `{name}`")))?;
    serde_json::from_slice(raw).map_err(|_| Unreadable(format!("`{name}` is not a string")))
}

/// A hash attribute's value: exactly 64 lowercase hex digits in quotes, as the store writes it.
fn hash_of(raw: Option<Cow<'_, [u8]>>, name: &str) -> Result<Hash, Unreadable> {
    raw.as_deref()
        .and_then(|r| r.strip_prefix(b"\"")?.strip_suffix(b"\""))
        .and_then(|r| std::str::from_utf8(r).ok())
        .and_then(unhex)
        .ok_or_else(|| Unreadable(format!("`{name}` is missing or not 64 hex digits")))
}

fn from_members(mut members: Members<'_>) -> Result<Record, Unreadable> {
    let sequence = text(&members, "sequence")?;
    let offset = sequence
        .parse()
        .map_err(|_| Unreadable(format!("`sequence` is `{sequence}`, not a log offset")))?;
    let id = text(&members, "id")?;
    let event_type = text(&members, "type")?;
    let source = text(&members, "source").ok();
    members.take(REPLAYED);
    let (hash, prev) = (members.take(HASH), members.take(PREV));
    if hash.is_none() && prev.is_none() {
        return Ok(Record {
            offset,
            id,
            event_type,
            source,
            chain: None,
            unchainable: false,
        });
    }
    let (claimed, prev) = (hash_of(hash, HASH)?, hash_of(prev, PREV)?);
    let prev_id = match members.get(PREV_ID) {
        None => None,
        Some(raw) => Some(
            serde_json::from_slice::<String>(raw)
                .ok()
                .and_then(|s| Uuid::parse_str(&s).ok())
                .ok_or_else(|| Unreadable(format!("`{PREV_ID}` is not an event id")))?,
        ),
    };
    let checkpoint =
        (event_type == EventType::Checkpoint.as_str()).then(|| match members.get("data") {
            Some(data) => {
                serde_json::from_slice::<checkpoint::Data>(data).map_err(|e| e.to_string())
            }
            None => Err("it has no `data`".to_owned()),
        });
    let computed = members.hash(&prev);
    Ok(Record {
        offset,
        id,
        event_type,
        source,
        chain: Some(Chained {
            link: Link {
                hash: claimed,
                prev,
                prev_id,
            },
            claimed,
            computed,
            claim: "`chainhash`",
            checkpoint,
            store: None,
        }),
        unchainable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{chain, GENESIS};
    use crate::event::{Event, DATA_CONTENT_TYPE, SPEC_VERSION};

    fn stored() -> (Link, Vec<u8>) {
        let event = Event {
            specversion: SPEC_VERSION.into(),
            id: Uuid::now_v7(),
            source: "superset://t".into(),
            event_type: EventType::UserUpdated,
            subject: "7".into(),
            time: chrono::Utc::now(),
            datacontenttype: DATA_CONTENT_TYPE.into(),
            dataschema: Some(EventType::UserUpdated.dataschema()),
            sequence: Event::sequence_for(5),
            data: serde_json::json!({"user": {"id": 7, "name": "Zoë", "n": [1, 2.5, -0.0]}}),
        };
        chain(&event, 5, &GENESIS, Some(Uuid::now_v7()))
    }

    #[test]
    fn a_stored_event_read_back_hashes_to_its_own_chainhash() {
        let (link, bytes) = stored();
        let r = read(Wire::Structured(&bytes)).unwrap();
        assert_eq!(r.offset, 5);
        let chained = r.chain.unwrap();
        assert_eq!(chained.link, link);
        assert_eq!(chained.computed, link.hash);
    }

    #[test]
    fn the_same_event_in_binary_mode_hashes_alike() {
        let (link, bytes) = stored();
        let v: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        let owned: Vec<(String, String)> = v
            .iter()
            .filter(|(k, _)| *k != "data")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let data = serde_json::to_vec(&v["data"]).unwrap();
        let r = read(Wire::Binary {
            attributes: owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            data: &data,
        })
        .unwrap();
        assert_eq!(r.chain.unwrap().computed, link.hash);
    }

    #[test]
    fn a_changed_value_changes_the_hash_but_not_the_claim() {
        let (link, bytes) = stored();
        let text = String::from_utf8(bytes).unwrap().replace("Zoë", "Zoe");
        let chained = read(Wire::Structured(text.as_bytes()))
            .unwrap()
            .chain
            .unwrap();
        assert_eq!(chained.link.hash, link.hash);
        assert_ne!(chained.computed, link.hash);
    }

    #[test]
    fn an_event_without_chain_attributes_is_unchained_and_half_a_link_is_unreadable() {
        let plain =
            br#"{"id":"x","type":"user.created","sequence":"00000000000000000001","data":{}}"#;
        assert!(read(Wire::Structured(plain)).unwrap().chain.is_none());
        let half = br#"{"id":"x","type":"user.created","sequence":"1","chainhash":"00","data":{}}"#;
        assert!(read(Wire::Structured(half)).is_err());
        assert!(read(Wire::Structured(b"{\"id\":\"x\"")).is_err());
    }
}
