//! Configuration: the TOML file, its defaults, and every check made before anything starts.
//!
//! Owns parsing and validation. It must never open connections or files other than the config
//! (and the secret files it names, when asked to resolve them), and never log a secret.
//!
//! `[[sources]]` and `[[sinks]]` pick their shape by `kind`. serde's internally tagged enums
//! buffer the table first and lose the position of the offending key, so this module reads the
//! spanned document (`toml::de::DeTable`) and dispatches on `kind` itself: every error then names
//! the key and its line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::settings::{check_name, one_of, parse_kinds, Entry, Problems};
use crate::source::SourceConfig;

/// Where the service keeps its state, and which account it reads Superset with.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// Where `run` serves /healthz, /readyz, /metrics and /status.
    pub listen: std::net::SocketAddr,
    pub store: StoreConfig,
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the sled database. Created when missing.
    pub path: PathBuf,
    /// Keep events this long (e.g. "30d"); older ones are compacted away. Unset: forever.
    #[serde(default, with = "humantime_serde")]
    pub retain: Option<Duration>,
    /// Keep at most this many bytes of event JSON in the log; the oldest go first.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Compact even events a sink has not delivered yet. Off: retention waits for the slowest
    /// sink, so an outage never loses events.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    Jsonl(JsonlConfig),
    Webhook(WebhookConfig),
    Kafka(KafkaConfig),
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Jsonl(c) => &c.name,
            SinkConfig::Webhook(c) => &c.name,
            SinkConfig::Kafka(c) => &c.name,
        }
    }
}

/// Appends one JSON event per line: the format SIEM file shippers read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub name: String,
    /// File to append to; `-` is stdout.
    pub path: String,
    /// Events written (and fsynced) per batch.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
}

/// One HTTP endpoint receiving a signed POST per event (Standard Webhooks). Each endpoint is
/// its own sink, with its own cursor, retries and dead letters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: url::Url,
    /// Environment variable holding the signing secret `whsec_<base64>`; several secrets
    /// separated by spaces sign with each during a rotation.
    pub secret_env: Option<String>,
    /// Or a file holding them (a Kubernetes or Docker secret).
    pub secret_file: Option<PathBuf>,
    /// Event types to deliver; absent means all.
    pub event_types: Option<Vec<crate::event::EventType>>,
    /// Per attempt, from connecting to the end of the response.
    #[serde(default = "defaults::webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight at once (to different users: one user's events go one at a time).
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Wait before each attempt; the first is normally `0s`. After the last, the event is
    /// dead-lettered.
    #[serde(default = "defaults::retry_schedule", deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
}

/// Produces every event to one Kafka topic, keyed by user, in CloudEvents' Kafka binding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub name: String,
    /// librdkafka's `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    #[serde(default)]
    pub mode: KafkaMode,
    /// Create the topic (broker-default partitions and replication) when it is missing,
    /// instead of failing with an error that says so.
    #[serde(default)]
    pub create_topic: bool,
    /// Events read from the log and put in flight at once; the cursor moves once per batch.
    #[serde(default = "defaults::kafka_batch_size")]
    pub batch_size: usize,
    /// Passed to librdkafka as-is (`security.protocol`, `sasl.*`, `ssl.*`, `compression.type`…).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, toml::Value>,
    /// librdkafka options whose values come from environment variables, e.g.
    /// `"sasl.password" = "KAFKA_PASSWORD"`: secrets stay out of the file.
    #[serde(default)]
    pub options_env: std::collections::BTreeMap<String, String>,
}

/// CloudEvents Kafka protocol binding mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaMode {
    /// Attributes in `ce_*` headers, `data` as the message value.
    #[default]
    Binary,
    /// The whole event as the value, `content-type: application/cloudevents+json`.
    Structured,
}

/// librdkafka options rollcall sets itself: its delivery guarantees depend on them.
pub const KAFKA_RESERVED_OPTIONS: [&str; 4] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "allow.auto.create.topics",
];

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

mod defaults {
    use std::time::Duration;

