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

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::canonical::{self, Hashing};
use super::{hex, Hash, Link, HASH, PREV, PREV_ID};
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

/// `event` (with its `sequence` set) chained after the event whose hash is `prev` and id
/// `prev_id`: its link, and the JSON the log stores (the event with `chainprevid`, `chainprev`
/// and `chainhash`).
pub fn chain(event: &Event, prev: &Hash, prev_id: Option<Uuid>) -> (Link, Vec<u8>) {
    let serialises = "rollcall's own types always serialise";
    let data = serde_json::to_vec(&event.data).expect(serialises);
    let attributes = Attributes {
        specversion: &event.specversion,
        id: &event.id,
        source: &event.source,
        event_type: event.event_type,
        subject: &event.subject,
        time: &event.time,
        datacontenttype: &event.datacontenttype,
        dataschema: event.dataschema.as_deref(),
        sequence: &event.sequence,
    };
    let mut stored = Vec::with_capacity(data.len() + 512);
    serde_json::to_writer(&mut stored, &attributes).expect(serialises);
    stored.pop();
    stored.extend_from_slice(b",\"data\":");
    stored.extend_from_slice(&data);
    if let Some(id) = prev_id {
        write!(stored, r#","{PREV_ID}":"{id}""#).expect(serialises);
    }

    // The members in RFC 8785 order (by key), each value as serde_json writes it, which is its
    // RFC 8785 form for strings; `data`'s when it is in the fast subset.
    let mut h = Hashing::after(prev);
    h.put(b"{");
    if let Some(id) = prev_id {
        write!(h, r#""{PREV_ID}":"{id}","#).expect(serialises);
    }
    h.put(b"\"data\":");
    if canonical::is_canonical(&event.data) {
        h.put(&data);
    } else {
        h.put(&canonical::canonical(&event.data));
    }
    member(&mut h, "datacontenttype", attributes.datacontenttype);
    if let Some(schema) = attributes.dataschema {
        member(&mut h, "dataschema", schema);
    }
    member(&mut h, "id", attributes.id);
    member(&mut h, "sequence", attributes.sequence);
    member(&mut h, "source", attributes.source);
    member(&mut h, "specversion", attributes.specversion);
    member(&mut h, "subject", attributes.subject);
    member(&mut h, "time", attributes.time);
    member(&mut h, "type", &attributes.event_type);
    h.put(b"}");
    let hash = h.finish();

    write!(
        stored,
        r#","{PREV}":"{}","{HASH}":"{}"}}"#,
        hex(prev),
        hex(&hash)
    )
    .expect(serialises);
    let link = Link {
        hash,
        prev: *prev,
        prev_id,
    };
    (link, stored)
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
            let (link, stored) = chain(&e, &[3; 32], prev_id);
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&stored).unwrap();
            v.remove(HASH);
            v.remove(PREV);
            let jcs = serde_json_canonicalizer::to_vec(&v).unwrap();
            prop_assert_eq!(link.hash, super::super::next(&[3; 32], &jcs));
            let mut serde = serde_json::to_vec(&e).unwrap();
            serde.pop();
            prop_assert!(stored.starts_with(&serde));
        }
    }
}
