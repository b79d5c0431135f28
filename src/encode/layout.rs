//! Reading a stored event in the one layout the store writes, without reading its `data`.
//!
//! The store writes every event the same way (`chain::link`): `{`, the attributes as JSON
//! strings in the order [`crate::event::Event`] declares them, `data`, then, once the store
//! chains, `chainprevid` (a UUID), `chainprev` and `chainhash` (hex), and `}`. serde_json reading
//! an event checks every byte of `data`, which is most of the event and about two thirds of what
//! reading it costs, on every delivery (docs/performance.md, "Kafka sink"). Those bytes are
//! serde_json's own output, checked by sled against its checksum when read back; the encoders
//! that need `data`'s values (OCSF, table rows, keys of log rows) parse it themselves. So the
//! attributes before `data` are read in order, the chain's from the end, and `data` is what lies
//! between, unread.
//!
//! Owns that read only. It must never read an event in that layout otherwise than serde_json
//! would: anything else (a string with an escape or a control character, a key it does not
//! expect or sees twice, a missing attribute, a value that is not a string, white space) gives
//! `None`, and the caller reads the event with serde_json, which says what is wrong. The one
//! thing it cannot tell without reading `data` is a member after it other than the chain's,
//! which the store never writes: an object or array `data` followed by one would be read with
//! it. A property test holds the two reads to the same result for events as the store writes
//! them.

use std::borrow::Cow;
use std::ops::Range;

use super::Envelope;
use crate::chain;

/// The attributes before `data`, by the slot that holds each.
const ATTRIBUTES: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "sequence",
];
/// `dataschema`'s slot: the one attribute before `data` an event may lack.
const DATASCHEMA: usize = 7;
/// The chain's attributes after `data`, by slot.
const CHAIN: [&str; 3] = [chain::PREV_ID, chain::PREV, chain::HASH];

/// The event in `text`, if it is in the store's layout; `data` is not checked.
pub(super) fn read(text: &str) -> Option<Envelope<'_>> {
    let b = text.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut attributes: [Option<&str>; 9] = [None; 9];
    let mut at = 1;
    let data_start = loop {
        let key = plain(b, at)?;
        if b.get(key.end + 1) != Some(&b':') {
            return None;
        }
        let name = &text[key.clone()];
        if name == "data" {
            break key.end + 2;
        }
        let value = plain(b, key.end + 2)?;
        let slot = ATTRIBUTES.iter().position(|a| *a == name)?;
        if attributes[slot].replace(&text[value.clone()]).is_some() {
            return None;
        }
        at = value.end + 1;
        if b.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    };
    let mut linked: [Option<&str>; 3] = [None; 3];
    // Where `data` ends: before the chain's members, peeled off from the event's closing `}`.
    let mut end = b.len() - 1;
    while let Some((slot, value, start)) = chain_member(b, end) {
        if linked[slot].replace(&text[value]).is_some() {
            return None;
        }
        end = start;
    }
    let data = text.get(data_start..end).filter(|d| whole(d.as_bytes()))?;
    let required = |slot: usize| attributes[slot].map(Cow::Borrowed);
    Some(Envelope {
        offset: 0,
        bytes: &[],
        stored: None,
        replayed: false,
        specversion: required(0)?,
        id: required(1)?,
        source: required(2)?,
        event_type: required(3)?,
        subject: required(4)?,
        time: required(5)?,
        datacontenttype: required(6)?,
        dataschema: attributes[DATASCHEMA].map(Cow::Borrowed),
        sequence: required(8)?,
        data,
        chainprevid: linked[0].map(Cow::Borrowed),
        chainprev: linked[1].map(Cow::Borrowed),
        chainhash: linked[2].map(Cow::Borrowed),
    })
}

