//! The action log as a second event stream, against the simulator: `audit.action` events for
//! what other users do, none for rollcall's own reads, each row exactly once.

use crate::support;

use std::collections::BTreeSet;

use chrono::TimeDelta;
use support::harness::{kind, kinds, Harness};
use support::ocsf::Version;
use support::sim::{Fault, FaultKind, Sim, SimOptions};

const LOG: &str = "/api/v1/log/";

async fn start(extra: &str) -> (Sim, Harness, u64) {
    let sim = Sim::start(SimOptions::default()).await;
    let bob = sim.add_user("bob", "pw", &[4]);
    let mut h = Harness::new(&sim.url, extra);
    h.cycle().await;
    assert!(h.new_events().is_empty());
    (sim, h, bob)
}

fn audit(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| e["type"] == "audit.action")
        .collect()
}

#[tokio::test]
async fn polling_again_and_again_with_nobody_acting_emits_nothing() {
    let (sim, mut h, _) = start("").await;
    for i in 0..8 {
        if i % 3 == 0 {
            h.full().await;
        } else {
            h.cycle().await;
        }
    }
    assert!(h.events().is_empty(), "{:?}", kinds(&h.events()));
    let log_reads = sim.requests().iter().filter(|r| r.path == LOG).count();
    assert!(
        log_reads >= 9,
        "each cycle read the log, and each read wrote a row that was then filtered"
    );
}

#[tokio::test]
async fn another_users_action_becomes_one_audit_event() {
    let (sim, mut h, bob) = start("").await;
    let log_id = sim.log_action(
        Some(bob),
        "DashboardRestApi.get",
        r#"{"path": "/api/v1/dashboard/1", "object_ref": "x"}"#,
        None,
    );
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(kinds(&events), [kind("audit.action", bob)]);
    let data = &events[0]["data"];
    assert_eq!(data["log_id"], log_id);
    assert_eq!(data["action"], "DashboardRestApi.get");
    assert_eq!(data["user"]["username"], "bob");
    assert_eq!(data["details"]["path"], "/api/v1/dashboard/1");
    assert_eq!(data["duration_ms"], 7);
    h.cycle().await;
    h.full().await;
    assert!(h.new_events().is_empty());
}

#[tokio::test]
async fn an_admin_reading_the_log_is_an_event_but_rollcalls_own_reads_are_not() {
    let sim = Sim::start(SimOptions::default()).await;
    let svc = sim.add_user("rollcall", "svc-pw", &[1]);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "svc-pw").unwrap();
    let mut h = Harness::with_account(&sim.url, "rollcall", &password, "");
    h.cycle().await;
    h.cycle().await;
    // The admin (id 1) reads the log through the API, as rollcall does.
    sim.log_action(
        Some(1),
        "LogRestApi.get_list",
        r#"{"path": "/api/v1/log/"}"#,
        None,
    );
    h.cycle().await;
    h.cycle().await;
    let events = h.events();
    let audit: Vec<_> = audit(&events);
    assert_eq!(audit.len(), 1, "{:?}", kinds(&events));
    assert_eq!(audit[0]["subject"], "1");
    assert!(events
        .iter()
        .all(|e| e["subject"].as_str() != Some(svc.to_string().as_str())));
}

#[tokio::test]
async fn many_rows_sharing_one_timestamp_across_pages_are_each_emitted_once() {
    let (sim, mut h, bob) = start("").await;
    let t = sim.log_now();
    let ids: BTreeSet<u64> = (0..250)
        .map(|i| sim.log_action(Some(bob), &format!("ChartRestApi.get.{i}"), "{}", Some(t)))
        .collect();
    for _ in 0..3 {
        h.cycle().await;
    }
    let events = h.new_events();
    let seen: Vec<u64> = audit(&events)
        .iter()
        .map(|e| e["data"]["log_id"].as_u64().unwrap())
        .collect();
    assert_eq!(seen.len(), 250, "no row twice");
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        ids,
        "no row skipped"
    );
}

#[tokio::test]
async fn a_row_committed_late_within_the_overlap_is_emitted_once() {
    let (sim, mut h, bob) = start("").await;
    sim.log_action(Some(bob), "first", "{}", None);
    h.cycle().await;
    assert_eq!(h.new_events().len(), 1);
    // Written now, but stamped 20 s ago: older than the rows already read.
    let late = sim.log_action(
        Some(bob),
        "late",
        "{}",
        Some(sim.log_now() - TimeDelta::seconds(20)),
    );
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(audit(&events).len(), 1);
    assert_eq!(events[0]["data"]["log_id"], late);
    h.cycle().await;
    assert!(h.new_events().is_empty());
}

#[tokio::test]
async fn include_and_exclude_globs_keep_only_matching_actions() {
    let (sim, mut h, bob) = start("log_include = [\"mcp.*\"]\nlog_exclude = [\"*.read\"]").await;
    sim.log_action(
        Some(bob),
        "mcp.generate_chart.db_write",
        r#"{"tool": "generate_chart"}"#,
        None,
    );
    sim.log_action(Some(bob), "mcp.list_charts.read", "{}", None);
    sim.log_action(Some(bob), "DashboardRestApi.get", "{}", None);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["action"], "mcp.generate_chart.db_write");
    assert_eq!(events[0]["data"]["details"]["tool"], "generate_chart");
}

