//! The Kylin user as rollcall stores and publishes it, and Kylin's rules for the diff.
//!
//! Owns the normalised shape of one Kylin 5 user (epoch-millisecond times as UTC, `0` as
//! absent, authorities as groups sorted by name without `ALL_USERS`), which is exactly what
//! events carry as `data.user`, and what counts as a change: failed logins, locks and unlocks
//! (docs/kylin.md K26–K32, K48–K50), password changes (K52), failures cleared with no lock to
//! lift (K50) and writes with no visible change (K24). It does no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::event::EventType;
use crate::user::{normalise_members, Account, FieldChange, Member};

/// Every known Kylin user of one source, by username.
pub type Snapshot = crate::user::Snapshot<KylinUser>;

/// The group every Kylin user has, appended when missing (docs/kylin.md K19): it carries no
/// information and never changes, so it is left out of `groups`.
pub const ALL_USERS: &str = "ALL_USERS";

/// `wrong_time` at which a lock is permanent (docs/kylin.md K29, K32).
const PERMANENT_AT: u32 = 10;

/// One Kylin user, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KylinUser {
    pub username: String,
    /// Assigned at create, stable across updates: a new one under the same name is a new
    /// account (docs/kylin.md K23, K45).
    pub uuid: String,
    pub disabled: bool,
    /// The authorities but `ALL_USERS`, sorted by name.
    pub groups: Vec<Member>,
    /// True until the user changes their own password (docs/kylin.md K52).
    pub default_password: bool,
    pub locked: bool,
    /// When the current (or last) lock began; kept after the lock expires (K26).
    pub locked_time: Option<DateTime<Utc>>,
    /// Consecutive failed logins, 0..=10 (K27).
    pub wrong_time: u32,
    pub first_login_failed_time: Option<DateTime<Utc>>,
    pub create_time: Option<DateTime<Utc>>,
    /// Moves with every write of the record, even one that changes nothing (K24).
    pub last_modified: Option<DateTime<Utc>>,
}

impl KylinUser {
    /// Sort the groups so that equal sets compare equal (K19: compare as a set).
    pub fn normalise(mut self) -> Self {
        self.groups.retain(|g| g.name != ALL_USERS);
        normalise_members(&mut self.groups);
        self
    }

    /// The lock this user is under, as `user.locked` publishes it (K29).
    fn lock(&self) -> Value {
        let permanent = self.wrong_time >= PERMANENT_AT;
        let seconds = lock_seconds(self.wrong_time);
        let until = match (self.locked_time, seconds) {
            (Some(at), Some(s)) if !permanent => {
                at.checked_add_signed(chrono::Duration::seconds(s))
            }
            _ => None,
        };
        json!({
            "user": self,
            "wrong_time": self.wrong_time,
            "locked_at": self.locked_time,
            "permanent": permanent,
            "duration_seconds": if permanent { None } else { seconds },
            "locked_until": until,
        })
    }

    /// Everything but `last_modified` is equal: a write that shows nothing (K24, K52).
    fn same_but_last_modified(&self, other: &KylinUser) -> bool {
        KylinUser {
            last_modified: other.last_modified,
            ..self.clone()
        } == *other
    }

    /// Everything but `last_modified` and the failed-login streak (`wrong_time`,
    /// `first_login_failed_time`) is equal.
    fn same_but_streak(&self, other: &KylinUser) -> bool {
        KylinUser {
            last_modified: other.last_modified,
            wrong_time: other.wrong_time,
            first_login_failed_time: other.first_login_failed_time,
            ..self.clone()
        } == *other
    }
}

/// Lock duration by `wrong_time` (docs/kylin.md K29); `None` below 3 (no lock) and at 10
/// (permanent).
fn lock_seconds(wrong_time: u32) -> Option<i64> {
    const MINUTE: i64 = 60;
    const DAY: i64 = 24 * 60 * MINUTE;
    match wrong_time {
        3 => Some(30),
        4 => Some(MINUTE),
        5 => Some(5 * MINUTE),
        6 => Some(10 * MINUTE),
        7 => Some(30 * MINUTE),
        8 => Some(DAY),
        9 => Some(3 * DAY),
        _ => None,
    }
}

