//! The `[[sources]]` table of `kind = "superset"`: its keys, defaults and checks.
//!
//! Owns what an operator may write for a Superset source and what is wrong with it. It must
//! never connect anywhere itself (the demo it hands `rollcall demo` does, from `demo.rs`);
//! reading the password happens only when asked.

use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;

use super::audit::ActionFilter;
use super::cursor::Cursor;
use super::error::SupersetError;
use crate::settings::{
    check_durations, DurationText, Entry, Problems, SecretError, DAY, HOUR, SECOND,
};
use crate::source::bounds::{check_max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES};
use crate::source::demo::{DemoError, Steps};
use crate::source::{read_cursor, Login, SourceError, SourceKind, StoredCursor};

const ZERO: Duration = Duration::ZERO;
/// Ten years: far more than any Superset keeps of its log, and far from overflowing a date.
pub const MAX_LOG_BACKFILL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// The longest `incremental_overlap` validation accepts.
pub const MAX_OVERLAP: Duration = DAY;
/// Retries of one request; with backoff capped at 10 s each, 20 is minutes of trying.
const MAX_RETRIES: usize = 20;
/// More concurrent reads than a gunicorn's usual workers only queue inside Superset.
const MAX_CONCURRENCY: usize = 16;

/// One Superset instance. The defaults suit a production poll: every 30 s, with a full
/// reconcile (the only way to see deletions) every 15 min. The account it needs and what each
/// Superset release allows: docs/superset-setup.md.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupersetConfig {
    /// The source's name, unique among sources and sinks: every event's `source` is
    /// `superset://<name>`, and `status`, metrics and the store know the source by it.
    pub name: String,
    /// Superset's base URL, e.g. `http://127.0.0.1:8088` (without `/api/v1`): http or https,
    /// with no user or password in it.
    pub url: url::Url,
    /// The service account rollcall logs in as. It needs the Admin role: Superset answers 403
    /// to anyone else.
    pub username: String,
    /// Name of the environment variable holding the account's password. Set exactly one of
    /// `password_env` and `password_file`.
    pub password_env: Option<String>,
    /// Or a file holding the password (a Kubernetes or Docker secret); trailing newlines are
    /// dropped.
    pub password_file: Option<PathBuf>,
    /// How often the source is polled, 1s to 1day.
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// How often a poll reads every user instead of only those that changed: the only read
    /// that sees deletions. 1s to 30days.
    #[serde(
        default = "defaults::full_reconcile_interval",
        with = "humantime_serde"
    )]
    #[schemars(with = "DurationText")]
    pub full_reconcile_interval: Duration,
    /// How often an incremental poll also compares membership through the roles and groups
    /// lists (edits made through the roles or groups API move no `changed_on`), 1s to 30days.
    /// A longer interval trades how soon such edits are seen for load on Superset, which
    /// builds every member list of a role for that read (docs/superset-setup.md, Large
    /// Supersets). Unset: at every poll.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<DurationText>")]
    pub membership_interval: Option<Duration>,
    /// Rows per page of every list read, 1 to 100 (Superset's own cap, docs/superset.md S18).
    /// Lower it only for a server or proxy that answers fewer rows per page: a page shorter
    /// than this is taken for the last one.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// Id ranges a full reconcile reads at once (1 to 16), on releases that filter users by
    /// id and above 2,000 users.
    #[serde(default = "defaults::reconcile_concurrency")]
    pub reconcile_concurrency: usize,
    /// The time zone of the Superset server, as an IANA name (e.g. "Europe/Berlin"): Superset
    /// writes user times in its server's local time without an offset, and rollcall converts
    /// them to UTC with this.
    #[serde(default = "defaults::timezone")]
    #[schemars(with = "String")]
    pub timezone: Tz,
    /// How far before the stored high-water marks an incremental poll re-reads (at most
    /// 1day): concurrent writes can commit a `changed_on` earlier than one already seen.
    #[serde(default = "defaults::overlap", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub incremental_overlap: Duration,
    /// On the first run, emit one `user.observed` per existing user instead of storing them
    /// silently.
    #[serde(default)]
    pub emit_initial_snapshot: bool,
    /// How long one HTTP request may take, 1s to 1h.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub request_timeout: Duration,
    /// How long one cycle may run (1s to 1day) before it is cancelled and recorded as a failed
    /// poll; what it committed stays (docs/scaling.md). Unset: an hour, or five
    /// `request_timeout`s when that is longer.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<DurationText>")]
    pub poll_deadline: Option<Duration>,
    /// Retries per request (at most 20) on connection errors, timeouts and 5xx answers, with
    /// growing pauses.
    #[serde(default = "defaults::retries")]
    pub max_retries: usize,
    /// The largest answer read from Superset, 64 KiB to 4 GiB: a larger one fails the read,
    /// naming the URL and this key (unread, when its `Content-Length` says so).
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: u64,
    /// Also stream Superset's action log (`/api/v1/log/`) as `audit.action` events, and AI
    /// agents' tool calls through Superset's MCP service as `agent.tool_called`.
    #[serde(default = "defaults::action_log")]
    pub action_log: bool,
    /// On the first start, how much of the action log to read back ("0s": none), at most ten
    /// years.
    #[serde(default = "defaults::log_backfill", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub log_backfill: Duration,
    /// Actions of the action log to emit as `audit.action`, as globs, e.g. `["mcp.*",
    /// "*Export*"]`. MCP tool calls are joined into `agent.tool_called` whatever this says.
    #[serde(default = "defaults::log_include")]
    pub log_include: Vec<String>,
    /// Actions to drop as `audit.action`, as globs, applied after `log_include`.
    #[serde(default)]
    pub log_exclude: Vec<String>,
}

