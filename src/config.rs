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
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use secrecy::SecretString;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// Where the service keeps its state, and which account it reads Superset with.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub store: StoreConfig,
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the sled database. Created when missing.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Superset(SupersetConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Superset(c) => &c.name,
        }
    }
}

/// One Superset instance. Defaults are chosen for a production poll: every 30 s, a full
/// reconcile (the only way to see deletions) every 15 min.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupersetConfig {
    /// Appears in every event's `source` as `superset://<name>`.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:8088` (no `/api/v1`).
    pub url: url::Url,
    /// The service account. It needs the Admin role: Superset answers 403 to anyone else.
    pub username: String,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// Or a file holding it (a Kubernetes or Docker secret); trailing newlines are dropped.
    pub password_file: Option<PathBuf>,
    #[serde(default = "defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(
        default = "defaults::full_reconcile_interval",
        with = "humantime_serde"
    )]
    pub full_reconcile_interval: Duration,
    /// Superset writes user times in its server's local time without an offset; this names
    /// that zone (IANA name) so they can be converted to UTC.
    #[serde(default = "defaults::timezone")]
    pub timezone: Tz,
    /// Incremental polls re-read this much before the stored high-water marks, because
    /// concurrent writes can commit a `changed_on` earlier than one already seen.
    #[serde(default = "defaults::overlap", with = "humantime_serde")]
    pub incremental_overlap: Duration,
    /// On the first run, emit one `user.observed` per existing user instead of storing the
    /// snapshot silently.
    #[serde(default)]
    pub emit_initial_snapshot: bool,
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts per request on connection errors, timeouts and 5xx, with exponential backoff.
    #[serde(default = "defaults::retries")]
    pub max_retries: usize,
    /// Also stream Superset's action log (`/api/v1/log/`) as `audit.action` events.
    #[serde(default = "defaults::action_log")]
    pub action_log: bool,
    /// On the first start, how much of the action log to read back (`0` for none).
    #[serde(default = "defaults::log_backfill", with = "humantime_serde")]
    pub log_backfill: Duration,
    /// Action globs to emit, e.g. `["mcp.*", "*Export*"]`.
    #[serde(default = "defaults::log_include")]
    pub log_include: Vec<String>,
    /// Action globs to drop, applied after `log_include`.
    #[serde(default)]
    pub log_exclude: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    Jsonl(JsonlConfig),
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Jsonl(c) => &c.name,
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
    pub fn action_log() -> bool {
        true
    }
    pub fn log_backfill() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn log_include() -> Vec<String> {
        vec!["*".into()]
    }
    pub fn batch_size() -> usize {
        500
    }
}

