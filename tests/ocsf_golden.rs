//! Byte-for-byte pins of the OCSF records rollcall sends: one stored event of every type from
//! both kinds of source (`support::events`, with fixed ids and times, chained), encoded in each
//! OCSF version a sink can choose; 1.9.0 records carry the chain (`record_integrity`). A change
//! of mapping, of attribute order or of a single caption shows here; `ocsf_version = "1.8.0"`
//! must keep the records it always sent.
//!
//! Only rollcall's own version (`metadata.product.version`) is masked, and with it a 1.9.0
//! record's fingerprint, which covers it: the test recomputes that instead. After a deliberate
//! change, re-create the files with `ROLLCALL_BLESS=1 cargo test --test tests ocsf_golden::`
//! and review the diff.

use crate::support;

use serde_json::{json, Value};
use support::ocsf::{try_encode, try_encode_in, Version};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/ocsf/");

/// Every example event, its id and time fixed: the n-th gets a UUIDv7 ending in n and is
/// observed n seconds after a fixed instant; chained as the store chains them, from the chain's
/// start at offset 0.
fn stored_events() -> Vec<Value> {
    let (mut prev, mut prev_id) = (rollcall::chain::GENESIS, None);
    support::events::every_kind_of_event()
        .into_iter()
        .enumerate()
        .map(|(n, mut event)| {
            event["id"] = json!(format!("01a2085a-e96d-7414-8686-{n:012}"));
            let observed = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:21:44.972882259Z")
                .unwrap()
                + chrono::Duration::seconds(n as i64);
            event["time"] = json!(observed.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
            let event: rollcall::event::Event = serde_json::from_value(event).unwrap();
            let (link, stored) = rollcall::chain::chain(&event, n as u64, &prev, prev_id);
            (prev, prev_id) = (link.hash, Some(event.id));
            serde_json::from_slice(&stored).unwrap()
        })
        .collect()
}

/// Each record as the encoder wrote it, one per line, with rollcall's version masked, and so
/// the fingerprint of a 1.9.0 record, which covers it (checked here instead).
fn render(encode: impl Fn(&Value, u64) -> Vec<u8>) -> String {
    let ours = format!(
        r#""product":{{"name":"rollcall","version":"{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    let masked = r#""product":{"name":"rollcall","version":"<rollcall version>"}"#;
    stored_events()
        .iter()
        .enumerate()
        .map(|(offset, event)| {
            let mut body = String::from_utf8(encode(event, offset as u64)).unwrap();
            assert!(body.contains(&ours), "{body}");
            let record =
                rollcall::chain::attested::read(serde_json::from_str(&body).unwrap(), false)
                    .unwrap();
            if let Some(chained) = record.chain {
                assert_eq!(chained.computed, chained.claimed, "{body}");
                let fingerprint = rollcall::chain::hex(&chained.claimed);
                body = body.replace(&fingerprint, "<fingerprint>");
            }
            format!("{}\n", body.replace(&ours, masked))
        })
        .collect()
}

#[test]
fn ocsf_1_8_0_records_of_every_event_type_match_the_pinned_bytes() {
    let rendered = render(|event, offset| try_encode(event, offset).unwrap());
    support::golden::assert_pinned(&format!("{DIR}1.8.0.jsonl"), &rendered);
}

#[test]
fn ocsf_1_9_0_records_of_every_event_type_match_the_pinned_bytes() {
    let rendered = render(|event, offset| try_encode_in(Version::V1_9_0, event, offset).unwrap());
    support::golden::assert_pinned(&format!("{DIR}1.9.0.jsonl"), &rendered);
}
