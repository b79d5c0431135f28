//! Superset's wire format: the endpoints rollcall reads, the JSON shapes of their answers, and
//! the rison queries it sends. Only this file parses Superset's answers; the columns a query
//! filters or orders by are chosen where the way of reading is (`capabilities`, and the reads
//! in `full.rs`, `incremental.rs`, `pages.rs` and `keyset.rs`).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::user::User;
use crate::user::Member;

pub const USERS: &str = "/api/v1/security/users/";
pub const USERS_INFO: &str = "/api/v1/security/users/_info";
pub const ROLES_SEARCH: &str = "/api/v1/security/roles/search/";
pub const GROUPS: &str = "/api/v1/security/groups/";
pub const LOG: &str = "/api/v1/log/";

/// Superset silently clamps larger page sizes to 100 (docs/superset.md S18): the most a
/// source's `page_size` may ask for, and its default.
pub const PAGE_SIZE: u32 = 100;

#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub count: u64,
    /// The rows' ids in result order: the only place the action log gives them (docs/superset.md S38).
    #[serde(default)]
    pub ids: Vec<u64>,
    pub result: Vec<T>,
}

#[derive(Debug, Deserialize)]
pub struct One<T> {
    pub result: T,
}

#[derive(Debug, Deserialize)]
pub struct IdRef {
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub struct ApiMember {
    pub id: u64,
    pub name: String,
}

/// A user as `/api/v1/security/users/` returns it: naive datetimes in the server's local time
/// (docs/superset.md S15–S16), login counters null until the first attempt (docs/superset.md S11).
#[derive(Debug, Deserialize)]
pub struct ApiUser {
    pub id: u64,
    pub username: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub email: String,
    pub active: bool,
    #[serde(default)]
    pub roles: Vec<ApiMember>,
    #[serde(default)]
    pub groups: Vec<ApiMember>,
    pub login_count: Option<i64>,
    pub fail_login_count: Option<i64>,
    pub last_login: Option<NaiveDateTime>,
    pub created_on: NaiveDateTime,
    pub changed_on: NaiveDateTime,
    pub created_by: Option<IdRef>,
    pub changed_by: Option<IdRef>,
}

impl ApiUser {
    /// The user as rollcall keeps it, or why it cannot be: a time Superset could not have
    /// written (Python's datetimes span years 1 to 9999) is a broken answer, not a user.
    pub fn into_user(self, tz: Tz) -> Result<User, String> {
        let time = |field: &str, t: NaiveDateTime| {
            superset_time(t)
                .and_then(|t| to_utc(t, tz))
                .ok_or_else(|| format!("`{field}` {t} is not a time Superset can hold"))
        };
        let member = |m: ApiMember| Member {
            id: m.id.into(),
            name: m.name,
        };
        Ok(User {
            id: self.id,
            last_login: self.last_login.map(|t| time("last_login", t)).transpose()?,
            created_on: time("created_on", self.created_on)?,
            changed_on: time("changed_on", self.changed_on)?,
            username: self.username,
            first_name: self.first_name,
            last_name: self.last_name,
            email: self.email,
            active: self.active,
            roles: self.roles.into_iter().map(member).collect(),
            groups: self.groups.into_iter().map(member).collect(),
            login_count: self.login_count,
            fail_login_count: self.fail_login_count,
            created_by: self.created_by.map(|r| r.id),
            changed_by: self.changed_by.map(|r| r.id),
        }
        .normalise())
    }
}

/// One row of a users answer, read on its own so that a row that cannot be read spoils no
/// other (a lone UTF-16 surrogate `\ud800` in one name would otherwise fail the whole page).
/// Its id comes first: whose row failed is what an operator needs.
pub fn read_user(raw: &RawValue, tz: Tz) -> Result<User, String> {
    serde_json::from_str::<ApiUser>(raw.get())
        .map_err(|e| format!("its record is not a Superset user: {e}"))
        .and_then(|u| u.into_user(tz))
        .map_err(|reason| crate::text::one_line(&reason))
}

/// The `id` of a row, read apart from the rest of it (which may be what cannot be read).
pub fn row_id(raw: &RawValue) -> Option<u64> {
    serde_json::from_str::<IdRef>(raw.get()).ok().map(|r| r.id)
}

/// `t` if Superset could have written it: Python's `datetime` holds years 1 to 9999.
fn superset_time(t: NaiveDateTime) -> Option<NaiveDateTime> {
    (1..=9999).contains(&t.year()).then_some(t)
}

/// The earliest time a filter may name: Superset cannot parse an earlier one and would drop
/// the filter (docs/superset.md S17).
pub fn earliest_filter_time() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `GET /api/v1/security/users/_info?q=(keys:!(filters))`: the filterable columns, each with
/// its operators (docs/superset.md S22 and Releases 4.1 to 6.1).
#[derive(Debug, Deserialize)]
pub struct UsersInfo {
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<InfoOperator>>,
}

#[derive(Debug, Deserialize)]
pub struct InfoOperator {
    pub operator: String,
}

/// The query of `users/_info` that asks for the filters only.
pub const INFO_FILTERS_QUERY: &str = "(keys:!(filters))";

/// A role from `/api/v1/security/roles/search/`, which lists each role's members.
#[derive(Debug, Deserialize)]
pub struct RoleWithMembers {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub user_ids: Vec<u64>,
}

/// A group from `/api/v1/security/groups/`.
#[derive(Debug, Deserialize)]
pub struct GroupWithMembers {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub users: Vec<IdRef>,
}

#[derive(Debug, Deserialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RefreshResponse {
    pub access_token: String,
}

