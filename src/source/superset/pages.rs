//! Pages by index (`page=N`, ordered by one column), for releases that cannot filter users by
//! id or by time (docs/superset.md, Releases 4.1 to 6.1): every user ordered by id, and the
//! users newest first by a column up to the first old one.
//!
//! Owns what makes such a read trustworthy: the order asked for is checked row by row, a page
//! that brings only rows of earlier pages ends the read (a dropped `page` would never end),
//! and a read of every user is repeated while rows shift between pages (docs/superset.md S21),
//! a user seen before but missing after being read by id. It never takes a user missing from
//! these pages for deleted.

use std::collections::BTreeSet;

use serde_json::value::RawValue;
use tracing::debug;

use super::api::{self, ListQuery, USERS};
use super::confirm::{self, Lookup};
use super::error::SupersetError;
use super::reader::{user_row_id, Ids, Out, Pages, Reader};
use super::user::User;

/// Passes of a read by page index at most while pages shift under it; the users a shift still
/// hid are confirmed by id, or found by the next poll.
const MAX_PASSES: usize = 3;

/// Every user (or, without `out`, every id) by pages by index ordered by id, for releases
/// that cannot filter by id (docs/superset.md, Releases 4.1 to 6.1). A delete between two
/// page reads shifts later rows down and hides one (docs/superset.md S21): while `count`
/// moved during a pass or differs from the ids seen, the pages are read again (at most
/// [`MAX_PASSES`]); a user seen in an earlier pass but not in the last is confirmed by id.
/// A user seen twice is handed over twice (the cycle keeps the last). Returns the ids that
/// exist and those confirmed deleted.
pub async fn ordered_by_id(
    r: &mut Reader<'_>,
    mut out: Option<&mut Out<'_>>,
) -> Result<(Ids, Vec<u64>), SupersetError> {
    let mut earlier = Ids::new();
    let mut ids = Ids::new();
    for pass in 1..=MAX_PASSES {
        earlier |= std::mem::take(&mut ids);
        let mut counts: BTreeSet<u64> = BTreeSet::new();
        let mut pages = Pages::new(USERS, r.config.page_size);
        for page in 0.. {
            let mut query = ListQuery::ordered_page("id", false, page, r.config.page_size);
            if out.is_none() {
                query = query.ids_only();
            }
            let answer = r.client.list::<Box<RawValue>>(USERS, &query).await?;
            r.requests += 1;
            pages.count(answer.count)?;
            counts.insert(answer.count);
            let mut last = 0u64;
            let mut brought_new = false;
            let mut users = Vec::new();
            for (i, raw) in answer.result.iter().enumerate() {
                let id = user_row_id(raw, &answer.ids, i)?;
                if id <= last {
                    return Err(SupersetError::FilterIgnored {
                        detail: format!(
                            "asked for users ordered by id, got id {id} after id {last}"
                        ),
                    });
                }
                last = id;
                brought_new |= ids.insert(id);
                if out.is_none() {
                    continue;
                }
                match api::read_user(raw, r.config.timezone) {
                    Ok(user) => {
                        r.reads.settled.insert(id);
                        users.push(user);
                    }
                    Err(reason) => {
                        r.reads.failed.insert(id, reason);
                    }
                }
            }
            if let Some(out) = out.as_deref_mut() {
                out.hand(users)?;
            }
            if !answer.result.is_empty() && !brought_new {
                return Err(SupersetError::FilterIgnored {
                    detail: format!(
                        "page {page} of the users brought only users of earlier pages: `page` is ignored, and reading on would never end"
                    ),
                });
            }
            if answer.result.len() < r.config.page_size as usize {
                break;
            }
        }
        if counts.len() == 1 && counts.first() == Some(&ids.len()) {
            break;
        }
        debug!(
            pass,
            "users moved between pages while they were read; reading them again"
        );
    }
    let mut gone = Vec::new();
    let hidden: Vec<u64> = (earlier - &ids).into_iter().collect();
    for id in hidden {
        match confirm::user(r, id).await? {
            Lookup::Found(user) => {
                ids.insert(id);
                if let Some(out) = out.as_deref_mut() {
                    out.hand(vec![*user])?;
                }
            }
            Lookup::Gone => gone.push(id),
            Lookup::Unreadable => {}
        }
    }
    Ok((ids, gone))
}

/// The users ordered newest first by `column`, up to the first whose `recent` says no, for
/// releases that cannot filter by time (docs/superset.md, Releases 4.1 to 6.1). Rows with
/// no value there (`recent` is `None`) come all first (PostgreSQL sorts NULLs first in
/// descending order) or all last (SQLite, MySQL): before any value they are passed over,
/// after one they are the end. A recent row after an old one means the order was not
/// honoured, and the read is refused. A page of users all read already is a shift: users
/// changed meanwhile moved to the front and pushed read ones onto it (they are newer than
/// anything read, so the next poll reads them). Two such pages in a row mean the server
/// ignores `page`, and the read is refused.
pub async fn newest_first(
    r: &mut Reader<'_>,
    column: &'static str,
    recent: impl Fn(&User) -> Option<bool>,
    out: &mut Out<'_>,
) -> Result<(), SupersetError> {
    let mut seen = Ids::new();
    let mut valued = false;
    let mut pages = Pages::new(USERS, r.config.page_size);
    let mut stale = 0;
    for page in 0.. {
        let answer = r
            .client
            .list::<Box<RawValue>>(
                USERS,
                &ListQuery::ordered_page(column, true, page, r.config.page_size),
            )
            .await?;
        r.requests += 1;
        pages.count(answer.count)?;
        let mut reached_old = false;
        let mut brought_new = false;
        let mut users = Vec::new();
        for (i, raw) in answer.result.iter().enumerate() {
            let id = user_row_id(raw, &answer.ids, i)?;
            brought_new |= seen.insert(id);
            let user = match api::read_user(raw, r.config.timezone) {
                Ok(user) => user,
                Err(reason) => {
                    r.reads.failed.insert(id, reason);
                    continue;
                }
            };
            let recent = recent(&user);
            match recent {
                None if valued => reached_old = true,
                None => {}
                Some(false) => reached_old = true,
                Some(true) if reached_old => {
                    return Err(SupersetError::FilterIgnored {
                        detail: format!(
                            "asked for users newest first by {column}, got user {id} after an older one"
                        ),
                    });
                }
                Some(true) => {
                    r.reads.settled.insert(id);
                    users.push(user);
                }
            }
            valued |= recent.is_some();
        }
        out.hand(users)?;
        stale = if !answer.result.is_empty() && !brought_new {
            stale + 1
        } else {
            0
        };
        if stale == 2 {
            return Err(SupersetError::FilterIgnored {
                detail: format!(
                    "page {page} of the users by {column}, as the one before it, brought only users of earlier pages: `page` is ignored, and reading on would never end"
                ),
            });
        }
        if reached_old || answer.result.len() < r.config.page_size as usize {
            break;
        }
    }
    Ok(())
}
