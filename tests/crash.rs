//! Crash safety: the real binary is SIGKILLed mid-cycle (of a Superset and of a Kylin source) and
//! mid-delivery, then restarted. Every change must be derived exactly once in the log and delivered
//! at least once to the JSONL file, with the same event ids and bytes. Each test checks that its
//! kill landed where it says (nothing committed yet, part of a reconcile committed, part of the
//! log delivered).

use crate::support;
use support::{running, wait};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rollcall::store::Store;
use rollcall_sim::kylin::{self, KylinOptions, KylinSim, ROLE_ANALYST, SEEDED_PASSWORD};
use support::harness::Harness;
use support::sim::{Fault, FaultKind, Sim, SimOptions};

fn spawn(h: &Harness, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&h.config_path)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn once(h: &Harness) {
    let status = spawn(h, &["once"]).wait().unwrap();
    assert!(status.success());
}

/// The stored log, by event id → (offset, bytes).
fn log(h: &Harness) -> BTreeMap<String, (u64, Vec<u8>)> {
    let store = Store::open(&h.config().store.path).unwrap();
    store
        .events_from(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.event().unwrap().id.to_string(),
                (e.offset, e.bytes.to_vec()),
            )
        })
        .collect()
}

fn assert_exactly_once_in_log_at_least_once_in_file(h: &Harness, expected_users: usize) {
    assert_each_user_once(h, "user.created", expected_users);
}

/// Each of `expected_users` users has exactly one `event_type` event in the log, and every
/// stored event reached the JSONL file with the stored bytes.
fn assert_each_user_once(h: &Harness, event_type: &str, expected_users: usize) {
    let text = std::fs::read_to_string(h.events_path()).unwrap();
    assert_each_user_once_in(h, event_type, expected_users, &text);
}

