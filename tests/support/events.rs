//! Events built the way the runner builds them: one of every type rollcall emits, from both
//! kinds of source, derived by the library itself from small snapshots and action-log rows
//! (some of them captured from a real Superset).

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use rollcall::diff::{diff, observe_all, DiffOptions};
use rollcall::event::Derived;
use rollcall::event::{Event, DATA_CONTENT_TYPE, SPEC_VERSION};
use rollcall::source::superset::{Snapshot, User};
use rollcall::user::Member;
use serde_json::Value;

pub fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

pub fn member(id: u64, name: &str) -> Member {
    Member {
        id: id.into(),
        name: name.into(),
    }
}

pub fn user(id: u64, name: &str) -> User {
    User {
        id,
        username: name.into(),
        first_name: name.into(),
        last_name: "Example".into(),
        email: format!("{name}@example.com"),
        active: true,
        roles: vec![member(4, "Gamma")],
        groups: vec![member(1, "analysts")],
        login_count: None,
        fail_login_count: None,
        last_login: None,
        created_on: t(0),
        changed_on: t(0),
        created_by: Some(1),
        changed_by: None,
    }
}

pub fn snap(users: &[User]) -> Snapshot {
    users
        .iter()
        .map(|u| (u.id, u.clone().normalise()))
        .collect()
}

/// Stamps derived events like the runner: a UUIDv7, the source, the current time, an offset.
pub fn stamp(source: &str, derived: Vec<Derived>) -> Vec<Value> {
    let now = Utc::now();
    derived
        .into_iter()
        .enumerate()
        .map(|(n, d)| {
            let event = Event {
                specversion: SPEC_VERSION.into(),
                id: uuid::Uuid::now_v7(),
                source: source.into(),
                event_type: d.event_type,
                subject: d
                    .subject
                    .map_or_else(|| "anonymous".to_owned(), |id| id.to_string()),
                time: now,
                datacontenttype: DATA_CONTENT_TYPE.into(),
                dataschema: None,
                sequence: Event::sequence_for(n as u64 + 1),
                data: d.data,
            };
            serde_json::to_value(&event).unwrap()
        })
        .collect()
}

/// One event of every type, derived by the library from two small snapshots.
pub fn every_kind_of_event() -> Vec<Value> {
    let mut inactive = user(2, "bob");
    inactive.active = false;
    let old = snap(&[user(1, "alice"), inactive, user(3, "carol")]);

    let mut alice = user(1, "alice");
    alice.first_name = "Alicia".into();
    alice.email = "alicia@example.com".into();
    alice.active = false;
    alice.roles = vec![member(3, "Alpha")];
    alice.groups = vec![member(2, "finance")];
    alice.login_count = Some(1);
    alice.last_login = Some(t(60));
    alice.fail_login_count = Some(2);
    alice.changed_on = t(60);
    alice.changed_by = Some(1);
    let mut dave = user(4, "dave");
    dave.roles = vec![];
    dave.groups = vec![];
    dave.created_by = None;
    dave.login_count = Some(0);
    dave.fail_login_count = Some(0);
    let new = snap(&[alice, user(2, "bob"), dave]);

    let mut derived = observe_all(&old);
    derived.extend(diff(&old, &new, &DiffOptions::default()));
    derived.extend(audit_events());
    derived.extend(agent_events());
    let mut events = stamp("superset://prod-eu.1", derived);
    events.extend(stamp("kylin://bi", kylin_events()));
    events
}