#[tokio::test]
async fn first_start_reads_back_only_the_backfill_window() {
    let sim = Sim::start(SimOptions::default()).await;
    let bob = sim.add_user("bob", "pw", &[4]);
    let now = sim.log_now();
    sim.log_action(Some(bob), "too.old", "{}", Some(now - TimeDelta::hours(30)));
    let recent = sim.log_action(Some(bob), "recent", "{}", Some(now - TimeDelta::hours(2)));
    let mut h = Harness::new(&sim.url, "log_backfill = \"24h\"");
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["log_id"], recent);

    let mut none = Harness::new(&sim.url, "log_backfill = \"0s\"");
    none.cycle().await;
    assert!(
        none.events().is_empty(),
        "log_backfill = 0 reads nothing from before the start"
    );
    sim.log_action(Some(bob), "after.start", "{}", None);
    none.cycle().await;
    assert_eq!(none.events().len(), 1);
}

#[tokio::test]
async fn action_log_can_be_turned_off() {
    let (sim, mut h, bob) = start("action_log = false").await;
    sim.log_action(Some(bob), "DashboardRestApi.get", "{}", None);
    h.cycle().await;
    assert!(h.events().is_empty());
    assert!(sim.requests().iter().all(|r| r.path != LOG));
}

#[tokio::test]
async fn an_anonymous_row_has_subject_anonymous_and_no_user() {
    let (sim, mut h, _) = start("").await;
    sim.log_action(None, "DashboardRestApi.get", "not json", None);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(events[0]["subject"], "anonymous");
    assert!(events[0]["data"]["user"].is_null());
    assert_eq!(events[0]["data"]["details"], "not json");
}

async fn log_failure_leaves_users_stream_working(fault: FaultKind, expect: &str) {
    let (sim, mut h, bob) = start("").await;
    sim.inject(Fault {
        path_contains: LOG.into(),
        skip: 0,
        times: 1,
        kind: fault,
    });
    sim.log_action(Some(bob), "DashboardRestApi.get", "{}", None);
    let carol = sim.add_user("carol", "pw", &[4]);
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("user.created", carol)]);
    let error = log_error(&mut h).expect("the log problem is recorded for status");
    assert!(error.contains(expect), "{error}");
    // Next cycle the log works again and the missed row arrives, once.
    h.cycle().await;
    assert_eq!(kinds(&h.new_events()), [kind("audit.action", bob)]);
    assert!(log_error(&mut h).is_none());
}

#[tokio::test]
async fn a_disabled_log_endpoint_is_a_warning_and_users_keep_flowing() {
    log_failure_leaves_users_stream_working(FaultKind::Status(404), "404").await;
}

#[tokio::test]
async fn a_forbidden_log_endpoint_is_a_warning_and_users_keep_flowing() {
    log_failure_leaves_users_stream_working(FaultKind::Status(403), "403").await;
}

#[tokio::test]
async fn a_log_that_ignores_its_time_filter_is_not_trusted() {
    let (sim, mut h, bob) = start("").await;
    sim.log_action(Some(bob), "first", "{}", None);
    h.cycle().await;
    assert_eq!(h.new_events().len(), 1);
    // Far older than the cursor: only a log that dropped the `dttm gt` filter returns it.
    sim.log_action(
        Some(bob),
        "ancient",
        "{}",
        Some(sim.log_now() - TimeDelta::hours(1)),
    );
    sim.log_action(Some(bob), "new", "{}", None);
    sim.inject(Fault {
        path_contains: LOG.into(),
        skip: 0,
        times: 1,
        kind: FaultKind::IgnoreFilters,
    });
    h.cycle().await;
    let got = h.new_events();
    assert!(got.is_empty(), "nothing from an untrusted page: {got:?}");
    let error = log_error(&mut h).unwrap();
    assert!(
        error.contains("Superset ignored part of a query"),
        "{error}"
    );
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["action"], "new");
}

