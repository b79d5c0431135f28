//! The hash chain over the event log: what each event's hash is computed over, the attributes
//! that carry the chain with the event, signed checkpoints, and the verifier that checks a copy
//! of the log end to end (docs/integrity.md).
//!
//! Owns the one rule every side computes alike: an event's hash is SHA-256 of the previous
//! event's hash followed by the event's canonical bytes, the RFC 8785 (JCS) form of its
//! CloudEvent without `chainhash` and `chainprev`. The store applies it when it commits
//! ([`Chained`]); `rollcall verify` recomputes it from whatever a sink delivered ([`record`]),
//! so a hash is a function of what a consumer receives, never of rollcall's storage.
//!
//! It imports no rollcall module but `event`, and does no I/O but the verifier's own
//! temporary file: the store, the sinks and the command line hand it bytes.

mod canonical;
pub mod checkpoint;
mod index;
pub mod record;
pub mod verify;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use canonical::Members;

use crate::event::Event;

/// The CloudEvents extension attribute holding an event's own hash (64 hex digits).
pub const HASH: &str = "chainhash";
/// The attribute holding the hash of the event before it in the chain.
pub const PREV: &str = "chainprev";
/// The attribute holding the id of the event before it in the chain (absent from the first).
pub const PREV_ID: &str = "chainprevid";

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// What the first event of a chain follows: no event. An event whose `chainprev` is this
/// starts the chain (the first event of a new store, or a store's first event after it was
/// upgraded to a rollcall that chains).
pub const GENESIS: Hash = [0; 32];

/// The chain's attributes of one event, as an encoder needs them per event (the OCSF
/// `record_integrity` profile: the fingerprint, the previous event's hash and id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub hash: Hash,
    pub prev: Hash,
    /// `None` for the first event of a chain.
    pub prev_id: Option<Uuid>,
}

/// The hash of an event whose canonical bytes are `canonical`, following `prev`.
pub fn next(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// Lowercase hex, as the attributes carry hashes.
pub fn hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A hash from its 64 lowercase hex digits; `None` for anything else. Only the form the
/// store writes is read, so that no edit of an attribute leaves its meaning unchanged.
pub fn unhex(text: &str) -> Option<Hash> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        hash[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}

/// An event with the id of the one before it: what the log stores, but for `chainprev` and
/// `chainhash`, and what the canonical bytes are made of.
#[derive(Serialize)]
struct Unlinked<'a> {
    #[serde(flatten)]
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    chainprevid: Option<Uuid>,
}

/// `event` (with its `sequence` set) chained after the event whose hash is `prev` and id
/// `prev_id`: its link, and the JSON the log stores (the event with `chainprevid`, `chainprev`
/// and `chainhash`).
pub fn chain(event: &Event, prev: &Hash, prev_id: Option<Uuid>) -> (Link, Vec<u8>) {
    let unlinked = Unlinked {
        event,
        chainprevid: prev_id,
    };
    let mut stored = serde_json::to_vec(&unlinked).expect("rollcall's own types always serialise");
    let hash = match Members::scan(&stored) {
        Some(members) => members.hash(prev),
        None => {
            let value: Value = serde_json::from_slice(&stored).expect("serde_json reads its own");
            next(prev, &canonical::canonical(&value))
        }
    };
    // The object serde_json wrote ends in `}`: the link goes before it, last.
    stored.pop();
    stored.extend_from_slice(
        format!(r#","{PREV}":"{}","{HASH}":"{}"}}"#, hex(prev), hex(&hash)).as_bytes(),
    );
    let link = Link {
        hash,
        prev: *prev,
        prev_id,
    };
    (link, stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, DATA_CONTENT_TYPE, SPEC_VERSION};

    fn event() -> Event {
        Event {
            specversion: SPEC_VERSION.into(),
            id: Uuid::now_v7(),
            source: "superset://t".into(),
            event_type: EventType::UserCreated,
            subject: "7".into(),
            time: chrono::Utc::now(),
            datacontenttype: DATA_CONTENT_TYPE.into(),
            dataschema: None,
            sequence: Event::sequence_for(3),
            data: serde_json::json!({"user": {"b": 1.5, "a": "é\u{1}", "n": 12}}),
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_a_hash() {
        let h = next(&GENESIS, b"x");
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex(&hex(&h).to_uppercase()), None, "one spelling only");
        assert_eq!(unhex("00"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn the_stored_event_carries_its_link_and_the_hash_covers_the_rest() {
        let e = event();
        let prev_id = Uuid::now_v7();
        let prev = next(&GENESIS, b"before");
        let (link, stored) = chain(&e, &prev, Some(prev_id));
        let v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(v[HASH], hex(&link.hash));
        assert_eq!(v[PREV], hex(&prev));
        assert_eq!(v[PREV_ID], prev_id.to_string());
        assert_eq!(
            serde_json::from_slice::<Event>(&stored).unwrap(),
            e,
            "older readers see the event unchanged"
        );
        let mut without = v.as_object().unwrap().clone();
        without.remove(HASH);
        without.remove(PREV);
        let jcs = serde_json_canonicalizer::to_vec(&without).unwrap();
        assert_eq!(
            link.hash,
            next(&prev, &jcs),
            "RFC 8785, as the crate writes it"
        );
    }
}
