//! The `[[sinks]]` table of `kind = "kafka"`, and its checks.
//!
//! Owns the keys of a Kafka sink, the librdkafka options rollcall reserves for itself, and
//! reading the `options_env` secrets. It must never log an option's value: it may be a secret.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::KafkaError;
use crate::encode::{ocsf, Format, Mode};
use crate::settings::{Entry, Problems, SecretRef};
use crate::sink::SinkKind;

/// Produces every event to one Kafka topic, keyed by user, in the CloudEvents Kafka binding
/// (or as OCSF records with `format = "ocsf"`), docs/sinks.md, Kafka sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The sink's name, unique among sources and sinks: its cursor, `status`, metrics and
    /// commands (`replay --sink`) know it by this.
    pub name: String,
    /// librdkafka's `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic every event goes to.
    pub topic: String,
    /// "binary" (attributes in `ce_*` headers, `data` as the value) or "structured" (the whole
    /// event as the value, `content-type: application/cloudevents+json`). CloudEvents only: an
    /// OCSF record is always the whole value.
    #[serde(default)]
    pub mode: Mode,
    /// What each message carries: `"cloudevents"` (the stored event, unchanged) or `"ocsf"`
    /// (one OCSF record per event in `ocsf_version`, docs/ocsf.md).
    #[serde(default)]
    pub format: Format,
    /// The OCSF version of `format = "ocsf"`: "1.8.0" keeps the records rollcall sent before
    /// it wrote 1.9.0 (docs/ocsf.md, which version).
    #[serde(default)]
    pub ocsf_version: ocsf::Version,
    /// Create the topic (broker-default partitions and replication) when it is missing,
    /// instead of failing with an error that says so.
    #[serde(default)]
    pub create_topic: bool,
    /// Claim each source this process polls on `claims_topic` before polling it, and refuse a
    /// source that another rollcall's store claims there (docs/scaling.md, Claims), so that
    /// processes publishing into one cluster never poll one source twice. Turn it off only
    /// for a topic no other rollcall writes to, whose principal may not use a claims topic.
    #[serde(default = "claim_sources")]
    pub claim_sources: bool,
    /// The compacted topic of the claims (one partition), created when missing, even without
    /// `create_topic`: the principal needs READ, WRITE and DESCRIBE on it (and CREATE, or an
    /// operator creates it). Unset: `topic` followed by `.claims`.
    #[serde(default)]
    pub claims_topic: Option<String>,
    /// Publish the current users instead of the events: one message per change of a user,
    /// keyed `<source>:<user id>` (a Kylin username), whose value is the user's record as
    /// events hold it in `data.user`, and a tombstone (no value) after a deletion, to a topic
    /// with `cleanup.policy=compact` (created so with `create_topic`, else checked), so that a
    /// new consumer reads every current user without the history; `rollcall table rebuild`
    /// republishes them from the store. `mode` does not apply, and `format` stays
    /// "cloudevents" (docs/sinks.md, Current-users table).
    #[serde(default)]
    pub table: bool,
    /// Events handed to librdkafka at once, at least 1. A batch holds at most half of what
    /// may be in flight (10,000 events, or half of `queue.buffering.max.messages` if that is
    /// lower), so that the next batch is read and encoded while the one before is being
    /// acknowledged.
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// librdkafka options, passed as they are (`security.protocol`, `sasl.*`, `ssl.*`,
    /// `compression.type`, …), as a `[sinks.options]` table. The options ordered, idempotent
    /// delivery depends on are rollcall's own and refused here (docs/sinks.md).
    #[serde(default)]
    #[schemars(schema_with = "option_values")]
    pub options: BTreeMap<String, toml::Value>,
    /// librdkafka options whose values come from environment variables, as a
    /// `[sinks.options_env]` table, e.g. `"sasl.password" = "KAFKA_PASSWORD"`: secrets stay
    /// out of the file.
    #[serde(default)]
    pub options_env: BTreeMap<String, String>,
    /// The keys every sink takes (docs/sinks.md, Routing), read by the registry.
    #[serde(skip)]
    pub subscription: crate::sink::Subscription,
}

/// What `options` takes: librdkafka reads every option as text, so any scalar will do.
fn option_values(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": { "type": ["string", "number", "boolean"] },
    })
}

fn batch_size() -> usize {
    1_000
}

fn claim_sources() -> bool {
    true
}

/// librdkafka options rollcall sets itself: its delivery guarantees depend on them.
pub const RESERVED_OPTIONS: [&str; 4] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "allow.auto.create.topics",
];

