//! Linking one event as the store appends it: the bytes the log stores (the event as serde
//! writes it, then `chainprevid`, `chainprev` and `chainhash`) and its hash, written in one go.
//!
//! A commit of 2,000 events may spend at most 5 % more with the chain than without
//! (docs/performance.md, Hash chain), and serializing the event is most of what a commit does to
//! it. So `data` is serialized once, for the log, and hashed from the same bytes whenever they
//! are already its RFC 8785 form; the other attributes, small strings whose RFC 8785 order is
//! known, are written straight into the hash. The bytes are the ones serde writes for
//! [`Event`], and the hash the one RFC 8785 gives of them: the tests hold both to it.

use std::io::Write;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::canonical::{self, Hashing};
use super::{Hash, Link, HASH, PREV, PREV_ID};
use crate::event::{Event, EventType};

/// An event's attributes but `data`, as serde writes [`Event`]'s fields, in its order.
#[derive(Serialize)]
struct Attributes<'a> {
    specversion: &'a str,
    id: &'a Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: EventType,
    subject: &'a str,
    time: &'a DateTime<Utc>,
    datacontenttype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataschema: Option<&'a str>,
    sequence: &'a str,
}

/// `event` at log offset `offset`, as a store before the chain wrote it: the event as serde
/// writes it, its `sequence` that offset's. For the baseline the benchmarks compare the chain
/// with, and the tests of stores written before it.
pub fn unchained(event: &Event, offset: u64) -> Vec<u8> {
    let sequence = Event::sequence_for(offset);
    let (mut stored, _) = serialize(event, &sequence);
    stored.push(b'}');
    stored
}

/// `event` at log offset `offset` (its `sequence` that offset's), chained after the event whose
/// hash is `prev` and id `prev_id`: its link, and the JSON the log stores (the event with
/// `chainprevid`, `chainprev` and `chainhash`).
pub fn chain(event: &Event, offset: u64, prev: &Hash, prev_id: Option<Uuid>) -> (Link, Vec<u8>) {
    let sequence = Event::sequence_for(offset);
    let (mut stored, data) = serialize(event, &sequence);
    if let Some(id) = prev_id {
        write!(stored, r#","{PREV_ID}":"{id}""#).expect(SERIALISES);
    }

    // The members in RFC 8785 order (by key), each value as serde_json writes it, which is its
    // RFC 8785 form for strings; `data`'s when it is in the fast subset.
    let mut h = Hashing::after(prev);
    h.put(b"{");
    if let Some(id) = prev_id {
        write!(h, r#""{PREV_ID}":"{id}","#).expect(SERIALISES);
    }
    h.put(b"\"data\":");
    if canonical::is_canonical(&event.data) {
        h.put(&stored[data]);
    } else {
        h.put(&canonical::canonical(&event.data));
    }
    member(&mut h, "datacontenttype", &event.datacontenttype);
    if let Some(schema) = &event.dataschema {
        member(&mut h, "dataschema", schema);
    }
    member(&mut h, "id", &event.id);
    member(&mut h, "sequence", &sequence);
    member(&mut h, "source", &event.source);
    member(&mut h, "specversion", &event.specversion);
    member(&mut h, "subject", &event.subject);
    member(&mut h, "time", &event.time);
    member(&mut h, "type", &event.event_type);
    h.put(b"}");
    let hash = h.finish();

    for (name, value) in [(PREV, prev), (HASH, &hash)] {
        write!(stored, r#","{name}":""#).expect(SERIALISES);
        push_hex(&mut stored, value);
        stored.push(b'"');
    }
    stored.push(b'}');
    let link = Link {
        hash,
        prev: *prev,
        prev_id,
    };
    (link, stored)
}

const SERIALISES: &str = "rollcall's own types always serialise";

/// The event as serde writes it, but with `sequence` for its own and without the closing `}`;
/// and where `data` is in it.
fn serialize(event: &Event, sequence: &str) -> (Vec<u8>, Range<usize>) {
    let attributes = Attributes {
        specversion: &event.specversion,
        id: &event.id,
        source: &event.source,
        event_type: event.event_type,
        subject: &event.subject,
        time: &event.time,
        datacontenttype: &event.datacontenttype,
        dataschema: event.dataschema.as_deref(),
        sequence,
    };
    let mut stored = Vec::with_capacity(2048);
    serde_json::to_writer(&mut stored, &attributes).expect(SERIALISES);
    stored.pop();
    stored.extend_from_slice(b",\"data\":");
    let start = stored.len();
    serde_json::to_writer(&mut stored, &event.data).expect(SERIALISES);
    let end = stored.len();
    (stored, start..end)
}

/// `hash` as its 64 lowercase hex digits.
fn push_hex(out: &mut Vec<u8>, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in hash {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    }
}

/// `,"key":` and the value as serde_json writes it, into the hash.
fn member<T: Serialize + ?Sized>(h: &mut Hashing, key: &str, value: &T) {
    write!(h, r#","{key}":"#).expect("hashing never fails");
    serde_json::to_writer(h, value).expect("an attribute serialises");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DATA_CONTENT_TYPE, SPEC_VERSION};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_data_hashes_as_rfc_8785_says_and_is_stored_as_serde_writes_it(
            data in crate::fuzz::any_json(),
            chained_before in any::<bool>(),
        ) {
            let e = Event {
                specversion: SPEC_VERSION.into(),
                id: Uuid::now_v7(),
                source: "kylin://b".into(),
                event_type: EventType::UserLocked,
                subject: "ü\"".into(),
                time: Utc::now(),
                datacontenttype: DATA_CONTENT_TYPE.into(),
                dataschema: None,
                sequence: Event::sequence_for(9),
                data,
            };
            let prev_id = chained_before.then(Uuid::now_v7);
            let (link, stored) = chain(&e, 9, &[3; 32], prev_id);
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&stored).unwrap();
            v.remove(HASH);
            v.remove(PREV);
            let jcs = serde_json_canonicalizer::to_vec(&v).unwrap();
            prop_assert_eq!(link.hash, super::super::next(&[3; 32], &jcs));
            let mut serde = serde_json::to_vec(&e).unwrap();
            prop_assert_eq!(&unchained(&e, 9), &serde);
            serde.pop();
            prop_assert!(stored.starts_with(&serde));
        }
    }
}
