//! The Superset user as rollcall stores and publishes it, and Superset's rules for the diff.
//!
//! Owns the normalised shape of one Superset user (UTC times, roles and groups sorted by id),
//! which is exactly what events carry as `data.user`, and what counts as a change: which
//! profile fields, and how logins and failed logins show in the counters (docs/superset.md
//! S10, S11, S28, S30). It does no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::event::EventType;
use crate::user::{normalise_members, Account, FieldChange, Member};

/// Every known Superset user of one source, by id.
pub type Snapshot = crate::user::Snapshot<User>;

/// One user, normalised: times in UTC, `roles` and `groups` sorted by id (Superset returns roles
/// in an unstable order, docs/superset.md S14, so comparing raw lists would invent changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub active: bool,
    pub roles: Vec<Member>,
    pub groups: Vec<Member>,
    pub login_count: Option<i64>,
    pub fail_login_count: Option<i64>,
    pub last_login: Option<DateTime<Utc>>,
    pub created_on: DateTime<Utc>,
    pub changed_on: DateTime<Utc>,
    pub created_by: Option<u64>,
    pub changed_by: Option<u64>,
}

impl User {
    /// Sort memberships by id so that equal sets compare equal.
    pub fn normalise(mut self) -> Self {
        normalise_members(&mut self.roles);
        normalise_members(&mut self.groups);
        self
    }
}

impl Account for User {
    type Key = u64;

    fn key(&self) -> u64 {
        self.id
    }

    /// Superset (on SQLite) reuses the id of a deleted user (docs/superset.md S33), so the id
    /// alone does not identify a person: the pair (id, `created_on`) does.
    fn same_incarnation(&self, other: &User) -> bool {
        self.id == other.id && self.created_on == other.created_on
    }

    fn username(&self) -> &str {
        &self.username
    }

    fn active(&self) -> bool {
        self.active
    }

    fn roles(&self) -> &[Member] {
        &self.roles
    }

    fn groups(&self) -> &[Member] {
        &self.groups
    }