/// The top level, with the kind-dispatched arrays left to `parse_kinds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
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
    #[error("cannot read config file {path}: {source}. Pass another one with --config PATH (default: rollcall.toml)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", problems.join("\n"))]
    Invalid { problems: Vec<String> },
    #[error("source '{source_name}': {message}")]
    Secret {
        source_name: String,
        message: String,
    },
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
        let mut problems = Problems {
            raw,
            path,
            list: Vec::new(),
        };
        let doc = match DeTable::parse(raw) {
            Ok(doc) => doc,
            Err(e) => {
                problems.toml(&e, "syntax error");
                return Err(problems.into_error());
            }
        };
        let whole = Spanned::new(doc.span(), DeValue::Table(doc.get_ref().clone()));
        let top: Option<TopLevel> = problems.de(whole, doc.span());
        let sources = parse_kinds(
            &doc,
            "sources",
            &mut problems,
            |kind, at, v, p| match kind {
                "superset" => p.de(v.clone(), v.span()).map(SourceConfig::Superset),
                other => {
                    p.at(
                        at,
                        format!("unknown source kind `{other}`; expected `superset`"),
                    );
                    None
                }
            },
        );
        let sinks = parse_kinds(&doc, "sinks", &mut problems, |kind, at, v, p| match kind {
            "jsonl" => p.de(v.clone(), v.span()).map(SinkConfig::Jsonl),
            other => {
                p.at(at, format!("unknown sink kind `{other}`; expected `jsonl`"));
                None
            }
        });
        let config = top.map(|top| Config {
            path: path.to_owned(),
            store: top.store,
            sources,
            sinks,
        });
        if let Some(c) = &config {
            c.validate(&doc, &mut problems);
        }
        match config {
            Some(c) if problems.list.is_empty() => Ok(c),
            _ => Err(problems.into_error()),
        }
    }

    fn validate(&self, doc: &Spanned<DeTable<'_>>, p: &mut Problems<'_>) {
        // Only when the array is absent: entries that failed to parse are reported already.
        if doc.get_ref().get("sources").is_none() {
            p.at(
                0..0,
                "no [[sources]]: add at least one `kind = \"superset\"` source".into(),
            );
        }
        if doc.get_ref().get("sinks").is_none() {
            p.at(
                0..0,
                "no [[sinks]]: add at least one, e.g. `kind = \"jsonl\"` with `path = \"-\"` for stdout"
                    .into(),
            );
        }
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let span = item_key_span(doc, "sources", i, "name");
            if !names.insert(s.name().to_owned()) {
                p.at(
                    span.clone(),
                    format!(
                        "duplicate name `{}`: every source and sink needs its own",
                        s.name()
                    ),
                );
            }
            if !valid_name(s.name()) {
                p.at(
                    span,
                    format!(
                        "name `{}` may only hold letters, digits, `-`, `_` and `.`",
                        s.name()
                    ),
                );
            }
            let SourceConfig::Superset(c) = s;
            if c.password_env.is_some() == c.password_file.is_some() {
                p.at(
                    item_span(doc, "sources", i),
                    format!(
                        "source `{}`: set exactly one of `password_env` or `password_file`",
                        c.name
                    ),
                );
            }
            if !matches!(c.url.scheme(), "http" | "https") {
                p.at(
                    item_key_span(doc, "sources", i, "url"),
                    format!("`url` must be http or https, not `{}`", c.url.scheme()),
                );
            }
            for (key, globs) in [
                ("log_include", &c.log_include),
                ("log_exclude", &c.log_exclude),
            ] {
                if let Err(e) = crate::audit::ActionFilter::new(globs, &[]) {
                    p.at(
                        item_key_span(doc, "sources", i, key),
                        format!("`{key}`: {e}"),
                    );
                }
            }
            for (key, d) in [
                ("poll_interval", c.poll_interval),
                ("full_reconcile_interval", c.full_reconcile_interval),
                ("request_timeout", c.request_timeout),
            ] {
                if d.is_zero() {
                    p.at(
                        item_key_span(doc, "sources", i, key),
                        format!("`{key}` must be longer than 0s"),
                    );
                }
            }
        }
        for (i, s) in self.sinks.iter().enumerate() {
            let span = item_key_span(doc, "sinks", i, "name");
            if !names.insert(s.name().to_owned()) {
                p.at(
                    span.clone(),
                    format!(
                        "duplicate name `{}`: every source and sink needs its own",
                        s.name()
                    ),
                );
            }
            if !valid_name(s.name()) {
                p.at(
                    span,
                    format!(
                        "name `{}` may only hold letters, digits, `-`, `_` and `.`",
                        s.name()
                    ),
                );
            }
            let SinkConfig::Jsonl(c) = s;
            if c.batch_size == 0 {
                p.at(
                    item_key_span(doc, "sinks", i, "batch_size"),
                    "`batch_size` must be at least 1".into(),
                );
            }
        }
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name() == name)
    }
}

impl SupersetConfig {
    /// Read the password from the environment or the file the config names.
    pub fn password(&self) -> Result<SecretString, ConfigError> {
        let err = |message: String| ConfigError::Secret {
            source_name: self.name.clone(),
            message,
        };
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(SecretString::from).map_err(|_| {
                err(format!(
                    "environment variable {var} (named by `password_env`) is not set"
                ))
            });
        }
        if let Some(file) = &self.password_file {
            return std::fs::read_to_string(file)
                .map(|s| SecretString::from(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    err(format!(
                        "cannot read `password_file` {}: {e}",
                        file.display()
                    ))
                });
        }
        Err(err("set `password_env` or `password_file`".into()))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Collects problems with the line they are on.
struct Problems<'a> {
    raw: &'a str,
    path: &'a Path,
    list: Vec<String>,
}