    pub fn listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    pub fn batch_size() -> usize {
        500
    }
    pub fn kafka_batch_size() -> usize {
        10_000
    }
    pub fn webhook_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_in_flight() -> usize {
        16
    }
    /// The schedule Stripe and Svix made common: about a day and a half in all.
    pub fn retry_schedule() -> Vec<Duration> {
        [
            0,
            5,
            5 * 60,
            30 * 60,
            2 * 3600,
            5 * 3600,
            10 * 3600,
            10 * 3600,
        ]
        .map(Duration::from_secs)
        .to_vec()
    }
}

/// The top level, with the kind-dispatched arrays left to `parse_kinds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    #[serde(default = "defaults::listen")]
    listen: std::net::SocketAddr,
    store: StoreConfig,
    #[serde(default)]
    #[allow(dead_code)] // read again, kind by kind, in `parse_kinds`
    sources: Vec<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)] // read again, kind by kind, in `parse_kinds`
    sinks: Vec<IgnoredAny>,
}

/// Every problem found in a config file, each with its line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}. Pass another one with --config PATH (default: rollcall.toml)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] crate::settings::Invalid),
    #[error("sink '{sink}': {message}")]
    SinkSecret { sink: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&raw, path)
    }

    /// Parse and validate; on failure report every problem found, not just the first.
    pub fn parse(raw: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut problems = Problems::new(raw, path);
        let doc = match DeTable::parse(raw) {
            Ok(doc) => doc,
            Err(e) => {
                problems.toml(&e, "syntax error");
                return Err(problems.into_error().into());
            }
        };
        let whole = Spanned::new(doc.span(), DeValue::Table(doc.get_ref().clone()));
        let top: Option<TopLevel> = problems.de(&whole);
        let sources = parse_kinds(&doc, "sources", &mut problems, |kind, at, v, p| {
            if !SourceConfig::KINDS.contains(&kind) {
                p.at(
                    at,
                    format!(
                        "unknown source kind `{kind}`; expected {}",
                        one_of(SourceConfig::KINDS)
                    ),
                );
            }
            SourceConfig::parse(kind, v, p)
        });
        let sinks = parse_kinds(&doc, "sinks", &mut problems, |kind, at, v, p| match kind {
            "jsonl" => p.de(v).map(SinkConfig::Jsonl),
            "webhook" => p.de(v).map(SinkConfig::Webhook),
            "kafka" => p.de(v).map(SinkConfig::Kafka),
            other => {
                p.at(
                    at,
                    format!("unknown sink kind `{other}`; expected `jsonl`, `webhook` or `kafka`"),
                );
                None
            }
        });
        let config = top.map(|top| Config {
            path: path.to_owned(),
            listen: top.listen,
            store: top.store,
            sources,
            sinks,
        });
        if let Some(c) = &config {
            c.validate(&doc, &mut problems);
        }
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(problems.into_error().into()),
        }
    }

    fn validate(&self, doc: &Spanned<DeTable<'_>>, p: &mut Problems<'_>) {
        // Only when the array is absent or empty: entries that failed to parse are reported
        // already.
        let empty = |key: &str| match doc.get_ref().get(key).map(|v| v.get_ref()) {
            None => true,
            Some(DeValue::Array(items)) => items.is_empty(),
            Some(_) => false,
        };
        if empty("sources") {
            p.at(
                0..0,
                format!(
                    "no [[sources]]: add at least one, of kind {}",
                    one_of(SourceConfig::KINDS)
                ),
            );
        }
        if empty("sinks") {
            p.at(
                0..0,
                "no [[sinks]]: add at least one, e.g. `kind = \"jsonl\"` with `path = \"-\"` for stdout"
                    .into(),
            );
        }
        self.validate_store(doc, p);
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            check_name(
                p,
                &mut names,
                s.name(),
                Entry {
                    doc,
                    array: "sources",
                    index: i,
                }
                .key("name"),
            );
            s.kind().validate(
                Entry {
                    doc,
                    array: "sources",
                    index: i,
                },
                p,
            );
        }
        for (i, s) in self.sinks.iter().enumerate() {
            check_name(
                p,
                &mut names,
                s.name(),
                Entry {
                    doc,
                    array: "sinks",
                    index: i,
                }
                .key("name"),
            );
            match s {
                SinkConfig::Jsonl(c) => {
                    if c.batch_size == 0 {
                        p.at(
                            Entry {
                                doc,
                                array: "sinks",
                                index: i,
                            }
                            .key("batch_size"),
                            "`batch_size` must be at least 1".into(),
                        );
                    }
                }
                SinkConfig::Webhook(c) => c.validate(|key, message| {
                    p.at(
                        Entry {
                            doc,
                            array: "sinks",
                            index: i,
                        }
                        .key(key),
                        message,
                    )
                }),
                SinkConfig::Kafka(c) => c.validate(|key, message| {
                    p.at(
                        Entry {
                            doc,
                            array: "sinks",
                            index: i,
                        }
                        .key(key),
                        message,
                    )
                }),
            }
        }
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name() == name)
    }
}

