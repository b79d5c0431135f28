//! The Apache Kylin 5 source: reads every user from `GET /kylin/api/user` each cycle and
//! hands them over a page at a time, keyed by username.
//!
//! Owns what Kylin's quirks mean for polling (docs/kylin.md): paging by page index over a list
//! sorted by name that concurrent creates and deletes shift (K12, K14), so a read is repeated
//! when `total_size` moved and every user missing from it is asked for by name before it is
//! taken for deleted; and never locking the service account (K7, K30): a refused login is an
//! error the cycle remembers in the store, so these credentials are not sent again. One row
//! it cannot read stops no other user and deletes no one. It never writes to the store and
//! never derives events; it keeps only the usernames of a read, never the records.

mod api;
mod client;
mod config;
pub mod demo;
pub mod user;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::warn;

use crate::event::Derived;
use crate::settings::SecretError;
use crate::source::bounds::{describe_excess, page_limit};
use crate::source::{
    note_unreadable, Fresh, Known, Mode, Observation, Schedule, Source, SourceError,
};
use crate::store::{Credentials, StoreError};
use api::{ApiUser, DataResult};
use client::Client;
pub use config::KylinConfig;
pub use user::{KylinUser, Snapshot};
/// The registry's name for this kind's error.
pub use KylinError as Error;

/// The product, as OCSF records name it.
pub const PRODUCT: &str = "Kylin";
/// The authority that makes a user an administrator (docs/kylin.md K4, K19).
pub const ADMIN_ROLES: &[&str] = &["ROLE_ADMIN"];

const USERS: &str = "/api/user";
/// Reads of the whole list before giving up when every one raced with creates or deletes.
const MAX_READS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum KylinError {
    #[error("Kylin at {url} refused the login of '{username}' ({answer}). rollcall sends these credentials no more, in this process or any later one, because Kylin locks an account after three failed logins (docs/kylin.md K30). Check `username` and the password in `password_env`/`password_file` (changed credentials are tried at the next poll); if the account is disabled, enable it; if it is locked, wait for the lock to expire or have an admin reset its password (PUT /kylin/api/user/password), then run `rollcall source retry-login` for this source")]
    LoginRefused {
        url: String,
        username: String,
        /// HTTP status, `error_code` and `msg`.
        answer: String,
    },
    #[error("Kylin answered {url} with `KE-010024001` (no access): '{username}' needs the ROLE_ADMIN group (docs/kylin.md K4, K6)")]
    NotAdmin { url: String, username: String },
    #[error("Kylin answered HTTP {status} for {url}: {msg} (error code {}). See Kylin's server log", error_code.as_deref().unwrap_or("none"))]
    Api {
        url: String,
        status: u16,
        msg: String,
        error_code: Option<String>,
    },
    #[error("expected JSON from {url} but got `{content_type}` (HTTP {status}): {snippet}. Check that `url` is Kylin's base URL with its context path (e.g. http://host:7070/kylin) and not a proxy or single-sign-on page")]
    NotJson {
        url: String,
        status: u16,
        content_type: String,
        snippet: String,
    },
    #[error("Kylin answered {url} with an empty body (HTTP {status}). Nothing was stored; the next cycle tries again. If it persists, look at a proxy between rollcall and Kylin")]
    Empty { url: String, status: u16 },
    #[error("the JSON from {url} is truncated or malformed ({bytes} bytes: {detail}). Nothing was stored; the next cycle tries again")]
    BadJson {
        url: String,
        bytes: usize,
        detail: String,
    },
    #[error("Kylin answered {url} with a redirect (HTTP {status}) to `{location}`, which rollcall does not follow. Check `url`: it should be Kylin's base URL with its context path, e.g. http://host:7070/kylin")]
    Redirected {
        url: String,
        status: u16,
        location: String,
    },
    #[error("could not reach Kylin at {url}: {detail}. Check `url`, that Kylin is running, and the network between them")]
    Unreachable { url: String, detail: String },
    #[error("the user list of Kylin at {url} changed during each of {MAX_READS} reads (users were created or deleted meanwhile); nothing was stored, the next cycle tries again")]
    Unsettled { url: String },
    #[error("Kylin's answer to {url} is too large: {}. rollcall stopped reading it; the next cycle asks again. If Kylin's answers are this large (a big `page_size`), raise `max_response_bytes` for this source or lower `page_size`; otherwise look for a proxy answering in Kylin's place", describe_excess(*max, *declared))]
    TooLarge {
        url: String,
        max: u64,
        declared: Option<u64>,
    },
    #[error("the user pages of Kylin at {url} did not end: {pages} pages read, more than its `total_size` of {total} users needs even with room for users added meanwhile. rollcall stopped this read so that it cannot go on for ever; the next cycle reads again. Look for a proxy that rewrites `page_offset`")]
    EndlessPages { url: String, pages: u64, total: u64 },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("cannot read the password")]
    Secret(#[source] SecretError),
    #[error("a row of the user list of Kylin at {url} has no readable `username` ({detail}), so rollcall cannot tell whose it is; nothing was stored. See what Kylin (or a proxy before it) answers there")]
    NoUsername { url: String, detail: String },
    #[error("cannot compare with what is stored")]
    Stored(#[from] StoreError),
}

impl KylinError {
    /// Kylin refused the credentials: sending them again could lock the account.
    pub fn refused_login(&self) -> bool {
        matches!(self, KylinError::LoginRefused { .. })
    }
}

/// How often a Kylin source's full reads end with a `sync.completed`, at most: Superset's
/// default full reconcile interval, so both kinds mark their copies alike.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What the Kylin source remembers: every cycle reads every user, so only what could not be
/// read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Users whose latest record could not be understood, by name, with why. Their stored
    /// records stand until a read succeeds: no event, and never a deletion, is inferred from
    /// a record rollcall could not read.
    #[serde(default)]
    pub unreadable_users: BTreeMap<String, String>,
}