/// The contents of the JSON string whose opening quote is at `at`, if it holds no escape and no
/// control character (a string serde_json reads as its bytes, unchanged).
fn plain(b: &[u8], at: usize) -> Option<Range<usize>> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let end = start + memchr::memchr2(b'"', b'\\', b.get(start..)?)?;
    let contents = start..end;
    (b[end] == b'"' && !b[contents.clone()].iter().any(|c| *c < 0x20)).then_some(contents)
}

/// `data` ends as it begins: what is left after the chain's members is one value, not a value
/// and a member after it, as far as telling costs nothing next to reading it. An object or array
/// followed by another member passes; the store has never written one (`data` was always
/// `Event`'s last field).
fn whole(data: &[u8]) -> bool {
    match data {
        [b'{', .., b'}'] | [b'[', .., b']'] => true,
        [b'"', inner @ .., b'"'] => {
            let mut at = 0;
            while let Some(i) = memchr::memchr2(b'"', b'\\', &inner[at..]) {
                if inner[at + i] == b'"' {
                    return false;
                }
                at += i + 2;
                if at > inner.len() {
                    return false;
                }
            }
            true
        }
        scalar => {
            !scalar.is_empty()
                && scalar
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
        }
    }
}

/// The chain member `,"<name>":"<value>"` that ends just before `end`, if there is one: its
/// slot in [`CHAIN`], its value (lowercase hex digits and hyphens only) and where its `,` is.
/// Nothing in `data` can end that way: a string's quotes inside `data` are escaped, and an
/// object or array there ends with its bracket.
fn chain_member(b: &[u8], end: usize) -> Option<(usize, Range<usize>, usize)> {
    let close = end.checked_sub(1).filter(|&c| b[c] == b'"')?;
    let digits = b[..close]
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(*c) || **c == b'-')
        .count();
    let open = close.checked_sub(digits + 1)?;
    let before = b[..open].strip_suffix(b"\":")?;
    let (slot, name) = CHAIN
        .iter()
        .enumerate()
        .find(|(_, name)| before.ends_with(name.as_bytes()))?;
    let before = before[..before.len() - name.len()].strip_suffix(b",\"")?;
    (b[open] == b'"').then_some((slot, open + 1..close, before.len()))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::event::{Event, EventType};

    /// How serde_json reads `text`, `data` included.
    fn by_serde(text: &str) -> Option<Envelope<'_>> {
        serde_json::from_str(text).ok()
    }

    /// Every attribute an envelope read, `data` included.
    fn read_attributes<'e>(e: &'e Envelope<'_>) -> [Option<&'e str>; 13] {
        [
            Some(&e.specversion),
            Some(&e.id),
            Some(&e.source),
            Some(&e.event_type),
            Some(&e.subject),
            Some(&e.time),
            Some(&e.datacontenttype),
            e.dataschema.as_deref(),
            Some(&e.sequence),
            Some(e.data),
            e.chainprevid.as_deref(),
            e.chainprev.as_deref(),
            e.chainhash.as_deref(),
        ]
    }

    fn same(fast: &Envelope<'_>, slow: &Envelope<'_>) -> bool {
        read_attributes(fast) == read_attributes(slow)
    }

    fn event(source: &str, subject: &str, schema: Option<&str>, data: Value) -> Event {
        Event {
            specversion: "1.0".into(),
            id: uuid::Uuid::now_v7(),
            source: source.into(),
            event_type: EventType::UserUpdated,
            subject: subject.into(),
            time: Utc.timestamp_opt(1_796_623_200, 123_456_000).unwrap(),
            datacontenttype: "application/json".into(),
            dataschema: schema.map(str::to_owned),
            sequence: String::new(),
            data,
        }
    }

    /// The event as the store writes it: before the chain, first in a chain, and chained after
    /// another event.
    fn stored(e: &Event) -> [Vec<u8>; 3] {
        let prev = [7; 32];
        [
            chain::unchained(e, 12),
            chain::chain(e, 12, &prev, None).1,
            chain::chain(e, 12, &prev, Some(uuid::Uuid::now_v7())).1,
        ]
    }

    #[test]
    fn an_event_as_the_store_writes_it_is_read_as_serde_json_reads_it() {
        let e = event(
            "superset://prod",
            "42",
            Some("https://example.com/s.json"),
            json!({"user": {"id": 42, "name": "a"}, "changes": []}),
        );
        for bytes in stored(&e) {
            let text = std::str::from_utf8(&bytes).unwrap();
            let (fast, slow) = (read(text).unwrap(), by_serde(text).unwrap());
            assert!(same(&fast, &slow), "{text}");
        }
    }

    #[test]
    fn data_that_looks_like_the_chains_members_stays_data() {
        let tricky = [
            json!({"x": 1, "chainhash": "ab", "chainprev": "cd"}),
            json!("ab"),
            json!("q\",\"chainhash\":\"ab"),
            json!(["chainprevid", "0-1"]),
            json!(12),
        ];
        for data in tricky {
            for bytes in stored(&event("s://x", "1", None, data.clone())) {
                let text = std::str::from_utf8(&bytes).unwrap();
                let fast = read(text).expect("in the store's layout");
                assert!(same(&fast, &by_serde(text).unwrap()), "{text}");
                assert_eq!(serde_json::from_str::<Value>(fast.data).unwrap(), data);
            }
        }
    }

    #[test]
    fn anything_outside_the_layout_is_left_to_serde_json() {
        let [_, chained, _] = stored(&event("s://x", "1", None, json!({"a": 1})));
        let text = String::from_utf8(chained).unwrap();
        let swap = |from: &str, to: &str| text.replacen(from, to, 1);
        let subject = r#""subject":"1""#;
        let outside = [
            swap("{\"specversion\"", "{ \"specversion\""),
            swap(subject, r#""subject":"\u0031""#),
            swap(subject, r#""subject":1"#),
            swap(subject, r#""subject":"1","subject":"1""#),
            swap(r#""subject":"1","#, ""),
            swap(subject, r#""subject":"1","other":"x""#),
            swap(subject, r#""subject":"1","dataschema":null"#),
            swap(subject, "\"subject\":\"1\u{1}\""),
            swap(r#""chainprev":"#, r#""chainprev" :"#),
            swap(r#""chainprev":"#, r#""chainhash":"#),
            swap(r#""data":{"a":1}"#, r#""data":"a","x":"y""#),
        ];
        for text in &outside {
            assert!(read(text).is_none(), "{text}");
        }
    }

    /// Any JSON value, `data` and its strings as varied as serde_json allows.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "(chainhash|chainprev|chainprevid|[0-9a-f-]{0,6}|\"|,|:)*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    "(chainhash|chainprev|chainprevid|data|[a-z]{1,4}|.{0,3})",
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// For every event the store can write, the fast read is serde_json's, and it is taken
        /// whenever the attributes hold no character JSON escapes.
        #[test]
        fn the_read_of_a_stored_event_is_serde_jsons(
            source in any::<String>(),
            subject in "([0-9a-z\"\\\\\u{1}é]{0,4})",
            schema in proptest::option::of("[a-z:/.\"]{0,8}"),
            data in value(),
        ) {
            let e = event(&source, &subject, schema.as_deref(), data);
            for bytes in stored(&e) {
                let text = std::str::from_utf8(&bytes).unwrap();
                let slow = by_serde(text).expect("serde_json reads what the store writes");
                let plain = |s: &str| !s.chars().any(|c| c == '"' || c == '\\' || c < ' ');
                match read(text) {
                    Some(fast) => prop_assert!(same(&fast, &slow), "{}", text),
                    None => prop_assert!(
                        !(plain(&source) && plain(&subject) && schema.as_deref().is_none_or(plain)),
                        "an event of plain attributes was left to serde_json: {}", text
                    ),
                }
            }
        }
    }
}
