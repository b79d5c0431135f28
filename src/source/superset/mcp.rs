//! What AI agents did through Superset's MCP service: the action-log rows of one tool call
//! joined into one `agent.tool_called` event.
//!
//! Owns, as a pure state machine kept in the log cursor, the join of a call's rows (docs/superset.md
//! S48–S53): its `mcp_message` opens the call, its `mcp.<tool>.<phase>` rows add the user the
//! server acted as, and its `mcp_tool_call` row finishes it and becomes the event. No call id is
//! logged, so rows are joined by tool name, the oldest open call of that tool first. It also owns
//! the list of Superset 6.1.0's tools and which of them may write.
//!
//! It never does I/O and never emits a call twice or invents one: exactly one event per
//! `mcp_tool_call` row (which the log cursor hands over once), whatever came before it. The other
//! rows only add to that event; one whose call never finishes within [`OPEN_FOR`] of log time is
//! given up (counted in `unfinished`), and rows belonging to no open call join nothing. Every row
//! stays an `audit.action` event as well, unless `log_include`/`log_exclude` drop it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::event::{Derived, EventType};

/// How long, in log time, a call may stay open before it is given up: far longer than any tool
/// of 6.1.0 runs (their SQL and screenshot timeouts are seconds to minutes), so that only a call
/// whose end was never logged (the MCP service stopped mid-call) is given up.
pub const OPEN_FOR: chrono::Duration = chrono::Duration::hours(1);
/// At most this many calls are held open (they are stored with the source's state at every
/// commit); beyond it the oldest is given up.
pub const MAX_OPEN: usize = 1_000;

/// Superset 6.1.0's MCP tools (docs/superset.md S53): the name, the middle part of its phase rows'
/// actions, and whether it may write (its `readOnlyHint` is false).
const TOOLS: [(&str, &str, bool); 24] = [
    ("generate_chart", "generate_chart", true),
    ("get_chart_data", "get_chart_data", false),
    ("get_chart_info", "get_chart_info", false),
    ("get_chart_preview", "get_chart_preview", false),
    ("get_chart_type_schema", "get_chart_type_schema", false),
    ("list_charts", "list_charts", false),
    ("update_chart", "update_chart", true),
    ("update_chart_preview", "update_chart_preview", true),
    (
        "add_chart_to_existing_dashboard",
        "add_chart_to_dashboard",
        true,
    ),
    ("generate_dashboard", "generate_dashboard", true),
    ("get_dashboard_info", "get_dashboard_info", false),
    ("list_dashboards", "list_dashboards", false),
    ("get_database_info", "get_database_info", false),
    ("list_databases", "list_databases", false),
    ("create_virtual_dataset", "create_virtual_dataset", true),
    ("get_dataset_info", "get_dataset_info", false),
    ("list_datasets", "list_datasets", false),
    ("generate_explore_link", "generate_explore_link", true),
    ("execute_sql", "execute_sql", true),
    ("open_sql_lab_with_context", "open_sql_lab", false),
    ("save_sql_query", "save_sql_query", true),
    ("get_instance_info", "get_instance_info", false),
    ("get_schema", "get_schema", false),
    ("health_check", "health_check", false),
];

/// Whether `tool` may write: `None` for a tool 6.1.0 does not have (a later release's).
pub fn can_write(tool: &str) -> Option<bool> {
    TOOLS.iter().find(|t| t.0 == tool).map(|t| t.2)
}

/// The middle part of `tool`'s phase actions (`mcp.<this>.<phase>`): the tool's own name unless
/// 6.1.0 names its phases otherwise.
pub(super) fn phase_prefix(tool: &str) -> &str {
    TOOLS.iter().find(|t| t.0 == tool).map_or(tool, |t| t.1)
}

/// Whether a row's action is one of the MCP service's that the join reads.
pub fn concerns(action: &str) -> bool {
    action == "mcp_message" || action == "mcp_tool_call" || action.starts_with("mcp.")
}

/// The calls begun and not finished yet, kept in the log cursor between polls and restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calls {
    /// In the order their `mcp_message` rows were read.
    #[serde(default)]
    open: Vec<OpenCall>,
    /// Calls given up on, ever: begun, and not finished within [`OPEN_FOR`] (or pushed out by
    /// [`MAX_OPEN`]).
    #[serde(default)]
    pub unfinished: u64,
}