/// Every event a Kylin source derives, in Kylin's user shape: the first poll's, creation,
/// deletion, (de)activation, group changes, and those only Kylin has (locks, unlocks, password
/// changes, a write with no visible change).
pub fn kylin_events() -> Vec<Derived> {
    use rollcall::source::kylin::{KylinUser, Snapshot as KylinSnapshot};
    use rollcall::user::MemberId;
    let group = |name: &str| Member {
        id: MemberId::Name(name.into()),
        name: name.into(),
    };
    let user = |name: &str| KylinUser {
        username: name.into(),
        uuid: format!("uuid-{name}"),
        disabled: false,
        groups: vec![group("ROLE_ANALYST")],
        default_password: true,
        locked: false,
        locked_time: None,
        wrong_time: 0,
        first_login_failed_time: None,
        create_time: Some(t(0)),
        last_modified: Some(t(0)),
    };
    let snap = |users: Vec<KylinUser>| -> KylinSnapshot {
        users.into_iter().map(|u| (u.username.clone(), u)).collect()
    };
    let mut carol = user("carol");
    carol.locked = true;
    carol.wrong_time = 3;
    carol.locked_time = Some(t(1));
    carol.first_login_failed_time = Some(t(1));
    let mut frank = user("frank");
    frank.disabled = true;
    let old = snap(vec![
        user("bob"),
        carol,
        user("dave"),
        user("erin"),
        frank,
        user("gina"),
    ]);

    let mut bob = user("bob");
    bob.wrong_time = 10;
    bob.locked = true;
    bob.locked_time = Some(t(9));
    bob.first_login_failed_time = Some(t(2));
    let mut carol = user("carol");
    carol.default_password = false;
    carol.last_modified = Some(t(9));
    let mut dave = user("dave");
    dave.last_modified = Some(t(9));
    let mut erin = user("erin");
    erin.disabled = true;
    erin.groups = vec![group("ROLE_MODELER")];
    let new = snap(vec![bob, carol, dave, erin, user("frank"), user("hank")]);
    let mut events = observe_all(&old);
    events.extend(diff(&old, &new, &DiffOptions::default()));
    events
}

/// `audit.action` events from action-log rows, one with a user and one anonymous.
pub fn audit_events() -> Vec<Derived> {
    use rollcall::source::superset::audit::{ActionFilter, Judge, LogCursor, RawRow};
    let filter = ActionFilter::new(&["*".into()], &[]).unwrap();
    let judge = Judge {
        filter: &filter,
        service_account: Some(9),
        overlap: chrono::Duration::seconds(60),
    };
    let row = |id: u64, user: Value, json: &str| RawRow {
        id,
        row: serde_json::json!({
            "action": "mcp.generate_chart.db_write", "dttm": "2026-11-23T07:30:22.768923", "duration_ms": 41,
            "json": json, "referrer": "http://superset/dashboard/1/", "slice_id": 5, "dashboard_id": 1,
            "user_id": user.get("id").cloned(), "user": user,
        }),
    };
    let rows = vec![
        row(
            1,
            serde_json::json!({"id": 3, "username": "bob", "first_name": "Bob", "last_name": "B"}),
            r#"{"path": "/mcp"}"#,
        ),
        row(2, Value::Null, "not json"),
    ];
    let mut cursor = LogCursor::default();
    cursor.accept(Utc::now(), rows, &judge).events
}

/// The action-log rows a real Superset 6.1.0 MCP service wrote for one `list_databases` call and
/// then three calls of another session (`tests/fixtures/superset/mcp/action_log_rows.json`).
pub fn captured_mcp_rows() -> Vec<Value> {
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/superset/mcp/action_log_rows.json"
        ))
        .unwrap(),
    )
    .unwrap();
    file["list_databases_ok"]["rows"]
        .as_array()
        .unwrap()
        .clone()
}

/// `agent.tool_called` events joined from the action-log rows a real Superset 6.1.0 MCP service
/// wrote (`tests/fixtures/superset/mcp/`): a read with its user, two error answers, and a call
/// refused for its arguments, with no user.
pub fn agent_events() -> Vec<Derived> {
    use rollcall::event::EventType;
    use rollcall::source::superset::audit::{ActionFilter, Judge, LogCursor, RawRow};
    let rows = (1..)
        .zip(captured_mcp_rows())
        .map(|(id, row)| RawRow { id, row });
    let filter = ActionFilter::new(&["*".into()], &[]).unwrap();
    let judge = Judge {
        filter: &filter,
        service_account: Some(9),
        overlap: chrono::Duration::seconds(60),
    };
    let since = "2026-12-06T13:00:00Z".parse().unwrap();
    let mut cursor = LogCursor::default();
    let mut events = cursor.accept(since, rows.collect(), &judge).events;
    events.retain(|e| e.event_type == EventType::AgentToolCalled);
    events
}

pub fn types_of(events: &[Value]) -> BTreeSet<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The example event of type `t` from the source whose URI starts with `scheme`.
pub fn from_source(scheme: &str, t: &str) -> Value {
    every_kind_of_event()
        .into_iter()
        .find(|e| e["type"] == t && e["source"].as_str().unwrap().starts_with(scheme))
        .unwrap_or_else(|| panic!("no {t} from {scheme} in the example events"))
}

pub fn event_of_type(t: &str) -> Value {
    every_kind_of_event()
        .into_iter()
        .find(|e| e["type"] == t)
        .unwrap_or_else(|| panic!("no {t} in the example events"))
}
