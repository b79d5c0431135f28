//! The action log: rows of Superset's `/api/v1/log/` become `audit.action` events.
//!
//! Owns, as pure functions, the log cursor (a high-water mark plus the row ids seen near it),
//! the rule that drops rollcall's own reads, the include/exclude filter and the row → event
//! mapping. It never does I/O: the Superset source fetches rows, and the cycle commits the
//! events and the new cursor in one transaction.
//!
//! Why a set of ids and not just a timestamp: the log API cannot sort or filter by id, many
//! rows share one timestamp, and a row can be committed after rows with a later `dttm`. So each
//! poll re-reads an overlap before the mark and drops the ids it has already seen there.

use chrono::{DateTime, NaiveDateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
            if row.is_own_read(judge.service_account) {
                out.own_noise += 1;
            } else if !judge.filter.allows(&row.action) {
                out.filtered += 1;
            } else {
                out.events.push(row.into_event(raw.id));
            }
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

    fn into_event(self, log_id: u64) -> Derived {
        let field = |k: &str| self.raw.get(k).cloned().unwrap_or(Value::Null);
        let user = self.user_id.map(|id| {
            let u = field("user");
            json!({
                "id": id,
                "username": u.get("username").cloned().unwrap_or(Value::Null),
                "first_name": u.get("first_name").cloned().unwrap_or(Value::Null),
                "last_name": u.get("last_name").cloned().unwrap_or(Value::Null),
            })
        });
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
}
