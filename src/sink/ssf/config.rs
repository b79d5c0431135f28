//! The `[[sinks]]` table of `kind = "ssf"`, and its checks.
//!
//! Owns the keys of an SSF transmitter, their defaults, and where its signing key and
//! management token come from. It must never log or return the token or the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::SsfError;
use crate::settings::{
    check_durations, check_retries, DurationText, Entry, Problems, SecretRef, DAY, HOUR,
};

/// An OpenID Shared Signals transmitter: its own listener serves the metadata, the JWKS, the
/// stream management API and the poll endpoint; each stream a receiver creates is delivered
/// like a sink of its own (docs/ssf.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SsfConfig {
    /// The sink's name, unique among sources and sinks: each stream a receiver creates is
    /// delivered as `<name>/<stream id>` (its cursor, health, metrics and dead letters).
    pub name: String,
    /// Where the transmitter's listener binds: an IP address and a port (e.g. "0.0.0.0:9470"),
    /// not a host name. Not the top-level `listen` of the health and metrics endpoints.
    pub listen: SocketAddr,
    /// The public base URL receivers reach the listener at: the `iss` of every SET and the
    /// `issuer` of the metadata. https, except on a loopback address.
    pub issuer: url::Url,
    /// A PEM private key (PKCS#8, or PKCS#1 for RSA): RSA of at least 2048 bits for `RS256`,
    /// P-256 for `ES256`.
    pub signing_key_file: PathBuf,
    /// What SETs are signed with: "RS256" (what the CAEP interoperability profile asks for) or
    /// "ES256"; it must match `signing_key_file`.
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
    /// The `aud` of every stream and of its SETs: the receiver's name for itself (usually its
    /// base URL, as the receiver documents).
    pub audience: String,
    /// Name of the environment variable holding the bearer token of the management API and
    /// the poll endpoint. Set at most one of `management_token_env` and
    /// `management_token_file`; with neither, both are off and no stream can be made.
    pub management_token_env: Option<String>,
    /// Or a file holding it (a Kubernetes or Docker secret).
    pub management_token_file: Option<PathBuf>,
    /// URL prefixes a push stream's `endpoint_url` must start with. Unset: any https URL (http
    /// only to a loopback address).
    pub allowed_push_endpoints: Option<Vec<String>>,
    /// Streams receivers may create at most, 1 to 10000.
    #[serde(default = "defaults::max_streams")]
    pub max_streams: usize,
    /// The largest request body the listener reads, in bytes, 1024 to 16777216.
    #[serde(default = "defaults::max_request_bytes")]
    pub max_request_bytes: usize,
    /// How long a poll without `returnImmediately` waits for a SET; also how long a SET
    /// handed out by a poll waits for its acknowledgement before a poll gets it again; 1ms to
    /// 5m.
    #[serde(default = "defaults::poll_wait", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub poll_wait: Duration,
    /// Verification requests of one stream closer together than this are answered 429; at
    /// most 1day.
    #[serde(
        default = "defaults::min_verification_interval",
        with = "humantime_serde"
    )]
    #[schemars(with = "DurationText")]
    pub min_verification_interval: Duration,
    /// How long one push attempt may take, from connecting to the end of the answer; 1ms to
    /// 1h.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// SETs of one push stream in flight at once, at least 1, each for a different user: one
    /// user's SETs go one at a time, in order.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// The wait before each push attempt (each at most 30days); the first is normally "0s".
    /// When the last attempt fails too, the SET is dead-lettered (`rollcall dlq`). The default
    /// adds up to about 27.6 hours.
    #[serde(
        default = "crate::settings::common_retry_schedule",
        with = "crate::settings::durations"
    )]
    #[schemars(with = "Vec<DurationText>")]
    pub retry_schedule: Vec<Duration>,
    /// The metadata's `default_subjects`: "ALL" (every user is in a new stream; receivers
    /// remove the ones they do not want) or "NONE" (receivers add the ones they want).
    #[serde(default)]
    pub default_subjects: DefaultSubjects,
    /// Per source name, the `iss` of its users' `iss_sub` identifiers (its base URL, e.g.
    /// "https://superset.example.com/"), as a `[sinks.subject_issuers]` table; a source not
    /// listed uses its CloudEvents `source` without the shard ("superset://<name>").
    #[serde(default)]
    pub subject_issuers: BTreeMap<String, String>,
    /// Always empty: receivers choose each stream's events (the registry refuses the keys).
    #[serde(skip)]
    pub subscription: crate::sink::Subscription,
}

/// What SETs are signed with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum SigningAlgorithm {
    #[default]
    RS256,
    ES256,
}

/// Whether a new stream starts with every user or with none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum DefaultSubjects {
    #[default]
    #[serde(rename = "ALL")]
    All,
    #[serde(rename = "NONE")]
    None,
}

mod defaults {
    use std::time::Duration;

    pub fn max_streams() -> usize {
        16
    }
    pub fn max_request_bytes() -> usize {
        64 * 1024
    }
    pub fn poll_wait() -> Duration {
        Duration::from_secs(30)
    }
    pub fn min_verification_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_in_flight() -> usize {
        16
    }
}