impl KafkaConfig {
    pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        let mut problem = |key: &str, message: String| p.at(entry.key(key), message);
        if self.brokers.trim().is_empty() {
            problem(
                "brokers",
                "`brokers` must name at least one `host:port`".into(),
            );
        }
        if self.topic.trim().is_empty() {
            problem("topic", "`topic` must not be empty".into());
        }
        match &self.claims_topic {
            Some(t) if t.trim().is_empty() => problem(
                "claims_topic",
                "`claims_topic` must not be empty; remove it for the default, `topic` followed by `.claims`".into(),
            ),
            Some(t) if *t == self.topic => problem(
                "claims_topic",
                "`claims_topic` must not be the events' `topic`: consumers would read the claims as events".into(),
            ),
            _ => {}
        }
        if self.batch_size == 0 {
            problem("batch_size", "`batch_size` must be at least 1".into());
        }
        if self.table && self.format != Format::Cloudevents {
            problem(
                "format",
                "a table sink (`table = true`) publishes user records, not OCSF: drop `format`, or use another sink for OCSF".into(),
            );
        }
        for (table, key) in self
            .options
            .keys()
            .map(|k| ("options", k))
            .chain(self.options_env.keys().map(|k| ("options_env", k)))
        {
            if RESERVED_OPTIONS.contains(&key.as_str()) {
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

    pub fn describe(&self) -> String {
        format!("kafka topic {} at {}", self.topic, self.brokers)
    }

    /// The topic the sources are claimed on.
    pub fn claims_topic(&self) -> String {
        self.claims_topic
            .clone()
            .unwrap_or_else(|| format!("{}.claims", self.topic))
    }

    /// Every librdkafka option as a string, with the `options_env` secrets read from the
    /// environment. The values may be secrets: never log them.
    pub fn librdkafka_options(&self) -> Result<Vec<(String, String)>, KafkaError> {
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
            let value = SecretRef {
                env_key: &format!("options_env.\"{key}\""),
                file_key: "",
                env: Some(var),
                file: None,
            }
            .read()
            .map_err(|source| KafkaError::Secret {
                sink: self.name.clone(),
                source,
            })?;
            out.push((key.clone(), value.expose_secret().to_owned()));
        }
        Ok(out)
    }
}

impl crate::sink::TakesSubscription for KafkaConfig {}

/// A topic takes any number of producers, and Kafka verifies no signature of rollcall's.
impl SinkKind for KafkaConfig {
    /// The topic, every partition merged into log order: the events of `shard` only; a table
    /// holds rows, no events.
    fn read_back(
        &self,
        shard: Option<&str>,
    ) -> Option<Result<crate::sink::ReadBack, crate::sink::SinkError>> {
        (!self.table).then(|| self.read_topic(shard))
    }

    /// The claims topic, unless `claim_sources = false`.
    fn board(&self) -> Option<Result<Box<dyn crate::sink::Board>, crate::sink::SinkError>> {
        self.claim_sources.then(|| Ok(self.claims()?))
    }

    /// The compacted topic of current users, with `table = true`.
    fn table(&self) -> Option<Result<Box<dyn crate::sink::Table>, crate::sink::SinkError>> {
        self.table.then(|| {
            super::KafkaSink::new(self)
                .map(|s| Box::new(s) as Box<dyn crate::sink::Table>)
                .map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, EXAMPLE};
    use crate::sink::SinkConfig;

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
        assert_eq!(k.mode, Mode::Binary);
        assert!(!k.create_topic);
        assert_eq!(k.batch_size, 1_000);
        assert_eq!(k.topic, "superset.user-events");
        assert!(k.claim_sources);
        assert_eq!(k.claims_topic(), "superset.user-events.claims");
    }

    #[test]
    fn the_claims_topic_may_be_named_but_not_empty_nor_the_events_topic() {
        let with =
            |line: &str| format!("{EXAMPLE}{}", KAFKA.replace("mode = \"structured\"", line));
        let k = kafka(&with("claims_topic = \"rollcall.claims\""));
        assert_eq!(k.claims_topic(), "rollcall.claims");
        assert!(!kafka(&with("claim_sources = false")).claim_sources);
        for (value, said) in [
            ("\"\"", "`claims_topic` must not be empty"),
            (
                "\"superset.user-events\"",
                "must not be the events' `topic`",
            ),
        ] {
            let err = parse(&with(&format!("claims_topic = {value}"))).unwrap_err();
            assert!(
                err.contains(said) && err.contains("rollcall.toml:"),
                "{err}"
            );
        }
    }

    #[test]
    fn kafka_options_become_strings_and_secrets_come_from_env() {
        let k = kafka(&format!("{EXAMPLE}{KAFKA}"));
        assert_eq!(k.mode, Mode::Structured);
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
        let err = crate::text::error_chain(&kafka(&raw).librdkafka_options().unwrap_err());
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
    fn a_table_sink_takes_no_ocsf_and_says_so_at_its_line() {
        let k = kafka(&format!(
            "{EXAMPLE}{}",
            KAFKA.replace(
                "mode = \"structured\"\n",
                "mode = \"structured\"\ntable = true\n"
            )
        ));
        assert!(k.table && !k.create_topic);
        let raw = format!(
            "{EXAMPLE}{}",
            KAFKA.replace(
                "mode = \"structured\"\n",
                "mode = \"structured\"\ntable = true\nformat = \"ocsf\"\n"
            )
        );
        let err = parse(&raw).unwrap_err();
        assert!(
            err.contains(
                "rollcall.toml:25: a table sink (`table = true`) publishes user records, not OCSF"
            ),
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