impl KafkaConfig {
    fn validate(&self, mut problem: impl FnMut(&str, String)) {
        if self.brokers.trim().is_empty() {
            problem(
                "brokers",
                "`brokers` must name at least one `host:port`".into(),
            );
        }
        if self.topic.trim().is_empty() {
            problem("topic", "`topic` must not be empty".into());
        }
        if self.batch_size == 0 {
            problem("batch_size", "`batch_size` must be at least 1".into());
        }
        for (table, key) in self
            .options
            .keys()
            .map(|k| ("options", k))
            .chain(self.options_env.keys().map(|k| ("options_env", k)))
        {
            if KAFKA_RESERVED_OPTIONS.contains(&key.as_str()) {
                problem(
                    table,
                    format!(
                        "`{key}` in [sinks.{table}] is set by rollcall (ordered, idempotent delivery depends on it): use `brokers` or `create_topic` instead, or remove it"
                    ),
                );
            }
            if table == "options_env" && self.options.contains_key(key) {
                problem(
                    table,
                    format!("`{key}` is in both [sinks.options] and [sinks.options_env]: keep one"),
                );
            }
        }
        for (key, value) in &self.options {
            if matches!(
                value,
                toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)
            ) {
                problem(
                    "options",
                    format!("[sinks.options] `{key}` must be a string, number or boolean"),
                );
            }
        }
    }

    /// Every librdkafka option as a string, with the `options_env` secrets read from the
    /// environment. The values may be secrets: never log them.
    pub fn librdkafka_options(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out: Vec<(String, String)> = self
            .options
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        for (key, var) in &self.options_env {
            let value = std::env::var(var).map_err(|_| ConfigError::SinkSecret {
                sink: self.name.clone(),
                message: format!(
                    "environment variable {var} (named for `{key}` in [sinks.options_env]) is not set"
                ),
            })?;
            out.push((key.clone(), value));
        }
        Ok(out)
    }
}

impl WebhookConfig {
    fn validate(&self, mut problem: impl FnMut(&str, String)) {
        if self.secret_env.is_some() == self.secret_file.is_some() {
            problem(
                "name",
                format!(
                    "sink `{}`: set exactly one of `secret_env` or `secret_file`",
                    self.name
                ),
            );
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            problem(
                "url",
                format!("`url` must be http or https, not `{}`", self.url.scheme()),
            );
        }
        if self.timeout.is_zero() {
            problem("timeout", "`timeout` must be longer than 0s".into());
        }
        if self.max_in_flight == 0 {
            problem("max_in_flight", "`max_in_flight` must be at least 1".into());
        }
        if self.retry_schedule.is_empty() {
            problem(
                "retry_schedule",
                "`retry_schedule` needs at least one entry, e.g. [\"0s\"] for a single attempt"
                    .into(),
            );
        }
        if self.event_types.as_ref().is_some_and(|t| t.is_empty()) {
            problem(
                "event_types",
                "`event_types` is empty, so nothing would be sent: list some, or drop the key for all"
                    .into(),
            );
        }
    }