/// A call whose `mcp_message` was read and whose `mcp_tool_call` was not yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenCall {
    tool: String,
    log_id: u64,
    started_at: DateTime<Utc>,
    agent_id: Option<String>,
    user: Option<Value>,
    phases: Vec<Phase>,
    /// Another call of the same tool was open at the same time: the join by order may have
    /// given this call the other one's phases (and user, and start).
    ambiguous: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Phase {
    log_id: u64,
    phase: String,
    duration_ms: Option<i64>,
}

/// One action-log row as the join reads it.
pub struct McpRow<'a> {
    pub log_id: u64,
    pub action: &'a str,
    pub dttm: DateTime<Utc>,
    /// The row's user as `audit.action` gives it (`{id, username, first_name, last_name}`).
    pub user: Option<Value>,
    pub duration_ms: Option<i64>,
    /// The row's `json`, parsed.
    pub details: &'a Value,
}

/// A call given up on: begun at `started_at`, its end never read.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    pub tool: String,
    pub started_at: DateTime<Utc>,
}

impl Calls {
    /// How many calls are open now.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Give up the calls begun more than [`OPEN_FOR`] before a row logged at `now`. Called for
    /// every row read, so log time moves on even while no agent acts.
    pub fn expire(&mut self, now: DateTime<Utc>, given_up: &mut Vec<Unfinished>) {
        let stale = |c: &OpenCall| now - c.started_at > OPEN_FOR;
        if !self.open.iter().any(stale) {
            return;
        }
        let (stale, open) = std::mem::take(&mut self.open).into_iter().partition(stale);
        self.open = open;
        self.give_up(stale, given_up);
    }

    fn give_up(&mut self, calls: Vec<OpenCall>, given_up: &mut Vec<Unfinished>) {
        self.unfinished += calls.len() as u64;
        given_up.extend(calls.into_iter().map(|c| Unfinished {
            tool: c.tool,
            started_at: c.started_at,
        }));
    }

    /// Take one row of the MCP service (each row once, in the order read); returns the event of
    /// the call it finished.
    pub fn take(&mut self, row: McpRow<'_>, given_up: &mut Vec<Unfinished>) -> Option<Derived> {
        match row.action {
            "mcp_message" => {
                self.begin(row, given_up);
                None
            }
            "mcp_tool_call" => self.finish(row),
            action => {
                if let Some((prefix, phase)) = action
                    .strip_prefix("mcp.")
                    .and_then(|rest| rest.rsplit_once('.'))
                {
                    self.phase(prefix, phase, row);
                }
                None
            }
        }
    }