impl Account for KylinUser {
    type Key = String;

    /// Names are unique ignoring case and keep their stored case (docs/kylin.md K18), so the
    /// name as Kylin returns it identifies the user.
    fn key(&self) -> String {
        self.username.clone()
    }

    /// A username deleted and created again gets a new `uuid` (docs/kylin.md K23, K45).
    fn same_incarnation(&self, other: &KylinUser) -> bool {
        self.uuid == other.uuid
    }

    fn username(&self) -> &str {
        &self.username
    }

    fn active(&self) -> bool {
        !self.disabled
    }

    /// Kylin has no roles: `ROLE_ADMIN` and the like are groups (K19).
    fn roles(&self) -> &[Member] {
        &[]
    }

    fn groups(&self) -> &[Member] {
        &self.groups
    }

    /// Kylin keeps no profile (names, email); the username is the key and cannot change.
    fn profile_changes(_: &KylinUser, _: &KylinUser) -> Vec<FieldChange> {
        Vec::new()
    }

    /// Failed logins, locks, unlocks, password changes and writes with no visible change. The
    /// service account is treated like any other: its failures and locks are never rollcall's
    /// doing once it has a session, and its successful logins leave no trace (K50).
    fn activity(before: &KylinUser, after: &KylinUser, _: bool) -> Vec<(EventType, Value)> {
        let mut out = Vec::new();
        // A new streak (its first failure moved) counts from zero (K27, K28, K50).
        let new_streak = after.first_login_failed_time != before.first_login_failed_time;
        let new_failures = if new_streak {
            after.wrong_time
        } else {
            after.wrong_time.saturating_sub(before.wrong_time)
        };
        if new_failures > 0 {
            out.push((
                EventType::UserLoginFailed,
                json!({
                    "user": after,
                    "fail_login_count": after.wrong_time,
                    "new_failures": new_failures,
                }),
            ));
        }
        // A lock that expired and was hit again is a new lock with a new `locked_time` (K31).
        if after.locked && (!before.locked || after.locked_time != before.locked_time) {
            out.push((EventType::UserLocked, after.lock()));
        } else if before.locked && !after.locked {
            out.push((
                EventType::UserUnlocked,
                json!({ "user": after, "before": before }),
            ));
        }
        // The one reliable sign of a password change (K37, K52).
        if before.default_password && !after.default_password {
            out.push((
                EventType::UserPasswordChanged,
                json!({ "user": after, "before": before }),
            ));
        }
        // Failures cleared with no lock to lift (which `user.unlocked` would tell): a
        // successful login or a password change, which nothing else shows (K50, K52).
        let streak_cleared =
            before.wrong_time > 0 && after.wrong_time == 0 && before.same_but_streak(after);
        let note = if streak_cleared {
            Some("the failed-login streak was cleared: a successful login or a password change (docs/kylin.md K50, K52)")
        } else if before.last_modified != after.last_modified
            && before.same_but_last_modified(after)
        {
            Some("the record was written with no visible change: a password reset or a save that changed nothing (docs/kylin.md K24, K52)")
        } else {
            None
        };
        if let Some(note) = note {
            out.push((
                EventType::UserUpdated,
                json!({
                    "user": after,
                    "before": before,
                    "changes": [],
                    "note": note,
                }),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{diff, DiffOptions};
    use crate::event::Derived;
    use crate::user::MemberId;
    use chrono::TimeZone;

    fn t(secs: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap())
    }

    fn group(name: &str) -> Member {
        Member {
            id: MemberId::Name(name.into()),
            name: name.into(),
        }
    }

    fn user(name: &str) -> KylinUser {
        KylinUser {
            username: name.into(),
            uuid: format!("uuid-{name}"),
            disabled: false,
            groups: vec![group("ROLE_ANALYST")],
            default_password: true,
            locked: false,
            locked_time: None,
            wrong_time: 0,
            first_login_failed_time: None,
            create_time: t(0),
            last_modified: t(0),
        }
    }

    fn run(before: KylinUser, after: KylinUser) -> Vec<Derived> {
        let snap = |u: KylinUser| [(u.username.clone(), u)].into_iter().collect();
        diff(&snap(before), &snap(after), &DiffOptions::default())
    }

    fn types(events: &[Derived]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn all_users_is_left_out_and_groups_are_sorted() {
        let mut u = user("a");
        u.groups = vec![group("ROLE_MODELER"), group(ALL_USERS), group("ROLE_ADMIN")];
        let names: Vec<String> = u.normalise().groups.into_iter().map(|g| g.name).collect();
        assert_eq!(names, ["ROLE_ADMIN", "ROLE_MODELER"]);
    }

    #[test]
    fn a_new_uuid_is_a_delete_and_a_create() {
        let mut after = user("a");
        after.uuid = "other".into();
        assert_eq!(
            types(&run(user("a"), after)),
            ["user.deleted", "user.created"]
        );
    }

    #[test]
    fn the_third_failure_locks_for_thirty_seconds() {
        let mut before = user("a");
        before.wrong_time = 2;
        before.first_login_failed_time = t(1);
        let mut after = before.clone();
        after.wrong_time = 3;
        after.locked = true;
        after.locked_time = t(5);
        after.last_modified = t(5);
        let events = run(before, after);
        assert_eq!(types(&events), ["user.login_failed", "user.locked"]);
        assert_eq!(events[0].data["new_failures"], 1);
        assert_eq!(events[1].data["duration_seconds"], 30);
        assert_eq!(events[1].data["permanent"], false);
        assert_eq!(
            events[1].data["locked_until"],
            json!(t(35)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        );
    }

    #[test]
    fn the_tenth_failure_locks_for_good() {
        let mut before = user("a");
        before.wrong_time = 9;
        before.locked = true;
        before.locked_time = t(1);
        let mut after = before.clone();
        after.wrong_time = 10;
        after.locked_time = t(9);
        let events = run(before, after);
        assert_eq!(types(&events), ["user.login_failed", "user.locked"]);
        assert_eq!(events[1].data["permanent"], true);
        assert!(events[1].data["duration_seconds"].is_null());
        assert!(events[1].data["locked_until"].is_null());
    }

    #[test]
    fn a_password_change_unlocks_and_is_reported() {
        let mut before = user("a");
        before.wrong_time = 3;
        before.locked = true;
        before.locked_time = t(1);
        before.first_login_failed_time = t(1);
        let mut after = user("a");
        after.default_password = false;
        after.locked_time = None;
        after.last_modified = t(9);
        assert_eq!(
            types(&run(before, after)),
            ["user.unlocked", "user.password_changed"]
        );
    }

    #[test]
    fn a_write_with_no_visible_change_is_an_update_with_a_note_not_a_password_change() {
        let mut after = user("a");
        after.last_modified = t(9);
        let events = run(user("a"), after);
        assert_eq!(types(&events), ["user.updated"]);
        assert_eq!(events[0].data["changes"], json!([]));
        assert!(events[0].data["note"].is_string());
    }

    #[test]
    fn a_failed_login_streak_cleared_without_a_lock_is_an_update_with_a_note() {
        let mut before = user("a");
        before.default_password = false;
        before.wrong_time = 2;
        before.first_login_failed_time = t(1);
        let mut after = user("a");
        after.default_password = false;
        after.last_modified = t(9);
        let events = run(before, after);
        assert_eq!(types(&events), ["user.updated"]);
        assert!(events[0].data["note"]
            .as_str()
            .unwrap()
            .contains("failed-login streak was cleared"));
    }

    #[test]
    fn a_disable_is_not_also_a_silent_update() {
        let mut after = user("a");
        after.disabled = true;
        after.last_modified = t(9);
        assert_eq!(types(&run(user("a"), after)), ["user.deactivated"]);
    }
}
