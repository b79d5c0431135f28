//! Linking one event as the store appends it: the bytes the log stores (the event as serde
//! writes it, then `chainprevid`, `chainprev` and `chainhash`) and its hash.
//!
//! A commit of 2,000 events may spend at most 5 % more with the chain than without
//! (docs/performance.md, Hash chain), and serializing the event is most of what a commit does to
//! it. So each attribute is serialized once, into the bytes the log stores, and its RFC 8785
//! form is those same bytes (serde_json escapes strings as RFC 8785 does; `data`'s when it is in
//! the fast subset, else the crate's): the canonical bytes are the stored ones in RFC 8785 order,
//! hashed in one piece. The stored bytes are the ones serde writes for [`Event`] (its fields,
//! in its order), and the hash the one RFC 8785 gives of them: the tests hold both to it.

use std::ops::Range;

use serde::Serialize;
use uuid::Uuid;

use super::canonical;
use super::{next, Hash, Link};
use crate::event::Event;

const SERIALISES: &str = "rollcall's own types always serialise";

/// An event as stored, but for its closing `}`, and where each attribute's value is in it.
struct Serialized {
    bytes: Vec<u8>,
    /// The values of `datacontenttype`, `dataschema` (if any), `id`, `sequence`, `source`,
    /// `specversion`, `subject`, `time` and `type`, by key: RFC 8785's order.
    attributes: Vec<(&'static [u8], Range<usize>)>,
    data: Range<usize>,
}

/// `value` as serde_json writes it, appended to `out`; returns where it is.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Range<usize> {
    let start = out.len();
    serde_json::to_writer(&mut *out, value).expect(SERIALISES);
    start..out.len()
}

/// The member `"name":value` of an object being written (`,` before it unless it is the
/// first); returns where its value is.
fn member<T: Serialize + ?Sized>(out: &mut Vec<u8>, name: &[u8], value: &T) -> Range<usize> {
    out.push(if out.is_empty() { b'{' } else { b',' });
    out.push(b'"');
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    put(out, value)
}

/// `event` as serde writes it (its fields in the order [`Event`] declares them, `dataschema`
/// only when set), with `sequence` for its own, without the closing `}`.
fn serialize(event: &Event, sequence: &str) -> Serialized {
    let mut b = Vec::with_capacity(2048);
    let specversion = member(&mut b, b"specversion", &event.specversion);
    let id = member(&mut b, b"id", &event.id);
    let source = member(&mut b, b"source", &event.source);
    let event_type = member(&mut b, b"type", &event.event_type);
    let subject = member(&mut b, b"subject", &event.subject);
    let time = member(&mut b, b"time", &event.time);
    let datacontenttype = member(&mut b, b"datacontenttype", &event.datacontenttype);
    let dataschema = (event.dataschema.as_ref()).map(|s| member(&mut b, b"dataschema", s));
    let sequence = member(&mut b, b"sequence", sequence);
    let data = member(&mut b, b"data", &event.data);
    let mut attributes = vec![(&b"datacontenttype"[..], datacontenttype)];
    if let Some(schema) = dataschema {
        attributes.push((b"dataschema", schema));
    }
    attributes.extend([
        (&b"id"[..], id),
        (b"sequence", sequence),
        (b"source", source),
        (b"specversion", specversion),
        (b"subject", subject),
        (b"time", time),
        (b"type", event_type),
    ]);
    Serialized {
        bytes: b,
        attributes,
        data,
    }
}

/// `event` at log offset `offset`, as a store before the chain wrote it: the event as serde
/// writes it, its `sequence` that offset's. For the baseline the benchmarks compare the chain
/// with, and the tests of stores written before it.
pub fn unchained(event: &Event, offset: u64) -> Vec<u8> {
    let mut stored = serialize(event, &Event::sequence_for(offset)).bytes;
    stored.push(b'}');
    stored
}

/// `event` at log offset `offset` (its `sequence` that offset's), chained after the event whose
/// hash is `prev` and id `prev_id`: its link, and the JSON the log stores (the event with
/// `chainprevid`, `chainprev` and `chainhash`).
pub fn chain(event: &Event, offset: u64, prev: &Hash, prev_id: Option<Uuid>) -> (Link, Vec<u8>) {
    let Serialized {
        bytes: mut stored,
        attributes,
        data,
    } = serialize(event, &Event::sequence_for(offset));
    let previd = prev_id.map(|id| member(&mut stored, b"chainprevid", &id));

    // The members in RFC 8785 order (by key): `chainprevid`, `data`, then the attributes.
    let mut canonical = Vec::with_capacity(stored.len() + 8);
    canonical.push(b'{');
    if let Some(r) = previd {
        canonical.extend_from_slice(br#""chainprevid":"#);
        canonical.extend_from_slice(&stored[r]);
        canonical.push(b',');
    }
    canonical.extend_from_slice(br#""data":"#);
    if canonical::is_canonical(&event.data) {
        canonical.extend_from_slice(&stored[data]);
    } else {
        canonical.extend_from_slice(&canonical::canonical(&event.data));
    }
    for (key, value) in attributes {
        canonical.extend_from_slice(b",\"");
        canonical.extend_from_slice(key);
        canonical.extend_from_slice(b"\":");
        canonical.extend_from_slice(&stored[value]);
    }
    canonical.push(b'}');
    let hash = next(prev, &canonical);

    for (name, value) in [(br#","chainprev":""#, prev), (br#","chainhash":""#, &hash)] {
        stored.extend_from_slice(name);
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

/// `hash` as its 64 lowercase hex digits.
fn push_hex(out: &mut Vec<u8>, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in hash {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{HASH, PREV};
    use crate::event::{EventType, DATA_CONTENT_TYPE, SPEC_VERSION};
    use chrono::Utc;
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
