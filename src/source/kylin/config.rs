//! The `[[sources]]` table of `kind = "kylin"`: its keys, defaults and checks.
//!
//! Owns what an operator may write for an Apache Kylin 5 source and what is wrong with it. It
//! must never connect anywhere; reading the password happens only when asked.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::{Entry, Problems, SecretError, SecretRef};
use crate::source::{SourceError, SourceKind};

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
    /// On the first run, emit one `user.observed` per existing user instead of storing the
    /// snapshot silently.
    #[serde(default)]
    pub emit_initial_snapshot: bool,
}

impl KylinConfig {
    /// Read the password from the environment or the file the config names.
    pub fn password(&self) -> Result<SecretString, SecretError> {
        SecretRef {
            env_key: "password_env",
            file_key: "password_file",
            env: self.password_env.as_deref(),
            file: self.password_file.as_deref(),
        }
        .read()
    }
}

impl SourceKind for KylinConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        if self.password_env.is_some() == self.password_file.is_some() {
            p.at(
                entry.span(),
                format!(
                    "source `{}`: set exactly one of `password_env` or `password_file`",
                    self.name
                ),
            );
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            p.at(
                entry.key("url"),
                format!("`url` must be http or https, not `{}`", self.url.scheme()),
            );
        }
        if self.page_size == 0 {
            p.at(
                entry.key("page_size"),
                "`page_size` must be at least 1 (Kylin answers an empty page to 0)".into(),
            );
        }
        for (key, d) in [
            ("poll_interval", self.poll_interval),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                p.at(entry.key(key), format!("`{key}` must be longer than 0s"));
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "kylin at {} as '{}', poll every {} (every poll reads all users, {} per page)",
            self.url,
            self.username,
            humantime::format_duration(self.poll_interval),
            self.page_size
        )
    }

    /// The Kylin source keeps nothing between cycles but the users.
    fn status(&self, _: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
        serde_json::json!({})
    }

    fn check_secrets(&self) -> Result<(), SourceError> {
        self.password()
            .map(drop)
            .map_err(|e| SourceError::Kylin(super::KylinError::Secret(e)))
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
}
