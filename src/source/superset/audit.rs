//! The action log: rows of Superset's `/api/v1/log/` become `audit.action` events, and the rows
//! of one MCP tool call together one `agent.tool_called` (joined by `mcp.rs`).
//!
//! Owns, as pure functions, the log cursor (a high-water mark plus the row ids seen near it,
//! and the MCP calls still open), the rule that drops rollcall's own reads, the include/exclude
//! filter and the row → event mapping. It never does I/O: the Superset source fetches rows, and
//! the cycle commits the events and the new cursor in one transaction.
//!
//! Why a set of ids and not just a timestamp: the log API cannot sort or filter by id, many
//! rows share one timestamp, and a row can be committed after rows with a later `dttm`. So each
//! poll re-reads an overlap before the mark and drops the ids it has already seen there.

use chrono::{DateTime, NaiveDateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::mcp::{self, Calls, McpRow, Unfinished};
use crate::event::Derived;
use crate::event::EventType;

/// Which actions to emit: those matching an `include` glob and no `exclude` glob.
#[derive(Debug, Clone)]
pub struct ActionFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl ActionFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<ActionFilter, globset::Error> {
        let set = |globs: &[String]| {
            globs
                .iter()
                .try_fold(GlobSetBuilder::new(), |mut b, g| {
                    b.add(Glob::new(g)?);
                    Ok::<_, globset::Error>(b)
                })?
                .build()
        };
        Ok(ActionFilter {
            include: set(include)?,
            exclude: set(exclude)?,
        })
    }

    pub fn allows(&self, action: &str) -> bool {
        self.include.is_match(action) && !self.exclude.is_match(action)
    }
}

/// Where the log was read up to; stored with the source's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogCursor {
    /// Every row logged before this instant (less the overlap) has been seen.
    pub hwm: Option<DateTime<Utc>>,
    /// Ids of rows seen within the overlap before `hwm`, with their times.
    pub seen: Vec<(u64, DateTime<Utc>)>,
    /// MCP tool calls begun in the rows read and not finished yet: kept with the ids seen, so
    /// that a call whose rows straddle two polls, or a restart, is joined all the same.
    #[serde(default)]
    pub calls: Calls,
}

/// One row as fetched: its id (from the response's `ids` array) and the row as sent.
#[derive(Debug, Clone)]
pub struct RawRow {
    pub id: u64,
    pub row: Value,
}

/// What the cursor needs to know to judge rows.
pub struct Judge<'a> {
    pub filter: &'a ActionFilter,
    /// rollcall's own account: its reads of the log and of roles are its own noise.
    pub service_account: Option<u64>,
    pub overlap: chrono::Duration,
}

/// The outcome of accepting one poll's rows.
#[derive(Debug, Default)]
pub struct Accepted {
    pub events: Vec<Derived>,
    /// Rows already seen in an earlier poll.
    pub duplicates: usize,
    /// rollcall's own reads.
    pub own_noise: usize,
    /// Dropped by `log_include`/`log_exclude`.
    pub filtered: usize,
    /// Rows that could not be read (no action, no time); logged and skipped.
    pub malformed: usize,
    /// MCP calls given up on in this poll: begun, their end never read (see `mcp.rs`).
    pub unfinished: Vec<Unfinished>,
}

impl LogCursor {
    /// The lower bound of the next poll: the mark less the overlap, or on the very first poll
    /// `now - backfill`.
    pub fn since(
        &self,
        overlap: chrono::Duration,
        backfill: chrono::Duration,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        match self.hwm {
            Some(hwm) => hwm - overlap,
            None => now - backfill,
        }
    }

    /// The row was taken by an earlier poll.
    pub fn has_seen(&self, id: u64) -> bool {
        self.seen.iter().any(|(seen, _)| *seen == id)
    }

