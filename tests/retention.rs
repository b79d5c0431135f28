//! Retention: events older than `retain` or beyond `max_bytes` are compacted away, never past
//! the slowest sink's cursor unless `force` is set; `status` shows the oldest retained offset;
//! bad `[store]` keys are named with their line; `once` compacts after its commit.

use crate::support;

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rollcall::config::Config;
use rollcall::event::{Event, EventType};
use rollcall::retention::Retention;
use rollcall::store::{Commit, SourceState, Store};
use support::harness::Harness;
use support::log::{append, event};
use support::sim::{Sim, SimOptions};

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
}

/// `n` events one day apart from [`base`].
fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            event(
                EventType::UserUpdated,
                "1",
                base() + Duration::days(i as i64),
                serde_json::json!({"user": {"id": 1}, "n": i}),
            )
        })
        .collect()
}

fn config_text(dir: &Path, store_keys: &str) -> String {
    support::config::offline(
        dir,
        store_keys,
        &format!(
            r#"[[sinks]]
kind = "jsonl"
name = "fast"
path = {fast:?}

[[sinks]]
kind = "jsonl"
name = "slow"
path = {slow:?}
"#,
            fast = dir.join("fast.jsonl").display().to_string(),
            slow = dir.join("slow.jsonl").display().to_string(),
        ),
    )
}

fn config(dir: &Path, store_keys: &str) -> Config {
    Config::parse(&config_text(dir, store_keys), Path::new("rollcall.toml")).unwrap()
}

/// A store holding 10 events (days 0..9) with both sinks' cursors at `fast` and `slow`.
fn store_with(config: &Config, fast: u64, slow: u64) -> Store {
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(10));
    store.set_cursor("fast", fast).unwrap();
    store.set_cursor("slow", slow).unwrap();
    store
}

#[test]
fn events_older_than_retain_are_compacted_once_every_sink_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "retain = \"3days\"");
    let store = store_with(&config, 10, 10);
    // Day 9 is "now": days 0..=5 are older than 3 days.
    let now = base() + Duration::days(9);
    let c = Retention::new(&config).enforce(&store, now).unwrap();
    assert_eq!(c.removed, 0..6);
    assert_eq!(store.log_start().unwrap(), 6);
    let left = store.events_from(0, 100).unwrap();
    assert_eq!(left.first().unwrap().offset, 6);
    assert_eq!(left.len(), 4);
    // Nothing more is due at the same instant.
    let again = Retention::new(&config).enforce(&store, now).unwrap();
    assert!(again.removed.is_empty());
}

#[test]
fn a_slow_sink_holds_retention_back_at_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "retain = \"3days\"");
    let store = store_with(&config, 10, 2);
    let c = Retention::new(&config)
        .enforce(&store, base() + Duration::days(9))
        .unwrap();
    assert_eq!(c.removed, 0..2);
    assert_eq!(c.wanted, Some(6));
    assert_eq!(c.held_by.as_deref(), Some("slow"));
    assert_eq!(store.log_start().unwrap(), 2);
    assert_eq!(
        store.events_from(0, 1).unwrap()[0].offset,
        2,
        "slow's next event is kept"
    );
}

#[test]
fn force_compacts_past_a_slow_sink_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "retain = \"3days\"\nforce = true");
    let store = store_with(&config, 10, 2);
    let c = Retention::new(&config)
        .enforce(&store, base() + Duration::days(9))
        .unwrap();
    assert_eq!(c.removed, 0..6);
    assert_eq!(c.overrun, ["slow"]);
    assert_eq!(c.held_by, None);
}