/// What one read of the whole list found: every username listed, and those whose record
/// could not be read, with why.
#[derive(Default)]
struct Listed {
    names: HashSet<String>,
    failed: BTreeMap<String, String>,
}

pub struct KylinSource {
    config: KylinConfig,
    client: Client,
    credentials: Credentials,
    requests: usize,
}

impl KylinSource {
    pub fn new(config: KylinConfig) -> Result<KylinSource, KylinError> {
        let password = config.password().map_err(KylinError::Secret)?;
        let credentials = config.login().credentials(&password);
        let client = Client::new(
            config.url.clone(),
            config.username.clone(),
            password,
            config.request_timeout,
            config.max_response_bytes,
        )?;
        Ok(KylinSource {
            config,
            client,
            credentials,
            requests: 0,
        })
    }

    /// Every user, handed over page by page, read until one read saw the same `total_size` on
    /// every page and as many distinct users as that total (docs/kylin.md K14). Returns who
    /// is listed.
    async fn users(&mut self, fresh: &mut dyn Fresh<KylinUser>) -> Result<Listed, KylinError> {
        for attempt in 1..=MAX_READS {
            if let Some(listed) = self.read_all(fresh).await? {
                return Ok(listed);
            }
            warn!(
                attempt,
                "Kylin's user list changed while it was read; reading again"
            );
        }
        Err(KylinError::Unsettled {
            url: self.config.url.to_string(),
        })
    }

    /// One read of every page; `None` when the list moved under it. Each page's users are
    /// handed over as read: a record is the user as Kylin has it, even in a read that then
    /// turns out unsettled; only deletions wait for a settled read.
    async fn read_all(
        &mut self,
        fresh: &mut dyn Fresh<KylinUser>,
    ) -> Result<Option<Listed>, KylinError> {
        let page_size = self.config.page_size;
        let mut listed = Listed::default();
        let mut total = None;
        let mut seen = 0u64;
        for page in 0u64.. {
            let data: DataResult<Box<RawValue>> = self
                .client
                .get(
                    USERS,
                    &[
                        // A page index, not a row offset (docs/kylin.md K12).
                        ("page_offset", page.to_string()),
                        ("page_size", page_size.to_string()),
                    ],
                )
                .await?;
            self.requests += 1;
            if *total.get_or_insert(data.total_size) != data.total_size {
                return Ok(None);
            }
            if page >= page_limit(data.total_size, page_size.into()) {
                return Err(KylinError::EndlessPages {
                    url: self.config.url.to_string(),
                    pages: page + 1,
                    total: data.total_size,
                });
            }
            let n = data.value.len() as u64;
            seen += n;
            let mut users = Vec::with_capacity(data.value.len());
            for raw in data.value {
                // A row repeated by a shift is the same user: de-duplicated by name.
                match serde_json::from_str::<ApiUser>(raw.get()) {
                    Ok(u) => {
                        let user = u.into_user();
                        listed.names.insert(user.username.clone());
                        users.push(user);
                    }
                    Err(e) => {
                        let name = username_of(&raw).ok_or_else(|| KylinError::NoUsername {
                            url: self.config.url.to_string(),
                            detail: crate::text::snippet(raw.get().as_bytes()),
                        })?;
                        listed.names.insert(name.clone());
                        listed
                            .failed
                            .insert(name, format!("unreadable record: {e}"));
                    }
                }
            }
            fresh.users(users)?;
            if n < u64::from(page_size) || seen >= data.total_size {
                break;
            }
        }
        // A create and a delete between two pages keep the total but shift rows: then a user
        // was seen twice and another not at all.
        Ok((Some(listed.names.len() as u64) == total).then_some(listed))
    }

