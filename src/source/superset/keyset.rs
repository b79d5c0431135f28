//! Keyset paging on id (`id > LAST`, ordered by id), where the release can filter by id
//! (docs/superset.md, Releases 4.1 to 6.1): one page, one id range read to its end, and every
//! user matching some filters.
//!
//! Owns the check of every keyset page: each row must be past the page before (and below the
//! range's end) and match the filters asked for, since Superset drops a filter it does not
//! understand silently (docs/superset.md S17, S23) and would hand back every user. A page that
//! breaks its query is asked for again a few times (the race of docs/superset.md S47), then
//! refused. It never hands over a row of a page it refused.

use serde_json::value::RawValue;
use tracing::debug;

use super::api::{self, Filter, FilterValue, ListQuery, USERS};
use super::client::Client;
use super::error::SupersetError;
use super::reader::{take, user_row_id, Out, Pages, Reader, Row};
use super::user::User;

/// How often a page that breaks its own query is asked for again before rollcall takes the
/// filter for one Superset ignores: Flask-AppBuilder keeps a list's filters in one object
/// shared by every request it serves at once, so under concurrent requests (rollcall's own
/// id ranges, or anyone else's lists) a page can come back filtered by another request's
/// filters (docs/superset.md S47). That race passes; a dropped filter does not.
const FILTER_RACE_RETRIES: usize = 3;

/// What one keyset page brought: its rows, the answer's `count`, the requests it took.
pub struct KeysetPage {
    pub rows: Vec<Row>,
    pub count: u64,
    pub requests: usize,
}

/// All users matching `filters`, by keyset pagination on id, handed over page by page.
/// Each row must be past the previous page and satisfy `check`: Superset silently ignores
/// an unknown operator or an unparsable date (docs/superset.md S17, S23) and would
/// otherwise hand back every user.
pub async fn users_where(
    r: &mut Reader<'_>,
    filters: Vec<Filter>,
    check: impl Fn(&User) -> bool + Sync,
    out: &mut Out<'_>,
) -> Result<(), SupersetError> {
    let mut last = 0u64;
    let size = r.config.page_size;
    let mut pages = Pages::new(USERS, size);
    loop {
        let page = page(
            r.client,
            r.config.timezone,
            size,
            last,
            &filters,
            None,
            &check,
        )
        .await?;
        r.requests += page.requests;
        pages.count(page.count)?;
        let Some(&(end, _)) = page.rows.last() else {
            return Ok(());
        };
        last = end;
        take(page.rows, &mut r.reads, out)?;
    }
}

/// One id range of a full read (`after` < id < `below`) by keyset, each page sent to `tx` as
/// read. Returns the requests made.
pub async fn range(
    client: &Client,
    tz: chrono_tz::Tz,
    page_size: u32,
    mut after: u64,
    below: Option<u64>,
    tx: tokio::sync::mpsc::Sender<Vec<Row>>,
) -> Result<usize, SupersetError> {
    let mut requests = 0;
    let mut pages = Pages::new(USERS, page_size);
    loop {
        let page = page(client, tz, page_size, after, &[], below, &|_| true).await?;
        requests += page.requests;
        pages.count(page.count)?;
        let rows = page.rows;
        let Some(&(last, _)) = rows.last() else {
            return Ok(requests);
        };
        after = last;
        if tx.send(rows).await.is_err() {
            // The cycle stopped taking pages: its own error is the one to tell.
            return Ok(requests);
        }
    }
}

/// One keyset page of the users matching `filters` with `after` < id (< `below`), each row
/// checked against that and against `matches` (Superset drops a filter it does not
/// understand silently, docs/superset.md S17), asked for again while it breaks them, up to
/// [`FILTER_RACE_RETRIES`] times.
pub async fn page(
    client: &Client,
    tz: chrono_tz::Tz,
    page_size: u32,
    after: u64,
    filters: &[Filter],
    below: Option<u64>,
    matches: &(dyn Fn(&User) -> bool + Sync),
) -> Result<KeysetPage, SupersetError> {
    let mut filters = filters.to_vec();
    filters.extend(below.map(|below| Filter {
        col: "id",
        opr: "lt",
        value: FilterValue::Int(below),
    }));
    let query = Keyset {
        after,
        filters,
        below,
        matches,
        page_size,
    };
    let mut requests = 0;
    loop {
        requests += 1;
        match checked_page(client, tz, &query).await {
            Ok((rows, count)) => {
                return Ok(KeysetPage {
                    rows,
                    count,
                    requests,
                })
            }
            Err(SupersetError::FilterIgnored { detail }) if requests <= FILTER_RACE_RETRIES => {
                debug!(%detail, "a page broke its own query; asking again (docs/superset.md S47)");
            }
            Err(e) => return Err(e),
        }
    }
}

/// What one keyset page asks for: the users matching `filters` (`below` among them) with
/// `after` < id (< `below`), each matching `matches` as well.
struct Keyset<'a> {
    after: u64,
    filters: Vec<Filter>,
    below: Option<u64>,
    matches: &'a (dyn Fn(&User) -> bool + Sync),
    page_size: u32,
}

/// One request of [`page`].
async fn checked_page(
    client: &Client,
    tz: chrono_tz::Tz,
    query: &Keyset<'_>,
) -> Result<(Vec<Row>, u64), SupersetError> {
    let Keyset {
        after,
        ref filters,
        below,
        matches,
        page_size,
    } = *query;
    let page = client
        .list::<Box<RawValue>>(USERS, &ListQuery::keyset(after, filters.clone(), page_size))
        .await?;
    let mut last = after;
    let mut rows = Vec::with_capacity(page.result.len());
    for (i, raw) in page.result.iter().enumerate() {
        let id = user_row_id(raw, &page.ids, i)?;
        if id <= last || below.is_some_and(|below| id >= below) {
            return Err(SupersetError::FilterIgnored {
                detail: format!(
                    "asked for users with id > {last}{}, got id {id}",
                    below.map(|b| format!(" and < {b}")).unwrap_or_default()
                ),
            });
        }
        last = id;
        let row = api::read_user(raw, tz);
        if row.as_ref().is_ok_and(|user| !matches(user)) {
            let described = filters
                .iter()
                .map(|f| format!("{} {}", f.col, f.opr))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SupersetError::FilterIgnored {
                detail: format!("filter `{described}` returned user {id} that does not match it"),
            });
        }
        rows.push((id, row));
    }
    Ok((rows, page.count))
}