#[test]
fn a_size_cap_keeps_the_newest_events_within_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let probe = config(dir.path(), "");
    let store = store_with(&probe, 10, 10);
    let sizes: Vec<u64> = store
        .events_from(0, 100)
        .unwrap()
        .iter()
        .map(|e| e.bytes.len() as u64)
        .collect();
    assert_eq!(store.log_bytes().unwrap(), sizes.iter().sum::<u64>());
    // Room for the newest three events and not quite a fourth.
    let cap = sizes[7..].iter().sum::<u64>() + sizes[6] - 1;
    drop(store);
    let config = config(dir.path(), &format!("max_bytes = {cap}"));
    let store = Store::open(&config.store.path).unwrap();
    let c = Retention::new(&config).enforce(&store, Utc::now()).unwrap();
    assert_eq!(c.removed, 0..7);
    assert_eq!(store.log_bytes().unwrap(), sizes[7..].iter().sum::<u64>());
    assert!(store.log_bytes().unwrap() <= cap);
}

#[test]
fn without_a_policy_nothing_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let store = store_with(&config, 10, 10);
    let c = Retention::new(&config)
        .enforce(&store, base() + Duration::days(3650))
        .unwrap();
    assert!(c.removed.is_empty());
    assert_eq!(store.events_from(0, 100).unwrap().len(), 10);
}

#[test]
fn bad_store_keys_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |keys: &str| {
        Config::parse(&config_text(dir.path(), keys), Path::new("rollcall.toml"))
            .unwrap_err()
            .to_string()
    };
    let err = parse("retain = \"0s\"");
    assert!(
        err.contains("rollcall.toml:3:") && err.contains("`retain` must be longer than 0s"),
        "{err}"
    );
    let err = parse("force = true");
    assert!(
        err.contains("rollcall.toml:3:") && err.contains("`force` only matters"),
        "{err}"
    );
    let err = parse("retain = \"thirty days\"");
    assert!(err.contains("rollcall.toml:3:"), "{err}");
    let err = parse("max_bytes = 0");
    assert!(err.contains("`max_bytes` must be at least 1"), "{err}");
}

#[test]
fn status_shows_the_oldest_retained_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    std::fs::write(&path, config_text(dir.path(), "retain = \"3days\"")).unwrap();
    {
        let config = Config::load(&path).unwrap();
        let store = store_with(&config, 10, 10);
        store.compact(4).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&path)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["log_start"], 4);
    let human = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("oldest retained offset 4"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
}

#[tokio::test]
async fn once_compacts_delivered_events_after_its_commit() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(3, &[1]);
    let mut h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    // Every event is older than a nanosecond by the next commit.
    h.edit_config(|c| c.replacen("[store]\n", "[store]\nretain = \"1ns\"\n", 1));
    h.cycle().await;
    let head = h.store().head().unwrap();
    assert!(head > 0, "the first cycle emitted events");
    assert_eq!(h.all_events().len() as u64, head, "the sink got them all");
    // The first cycle's retention ran before its delivery, so the sink's cursor held it back;
    // the next one compacts up to that cursor, and not past it (the new events are undelivered).
    sim.add_users(1, &[1]);
    h.cycle().await;
    assert_eq!(h.store().log_start().unwrap(), head);
}

/// What runs on this thread inside `f` logged and counted.
fn captured<T>(f: impl FnOnce() -> T) -> (T, String, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Buffer::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let out = {
        let _log = tracing::subscriber::set_default(subscriber);
        let _metrics = metrics::set_default_local_recorder(&recorder);
        f()
    };
    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    (out, log, metrics.render())
}

