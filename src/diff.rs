//! The diff: a pure function from (stored snapshot, fresh snapshot) to derived events, for any
//! source's [`Account`].
//!
//! Owns the rules every source shares: created, deleted (including a re-created user under a
//! reused key), updated field by field, deactivated and reactivated, roles and groups added and
//! removed; what only one source shows (logins, locks, password changes) comes from its
//! `Account::activity`. It must never do I/O, read the clock or assign ids: the cycle stamps
//! ids and times, the store assigns offsets, and the source decides what the fresh snapshot is
//! (including which deletions are confirmed). It imports only the event and user vocabulary.

use serde_json::{json, Value};

use crate::event::{Derived, EventType};
use crate::user::{Account, Member, Snapshot};

pub use crate::user::FieldChange;

#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// The account rollcall itself logs in with: its logins are rollcall's own doing, not events.
    pub service_account: Option<String>,
}

/// One `user.observed` per user: used when `emit_initial_snapshot` is on.
pub fn observe_all<U: Account>(snapshot: &Snapshot<U>) -> Vec<Derived> {
    snapshot.values().map(observed).collect()
}

/// The `user.observed` of one user, when `emit_initial_snapshot` is on.
pub fn observed<U: Account>(user: &U) -> Derived {
    derived(EventType::UserObserved, user, json!({ "user": user }))
}

/// Derive the events that lead from `old` to `new`, per user in key order.
///
/// A user missing from `new` is deleted: callers only leave a user out of `new` once the
/// source confirmed the deletion.
pub fn diff<U: Account>(old: &Snapshot<U>, new: &Snapshot<U>, opts: &DiffOptions) -> Vec<Derived> {
    let mut out = Vec::new();
    let mut old_iter = old.iter().peekable();
    let mut new_iter = new.iter().peekable();
    // Both maps are ordered by key: walk them side by side.
    loop {
        let step = match (old_iter.peek(), new_iter.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        match step {
            std::cmp::Ordering::Less => {
                let (_, before) = old_iter.next().expect("peeked");
                change(Some(before), None, opts, &mut out);
            }
            std::cmp::Ordering::Greater => {
                let (_, after) = new_iter.next().expect("peeked");
                change(None, Some(after), opts, &mut out);
            }
            std::cmp::Ordering::Equal => {
                let (_, before) = old_iter.next().expect("peeked");
                let (_, after) = new_iter.next().expect("peeked");
                change(Some(before), Some(after), opts, &mut out);
            }
        }
    }
    out
}

/// The events of one key: what was stored (`None`: nothing) against what is there now
/// (`None`: confirmed deleted). [`diff`] is this, key by key; the runner calls it one user at a
/// time, so that no cycle holds a whole snapshot.
pub fn change<U: Account>(
    before: Option<&U>,
    after: Option<&U>,
    opts: &DiffOptions,
    out: &mut Vec<Derived>,
) {
    match (before, after) {
        (None, None) => {}
        (Some(before), None) => out.push(deleted(before)),
        (None, Some(after)) => out.push(created(after)),
        (Some(before), Some(after)) => diff_pair(before, after, opts, out),
    }
}

/// The events between two records under the same key.
fn diff_pair<U: Account>(before: &U, after: &U, opts: &DiffOptions, out: &mut Vec<Derived>) {
    if before == after {
        return;
    }
    if !before.same_incarnation(after) {
        // The key was reused by a new account: two people, not one update.
        out.push(deleted(before));
        out.push(created(after));
        return;
    }
    diff_user(before, after, opts, out);
}

fn derived<U: Account>(event_type: EventType, user: &U, data: Value) -> Derived {
    Derived {
        event_type,
        subject: Some(user.key().to_string()),
        data,
    }
}

fn created<U: Account>(user: &U) -> Derived {
    derived(EventType::UserCreated, user, json!({ "user": user }))
}

fn deleted<U: Account>(last_known: &U) -> Derived {
    derived(
        EventType::UserDeleted,
        last_known,
        json!({ "user": last_known }),
    )
}

fn diff_user<U: Account>(before: &U, after: &U, opts: &DiffOptions, out: &mut Vec<Derived>) {
    let changes = U::profile_changes(before, after);
    if !changes.is_empty() {
        out.push(derived(
            EventType::UserUpdated,
            after,
            json!({ "user": after, "before": before, "changes": changes }),
        ));
    }
    match (before.active(), after.active()) {
        (true, false) => out.push(derived(
            EventType::UserDeactivated,
            after,
            json!({ "user": after, "before": before }),
        )),
        (false, true) => out.push(derived(
            EventType::UserReactivated,
            after,
            json!({ "user": after, "before": before }),
        )),
        _ => {}
    }
    membership(
        before.roles(),
        after.roles(),
        after,
        "role",
        (EventType::UserRoleAdded, EventType::UserRoleRemoved),
        out,
    );
    membership(
        before.groups(),
        after.groups(),
        after,
        "group",
        (EventType::UserGroupAdded, EventType::UserGroupRemoved),
        out,
    );
    let service_account = opts.service_account.as_deref() == Some(after.username());
    for (event_type, data) in U::activity(before, after, service_account) {
        out.push(derived(event_type, after, data));
    }
}

/// Removals first, then additions, each in list order. Compared by id, as sets.
fn membership<U: Account>(
    before: &[Member],
    after: &[Member],
    user: &U,
    key: &str,
    (added, removed): (EventType, EventType),
    out: &mut Vec<Derived>,
) {
    let has = |list: &[Member], m: &Member| list.iter().any(|o| o.id == m.id);
    for m in before.iter().filter(|m| !has(after, m)) {
        out.push(derived(removed, user, json!({ "user": user, key: m })));
    }
    for m in after.iter().filter(|m| !has(before, m)) {
        out.push(derived(added, user, json!({ "user": user, key: m })));
    }
}
