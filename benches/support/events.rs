//! The events the sink benchmarks deliver: `user.updated` (a last-name edit) with the full
//! user record before and after, in the shape of schemas/user.updated.schema.json. The OCSF
//! encoder reads `data`, so it needs the real shape, and an update is the heaviest event to
//! encode.

use chrono::{DateTime, Utc};
use rollcall::event::{Event, EventType, DATA_CONTENT_TYPE, SPEC_VERSION};
use rollcall::store::{Commit, SourceState, Store};

/// The `i`-th event of a run, about user `user`, observed at `now`.
pub fn user_updated(i: u64, user: u64, now: DateTime<Utc>) -> Event {
    let record = |last_name: &str| {
        serde_json::json!({
            "id": user,
            "username": format!("user{user}"),
            "first_name": "Bench",
            "last_name": last_name,
            "email": format!("user{user}@example.com"),
            "active": true,
            "roles": [{"id": 4, "name": "Gamma"}, {"id": 5, "name": "sql_lab"}],
            "groups": [{"id": 1, "name": "analysts"}],
            "login_count": i,
            "fail_login_count": 0,
            "last_login": "2026-11-21T09:30:00Z",
            "created_on": "2026-01-02T03:04:05Z",
            "changed_on": "2026-11-20T10:00:00Z",
            "created_by": 1,
            "changed_by": 1
        })
    };
    let (before, after) = (format!("User {}", i.saturating_sub(1)), format!("User {i}"));
    Event {
        specversion: SPEC_VERSION.into(),
        id: uuid::Uuid::now_v7(),
        source: "superset://bench".into(),
        event_type: EventType::UserUpdated,
        subject: user.to_string(),
        time: now,
        datacontenttype: DATA_CONTENT_TYPE.into(),
        dataschema: None,
        sequence: String::new(),
        data: serde_json::json!({
            "user": record(&after),
            "before": record(&before),
            "changes": [{"field": "last_name", "before": before, "after": after}]
        }),
    }
}

/// Commits `n` such events, round-robin over `users` users, 10,000 to a commit.
pub fn fill(store: &Store, n: u64, users: u64) {
    let now = Utc::now();
    let mut offset = 0;
    while offset < n {
        let chunk = (n - offset).min(10_000);
        let events = (offset..offset + chunk)
            .map(|i| user_updated(i, i % users + 1, now))
            .collect();
        store
            .commit(Commit {
                source: "bench",
                upserts: Vec::new(),
                removals: Vec::new(),
                events,
                state: Some(&SourceState::default()),
            })
            .unwrap();
        offset += chunk;
    }
}