    /// Whether the user named `name`, missing from a read of the whole list, is really gone.
    /// A list read page by page is no proof of absence: a delete and a create landing between
    /// two pages slide a user onto a page already read, with the total and the count of
    /// distinct names unchanged (docs/kylin.md K14). So each would-be deletion is asked for by
    /// name, case-sensitively (docs/kylin.md K11: `name` matches substrings, so the answer is
    /// searched for the exact name), with every match in one page: one answer is one
    /// consistent view. A user found is handed over as read (or noted unreadable).
    async fn confirm_gone(
        &mut self,
        name: &str,
        listed: &mut Listed,
        fresh: &mut dyn Fresh<KylinUser>,
    ) -> Result<bool, KylinError> {
        let mut page_size = u64::from(self.config.page_size);
        for _ in 0..MAX_READS {
            let data: DataResult<Box<RawValue>> = self
                .client
                .get(
                    USERS,
                    &[
                        ("name", name.to_owned()),
                        ("is_case_sensitive", "true".to_owned()),
                        ("page_offset", "0".to_owned()),
                        ("page_size", page_size.to_string()),
                    ],
                )
                .await?;
            self.requests += 1;
            let Some(raw) = data
                .value
                .iter()
                .find(|raw| username_of(raw).as_deref() == Some(name))
            else {
                if data.value.len() as u64 >= data.total_size {
                    return Ok(true);
                }
                // More users contain the name than one page held: ask for all of them at once.
                page_size = data.total_size.max(page_size.saturating_mul(2));
                continue;
            };
            match serde_json::from_str::<ApiUser>(raw.get()) {
                Ok(u) => fresh.users(vec![u.into_user()])?,
                Err(e) => {
                    listed
                        .failed
                        .insert(name.to_owned(), format!("unreadable record: {e}"));
                }
            }
            listed.names.insert(name.to_owned());
            return Ok(false);
        }
        Err(KylinError::Unsettled {
            url: self.config.url.to_string(),
        })
    }

    /// Say, once per new problem, which users could not be read, and keep the list for
    /// `status`.
    fn report_unreadable(&self, cursor: &mut Cursor, failed: BTreeMap<String, String>) {
        for (name, reason) in &failed {
            note_unreadable(&self.config.name, &cursor.unreadable_users, name, reason);
        }
        cursor.unreadable_users = failed;
    }
}

/// The `username` of a row that is not a whole user record, if it has one.
fn username_of(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        username: String,
    }
    serde_json::from_str::<Named>(raw.get())
        .ok()
        .map(|n| n.username)
}

impl Source for KylinSource {
    type User = KylinUser;
    type Cursor = Cursor;

    fn name(&self) -> &str {
        &self.config.name
    }

    fn uri(&self) -> String {
        crate::source::SourceKind::uri(&self.config)
    }

    /// Every cycle is a full read, so each is reported as one (the mass-delete guard counts on
    /// full reads to release held deletions); but a `sync.completed` every poll would bury the
    /// events, so one ends a full read at most every [`SYNC_EVERY`].
    fn schedule(&self) -> Schedule {
        Schedule {
            poll_interval: self.config.poll_interval,
            full_reconcile_interval: std::time::Duration::ZERO,
            sync_every: SYNC_EVERY,
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

    /// `mode` is ignored: Kylin's list cannot be filtered by change. A stored user missing
    /// from a settled read of the whole list is gone only once a read by its name finds no
    /// such user ([`KylinSource::confirm_gone`]); the mass-delete guard stands between a bad
    /// read and mass deletions.
    async fn observe(
        &mut self,
        known: &Known<KylinUser>,
        cursor: &mut Cursor,
        _: Mode,
        fresh: &mut dyn Fresh<KylinUser>,
    ) -> Result<Observation<KylinUser>, SourceError> {
        self.requests = 0;
        let mut listed = self.users(fresh).await?;
        let mut missing = Vec::new();
        for name in known.keys() {
            let name = name.map_err(KylinError::Stored)?;
            if !listed.names.contains(&name) {
                missing.push(name);
            }
        }
        let mut gone = Vec::new();
        for name in missing {
            if self.confirm_gone(&name, &mut listed, fresh).await? {
                gone.push(name);
            }
        }
        self.report_unreadable(cursor, listed.failed);
        Ok(Observation {
            gone,
            requests: self.requests,
        })
    }

    /// Kylin has no audit API (docs/kylin.md K53).
    async fn probe(&mut self) -> Vec<crate::source::Probe> {
        // One page of one user: the login and the read the cycle makes, nothing more.
        let result = self
            .client
            .get::<DataResult<ApiUser>>(
                USERS,
                &[
                    ("page_offset", "0".to_owned()),
                    ("page_size", "1".to_owned()),
                ],
            )
            .await
            .map(drop)
            .map_err(Into::into);
        vec![crate::source::Probe {
            what: format!("log in and read users ({USERS})"),
            result,
        }]
    }

    async fn native_events(&mut self, _: &mut Cursor, _: DateTime<Utc>) -> Vec<Derived> {
        Vec::new()
    }
}
