//! `rollcall replay`: a chosen range goes to one sink byte-identical to the first delivery but
//! for the replay marker (JSONL, and Kafka through rdkafka's in-process `MockCluster`), the live cursor stays put
//! (or moves back with `--rewind`), starts by offset, time and event id, the type filter, the
//! dry run, and ranges that retention compacted away.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::Message;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::event::{Event, EventType};
use rollcall::replay::{replay, ReplayError, Request, Start};
use rollcall::sink::SinkConfig;
use rollcall::store::Store;
use support::kafka as mock;
use support::log::{append, event};

const TOPIC: &str = "superset.user-events";

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

/// `n` events, one minute apart from [`base`], alternating `user.updated` and `user.login`.
fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            event(
                if i % 2 == 0 {
                    EventType::UserUpdated
                } else {
                    EventType::UserLogin
                },
                &(i % 3 + 1).to_string(),
                base() + chrono::Duration::minutes(i as i64),
                serde_json::json!({"user": {"id": i % 3 + 1}, "n": i}),
            )
        })
        .collect()
}

/// A config with a JSONL sink `siem` writing `<dir>/events.jsonl`, plus `sinks` appended.
fn write_config(dir: &Path, sinks: &str) -> std::path::PathBuf {
    let path = dir.join("rollcall.toml");
    let sinks = format!(
        r#"[[sinks]]
kind = "jsonl"
name = "siem"
path = {events:?}
batch_size = 4
{sinks}
"#,
        events = dir.join("events.jsonl").display().to_string(),
    );
    std::fs::write(&path, support::config::offline(dir, "", &sinks)).unwrap();
    path
}

fn config(dir: &Path, sinks: &str) -> Config {
    Config::load(&write_config(dir, sinks)).unwrap()
}

fn request(sink: &str, start: Start) -> Request {
    Request {
        sink: sink.into(),
        start,
        to: None,
        types: None,
        dry_run: false,
        rewind: false,
    }
}

fn lines(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read(dir.join("events.jsonl"))
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn stored_bytes(store: &Store, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    store
        .events_from(range.start, (range.end - range.start) as usize)
        .unwrap()
        .iter()
        .map(|e| e.bytes.to_vec())
        .collect()
}

/// What a replay sends of the events in `range`: each byte for byte as stored, with the replay
/// marker `"replayed":true` as its last attribute (docs/integrity.md).
fn replayed_bytes(store: &Store, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    stored_bytes(store, range)
        .into_iter()
        .map(|mut e| {
            assert_eq!(e.pop(), Some(b'}'));
            e.extend_from_slice(b",\"replayed\":true}");
            e
        })
        .collect()
}

/// A store with 10 events, all delivered to `siem` (cursor 10), and the JSONL file emptied
/// again, as if the SIEM lost them.
async fn delivered_then_lost(dir: &Path) -> (Config, Store) {
    let config = config(dir, "");
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(10));
    let sink = SinkConfig::build(&config.sinks[0]).unwrap();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 10);
    assert_eq!(lines(dir).len(), 10);
    std::fs::write(dir.join("events.jsonl"), "").unwrap();
    (config, store)
}

#[tokio::test]
async fn replay_of_a_range_to_jsonl_is_the_stored_bytes_marked_as_replays_and_leaves_the_cursor_alone(
) {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    let report = replay(
        &config,
        &store,
        &Request {
            to: Some(7),
            ..request("siem", Start::Offset(3))
        },
    )
    .await
    .unwrap();
    assert_eq!(report.range, 3..8);
    assert_eq!(report.sent, 5);
    assert_eq!(lines(dir.path()), replayed_bytes(&store, 3..8));
    assert_eq!(
        store.cursor("siem").unwrap(),
        10,
        "the live cursor did not move"
    );
}

#[tokio::test]
async fn since_starts_at_the_first_event_at_or_after_the_instant() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    // Between events 5 (12:05) and 6 (12:06): the replay starts at 6.
    let since = base() + chrono::Duration::seconds(5 * 60 + 30);
    let report = replay(&config, &store, &request("siem", Start::Since(since)))
        .await
        .unwrap();
    assert_eq!(report.range, 6..10);
    assert_eq!(lines(dir.path()), replayed_bytes(&store, 6..10));
}

#[tokio::test]
async fn event_id_starts_at_that_event_and_the_type_glob_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    let id = store.events_from(4, 1).unwrap()[0].event().unwrap().id;
    let report = replay(
        &config,
        &store,
        &Request {
            types: Some("user.log*".into()),
            ..request("siem", Start::EventId(id))
        },
    )
    .await
    .unwrap();
    // Odd offsets are logins.
    assert_eq!(report.selected, [5..6, 7..8, 9..10]);
    let got: Vec<Event> = lines(dir.path())
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(
        got.iter().map(|e| e.sequence.as_str()).collect::<Vec<_>>(),
        [
            "00000000000000000005",
            "00000000000000000007",
            "00000000000000000009"
        ]
    );
    assert!(got.iter().all(|e| e.event_type == EventType::UserLogin));
}

#[tokio::test]
async fn an_unknown_event_id_is_an_error_that_names_the_log_range() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    let err = replay(
        &config,
        &store,
        &request("siem", Start::EventId(uuid::Uuid::now_v7())),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplayError::EventNotFound { .. }), "{err}");
    assert!(err.to_string().contains("offsets 0..10"), "{err}");
}

