//! Membership compared between polls: Superset's roles and groups APIs change who is a member
//! without bumping the user's `changed_on` (docs/superset.md S32), so an incremental poll
//! reads the member lists of every role (`roles/search/`, from 6.0) and group, and compares
//! them with each stored user's memberships.
//!
//! Owns reading those lists row by row (one unreadable row spoils no other; membership in an
//! unreadable role is left out of the comparison, so no member is thought to have left it) and
//! the comparison, which walks the stored memberships in id order without a set of every id.
//! A user whose membership differs is re-read by id; one whose roles were only renamed is
//! handed over with the new names. It never takes a user missing from every list for deleted:
//! [`confirm`] asks Superset.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::{debug, warn};

use super::api::{self, GroupWithMembers, ListQuery, RoleWithMembers, GROUPS, ROLES_SEARCH};
use super::capabilities::RoleMembership;
use super::config::{span, SupersetConfig};
use super::confirm;
use super::cursor::Cursor;
use super::error::SupersetError;
use super::reader::{Out, Pages, Reader};
use super::user::User;
use crate::source::Known;
use crate::user::{Member, MemberId};

/// Whether an incremental poll compares membership through the roles list: at every poll,
/// or every `membership_interval` when it is set.
pub fn due(config: &SupersetConfig, cursor: &Cursor, now: DateTime<Utc>) -> bool {
    let Some(every) = config.membership_interval else {
        return true;
    };
    cursor
        .membership_read_at
        .is_none_or(|t| t > now || now - t >= span(every, 30 * crate::settings::DAY))
}

/// Membership changed through the roles and groups APIs moves no `changed_on` (docs/superset.md S32):
/// compare it for every stored user (reading only the memberships of each record), and
/// re-read by id each user whose membership differs. A deleted user shows up here too (it
/// left every role), and its 404 confirms the deletion. Without `roles/search/` (before
/// 6.0) only groups are compared; roles changed through the roles API wait for the next
/// full read (docs/superset.md, Releases 4.1 to 6.1). Returns the users confirmed deleted.
pub async fn compare(
    r: &mut Reader<'_>,
    known: &Known<User>,
    role_membership: RoleMembership,
    out: &mut Out<'_>,
) -> Result<Vec<u64>, SupersetError> {
    let (roles, groups) = lists(r, role_membership).await?;
    let mut listed: Vec<u64> = roles
        .iter()
        .chain(&groups)
        .flat_map(Membership::users)
        .collect();
    listed.sort_unstable();
    listed.dedup();
    // Stored records come in id order: walking `listed` beside them finds the users listed
    // but not stored without a set of every id.
    let mut next = 0;
    let mut suspects = Vec::new();
    let mut renamed = Vec::new();
    for record in known.memberships::<Memberships>() {
        let (id, stored) = record?;
        while listed.get(next).is_some_and(|l| *l < id) {
            suspects.push(listed[next]);
            next += 1;
        }
        if listed.get(next) == Some(&id) {
            next += 1;
        }
        let differs = |m: &Option<Membership>, list: &[Member]| {
            m.as_ref().is_some_and(|m| m.differs(id, list))
        };
        let renames =
            |m: &Option<Membership>, list: &[Member]| m.as_ref().is_some_and(|m| m.renames(list));
        if differs(&roles, &stored.roles) || differs(&groups, &stored.groups) {
            suspects.push(id);
        } else if renames(&roles, &stored.roles) || renames(&groups, &stored.groups) {
            renamed.push(id);
        }
    }
    suspects.extend(listed.get(next..).unwrap_or_default());
    // Same membership, new names (roles can be renamed, docs/superset.md S32).
    for ids in renamed.chunks(api::PAGE_SIZE as usize) {
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(mut user) = known.get(id)?.filter(|u| u.id == *id) {
                if let Some(roles) = &roles {
                    rename(&mut user.roles, &roles.names);
                }
                if let Some(groups) = &groups {
                    rename(&mut user.groups, &groups.names);
                }
                users.push(user);
            }
        }
        out.hand(users)?;
    }
    confirm::users(r, suspects, out).await
}

