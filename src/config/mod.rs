//! Configuration: the TOML file, the files its `include` names, their defaults, and every
//! check made before anything starts.
//!
//! Owns parsing and validation. It must never open connections or files other than the config
//! files (the main one and those `include` names) and the secret files they name, when asked to
//! resolve them; and never log a secret.
//!
//! `[[sources]]` and `[[sinks]]` pick their shape by `kind`, read from the spanned document
//! (`toml::de::DeTable`, see `settings`) so that every error names the file, the key and its
//! line. Each sink kind's table and checks live with the kind (`src/sink/<kind>/config.rs`);
//! this module hands `[[sinks]]` to the sink registry ([`SinkConfig`]) and never names a sink
//! kind. A source table reads the same in any file (`sources.rs`); `include.rs` finds the
//! included files and allows them nothing but `[[sources]]`; `changes.rs` tells what a config
//! read again changes, for `rollcall run`'s reload on SIGHUP.
//!
//! The doc comments of every config table's keys are what operators read: `reference.rs`
//! renders them, with each key's type and default, as `rollcall config reference` (and the
//! reference in docs/configuration.md), so each says what the key does in an operator's words.

mod changes;
mod include;
mod reference;
mod sources;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::settings::{
    check_name, one_of, out_of_range, parse_kinds, table_schema, DurationText, Entry, Problems, DAY,
};
pub use crate::sink::SinkConfig;
use crate::source::SourceConfig;
pub use changes::SourceChanges;
pub use include::FileText;
pub use sources::Origin;

/// The config file as read and checked: the top-level keys (each explained on `TopLevel`)
/// with their defaults filled in, and every source and sink by kind.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub listen: std::net::SocketAddr,
    /// The process's shard, named in every event's `source` (docs/scaling.md).
    pub shard: Option<String>,
    pub store: StoreConfig,
    /// `max_concurrent_polls`, or its default for this machine.
    pub max_concurrent_polls: usize,
    /// Every source: the main file's, then each included file's, in the order read.
    pub sources: Vec<SourceConfig>,
    pub sinks: Vec<SinkConfig>,
    /// Where each source's table is and what it says, by the source's name.
    origins: HashMap<String, Origin>,
    /// The main file's keys but `include` and `[[sources]]`, as written: what a reload leaves
    /// as it was, until a restart.
    rest: toml::Table,
    /// Every file read: the main file first, then the included ones in the order read.
    files: Vec<FileText>,
}

/// The config a running process acts on, as a reload changes its sources: what the HTTP
/// endpoints and the admin socket read at each request.
pub type LiveConfig = tokio::sync::watch::Receiver<std::sync::Arc<Config>>;

/// Where rollcall keeps its state (the users as last seen, the event log, each sink's cursor,
/// in a sled database) and how much of the event log it keeps (docs/operations.md, Retention).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the store, created when missing.
    pub path: PathBuf,
    /// Keep events this long (e.g. "30d"), at most a century; older ones are compacted away,
    /// but not before every sink has delivered them unless `force` is set. Unset: forever.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<DurationText>")]
    pub retain: Option<Duration>,
    /// Keep at most this many bytes of event JSON in the log (at least 1); the oldest go
    /// first, under the same rule as `retain`. Unset: no size cap.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Compact even events a sink has not delivered yet: that sink loses them, and says how
    /// many. Off: retention waits for the slowest sink, so an outage never loses events.
    /// Needs `retain` or `max_bytes`.
    #[serde(default)]
    pub force: bool,
    /// An Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`) that signs
    /// checkpoints of the hash chain (docs/integrity.md). Unset: the chain is kept, unsigned.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// A signed checkpoint after this many events since the last one.
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// A signed checkpoint once this long has passed since the last one, if events came since.
    #[serde(default = "defaults::checkpoint_interval", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub checkpoint_interval: Duration,
}

impl StoreConfig {
    /// How checkpoints are signed, with the key read from `signing_key_file`; `None` without one.
    pub fn checkpoints(
        &self,
    ) -> Result<Option<crate::store::Checkpoints>, crate::chain::checkpoint::KeyError> {
        let Some(path) = &self.signing_key_file else {
            return Ok(None);
        };
        Ok(Some(crate::store::Checkpoints {
            signer: crate::chain::checkpoint::Signer::load(path)?,
            every: self.checkpoint_every,
            interval: self.checkpoint_interval,
            shard: None,
        }))
    }
}

mod defaults {
    /// Often enough that a cut tail loses a bounded number of signed events, rarely enough
    /// that signatures are a thousandth of the log.
    pub fn checkpoint_every() -> u64 {
        1000
    }

    /// As often as CloudTrail signs its digests: hourly.
    pub fn checkpoint_interval() -> std::time::Duration {
        std::time::Duration::from_secs(3600)
    }

    pub fn listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
    }

    /// Four polls per core: a poll mostly waits for its upstream's answers, and its own work
    /// (comparing and committing) is a fraction of its time (docs/scaling.md).
    pub fn max_concurrent_polls() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * super::POLLS_PER_CORE).min(super::MAX_CONCURRENT_POLLS)
    }
}