/// The action log's last error, as the Superset source keeps it in its cursor.
fn log_error(h: &mut Harness) -> Option<String> {
    let state = h.store().source_state("test").unwrap();
    state.cursor.get("log_error")?["message"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn an_ocsf_sink_gets_each_row_as_api_activity_without_an_invented_client_address() {
    let sim = Sim::start(SimOptions::default()).await;
    let bob = sim.add_user("bob", "pw", &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.add_ocsf_sink(Some(Version::V1_8_0));
    h.cycle().await;
    sim.log_action(
        Some(bob),
        "DashboardRestApi.get",
        r#"{"path": "/api/v1/dashboard/1"}"#,
        None,
    );
    sim.log_action(None, "explore_json", "not json", None);
    h.cycle().await;
    let events = audit(&h.events()).into_iter().cloned().collect::<Vec<_>>();
    let records = h.ocsf_records(Version::V1_8_0);
    assert_eq!(records.len(), 2);
    let (read, anonymous) = (&records[0], &records[1]);
    assert_eq!(read["metadata"]["uid"], events[0]["id"]);
    assert_eq!(read["type_uid"], 600302, "DashboardRestApi.get is a Read");
    assert_eq!(read["api"]["operation"], "DashboardRestApi.get");
    assert_eq!(read["actor"]["user"]["uid"], bob.to_string());
    assert_eq!(read["actor"]["user"]["name"], "bob");
    assert_eq!(read["http_request"]["url"]["path"], "/api/v1/dashboard/1");
    assert_eq!(read["duration"], 7);
    assert_eq!(read["metadata"]["original_time"], events[0]["data"]["dttm"]);
    for r in &records {
        assert_eq!(r["src_endpoint"], serde_json::json!({"name": "unknown"}));
    }
    assert_eq!(anonymous["type_uid"], 600399);
    assert_eq!(anonymous["activity_name"], "explore_json");
    assert_eq!(anonymous["actor"]["user"]["name"], "anonymous");
}

/// Runs the real binary with the harness's config, failing the test if it has not ended
/// within the wait deadline (a read that never ends is what these tests guard against).
async fn rollcall(h: &Harness, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(support::wait::DEADLINE, h.rollcall(args))
        .await
        .unwrap_or_else(|_| panic!("`rollcall {}` did not end", args.join(" ")))
}

fn audit_log_ids(events: &[serde_json::Value]) -> Vec<u64> {
    audit(events)
        .iter()
        .map(|e| e["data"]["log_id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_log_that_ignores_page_ends_its_read_with_an_error_and_users_keep_flowing() {
    let (sim, mut h, bob) = start("").await;
    h.stop();
    for i in 0..150 {
        sim.log_action(Some(bob), &format!("ChartRestApi.get.{i}"), "{}", None);
    }
    // Every read of the log from now on answers page 0, whatever page it asks for.
    sim.inject(Fault {
        path_contains: LOG.into(),
        skip: 0,
        times: u32::MAX,
        kind: FaultKind::IgnorePage,
    });
    let carol = sim.add_user("carol", "pw", &[4]);
    sim.clear_requests();
    let out = rollcall(&h, &["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(kinds(&h.new_events()), [kind("user.created", carol)]);
    assert_eq!(
        sim.requests().iter().filter(|r| r.path == LOG).count(),
        2,
        "page 1 brought nothing new: the read ends there"
    );
    let status = rollcall(&h, &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let error = status["sources"][0]["details"]["action_log"]["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("page 1 of the action log brought only rows of earlier pages"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_log_reads_at_most_its_row_budget_per_cycle_and_the_rest_next_cycle() {
    let (sim, mut h, bob) = start("").await;
    h.stop();
    let t = sim.log_now();
    let rows: BTreeSet<u64> = (0..10_300)
        .map(|i| sim.log_action(Some(bob), &format!("a.{i}"), "{}", Some(t)))
        .collect();
    let out = rollcall(&h, &["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("budget is spent"));
    let first = audit_log_ids(&h.new_events());
    // The budget counts new rows, a few of them rollcall's own reads (no event), and is
    // checked between pages: at most the page that crossed it comes on top.
    assert!(
        (9_990..=10_100).contains(&first.len()),
        "the budget's worth of rows, not {}",
        first.len()
    );
    let out = rollcall(&h, &["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = audit_log_ids(&h.new_events());
    assert_eq!(
        first.len() + second.len(),
        10_300,
        "the rest, and nothing twice"
    );
    let all: BTreeSet<u64> = first.into_iter().chain(second).collect();
    assert_eq!(all, rows);
}

/// `rollcall run`, killed (and reaped) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_events_are_delivered_while_the_action_log_is_still_being_read() {
    let (sim, mut h, _) = start("poll_interval = \"1s\"\nrequest_timeout = \"60s\"").await;
    h.stop();
    // The log answers, but only after far longer than this test waits.
    sim.inject(Fault {
        path_contains: LOG.into(),
        skip: 0,
        times: u32::MAX,
        kind: FaultKind::Delay(std::time::Duration::from_secs(3600)),
    });
    let carol = sim.add_user("carol", "pw", &[4]);
    sim.clear_requests();
    let _run = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&h.config_path)
            .arg("run")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait::until("carol's event in the JSONL file", || {
        kinds(&h.events()).contains(&kind("user.created", carol))
    })
    .await;
    // The user events were delivered before the log was even asked (it may not be yet): wait
    // for that read to arrive, then see that it is the only one and still unanswered.
    let log_reads = || sim.arrived().iter().filter(|p| p.as_str() == LOG).count();
    support::wait::until("the first read of the log", || log_reads() >= 1).await;
    assert_eq!(log_reads(), 1, "the first read of the log is still waiting");
    assert!(
        sim.requests().iter().all(|r| r.path != LOG),
        "and has not been answered"
    );
}
