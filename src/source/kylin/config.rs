//! The `[[sources]]` table of `kind = "kylin"`: its keys, defaults and checks.
//!
//! Owns what an operator may write for an Apache Kylin 5 source and what is wrong with it. It
//! must never connect anywhere itself (the demo it hands `rollcall demo` does, from
//! `demo.rs`); reading the password happens only when asked.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::{check_durations, Entry, Problems, SecretError, DAY, HOUR, SECOND};
use crate::source::bounds::{check_max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES};
use crate::source::demo::{DemoError, Steps};
use crate::source::{read_cursor, Login, SourceError, SourceKind, StoredCursor};

/// One Kylin instance. Every cycle reads every user: Kylin's list has no filter by change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KylinConfig {
    /// Appears in every event's `source` as `kylin://<name>`.
    pub name: String,
    /// Base URL including the context path, e.g. `http://127.0.0.1:7070/kylin`
    /// (docs/kylin.md K1).
    pub url: url::Url,
    /// The service account. It needs the `ROLE_ADMIN` group (docs/kylin.md K4).
    pub username: String,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// Or a file holding it; trailing newlines are dropped.
    pub password_file: Option<PathBuf>,
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Users per page of `GET /api/user` (docs/kylin.md K12: no maximum).
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long one cycle may run before it is cancelled and recorded as an error; what it
    /// committed stays. Unset: see [`crate::source::poll_deadline`].
    #[serde(default, with = "humantime_serde")]
    pub poll_deadline: Option<Duration>,
    /// The largest answer read from Kylin; a larger one fails the read.
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: u64,
    /// On the first run, emit one `user.observed` per existing user instead of storing the
    /// snapshot silently.
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