    /// The signing secrets, from the environment or the file the config names, as written
    /// (`whsec_<base64>`, space-separated). Errors name where to look, never the value.
    pub fn secrets(&self) -> Result<SecretString, ConfigError> {
        let err = |message: String| ConfigError::SinkSecret {
            sink: self.name.clone(),
            message,
        };
        if let Some(var) = &self.secret_env {
            return std::env::var(var).map(SecretString::from).map_err(|_| {
                err(format!(
                    "environment variable {var} (named by `secret_env`) is not set"
                ))
            });
        }
        if let Some(file) = &self.secret_file {
            return std::fs::read_to_string(file)
                .map(|s| SecretString::from(s.trim().to_owned()))
                .map_err(|e| err(format!("cannot read `secret_file` {}: {e}", file.display())));
        }
        Err(err("set `secret_env` or `secret_file`".into()))
    }
}

impl Config {
    fn validate_store(&self, doc: &Spanned<DeTable<'_>>, p: &mut Problems<'_>) {
        let span = |key: &str| match doc.get_ref().get("store").map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => t.get(key).map(|v| v.span()).unwrap_or(0..0),
            _ => 0..0,
        };
        let s = &self.store;
        if s.retain.is_some_and(|d| d.is_zero()) {
            p.at(
                span("retain"),
                "`retain` must be longer than 0s (e.g. \"30d\"); remove it to keep events forever"
                    .into(),
            );
        }
        if s.max_bytes == Some(0) {
            p.at(
                span("max_bytes"),
                "`max_bytes` must be at least 1; remove it for no size cap".into(),
            );
        }
        if s.force && s.retain.is_none() && s.max_bytes.is_none() {
            p.at(
                span("force"),
                "`force` only matters with `retain` or `max_bytes`; set one, or remove `force`"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"[store]
path = "./rollcall-data"

[[sources]]
kind = "superset"
name = "prod"                      # appears in every event's `source`
url = "http://127.0.0.1:8088"
username = "rollcall"
password_env = "SUPERSET_PASSWORD" # secrets come from env (or a file), never inline in logs
poll_interval = "30s"
full_reconcile_interval = "15m"

[[sinks]]
kind = "jsonl"
name = "siem"
path = "./events.jsonl"            # "-" means stdout
"#;

    fn parse(raw: &str) -> Result<Config, String> {
        Config::parse(raw, Path::new("rollcall.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let c = parse(EXAMPLE).unwrap();
        let SourceConfig::Superset(s) = &c.sources[0];
        assert_eq!(s.name, "prod");
        assert_eq!(s.poll_interval, Duration::from_secs(30));
        assert_eq!(s.full_reconcile_interval, Duration::from_secs(900));
        assert_eq!(s.timezone, chrono_tz::UTC);
        assert!(!s.emit_initial_snapshot);
        let SinkConfig::Jsonl(j) = &c.sinks[0] else {
            panic!("the example's sink is jsonl")
        };
        assert_eq!(j.path, "./events.jsonl");
    }

    #[test]
    fn example_file_in_the_repository_is_valid() {
        let raw = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rollcall.example.toml"
        ))
        .unwrap();
        parse(&raw).unwrap();
    }

    #[test]
    fn unknown_key_in_a_source_names_the_key_and_its_line() {
        let raw = EXAMPLE.replace("poll_interval = \"30s\"", "poll_intervall = \"30s\"");
        let err = parse(&raw).unwrap_err();
        assert!(err.contains("rollcall.toml:10:"), "{err}");
        assert!(err.contains("unknown field `poll_intervall`"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_line_holding_the_key() {
        let raw = EXAMPLE.replace("\"15m\"", "\"15 parsecs\"");
        let err = parse(&raw).unwrap_err();
        assert!(err.contains("rollcall.toml:11:"), "{err}");
        assert!(
            err.contains("full_reconcile_interval = \"15 parsecs\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_an_error() {
        let err = parse(&format!("colour = \"blue\"\n{EXAMPLE}")).unwrap_err();
        assert!(
            err.contains("rollcall.toml:1:") && err.contains("unknown field `colour`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_sink_kind_lists_the_known_ones() {
        let err =
            parse(&EXAMPLE.replace("kind = \"jsonl\"", "kind = \"carrier-pigeon\"")).unwrap_err();
        assert!(
            err.contains("rollcall.toml:14:") && err.contains("unknown sink kind `carrier-pigeon`"),
            "{err}"
        );
    }

    #[test]
    fn bad_timezone_is_reported() {
        let raw = EXAMPLE.replace(
            "poll_interval",
            "timezone = \"Mars/Olympus\"\npoll_interval",
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("rollcall.toml:10:") && err.contains("Mars/Olympus"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let raw = EXAMPLE
            .replace("name = \"siem\"", "name = \"prod\"")
            .replace("password_env = \"SUPERSET_PASSWORD\"", "");
        let err = parse(&raw).unwrap_err();
        assert!(err.contains("duplicate name `prod`"), "{err}");
        assert!(
            err.contains("set exactly one of `password_env` or `password_file`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_points_at_the_line() {
        let err = parse("[store\npath = 1").unwrap_err();
        assert!(err.contains("rollcall.toml:1:"), "{err}");
    }

    #[test]
    fn missing_sources_and_sinks_are_explained() {
        let err = parse("[store]\npath = \"x\"\n").unwrap_err();
        assert!(
            err.contains("no [[sources]]") && err.contains("no [[sinks]]"),
            "{err}"
        );
    }

    #[test]
    fn password_comes_from_the_named_file_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let raw = EXAMPLE.replace(
            "password_env = \"SUPERSET_PASSWORD\"",
            &format!("password_file = {:?}", file.display().to_string()),
        );
        let c = parse(&raw).unwrap();
        let SourceConfig::Superset(s) = &c.sources[0];
        use secrecy::ExposeSecret;
        assert_eq!(s.password().unwrap().expose_secret(), "s3cret");
    }

    const WEBHOOK: &str = r#"
[[sinks]]
kind = "webhook"
name = "provisioning"
url = "https://hooks.example.com/superset"
secret_env = "PROVISIONING_WEBHOOK_SECRET"
event_types = ["user.created", "user.deactivated", "user.deleted"]
timeout = "10s"
max_in_flight = 16
"#;

    #[test]
    fn webhook_sink_parses_with_the_common_retry_schedule_by_default() {
        let c = parse(&format!("{EXAMPLE}{WEBHOOK}")).unwrap();
        let SinkConfig::Webhook(w) = &c.sinks[1] else {
            panic!("second sink is a webhook")
        };
        assert_eq!(w.url.as_str(), "https://hooks.example.com/superset");
        assert_eq!(w.timeout, Duration::from_secs(10));
        assert_eq!(w.event_types.as_ref().unwrap().len(), 3);
        let hours: Vec<u64> = w.retry_schedule.iter().map(|d| d.as_secs()).collect();
        assert_eq!(hours, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
    }

    #[test]
    fn webhook_unknown_event_type_is_named_with_its_line() {
        let raw = format!(
            "{EXAMPLE}{}",
            WEBHOOK.replace("\"user.deleted\"", "\"user.exploded\"")
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("rollcall.toml:23:") && err.contains("unknown variant `user.exploded`"),
            "{err}"
        );
    }

    #[test]
    fn webhook_retry_schedule_entries_must_be_durations() {
        let raw = format!("{EXAMPLE}{}retry_schedule = [\"0s\", \"soon\"]\n", WEBHOOK);
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("soon") && err.contains("rollcall.toml:"),
            "{err}"
        );
        let empty = parse(&format!("{EXAMPLE}{WEBHOOK}retry_schedule = []\n")).unwrap_err();
        assert!(
            empty.contains("`retry_schedule` needs at least one entry"),
            "{empty}"
        );
    }

    #[test]
    fn webhook_needs_exactly_one_secret_source_and_a_positive_window() {
        let raw = format!(
            "{EXAMPLE}{}",
            WEBHOOK
                .replace("secret_env = \"PROVISIONING_WEBHOOK_SECRET\"", "")
                .replace("max_in_flight = 16", "max_in_flight = 0")
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("set exactly one of `secret_env` or `secret_file`"),
            "{err}"
        );
        assert!(err.contains("`max_in_flight` must be at least 1"), "{err}");
    }

    #[test]
    fn missing_webhook_secret_names_the_variable_and_the_sink() {
        let raw = format!(
            "{EXAMPLE}{}",
            WEBHOOK.replace("PROVISIONING_WEBHOOK_SECRET", "ROLLCALL_TEST_UNSET_SECRET")
        );
        let c = parse(&raw).unwrap();
        let SinkConfig::Webhook(w) = &c.sinks[1] else {
            panic!("second sink is a webhook")
        };
        let err = w.secrets().unwrap_err().to_string();
        assert!(
            err.contains("sink 'provisioning'") && err.contains("ROLLCALL_TEST_UNSET_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn missing_password_variable_is_named() {
        let raw = EXAMPLE.replace("SUPERSET_PASSWORD", "ROLLCALL_TEST_UNSET_VARIABLE");
        let c = parse(&raw).unwrap();
        let SourceConfig::Superset(s) = &c.sources[0];
        let err = s.password().unwrap_err().to_string();
        assert!(
            err.contains("ROLLCALL_TEST_UNSET_VARIABLE") && err.contains("not set"),
            "{err}"
        );
    }

    const KAFKA: &str = r#"
[[sinks]]
kind = "kafka"
name = "siem-kafka"
brokers = "127.0.0.1:9092"
topic = "superset.user-events"
mode = "structured"
[sinks.options]
"compression.type" = "lz4"
"linger.ms" = 20
[sinks.options_env]
"sasl.password" = "ROLLCALL_TEST_KAFKA_PASSWORD"
"#;

    fn kafka(raw: &str) -> KafkaConfig {
        let c = parse(raw).unwrap();
        let Some(SinkConfig::Kafka(k)) = c.sinks.last() else {
            panic!("last sink is kafka")
        };
        k.clone()
    }

    #[test]
    fn kafka_sink_parses_with_binary_mode_and_batches_by_default() {
        let k = kafka(&format!(
            "{EXAMPLE}{}",
            KAFKA.replace("mode = \"structured\"\n", "")
        ));
        assert_eq!(k.mode, KafkaMode::Binary);
        assert!(!k.create_topic);
        assert_eq!(k.batch_size, 10_000);
        assert_eq!(k.topic, "superset.user-events");
    }

    #[test]
    fn kafka_options_become_strings_and_secrets_come_from_env() {
        let k = kafka(&format!("{EXAMPLE}{KAFKA}"));
        assert_eq!(k.mode, KafkaMode::Structured);
        std::env::set_var("ROLLCALL_TEST_KAFKA_PASSWORD", "hunter2");
        let options = k.librdkafka_options().unwrap();
        assert_eq!(
            options,
            [
                ("compression.type".to_owned(), "lz4".to_owned()),
                ("linger.ms".to_owned(), "20".to_owned()),
                ("sasl.password".to_owned(), "hunter2".to_owned()),
            ]
        );
    }

    #[test]
    fn missing_kafka_option_variable_names_the_variable_and_the_key() {
        let raw = format!(
            "{EXAMPLE}{}",
            KAFKA.replace("ROLLCALL_TEST_KAFKA_PASSWORD", "ROLLCALL_TEST_UNSET_KAFKA")
        );
        let err = kafka(&raw).librdkafka_options().unwrap_err().to_string();
        assert!(
            err.contains("sink 'siem-kafka'")
                && err.contains("ROLLCALL_TEST_UNSET_KAFKA")
                && err.contains("sasl.password"),
            "{err}"
        );
    }

    #[test]
    fn kafka_options_rollcall_owns_are_rejected_with_their_line() {
        let raw = format!(
            "{EXAMPLE}{}",
            KAFKA.replace("\"linger.ms\" = 20", "acks = \"1\"")
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("`acks` in [sinks.options] is set by rollcall")
                && err.contains("rollcall.toml:24:"),
            "{err}"
        );
    }

    #[test]
    fn kafka_mode_must_be_binary_or_structured() {
        let raw = format!("{EXAMPLE}{}", KAFKA.replace("\"structured\"", "\"avro\""));
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("unknown variant `avro`") && err.contains("binary"),
            "{err}"
        );
    }
}
