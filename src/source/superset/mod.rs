//! The Superset source: reads `/api/v1/security/users/` (plus role and group membership) and
//! hands the users it read over a page at a time (every user at a full reconcile, those that
//! changed at an incremental poll), with the deletions it confirmed.
//!
//! Owns what Superset's quirks mean for polling (see docs/superset.md): what the release allows,
//! detected at start and at each full reconcile (section Releases 4.1 to 6.1), and a way of
//! reading for it: keyset paging verified page by page or pages by index re-read while they
//! shift, incremental polls by high-water mark through filters or newest-first pages,
//! membership read separately because the roles and groups APIs change it without bumping
//! `changed_on`, and deletions confirmed one by one with `GET /users/<id>`. It never writes to
//! the store, never derives events, and never reports a user deleted that a list merely missed.

mod api;
pub mod audit;
pub mod capabilities;
mod client;
mod config;
mod probe;
pub mod user;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{debug, info, warn};

use crate::event::Derived;
use crate::settings::SecretError;
use crate::source::bounds::{describe_excess, page_limit};
use crate::source::{
    note_unreadable, Fresh, Known, Mode, Observation, Schedule, Source, SourceError,
};
use crate::store::{Credentials, StoreError};
use crate::user::{Member, MemberId};
use api::{Filter, FilterValue, GroupWithMembers, IdRef, ListQuery, RoleWithMembers, UsersInfo};
use audit::{ActionFilter, Judge, LogCursor, RawRow};
use capabilities::{Capabilities, FullRead, Incremental, RoleMembership, Strategy};
pub use client::Client;
pub use config::SupersetConfig;
pub use user::{Snapshot, User};
/// The registry's name for this kind's error.
pub use SupersetError as Error;

/// The product, as OCSF records name it.
pub const PRODUCT: &str = "Superset";
/// The built-in role that makes a user an administrator (docs/superset.md S6).
pub const ADMIN_ROLES: &[&str] = &["Admin"];