impl Problems<'_> {
    fn at(&mut self, span: Range<usize>, message: String) {
        if span == (0..0) {
            self.list
                .push(format!("{}: {message}", self.path.display()));
            return;
        }
        let start = span.start.min(self.raw.len());
        let line_no = self.raw[..start].matches('\n').count() + 1;
        let line = self.raw.lines().nth(line_no - 1).unwrap_or("").trim();
        self.list.push(format!(
            "{}:{line_no}: {message}\n    | {line}",
            self.path.display()
        ));
    }

    fn toml(&mut self, e: &toml::de::Error, fallback: &str) {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_owned();
        self.at(
            span,
            if msg.is_empty() {
                fallback.to_owned()
            } else {
                msg
            },
        );
    }

    /// Deserialize `T`, recording the error (with the best span known) instead of failing.
    fn de<T: DeserializeOwned>(
        &mut self,
        v: Spanned<DeValue<'_>>,
        whole: Range<usize>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(v)) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = e.span().unwrap_or(whole);
                let msg = e.message().trim().to_owned();
                self.at(span, msg);
                None
            }
        }
    }

    fn into_error(self) -> ConfigError {
        ConfigError::Invalid {
            problems: self.list,
        }
    }
}

/// Deserialize each table of `[[key]]` with the parser its `kind` selects.
fn parse_kinds<T>(
    doc: &Spanned<DeTable<'_>>,
    key: &str,
    p: &mut Problems<'_>,
    mut parse: impl FnMut(&str, Range<usize>, &Spanned<DeValue<'_>>, &mut Problems<'_>) -> Option<T>,
) -> Vec<T> {
    let Some(array) = doc.get_ref().get(key) else {
        return Vec::new();
    };
    let DeValue::Array(items) = array.get_ref() else {
        p.at(
            array.span(),
            format!("`{key}` must be an array of tables: write [[{key}]]"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let DeValue::Table(table) = item.get_ref() else {
            p.at(
                item.span(),
                format!("each entry of `{key}` must be a table"),
            );
            continue;
        };
        let Some(kind) = table.get("kind") else {
            p.at(item.span(), format!("[[{key}]] entry has no `kind`"));
            continue;
        };
        let DeValue::String(kind_str) = kind.get_ref() else {
            p.at(kind.span(), "`kind` must be a string".into());
            continue;
        };
        let kind_str = kind_str.to_string();
        // `kind` has done its job; the kind's own struct denies unknown keys, so drop it.
        let mut rest = table.clone();
        rest.remove("kind");
        let value = Spanned::new(item.span(), DeValue::Table(rest));
        if let Some(t) = parse(&kind_str, kind.span(), &value, p) {
            out.push(t);
        }
    }
    out
}

fn item_span(doc: &Spanned<DeTable<'_>>, key: &str, index: usize) -> Range<usize> {
    match doc.get_ref().get(key).map(|v| v.get_ref()) {
        Some(DeValue::Array(items)) => items.get(index).map(|i| i.span()).unwrap_or(0..0),
        _ => 0..0,
    }
}

fn item_key_span(doc: &Spanned<DeTable<'_>>, key: &str, index: usize, field: &str) -> Range<usize> {
    if let Some(DeValue::Array(items)) = doc.get_ref().get(key).map(|v| v.get_ref()) {
        if let Some(DeValue::Table(t)) = items.get(index).map(|i| i.get_ref()) {
            if let Some(v) = t.get(field) {
                return v.span();
            }
        }
    }
    item_span(doc, key, index)
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
        let SinkConfig::Jsonl(j) = &c.sinks[0];
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
}