/// Role membership by user id from the role search where the release has one, and group
/// membership from the group list; `None` for what is not compared this cycle.
async fn lists(
    r: &mut Reader<'_>,
    role_membership: RoleMembership,
) -> Result<(Option<Membership>, Option<Membership>), SupersetError> {
    let roles = match role_membership {
        RoleMembership::AtFullRead => None,
        RoleMembership::RoleSearch => {
            let rows = all_rows::<RoleWithMembers>(r, ROLES_SEARCH).await?;
            let roles = rows
                .read
                .into_iter()
                .map(|role| (role.id, role.name, role.user_ids));
            membership_of(r, "role", roles, rows.failed)
        }
    };
    let groups = match all_rows::<GroupWithMembers>(r, GROUPS).await {
        Ok(rows) => {
            let groups = rows
                .read
                .into_iter()
                .map(|g| (g.id, g.name, g.users.into_iter().map(|u| u.id).collect()));
            membership_of(r, "group", groups, rows.failed)
        }
        // Groups arrived with Superset 6; on older servers there is nothing to compare.
        Err(SupersetError::SecurityApiDisabled { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok((roles, groups))
}

/// The membership the readable rows of a role or group list show, reporting each row
/// that could not be read. Membership in an unreadable role is left out of the comparison
/// (so no member is thought to have left it); a row without even an id leaves the whole
/// list out this cycle, as no one can tell which role it was.
fn membership_of(
    r: &mut Reader<'_>,
    kind: &'static str,
    rows: impl Iterator<Item = (u64, String, Vec<u64>)>,
    failed: Vec<(Option<u64>, String)>,
) -> Option<Membership> {
    let mut membership = Membership::default();
    for (id, name, users) in rows {
        membership.pairs.extend(users.into_iter().map(|u| (u, id)));
        membership.names.insert(id, name);
    }
    membership.seal();
    let mut blind = false;
    let before = r.unreadable_lists.clone();
    r.unreadable_lists.retain(|(k, _), _| *k != kind);
    for (id, reason) in failed {
        match id {
            Some(id) => membership.unknown.insert(id),
            None => std::mem::replace(&mut blind, true),
        };
        metrics::counter!("rollcall_unreadable_records_total", "source" => r.config.name.clone())
            .increment(1);
        let what = match id {
            Some(id) => format!("{kind} {id}"),
            None => format!("a {kind} without an id"),
        };
        if before.get(&(kind, id)) == Some(&reason) {
            debug!(%what, %reason, "membership record still unreadable");
        } else {
            warn!(%what, %reason, "membership record unreadable: membership in it is not compared until it reads again, and other users go on");
        }
        r.unreadable_lists.insert((kind, id), reason);
    }
    (!blind).then_some(membership)
}

/// The rows of a list read one by one.
struct Rows<T> {
    read: Vec<T>,
    /// The rows that could not be read: their id where it could be, and why.
    failed: Vec<(Option<u64>, String)>,
}

/// Every row of a role or group list, each read on its own so that one row that cannot
/// be read spoils no other; failures by the row's id where it has one.
async fn all_rows<T: serde::de::DeserializeOwned>(
    r: &mut Reader<'_>,
    path: &str,
) -> Result<Rows<T>, SupersetError> {
    let mut rows = Rows {
        read: Vec::new(),
        failed: Vec::new(),
    };
    let mut pages = Pages::new(path, r.config.page_size);
    for page in 0.. {
        let result = r
            .client
            .list::<Box<RawValue>>(path, &ListQuery::page(page, r.config.page_size))
            .await?;
        r.requests += 1;
        pages.count(result.count)?;
        let n = result.result.len() as u64;
        let done = n < u64::from(r.config.page_size)
            || (rows.read.len() + rows.failed.len()) as u64 + n >= result.count;
        for (i, raw) in result.result.iter().enumerate() {
            match serde_json::from_str::<T>(raw.get()) {
                Ok(row) => rows.read.push(row),
                Err(e) => rows.failed.push((
                    api::row_id(raw).or_else(|| result.ids.get(i).copied()),
                    crate::text::one_line(&e.to_string()),
                )),
            }
        }
        if done {
            break;
        }
    }
    Ok(rows)
}

/// Who is a member of what: (user, role or group) pairs sorted by user, 16 bytes a membership
/// where a map of sets took ten times that (docs/performance.md, Memory).
#[derive(Default)]
struct Membership {
    pairs: Vec<(u64, u64)>,
    names: BTreeMap<u64, String>,
    /// Roles or groups whose row could not be read: membership in them is not compared.
    unknown: BTreeSet<u64>,
}

impl Membership {
    fn seal(&mut self) {
        self.pairs.sort_unstable();
        self.pairs.dedup();
    }

    /// The roles or groups `user` is a member of, ascending.
    fn of(&self, user: u64) -> impl Iterator<Item = u64> + '_ {
        let start = self.pairs.partition_point(|p| p.0 < user);
        self.pairs[start..]
            .iter()
            .take_while(move |p| p.0 == user)
            .map(|p| p.1)
    }

    /// Whether `user`'s stored memberships `list` differ from those listed now.
    fn differs(&self, user: u64, list: &[Member]) -> bool {
        let mut stored: Vec<u64> = list
            .iter()
            .filter_map(number)
            .filter(|id| !self.unknown.contains(id))
            .collect();
        stored.sort_unstable();
        stored.dedup();
        !self.of(user).eq(stored)
    }

    /// Every user listed, ascending.
    fn users(&self) -> impl Iterator<Item = u64> + '_ {
        self.pairs.chunk_by(|a, b| a.0 == b.0).map(|c| c[0].0)
    }

    /// Whether the names now listed would rename any member of `list`.
    fn renames(&self, list: &[Member]) -> bool {
        list.iter().any(|m| {
            number(m)
                .and_then(|id| self.names.get(&id))
                .is_some_and(|name| *name != m.name)
        })
    }
}

/// The memberships of a stored record: all that comparing membership reads of it.
#[derive(Deserialize)]
struct Memberships {
    #[serde(default)]
    roles: Vec<Member>,
    #[serde(default)]
    groups: Vec<Member>,
}

/// Superset numbers its roles and groups; a name-keyed member is not one of its own.
fn number(m: &Member) -> Option<u64> {
    match m.id {
        MemberId::Number(n) => Some(n),
        MemberId::Name(_) => None,
    }
}

fn rename(list: &mut [Member], names: &BTreeMap<u64, String>) {
    for m in list {
        if let Some(name) = number(m).and_then(|id| names.get(&id)) {
            m.name.clone_from(name);
        }
    }
}