/// As [`assert_each_user_once`], with `text` the JSONL lines delivered.
fn assert_each_user_once_in(h: &Harness, event_type: &str, expected_users: usize, text: &str) {
    let log = log(h);
    let created: Vec<_> = log
        .values()
        .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap())
        .filter(|e| e["type"] == event_type)
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<_> = created.iter().collect();
    assert_eq!(
        created.len(),
        expected_users,
        "each change derived exactly once"
    );
    assert_eq!(unique.len(), expected_users);
    let mut delivered = HashSet::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("every line is whole JSON");
        support::schema::assert_valid_event(&e);
        let id = e["id"].as_str().unwrap().to_owned();
        let (_, bytes) = log.get(&id).expect("delivered events come from the log");
        assert_eq!(
            line.as_bytes(),
            bytes.as_slice(),
            "delivered bytes equal stored bytes"
        );
        delivered.insert(id);
    }
    assert_eq!(
        delivered.len(),
        log.len(),
        "every stored event reached the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_cycle_loses_nothing_and_derives_nothing_twice() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    sim.add_users(150, &[4]);
    once(&h);
    for i in 0..40 {
        sim.add_user(&format!("new{i}"), "pw", &[4]);
    }
    // Stall the second page of the incremental poll, so the process is killed mid-cycle. (The
    // first request under the users path is `users/_info`, the release's capabilities.)
    sim.inject(Fault {
        path_contains: "/api/v1/security/users/".into(),
        skip: 2,
        times: 1,
        kind: FaultKind::Delay(Duration::from_secs(5)),
    });
    sim.clear_requests();
    let mut child = spawn(&h, &["run"]);
    // The second users request is held for 5 s by the fault: kill while it is in flight
    // (it is in `requests()` only once answered, so wait for its arrival).
    wait::until("the cycle's second users request", || {
        sim.arrived()
            .iter()
            .filter(|p| *p == "/api/v1/security/users/")
            .count()
            >= 2
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        log(&h).values().all(
            |(_, e)| serde_json::from_slice::<serde_json::Value>(e).unwrap()["type"]
                == "sync.completed"
        ),
        "the killed cycle committed nothing (the log holds the first cycle's sync.completed)"
    );
    once(&h);
    assert_exactly_once_in_log_at_least_once_in_file(&h, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_full_reconcile_of_100k_users_resumes_without_losing_or_doubling_an_event() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(100_000, &[4]);
    let h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    // One page late in the read is held for minutes, so the reconcile cannot end before the
    // kill, however slow this machine is.
    sim.inject(Fault {
        path_contains: "/api/v1/security/users/".into(),
        skip: 500,
        times: 1,
        kind: FaultKind::Delay(Duration::from_secs(300)),
    });
    let mut child = spawn(&h, &["once"]);
    // Past the first chunks (2,000 users each) but far from the end: kill while id ranges
    // are being read and some parts are committed.
    wait::until("a third of the users pages", || {
        sim.arrived()
            .iter()
            .filter(|p| *p == "/api/v1/security/users/")
            .count()
            >= 330
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let committed = log(&h).len();
    assert!(
        committed > 0 && committed < 100_001,
        "killed mid-reconcile with part of it committed ({committed} events)"
    );
    once(&h);
    assert_each_user_once(&h, "user.observed", 100_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_cycle_of_a_kylin_source_loses_nothing_and_derives_nothing_twice() {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let h = Harness::kylin(&sim.url, "page_size = 50");
    sim.add_users(150);
    once(&h);
    for i in 0..40 {
        sim.add_user(&format!("new{i}"), SEEDED_PASSWORD, &[ROLE_ANALYST]);
    }
    // Hold the second page of the full read, so the process is killed mid-cycle. A held
    // request is recorded as it arrives (a delayed one only when answered).
    sim.inject(kylin::Fault {
        path_contains: "page_offset=1&".into(),
        skip: 0,
        times: 1,
        kind: kylin::FaultKind::Hang,
    });
    sim.clear_requests();
    let mut child = spawn(&h, &["run"]);
    wait::until("the cycle's second page request", || {
        sim.requests()
            .iter()
            .any(|r| r.path.contains("page_offset=1&"))
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        log(&h).values().all(
            |(_, e)| serde_json::from_slice::<serde_json::Value>(e).unwrap()["type"]
                == "sync.completed"
        ),
        "the killed cycle committed nothing (the log holds the first cycle's sync.completed)"
    );
    once(&h);
    assert_exactly_once_in_log_at_least_once_in_file(&h, 40);
    assert_eq!(sim.failed_logins(kylin::ADMIN), 0);
}

/// The JSONL sink's stored cursor and the log head, read after the process holding the store
/// died.
fn cursor_and_head(h: &Harness) -> (u64, u64) {
    let store = Store::open(&h.config().store.path).unwrap();
    (store.cursor("siem").unwrap(), store.head().unwrap())
}

/// `rollcall run` with the JSONL sink on its stdout, whose lines this test reads one at a time:
/// the process can write no further than the pipe holds beyond what the test took.
struct Gated {
    running: running::Running,
    lines: tokio::sync::mpsc::Receiver<String>,
}

impl Gated {
    async fn start(h: &Harness) -> Gated {
        let mut cmd = running::command(&h.config_path);
        cmd.stdout(Stdio::piped());
        let mut running = running::start(cmd).await;
        let stdout = running.child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::channel(1);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        Gated { running, lines }
    }

    /// The sink's cursor as stored, read by the process's metrics.
    async fn stored_cursor(&self) -> u64 {
        let (_, text) = self.running.get("/metrics").await;
        let head = text
            .lines()
            .find_map(|l| l.strip_prefix("rollcall_log_head "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap());
        let lag = running::sample(&text, "rollcall_sink_lag_events", ("sink", "siem"));
        (head - lag) as u64
    }

    /// The next line the process wrote.
    async fn line(&mut self) -> String {
        tokio::time::timeout(wait::DEADLINE, self.lines.recv())
            .await
            .expect("timed out waiting for the process to deliver")
            .expect("the process delivers before it exits")
    }

    /// SIGKILL the process, then the lines it wrote before it died.
    async fn kill(mut self) -> Vec<String> {
        drop(self.running);
        let mut rest = Vec::new();
        while let Some(line) = self.lines.recv().await {
            rest.push(line);
        }
        rest
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_redelivers_with_the_same_ids() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    // One event per batch, so the cursor can stop between any two events; on stdout, so the
    // test decides how far the delivery gets.
    let events = h.events_path().display().to_string();
    h.edit_config(|c| {
        c.replace(
            &format!("path = {events:?}"),
            "path = \"-\"\nbatch_size = 1",
        )
    });
    // The first cycle's sync.completed goes to this process's stdout: delivered too.
    let first = running::command(&h.config_path)
        .arg("once")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(first.status.success());
    let mut delivered: Vec<String> = String::from_utf8(first.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut users = 0;
    for _ in 0..3 {
        sim.add_users(600, &[4]);
        users += 600;
        let before = cursor_and_head(&h).0;
        let mut run = Gated::start(&h).await;
        // Take lines one at a time until the process has stored a cursor past where this run
        // began: the cursor is saved a while after deliveries begin, never per event.
        while run.stored_cursor().await <= before {
            delivered.push(run.line().await);
        }
        delivered.extend(run.kill().await);
        let (cursor, head) = cursor_and_head(&h);
        assert!(
            before < cursor && cursor < head,
            "the kill landed mid-delivery: cursor {before} before the run, {cursor} after, head {head}"
        );
    }
    let mut last = running::command(&h.config_path);
    let out = last.arg("once").stderr(Stdio::null()).output().unwrap();
    assert!(out.status.success());
    delivered.extend(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned),
    );
    assert_each_user_once_in(&h, "user.created", users, &delivered.join("\n"));
}
