//! The hash chain over the event log: what each event's hash is computed over, the attributes
//! that carry the chain with the event, signed checkpoints, and the verifier that checks a copy
//! of the log end to end (docs/integrity.md).
//!
//! Owns the one rule every side computes alike: an event's hash is SHA-256 of the previous
//! event's hash followed by the event's canonical bytes, the RFC 8785 (JCS) form of its
//! CloudEvent without `chainhash`, `chainprev` and the replay marker `replayed`. The store applies it when it commits
//! ([`Chained`]); `rollcall verify` recomputes it from whatever a sink delivered ([`record`]),
//! so a hash is a function of what a consumer receives, never of rollcall's storage.
//!
//! An OCSF 1.9.0 record carries the same chain in its `record_integrity` attestation
//! ([`attested`]): its own fingerprint, and the event's `chainhash` and predecessor, so an OCSF
//! copy is checked by the same verifier.
//!
//! It imports no rollcall module but `event` and `text`, and does no I/O but the verifier's own
//! temporary file: the store, the sinks and the command line hand it bytes.

pub mod attested;
mod canonical;
pub mod checkpoint;
mod index;
mod link;
mod outline;
pub mod record;
pub mod verify;

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use link::{chain, unchained};

/// The CloudEvents extension attribute holding an event's own hash (64 hex digits).
pub const HASH: &str = "chainhash";
/// The attribute holding the hash of the event before it in the chain.
pub const PREV: &str = "chainprev";
/// The attribute holding the id of the event before it in the chain (absent from the first).
pub const PREV_ID: &str = "chainprevid";
/// The replay marker, `replayed: true`, on an event `rollcall replay` re-sent: it says how this
/// copy arrived, not what happened, so the hash leaves it out and a replayed copy verifies as
/// the duplicate it is.
pub const REPLAYED: &str = "replayed";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventType, DATA_CONTENT_TYPE, SPEC_VERSION};

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
    fn the_stored_event_is_serdes_with_its_link_and_the_hash_covers_its_rfc_8785_form() {
        let datas = [
            serde_json::json!({"user": {"id": 7, "name": "Zoë \"q\"\n", "roles": [1, -2, null]}}),
            serde_json::json!({"user": {"b": 1.5, "a": "é\u{1}", "n": 12}}),
            serde_json::json!({"big": 9007199254740993u64, "neg": -9007199254740993i64}),
            serde_json::json!({"é": 1, "\u{e000}": 2, "\u{10000}": 3, "z": {"\"": 4}}),
        ];
        for (i, data) in datas.into_iter().enumerate() {
            for (dataschema, prev_id) in [(None, None), (Some("urn:x"), Some(Uuid::now_v7()))] {
                let mut e = event();
                e.data = data.clone();
                e.dataschema = dataschema.map(str::to_owned);
                let prev = next(&GENESIS, &[i as u8]);
                let (link, stored) = chain(&e, 3, &prev, prev_id);
                let v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
                assert_eq!(
                    serde_json::from_slice::<Event>(&stored).unwrap(),
                    e,
                    "older readers see the event unchanged"
                );
                let mut serde = serde_json::to_value(&e).unwrap();
                if let Some(id) = prev_id {
                    serde[PREV_ID] = serde_json::json!(id);
                }
                serde[PREV] = serde_json::json!(hex(&prev));
                serde[HASH] = serde_json::json!(hex(&link.hash));
                assert_eq!(v, serde, "the attributes serde writes, and the link");
                let text = String::from_utf8(stored.clone()).unwrap();
                let plain = String::from_utf8(serde_json::to_vec(&e).unwrap()).unwrap();
                assert!(
                    text.starts_with(&plain[..plain.len() - 1]),
                    "in serde's order, the link last: {text}"
                );
                let mut without = v.as_object().unwrap().clone();
                without.remove(HASH);
                without.remove(PREV);
                let jcs = serde_json_canonicalizer::to_vec(&without).unwrap();
                assert_eq!(
                    link.hash,
                    next(&prev, &jcs),
                    "RFC 8785, as the crate writes it: {text}"
                );
                assert_eq!((link.prev, link.prev_id), (prev, prev_id));
            }
        }
    }
}
