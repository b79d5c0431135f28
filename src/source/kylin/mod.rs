//! The Apache Kylin 5 source: reads every user from `GET /kylin/api/user` each cycle and
//! returns a fresh, complete snapshot keyed by username.
//!
//! Owns what Kylin's quirks mean for polling (docs/kylin.md): paging by page index over a list
//! sorted by name that concurrent creates and deletes shift (K12, K14), so a read is repeated
//! when `total_size` moved; and never locking the service account (K7, K30): once Kylin refuses
//! the credentials, the source stops and sends nothing more until rollcall restarts. It never
//! writes to the store and never derives events.

mod api;
mod client;
mod config;
pub mod user;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::diff::Derived;
use crate::settings::SecretError;
use crate::source::{Mode, Observation, Schedule, Source, SourceError};
use api::{ApiUser, DataResult};
use client::Client;
pub use config::KylinConfig;
pub use user::{KylinUser, Snapshot};
/// The registry's name for this kind's error.
pub use KylinError as Error;

const USERS: &str = "/api/user";
/// Reads of the whole list before giving up when every one raced with creates or deletes.
const MAX_READS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum KylinError {
    #[error("Kylin at {url} refused the login of '{username}' ({answer}). rollcall has stopped polling this source and will send no more requests with these credentials until it is restarted, because Kylin locks an account after three failed logins (docs/kylin.md K30). Check `username` and the password in `password_env`/`password_file`; if the account is disabled, enable it; if it is locked, wait for the lock to expire or have an admin reset its password (PUT /kylin/api/user/password). Then restart rollcall")]
    LoginRefused {
        url: String,
        username: String,
        /// HTTP status, `error_code` and `msg`.
        answer: String,
    },
    /// A later cycle of a source stopped by a refused login: no request is made.
    #[error("{0}")]
    Stopped(String),
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
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("cannot read the password")]
    Secret(#[source] SecretError),
}

impl KylinError {
    /// The source has stopped itself and sends nothing until rollcall restarts.
    pub fn stops_source(&self) -> bool {
        matches!(self, KylinError::Stopped(_))
    }

    /// Errors that a later cycle may not see (the server or network recovers).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KylinError::Unreachable { .. }
                | KylinError::Empty { .. }
                | KylinError::BadJson { .. }
                | KylinError::Unsettled { .. }
        ) || matches!(self, KylinError::Api { status, .. } if *status >= 500)
    }
}

/// The Kylin source keeps no cursor: every cycle reads every user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {}

pub struct KylinSource {
    config: KylinConfig,
    client: Client,
    /// Why Kylin refused the credentials; set once, never cleared (until a restart).
    stopped: Option<String>,
    requests: usize,
}

impl KylinSource {
    pub fn new(config: KylinConfig) -> Result<KylinSource, KylinError> {
        let password = config.password().map_err(KylinError::Secret)?;
        let client = Client::new(
            config.url.clone(),
            config.username.clone(),
            password,
            config.request_timeout,
        )?;
        Ok(KylinSource {
            config,
            client,
            stopped: None,
            requests: 0,
        })
    }

    /// Every user, read until one read saw the same `total_size` on every page and as many
    /// distinct users as that total (docs/kylin.md K14).
    async fn users(&mut self) -> Result<Snapshot, KylinError> {
        for attempt in 1..=MAX_READS {
            if let Some(users) = self.read_all().await? {
                return Ok(users);
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

    /// One read of every page; `None` when the list moved under it.
    async fn read_all(&mut self) -> Result<Option<Snapshot>, KylinError> {
        let page_size = self.config.page_size;
        let mut out = Snapshot::new();
        let mut total = None;
        let mut seen = 0u64;
        for page in 0u64.. {
            let data: DataResult<ApiUser> = self
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
            let n = data.value.len() as u64;
            seen += n;
            for u in data.value {
                // A row repeated by a shift is the same user: de-duplicate by name.
                let user = u.into_user();
                out.insert(user.username.clone(), user);
            }
            if n < u64::from(page_size) || seen >= data.total_size {
                break;
            }
        }
        // A create and a delete between two pages keep the total but shift rows: then a user
        // was seen twice and another not at all.
        Ok((Some(out.len() as u64) == total).then_some(out))
    }
}

impl Source for KylinSource {
    type User = KylinUser;
    type Cursor = Cursor;

    fn name(&self) -> &str {
        &self.config.name
    }

    fn uri(&self) -> String {
        format!("kylin://{}", self.config.name)
    }

    /// Every cycle is a full read, so each is reported as one (the mass-delete guard counts on
    /// full reads to release held deletions).
    fn schedule(&self) -> Schedule {
        Schedule {
            poll_interval: self.config.poll_interval,
            full_reconcile_interval: std::time::Duration::ZERO,
        }
    }

    fn emit_initial_snapshot(&self) -> bool {
        self.config.emit_initial_snapshot
    }

    fn service_account(&self) -> Option<&str> {
        Some(&self.config.username)
    }

    /// `mode` is ignored: Kylin's list cannot be filtered by change.
    async fn observe(
        &mut self,
        _: &Snapshot,
        _: &mut Cursor,
        _: Mode,
    ) -> Result<Observation<KylinUser>, SourceError> {
        if let Some(reason) = &self.stopped {
            return Err(KylinError::Stopped(reason.clone()).into());
        }
        self.requests = 0;
        match self.users().await {
            Ok(fresh) => Ok(Observation {
                fresh,
                requests: self.requests,
            }),
            Err(e @ KylinError::LoginRefused { .. }) => {
                let reason = e.to_string();
                self.stopped = Some(reason.clone());
                Err(KylinError::Stopped(reason).into())
            }
            Err(e) => Err(e.into()),
        }
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

    async fn native_events(
        &mut self,
        _: &Snapshot,
        _: &mut Cursor,
        _: DateTime<Utc>,
    ) -> Vec<Derived> {
        Vec::new()
    }
}
