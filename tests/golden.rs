//! Byte-for-byte pins of what rollcall writes and sends for a fixed simulator script: the stored
//! events (as the JSONL sink writes them) and each wire encoding sinks put on the network.
//! Restructuring the pipeline must not change a byte of them.
//!
//! Only what differs between runs is masked: event ids (UUIDv7), timestamps (rollcall's
//! observation time and the simulator's clock), and the hash chain's hashes, which cover both. After a deliberate change of the wire format,
//! re-create the file with `ROLLCALL_BLESS=1 cargo test --test tests golden::` and review the
//! diff.

use crate::support;

use rollcall::encode::{ocsf, Binding, Encoder, Envelope, Format, Mode};
use rollcall::store::StoredEvent;
use support::harness::Harness;
use support::sim::{Sim, SimOptions};

const GAMMA: u64 = 4;
const ALPHA: u64 = 3;
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden/superset.txt"
);

/// Every Superset event type, in a fixed order, each in its own cycle.
async fn script() -> Vec<String> {
    let sim = Sim::start(SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw-alice", &[GAMMA]);
    let bob = sim.add_user("bob", "pw-bob", &[GAMMA]);
    let mut h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    h.cycle().await;
    type Step = Box<dyn Fn(&Sim)>;
    let steps: Vec<Step> = vec![
        Box::new(|s| {
            s.add_user("carol", "pw-carol", &[GAMMA]);
        }),
        Box::new(move |s| {
            s.update_user(alice, |u| {
                u.first_name = "Alicia".into();
                u.email = "alicia@example.com".into();
            })
        }),
        Box::new(move |s| s.update_user(alice, |u| u.active = false)),
        Box::new(move |s| s.update_user(alice, |u| u.active = true)),
        Box::new(move |s| s.update_user(alice, |u| u.roles = vec![ALPHA])),
        Box::new(move |s| s.set_role_members(GAMMA, &[alice, bob])),
        Box::new(move |s| {
            s.add_group("analysts", &[bob]);
        }),
        Box::new(move |s| s.set_group_members(1, &[])),
        Box::new(|s| assert!(s.login("bob", "pw-bob"))),
        Box::new(|s| assert!(!s.login("bob", "wrong"))),
        Box::new(move |s| {
            s.log_action(
                Some(bob),
                "DashboardRestApi.get_list",
                r#"{"path": "/api/v1/dashboard/"}"#,
                None,
            );
        }),
        Box::new(move |s| assert!(s.delete_user(alice))),
    ];
    for step in steps {
        step(&sim);
        h.cycle().await;
    }
    std::fs::read_to_string(h.events_path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Ids and timestamps, which differ between runs, as fixed placeholders; every other byte
/// (key order, spacing, escapes) stays as written. A JSON document's string literals are
/// masked one by one; a bare header value is masked whole.
fn mask(text: &str) -> String {
    fn masked(s: &str) -> Option<&'static str> {
        if uuid::Uuid::parse_str(s).is_ok() {
            Some("<uuid>")
        } else if rollcall::chain::unhex(s).is_some() {
            Some("<hash>")
        } else if chrono::DateTime::parse_from_rfc3339(s).is_ok()
            || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        {
            Some("<time>")
        } else {
            None
        }
    }
    if !text.starts_with('{') {
        return masked(text).unwrap_or(text).to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let mut end = 0;
        let bytes = after.as_bytes();
        while bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let literal = &after[..end];
        out.push_str(masked(literal).unwrap_or(literal));
        out.push('"');
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every stored event, then each encoding of it as the sinks send it.
fn render(lines: &[String]) -> String {
    let encoders = [
        ("kafka binary", Mode::Binary, Binding::Kafka),
        ("kafka structured", Mode::Structured, Binding::Kafka),
        ("http structured", Mode::Structured, Binding::Http),
    ];
    let mut out = String::new();
    for (offset, line) in lines.iter().enumerate() {
        out.push_str(&format!("== stored {offset}\n{}\n", mask(line)));
        let stored = StoredEvent {
            offset: offset as u64,
            bytes: line.as_bytes().to_vec().into(),
        };
        let envelope = Envelope::parse(&stored).unwrap();
        for (what, mode, binding) in encoders {
            let encoder = Encoder {
                format: Format::Cloudevents,
                mode,
                binding,
                ocsf: ocsf::Version::default(),
            };
            let e = encoder.encode(&envelope, "store").unwrap();
            out.push_str(&format!(
                "-- {what}: key {} content-type {}\n",
                e.key, e.content_type
            ));
            for (k, v) in &e.headers {
                out.push_str(&format!("{k}: {}\n", mask(v)));
            }
            let body: &[u8] = &e.body;
            out.push_str(&mask(std::str::from_utf8(body).unwrap()));
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn every_event_and_its_wire_encodings_match_the_pinned_bytes() {
    support::golden::assert_pinned(GOLDEN, &render(&script().await));
}