    /// Take the rows of a poll that asked for everything after `since`: drop those seen
    /// before, remember the new ones, move the mark, and derive the events.
    pub fn accept(
        &mut self,
        since: DateTime<Utc>,
        rows: Vec<RawRow>,
        judge: &Judge<'_>,
    ) -> Accepted {
        let mut out = Accepted::default();
        // From here on, nothing before `since` is expected any more.
        let mut hwm = self.hwm.unwrap_or(since);
        for raw in rows {
            if self.has_seen(raw.id) {
                out.duplicates += 1;
                continue;
            }
            let Some(row) = Row::read(&raw.row) else {
                out.malformed += 1;
                continue;
            };
            self.seen.push((raw.id, row.dttm));
            hwm = hwm.max(row.dttm);
            // Every row moves the join's clock; MCP rows join whatever the filter says of them.
            self.calls.expire(row.dttm, &mut out.unfinished);
            let call = mcp::concerns(&row.action)
                .then(|| {
                    self.calls.take(
                        McpRow {
                            log_id: raw.id,
                            action: &row.action,
                            dttm: row.dttm,
                            user: row.user(),
                            duration_ms: row.raw.get("duration_ms").and_then(Value::as_i64),
                            details: &row.details,
                        },
                        &mut out.unfinished,
                    )
                })
                .flatten();
            if row.is_own_read(judge.service_account) {
                out.own_noise += 1;
            } else if !judge.filter.allows(&row.action) {
                out.filtered += 1;
            } else {
                out.events.push(row.into_event(raw.id));
            }
            out.events.extend(call);
        }
        self.hwm = Some(hwm);
        // Rows older than twice the overlap are never asked for again.
        let keep_after = hwm - judge.overlap - judge.overlap;
        self.seen.retain(|(_, t)| *t >= keep_after);
        out
    }
}

/// The fields of a log row rollcall uses (docs/superset.md S38: no `id` inside the row).
struct Row<'a> {
    action: String,
    dttm: DateTime<Utc>,
    user_id: Option<u64>,
    raw: &'a Value,
    details: Value,
}