const USERS: &str = "/api/v1/security/users/";
/// A set of user ids. Superset numbers its users densely, so a compressed bitmap holds a
/// million of them in kilobytes, where a hash set took tens of megabytes (docs/performance.md,
/// Memory).
type Ids = roaring::RoaringTreemap;
const USERS_INFO: &str = "/api/v1/security/users/_info";
/// Passes of a read by page index at most while pages shift under it; the users a shift still
/// hid are confirmed by id, or found by the next poll.
const MAX_PASSES: usize = 3;
const ROLES_SEARCH: &str = "/api/v1/security/roles/search/";
const GROUPS: &str = "/api/v1/security/groups/";
const LOG: &str = "/api/v1/log/";
/// Show a progress bar when a log read has more rows than this (a first-start backfill).
const PROGRESS_ABOVE: u64 = 2_000;
/// New action-log rows read per cycle at most: bounds the memory of a backfill, and how long
/// the next poll of the users waits; the rest is read by the next cycles.
const LOG_ROWS_PER_CYCLE: usize = 10_000;
/// How long one cycle may spend reading the action log (checked between pages).
const LOG_TIME_PER_CYCLE: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum SupersetError {
    #[error("Superset at {url} refused the login of '{username}' (401 Not authorized): the password is wrong, the user does not exist, or the account is inactive. rollcall sends these credentials no more, in this process or any later one, since an identity provider behind Superset may lock the account. Check `username`, the password in `password_env`/`password_file` (changed credentials are tried at the next poll), and that the account is active in Superset; then, if only the account was fixed, run `rollcall source retry-login` for this source")]
    LoginRejected { url: String, username: String },
    #[error("Superset answered 403 Forbidden to '{username}' for {path}: the service account needs the Admin role, or a role holding `can_get` on User, `can_get` on Group and `can_list_roles` on RoleRestAPI (see docs/superset-setup.md, The Superset account)")]
    Forbidden { username: String, path: String },
    #[error("Superset at {url} answered 404 for {path}: its security REST API is off. Add `FAB_ADD_SECURITY_API = True` to superset_config.py and restart Superset")]
    SecurityApiDisabled { url: String, path: String },
    #[error("{url} answered 404 but not with Superset's own answer for a missing user (`{{\"message\": \"Not found\"}}`, docs/superset.md S7): `{answer}`. A route that is missing there (the security API off on one Superset behind a load balancer, or a proxy answering) says nothing about the user, so its deletion is held back until Superset itself confirms it. Check that every Superset behind `url` has `FAB_ADD_SECURITY_API = True` and that `url` reaches Superset directly")]
    NotFoundUnconfirmed { url: String, answer: String },
    #[error("Superset rejected rollcall's access token even after renewing it (HTTP {status}: {msg}). Superset's SECRET_KEY or JWT settings may have changed, or a proxy alters the Authorization header")]
    TokenRejected { status: u16, msg: String },
    #[error("expected JSON from {url} but got `{content_type}` (HTTP {status}): {snippet}. Check that `url` is Superset's base URL and not a proxy or single-sign-on page")]
    NotJson {
        url: String,
        status: u16,
        content_type: String,
        snippet: String,
    },
    #[error("the JSON from {url} is truncated or malformed ({bytes} bytes: {detail}). Nothing was stored; the next cycle tries again. If it persists, look for a proxy or size limit between rollcall and Superset")]
    BadJson {
        url: String,
        bytes: usize,
        detail: String,
    },
    #[error("could not reach Superset at {url} after {attempts} attempts: {detail}. Check `url`, that Superset is running, and the network between them")]
    Unreachable {
        url: String,
        attempts: usize,
        detail: String,
    },
    #[error("Superset answered HTTP {status} for {url} after {attempts} attempts: {detail}. See Superset's server log")]
    ServerError {
        url: String,
        status: u16,
        attempts: usize,
        detail: String,
    },
    #[error("Superset answered {url} with a redirect (HTTP {status}) to `{location}`, which rollcall does not follow: a password or token must never go anywhere but `url`. Set `url` to the address Superset answers on itself (https:// if it redirects http://, the path a proxy serves it on)")]
    Redirected {
        url: String,
        status: u16,
        location: String,
    },
    #[error("Superset asked rollcall to slow down (HTTP 429) at {url} on each of {attempts} attempts, waiting as its Retry-After said (at most a minute each); nothing was stored, the next poll tries again. If it persists, raise `poll_interval` or Superset's rate limits")]
    Throttled { url: String, attempts: usize },
    #[error("unexpected HTTP {status} from {url}: {detail}")]
    Unexpected {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("Superset ignored part of a query ({detail}); rollcall refuses to trust that page. Superset drops filters it does not understand silently, so this version may not support it")]
    FilterIgnored { detail: String },
    #[error("Superset refused a query rollcall built from what it announced it allows ({detail}): its release may have changed underneath. Nothing was stored; the next cycle asks Superset again what it allows and reads accordingly")]
    QueryRefused { detail: String },
    #[error("a row of {path} has no readable `id` ({detail}), so rollcall cannot tell whose it is; nothing was stored. See what Superset (or a proxy before it) answers there")]
    NoId { path: String, detail: String },
    #[error("Superset's answer to {url} is too large: {}. rollcall stopped reading it; the next cycle asks again. If Superset's answers are this large, raise `max_response_bytes` for this source; otherwise look for a proxy answering in Superset's place", describe_excess(*max, *declared))]
    TooLarge {
        url: String,
        max: u64,
        declared: Option<u64>,
    },
    #[error("Superset's pages of {path} did not end: {pages} pages read, more than its first page's count of {total} rows needs even with room for rows added meanwhile. rollcall stopped this read so that it cannot go on for ever; the next cycle reads again. Look for a proxy that rewrites paging arguments, or for rows being created faster than rollcall reads them")]
    EndlessPages {
        path: String,
        pages: u64,
        total: u64,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("cannot read the password")]
    Secret(#[source] SecretError),
    #[error("cannot compare with what is stored")]
    Stored(#[from] StoreError),
}

impl SupersetError {
    /// Superset refused the credentials. Superset itself locks no account by default, but an
    /// identity provider behind it (LDAP, OAuth) may, so they are not sent again either.
    pub fn refused_login(&self) -> bool {
        matches!(self, SupersetError::LoginRejected { .. })
    }
}

/// What the Superset source remembers between cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Newest `changed_on` and `last_login` seen: incremental polls ask for what is newer.
    pub hwm_changed_on: Option<DateTime<Utc>>,
    pub hwm_last_login: Option<DateTime<Utc>>,
    /// How far the action log has been read.
    #[serde(default)]
    pub log: LogCursor,
    /// Why the action log could not be read on the last try (the users stream goes on).
    #[serde(default)]
    pub log_error: Option<LogError>,
    /// Action-log rows that could not be read, ever.
    #[serde(default)]
    pub log_malformed_rows: u64,
    /// Users whose latest read could not be understood, by id, with why. Their stored records
    /// stand as they are until a read succeeds: no event, and never a deletion, is inferred
    /// from a record rollcall could not read.
    #[serde(default)]
    pub unreadable_users: BTreeMap<u64, String>,
    /// What the release allows, as last detected (at start and at each full reconcile).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// The id of the account rollcall logs in with: its reads of the action log are rollcall's
    /// own noise.
    #[serde(default)]
    pub service_account_id: Option<u64>,
    /// When an incremental poll last compared membership through the roles list.
    #[serde(default)]
    pub membership_read_at: Option<DateTime<Utc>>,
}

/// What one cycle's reads of single users came to.
#[derive(Default)]
struct Reads {
    /// Ids read and understood, or confirmed gone.
    settled: Ids,
    /// Ids whose record could not be understood, with why.
    failed: BTreeMap<u64, String>,
}

/// What `GET /users/<id>` says of one user.
enum Lookup {
    Found(Box<User>),
    Gone,
    /// An answer rollcall cannot use (unreadable, or the record of another user); the reason
    /// is in the cycle's [`Reads`].
    Unreadable,
}

/// A failed read of the action log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogError {
    pub at: DateTime<Utc>,
    pub message: String,
}

pub struct SupersetSource {
    config: SupersetConfig,
    client: Client,
    credentials: Credentials,
    filter: ActionFilter,
    requests: usize,
    reads: Reads,
    /// Whether this process has asked the release what it allows yet.
    detected: bool,
    /// Role and group rows the last membership read could not read, by kind and id, with
    /// why: a warning is for a new one.
    unreadable_lists: BTreeMap<(&'static str, Option<u64>), String>,
}

/// Hands the users a cycle reads to the cycle, noting on the way what the cursor keeps of
/// them: the high-water marks and the service account's id.
struct Out<'a> {
    fresh: &'a mut dyn Fresh<User>,
    service_account: &'a str,
    service_account_id: Option<u64>,
    hwm_changed_on: Option<DateTime<Utc>>,
    hwm_last_login: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

impl Out<'_> {
    fn hand(&mut self, users: Vec<User>) -> Result<(), SupersetError> {
        for u in &users {
            if u.username == self.service_account {
                // Its own logins move its marks at every start of a `once`: counted, they
                // would change the cursor of a cycle that found nothing (docs/performance.md,
                // Idle cycles); the next poll reads it again instead, one row.
                self.service_account_id = Some(u.id);
                continue;
            }
            // The marks are lower bounds of the next incremental poll; one from the future (a
            // record dated 9999) would hide every later change from it until a full reconcile.
            self.hwm_changed_on = self.hwm_changed_on.max(Some(u.changed_on.min(self.now)));
            if let Some(t) = u.last_login {
                self.hwm_last_login = self.hwm_last_login.max(Some(t.min(self.now)));
            }
        }
        self.fresh.users(users)?;
        Ok(())
    }
}

