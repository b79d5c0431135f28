//! The `[[sinks]]` table of `kind = "webhook"`, and its checks.
//!
//! Owns the keys of a webhook endpoint, their defaults (the retry schedule Stripe and Svix made
//! common) and where its signing secrets come from. It must never log or return a secret's
//! value, nor the endpoint's path or query (which may carry a token).

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::WebhookError;
use crate::encode::{ocsf, Format};
use crate::settings::{
    check_retries, out_of_range, DurationText, Entry, Problems, SecretRef, HOUR,
};
use crate::sink::{SinkError, SinkKind};

const MILLISECOND: Duration = Duration::from_millis(1);

/// One HTTP endpoint receiving a signed POST per event (Standard Webhooks, docs/sinks.md,
/// Webhook sink). Each endpoint is its own sink, with its own cursor, retries and dead
/// letters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The sink's name, unique among sources and sinks: its cursor, `status`, metrics and
    /// commands (`dlq --sink`, `sink public-key`) know it by this.
    pub name: String,
    /// The endpoint, http or https. rollcall shows only its scheme and host: a path or query
    /// may carry a token.
    pub url: url::Url,
    /// Name of the environment variable holding the signing secret, `whsec_<base64>` (or an
    /// Ed25519 key, `whsk_<base64>`); several, separated by spaces, each sign every request,
    /// for a rotation. Set exactly one of `secret_env` and `secret_file`.
    pub secret_env: Option<String>,
    /// Or a file holding them (a Kubernetes or Docker secret).
    pub secret_file: Option<PathBuf>,
    /// How long one attempt may take, from connecting to the end of the answer; 1ms to 1h.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Requests in flight at once, at least 1, each for a different user: one user's events go
    /// one at a time, in order.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// The wait before each attempt (each at most 30days); the first is normally "0s". When
    /// the last attempt fails too, the event is dead-lettered (`rollcall dlq`). The default
    /// adds up to about 27.6 hours.
    #[serde(
        default = "crate::settings::common_retry_schedule",
        with = "crate::settings::durations"
    )]
    #[schemars(with = "Vec<DurationText>")]
    pub retry_schedule: Vec<Duration>,
    /// What each request carries: `"cloudevents"` (the stored event, unchanged) or `"ocsf"`
    /// (one OCSF record per event in `ocsf_version`, docs/ocsf.md).
    #[serde(default)]
    pub format: Format,
    /// The OCSF version of `format = "ocsf"`: "1.8.0" keeps the records rollcall sent before
    /// it wrote 1.9.0 (docs/ocsf.md, which version).
    #[serde(default)]
    pub ocsf_version: ocsf::Version,
    /// The `content-type` of a CloudEvents body: "application/cloudevents+json" (what the
    /// CloudEvents HTTP binding says for structured mode) or "application/json", for receivers
    /// that parse only that. OCSF bodies are always "application/json".
    #[serde(default)]
    pub content_type: ContentType,
    /// The keys every sink takes (docs/sinks.md, Routing), read by the registry.
    #[serde(skip)]
    pub subscription: crate::sink::Subscription,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ContentType {
    #[default]
    #[serde(rename = "application/cloudevents+json")]
    Cloudevents,
    #[serde(rename = "application/json")]
    Json,
}

mod defaults {
    use std::time::Duration;

    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_in_flight() -> usize {
        16
    }
}

impl WebhookConfig {
    pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
        check_retries(entry, p, &self.retry_schedule, self.max_in_flight);
        let mut problem = |key: &str, message: String| p.at(entry.key(key), message);
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
        if let Some(message) = out_of_range("`timeout`", self.timeout, &(MILLISECOND..=HOUR)) {
            problem("timeout", message);
        }
    }

    /// Scheme and host only: a path or query may carry a token.
    pub fn describe(&self) -> String {
        format!(
            "webhook to {}://{}, {} in flight, {} attempts",
            self.url.scheme(),
            self.url.host_str().unwrap_or("?"),
            self.max_in_flight,
            self.retry_schedule.len()
        )
    }

    /// The signing secrets, from the environment or the file the config names, as written
    /// (`whsec_<base64>`, space-separated). Errors name where to look, never the value.
    pub fn secrets(&self) -> Result<SecretString, WebhookError> {
        SecretRef {
            env_key: "secret_env",
            file_key: "secret_file",
            env: self.secret_env.as_deref(),
            file: self.secret_file.as_deref(),
        }
        .read()
        .map_err(|source| WebhookError::Secret {
            sink: self.name.clone(),
            source,
        })
    }
}

impl crate::sink::TakesSubscription for WebhookConfig {}

/// Each request stands alone (any number of senders), and each is signed.
impl SinkKind for WebhookConfig {
    /// The public keys receivers verify `v1a` signatures with (`rollcall sink public-key`).
    fn public_keys(&self) -> Option<Result<Vec<String>, SinkError>> {
        use secrecy::ExposeSecret;
        let keys = self
            .secrets()
            .and_then(|s| Ok(super::Signer::new(&self.name, s.expose_secret())?.public_keys()));
        Some(keys.map_err(SinkError::from))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, EXAMPLE};
    use crate::sink::SinkConfig;
    use std::time::Duration;

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
        assert_eq!(w.subscription.event_types.as_ref().unwrap().len(), 3);
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
        let err = crate::text::error_chain(&w.secrets().unwrap_err());
        assert!(
            err.contains("sink 'provisioning'") && err.contains("ROLLCALL_TEST_UNSET_SECRET"),
            "{err}"
        );
    }
}
