//! A full read, the only one that sees deletions: every user, by keyset on id in id ranges
//! read at once, or by pages by index where `id` cannot be filtered (docs/superset.md,
//! Releases 4.1 to 6.1); then each stored user the list did not show is asked for by id.
//!
//! Owns how a full read is split and put together: the ranges, and handing each page over as
//! it comes while keeping only the ids listed. It never holds every user's record at once,
//! and never reports a user deleted that the list merely missed (a list can hide users,
//! docs/superset.md S45, or race with writes): only [`confirm`] does.

use super::api::{IdRef, ListQuery, USERS};
use super::capabilities::{FullRead, Strategy};
use super::confirm;
use super::error::SupersetError;
use super::keyset;
use super::pages;
use super::reader::{take, Ids, Out, Reader, Row};
use super::user::User;
use crate::source::Known;

/// Users a full read counts before it splits the rest into id ranges read at once: below
/// this, the requests for the highest id and the ranges cost more than they save.
const SPLIT_ABOVE: u64 = 2_000;

/// Every user: keyset on id by ranges read at once until each ends, or pages by index
/// where `id` cannot be filtered (docs/superset.md, Releases 4.1 to 6.1). Each page is
/// handed over as it comes; only ids are kept, to find who vanished. Returns the users
/// confirmed deleted.
pub async fn read(
    r: &mut Reader<'_>,
    known: &Known<User>,
    strategy: Strategy,
    out: &mut Out<'_>,
) -> Result<Vec<u64>, SupersetError> {
    let (listed, mut gone) = match strategy.full_read {
        FullRead::KeysetById => (keyset_ranges(r, out).await?, Vec::new()),
        FullRead::PagesById => pages::ordered_by_id(r, Some(out)).await?,
    };
    // A user missing from the list is deleted only if Superset confirms it by id: a list
    // can hide users (EXCLUDE_USERS_FROM_LISTS, docs/superset.md S45) or race with writes.
    let vanished = confirm::unlisted(r, known, &listed, &gone)?;
    drop(listed);
    gone.extend(confirm::users(r, vanished, out).await?);
    Ok(gone)
}

/// Every user by keyset on id: the first page, then, when its `count` shows a large
/// Superset, the rest in `reconcile_concurrency` id ranges read at once (the highest id is
/// one request away), each page checked as a sequential read checks it. Pages are handed
/// over as they arrive: every page of a range in id order, the ranges interleaved (the
/// cycle compares users by key, so their order across ranges does not matter). Returns
/// every id listed.
async fn keyset_ranges(r: &mut Reader<'_>, out: &mut Out<'_>) -> Result<Ids, SupersetError> {
    let tz = r.config.timezone;
    let mut listed = Ids::new();
    let size = r.config.page_size;
    let first = keyset::page(r.client, tz, size, 0, &[], None, &|_| true).await?;
    r.requests += first.requests;
    let (rows, count) = (first.rows, first.count);
    let Some(&(after, _)) = rows.last() else {
        return Ok(listed);
    };
    listed.extend(rows.iter().map(|(id, _)| *id));
    take(rows, &mut r.reads, out)?;
    let ranges = match r.config.reconcile_concurrency {
        n if n > 1 && count > SPLIT_ABOVE => ranges(r, after, n as u64).await?,
        _ => vec![(after, None)],
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Row>>(2 * ranges.len());
    let client = r.client;
    let readers = async move {
        let reads = ranges
            .into_iter()
            .map(|(after, below)| keyset::range(client, tz, size, after, below, tx.clone()));
        futures::future::try_join_all(reads).await
    };
    let reads = &mut r.reads;
    let consume = async {
        while let Some(rows) = rx.recv().await {
            listed.extend(rows.iter().map(|(id, _)| *id));
            take(rows, reads, out)?;
        }
        Ok::<_, SupersetError>(())
    };
    let (requests, consumed) = tokio::join!(readers, consume);
    // The cycle's own failure first: it stopped the readers.
    consumed?;
    r.requests += requests?.into_iter().sum::<usize>();
    Ok(listed)
}

/// The id ranges after `after` for `n` readers: `(after, below)`, the last one open above
/// so that users created during the read are not cut off.
async fn ranges(
    r: &mut Reader<'_>,
    after: u64,
    n: u64,
) -> Result<Vec<(u64, Option<u64>)>, SupersetError> {
    let top = r
        .client
        .list::<IdRef>(
            USERS,
            &ListQuery::ordered_page("id", true, 0, r.config.page_size).ids_only(),
        )
        .await?;
    r.requests += 1;
    let highest = top.result.iter().map(|row| row.id).max().unwrap_or(after);
    let width = (highest.saturating_sub(after)).div_ceil(n).max(1);
    let mut ranges = Vec::new();
    let mut from = after;
    while from.saturating_add(width) < highest {
        ranges.push((from, Some(from + width + 1)));
        from += width;
    }
    ranges.push((from, None));
    Ok(ranges)
}