    /// An `mcp_message` of `tools/call` opens a call; any other (a session start, `tools/list`)
    /// is not a tool call (S49).
    fn begin(&mut self, row: McpRow<'_>, given_up: &mut Vec<Unfinished>) {
        let d = row.details;
        let Some(tool) = d
            .get("tool")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return;
        };
        if d.get("method").and_then(Value::as_str) != Some("tools/call") {
            return;
        }
        let mut ambiguous = false;
        for other in self.open.iter_mut().filter(|c| c.tool == tool) {
            other.ambiguous = true;
            ambiguous = true;
        }
        if self.open.len() >= MAX_OPEN {
            let oldest = self.open.remove(0);
            self.give_up(vec![oldest], given_up);
        }
        self.open.push(OpenCall {
            tool: tool.to_owned(),
            log_id: row.log_id,
            started_at: row.dttm,
            agent_id: agent_id(d),
            user: row.user,
            phases: Vec::new(),
            ambiguous,
        });
    }

    /// The oldest open call of the tool whose phases are named `prefix`, or of `tool`.
    fn oldest(&self, matches: impl Fn(&OpenCall) -> bool) -> Option<usize> {
        self.open
            .iter()
            .enumerate()
            .filter(|(_, c)| matches(c))
            .min_by_key(|(_, c)| (c.started_at, c.log_id))
            .map(|(i, _)| i)
    }

    /// A phase row names the user the server acted as (S52); one of no open call joins nothing.
    fn phase(&mut self, prefix: &str, phase: &str, row: McpRow<'_>) {
        let Some(i) = self.oldest(|c| phase_prefix(&c.tool) == prefix) else {
            return;
        };
        let call = &mut self.open[i];
        if call.user.is_none() {
            call.user = row.user;
        }
        call.phases.push(Phase {
            log_id: row.log_id,
            phase: phase.to_owned(),
            duration_ms: row.duration_ms,
        });
    }

    /// An `mcp_tool_call` finishes the oldest open call of its tool and is the event, with what
    /// the call's earlier rows said; without one (its `mcp_message` was before the first read,
    /// or given up), the event has only what this row says.
    fn finish(&mut self, row: McpRow<'_>) -> Option<Derived> {
        let d = row.details;
        let tool = d
            .get("tool")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())?;
        let call = self.oldest(|c| c.tool == tool).map(|i| self.open.remove(i));
        let user = row
            .user
            .or_else(|| call.as_ref().and_then(|c| c.user.clone()));
        let subject = user
            .as_ref()
            .and_then(|u| u.get("id"))
            .and_then(Value::as_u64)
            .map(|id| id.to_string());
        let data = json!({
            "log_id": row.log_id,
            "tool": tool,
            "logged_success": d.get("success").and_then(Value::as_bool),
            "duration_ms": row.duration_ms,
            "user": user,
            "agent_id": agent_id(d).or_else(|| call.as_ref().and_then(|c| c.agent_id.clone())),
            "can_write": can_write(tool),
            "started_at": call.as_ref().map(|c| c.started_at),
            "finished_at": row.dttm,
            "message_log_id": call.as_ref().map(|c| c.log_id),
            "phases": call.as_ref().map_or(&[][..], |c| &c.phases[..]),
            "ambiguous": call.as_ref().is_some_and(|c| c.ambiguous),
        });
        Some(Derived {
            event_type: EventType::AgentToolCalled,
            subject,
            data,
        })
    }
}