    /// Login counters have their own events, and `changed_on`/`changed_by`/`created_by` move
    /// without any change a person made (a no-op PUT, a password change, the deletion of the
    /// creator: docs/superset.md S28, S34), so they are not reported.
    fn profile_changes(before: &User, after: &User) -> Vec<FieldChange> {
        [
            FieldChange::of("username", &before.username, &after.username),
            FieldChange::of("first_name", &before.first_name, &after.first_name),
            FieldChange::of("last_name", &before.last_name, &after.last_name),
            FieldChange::of("email", &before.email, &after.email),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Logins and failed logins, from the counters (docs/superset.md S11, S30). The service
    /// account's own logins are rollcall's doing, not events.
    fn activity(before: &User, after: &User, service_account: bool) -> Vec<(EventType, Value)> {
        let mut out = Vec::new();
        if service_account {
            return out;
        }
        let logged_in = after.last_login > before.last_login
            || after.login_count.unwrap_or(0) > before.login_count.unwrap_or(0);
        let fails_before = before.fail_login_count.unwrap_or(0);
        let fails_after = after.fail_login_count.unwrap_or(0);
        if logged_in {
            out.push((
                EventType::UserLogin,
                json!({
                    "user": after,
                    "before": before,
                    "changes": [
                        FieldChange { field: "last_login", before: json!(before.last_login), after: json!(after.last_login) },
                        FieldChange { field: "login_count", before: json!(before.login_count), after: json!(after.login_count) },
                    ],
                }),
            ));
        }
        // A successful login resets the counter to 0, so after a login every counted failure is
        // new; without one, only a rise is. Failures that a later success reset between two
        // polls are invisible to any poller.
        let new_failures = if logged_in {
            fails_after
        } else {
            fails_after.saturating_sub(fails_before)
        };
        if new_failures > 0 {
            out.push((
                EventType::UserLoginFailed,
                json!({
                    "user": after,
                    "fail_login_count": fails_after,
                    "new_failures": new_failures,
                }),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{diff, observe_all, DiffOptions};
    use crate::event::Derived;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn role(id: u64, name: &str) -> Member {
        Member {
            id: id.into(),
            name: name.into(),
        }
    }

    fn user(id: u64, name: &str) -> User {
        User {
            id,
            username: name.into(),
            first_name: name.into(),
            last_name: "Example".into(),
            email: format!("{name}@example.com"),
            active: true,
            roles: vec![role(4, "Gamma")],
            groups: vec![],
            login_count: None,
            fail_login_count: None,
            last_login: None,
            created_on: t(0),
            changed_on: t(0),
            created_by: Some(1),
            changed_by: Some(1),
        }
    }

    fn snap(users: &[User]) -> Snapshot {
        users.iter().map(|u| (u.id, u.clone())).collect()
    }

    fn types(events: &[Derived]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    fn run(old: &[User], new: &[User]) -> Vec<Derived> {
        diff(
            &snap(old),
            &snap(new),
            &DiffOptions {
                service_account: Some("rollcall".into()),
            },
        )
    }

    #[test]
    fn identical_snapshots_derive_nothing() {
        let users = [user(1, "alice"), user(2, "bob")];
        assert!(run(&users, &users).is_empty());
    }

    #[test]
    fn new_user_is_created_with_its_full_record() {
        let events = run(&[], &[user(2, "alice")]);
        assert_eq!(types(&events), ["user.created"]);
        assert_eq!(events[0].subject.as_deref(), Some("2"));
        assert_eq!(events[0].data["user"]["username"], "alice");
    }

    #[test]
    fn missing_user_is_deleted_with_its_last_known_record() {
        let events = run(&[user(2, "alice")], &[]);
        assert_eq!(types(&events), ["user.deleted"]);
        assert_eq!(events[0].data["user"]["email"], "alice@example.com");
    }

    #[test]
    fn reused_id_is_a_delete_and_a_create_never_an_update() {
        let mut newcomer = user(7, "zed");
        newcomer.created_on = t(100);
        let events = run(&[user(7, "alice")], &[newcomer]);
        assert_eq!(types(&events), ["user.deleted", "user.created"]);
        assert_eq!(events[0].data["user"]["username"], "alice");
        assert_eq!(events[1].data["user"]["username"], "zed");
    }

    #[test]
    fn profile_change_lists_each_field_with_before_and_after() {
        let mut after = user(2, "alice");
        after.first_name = "Alicia".into();
        after.email = "alicia@example.com".into();
        after.changed_on = t(10);
        let events = run(&[user(2, "alice")], &[after]);
        assert_eq!(types(&events), ["user.updated"]);
        assert_eq!(
            events[0].data["changes"],
            json!([
                {"field": "first_name", "before": "alice", "after": "Alicia"},
                {"field": "email", "before": "alice@example.com", "after": "alicia@example.com"},
            ])
        );
        assert_eq!(events[0].data["before"]["first_name"], "alice");
    }

    #[test]
    fn changed_on_alone_is_not_an_update() {
        let mut after = user(2, "alice");
        after.changed_on = t(50);
        after.changed_by = Some(9);
        after.created_by = None;
        assert!(run(&[user(2, "alice")], &[after]).is_empty());
    }

    #[test]
    fn deactivation_and_reactivation() {
        let mut off = user(2, "alice");
        off.active = false;
        assert_eq!(
            types(&run(&[user(2, "alice")], &[off.clone()])),
            ["user.deactivated"]
        );
        assert_eq!(
            types(&run(&[off], &[user(2, "alice")])),
            ["user.reactivated"]
        );
    }

    #[test]
    fn roles_are_compared_as_sets_by_id() {
        let mut a = user(2, "alice");
        a.roles = vec![role(3, "Alpha"), role(4, "Gamma")];
        let mut b = a.clone();
        b.roles = vec![role(4, "Gamma"), role(3, "Alpha")];
        assert!(run(&[a.clone().normalise()], &[b.normalise()]).is_empty());
    }

    #[test]
    fn renamed_role_is_not_a_membership_change() {
        let mut renamed = user(2, "alice");
        renamed.roles = vec![role(4, "Viewer")];
        assert!(run(&[user(2, "alice")], &[renamed]).is_empty());
    }

    #[test]
    fn role_added_and_removed_name_the_role() {
        let mut after = user(2, "alice");
        after.roles = vec![role(3, "Alpha")];
        let events = run(&[user(2, "alice")], &[after]);
        assert_eq!(types(&events), ["user.role_removed", "user.role_added"]);
        assert_eq!(events[0].data["role"], json!({"id": 4, "name": "Gamma"}));
        assert_eq!(events[1].data["role"], json!({"id": 3, "name": "Alpha"}));
    }

    #[test]
    fn group_added_and_removed_name_the_group() {
        let mut before = user(2, "alice");
        before.groups = vec![role(1, "analysts")];
        let mut after = user(2, "alice");
        after.groups = vec![role(2, "finance")];
        let events = run(&[before], &[after]);
        assert_eq!(types(&events), ["user.group_removed", "user.group_added"]);
        assert_eq!(events[1].data["group"]["name"], "finance");
    }

    #[test]
    fn login_is_observed_from_last_login_and_count() {
        let mut after = user(2, "alice");
        after.last_login = Some(t(5));
        after.login_count = Some(1);
        after.fail_login_count = Some(0);
        let events = run(&[user(2, "alice")], &[after]);
        assert_eq!(types(&events), ["user.login"]);
        assert_eq!(events[0].data["changes"][1]["after"], 1);
    }

    #[test]
    fn login_counters_alone_are_not_an_update() {
        let mut after = user(2, "alice");
        after.login_count = Some(3);
        let events = run(&[user(2, "alice")], &[after]);
        assert_eq!(types(&events), ["user.login"]);
    }

    #[test]
    fn failed_login_carries_the_count() {
        let mut before = user(2, "alice");
        before.fail_login_count = Some(1);
        let mut after = before.clone();
        after.fail_login_count = Some(3);
        let events = run(&[before], &[after]);
        assert_eq!(types(&events), ["user.login_failed"]);
        assert_eq!(events[0].data["fail_login_count"], 3);
        assert_eq!(events[0].data["new_failures"], 2);
    }

    #[test]
    fn first_failed_login_from_null_counters() {
        let mut after = user(2, "alice");
        after.login_count = Some(0);
        after.fail_login_count = Some(1);
        assert_eq!(
            types(&run(&[user(2, "alice")], &[after])),
            ["user.login_failed"]
        );
    }

    #[test]
    fn failures_after_a_login_are_reported_even_if_the_counter_fell() {
        let mut before = user(2, "alice");
        before.login_count = Some(1);
        before.fail_login_count = Some(4);
        let mut after = before.clone();
        after.login_count = Some(2);
        after.last_login = Some(t(9));
        after.fail_login_count = Some(1);
        let events = run(&[before], &[after]);
        assert_eq!(types(&events), ["user.login", "user.login_failed"]);
        assert_eq!(events[1].data["new_failures"], 1);
    }

    #[test]
    fn service_account_logins_are_not_events() {
        let before = user(1, "rollcall");
        let mut after = before.clone();
        after.login_count = Some(40);
        after.last_login = Some(t(9));
        after.fail_login_count = Some(1);
        assert!(run(&[before], &[after]).is_empty());
    }

    #[test]
    fn service_account_profile_changes_are_still_events() {
        let before = user(1, "rollcall");
        let mut after = before.clone();
        after.email = "svc@example.com".into();
        assert_eq!(types(&run(&[before], &[after])), ["user.updated"]);
    }

    #[test]
    fn one_user_can_produce_several_events_in_a_stable_order() {
        let mut after = user(2, "alice");
        after.first_name = "A".into();
        after.active = false;
        after.roles = vec![role(3, "Alpha")];
        after.login_count = Some(1);
        let events = run(&[user(2, "alice")], &[after]);
        assert_eq!(
            types(&events),
            [
                "user.updated",
                "user.deactivated",
                "user.role_removed",
                "user.role_added",
                "user.login"
            ]
        );
    }

    #[test]
    fn observe_all_emits_one_observed_per_user() {
        let events = observe_all(&snap(&[user(1, "a"), user(2, "b")]));
        assert_eq!(types(&events), ["user.observed", "user.observed"]);
    }

    // --- property: applying the derived events to the old snapshot gives the new one ---------

    /// What the events promise to carry: the user record of every user that has any reportable
    /// change. Fields that change without an event (`changed_on`, role names, the service
    /// account's login counters) are projected away.
    /// (id, username, first_name, email, active, role ids, group ids)
    type Projected = (u64, String, String, String, bool, Vec<String>, Vec<String>);

    fn projection(s: &Snapshot) -> Vec<Projected> {
        s.values()
            .map(|u| {
                (
                    u.id,
                    u.username.clone(),
                    u.first_name.clone(),
                    u.email.clone(),
                    u.active,
                    u.roles.iter().map(|m| m.id.to_string()).collect(),
                    u.groups.iter().map(|m| m.id.to_string()).collect(),
                )
            })
            .collect()
    }

    fn apply(old: &Snapshot, events: &[Derived]) -> Snapshot {
        let mut s = old.clone();
        for e in events {
            let u: User = serde_json::from_value(e.data["user"].clone()).unwrap();
            if e.event_type == EventType::UserDeleted {
                if s.get(&u.id).is_some_and(|cur| cur.same_incarnation(&u)) {
                    s.remove(&u.id);
                }
            } else {
                s.insert(u.id, u);
            }
        }
        s
    }

    fn arb_user(id: u64) -> impl Strategy<Value = User> {
        (
            0..3u8,
            prop::sample::select(vec!["alice", "bob", "carol"]),
            any::<bool>(),
            prop::collection::btree_set(1..6u64, 0..3),
            prop::collection::btree_set(1..3u64, 0..2),
            prop::option::of(0..5i64),
            prop::option::of(0..5i64),
        )
            .prop_map(move |(born, name, active, roles, groups, logins, fails)| {
                let mut u = user(id, name);
                u.created_on = t(born as i64);
                u.active = active;
                u.roles = roles.into_iter().map(|r| role(r, "r")).collect();
                u.groups = groups.into_iter().map(|g| role(g, "g")).collect();
                u.login_count = logins;
                u.fail_login_count = fails;
                u
            })
    }

    fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
        prop::collection::btree_set(1..12u64, 0..8).prop_flat_map(|ids| {
            ids.into_iter()
                .map(arb_user)
                .collect::<Vec<_>>()
                .prop_map(|users| snap(&users))
        })
    }

    proptest! {
        #[test]
        fn applying_derived_events_to_old_gives_new(old in arb_snapshot(), new in arb_snapshot()) {
            let events = diff(&old, &new, &DiffOptions::default());
            prop_assert_eq!(projection(&apply(&old, &events)), projection(&new));
        }

        #[test]
        fn diff_of_a_snapshot_with_itself_is_empty(s in arb_snapshot()) {
            prop_assert!(diff(&s, &s, &DiffOptions::default()).is_empty());
        }

        #[test]
        fn every_event_names_its_user_as_subject(old in arb_snapshot(), new in arb_snapshot()) {
            for e in diff(&old, &new, &DiffOptions::default()) {
                prop_assert_eq!(e.data["user"]["id"].as_u64().map(|id| id.to_string()), e.subject);
            }
        }
    }
}