/// The `n` field of each event in a sink's JSONL file.
fn delivered(dir: &Path, sink: &str) -> Vec<u64> {
    std::fs::read_to_string(dir.join(format!("{sink}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn sink(config: &Config, name: &str) -> Box<dyn rollcall::sink::Sink> {
    config
        .sinks
        .iter()
        .find(|s| s.name() == name)
        .unwrap()
        .build()
        .unwrap()
}

fn rollcall(path: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_sink_whose_events_were_compacted_before_it_got_them_skips_them_loudly_and_status_counts_them_after_a_restart(
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    std::fs::write(
        &path,
        config_text(dir.path(), "retain = \"3days\"\nforce = true"),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    {
        let store = store_with(&config, 10, 2);
        let c = Retention::new(&config)
            .enforce(&store, base() + Duration::days(9))
            .unwrap();
        assert_eq!((c.removed, c.overrun), (0..6, vec!["slow".to_owned()]));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let slow = sink(&config, "slow");
        let (sent, log, metrics) =
            captured(|| runtime.block_on(rollcall::deliver::drain(&store, slow.as_ref())));
        assert_eq!(sent.unwrap(), 4);
        assert_eq!(delivered(dir.path(), "slow"), [6, 7, 8, 9]);
        assert_eq!(store.cursor("slow").unwrap(), 10);
        assert_eq!(
            (
                store.skipped("slow").unwrap(),
                store.skipped("fast").unwrap()
            ),
            (4, 0)
        );
        assert!(
            log.contains("WARN") && log.contains("sink 'slow' skipped 4 events (offsets 2..6)"),
            "{log}"
        );
        assert!(
            metrics.contains("rollcall_events_skipped_total{sink=\"slow\"} 4"),
            "{metrics}"
        );
        // Once past the gap, nothing more is skipped or said.
        let (sent, log, _) =
            captured(|| runtime.block_on(rollcall::deliver::drain(&store, slow.as_ref())));
        assert_eq!(sent.unwrap(), 0);
        assert_eq!(store.skipped("slow").unwrap(), 4);
        assert!(!log.contains("skipped"), "{log}");
    }
    // Another process, later: the count was stored beside the cursor.
    let status: serde_json::Value =
        serde_json::from_slice(&rollcall(&path, &["status", "--json"]).stdout).unwrap();
    let skipped: Vec<_> = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["events_skipped"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(skipped, [("fast", 0), ("slow", 4)]);
    let human = String::from_utf8_lossy(&rollcall(&path, &["status"]).stdout).into_owned();
    assert!(
        human.contains("sink slow: ok, cursor 10")
            && human.contains("EVENTS SKIPPED: 4 events were compacted away by retention before this sink received them"),
        "{human}"
    );
    assert_eq!(human.matches("EVENTS SKIPPED").count(), 1, "{human}");
}

#[test]
fn events_compacted_while_a_running_sink_waits_for_them_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "retain = \"3days\"\nforce = true");
    let store = store_with(&config, 10, 10);
    let commit = |n: u64| {
        store
            .commit(Commit {
                source: "test",
                upserts: Vec::new(),
                removals: Vec::new(),
                events: events(n),
                state: Some(&SourceState::default()),
            })
            .unwrap()
    };
    // One thread: the sink's task runs only when this one waits, so the commit and the
    // compaction below land together between two of its reads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ((), log, metrics) = captured(|| {
        runtime.block_on(async {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let (_restart, restarts) = tokio::sync::mpsc::channel(1);
            let task = tokio::spawn(rollcall::deliver::serve(
                store.clone(),
                sink(&config, "slow"),
                store.watch_head(),
                stopped,
                restarts,
            ));
            let cursor_at = |at: u64| {
                let store = store.clone();
                async move {
                    for _ in 0..6000 {
                        if store.cursor("slow").unwrap() == at {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    panic!("the sink's cursor never reached {at}");
                }
            };
            assert_eq!(commit(5), 10..15);
            cursor_at(15).await;
            assert_eq!(commit(5), 15..20);
            assert_eq!(store.compact(18).unwrap(), 0..18);
            cursor_at(20).await;
            stop.send_replace(true);
            task.await.unwrap();
        })
    });
    assert_eq!(delivered(dir.path(), "slow"), [0, 1, 2, 3, 4, 3, 4]);
    assert_eq!(store.skipped("slow").unwrap(), 3);
    assert!(
        log.contains("sink 'slow' skipped 3 events (offsets 15..18)"),
        "{log}"
    );
    assert!(
        metrics.contains("rollcall_events_skipped_total{sink=\"slow\"} 3"),
        "{metrics}"
    );
}