/// The agent's id, when the client identified itself (S50): a string, or the JSON of whatever
/// else was logged there.
fn agent_id(details: &Value) -> Option<String> {
    match details.get("agent_id")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_796_000_000_000 + ms).unwrap()
    }

    fn admin() -> Value {
        json!({"id": 1, "username": "admin", "first_name": "Admin", "last_name": "User"})
    }

    /// The rows of a call as 6.1.0 writes them (docs/superset.md S48).
    fn message(tool: &str) -> Value {
        json!({"tool": tool, "agent_id": null, "params": {}, "method": "tools/call",
               "dashboard_id": null, "slice_id": null, "dataset_id": null})
    }

    fn tool_call(tool: &str, success: bool) -> Value {
        let mut d = message(tool);
        d["success"] = json!(success);
        d
    }

    /// Feeds rows `(log id, action, ms, user, duration, json)` in order, as the cursor does.
    struct Join {
        calls: Calls,
        events: Vec<Derived>,
        given_up: Vec<Unfinished>,
    }

    impl Join {
        fn new() -> Join {
            Join {
                calls: Calls::default(),
                events: Vec::new(),
                given_up: Vec::new(),
            }
        }

        fn row(&mut self, id: u64, action: &str, ms: i64, user: Option<Value>, json: Value) {
            self.calls.expire(at(ms), &mut self.given_up);
            let duration_ms = (action != "mcp_message").then_some(ms % 50);
            let row = McpRow {
                log_id: id,
                action,
                dttm: at(ms),
                user,
                duration_ms,
                details: &json,
            };
            self.events.extend(self.calls.take(row, &mut self.given_up));
        }

        fn only(&self) -> &Value {
            assert_eq!(self.events.len(), 1, "{:#?}", self.events);
            &self.events[0].data
        }
    }

    #[test]
    fn a_calls_message_phases_and_end_become_one_event_naming_the_user_of_its_phases() {
        let mut j = Join::new();
        j.row(3, "mcp_message", 0, None, message("list_databases"));
        j.row(4, "mcp.list_databases.query", 49, Some(admin()), json!({}));
        j.row(
            5,
            "mcp.list_databases.serialization",
            66,
            Some(admin()),
            json!({}),
        );
        assert!(j.events.is_empty(), "nothing before the call ends");
        j.row(
            6,
            "mcp_tool_call",
            69,
            None,
            tool_call("list_databases", true),
        );
        let e = &j.events[0];
        assert_eq!(e.event_type, EventType::AgentToolCalled);
        assert_eq!(e.subject.as_deref(), Some("1"));
        assert_eq!(
            e.data,
            json!({
                "log_id": 6, "tool": "list_databases", "logged_success": true, "duration_ms": 19,
                "user": admin(), "agent_id": null, "can_write": false,
                "started_at": at(0), "finished_at": at(69), "message_log_id": 3,
                "phases": [
                    {"log_id": 4, "phase": "query", "duration_ms": 49},
                    {"log_id": 5, "phase": "serialization", "duration_ms": 16},
                ],
                "ambiguous": false,
            })
        );
        assert_eq!(j.calls.open(), 0);
    }

    #[test]
    fn a_session_start_and_its_tools_list_open_no_call() {
        let mut j = Join::new();
        j.row(1, "mcp_message", 0, None, Value::Null);
        let mut list = message("x");
        list["tool"] = Value::Null;
        list["method"] = json!("tools/list");
        j.row(2, "mcp_message", 10, None, list);
        let mut other = message("list_charts");
        other["method"] = json!("resources/read");
        j.row(3, "mcp_message", 20, None, other);
        assert_eq!(j.calls.open(), 0);
        assert!(j.events.is_empty());
    }

    #[test]
    fn a_call_refused_for_its_arguments_is_logged_success_without_phases_or_user() {
        let mut j = Join::new();
        j.row(14, "mcp_message", 0, None, message("list_charts"));
        j.row(15, "mcp_tool_call", 8, None, tool_call("list_charts", true));
        let d = j.only();
        assert_eq!(d["logged_success"], true, "as Superset logged it (S51)");
        assert_eq!(d["user"], Value::Null);
        assert_eq!(d["phases"], json!([]));
        assert_eq!(j.events[0].subject, None);
    }

    #[test]
    fn an_error_answer_is_logged_success_false() {
        let mut j = Join::new();
        j.row(8, "mcp_message", 0, None, message("get_chart_info"));
        j.row(9, "mcp.get_chart_info.lookup", 32, Some(admin()), json!({}));
        j.row(
            10,
            "mcp_tool_call",
            42,
            None,
            tool_call("get_chart_info", false),
        );
        let d = j.only();
        assert_eq!(d["logged_success"], false);
        assert_eq!(d["user"], admin());
    }

    #[test]
    fn a_tool_call_row_without_its_message_is_still_one_event_with_what_it_says() {
        let mut j = Join::new();
        j.row(7, "mcp.list_databases.query", 0, Some(admin()), json!({}));
        j.row(
            8,
            "mcp_tool_call",
            10,
            None,
            tool_call("list_databases", true),
        );
        let d = j.only();
        assert_eq!(d["started_at"], Value::Null);
        assert_eq!(d["message_log_id"], Value::Null);
        assert_eq!(d["user"], Value::Null, "an orphan phase joins nothing");
        assert_eq!(d["phases"], json!([]));
        assert_eq!(d["logged_success"], true);
    }

    #[test]
    fn a_tool_call_row_without_a_tool_name_is_no_event() {
        let mut j = Join::new();
        j.row(1, "mcp_message", 0, None, message("list_charts"));
        j.row(2, "mcp_tool_call", 5, None, json!({"success": true}));
        j.row(3, "mcp_tool_call", 6, None, json!("not an object"));
        assert!(j.events.is_empty());
        assert_eq!(j.calls.open(), 1, "the call stays open for its own end");
    }

    #[test]
    fn phases_named_after_something_else_than_their_tool_join_that_tool() {
        let mut j = Join::new();
        j.row(
            1,
            "mcp_message",
            0,
            None,
            message("add_chart_to_existing_dashboard"),
        );
        j.row(
            2,
            "mcp_message",
            1,
            None,
            message("open_sql_lab_with_context"),
        );
        j.row(
            3,
            "mcp.add_chart_to_dashboard.db_write",
            5,
            Some(admin()),
            json!({}),
        );
        j.row(
            4,
            "mcp.open_sql_lab.db_validation",
            6,
            Some(admin()),
            json!({}),
        );
        j.row(
            5,
            "mcp_tool_call",
            7,
            None,
            tool_call("open_sql_lab_with_context", true),
        );
        j.row(
            6,
            "mcp_tool_call",
            8,
            None,
            tool_call("add_chart_to_existing_dashboard", true),
        );
        let phases: Vec<_> = j
            .events
            .iter()
            .map(|e| e.data["phases"][0]["log_id"].clone())
            .collect();
        assert_eq!(phases, [json!(4), json!(3)]);
        assert_eq!(j.events[0].data["can_write"], false);
        assert_eq!(j.events[1].data["can_write"], true);
    }

    #[test]
    fn calls_of_different_tools_running_at_once_each_get_their_own_rows() {
        let mut j = Join::new();
        let bob = json!({"id": 7, "username": "bob", "first_name": "Bob", "last_name": "B"});
        j.row(1, "mcp_message", 0, None, message("get_chart_info"));
        j.row(2, "mcp_message", 1, None, message("get_dataset_info"));
        j.row(
            3,
            "mcp.get_dataset_info.lookup",
            2,
            Some(bob.clone()),
            json!({}),
        );
        j.row(4, "mcp.get_chart_info.lookup", 3, Some(admin()), json!({}));
        j.row(
            5,
            "mcp_tool_call",
            4,
            None,
            tool_call("get_dataset_info", true),
        );
        j.row(
            6,
            "mcp_tool_call",
            5,
            None,
            tool_call("get_chart_info", false),
        );
        let [dataset, chart] = &j.events[..] else {
            panic!("{:?}", j.events)
        };
        assert_eq!(
            (&dataset.data["user"], &dataset.data["message_log_id"]),
            (&bob, &json!(2))
        );
        assert_eq!(
            (&chart.data["user"], &chart.data["message_log_id"]),
            (&admin(), &json!(1))
        );
        assert!(j.events.iter().all(|e| e.data["ambiguous"] == false));
    }

    #[test]
    fn two_open_calls_of_one_tool_end_oldest_first_and_are_marked_ambiguous() {
        let mut j = Join::new();
        j.row(1, "mcp_message", 0, None, message("execute_sql"));
        j.row(2, "mcp_message", 1, None, message("execute_sql"));
        j.row(
            3,
            "mcp.execute_sql.query_execution",
            2,
            Some(admin()),
            json!({}),
        );
        j.row(4, "mcp_tool_call", 3, None, tool_call("execute_sql", true));
        j.row(5, "mcp_message", 4, None, message("list_charts"));
        j.row(6, "mcp_tool_call", 5, None, tool_call("execute_sql", false));
        j.row(7, "mcp_tool_call", 6, None, tool_call("list_charts", true));
        let started: Vec<_> = j
            .events
            .iter()
            .map(|e| e.data["message_log_id"].clone())
            .collect();
        assert_eq!(started, [json!(1), json!(2), json!(5)]);
        let ambiguous: Vec<_> = j
            .events
            .iter()
            .map(|e| e.data["ambiguous"].clone())
            .collect();
        assert_eq!(ambiguous, [json!(true), json!(true), json!(false)]);
    }

    #[test]
    fn a_call_open_longer_than_the_bound_is_given_up_and_its_late_end_is_an_event_of_its_own() {
        let mut j = Join::new();
        let bound = OPEN_FOR.num_milliseconds();
        j.row(1, "mcp_message", 0, None, message("execute_sql"));
        j.row(
            2,
            "mcp.execute_sql.db_validation",
            5,
            Some(admin()),
            json!({}),
        );
        j.row(3, "DashboardRestApi.get", bound, None, json!({}));
        assert_eq!(j.calls.open(), 1, "not before the bound has passed");
        j.row(4, "DashboardRestApi.get", bound + 1, None, json!({}));
        assert_eq!(j.calls.open(), 0);
        assert_eq!(j.calls.unfinished, 1);
        assert_eq!(
            j.given_up,
            [Unfinished {
                tool: "execute_sql".into(),
                started_at: at(0)
            }]
        );
        j.row(
            5,
            "mcp_tool_call",
            bound + 2,
            None,
            tool_call("execute_sql", true),
        );
        let d = j.only();
        assert_eq!(
            d["message_log_id"],
            Value::Null,
            "the given-up start is not joined"
        );
        assert_eq!(d["user"], Value::Null);
    }

    #[test]
    fn at_most_max_open_calls_are_held_and_the_oldest_is_given_up() {
        let mut j = Join::new();
        for i in 0..=MAX_OPEN as u64 {
            j.row(
                i + 1,
                "mcp_message",
                i as i64,
                None,
                message("health_check"),
            );
        }
        assert_eq!(j.calls.open(), MAX_OPEN);
        assert_eq!(j.calls.unfinished, 1);
        assert_eq!(j.given_up[0].started_at, at(0));
    }

    #[test]
    fn the_tools_and_which_may_write_are_those_a_real_6_1_0_lists() {
        let listed: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/superset/mcp/tools_list.json"
        ))
        .unwrap();
        let listed: Vec<_> = listed["response"]["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let read_only = t["annotations"]["readOnlyHint"].as_bool().unwrap();
                (t["name"].as_str().unwrap(), !read_only)
            })
            .collect();
        let ours: Vec<_> = TOOLS.iter().map(|t| (t.0, t.2)).collect();
        assert_eq!(ours, listed);
    }

    #[test]
    fn write_capable_tools_are_those_6_1_0_does_not_mark_read_only_and_others_are_unknown() {
        let writers: Vec<_> = TOOLS.iter().filter(|t| t.2).map(|t| t.0).collect();
        assert_eq!(
            writers,
            [
                "generate_chart",
                "update_chart",
                "update_chart_preview",
                "add_chart_to_existing_dashboard",
                "generate_dashboard",
                "create_virtual_dataset",
                "generate_explore_link",
                "execute_sql",
                "save_sql_query",
            ]
        );
        assert_eq!(can_write("list_databases"), Some(false));
        assert_eq!(
            can_write("delete_dashboard"),
            None,
            "a later release's tool"
        );
        let mut j = Join::new();
        j.row(1, "mcp_message", 0, None, message("delete_dashboard"));
        j.row(
            2,
            "mcp.delete_dashboard.db_write",
            1,
            Some(admin()),
            json!({}),
        );
        j.row(
            3,
            "mcp_tool_call",
            2,
            None,
            tool_call("delete_dashboard", true),
        );
        let d = j.only();
        assert_eq!(d["can_write"], Value::Null);
        assert_eq!(
            d["phases"][0]["phase"], "db_write",
            "its phases use its name"
        );
    }

    #[test]
    fn the_agent_id_comes_from_the_end_or_else_the_start_and_a_user_on_the_end_wins() {
        let mut j = Join::new();
        let mut start = message("list_charts");
        start["agent_id"] = json!("claude-desktop");
        j.row(1, "mcp_message", 0, None, start);
        j.row(2, "mcp.list_charts.query", 1, Some(admin()), json!({}));
        let bob = json!({"id": 7, "username": "bob", "first_name": "Bob", "last_name": "B"});
        j.row(
            3,
            "mcp_tool_call",
            2,
            Some(bob.clone()),
            tool_call("list_charts", true),
        );
        let d = j.only();
        assert_eq!(d["agent_id"], "claude-desktop");
        assert_eq!(
            d["user"], bob,
            "the row of the call itself names the user it ran as"
        );
        assert_eq!(j.events[0].subject.as_deref(), Some("7"));

        let mut j = Join::new();
        let mut end = tool_call("list_charts", true);
        end["agent_id"] = json!({"name": "x"});
        j.row(1, "mcp_tool_call", 0, None, end);
        assert_eq!(j.only()["agent_id"], r#"{"name":"x"}"#);
    }

    #[test]
    fn open_calls_survive_being_stored_and_read_back() {
        let mut j = Join::new();
        j.row(1, "mcp_message", 0, None, message("list_databases"));
        j.row(2, "mcp.list_databases.query", 1, Some(admin()), json!({}));
        let stored = serde_json::to_string(&j.calls).unwrap();
        j.calls = serde_json::from_str(&stored).unwrap();
        j.row(
            3,
            "mcp_tool_call",
            2,
            None,
            tool_call("list_databases", true),
        );
        assert_eq!(j.only()["user"], admin());
        assert_eq!(
            serde_json::from_str::<Calls>("{}").unwrap(),
            Calls::default(),
            "a cursor stored before the join reads as no open call"
        );
    }
}