#[tokio::test]
async fn dry_run_sends_nothing_and_reports_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    let report = replay(
        &config,
        &store,
        &Request {
            dry_run: true,
            to: Some(5),
            ..request("siem", Start::Offset(2))
        },
    )
    .await
    .unwrap();
    assert_eq!(report.selected, vec![2..6]);
    assert_eq!(report.sent, 0);
    assert!(lines(dir.path()).is_empty());
}

#[tokio::test]
async fn rewind_moves_the_cursor_back_so_the_next_delivery_resends_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    let report = replay(
        &config,
        &store,
        &Request {
            rewind: true,
            ..request("siem", Start::Offset(6))
        },
    )
    .await
    .unwrap();
    assert_eq!(report.rewound, Some((10, 6)));
    assert!(lines(dir.path()).is_empty(), "rewind sends nothing itself");
    assert_eq!(store.cursor("siem").unwrap(), 6);
    let sink = SinkConfig::build(&config.sinks[0]).unwrap();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 4);
    assert_eq!(
        lines(dir.path()),
        replayed_bytes(&store, 6..10),
        "what the sink had sent goes out again marked as replays"
    );
}

#[tokio::test]
async fn rewind_never_moves_a_cursor_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    store.set_cursor("siem", 3).unwrap();
    let err = replay(
        &config,
        &store,
        &Request {
            rewind: true,
            ..request("siem", Start::Offset(6))
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ReplayError::NothingToRewind { cursor: 3, .. }),
        "{err}"
    );
    assert_eq!(store.cursor("siem").unwrap(), 3);
}

#[tokio::test]
async fn replay_of_compacted_offsets_says_so_and_sends_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    store.compact(4).unwrap();
    let report = replay(&config, &store, &request("siem", Start::Offset(1)))
        .await
        .unwrap();
    assert_eq!(report.compacted, Some(1..4));
    assert_eq!(report.range, 4..10);
    assert_eq!(lines(dir.path()), replayed_bytes(&store, 4..10));

    let err = replay(
        &config,
        &store,
        &Request {
            to: Some(2),
            ..request("siem", Start::Offset(0))
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("compacted away") && err.to_string().contains("--from-offset 4"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_sink_is_named_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = delivered_then_lost(dir.path()).await;
    let err = replay(&config, &store, &request("nope", Start::Offset(0)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("its sinks are: siem"), "{err}");
}

#[tokio::test]
async fn the_binary_replays_a_dry_run_and_refuses_while_the_store_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    {
        let store = Store::open(&Config::load(&path).unwrap().store.path).unwrap();
        append(&store, events(6));
        let rollcall = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_rollcall"))
                .arg("--config")
                .arg(&path)
                .args(args)
                .output()
                .unwrap()
        };
        let busy = rollcall(&["replay", "--sink", "siem", "--from-offset", "0"]);
        assert!(!busy.status.success());
        assert!(
            String::from_utf8_lossy(&busy.stderr).contains("already in use"),
            "{}",
            String::from_utf8_lossy(&busy.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&path)
        .args([
            "replay",
            "--sink",
            "siem",
            "--since",
            "2024-05-01T12:02:00Z",
            "--type",
            "user.updated",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("would send 2 event(s), offsets 2, 4 to sink siem"),
        "{stdout}"
    );
    assert!(lines(dir.path()).is_empty());
}

/// Every message of the topic as (ce_id, key, value, headers), read from the start.
async fn consume_all(
    brokers: &str,
    n: usize,
) -> Vec<(String, Vec<u8>, Vec<u8>, BTreeMap<String, Vec<u8>>)> {
    let got = mock::consume(brokers, TOPIC, n, Duration::from_secs(1)).await;
    got.iter()
        .map(|m| {
            let headers = mock::headers(m);
            let id = String::from_utf8(headers["ce_id"].clone()).unwrap();
            (
                id,
                m.key().unwrap().to_vec(),
                m.payload().unwrap().to_vec(),
                headers,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_range_to_kafka_is_byte_identical_to_the_first_delivery_but_for_its_marker() {
    let cluster = mock::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!(
            "\n[[sinks]]\nkind = \"kafka\"\nname = \"bus\"\nbrokers = \"{brokers}\"\ntopic = \"{TOPIC}\"\nbatch_size = 3\n"
        ),
    );
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(10));
    let sink = SinkConfig::build(&config.sinks[1]).unwrap();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 10);
    drop(sink);
    let report = replay(
        &config,
        &store,
        &Request {
            to: Some(8),
            ..request("bus", Start::Offset(2))
        },
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 7);
    assert_eq!(
        store.cursor("bus").unwrap(),
        10,
        "the live cursor did not move"
    );

    let got = consume_all(&brokers, 17).await;
    assert_eq!(got.len(), 17, "10 first deliveries and 7 replays, no more");
    let replayed_ids: Vec<String> = store
        .events_from(2, 7)
        .unwrap()
        .iter()
        .map(|e| e.event().unwrap().id.to_string())
        .collect();
    for id in &replayed_ids {
        let mut copies: Vec<_> = got.iter().filter(|m| &m.0 == id).cloned().collect();
        assert_eq!(copies.len(), 2, "event {id}: first delivery and replay");
        assert_eq!(
            copies[1].3.remove("ce_replayed").as_deref(),
            Some(b"true".as_slice()),
            "event {id}: the replay is marked"
        );
        assert_eq!(
            copies[0], copies[1],
            "event {id}: key, value and headers byte-identical but for the marker"
        );
    }
}
