//! What AI agents did through Superset's MCP service, against the simulator: the rows a real
//! 6.1.0 MCP service logged, replayed, and calls made as it makes them, become one
//! `agent.tool_called` each, however the rows fall into polls and restarts, next to the
//! `audit.action` of every row.

use crate::support;

use chrono::TimeDelta;
use serde_json::{json, Value};
use support::events::captured_mcp_rows;
use support::harness::Harness;
use support::ocsf::Version;
use support::sim::{McpOutcome, Sim, SimOptions};

fn of_type<'e>(events: &'e [Value], t: &str) -> Vec<&'e Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// A simulator and a harness that has read it once (nothing to emit yet).
async fn start(extra: &str) -> (Sim, Harness) {
    let sim = Sim::start(SimOptions::default()).await;
    let mut h = Harness::new(&sim.url, extra);
    h.cycle().await;
    assert!(h.new_events().is_empty());
    (sim, h)
}

fn admin() -> Value {
    json!({"id": 1, "username": "admin", "first_name": "Admin", "last_name": "User"})
}

#[tokio::test]
async fn the_rows_a_real_mcp_service_logged_become_one_agent_event_per_call() {
    let (sim, mut h) = start("").await;
    h.stop();
    h.add_ocsf_sink(Some(Version::V1_8_0));
    let rows = captured_mcp_rows();
    // Logged as captured, the last row now and the others as far before it as they were.
    let time = |row: &Value| {
        chrono::NaiveDateTime::parse_from_str(row["dttm"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap()
    };
    let last = time(rows.last().unwrap());
    let now = sim.log_now();
    let ids: Vec<u64> = rows
        .iter()
        .map(|row| sim.log_captured(row, now - (last - time(row))))
        .collect();
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(of_type(&events, "audit.action").len(), 16, "every row");
    let calls = of_type(&events, "agent.tool_called");
    let got: Vec<_> = calls
        .iter()
        .map(|e| {
            let d = &e["data"];
            (
                d["log_id"].as_u64().unwrap(),
                d["tool"].as_str().unwrap(),
                d["logged_success"].as_bool().unwrap(),
                e["subject"].as_str().unwrap(),
                d["message_log_id"].as_u64(),
                d["phases"].as_array().unwrap().len(),
                d["duration_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (ids[5], "list_databases", true, "1", Some(ids[2]), 2, 65),
            (ids[10], "get_chart_info", false, "1", Some(ids[8]), 1, 37),
            (
                ids[13],
                "get_dataset_info",
                false,
                "1",
                Some(ids[11]),
                1,
                30
            ),
            // Refused for its arguments, and logged as a success (docs/superset.md S51).
            (
                ids[15],
                "list_charts",
                true,
                "anonymous",
                Some(ids[14]),
                0,
                3
            ),
        ]
    );
    assert_eq!(calls[0]["data"]["user"], admin());
    assert_eq!(calls[0]["data"]["can_write"], false);

    let records = h.ocsf_records(Version::V1_8_0);
    let agent: Vec<_> = records
        .iter()
        .filter(|r| r["metadata"]["event_code"] == "agent.tool_called")
        .collect();
    assert_eq!(agent.len(), 4, "each a valid OCSF record");
    assert_eq!(agent[0]["api"]["operation"], "list_databases");
    assert_eq!(agent[1]["status_id"], 2);

    h.cycle().await;
    h.full().await;
    assert!(h.new_events().is_empty(), "nothing twice");
}

#[tokio::test]
async fn a_call_whose_rows_fall_into_two_polls_is_one_event_joined_with_its_start() {
    let (sim, mut h) = start("").await;
    let session = sim.mcp_session(1);
    let mut call = session.begin("list_databases");
    let started = call.started_id;
    call.phase();
    h.cycle().await;
    let first = h.new_events();
    assert!(
        of_type(&first, "agent.tool_called").is_empty(),
        "not before it ends"
    );
    assert_eq!(of_type(&first, "audit.action").len(), 4);
    let end = call.end(McpOutcome::Answered);
    h.cycle().await;
    let second = h.new_events();
    let calls = of_type(&second, "agent.tool_called");
    assert_eq!(calls.len(), 1);
    let d = &calls[0]["data"];
    assert_eq!(
        (d["log_id"].as_u64(), d["message_log_id"].as_u64()),
        (Some(end), Some(started))
    );
    assert_eq!(d["user"], admin());
    let phases: Vec<_> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].clone())
        .collect();
    assert_eq!(
        phases,
        ["query", "serialization"],
        "one phase from each poll"
    );
    h.cycle().await;
    assert!(h.new_events().is_empty());
}

/// `rollcall once`, the real binary, which must succeed.
async fn once(h: &Harness) {
    let run = h.rollcall(&["once"]).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A call begun and half run before `rollcall once` ends, and ended before the next one
/// starts: one event, joined with its start and phases.
async fn restart_between_the_rows_of_one_call(extra: &str) {
    let (sim, mut h) = start(extra).await;
    h.stop();
    let session = sim.mcp_session(1);
    let mut call = session.begin("execute_sql");
    let started = call.started_id;
    call.phase();
    once(&h).await;
    assert!(of_type(&h.new_events(), "agent.tool_called").is_empty());
    call.end(McpOutcome::Answered);
    once(&h).await;
    let events = h.new_events();
    let calls = of_type(&events, "agent.tool_called");
    assert_eq!(calls.len(), 1, "{events:?}");
    let d = &calls[0]["data"];
    assert_eq!(d["message_log_id"].as_u64(), Some(started));
    assert_eq!(d["user"], admin());
    assert_eq!(d["phases"].as_array().unwrap().len(), 3);
    assert_eq!(d["can_write"], true);
    once(&h).await;
    assert!(
        h.new_events().is_empty(),
        "nothing twice after another restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_the_rows_of_one_call_keeps_its_start_in_the_stored_cursor() {
    // The first process emits the rows it read as audit.action, so it stores the cursor with
    // them: the call's start is known after the restart only from there.
    restart_between_the_rows_of_one_call("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_the_rows_of_one_call_with_the_mcp_rows_left_out_loses_none() {
    // Nothing to emit in the first process: however much of its cursor it stored, the next one
    // reads the call's start again or remembers it.
    restart_between_the_rows_of_one_call("log_exclude = [\"mcp_*\", \"mcp.*\"]").await;
}

#[tokio::test]
async fn session_starts_and_tool_lists_are_no_tool_calls() {
    let (sim, mut h) = start("").await;
    sim.mcp_session(1);
    sim.mcp_session(1);
    h.cycle().await;
    let events = h.new_events();
    assert_eq!(of_type(&events, "audit.action").len(), 4);
    assert!(of_type(&events, "agent.tool_called").is_empty());
    let cursor = h.store().source_state("test").unwrap().cursor;
    assert_eq!(
        cursor["log"]["calls"]["open"],
        json!([]),
        "and no call is held open"
    );
}

#[tokio::test]
async fn an_error_answer_is_logged_success_false_and_refused_arguments_success_true() {
    let (sim, mut h) = start("").await;
    let session = sim.mcp_session(1);
    session.call("get_chart_info", McpOutcome::ErrorAnswer);
    session.call("list_charts", McpOutcome::InvalidArguments);
    h.cycle().await;
    let events = h.new_events();
    let calls = of_type(&events, "agent.tool_called");
    let got: Vec<_> = calls
        .iter()
        .map(|e| {
            (
                e["data"]["logged_success"].clone(),
                e["data"]["user"].clone(),
                e["subject"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!(false), admin(), json!("1")),
            (json!(true), Value::Null, json!("anonymous")),
        ]
    );
}

#[tokio::test]
async fn a_call_whose_end_is_never_logged_is_given_up_after_an_hour_of_log() {
    let (sim, mut h) = start("").await;
    let session = sim.mcp_session(1);
    let mut call = session.begin("generate_dashboard");
    call.phase();
    h.cycle().await;
    let state =
        |h: &mut Harness| h.store().source_state("test").unwrap().cursor["log"]["calls"].clone();
    assert_eq!(state(&mut h)["open"].as_array().unwrap().len(), 1);
    // Another user acts an hour and more later.
    sim.log_action(
        Some(1),
        "DashboardRestApi.get",
        "{}",
        Some(sim.log_now() + TimeDelta::minutes(61)),
    );
    h.cycle().await;
    assert!(of_type(&h.new_events(), "agent.tool_called").is_empty());
    let calls = state(&mut h);
    assert_eq!(
        (calls["open"].clone(), calls["unfinished"].clone()),
        (json!([]), json!(1))
    );
    h.stop();
    let status = h.rollcall(&["status", "--json"]).await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["sources"][0]["details"]["action_log"]["mcp_calls_given_up"],
        1
    );
}

#[tokio::test]
async fn an_ocsf_sink_without_ocsf_version_sends_each_call_as_1_9_0_with_the_ai_operation_profile()
{
    let (sim, mut h) = start("").await;
    h.stop();
    h.add_ocsf_sink(None);
    let session = sim.mcp_session(1);
    session.call("execute_sql", McpOutcome::Answered);
    session.call("get_chart_info", McpOutcome::ErrorAnswer);
    session.call("list_charts", McpOutcome::InvalidArguments);
    h.cycle().await;
    // Each valid against 6003 with the profile, and nothing 1.9.0 deprecates.
    let records = h.ocsf_records(Version::V1_9_0);
    let calls: Vec<_> = records
        .iter()
        .filter(|r| r["metadata"]["event_code"] == "agent.tool_called")
        .collect();
    let got: Vec<_> = calls
        .iter()
        .map(|r| {
            (
                r["activity_id"].clone(),
                r["status_id"].clone(),
                r["severity_id"].clone(),
                r["actor"].clone(),
            )
        })
        .collect();
    let application = json!({"name": "MCP client"});
    let acting_as_admin = json!({
        "user": {"uid": "1", "name": "admin", "full_name": "Admin User"},
        "application": application,
    });
    assert_eq!(
        got,
        [
            (json!(99), json!(0), json!(2), acting_as_admin.clone()),
            (json!(2), json!(2), json!(1), acting_as_admin),
            (
                json!(2),
                json!(0),
                json!(1),
                json!({"application": application})
            ),
        ]
    );
    for r in calls {
        // Chained in the store, so attested too.
        assert_eq!(
            r["metadata"]["profiles"],
            json!(["ai_operation", "record_integrity"])
        );
        assert!(
            r.get("ai_agent").is_none(),
            "no agent id logged, none made up"
        );
    }
}
