//! The `[[sources]]` table of `kind = "kylin"`: its keys, defaults and checks.
//!
//! Owns what an operator may write for an Apache Kylin 5 source and what is wrong with it. It
//! must never connect anywhere itself (the demo it hands `rollcall demo` does, from
//! `demo.rs`); reading the password happens only when asked.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::{
    check_durations, DurationText, Entry, Problems, SecretError, DAY, HOUR, SECOND,
};
use crate::source::bounds::{check_max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES};
use crate::source::demo::{DemoError, Steps};
use crate::source::{read_cursor, Login, SourceError, SourceKind, StoredCursor};

/// One Apache Kylin 5 instance. Every poll reads every user: Kylin's list has no filter by
/// change. The account it needs: docs/kylin-setup.md.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KylinConfig {
    /// The source's name, unique among sources and sinks: every event's `source` is
    /// `kylin://<name>`, and `status`, metrics and the store know the source by it.
    pub name: String,
    /// Kylin's base URL including the context path, e.g. `http://127.0.0.1:7070/kylin`
    /// (docs/kylin.md K1): http or https, with no user or password in it.
    pub url: url::Url,
    /// The service account rollcall logs in as. It needs the `ROLE_ADMIN` group
    /// (docs/kylin.md K4).
    pub username: String,
    /// Name of the environment variable holding the account's password. Set exactly one of
    /// `password_env` and `password_file`.
    pub password_env: Option<String>,
    /// Or a file holding the password (a Kubernetes or Docker secret); trailing newlines are
    /// dropped.
    pub password_file: Option<PathBuf>,
    /// How often the source is polled (each poll reads every user), 1s to 1day.
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// Users per page of `GET /api/user`, at least 1 (Kylin sets no maximum, docs/kylin.md
    /// K12).
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
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
    /// The largest answer read from Kylin, 64 KiB to 4 GiB: a larger one fails the read,
    /// naming the URL and this key (unread, when its `Content-Length` says so).
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: u64,
    /// On the first run, emit one `user.observed` per existing user instead of storing them
    /// silently.
    #[serde(default)]
    pub emit_initial_snapshot: bool,
}

impl KylinConfig {
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
}

impl SourceKind for KylinConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn login(&self) -> Login<'_> {
        KylinConfig::login(self)
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    fn poll_deadline(&self) -> Duration {
        crate::source::poll_deadline(self.poll_deadline, self.request_timeout)
    }

    fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        self.login().check(entry, p);
        if self.page_size == 0 {
            p.at(
                entry.key("page_size"),
                "`page_size` must be at least 1 (Kylin answers an empty page to 0)".into(),
            );
        }
        check_durations(
            entry,
            p,
            &[
                ("poll_interval", self.poll_interval, SECOND..=DAY),
                ("request_timeout", self.request_timeout, SECOND..=HOUR),
                ("poll_deadline", self.poll_deadline(), SECOND..=DAY),
            ],
        );
        check_max_response_bytes(entry, p, self.max_response_bytes);
    }

    fn describe(&self) -> String {
        format!(
            "kylin at {} as '{}', poll every {} (every poll reads all users, {} per page), each cycle cancelled after {}",
            self.url,
            self.username,
            humantime::format_duration(self.poll_interval),
            self.page_size,
            humantime::format_duration(self.poll_deadline())
        )
    }

    /// The Kylin source keeps nothing between cycles but the users.
    fn uri(&self) -> String {
        format!("kylin://{}", self.name)
    }

    fn stored_users(
        &self,
        store: &crate::store::Store,
        each: &mut crate::source::StoredUser<'_>,
    ) -> Result<(), crate::store::StoreError> {
        crate::source::stored_users::<super::KylinUser>(store, &self.name, each)
    }

    fn status(&self, cursor: &StoredCursor) -> serde_json::Value {
        match read_cursor::<super::Cursor>(cursor) {
            Ok(c) => serde_json::json!({
                "unreadable_users": c.unreadable_users.iter()
                    .map(|(name, reason)| serde_json::json!({"username": name, "reason": reason}))
                    .collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({ "unreadable_cursor": e.to_string() }),
        }
    }

    fn check_secrets(&self) -> Result<(), SourceError> {
        self.password()
            .map(drop)
            .map_err(|e| SourceError::Kylin(super::KylinError::Secret(e)))
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
    pub fn page_size() -> u32 {
        1000
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_response_bytes() -> u64 {
        super::DEFAULT_MAX_RESPONSE_BYTES
    }
}