/// `rollcall config reference`: every key of the file with its type, default and meaning, as
/// Markdown (`reference.rs` renders it).
pub fn reference() -> String {
    reference::render(&table_schema::<TopLevel>())
}

/// Polls at once per core when `max_concurrent_polls` is not set.
pub const POLLS_PER_CORE: usize = 4;
/// More polls at once than any config needs: each running full reconcile holds its pages and
/// a chunk of changed records in memory (docs/performance.md, Memory).
pub const MAX_CONCURRENT_POLLS: usize = 1024;

/// `listen` names an IP address and a port: a host name would need a resolver at start, and
/// the default error ("invalid socket address syntax") does not say what is wanted.
fn socket_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::net::SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`listen` wants an IP address and a port, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\", not \"{text}\""
        ))
    })
}

/// The keys outside any table, and `[store]`; `[[sources]]` and `[[sinks]]` follow, each by its
/// kind.
// `[[sources]]` and `[[sinks]]` are read again, kind by kind, by `parse_kinds`, so the reference
// shows each kind's table on its own instead of these two arrays.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    /// Where `rollcall run` serves `/healthz`, `/readyz`, `/metrics` and `/status`: an IP
    /// address and a port (e.g. "127.0.0.1:9464" or "[::1]:9464"), not a host name.
    #[serde(default = "defaults::listen", deserialize_with = "socket_address")]
    listen: std::net::SocketAddr,
    /// The name of this process's shard, when sources are shared out among several rollcall
    /// processes that publish into one Kafka cluster (docs/scaling.md, Sharding): lowercase
    /// letters, digits and `-`, at most 63, starting and ending with a letter or digit (e.g.
    /// "eu-1"). Every event's `source` names it as a query (`superset://prod?shard=eu-1`);
    /// `status` and the metric `rollcall_shard_info` show it. Unset: `source` is
    /// `superset://prod`, as without shards.
    shard: Option<String>,
    store: StoreConfig,
    /// How many sources are polled at once, 1 to 1024. Each source keeps its own schedule and
    /// waits for a turn only when this many polls run, so one that hangs delays no other
    /// (docs/scaling.md). Unset: four per core.
    max_concurrent_polls: Option<usize>,
    /// More files of `[[sources]]` tables, by glob relative to this file's directory (e.g.
    /// `["sources.d/*.toml"]`): a fleet's sources, a file each. `*`, `?`, `[abc]` and `{a,b}`
    /// match within one path component (there is no `**`); a name starting with `.` is matched
    /// only by a pattern that starts with `.`. Each file holds `[[sources]]` tables and nothing
    /// else; they are read in name order, and a source's name is unique across every file. A
    /// pattern without a wildcard must name a file. `rollcall run` reads them all again on
    /// SIGHUP (docs/scaling.md, Fleets).
    #[serde(default)]
    #[allow(dead_code)]
    // read from the spanned document, with each pattern's line, by `include`
    include: Vec<String>,
    #[serde(default)]
    #[schemars(skip)]
    #[allow(dead_code)] // read again, kind by kind, in `parse_kinds`
    sources: Vec<IgnoredAny>,
    #[serde(default)]
    #[schemars(skip)]
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
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&raw, path)
    }

    /// Parse and validate `raw`, the text of the main file at `path`, reading the files its
    /// `include` names (relative to `path`'s directory); on failure report every problem found
    /// in any of them, not just the first, each naming its file and line.
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
        let mut seen = sources::Seen::default();
        let mut located = sources::read(&doc, &mut problems, &mut seen);
        let sinks = parse_kinds(&doc, "sinks", &mut problems, SinkConfig::parse);
        for (index, s) in sinks.iter().enumerate() {
            let entry = Entry {
                doc: &doc,
                array: "sinks",
                index,
            };
            check_name(&mut problems, &mut seen.names, s.name(), entry.key("name"));
            s.validate(entry, &mut problems);
        }
        let included = include::files(path, &include::patterns(&doc), &mut problems);
        let mut entries = sources::entries(&doc);
        let mut elsewhere = Vec::new();
        for file in &included {
            let (more, found, said) = include::read(file, path, &mut seen);
            located.extend(more);
            entries += found;
            elsewhere.extend(said);
        }
        if entries == 0 {
            problems.at(
                0..0,
                format!(
                    "no [[sources]]: add at least one, of kind {}, here or in a file `include` names",
                    one_of(SourceConfig::KINDS)
                ),
            );
        }
        let config = top.map(|top| {
            let mut rest = toml::Table::deserialize(ValueDeserializer::from(whole.clone()))
                .unwrap_or_default();
            rest.remove("include");
            rest.remove("sources");
            let files = std::iter::once(FileText {
                path: path.to_owned(),
                text: raw.to_owned(),
            })
            .chain(included)
            .collect();
            Config {
                path: path.to_owned(),
                listen: top.listen,
                shard: top.shard,
                store: top.store,
                max_concurrent_polls: top
                    .max_concurrent_polls
                    .unwrap_or_else(defaults::max_concurrent_polls),
                origins: located
                    .iter()
                    .map(|s| (s.config.name().to_owned(), s.origin.clone()))
                    .collect(),
                sources: located.into_iter().map(|s| s.config).collect(),
                sinks,
                rest,
                files,
            }
        });
        if let Some(c) = &config {
            c.validate(&doc, &mut problems);
        }
        let mut list = problems.into_list();
        list.extend(elsewhere);
        match config {
            Some(c) if list.is_empty() => Ok(c),
            _ => Err(crate::settings::Invalid { problems: list }.into()),
        }
    }

    fn validate(&self, doc: &Spanned<DeTable<'_>>, p: &mut Problems<'_>) {
        // Only when the array is absent or empty: entries that failed to parse are reported
        // already.
        let no_sinks = match doc.get_ref().get("sinks").map(|v| v.get_ref()) {
            None => true,
            Some(DeValue::Array(items)) => items.is_empty(),
            Some(_) => false,
        };
        if no_sinks {
            p.at(
                0..0,
                "no [[sinks]]: add at least one, e.g. `kind = \"jsonl\"` with `path = \"-\"` for stdout"
                    .into(),
            );
        }
        self.validate_store(doc, p);
        if let Some(shard) = self.shard.as_deref().filter(|s| !valid_shard(s)) {
            let at = doc.get_ref().get("shard").map_or(0..0, |v| v.span());
            p.at(
                at,
                format!(
                    "`shard` must be lowercase letters, digits and `-`, at most {MAX_SHARD} characters, starting and ending with a letter or digit (like a DNS label, e.g. \"eu-1\"), not \"{}\": every event's `source` names it",
                    crate::text::one_line(shard)
                ),
            );
        }
        let known: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        for (index, s) in self.sinks.iter().enumerate() {
            let entry = Entry {
                doc,
                array: "sinks",
                index,
            };
            s.subscription().validate(entry, p, &known);
        }
        if !(1..=MAX_CONCURRENT_POLLS).contains(&self.max_concurrent_polls) {
            let at = doc
                .get_ref()
                .get("max_concurrent_polls")
                .map_or(0..0, |v| v.span());
            p.at(
                at,
                format!(
                    "`max_concurrent_polls` must be between 1 and {MAX_CONCURRENT_POLLS}, not {}: it is how many sources are polled at once. Remove it for the default, {} on this machine ({POLLS_PER_CORE} per core)",
                    self.max_concurrent_polls,
                    defaults::max_concurrent_polls()
                ),
            );
        }
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name() == name)
    }

    /// Where the source `name` is written, and what its table says.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.origins.get(name)
    }

    /// Every file read: the main file first, then the included ones.
    pub fn files(&self) -> &[FileText] {
        &self.files
    }

    /// Whether the files on disk differ from those read (one changed, appeared or went): what
    /// a running process acts on then is not what the files say.
    pub fn changed_on_disk(&self) -> bool {
        let Ok(raw) = std::fs::read_to_string(&self.path) else {
            return true;
        };
        let Ok(doc) = DeTable::parse(&raw) else {
            return true;
        };
        let mut ignored = Problems::new(&raw, &self.path);
        let included = include::files(&self.path, &include::patterns(&doc), &mut ignored);
        let now = std::iter::once(FileText {
            path: self.path.clone(),
            text: raw.clone(),
        })
        .chain(included);
        !ignored.is_empty() || !now.eq(self.files.iter().cloned())
    }

    /// What `new`, this config read again, changes in the set of sources: a source whose table
    /// differs in any key is changed.
    pub fn source_changes(&self, new: &Config) -> SourceChanges {
        let listed = |c: &Config| -> Vec<(String, Origin)> {
            c.sources
                .iter()
                .filter_map(|s| Some((s.name().to_owned(), c.origin(s.name())?.clone())))
                .collect()
        };
        changes::between(&listed(self), &listed(new))
    }

    /// The keys of the main file, outside `include` and `[[sources]]`, that `new` changes:
    /// a running process applies them only when restarted.
    pub fn needs_restart(&self, new: &Config) -> Vec<String> {
        changes::keys_changed(&self.rest, &new.rest)
    }

    /// This config with the sources of `new` (and the files they were read from): what a
    /// running process acts on after a reload, which applies nothing else.
    pub fn with_sources_of(&self, new: Config) -> Config {
        Config {
            sources: new.sources,
            origins: new.origins,
            files: new.files,
            ..self.clone()
        }
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
        if let Some(message) = s
            .retain
            .and_then(|d| out_of_range("`retain`", d, &(Duration::ZERO..=MAX_RETAIN)))
        {
            p.at(span("retain"), message);
        }
        if s.max_bytes == Some(0) {
            p.at(
                span("max_bytes"),
                "`max_bytes` must be at least 1; remove it for no size cap".into(),
            );
        }
        if s.checkpoint_every == 0 {
            p.at(
                span("checkpoint_every"),
                "`checkpoint_every` must be at least 1 (events between two signed checkpoints)"
                    .into(),
            );
        }
        if let Some(message) = out_of_range(
            "`checkpoint_interval`",
            s.checkpoint_interval,
            &(Duration::from_secs(1)..=MAX_CHECKPOINT_INTERVAL),
        ) {
            p.at(span("checkpoint_interval"), message);
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

/// The longest `shard`: a DNS label's, so that it fits wherever such a name goes (a pod's,
/// a host's) and stays short in every event.
const MAX_SHARD: usize = 63;

/// A DNS label in lowercase: what `shard` may be.
fn valid_shard(shard: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    shard.len() <= MAX_SHARD
        && edge(shard.chars().next())
        && edge(shard.chars().last())
        && shard
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A checkpoint at least monthly: an auditor waits no longer for a signature over what came.
const MAX_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30 * DAY.as_secs());

/// A century: longer than any log needs keeping, and far from overflowing a date.
const MAX_RETAIN: Duration = Duration::from_secs(36500 * DAY.as_secs());

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::encode::Format;

    pub(crate) const EXAMPLE: &str = r#"[store]
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

    pub(crate) fn parse(raw: &str) -> Result<Config, String> {
        Config::parse(raw, Path::new("rollcall.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let c = parse(EXAMPLE).unwrap();
        let SourceConfig::Superset(s) = &c.sources[0] else {
            panic!("the example's first source is Superset")
        };
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

    /// A webhook and a Kafka sink, both sending OCSF 1.8.0.
    const OCSF_SINKS: &str = r#"
[[sinks]]
kind = "webhook"
name = "hooks"
url = "https://siem.example/hook"
secret_env = "HOOK_SECRET"
format = "ocsf"
ocsf_version = "1.8.0"

[[sinks]]
kind = "kafka"
name = "bus"
brokers = "127.0.0.1:9092"
topic = "ocsf"
format = "ocsf"
ocsf_version = "1.8.0"
"#;

    #[test]
    fn every_sink_kind_takes_format_cloudevents_by_default_or_ocsf() {
        let c = parse(&format!("{EXAMPLE}format = \"ocsf\"\n{OCSF_SINKS}")).unwrap();
        let formats: Vec<Format> = c
            .sinks
            .iter()
            .map(|s| match s {
                SinkConfig::Jsonl(c) => c.format,
                SinkConfig::Webhook(c) => c.format,
                SinkConfig::Kafka(c) => c.format,
                SinkConfig::Ssf(_) => unreachable!("no SSF sink in this config"),
            })
            .collect();
        assert_eq!(formats, [Format::Ocsf; 3]);
        let SinkConfig::Jsonl(j) = &parse(EXAMPLE).unwrap().sinks[0] else {
            panic!("the example's sink is jsonl")
        };
        assert_eq!(j.format, Format::Cloudevents);
        let err = parse(&format!("{EXAMPLE}format = \"ecs\"\n")).unwrap_err();
        assert!(
            err.contains("unknown variant `ecs`")
                && err.contains("cloudevents")
                && err.contains("ocsf"),
            "{err}"
        );
    }

    #[test]
    fn every_sink_kind_takes_ocsf_version_1_9_0_by_default_or_1_8_0_and_nothing_else() {
        use crate::encode::ocsf::Version;
        let versions = |raw: &str| -> Vec<Version> {
            parse(raw)
                .unwrap()
                .sinks
                .iter()
                .map(|s| match s {
                    SinkConfig::Jsonl(c) => c.ocsf_version,
                    SinkConfig::Webhook(c) => c.ocsf_version,
                    SinkConfig::Kafka(c) => c.ocsf_version,
                    SinkConfig::Ssf(c) => {
                        panic!("sink {}: an SSF sink sends SETs, no OCSF", c.name)
                    }
                })
                .collect()
        };
        assert_eq!(
            versions(&format!("{EXAMPLE}format = \"ocsf\"\n{OCSF_SINKS}")),
            [Version::V1_9_0, Version::V1_8_0, Version::V1_8_0]
        );
        assert_eq!(
            versions(&format!("{EXAMPLE}ocsf_version = \"1.9.0\"\n")),
            [Version::V1_9_0]
        );
        let line = EXAMPLE.lines().count() + 1;
        for bad in ["\"1.7.0\"", "\"1.9\"", "\"\"", "1.9"] {
            let err = parse(&format!("{EXAMPLE}ocsf_version = {bad}\n")).unwrap_err();
            assert!(
                err.contains(&format!("rollcall.toml:{line}:"))
                    && err.contains("\"1.9.0\" (the default)")
                    && err.contains("\"1.8.0\""),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_example_files_commented_kylin_source_is_valid_once_uncommented() {
        let raw = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rollcall.example.toml"
        ))
        .unwrap();
        let start = raw.find("# [[sources]]\n# kind = \"kylin\"").unwrap();
        let end = start + raw[start..].find("\n\n").unwrap();
        let uncommented: String = raw[start..end]
            .lines()
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let config = parse(&format!("{}{uncommented}{}", &raw[..start], &raw[end..])).unwrap();
        assert_eq!(config.sources.len(), 2);
        assert_eq!(config.sources[1].name(), "cubes");
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
        let SourceConfig::Superset(s) = &c.sources[0] else {
            panic!("the example's first source is Superset")
        };
        use secrecy::ExposeSecret;
        assert_eq!(s.password().unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn missing_password_variable_is_named() {
        let raw = EXAMPLE.replace("SUPERSET_PASSWORD", "ROLLCALL_TEST_UNSET_VARIABLE");
        let c = parse(&raw).unwrap();
        let SourceConfig::Superset(s) = &c.sources[0] else {
            panic!("the example's first source is Superset")
        };
        let err = s.password().unwrap_err().to_string();
        assert!(
            err.contains("ROLLCALL_TEST_UNSET_VARIABLE") && err.contains("not set"),
            "{err}"
        );
    }

    #[test]
    fn listen_without_a_port_says_what_it_wants() {
        let err = parse(&format!("listen = \"localhost:9464\"\n{EXAMPLE}")).unwrap_err();
        assert!(
            err.contains("rollcall.toml:1:") && err.contains("an IP address and a port"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_sources_array_is_rejected_with_the_kinds_to_choose_from() {
        let raw = "sources = []\n[store]\npath = \"x\"\n[[sinks]]\nkind = \"jsonl\"\nname = \"s\"\npath = \"-\"\n";
        let err = parse(raw).unwrap_err();
        assert!(
            err.contains("no [[sources]]") && err.contains("`superset`"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_listen_does_not_hide_a_typo_in_the_store_table() {
        let raw = EXAMPLE.replace(
            "[store]\n",
            "listen = \"nowhere\"\n[store]\npathh = \"y\"\n",
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("an IP address") && err.contains("unknown field `pathh`"),
            "{err}"
        );
    }

    #[test]
    fn poll_interval_below_a_second_or_above_a_day_is_refused() {
        for (value, said) in [
            ("1ns", "between 1s and 1day, not 1ns"),
            (
                "500000000000years",
                "between 1s and 1day, not 500000000000years",
            ),
        ] {
            let raw = EXAMPLE.replace(
                "poll_interval = \"30s\"",
                &format!("poll_interval = \"{value}\""),
            );
            let err = parse(&raw).unwrap_err();
            assert!(
                err.contains("`poll_interval` must be") && err.contains(said),
                "{err}"
            );
        }
    }

    #[test]
    fn a_superset_page_size_of_0_or_above_superset_s_cap_of_100_is_refused() {
        for value in [0, 101] {
            let raw = EXAMPLE.replace(
                "poll_interval = \"30s\"",
                &format!("poll_interval = \"30s\"\npage_size = {value}"),
            );
            let err = parse(&raw).unwrap_err();
            assert!(
                err.contains(&format!(
                    "`page_size` must be between 1 and 100, not {value}"
                )),
                "{err}"
            );
        }
        let raw = EXAMPLE.replace(
            "poll_interval = \"30s\"",
            "poll_interval = \"30s\"\npage_size = 2",
        );
        assert!(parse(&raw).is_ok());
    }

    #[test]
    fn overlap_backfill_retain_and_retries_of_absurd_size_are_refused() {
        let raw = EXAMPLE
            .replace(
                "full_reconcile_interval = \"15m\"",
                "full_reconcile_interval = \"15m\"\nincremental_overlap = \"300000years\"\nlog_backfill = \"300000years\"\nmax_retries = 1000000",
            )
            .replace("[store]\n", "[store]\nretain = \"300000years\"\n");
        let err = parse(&raw).unwrap_err();
        for key in [
            "incremental_overlap",
            "log_backfill",
            "max_retries",
            "retain",
        ] {
            assert!(
                err.contains(&format!("`{key}` must be at most")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn max_concurrent_polls_defaults_to_four_per_core_and_zero_is_refused_at_its_line() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            parse(EXAMPLE).unwrap().max_concurrent_polls,
            (cores * POLLS_PER_CORE).min(MAX_CONCURRENT_POLLS)
        );
        let c = parse(&format!("max_concurrent_polls = 3\n{EXAMPLE}")).unwrap();
        assert_eq!(c.max_concurrent_polls, 3);
        for value in ["0", "1025"] {
            let err = parse(&format!("max_concurrent_polls = {value}\n{EXAMPLE}")).unwrap_err();
            assert!(
                err.contains("rollcall.toml:1:")
                    && err.contains(&format!(
                        "`max_concurrent_polls` must be between 1 and 1024, not {value}"
                    )),
                "{err}"
            );
        }
        let err = parse(&format!("max_concurrent_polls = -1\n{EXAMPLE}")).unwrap_err();
        assert!(err.contains("rollcall.toml:1:"), "{err}");
    }

    #[test]
    fn shard_is_unset_by_default_and_must_be_a_dns_label_refused_at_its_line() {
        assert_eq!(parse(EXAMPLE).unwrap().shard, None);
        for ok in ["eu-1", "0", "a", &"x".repeat(63)] {
            let c = parse(&format!("shard = \"{ok}\"\n{EXAMPLE}")).unwrap();
            assert_eq!(c.shard.as_deref(), Some(ok));
        }
        for bad in [
            "",
            "EU-1",
            "-eu",
            "eu-",
            "eu_1",
            "eu.1",
            "eu 1",
            &"x".repeat(64),
        ] {
            let err = parse(&format!("shard = \"{bad}\"\n{EXAMPLE}")).unwrap_err();
            assert!(
                err.contains("rollcall.toml:1:") && err.contains("`shard` must be lowercase"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn poll_deadline_defaults_to_an_hour_or_five_request_timeouts_and_is_bounded() {
        let deadline = |raw: &str| parse(raw).unwrap().sources[0].kind().poll_deadline();
        assert_eq!(deadline(EXAMPLE), Duration::from_secs(3600));
        let slow = EXAMPLE.replace(
            "poll_interval = \"30s\"",
            "poll_interval = \"30s\"\nrequest_timeout = \"20m\"",
        );
        assert_eq!(deadline(&slow), Duration::from_secs(100 * 60));
        let set = EXAMPLE.replace(
            "poll_interval = \"30s\"",
            "poll_interval = \"30s\"\npoll_deadline = \"90s\"",
        );
        assert_eq!(deadline(&set), Duration::from_secs(90));
        for (value, said) in [("0s", "not 0s"), ("2days", "not 2days")] {
            let raw = EXAMPLE.replace(
                "poll_interval = \"30s\"",
                &format!("poll_interval = \"30s\"\npoll_deadline = \"{value}\""),
            );
            let err = parse(&raw).unwrap_err();
            assert!(
                err.contains("rollcall.toml:11:")
                    && err.contains("`poll_deadline` must be between 1s and 1day")
                    && err.contains(said),
                "{err}"
            );
        }
    }

    #[test]
    fn max_response_bytes_below_64_kib_or_above_4_gib_is_refused_for_each_source_kind() {
        let kylin = "\n[[sources]]\nkind = \"kylin\"\nname = \"cubes\"\nurl = \"http://127.0.0.1:7070/kylin\"\nusername = \"rollcall\"\npassword_env = \"KYLIN_PASSWORD\"\nmax_response_bytes = 5000000000\n";
        let raw = EXAMPLE.replace(
            "full_reconcile_interval = \"15m\"",
            "full_reconcile_interval = \"15m\"\nmax_response_bytes = 1000",
        ) + kylin;
        let err = parse(&raw).unwrap_err();
        assert_eq!(
            err.matches(
                "`max_response_bytes` must be between 65536 (64 KiB) and 4294967296 (4 GiB)"
            )
            .count(),
            2,
            "{err}"
        );
        assert!(
            err.contains("not 1000") && err.contains("not 5000000000"),
            "{err}"
        );
        let fine = EXAMPLE.replace(
            "full_reconcile_interval = \"15m\"",
            "full_reconcile_interval = \"15m\"\nmax_response_bytes = 65536",
        );
        parse(&fine).unwrap();
    }

    #[test]
    fn a_password_in_the_source_url_is_refused_without_being_repeated() {
        let raw = EXAMPLE.replace(
            "url = \"http://127.0.0.1:8088\"",
            "url = \"http://admin:hunter2@127.0.0.1:8088\"",
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains("rollcall.toml:7:")
                && err.contains("must not hold a user or password")
                && err.contains("password_file"),
            "{err}"
        );
        assert!(
            !err.contains("hunter2"),
            "the password is not repeated: {err}"
        );
    }

    // --- include: sources from several files --------------------------------------------------

    /// A main file (`EXAMPLE` with `top` before it) in a temporary directory, with `files`
    /// (path relative to it, text) beside it.
    fn fleet(top: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let file = dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let main = dir.path().join("rollcall.toml");
        std::fs::write(&main, format!("{top}\n{EXAMPLE}")).unwrap();
        (dir, main)
    }

    fn superset(name: &str) -> String {
        format!("[[sources]]\nkind = \"superset\"\nname = \"{name}\"\nurl = \"http://{name}.example:8088\"\nusername = \"rollcall\"\npassword_env = \"P\"\n")
    }

    fn load(main: &Path) -> Result<Config, String> {
        Config::load(main).map_err(|e| e.to_string())
    }

    #[test]
    fn included_files_add_their_sources_in_name_order_each_with_its_file_and_line() {
        let (dir, main) = fleet(
            "include = [\"sources.d/*.toml\"]",
            &[
                (
                    "sources.d/b.toml",
                    &format!("# unit b\n\n{}", superset("b")),
                ),
                (
                    "sources.d/a.toml",
                    &format!("{}\n{}", superset("a1"), superset("a2")),
                ),
            ],
        );
        let c = load(&main).unwrap();
        let names: Vec<&str> = c.sources.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["prod", "a1", "a2", "b"]);
        let place = |name: &str| c.origin(name).unwrap().place();
        assert_eq!(place("prod"), format!("{}:5", main.display()));
        let d = dir.path().join("sources.d");
        assert_eq!(place("a1"), format!("{}:1", d.join("a.toml").display()));
        assert_eq!(place("a2"), format!("{}:8", d.join("a.toml").display()));
        assert_eq!(place("b"), format!("{}:3", d.join("b.toml").display()));
        assert_eq!(c.files().len(), 3);
        assert!(!c.changed_on_disk());
    }

    #[test]
    fn an_included_file_may_hold_only_sources_and_says_where_the_rest_belongs() {
        let (_dir, main) = fleet(
            "include = [\"sources.d/*.toml\"]",
            &[(
                "sources.d/a.toml",
                &format!("{}\n[store]\npath = \"elsewhere\"\n", superset("a")),
            )],
        );
        let err = load(&main).unwrap_err();
        assert!(
            err.contains("a.toml:8: an included file holds only [[sources]] tables, not `store`")
                && err.contains("move it to the main config file"),
            "{err}"
        );
    }

    #[test]
    fn a_name_used_in_two_files_is_refused_naming_both_files_and_lines() {
        let (_dir, main) = fleet(
            "include = [\"sources.d/*.toml\"]",
            &[
                ("sources.d/a.toml", &superset("twin")),
                ("sources.d/b.toml", &format!("\n\n{}", superset("twin"))),
                ("sources.d/c.toml", &superset("prod")),
            ],
        );
        let err = load(&main).unwrap_err();
        assert!(
            err.contains("b.toml:5: duplicate name `twin`: ")
                && err.contains("a.toml:3 has it already"),
            "{err}"
        );
        assert!(
            err.contains("c.toml:3: duplicate name `prod`: ")
                && err.contains("rollcall.toml:7 has it already"),
            "{err}"
        );
    }

    #[test]
    fn one_upstream_polled_by_two_sources_is_refused_in_one_file_or_across_files() {
        let same = |name: &str, url: &str| {
            superset(name).replace(&format!("http://{name}.example:8088"), url)
        };
        let (_dir, main) = fleet(
            &format!("{}\n", same("again", "http://127.0.0.1:8088/?x=1")),
            &[],
        );
        let err = load(&main).unwrap_err();
        assert!(
            err.contains("rollcall.toml:")
                && err.contains("source `prod` polls http://127.0.0.1:8088, as source `again` (")
                && err.contains("Keep one of them"),
            "{err}"
        );
        let (_dir, main) = fleet(
            "include = [\"sources.d/*.toml\"]",
            &[
                ("sources.d/a.toml", &same("a", "https://BI.example/")),
                (
                    "sources.d/b.toml",
                    &format!("\n{}", same("b", "https://bi.example:443")),
                ),
            ],
        );
        let err = load(&main).unwrap_err();
        assert!(
            err.contains("b.toml:5: source `b` polls https://bi.example, as source `a` (")
                && err.contains("a.toml:4)"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_of_every_included_file_is_reported_with_its_file_and_line() {
        let (_dir, main) = fleet(
            "include = [\"sources.d/*.toml\", \"units/*/sources.toml\", \"missing.toml\"]",
            &[
                (
                    "sources.d/a.toml",
                    &superset("a").replace("url =", "poll_interval = \"1ns\"\nurl ="),
                ),
                ("sources.d/b.toml", "[[sources]\n"),
                (
                    "units/x/sources.toml",
                    &superset("x").replace("username", "usernam"),
                ),
            ],
        );
        let err = load(&main).unwrap_err();
        for said in [
            "rollcall.toml:1: `include` \"missing.toml\"",
            "a.toml:4: `poll_interval` must be between 1s and 1day",
            "b.toml:1:",
            "sources.toml:5: unknown field `usernam`",
        ] {
            assert!(err.contains(said), "{said}: {err}");
        }
    }

    #[test]
    fn sources_may_all_come_from_included_files_but_must_come_from_somewhere() {
        let (_dir, main) = fleet("include = [\"sources.d/*.toml\"]", &[]);
        let raw = std::fs::read_to_string(&main).unwrap();
        let start = raw.find("[[sources]]").unwrap();
        let end = raw.find("[[sinks]]").unwrap();
        std::fs::write(&main, format!("{}{}", &raw[..start], &raw[end..])).unwrap();
        let err = load(&main).unwrap_err();
        assert!(err.contains("no [[sources]]"), "{err}");
        let d = main.parent().unwrap().join("sources.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.toml"), superset("a")).unwrap();
        let c = load(&main).unwrap();
        assert_eq!(c.sources.len(), 1);
    }

    #[test]
    fn a_config_read_again_tells_changed_sources_from_others_and_only_sources_are_taken() {
        let (dir, main) = fleet(
            "include = [\"sources.d/*.toml\"]",
            &[
                ("sources.d/a.toml", &superset("a")),
                ("sources.d/b.toml", &superset("b")),
            ],
        );
        let old = load(&main).unwrap();
        let d = dir.path().join("sources.d");
        std::fs::remove_file(d.join("a.toml")).unwrap();
        std::fs::write(d.join("b.toml"), superset("b") + "max_retries = 2\n").unwrap();
        std::fs::write(d.join("c.toml"), superset("c")).unwrap();
        assert!(old.changed_on_disk());
        let raw = std::fs::read_to_string(&main).unwrap();
        std::fs::write(&main, raw.replace("./events.jsonl", "./other.jsonl")).unwrap();
        let new = load(&main).unwrap();
        let changes = old.source_changes(&new);
        assert_eq!(
            (changes.added, changes.removed, changes.changed),
            (vec!["c".into()], vec!["a".into()], vec!["b".into()])
        );
        assert_eq!(old.needs_restart(&new), ["sinks"]);
        let running = old.with_sources_of(new);
        let names: Vec<&str> = running.sources.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["prod", "b", "c"]);
        let SinkConfig::Jsonl(j) = &running.sinks[0] else {
            panic!("the example's sink is jsonl")
        };
        assert_eq!(j.path, "./events.jsonl", "the sinks it started with");
        assert!(!running.changed_on_disk());
    }

    // --- fuzz: no config text panics the parser, and what it accepts is safe to use ---------

    use proptest::prelude::*;

    fn toml_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "\"1ns\"",
                "\"0s\"",
                "\"1s\"",
                "\"30s\"",
                "\"500000000000years\"",
                "\"300000years\"",
                "\"18446744073709551615s\"",
                "\"1d\"",
                "\"soon\"",
                "-1",
                "0",
                "1",
                "18446744073709551615",
                "9223372036854775807",
                "1e308",
                "true",
                "[]",
                "[\"0s\", \"300000years\"]",
                "{}",
                "\"http://admin:pw@h:1\"",
                "\"http://h:1\"",
                "\"ftp://h\"",
                "\"Mars/Olympus\"",
                "\"UTC\"",
                "\"\\u001b[2J\"",
                "\"-\"",
                "\"127.0.0.1:0\"",
                "\"x\"",
                "[\"user.created\"]",
            ])
            .prop_map(str::to_owned),
            any::<String>().prop_map(|s| format!("{s:?}")),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "name",
            "url",
            "username",
            "password_env",
            "password_file",
            "poll_interval",
            "full_reconcile_interval",
            "timezone",
            "incremental_overlap",
            "request_timeout",
            "poll_deadline",
            "max_concurrent_polls",
            "max_retries",
            "action_log",
            "log_backfill",
            "log_include",
            "page_size",
            "path",
            "retain",
            "max_bytes",
            "force",
            "secret_env",
            "timeout",
            "retry_schedule",
            "max_in_flight",
            "event_types",
            "listen",
            "brokers",
            "topic",
        ]);
        (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}"))
    }

    fn source_line() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "timezone",
            "incremental_overlap",
            "request_timeout",
            "poll_deadline",
            "max_retries",
            "log_backfill",
        ]);
        (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}"))
    }

    fn section() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "[store]",
                "[[sources]]\nkind = \"superset\"",
                "[[sources]]\nkind = \"kylin\"",
                "[[sinks]]\nkind = \"jsonl\"",
                "[[sinks]]\nkind = \"webhook\"",
                "[[sinks]]\nkind = \"kafka\"",
                "[[sinks]]\nkind = \"ssf\"",
            ]),
            prop::collection::vec(line(), 0..8),
        )
            .prop_map(|(head, lines)| format!("{head}\n{}\n", lines.join("\n")))
    }

    proptest! {
        #[test]
        fn fuzz_config_text_never_panics_and_accepted_durations_are_usable(
            sections in prop::collection::vec(section(), 0..5),
            source_keys in prop::collection::vec(source_line(), 0..4),
            noise in any::<String>(),
        ) {
            // The example with keys added to its source reaches the checks after parsing.
            let example = EXAMPLE.replace(
                "full_reconcile_interval = \"15m\"\n",
                &format!("full_reconcile_interval = \"15m\"\n{}\n", source_keys.join("\n")),
            );
            for raw in [sections.concat(), format!("{}{noise}", sections.concat()), noise.clone(), example] {
                let Ok(c) = Config::parse(&raw, Path::new("fuzz.toml")) else {
                    continue;
                };
                let now = chrono::Utc::now();
                prop_assert!((1..=MAX_CONCURRENT_POLLS).contains(&c.max_concurrent_polls));
                for s in &c.sources {
                    let every = s.kind().poll_interval();
                    prop_assert!(std::time::Instant::now().checked_add(every.saturating_mul(3)).is_some());
                    prop_assert!(every >= Duration::from_secs(1));
                    let deadline = s.kind().poll_deadline();
                    prop_assert!(tokio::time::Instant::now().checked_add(deadline).is_some());
                    prop_assert!(deadline >= Duration::from_secs(1));
                    if let Some(s) = s.as_superset() {
                        for d in [s.incremental_overlap, s.log_backfill, s.full_reconcile_interval] {
                            let d = chrono::Duration::from_std(d).unwrap();
                            prop_assert!(now.checked_sub_signed(d).is_some());
                        }
                    }
                }
            }
        }
    }
}