impl<'a> Row<'a> {
    fn read(raw: &'a Value) -> Option<Row<'a>> {
        let action = raw
            .get("action")?
            .as_str()
            .filter(|a| !a.is_empty())?
            .to_owned();
        // Log times are naive UTC (`datetime.utcnow`, docs/superset.md S16), unlike user times.
        let dttm =
            NaiveDateTime::parse_from_str(raw.get("dttm")?.as_str()?, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()?
                .and_utc();
        let user_id = match raw.get("user_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64()?),
        };
        // `json` is a string holding JSON (docs/superset.md S38); keep it as a string when it is not.
        let details = match raw.get("json") {
            Some(Value::String(s)) => {
                serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
            }
            Some(other) => other.clone(),
            None => Value::Null,
        };
        Some(Row {
            action,
            dttm,
            user_id,
            raw,
            details,
        })
    }

    /// The rows rollcall's own polling writes: every log read writes a `LogRestApi.get_list`
    /// row, and the roles search a bare `get_list` naming `RoleRestAPI.get_list` (docs/superset.md S40–S41).
    /// Users and groups reads are not logged at all (docs/superset.md S42).
    fn is_own_read(&self, service_account: Option<u64>) -> bool {
        service_account.is_some()
            && self.user_id == service_account
            && (self.action == "LogRestApi.get_list"
                || (self.action == "get_list"
                    && self.details.get("object_ref") == Some(&json!("RoleRestAPI.get_list"))))
    }

    /// The acting user, when the row names one: `{id, username, first_name, last_name}`.
    fn user(&self) -> Option<Value> {
        self.user_id.map(|id| {
            let u = self.raw.get("user").unwrap_or(&Value::Null);
            let name = |k: &str| u.get(k).cloned().unwrap_or(Value::Null);
            json!({
                "id": id,
                "username": name("username"),
                "first_name": name("first_name"),
                "last_name": name("last_name"),
            })
        })
    }

    fn into_event(self, log_id: u64) -> Derived {
        let field = |k: &str| self.raw.get(k).cloned().unwrap_or(Value::Null);
        let user = self.user();
        Derived {
            event_type: EventType::AuditAction,
            subject: self.user_id.map(|id| id.to_string()),
            data: json!({
                "log_id": log_id,
                "action": self.action,
                "user": user,
                "dttm": self.dttm,
                "dashboard_id": field("dashboard_id"),
                "slice_id": field("slice_id"),
                "duration_ms": field("duration_ms"),
                "referrer": field("referrer"),
                "details": self.details,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: u64 = 9;

    fn t(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
            .unwrap()
            .and_utc()
    }

    fn row(id: u64, action: &str, dttm: &str, user: Option<u64>, json: &str) -> RawRow {
        RawRow {
            id,
            row: json!({
                "action": action, "dttm": format!("{dttm}.000001"), "duration_ms": 3, "json": json,
                "referrer": null, "slice_id": null, "dashboard_id": 12, "user_id": user,
                "user": user.map(|_| json!({"username": "bob", "first_name": "Bob", "last_name": "B"})),
            }),
        }
    }

    fn all() -> ActionFilter {
        ActionFilter::new(&["*".into()], &[]).unwrap()
    }

    fn accept(cursor: &mut LogCursor, rows: Vec<RawRow>, filter: &ActionFilter) -> Accepted {
        let judge = Judge {
            filter,
            service_account: Some(SVC),
            overlap: chrono::Duration::seconds(60),
        };
        let since = cursor.since(
            judge.overlap,
            chrono::Duration::hours(24),
            t("2026-11-23T12:00:00"),
        );
        cursor.accept(since, rows, &judge)
    }

    #[test]
    fn a_row_becomes_an_audit_event_with_parsed_details() {
        let mut c = LogCursor::default();
        let out = accept(
            &mut c,
            vec![row(
                5,
                "DashboardRestApi.get",
                "2026-11-23T10:00:00",
                Some(3),
                r#"{"path": "/x"}"#,
            )],
            &all(),
        );
        assert_eq!(out.events.len(), 1);
        let e = &out.events[0];
        assert_eq!(e.event_type, EventType::AuditAction);
        assert_eq!(e.subject.as_deref(), Some("3"));
        assert_eq!(e.data["log_id"], 5);
        assert_eq!(e.data["details"]["path"], "/x");
        assert_eq!(
            e.data["user"],
            json!({"id": 3, "username": "bob", "first_name": "Bob", "last_name": "B"})
        );
        assert_eq!(e.data["dttm"], "2026-11-23T10:00:00.000001Z");
        assert_eq!(e.data["dashboard_id"], 12);
    }

    #[test]
    fn details_that_are_not_json_stay_a_string() {
        let mut c = LogCursor::default();
        let out = accept(
            &mut c,
            vec![row(1, "x", "2026-11-23T10:00:00", None, "not json {")],
            &all(),
        );
        assert_eq!(out.events[0].data["details"], "not json {");
        assert_eq!(out.events[0].subject, None);
        assert_eq!(out.events[0].data["user"], Value::Null);
    }

    #[test]
    fn rows_seen_in_the_overlap_are_not_emitted_twice() {
        let mut c = LogCursor::default();
        let first = vec![
            row(1, "a", "2026-11-23T10:00:00", Some(3), "{}"),
            row(2, "b", "2026-11-23T10:00:00", Some(3), "{}"),
        ];
        assert_eq!(accept(&mut c, first.clone(), &all()).events.len(), 2);
        let mut again = first;
        again.push(row(3, "c", "2026-11-23T10:00:00", Some(3), "{}"));
        let out = accept(&mut c, again, &all());
        assert_eq!(out.duplicates, 2);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].data["log_id"], 3);
    }

    #[test]
    fn a_late_row_within_the_overlap_is_emitted_once() {
        let mut c = LogCursor::default();
        accept(
            &mut c,
            vec![row(10, "a", "2026-11-23T10:00:30", Some(3), "{}")],
            &all(),
        );
        // Row 11 was committed late with an earlier time; the next poll re-reads the overlap.
        let out = accept(
            &mut c,
            vec![
                row(11, "late", "2026-11-23T10:00:05", Some(3), "{}"),
                row(10, "a", "2026-11-23T10:00:30", Some(3), "{}"),
            ],
            &all(),
        );
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].data["action"], "late");
        assert_eq!(
            c.hwm,
            Some(t("2026-11-23T10:00:30") + chrono::Duration::microseconds(1))
        );
    }

    #[test]
    fn own_log_reads_and_role_searches_are_noise_but_others_reads_are_not() {
        let mut c = LogCursor::default();
        let rows = vec![
            row(
                1,
                "LogRestApi.get_list",
                "2026-11-23T10:00:00",
                Some(SVC),
                r#"{"path": "/api/v1/log/"}"#,
            ),
            row(
                2,
                "get_list",
                "2026-11-23T10:00:00",
                Some(SVC),
                r#"{"object_ref": "RoleRestAPI.get_list"}"#,
            ),
            row(
                3,
                "LogRestApi.get_list",
                "2026-11-23T10:00:00",
                Some(1),
                r#"{"path": "/api/v1/log/"}"#,
            ),
            row(
                4,
                "ChartRestApi.get_list",
                "2026-11-23T10:00:00",
                Some(SVC),
                "{}",
            ),
        ];
        let out = accept(&mut c, rows, &all());
        assert_eq!(out.own_noise, 2);
        let ids: Vec<_> = out
            .events
            .iter()
            .map(|e| e.data["log_id"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ids,
            [3, 4],
            "an admin reading the log, or the service account doing anything else, is an event"
        );
    }

    #[test]
    fn include_and_exclude_globs_select_actions() {
        let filter = ActionFilter::new(&["mcp.*".into()], &["mcp.*.read".into()]).unwrap();
        let mut c = LogCursor::default();
        let rows = vec![
            row(
                1,
                "mcp.generate_chart.db_write",
                "2026-11-23T10:00:00",
                Some(3),
                "{}",
            ),
            row(
                2,
                "mcp.list_charts.read",
                "2026-11-23T10:00:00",
                Some(3),
                "{}",
            ),
            row(
                3,
                "DashboardRestApi.get",
                "2026-11-23T10:00:00",
                Some(3),
                "{}",
            ),
        ];
        let out = accept(&mut c, rows, &filter);
        assert_eq!(out.filtered, 2);
        assert_eq!(out.events[0].data["action"], "mcp.generate_chart.db_write");
    }

    #[test]
    fn malformed_rows_are_counted_and_skipped() {
        let mut c = LogCursor::default();
        let rows = vec![
            RawRow {
                id: 1,
                row: json!({"dttm": "2026-11-23T10:00:00"}),
            },
            RawRow {
                id: 2,
                row: json!({"action": "x", "dttm": "yesterday"}),
            },
            RawRow {
                id: 3,
                row: json!("not an object"),
            },
            row(4, "ok", "2026-11-23T10:00:00", Some(3), "{}"),
        ];
        let out = accept(&mut c, rows, &all());
        assert_eq!(out.malformed, 3);
        assert_eq!(out.events.len(), 1);
    }

    #[test]
    fn first_poll_starts_at_the_backfill_and_the_mark_never_goes_back() {
        let c = LogCursor::default();
        let now = t("2026-11-23T12:00:00");
        assert_eq!(
            c.since(
                chrono::Duration::seconds(60),
                chrono::Duration::hours(24),
                now
            ),
            t("2026-11-22T12:00:00")
        );
        let mut c = LogCursor::default();
        let judge = Judge {
            filter: &all(),
            service_account: None,
            overlap: chrono::Duration::seconds(60),
        };
        c.accept(now, vec![], &judge);
        assert_eq!(
            c.hwm,
            Some(now),
            "an empty first poll still moves the mark to where it started"
        );
        c.accept(now - chrono::Duration::seconds(60), vec![], &judge);
        assert_eq!(c.hwm, Some(now));
    }

    #[test]
    fn old_seen_ids_are_forgotten() {
        let mut c = LogCursor::default();
        accept(
            &mut c,
            vec![row(1, "a", "2026-11-23T10:00:00", Some(3), "{}")],
            &all(),
        );
        accept(
            &mut c,
            vec![row(2, "b", "2026-11-23T11:00:00", Some(3), "{}")],
            &all(),
        );
        assert_eq!(c.seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
    }

    /// The MCP rows of a tool call through the cursor: joined whatever the polls and restarts.
    mod mcp_calls {
        use super::*;
        use proptest::prelude::*;

        /// The captured rows of a real 6.1.0 MCP service (`tests/fixtures/superset/mcp/`),
        /// numbered in order as Superset's ids would be, from `first`.
        fn captured(capture: &str, first: u64) -> Vec<RawRow> {
            let file: Value = serde_json::from_str(include_str!(
                "../../../tests/fixtures/superset/mcp/action_log_rows.json"
            ))
            .unwrap();
            file[capture]["rows"]
                .as_array()
                .unwrap()
                .iter()
                .zip(first..)
                .map(|(row, id)| RawRow {
                    id,
                    row: row.clone(),
                })
                .collect()
        }

        fn calls(events: &[Derived]) -> Vec<&Value> {
            events
                .iter()
                .filter(|e| e.event_type == EventType::AgentToolCalled)
                .map(|e| &e.data)
                .collect()
        }

        #[test]
        fn the_captured_calls_become_one_event_each_after_their_rows() {
            let mut c = LogCursor::default();
            let out = accept(&mut c, captured("list_databases_ok", 1), &all());
            let types: Vec<_> = out.events.iter().map(|e| e.event_type.as_str()).collect();
            let mut expected = vec!["audit.action"; 16];
            for after in [16, 14, 11, 6] {
                expected.insert(after, "agent.tool_called");
            }
            assert_eq!(types, expected, "every row stays an audit.action");
            let admin =
                json!({"id": 1, "username": "admin", "first_name": "Admin", "last_name": "User"});
            let got = calls(&out.events);
            assert_eq!(
                *got[0],
                json!({
                    "log_id": 6, "tool": "list_databases", "logged_success": true,
                    "duration_ms": 65, "user": admin, "agent_id": null, "can_write": false,
                    "started_at": "2026-12-06T13:19:14.455223Z",
                    "finished_at": "2026-12-06T13:19:14.524666Z", "message_log_id": 3,
                    "phases": [
                        {"log_id": 4, "phase": "query", "duration_ms": 18},
                        {"log_id": 5, "phase": "serialization", "duration_ms": 0},
                    ],
                    "ambiguous": false,
                })
            );
            let summary: Vec<_> = got
                .iter()
                .map(|d| {
                    (
                        d["tool"].as_str().unwrap(),
                        d["logged_success"].as_bool().unwrap(),
                        d["user"]["username"].as_str(),
                        d["phases"].as_array().unwrap().len(),
                        d["duration_ms"].as_i64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                summary,
                [
                    ("list_databases", true, Some("admin"), 2, 65),
                    ("get_chart_info", false, Some("admin"), 1, 37),
                    ("get_dataset_info", false, Some("admin"), 1, 30),
                    // Refused for its arguments, logged as a success (docs/superset.md S51).
                    ("list_charts", true, None, 0, 3),
                ]
            );
            assert_eq!(c.calls.open(), 0, "the session starts opened no call");

            // The second capture reads the second session again from a later point.
            let again = accept(&mut c, captured("not_found_and_invalid", 7), &all());
            assert!(again.events.is_empty(), "{:?}", again.events);
            assert_eq!(again.duplicates, 10);
        }

        #[test]
        fn mcp_rows_left_out_by_the_filter_are_joined_all_the_same() {
            let filter =
                ActionFilter::new(&["*".into()], &["mcp_*".into(), "mcp.*".into()]).unwrap();
            let mut c = LogCursor::default();
            let out = accept(&mut c, captured("list_databases_ok", 1), &filter);
            assert_eq!(out.filtered, 16);
            assert_eq!(calls(&out.events).len(), 4);
            assert_eq!(out.events.len(), 4);
        }

        #[test]
        fn a_call_split_between_polls_and_a_restart_is_joined_once() {
            let rows = captured("list_databases_ok", 1);
            let mut c = LogCursor::default();
            // The first poll ends after the call's first phase row.
            let first = accept(&mut c, rows[..4].to_vec(), &all());
            assert!(calls(&first.events).is_empty());
            assert_eq!(c.calls.open(), 1);
            let mut c: LogCursor =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            let second = accept(&mut c, rows.clone(), &all());
            let joined = calls(&second.events);
            assert_eq!(joined.len(), 4);
            assert_eq!(joined[0]["message_log_id"], 3);
            assert_eq!(joined[0]["user"]["username"], "admin");
            assert_eq!(second.duplicates, 4);
        }

        #[test]
        fn a_call_never_finished_is_given_up_once_an_hour_of_log_has_passed() {
            let rows = captured("list_databases_ok", 1);
            let mut c = LogCursor::default();
            accept(&mut c, rows[..3].to_vec(), &all());
            assert_eq!(c.calls.open(), 1);
            let later = row(
                100,
                "DashboardRestApi.get",
                "2026-12-06T14:19:15",
                Some(3),
                "{}",
            );
            let out = accept(&mut c, vec![later], &all());
            assert_eq!(out.unfinished.len(), 1);
            assert_eq!(out.unfinished[0].tool, "list_databases");
            assert_eq!((c.calls.open(), c.calls.unfinished), (0, 1));
        }

        /// One step of a generated MCP session, rendered into rows by [`render`].
        #[derive(Debug, Clone)]
        enum Step {
            /// A call of `TOOLS[i]` begins.
            Begin(usize),
            /// A phase row of the `i`th open call (modulo).
            Phase(usize),
            /// The end of the `i`th open call, with its `success`.
            End(usize, bool),
            /// A client connects: the `json: null` row and its `tools/list`.
            Session,
            /// Another user's action.
            Other,
            /// Two hours without a row: every open call is given up.
            Gap,
        }

        const TOOLS: [&str; 4] = [
            "list_databases",
            "execute_sql",
            "add_chart_to_existing_dashboard",
            "delete_dashboard",
        ];

        fn steps() -> impl Strategy<Value = Vec<Step>> {
            let step = prop_oneof![
                4 => (0..TOOLS.len()).prop_map(Step::Begin),
                4 => any::<usize>().prop_map(Step::Phase),
                4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Step::End(i, ok)),
                1 => Just(Step::Session),
                2 => Just(Step::Other),
                1 => Just(Step::Gap),
            ];
            prop::collection::vec(step, 0..60)
        }

        /// What the join must make of a generated call that ended.
        #[derive(Debug)]
        struct Expected {
            end: u64,
            begin: Option<u64>,
            phases: Vec<u64>,
            user: Option<u64>,
            /// Another call of its tool was open at the same time: only that it is one event.
            ambiguous: bool,
        }

        /// The rows of `steps`, their times increasing, and what each ended call must become.
        fn render(steps: &[Step]) -> (Vec<RawRow>, Vec<Expected>) {
            struct Open {
                tool: usize,
                begin: Option<u64>,
                phases: Vec<u64>,
                user: Option<u64>,
                ambiguous: bool,
            }
            let mut rows = Vec::new();
            let mut open: Vec<Open> = Vec::new();
            let mut ended = Vec::new();
            let mut clock = t("2026-12-06T10:00:00");
            let push = |rows: &mut Vec<RawRow>,
                        clock: &mut DateTime<Utc>,
                        action: &str,
                        user: Option<u64>,
                        json: Value| {
                *clock += chrono::Duration::milliseconds(1 + rows.len() as i64 % 7 * 300);
                let id = rows.len() as u64 + 1;
                rows.push(RawRow {
                    id,
                    row: json!({
                        "action": action, "dttm": clock.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
                        "duration_ms": if action == "mcp_message" { Value::Null } else { json!(5) },
                        "json": json.as_str().map(str::to_owned).or_else(|| (!json.is_null()).then(|| json.to_string())),
                        "referrer": null, "slice_id": null, "dashboard_id": null, "user_id": user,
                        "user": user.map(|u| json!({"username": format!("u{u}"), "first_name": "U", "last_name": "Ser"})),
                    }),
                });
                id
            };
            let message = |tool: &str, end: Option<bool>| {
                let mut d = json!({"tool": tool, "agent_id": null, "params": {}, "method": "tools/call",
                                   "dashboard_id": null, "slice_id": null, "dataset_id": null});
                if let Some(ok) = end {
                    d["success"] = json!(ok);
                }
                d
            };
            for step in steps {
                match *step {
                    Step::Begin(tool) => {
                        let id = push(
                            &mut rows,
                            &mut clock,
                            "mcp_message",
                            None,
                            message(TOOLS[tool], None),
                        );
                        let mut ambiguous = false;
                        for other in open
                            .iter_mut()
                            .filter(|o| o.tool == tool && o.begin.is_some())
                        {
                            other.ambiguous = true;
                            ambiguous = true;
                        }
                        open.push(Open {
                            tool,
                            begin: Some(id),
                            phases: Vec::new(),
                            user: None,
                            ambiguous,
                        });
                    }
                    Step::Phase(i) => {
                        // A call given up on sends no more phases here: the join could only
                        // guess which call of its tool they belong to.
                        let live = open.iter().filter(|o| o.begin.is_some()).count();
                        let Some(call) = open
                            .iter_mut()
                            .filter(|o| o.begin.is_some())
                            .nth(i % live.max(1))
                        else {
                            continue;
                        };
                        let prefix = mcp::phase_prefix(TOOLS[call.tool]);
                        let user = 10 + call.tool as u64;
                        let id = push(
                            &mut rows,
                            &mut clock,
                            &format!("mcp.{prefix}.step"),
                            Some(user),
                            json!("{}"),
                        );
                        call.phases.push(id);
                        call.user.get_or_insert(user);
                    }
                    Step::End(i, ok) => {
                        if open.is_empty() {
                            continue;
                        }
                        let i = i % open.len();
                        // The end of a call given up on, while another call of its tool is
                        // open, would end that one: the join cannot tell them apart.
                        let tool = open[i].tool;
                        if open[i].begin.is_none()
                            && open.iter().any(|o| o.tool == tool && o.begin.is_some())
                        {
                            continue;
                        }
                        let call = open.remove(i);
                        let end = push(
                            &mut rows,
                            &mut clock,
                            "mcp_tool_call",
                            None,
                            message(TOOLS[call.tool], Some(ok)),
                        );
                        ended.push(Expected {
                            end,
                            begin: call.begin,
                            phases: call.phases,
                            user: call.user,
                            ambiguous: call.ambiguous,
                        });
                    }
                    Step::Session => {
                        push(&mut rows, &mut clock, "mcp_message", None, Value::Null);
                        let mut list = message("x", None);
                        list["tool"] = Value::Null;
                        list["method"] = json!("tools/list");
                        push(&mut rows, &mut clock, "mcp_message", None, list);
                    }
                    Step::Other => {
                        push(
                            &mut rows,
                            &mut clock,
                            "ChartRestApi.get",
                            Some(3),
                            json!("{}"),
                        );
                    }
                    Step::Gap => {
                        clock += chrono::Duration::hours(2);
                        for call in &mut open {
                            *call = Open {
                                tool: call.tool,
                                begin: None,
                                phases: Vec::new(),
                                user: None,
                                ambiguous: false,
                            };
                        }
                    }
                }
            }
            (rows, ended)
        }

        /// Every event of reading `rows` in polls that end at `cuts` (each poll asking for
        /// what is logged after the cursor less the overlap), the cursor stored and read back
        /// between polls where `restarts` says so.
        fn read_in_polls(rows: &[RawRow], cuts: &[usize], restarts: &[bool]) -> Vec<Derived> {
            let mut cursor = LogCursor::default();
            let mut events = Vec::new();
            let mut ends: Vec<usize> = cuts.iter().map(|c| c % (rows.len() + 1)).collect();
            ends.sort_unstable();
            ends.push(rows.len());
            for (n, end) in ends.into_iter().enumerate() {
                let since = cursor.since(
                    chrono::Duration::seconds(60),
                    chrono::Duration::hours(24),
                    t("2026-11-23T12:00:00"),
                );
                let visible = rows[..end]
                    .iter()
                    .filter(|r| Row::read(&r.row).is_some_and(|row| row.dttm > since))
                    .cloned()
                    .collect();
                events.extend(accept(&mut cursor, visible, &all()).events);
                if restarts.get(n).copied().unwrap_or(false) {
                    cursor =
                        serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
                }
            }
            events
        }

        proptest! {
            #[test]
            fn any_split_of_the_log_into_polls_and_restarts_gives_the_same_events(
                steps in steps(),
                cuts in prop::collection::vec(any::<usize>(), 0..6),
                restarts in prop::collection::vec(any::<bool>(), 0..7),
            ) {
                let (rows, _) = render(&steps);
                let at_once = read_in_polls(&rows, &[], &[]);
                prop_assert_eq!(read_in_polls(&rows, &cuts, &restarts), at_once);
            }

            #[test]
            fn each_ended_call_is_one_event_joined_with_its_own_rows(steps in steps()) {
                let (rows, ended) = render(&steps);
                let events = read_in_polls(&rows, &[], &[]);
                let joined = calls(&events);
                prop_assert_eq!(joined.len(), ended.len(), "one event per end, no other");
                for (call, data) in ended.iter().zip(&joined) {
                    prop_assert_eq!(&data["log_id"], &json!(call.end));
                    if call.ambiguous {
                        prop_assert_eq!(&data["ambiguous"], &json!(true));
                        continue;
                    }
                    let phases: Vec<u64> = data["phases"].as_array().unwrap().iter()
                        .map(|p| p["log_id"].as_u64().unwrap()).collect();
                    prop_assert_eq!(&data["message_log_id"], &json!(call.begin));
                    prop_assert_eq!(&phases, &call.phases);
                    prop_assert_eq!(&data["user"]["id"], &call.user.map_or(Value::Null, |u| json!(u)));
                    prop_assert_eq!(&data["ambiguous"], &json!(false));
                }
            }
        }
    }
}