/// The server's naive local time → UTC. In a DST gap (a local time that never happened) the
/// offset just before the gap is used; in an overlap, the earlier instant. `None` only at the
/// edges of what a date can hold.
pub fn to_utc(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    let hour = chrono::Duration::hours(1);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        // Gaps are an hour at most: step back before it and forward again.
        LocalResult::None => naive
            .checked_sub_signed(hour)
            .and_then(|before| tz.from_local_datetime(&before).earliest())
            .and_then(|t| t.with_timezone(&Utc).checked_add_signed(hour))
            .or_else(|| Some(naive.and_utc())),
    }
}

/// UTC → the server's naive local time, formatted as Superset's filters accept it (docs/superset.md S17).
/// Whole seconds, rounded down, so a `gt` filter never skips a row.
pub fn to_filter_value(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .naive_local()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The filter value is sent in whole seconds; rows must be strictly after that.
pub fn truncated(t: DateTime<Utc>) -> DateTime<Utc> {
    t - chrono::Duration::nanoseconds(t.timestamp_subsec_nanos().into())
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FilterValue {
    Int(u64),
    Text(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Filter {
    pub col: &'static str,
    pub opr: &'static str,
    pub value: FilterValue,
}

/// A list query, serialised to rison for the `q` parameter.
#[derive(Debug, Serialize)]
pub struct ListQuery {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_column: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub page_size: u32,
}

impl ListQuery {
    /// Keyset pagination: the page of ids greater than `after`, id-ascending. Offset paging
    /// loses rows when users are deleted between pages (docs/superset.md S21).
    pub fn keyset(after: u64, mut filters: Vec<Filter>, page_size: u32) -> ListQuery {
        filters.push(Filter {
            col: "id",
            opr: "gt",
            value: FilterValue::Int(after),
        });
        ListQuery {
            columns: vec![],
            filters,
            order_column: Some("id"),
            order_direction: Some("asc"),
            page: None,
            page_size,
        }
    }

    /// Plain page-index paging, for the short role and group lists.
    pub fn page(page: u32, page_size: u32) -> ListQuery {
        ListQuery {
            columns: vec![],
            filters: vec![],
            order_column: Some("id"),
            order_direction: Some("asc"),
            page: Some(page),
            page_size,
        }
    }

    /// A page past the end of any list: its answer has no rows, so it says only whether the
    /// endpoint exists. `roles/search/` builds the member list of every role it returns
    /// (3.4 s for a page holding a role of 100,000 members; 13 ms for this one,
    /// docs/superset.md S35).
    pub fn past_the_end() -> ListQuery {
        ListQuery::page(1_000_000, 1)
    }

    /// A page of the action log after `since` (a filter value), oldest first. The log cannot
    /// be sorted or filtered by id (docs/superset.md S39), so it pages by index; duplicates are dropped by id.
    pub fn log_page(since: String, page: u32, page_size: u32) -> ListQuery {
        ListQuery {
            columns: vec![],
            filters: vec![Filter {
                col: "dttm",
                opr: "gt",
                value: FilterValue::Text(since),
            }],
            order_column: Some("dttm"),
            order_direction: Some("asc"),
            page: Some(page),
            page_size,
        }
    }

    /// Page-index paging of the users ordered by `column`, for releases whose users cannot be
    /// filtered by `id` or by time (docs/superset.md, Releases 4.1 to 6.1): ordering works on
    /// every list column there.
    pub fn ordered_page(
        column: &'static str,
        descending: bool,
        page: u32,
        page_size: u32,
    ) -> ListQuery {
        ListQuery {
            columns: vec![],
            filters: vec![],
            order_column: Some(column),
            order_direction: Some(if descending { "desc" } else { "asc" }),
            page: Some(page),
            page_size,
        }
    }

    /// The same query asking only for `id`: a cheap list of who exists.
    pub fn ids_only(mut self) -> ListQuery {
        self.columns = vec!["id"];
        self
    }

    pub fn to_rison(&self) -> String {
        serde_rison::to_string(self).expect("a ListQuery always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::MemberId;

    #[test]
    fn keyset_query_is_the_rison_superset_expects() {
        let q = ListQuery::keyset(
            200,
            vec![Filter {
                col: "changed_on",
                opr: "gt",
                value: FilterValue::Text("2026-11-23T07:30:25".into()),
            }],
            PAGE_SIZE,
        );
        assert_eq!(
            q.to_rison(),
            "(filters:!((col:changed_on,opr:gt,value:'2026-11-23T07:30:25'),(col:id,opr:gt,value:200)),order_column:id,order_direction:asc,page_size:100)"
        );
    }

    #[test]
    fn local_times_convert_to_utc_with_the_configured_zone() {
        let naive =
            NaiveDateTime::parse_from_str("2026-11-23T13:02:53.5", "%Y-%m-%dT%H:%M:%S%.f").unwrap();
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let utc = to_utc(naive, tz).unwrap();
        assert_eq!(utc.to_rfc3339(), "2026-11-23T07:32:53.500+00:00");
        assert_eq!(to_filter_value(utc, tz), "2026-11-23T13:02:53");
    }

    #[test]
    fn time_in_a_dst_gap_still_converts() {
        let naive =
            NaiveDateTime::parse_from_str("2026-03-29T02:30:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            to_utc(naive, tz).unwrap().to_rfc3339(),
            "2026-03-29T01:30:00+00:00"
        );
    }

    #[test]
    fn user_json_from_superset_parses_and_normalises() {
        let body = r#"{"active": true, "changed_by": {"id": 1}, "changed_on": "2026-11-23T07:30:22.768923",
            "created_by": null, "created_on": "2026-11-23T07:30:22.768916", "email": "a@x", "fail_login_count": null,
            "first_name": "A", "groups": [], "id": 2, "last_login": null, "last_name": "E", "login_count": null,
            "roles": [{"id": 4, "name": "Gamma"}, {"id": 3, "name": "Alpha"}], "username": "alice"}"#;
        let u: ApiUser = serde_json::from_str(body).unwrap();
        let u = u.into_user(chrono_tz::UTC).unwrap();
        assert_eq!(
            u.roles.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            [MemberId::from(3), MemberId::from(4)]
        );
        assert_eq!(u.changed_by, Some(1));
        assert_eq!(u.created_by, None);
    }

    // --- fuzz: no answer of any shape panics the parsers ------------------------------------

    use crate::fuzz::{any_json, record};
    use proptest::prelude::*;

    fn plausible_user() -> impl Strategy<Value = serde_json::Value> {
        static FIELDS: std::sync::OnceLock<Vec<(&'static str, serde_json::Value)>> =
            std::sync::OnceLock::new();
        let fields = FIELDS.get_or_init(|| {
            use serde_json::json;
            vec![
                ("id", json!(7)),
                ("username", json!("alice")),
                ("first_name", json!("A")),
                ("last_name", json!("E")),
                ("email", json!("a@x")),
                ("active", json!(true)),
                ("roles", json!([{"id": 4, "name": "Gamma"}])),
                ("groups", json!([])),
                ("login_count", json!(1)),
                ("fail_login_count", json!(0)),
                ("last_login", json!("2026-11-23T07:30:22.768923")),
                ("created_on", json!("2026-11-23T07:30:22.768916")),
                ("changed_on", json!("2026-11-23T07:30:22.768923")),
                ("created_by", json!({"id": 1})),
                ("changed_by", serde_json::Value::Null),
            ]
        });
        record(fields)
    }

    fn any_zone() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            chrono_tz::UTC,
            chrono_tz::Pacific::Kiritimati,
            chrono_tz::Etc::GMTPlus12,
            chrono_tz::Europe::Berlin,
            chrono_tz::Asia::Kolkata,
        ])
    }

    /// What the source does with one answer's rows: read each alone, then use its times.
    fn read_page(body: &[u8], tz: Tz) {
        if let Ok(page) = serde_json::from_slice::<Page<Box<RawValue>>>(body) {
            for raw in &page.result {
                let _ = row_id(raw);
                if let Ok(u) = read_user(raw, tz) {
                    let _ = to_filter_value(u.changed_on, tz);
                    let _ = u.last_login.map(|t| to_filter_value(t, tz));
                }
            }
        }
        if let Ok(one) = serde_json::from_slice::<One<Box<RawValue>>>(body) {
            let _ = read_user(&one.result, tz);
        }
        let _ = serde_json::from_slice::<Page<RoleWithMembers>>(body);
        let _ = serde_json::from_slice::<Page<GroupWithMembers>>(body);
        let _ = serde_json::from_slice::<LoginResponse>(body);
    }

    proptest! {
        #[test]
        fn fuzz_superset_answers_of_any_json_never_panic(v in any_json(), tz in any_zone()) {
            read_page(v.to_string().as_bytes(), tz);
        }

        #[test]
        fn fuzz_superset_pages_of_hostile_users_never_panic(
            rows in prop::collection::vec(plausible_user(), 0..4),
            tz in any_zone(),
        ) {
            let body = serde_json::json!({"count": rows.len(), "ids": [], "result": rows});
            read_page(body.to_string().as_bytes(), tz);
            for row in &rows {
                read_page(serde_json::json!({"result": row}).to_string().as_bytes(), tz);
            }
        }

        #[test]
        fn fuzz_superset_answers_of_any_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            read_page(&body, chrono_tz::UTC);
        }
    }

    #[test]
    fn a_time_no_superset_can_hold_makes_the_record_unreadable_not_a_panic() {
        let raw = RawValue::from_string(
            r#"{"id": 6, "username": "u", "active": true, "login_count": 1, "fail_login_count": 0,
                "last_login": "-262143-01-01T00:00:00", "created_on": "2026-01-01T00:00:00",
                "changed_on": "2026-01-01T00:00:00", "created_by": null, "changed_by": null}"#
                .to_owned(),
        )
        .unwrap();
        let err = read_user(&raw, chrono_tz::Pacific::Kiritimati).unwrap_err();
        assert!(err.contains("`last_login` -262143-01-01"), "{err}");
        assert_eq!(row_id(&raw), Some(6));
    }
}