/// Whether `url` may be reached without TLS: only a loopback address.
pub(super) fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Why `url` may not be an https endpoint of the transmitter or a receiver; `None` if it may.
pub(super) fn endpoint_problem(what: &str, url: &url::Url) -> Option<String> {
    if url.scheme() == "http" && !loopback(url) {
        return Some(format!(
            "{what} must be https (http only on a loopback address)"
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!("{what} must be an https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some(format!("{what} must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Some(format!("{what} must not have a fragment"));
    }
    None
}

impl SsfConfig {
    pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        let mut problem = |key: &str, message: String| p.at(entry.key(key), message);
        let sink = &self.name;
        if let Some(why) = endpoint_problem("`issuer`", &self.issuer) {
            problem("issuer", format!("sink `{sink}`: {why}"));
        }
        if self.issuer.query().is_some() {
            problem(
                "issuer",
                format!("sink `{sink}`: `issuer` must not have a query"),
            );
        }
        if self.management_token_env.is_some() && self.management_token_file.is_some() {
            problem(
                "management_token_env",
                format!("sink `{sink}`: set at most one of `management_token_env` or `management_token_file`"),
            );
        }
        for prefix in self.allowed_push_endpoints.iter().flatten() {
            match url::Url::parse(prefix) {
                Ok(url) => {
                    if let Some(why) = endpoint_problem("each `allowed_push_endpoints` entry", &url)
                    {
                        problem("allowed_push_endpoints", why);
                    }
                }
                Err(e) => problem(
                    "allowed_push_endpoints",
                    format!("`allowed_push_endpoints` entry `{prefix}` is not a URL: {e}"),
                ),
            }
        }
        if self.audience.trim().is_empty() {
            problem("audience", "`audience` must not be empty".into());
        }
        if !(1..=10_000).contains(&self.max_streams) {
            problem(
                "max_streams",
                "`max_streams` must be between 1 and 10000".into(),
            );
        }
        if !(1024..=16 << 20).contains(&self.max_request_bytes) {
            problem(
                "max_request_bytes",
                "`max_request_bytes` must be between 1024 and 16777216".into(),
            );
        }
        check_retries(entry, p, &self.retry_schedule, self.max_in_flight);
        let millisecond = Duration::from_millis(1);
        check_durations(
            entry,
            p,
            &[
                ("timeout", self.timeout, millisecond..=HOUR),
                (
                    "poll_wait",
                    self.poll_wait,
                    millisecond..=Duration::from_secs(300),
                ),
                (
                    "min_verification_interval",
                    self.min_verification_interval,
                    Duration::ZERO..=DAY,
                ),
            ],
        );
    }

    /// Where it listens and what it signs with; never the token or the key.
    pub fn describe(&self) -> String {
        format!(
            "SSF transmitter {} listening on {}, {:?}, management API {}",
            self.issuer,
            self.listen,
            self.algorithm,
            if self.has_token() { "on" } else { "off" }
        )
    }

    pub(super) fn has_token(&self) -> bool {
        self.management_token_env.is_some() || self.management_token_file.is_some()
    }

    /// The management token, or `None` when none is configured (the API is off). Errors name
    /// where to look, never the value.
    pub(super) fn token(&self) -> Result<Option<SecretString>, SsfError> {
        if !self.has_token() {
            return Ok(None);
        }
        SecretRef {
            env_key: "management_token_env",
            file_key: "management_token_file",
            env: self.management_token_env.as_deref(),
            file: self.management_token_file.as_deref(),
        }
        .read()
        .map(Some)
        .map_err(|source| SsfError::Token {
            sink: self.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, EXAMPLE};
    use crate::sink::SinkConfig;

    pub(crate) const SSF: &str = r#"
[[sinks]]
kind = "ssf"
name = "signals"
listen = "127.0.0.1:9470"
issuer = "https://rollcall.example.com"
signing_key_file = "/etc/rollcall/ssf.pem"
audience = "https://receiver.example.net/ssf"
management_token_env = "SSF_TOKEN"
"#;

    #[test]
    fn ssf_sink_parses_with_its_documented_defaults() {
        let c = parse(&format!("{EXAMPLE}{SSF}")).unwrap();
        let SinkConfig::Ssf(s) = &c.sinks[1] else {
            panic!("second sink is ssf")
        };
        assert_eq!(s.algorithm, super::SigningAlgorithm::RS256);
        assert_eq!(s.max_streams, 16);
        assert_eq!(s.poll_wait.as_secs(), 30);
        assert_eq!(s.retry_schedule.len(), 8);
        assert_eq!(s.default_subjects, super::DefaultSubjects::All);
        assert!(s.describe().contains("management API on"));
    }

    #[test]
    fn ssf_issuer_must_be_https_except_on_loopback_and_unknown_keys_are_refused() {
        let plain = SSF.replace(
            "https://rollcall.example.com",
            "http://rollcall.example.com",
        );
        let err = parse(&format!("{EXAMPLE}{plain}")).unwrap_err();
        assert!(err.contains("`issuer` must be https"), "{err}");
        let local = SSF.replace("https://rollcall.example.com", "http://127.0.0.1:9470");
        assert!(parse(&format!("{EXAMPLE}{local}")).is_ok());
        let typo = format!("{EXAMPLE}{SSF}max_stream = 3\n");
        let err = parse(&typo).unwrap_err();
        assert!(err.contains("unknown field `max_stream`"), "{err}");
        let both = format!("{EXAMPLE}{SSF}management_token_file = \"/t\"\n");
        let err = parse(&both).unwrap_err();
        assert!(err.contains("at most one of"), "{err}");
    }
}