/// A row of a users page: its id, and its record or why it could not be read.
type Row = (u64, Result<User, String>);

impl SupersetSource {
    pub fn new(config: SupersetConfig) -> Result<SupersetSource, SupersetError> {
        let password = config.password().map_err(SupersetError::Secret)?;
        let credentials = config.login().credentials(&password);
        let client = Client::new(
            config.url.clone(),
            config.username.clone(),
            password,
            config.request_timeout,
            config.max_retries,
            config.max_response_bytes,
        )?;
        let filter = ActionFilter::new(&config.log_include, &config.log_exclude)
            .map_err(|e| SupersetError::Setup(format!("`log_include`/`log_exclude`: {e}")))?;
        Ok(SupersetSource {
            config,
            client,
            credentials,
            filter,
            requests: 0,
            reads: Reads::default(),
            detected: false,
            unreadable_lists: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &SupersetConfig {
        &self.config
    }

    async fn observe_users(
        &mut self,
        known: &Known<User>,
        cursor: &mut Cursor,
        mode: Mode,
        fresh: &mut dyn Fresh<User>,
    ) -> Result<Observation<User>, SupersetError> {
        self.requests = 0;
        self.reads = Reads::default();
        // An upgrade can happen underneath: ask again at each full reconcile.
        let strategy = match (&cursor.capabilities, mode, self.detected) {
            (Some(caps), Mode::Incremental, true) => caps.strategy(),
            _ => self.detect(cursor).await?,
        };
        let now = Utc::now();
        let mut out = Out {
            fresh,
            service_account: &self.config.username.clone(),
            service_account_id: cursor.service_account_id,
            // A full read sets the marks afresh; an incremental one only raises them.
            hwm_changed_on: (mode == Mode::Incremental)
                .then_some(cursor.hwm_changed_on)
                .flatten(),
            hwm_last_login: (mode == Mode::Incremental)
                .then_some(cursor.hwm_last_login)
                .flatten(),
            now,
        };
        // Roles edited through the roles API show only in the role lists (`membership_interval`).
        let compare_roles = mode == Mode::Incremental
            && strategy.role_membership == RoleMembership::RoleSearch
            && self.membership_due(cursor, now);
        let read = match mode {
            Mode::Full => self.full(known, strategy, &mut out).await,
            Mode::Incremental => {
                self.incremental(known, cursor, strategy, compare_roles, &mut out)
                    .await
            }
        };
        let gone = match read {
            Ok(gone) => gone,
            // A 400 for a filter or order it announced: ask again next cycle (docs/superset.md,
            // Releases 4.1 to 6.1: what each release refuses is a 400 with this message).
            Err(SupersetError::Unexpected {
                status: 400,
                detail,
                ..
            }) if detail.contains("not allowed") || detail.contains("Invalid order by column") => {
                self.detected = false;
                return Err(SupersetError::QueryRefused { detail });
            }
            Err(e) => return Err(e),
        };
        cursor.hwm_changed_on = out.hwm_changed_on;
        cursor.hwm_last_login = out.hwm_last_login;
        cursor.service_account_id = out.service_account_id;
        if compare_roles {
            cursor.membership_read_at = Some(now);
        }
        // A record that could not be read leaves the stored one standing: it was never handed
        // over, and its absence from an answer is no deletion.
        self.report_unreadable(cursor, mode);
        Ok(Observation {
            gone,
            requests: self.requests,
        })
    }

    /// Whether an incremental poll compares membership through the roles list: at every poll,
    /// or every `membership_interval` when it is set.
    fn membership_due(&self, cursor: &Cursor, now: DateTime<Utc>) -> bool {
        let Some(every) = self.config.membership_interval else {
            return true;
        };
        cursor
            .membership_read_at
            .is_none_or(|t| t > now || now - t >= span(every, 30 * crate::settings::DAY))
    }

    /// Say, once per new problem, which users could not be read, and keep the list in the
    /// cursor for `status`. A full read replaces the list; an incremental one only updates the
    /// users it read.
    fn report_unreadable(&mut self, cursor: &mut Cursor, mode: Mode) {
        let reads = std::mem::take(&mut self.reads);
        let mut list = match mode {
            Mode::Full => BTreeMap::new(),
            Mode::Incremental => std::mem::take(&mut cursor.unreadable_users),
        };
        list.retain(|id, _| !reads.settled.contains(*id));
        for (id, reason) in reads.failed {
            note_unreadable(&self.config.name, &cursor.unreadable_users, &id, &reason);
            list.insert(id, reason);
        }
        cursor.unreadable_users = list;
    }

    /// Ask the release what it allows (docs/superset.md, Releases 4.1 to 6.1), keep it in the
    /// cursor for `status`, and say it at start and whenever it changes.
    async fn detect(&mut self, cursor: &mut Cursor) -> Result<Strategy, SupersetError> {
        self.requests += 2;
        let info = match self
            .client
            .object::<UsersInfo>(USERS_INFO, api::INFO_FILTERS_QUERY)
            .await
        {
            Ok(info) => Some(info),
            Err(e @ SupersetError::Forbidden { .. }) => {
                if !self.detected {
                    warn!(error = %e, "cannot read which users filters this Superset allows; reading with pages by index, which every release allows. Grant `can_info` on User to the account for the faster reads of Superset 6");
                }
                None
            }
            Err(e) => return Err(e),
        };
        let probe = ListQuery::past_the_end();
        let role_search = self.client.exists(ROLES_SEARCH, &probe.to_rison()).await?;
        let caps = Capabilities::new(info, role_search, Utc::now());
        let strategy = caps.strategy();
        let changed = cursor
            .capabilities
            .as_ref()
            .is_none_or(|old| !old.same_as(&caps));
        if changed || !self.detected {
            info!(
                source = %self.config.name,
                filterable = %caps.user_filters.as_ref().map_or_else(
                    || "unknown".to_owned(),
                    |f| f.keys().cloned().collect::<Vec<_>>().join(","),
                ),
                role_search,
                strategy = %serde_json::to_string(&strategy).unwrap_or_default(),
                "Superset capabilities detected"
            );
        }
        self.detected = true;
        cursor.capabilities = Some(caps);
        Ok(strategy)
    }

    /// Every user: keyset on id by ranges read at once until each ends, or pages by index
    /// where `id` cannot be filtered (docs/superset.md, Releases 4.1 to 6.1). Each page is
    /// handed over as it comes; only ids are kept, to find who vanished. Returns the users
    /// confirmed deleted.
    async fn full(
        &mut self,
        known: &Known<User>,
        strategy: Strategy,
        out: &mut Out<'_>,
    ) -> Result<Vec<u64>, SupersetError> {
        let (listed, mut gone) = match strategy.full_read {
            FullRead::KeysetById => (self.keyset_ranges(out).await?, Vec::new()),
            FullRead::PagesById => self.by_pages(Some(out)).await?,
        };
        // A user missing from the list is deleted only if Superset confirms it by id: a list
        // can hide users (EXCLUDE_USERS_FROM_LISTS, docs/superset.md S45) or race with writes.
        let vanished = self.unlisted(known, &listed, &gone)?;
        drop(listed);
        gone.extend(self.confirm(vanished, out).await?);
        Ok(gone)
    }

    /// The stored users a whole list did not show: neither listed, nor unreadable this cycle,
    /// nor already confirmed `gone`. Each is for [`Self::confirm`] to settle by id.
    fn unlisted(
        &self,
        known: &Known<User>,
        listed: &Ids,
        gone: &[u64],
    ) -> Result<Vec<u64>, SupersetError> {
        let mut out = Vec::new();
        for id in known.keys() {
            let id = id?;
            if !listed.contains(id) && !self.reads.failed.contains_key(&id) && !gone.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Every user by keyset on id: the first page, then, when its `count` shows a large
    /// Superset, the rest in `reconcile_concurrency` id ranges read at once (the highest id is
    /// one request away), each page checked as a sequential read checks it. Pages are handed
    /// over as they arrive: every page of a range in id order, the ranges interleaved (the
    /// cycle compares users by key, so their order across ranges does not matter). Returns
    /// every id listed.
    async fn keyset_ranges(&mut self, out: &mut Out<'_>) -> Result<Ids, SupersetError> {
        let tz = self.config.timezone;
        let mut listed = Ids::new();
        let size = self.config.page_size;
        let first = keyset_page(&self.client, tz, size, 0, &[], None, &|_| true).await?;
        self.requests += first.requests;
        let (rows, count) = (first.rows, first.count);
        let Some(&(after, _)) = rows.last() else {
            return Ok(listed);
        };
        listed.extend(rows.iter().map(|(id, _)| *id));
        take(rows, &mut self.reads, out)?;
        let ranges = match self.config.reconcile_concurrency {
            n if n > 1 && count > SPLIT_ABOVE => self.ranges(after, n as u64).await?,
            _ => vec![(after, None)],
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Row>>(2 * ranges.len());
        let client = &self.client;
        let readers = async move {
            let reads = ranges
                .into_iter()
                .map(|(after, below)| read_range(client, tz, size, after, below, tx.clone()));
            futures::future::try_join_all(reads).await
        };
        let reads = &mut self.reads;
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
        self.requests += requests?.into_iter().sum::<usize>();
        Ok(listed)
    }

    /// The id ranges after `after` for `n` readers: `(after, below)`, the last one open above
    /// so that users created during the read are not cut off.
    async fn ranges(
        &mut self,
        after: u64,
        n: u64,
    ) -> Result<Vec<(u64, Option<u64>)>, SupersetError> {
        let top = self
            .client
            .list::<IdRef>(
                USERS,
                &ListQuery::ordered_page("id", true, 0, self.config.page_size).ids_only(),
            )
            .await?;
        self.requests += 1;
        let highest = top.result.iter().map(|r| r.id).max().unwrap_or(after);
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

    async fn incremental(
        &mut self,
        known: &Known<User>,
        state: &Cursor,
        strategy: Strategy,
        compare_roles: bool,
        out: &mut Out<'_>,
    ) -> Result<Vec<u64>, SupersetError> {
        let overlap = span(self.config.incremental_overlap, MAX_OVERLAP);
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
            self.newest_first("changed_on", |u| Some(u.changed_on > since), out)
                .await?;
            let since = truncated(login_since);
            self.newest_first("last_login", |u| u.last_login.map(|t| t > since), out)
                .await?;
            self.newest_first(
                "fail_login_count",
                |u| u.fail_login_count.map(|n| n > 0),
                out,
            )
            .await?;
        } else {
            self.filtered(changed_since, login_since, out).await?;
        }
        let mut gone = Vec::new();
        // Before 6.0 there is no role list, and the groups alone are cheap: they are compared at
        // every poll.
        if compare_roles || strategy.role_membership == RoleMembership::AtFullRead {
            let membership = if compare_roles {
                strategy.role_membership
            } else {
                RoleMembership::AtFullRead
            };
            gone.extend(self.compare_membership(known, membership, out).await?);
        }
        if strategy.incremental == Incremental::NewestFirstPages {
            gone.extend(self.settle_count(known, out).await?);
        }
        gone.sort_unstable();
        gone.dedup();
        Ok(gone)
    }

    /// The incremental reads through `changed_on`, `last_login` and `fail_login_count` filters
    /// (docs/superset.md S22), each row checked against its filter.
    async fn filtered(
        &mut self,
        changed_since: DateTime<Utc>,
        login_since: DateTime<Utc>,
        out: &mut Out<'_>,
    ) -> Result<(), SupersetError> {
        let tz = self.config.timezone;
        self.users_where(
            vec![Filter {
                col: "changed_on",
                opr: "gt",
                value: FilterValue::Text(api::to_filter_value(changed_since, tz)),
            }],
            |u| u.changed_on > truncated(changed_since),
            out,
        )
        .await?;
        self.users_where(
            vec![Filter {
                col: "last_login",
                opr: "gt",
                value: FilterValue::Text(api::to_filter_value(login_since, tz)),
            }],
            |u| u.last_login.is_some_and(|t| t > truncated(login_since)),
            out,
        )
        .await?;
        self.users_where(
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

    /// Membership changed through the roles and groups APIs moves no `changed_on` (docs/superset.md S32):
    /// compare it for every stored user (reading only the memberships of each record), and
    /// re-read by id each user whose membership differs. A deleted user shows up here too (it
    /// left every role), and its 404 confirms the deletion. Without `roles/search/` (before
    /// 6.0) only groups are compared; roles changed through the roles API wait for the next
    /// full read (docs/superset.md, Releases 4.1 to 6.1). Returns the users confirmed deleted.
    async fn compare_membership(
        &mut self,
        known: &Known<User>,
        role_membership: RoleMembership,
        out: &mut Out<'_>,
    ) -> Result<Vec<u64>, SupersetError> {
        let (roles, groups) = self.membership(role_membership).await?;
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
            let renames = |m: &Option<Membership>, list: &[Member]| {
                m.as_ref().is_some_and(|m| m.renames(list))
            };
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
        self.confirm(suspects, out).await
    }

    /// Where no membership or filter shows a deletion (before 6.0), the users' `count` does:
    /// when it differs from the users stored, list the ids, confirm by id each one stored but
    /// not listed, and read each one listed but not stored. Returns the users confirmed deleted.
    async fn settle_count(
        &mut self,
        known: &Known<User>,
        out: &mut Out<'_>,
    ) -> Result<Vec<u64>, SupersetError> {
        let first = self
            .client
            .list::<IdRef>(
                USERS,
                &ListQuery::ordered_page("id", false, 0, self.config.page_size).ids_only(),
            )
            .await?;
        self.requests += 1;
        if first.count == known.len() as u64 {
            return Ok(Vec::new());
        }
        let (listed, mut gone) = self.by_pages(None).await?;
        let missing = self.unlisted(known, &listed, &gone)?;
        let mut unknown = Vec::new();
        for id in listed {
            if known.raw(&id)?.is_none() {
                unknown.push(id);
            }
        }
        gone.extend(
            self.confirm(missing.into_iter().chain(unknown), out)
                .await?,
        );
        Ok(gone)
    }

    /// Read each of `ids` by id and hand it over: a 404 confirms a deletion (returned), an
    /// unreadable record leaves what was stored (docs/superset.md S33).
    async fn confirm(
        &mut self,
        ids: impl IntoIterator<Item = u64>,
        out: &mut Out<'_>,
    ) -> Result<Vec<u64>, SupersetError> {
        let mut gone = Vec::new();
        for id in ids {
            match self.user(id).await? {
                Lookup::Found(user) => out.hand(vec![*user])?,
                Lookup::Gone => {
                    info!(id, "user no longer exists (confirmed by 404)");
                    gone.push(id);
                }
                Lookup::Unreadable => {}
            }
        }
        Ok(gone)
    }

    /// Every user (or, without `out`, every id) by pages by index ordered by id, for releases
    /// that cannot filter by id (docs/superset.md, Releases 4.1 to 6.1). A delete between two
    /// page reads shifts later rows down and hides one (docs/superset.md S21): while `count`
    /// moved during a pass or differs from the ids seen, the pages are read again (at most
    /// [`MAX_PASSES`]); a user seen in an earlier pass but not in the last is confirmed by id.
    /// A user seen twice is handed over twice (the cycle keeps the last). Returns the ids that
    /// exist and those confirmed deleted.
    async fn by_pages(
        &mut self,
        mut out: Option<&mut Out<'_>>,
    ) -> Result<(Ids, Vec<u64>), SupersetError> {
        let mut earlier = Ids::new();
        let mut ids = Ids::new();
        for pass in 1..=MAX_PASSES {
            earlier |= std::mem::take(&mut ids);
            let mut counts: BTreeSet<u64> = BTreeSet::new();
            let mut pages = Pages::new(USERS, self.config.page_size);
            for page in 0.. {
                let mut query = ListQuery::ordered_page("id", false, page, self.config.page_size);
                if out.is_none() {
                    query = query.ids_only();
                }
                let answer = self.client.list::<Box<RawValue>>(USERS, &query).await?;
                self.requests += 1;
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
                    match api::read_user(raw, self.config.timezone) {
                        Ok(user) => {
                            self.reads.settled.insert(id);
                            users.push(user);
                        }
                        Err(reason) => {
                            self.reads.failed.insert(id, reason);
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
                if answer.result.len() < self.config.page_size as usize {
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
            match self.user(id).await? {
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
    async fn newest_first(
        &mut self,
        column: &'static str,
        recent: impl Fn(&User) -> Option<bool>,
        out: &mut Out<'_>,
    ) -> Result<(), SupersetError> {
        let mut seen = Ids::new();
        let mut valued = false;
        let mut pages = Pages::new(USERS, self.config.page_size);
        let mut stale = 0;
        for page in 0.. {
            let answer = self
                .client
                .list::<Box<RawValue>>(
                    USERS,
                    &ListQuery::ordered_page(column, true, page, self.config.page_size),
                )
                .await?;
            self.requests += 1;
            pages.count(answer.count)?;
            let mut reached_old = false;
            let mut brought_new = false;
            let mut users = Vec::new();
            for (i, raw) in answer.result.iter().enumerate() {
                let id = user_row_id(raw, &answer.ids, i)?;
                brought_new |= seen.insert(id);
                let user = match api::read_user(raw, self.config.timezone) {
                    Ok(user) => user,
                    Err(reason) => {
                        self.reads.failed.insert(id, reason);
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
                        self.reads.settled.insert(id);
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
            if reached_old || answer.result.len() < self.config.page_size as usize {
                break;
            }
        }
        Ok(())
    }

    /// All users matching `filters`, by keyset pagination on id, handed over page by page.
    /// Each row must be past the previous page and satisfy `check`: Superset silently ignores
    /// an unknown operator or an unparsable date (docs/superset.md S17, S23) and would
    /// otherwise hand back every user.
    async fn users_where(
        &mut self,
        filters: Vec<Filter>,
        check: impl Fn(&User) -> bool + Sync,
        out: &mut Out<'_>,
    ) -> Result<(), SupersetError> {
        let mut last = 0u64;
        let mut pages = Pages::new(USERS, self.config.page_size);
        loop {
            let page = keyset_page(
                &self.client,
                self.config.timezone,
                self.config.page_size,
                last,
                &filters,
                None,
                &check,
            )
            .await?;
            self.requests += page.requests;
            pages.count(page.count)?;
            let Some(&(end, _)) = page.rows.last() else {
                return Ok(());
            };
            last = end;
            take(page.rows, &mut self.reads, out)?;
        }
    }

    /// One user by id. An answer for another id is refused: trusting it would report this
    /// user deleted and the other created (docs/superset.md S10 shows the record's own `id`).
    async fn user(&mut self, id: u64) -> Result<Lookup, SupersetError> {
        self.requests += 1;
        let Some(raw) = self.client.user::<Box<RawValue>>(id).await? else {
            self.reads.settled.insert(id);
            return Ok(Lookup::Gone);
        };
        let read = match api::row_id(&raw) {
            Some(got) if got != id => Err(format!(
                "Superset answered the request for user {id} with the record of user {got}"
            )),
            _ => api::read_user(&raw, self.config.timezone),
        };
        Ok(match read {
            Ok(user) => {
                self.reads.settled.insert(id);
                self.reads.failed.remove(&id);
                Lookup::Found(Box::new(user))
            }
            Err(reason) => {
                self.reads.failed.insert(id, reason);
                Lookup::Unreadable
            }
        })
    }

    /// Role membership by user id from the role search where the release has one, and group
    /// membership from the group list; `None` for what is not compared this cycle.
    async fn membership(
        &mut self,
        role_membership: RoleMembership,
    ) -> Result<(Option<Membership>, Option<Membership>), SupersetError> {
        let roles = match role_membership {
            RoleMembership::AtFullRead => None,
            RoleMembership::RoleSearch => {
                let rows = self.all_rows::<RoleWithMembers>(ROLES_SEARCH).await?;
                let roles = rows.read.into_iter().map(|r| (r.id, r.name, r.user_ids));
                self.membership_of("role", roles, rows.failed)
            }
        };
        let groups = match self.all_rows::<GroupWithMembers>(GROUPS).await {
            Ok(rows) => {
                let groups = rows
                    .read
                    .into_iter()
                    .map(|g| (g.id, g.name, g.users.into_iter().map(|u| u.id).collect()));
                self.membership_of("group", groups, rows.failed)
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
        &mut self,
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
        let before = self.unreadable_lists.clone();
        self.unreadable_lists.retain(|(k, _), _| *k != kind);
        for (id, reason) in failed {
            match id {
                Some(id) => membership.unknown.insert(id),
                None => std::mem::replace(&mut blind, true),
            };
            metrics::counter!("rollcall_unreadable_records_total", "source" => self.config.name.clone())
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
            self.unreadable_lists.insert((kind, id), reason);
        }
        (!blind).then_some(membership)
    }

    /// The action-log rows logged after `since`, oldest first, with their ids: all of them, or
    /// as many as the cycle's budget allows (at most [`LOG_ROWS_PER_CYCLE`] rows not in
    /// `known`, and pages started within [`LOG_TIME_PER_CYCLE`]). Each row must be after
    /// `since` (a dropped filter would otherwise replay the whole log) and each page must bring
    /// a row not seen on an earlier one (a dropped `page` would otherwise never end).
    pub async fn log_rows(
        &mut self,
        since: DateTime<Utc>,
        known: &LogCursor,
    ) -> Result<LogRead, SupersetError> {
        // Log times are UTC (docs/superset.md S16), whatever the server's zone.
        let value = api::to_filter_value(since, chrono_tz::UTC);
        let floor = truncated(since).naive_utc();
        let started = std::time::Instant::now();
        let mut read = LogRead {
            rows: Vec::new(),
            complete: true,
        };
        let mut ids = std::collections::HashSet::new();
        let mut new_rows = 0;
        let mut progress: Option<indicatif::ProgressBar> = None;
        for page in 0.. {
            if new_rows >= LOG_ROWS_PER_CYCLE || started.elapsed() >= LOG_TIME_PER_CYCLE {
                read.complete = false;
                break;
            }
            let result = self
                .client
                .list::<serde_json::Value>(
                    LOG,
                    &ListQuery::log_page(value.clone(), page, self.config.page_size),
                )
                .await?;
            self.requests += 1;
            if page == 0 && result.count > PROGRESS_ABOVE {
                progress = Some(progress_bar(result.count));
            }
            let n = result.result.len();
            let mut brought_new = false;
            for (id, row) in result.ids.into_iter().zip(result.result) {
                let dttm = row.get("dttm").and_then(|v| v.as_str()).and_then(|s| {
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
                });
                if dttm.is_some_and(|t| t <= floor) {
                    return Err(SupersetError::FilterIgnored {
                        detail: format!(
                            "asked for log rows after {value}, got row {id} of {}",
                            dttm.unwrap_or_default()
                        ),
                    });
                }
                if !ids.insert(id) {
                    continue;
                }
                brought_new = true;
                if !known.has_seen(id) {
                    new_rows += 1;
                }
                read.rows.push(RawRow { id, row });
            }
            if n > 0 && !brought_new {
                return Err(SupersetError::FilterIgnored {
                    detail: format!(
                        "page {page} of the action log brought only rows of earlier pages: `page` is ignored, and reading on would never end"
                    ),
                });
            }
            if let Some(bar) = &progress {
                bar.set_position(read.rows.len() as u64);
            }
            if n < self.config.page_size as usize {
                break;
            }
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        Ok(read)
    }

    /// Every row of a role or group list, each read on its own so that one row that cannot
    /// be read spoils no other; failures by the row's id where it has one.
    async fn all_rows<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
    ) -> Result<Rows<T>, SupersetError> {
        let mut rows = Rows {
            read: Vec::new(),
            failed: Vec::new(),
        };
        let mut pages = Pages::new(path, self.config.page_size);
        for page in 0.. {
            let result = self
                .client
                .list::<Box<RawValue>>(path, &ListQuery::page(page, self.config.page_size))
                .await?;
            self.requests += 1;
            pages.count(result.count)?;
            let n = result.result.len() as u64;
            let done = n < u64::from(self.config.page_size)
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
}

/// The rows of a list read one by one.
struct Rows<T> {
    read: Vec<T>,
    /// The rows that could not be read: their id where it could be, and why.
    failed: Vec<(Option<u64>, String)>,
}

/// What one cycle read of the action log.
pub struct LogRead {
    pub rows: Vec<RawRow>,
    /// Every row after `since` was read; false when the cycle's budget ended the read first.
    pub complete: bool,
}

/// Rows per second and time left, on stderr, only when it is a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "action log backfill {bar:30} {pos}/{len} rows, {per_sec}, ETA {eta}",
        )
        .expect("a valid template"),
    );
    bar
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

/// Users a full read counts before it splits the rest into id ranges read at once: below
/// this, the requests for the highest id and the ranges cost more than they save.
const SPLIT_ABOVE: u64 = 2_000;

/// Note the rows of a users page as read (or failed) and hand over their users.
fn take(rows: Vec<Row>, reads: &mut Reads, out: &mut Out<'_>) -> Result<(), SupersetError> {
    let mut users = Vec::with_capacity(rows.len());
    for (id, row) in rows {
        match row {
            Ok(user) => {
                reads.settled.insert(id);
                users.push(user);
            }
            Err(reason) => {
                reads.failed.insert(id, reason);
            }
        }
    }
    out.hand(users)
}

/// How often a page that breaks its own query is asked for again before rollcall takes the
/// filter for one Superset ignores: Flask-AppBuilder keeps a list's filters in one object
/// shared by every request it serves at once, so under concurrent requests (rollcall's own
/// id ranges, or anyone else's lists) a page can come back filtered by another request's
/// filters (docs/superset.md S47). That race passes; a dropped filter does not.
const FILTER_RACE_RETRIES: usize = 3;

/// The pages of one read of a list, counted against what the total its first page announced
/// allows ([`page_limit`]): a server whose pages never end fails the read instead of holding
/// the cycle for ever.
struct Pages<'a> {
    path: &'a str,
    /// Rows a page holds (the source's `page_size`): the bound follows from it.
    size: u32,
    read: u64,
    total: Option<u64>,
}

impl<'a> Pages<'a> {
    fn new(path: &'a str, size: u32) -> Pages<'a> {
        Pages {
            path,
            size,
            read: 0,
            total: None,
        }
    }

    /// One more page read, whose answer announced `total` rows.
    fn count(&mut self, total: u64) -> Result<(), SupersetError> {
        self.read += 1;
        let total = *self.total.get_or_insert(total);
        if self.read > page_limit(total, self.size.into()) {
            return Err(SupersetError::EndlessPages {
                path: self.path.to_owned(),
                pages: self.read,
                total,
            });
        }
        Ok(())
    }
}

/// What one keyset page brought: its rows, the answer's `count`, the requests it took.
struct KeysetPage {
    rows: Vec<Row>,
    count: u64,
    requests: usize,
}

/// One keyset page of the users matching `filters` with `after` < id (< `below`), each row
/// checked against that and against `matches` (Superset drops a filter it does not
/// understand silently, docs/superset.md S17), asked for again while it breaks them, up to
/// [`FILTER_RACE_RETRIES`] times.
async fn keyset_page(
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

/// One request of [`keyset_page`].
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

/// One id range of a full read (`after` < id < `below`) by keyset, each page sent to `tx` as
/// read. Returns the requests made.
async fn read_range(
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
        let page = keyset_page(client, tz, page_size, after, &[], below, &|_| true).await?;
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

/// The id of row `i` of a users page: the row's own, or the answer's `ids` at its place when
/// the row is beyond reading (so an unreadable record is still known by its id).
fn user_row_id(raw: &RawValue, ids: &[u64], i: usize) -> Result<u64, SupersetError> {
    api::row_id(raw)
        .or_else(|| ids.get(i).copied())
        .ok_or_else(|| SupersetError::NoId {
            path: USERS.to_owned(),
            detail: crate::text::snippet(raw.get().as_bytes()),
        })
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

/// The longest `incremental_overlap` validation accepts.
const MAX_OVERLAP: std::time::Duration = crate::settings::DAY;

/// A configured duration for date arithmetic, capped at what validation accepts, so that no
/// value can overflow a date even if it reached here unchecked.
fn span(d: std::time::Duration, cap: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(cap)).unwrap_or(chrono::Duration::zero())
}

/// The filter value is sent in whole seconds; rows must be strictly after that.
fn truncated(t: DateTime<Utc>) -> DateTime<Utc> {
    t - chrono::Duration::nanoseconds(t.timestamp_subsec_nanos().into())
}

impl SupersetSource {
    /// Read the action log past the cursor. A log that cannot be read (disabled, forbidden,
    /// down) is a warning recorded in the cursor: the users stream never waits for it.
    async fn action_log(&mut self, cursor: &mut Cursor, now: DateTime<Utc>) -> Vec<Derived> {
        let overlap = span(self.config.incremental_overlap, MAX_OVERLAP);
        let backfill = span(self.config.log_backfill, config::MAX_LOG_BACKFILL);
        let since = cursor.log.since(overlap, backfill, now);
        let read = match self.log_rows(since, &cursor.log).await {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, "action log unavailable; the users stream goes on");
                cursor.log_error = Some(LogError {
                    at: now,
                    message: e.to_string(),
                });
                return Vec::new();
            }
        };
        let judge = Judge {
            filter: &self.filter,
            service_account: cursor.service_account_id,
            overlap,
        };
        if !read.complete {
            info!(
                rows = read.rows.len(),
                "action log: this cycle's budget is spent ({LOG_ROWS_PER_CYCLE} new rows or {}); the next cycles read on from here",
                humantime::format_duration(LOG_TIME_PER_CYCLE)
            );
        }
        let accepted = cursor.log.accept(since, read.rows, &judge);
        if accepted.malformed > 0 {
            warn!(
                rows = accepted.malformed,
                "unreadable action-log rows skipped"
            );
            cursor.log_malformed_rows += accepted.malformed as u64;
        }
        debug!(
            events = accepted.events.len(),
            duplicates = accepted.duplicates,
            own_noise = accepted.own_noise,
            filtered = accepted.filtered,
            "action log read"
        );
        cursor.log_error = None;
        accepted.events
    }
}

impl Source for SupersetSource {
    type User = User;
    type Cursor = Cursor;

    fn name(&self) -> &str {
        &self.config.name
    }

    fn uri(&self) -> String {
        format!("superset://{}", self.config.name)
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            poll_interval: self.config.poll_interval,
            full_reconcile_interval: self.config.full_reconcile_interval,
        }
    }

    fn emit_initial_snapshot(&self) -> bool {
        self.config.emit_initial_snapshot
    }

    fn service_account(&self) -> Option<&str> {
        Some(&self.config.username)
    }

    fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    async fn observe(
        &mut self,
        known: &Known<User>,
        cursor: &mut Cursor,
        mode: Mode,
        fresh: &mut dyn Fresh<User>,
    ) -> Result<Observation<User>, SourceError> {
        Ok(self.observe_users(known, cursor, mode, fresh).await?)
    }

    async fn probe(&mut self) -> Vec<crate::source::Probe> {
        self.probe_reads().await
    }

    async fn native_events(&mut self, cursor: &mut Cursor, now: DateTime<Utc>) -> Vec<Derived> {
        if !self.config.action_log {
            return Vec::new();
        }
        self.action_log(cursor, now).await
    }
}

impl Cursor {
    /// The action log's health, for `status`: never the ids of rows seen.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "release": self.capabilities.as_ref().map(|caps| serde_json::json!({
                "detected_at": caps.detected_at,
                "filterable_user_columns": caps.user_filters,
                "role_search": caps.role_search,
                "strategy": caps.strategy(),
            })),
            "action_log": {
                "read_up_to": self.log.hwm,
                "last_error": self.log_error,
                "unreadable_rows": self.log_malformed_rows,
            },
            "unreadable_users": self.unreadable_users.iter()
                .map(|(id, reason)| serde_json::json!({"id": id, "reason": reason}))
                .collect::<Vec<_>>(),
        })
    }
}