impl SupersetConfig {
    /// Where to log in, as every source kind says it.
    pub fn login(&self) -> Login<'_> {
        Login {
            name: &self.name,
            url: &self.url,
            username: &self.username,
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_deref(),
        }
    }

    /// Read the password from the environment or the file the config names.
    pub fn password(&self) -> Result<SecretString, SecretError> {
        self.login().password()
    }

    /// How often membership is compared: `membership_interval`, or every poll.
    pub fn membership_every(&self) -> Duration {
        self.membership_interval.unwrap_or(self.poll_interval)
    }
}

/// A configured duration for date arithmetic, capped at what validation accepts, so that no
/// value can overflow a date even if it reached here unchecked.
pub fn span(d: Duration, cap: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(cap)).unwrap_or(chrono::Duration::zero())
}

impl SourceKind for SupersetConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn login(&self) -> Login<'_> {
        SupersetConfig::login(self)
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    fn poll_deadline(&self) -> Duration {
        crate::source::poll_deadline(self.poll_deadline, self.request_timeout)
    }

    fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        self.login().check(entry, p);
        for (key, globs) in [
            ("log_include", &self.log_include),
            ("log_exclude", &self.log_exclude),
        ] {
            if let Err(e) = ActionFilter::new(globs, &[]) {
                p.at(entry.key(key), format!("`{key}`: {e}"));
            }
        }
        check_durations(
            entry,
            p,
            &[
                ("poll_interval", self.poll_interval, SECOND..=DAY),
                (
                    "full_reconcile_interval",
                    self.full_reconcile_interval,
                    SECOND..=30 * DAY,
                ),
                (
                    "membership_interval",
                    self.membership_every(),
                    SECOND..=30 * DAY,
                ),
                ("request_timeout", self.request_timeout, SECOND..=HOUR),
                ("poll_deadline", self.poll_deadline(), SECOND..=DAY),
                (
                    "incremental_overlap",
                    self.incremental_overlap,
                    ZERO..=MAX_OVERLAP,
                ),
                ("log_backfill", self.log_backfill, ZERO..=MAX_LOG_BACKFILL),
            ],
        );
        if !(1..=super::api::PAGE_SIZE).contains(&self.page_size) {
            p.at(
                entry.key("page_size"),
                format!(
                    "`page_size` must be between 1 and {}, not {}: Superset answers at most {0} rows per page (docs/superset.md S18), and rollcall takes a shorter page for the last one",
                    super::api::PAGE_SIZE,
                    self.page_size
                ),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.reconcile_concurrency) {
            p.at(
                entry.key("reconcile_concurrency"),
                format!(
                    "`reconcile_concurrency` must be between 1 and {MAX_CONCURRENCY}, not {}: it is how many requests a full reconcile keeps open at once",
                    self.reconcile_concurrency
                ),
            );
        }
        check_max_response_bytes(entry, p, self.max_response_bytes);
        if self.max_retries > MAX_RETRIES {
            p.at(
                entry.key("max_retries"),
                format!(
                    "`max_retries` must be at most {MAX_RETRIES}, not {}: with backoff, more would keep one failing request going for hours",
                    self.max_retries
                ),
            );
        }
    }

    fn describe(&self) -> String {
        format!(
            "superset at {} as '{}', poll every {}, full reconcile every {}, times in {}, each cycle cancelled after {}",
            self.url,
            self.username,
            humantime::format_duration(self.poll_interval),
            humantime::format_duration(self.full_reconcile_interval),
            self.timezone,
            humantime::format_duration(self.poll_deadline())
        )
    }

    fn status(&self, cursor: &StoredCursor) -> serde_json::Value {
        read_cursor::<Cursor>(cursor)
            .map(|c| c.status())
            .unwrap_or_else(|e| serde_json::json!({ "unreadable_cursor": e.to_string() }))
    }

    fn uri(&self) -> String {
        format!("superset://{}", self.name)
    }

    fn stored_users(
        &self,
        store: &crate::store::Store,
        each: &mut crate::source::StoredUser<'_>,
    ) -> Result<(), crate::store::StoreError> {
        crate::source::stored_users::<super::User>(store, &self.name, each)
    }

    fn check_secrets(&self) -> Result<(), SourceError> {
        self.password()
            .map(drop)
            .map_err(|e| SourceError::Superset(SupersetError::Secret(e)))
    }

    fn demo<'a>(
        &'a self,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Box<dyn Steps>, DemoError>> {
        Box::pin(super::demo::start(
            self.url.as_str(),
            &self.username,
            password,
        ))
    }
}

mod defaults {
    use std::time::Duration;

    pub fn poll_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn full_reconcile_interval() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn timezone() -> chrono_tz::Tz {
        chrono_tz::UTC
    }
    pub fn overlap() -> Duration {
        Duration::from_secs(60)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn retries() -> usize {
        4
    }
    pub fn max_response_bytes() -> u64 {
        super::DEFAULT_MAX_RESPONSE_BYTES
    }
    pub fn page_size() -> u32 {
        super::super::api::PAGE_SIZE
    }
    /// Four ranges measured 0.69× a sequential read on Superset's dev server.
    pub fn reconcile_concurrency() -> usize {
        4
    }
    pub fn action_log() -> bool {
        true
    }
    pub fn log_backfill() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn log_include() -> Vec<String> {
        vec!["*".into()]
    }
}
