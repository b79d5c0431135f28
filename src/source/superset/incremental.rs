//! An incremental poll: the users whose `changed_on` or `last_login` is past the high-water
//! marks (less an overlap) or whose `fail_login_count` is above 0, through filters where the
//! release allows them and newest-first pages where it does not (docs/superset.md S22,
//! Releases 4.1 to 6.1); then membership, which those columns miss, and, before 6.0, the
//! users' count, which shows deletions nothing else does.
//!
//! Owns which reads make up an incremental poll and the windows they ask for. It never moves
//! a high-water mark itself ([`Out`] does, as users are handed over) and never reports a user
//! deleted that a read by id did not confirm.

use chrono::{DateTime, Utc};

use super::api::{self, truncated, Filter, FilterValue, IdRef, ListQuery, USERS};
use super::capabilities::{Incremental, RoleMembership, Strategy};
use super::config::{span, MAX_OVERLAP};
use super::confirm;
use super::cursor::Cursor;
use super::error::SupersetError;
use super::keyset::users_where;
use super::membership;
use super::pages;
use super::reader::{Out, Reader};
use super::user::User;
use crate::source::Known;

/// The users changed since the cursor's marks, then membership where `compare_roles` asks for
/// the role lists (and the groups at every poll), then, with newest-first pages, the count.
/// Returns the users confirmed deleted.
pub async fn read(
    r: &mut Reader<'_>,
    known: &Known<User>,
    state: &Cursor,
    strategy: Strategy,
    compare_roles: bool,
    out: &mut Out<'_>,
) -> Result<Vec<u64>, SupersetError> {
    let overlap = span(r.config.incremental_overlap, MAX_OVERLAP);
    let since = |hwm: Option<DateTime<Utc>>| {
        hwm.unwrap_or(DateTime::UNIX_EPOCH)
            .checked_sub_signed(overlap)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            .max(api::earliest_filter_time())
    };
    let changed_since = since(state.hwm_changed_on);
    let login_since = since(state.hwm_last_login);
    if strategy.incremental == Incremental::NewestFirstPages {
        let since = truncated(changed_since);
        pages::newest_first(r, "changed_on", |u| Some(u.changed_on > since), out).await?;
        let since = truncated(login_since);
        pages::newest_first(r, "last_login", |u| u.last_login.map(|t| t > since), out).await?;
        pages::newest_first(
            r,
            "fail_login_count",
            |u| u.fail_login_count.map(|n| n > 0),
            out,
        )
        .await?;
    } else {
        filtered(r, changed_since, login_since, out).await?;
    }
    let mut gone = Vec::new();
    // Before 6.0 there is no role list, and the groups alone are cheap: they are compared at
    // every poll.
    if compare_roles || strategy.role_membership == RoleMembership::AtFullRead {
        let role_membership = if compare_roles {
            strategy.role_membership
        } else {
            RoleMembership::AtFullRead
        };
        gone.extend(membership::compare(r, known, role_membership, out).await?);
    }
    if strategy.incremental == Incremental::NewestFirstPages {
        gone.extend(settle_count(r, known, out).await?);
    }
    gone.sort_unstable();
    gone.dedup();
    Ok(gone)
}

/// The incremental reads through `changed_on`, `last_login` and `fail_login_count` filters
/// (docs/superset.md S22), each row checked against its filter.
async fn filtered(
    r: &mut Reader<'_>,
    changed_since: DateTime<Utc>,
    login_since: DateTime<Utc>,
    out: &mut Out<'_>,
) -> Result<(), SupersetError> {
    let tz = r.config.timezone;
    users_where(
        r,
        vec![Filter {
            col: "changed_on",
            opr: "gt",
            value: FilterValue::Text(api::to_filter_value(changed_since, tz)),
        }],
        |u| u.changed_on > truncated(changed_since),
        out,
    )
    .await?;
    users_where(
        r,
        vec![Filter {
            col: "last_login",
            opr: "gt",
            value: FilterValue::Text(api::to_filter_value(login_since, tz)),
        }],
        |u| u.last_login.is_some_and(|t| t > truncated(login_since)),
        out,
    )
    .await?;
    users_where(
        r,
        vec![Filter {
            col: "fail_login_count",
            opr: "gt",
            value: FilterValue::Int(0),
        }],
        |u| u.fail_login_count.unwrap_or(0) > 0,
        out,
    )
    .await
}

/// Where no membership or filter shows a deletion (before 6.0), the users' `count` does:
/// when it differs from the users stored, list the ids, confirm by id each one stored but
/// not listed, and read each one listed but not stored. Returns the users confirmed deleted.
async fn settle_count(
    r: &mut Reader<'_>,
    known: &Known<User>,
    out: &mut Out<'_>,
) -> Result<Vec<u64>, SupersetError> {
    let first = r
        .client
        .list::<IdRef>(
            USERS,
            &ListQuery::ordered_page("id", false, 0, r.config.page_size).ids_only(),
        )
        .await?;
    r.requests += 1;
    if first.count == known.len() as u64 {
        return Ok(Vec::new());
    }
    let (listed, mut gone) = pages::ordered_by_id(r, None).await?;
    let missing = confirm::unlisted(r, known, &listed, &gone)?;
    let mut unknown = Vec::new();
    for id in listed {
        if known.raw(&id)?.is_none() {
            unknown.push(id);
        }
    }
    gone.extend(confirm::users(r, missing.into_iter().chain(unknown), out).await?);
    Ok(gone)
}
