//! The webhook sink: one signed HTTP POST per event, delivered the way Stripe and Svix deliver
//! theirs, signed per the Standard Webhooks spec.
//!
//! Owns signing, the HTTP client, one attempt of one event and what the answer means. It
//! declares its retry schedule and `max_in_flight` to `deliver`, which sends one event per user
//! at a time in log order (different users in parallel), retries, dead-letters and keeps the
//! cursor; a crash re-sends with the same `webhook-id` and never skips.
//!
//! It must never log, store or report a secret or the endpoint URL (which may carry a token:
//! the sink's name identifies the endpoint), follow a redirect, or read more than [`BODY_CAP`]
//! bytes of a response.

mod config;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::Utc;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderName;
use secrecy::ExposeSecret;
use sha2::Sha256;

pub use config::{ContentType, WebhookConfig};

use super::{Delivery, Message, Order, Refusal, Sink};
use crate::encode::{Binding, Encoder, Mode};

/// Response bytes read at most: enough for an error message, and the connection stays reusable
/// for the usual short answers.
pub const BODY_CAP: usize = 64 * 1024;
/// Says that a request re-sends history at an operator's request (`rollcall replay`), whatever
/// the body's format: a receiver can tell it from news without parsing the body.
pub const REPLAYED_HEADER: &str = "rollcall-replayed";
/// Standard Webhooks asks for secrets of 24 to 64 random bytes: a shorter one can be guessed.
const MIN_SECRET_BYTES: usize = 24;
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("sink '{sink}': cannot read the signing secret")]
    Secret {
        sink: String,
        #[source]
        source: crate::settings::SecretError,
    },
    #[error("sink '{sink}': secret #{index} is neither `whsec_` followed by base64 nor `whsk_` followed by a base64 Ed25519 key (32 or 64 bytes). Create one with `echo whsec_$(openssl rand -base64 32)` and give the same to the receiver")]
    BadSecret { sink: String, index: usize },
    #[error("sink '{sink}': secret #{index} is {bytes} bytes; Standard Webhooks wants at least 24. Create one with `echo whsec_$(openssl rand -base64 32)` and give the same to the receiver")]
    ShortSecret {
        sink: String,
        index: usize,
        bytes: usize,
    },
    #[error("sink '{sink}': no secret found where `secret_env`/`secret_file` points; put `whsec_<base64>` there")]
    NoSecret { sink: String },
    #[error("sink '{sink}': cannot build the HTTP client: {detail}")]
    Client { sink: String, detail: String },
    #[error("sink '{sink}': the endpoint answered 410 Gone, so it is disabled and nothing more is sent to it. Fix the endpoint (or remove the sink), then restart rollcall: undelivered events are kept")]
    Gone { sink: String },
    /// The endpoint answered, but not with 2xx. Its text never holds the URL or a secret.
    #[error("HTTP {code}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { code: u16, body: String },
    #[error("sink '{sink}': the endpoint cannot be reached: {detail}. Check `url`, DNS, the network and TLS")]
    Unreachable { sink: String, detail: String },
    /// No answer: connection refused, TLS, timeout.
    #[error("{detail}")]
    Transport { detail: String },
}

impl WebhookError {
    /// A disabled endpoint stays disabled until rollcall restarts.
    pub fn is_permanent(&self) -> bool {
        matches!(self, WebhookError::Gone { .. })
    }
}

/// Signs with every configured secret: during a rotation the receiver accepts either.
pub struct Signer {
    keys: Vec<Key>,
}

/// One signing secret, by the scheme its prefix names (Standard Webhooks).
enum Key {
    /// `whsec_`: HMAC-SHA256, signatures `v1,…`; the receiver holds the same secret.
    Symmetric(Hmac<Sha256>),
    /// `whsk_`: Ed25519, signatures `v1a,…`; the receiver holds only the public key (`whpk_`).
    Asymmetric(ed25519_dalek::SigningKey),
}

// Written by hand so that no derive can ever print key material.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer {{ {} secret(s) }}", self.keys.len())
    }
}

impl Signer {
    /// `secrets`: one or more `whsec_<base64>` or `whsk_<base64>` (an Ed25519 seed of 32 bytes,
    /// or seed and public key, 64), separated by whitespace.
    pub fn new(sink: &str, secrets: &str) -> Result<Signer, WebhookError> {
        let keys = secrets
            .split_whitespace()
            .enumerate()
            .map(|(i, s)| {
                let bad = || WebhookError::BadSecret {
                    sink: sink.to_owned(),
                    index: i + 1,
                };
                if let Some(signing) = s.strip_prefix("whsk_") {
                    let bytes = BASE64.decode(signing).map_err(|_| bad())?;
                    let seed: [u8; 32] = bytes
                        .get(..32)
                        .filter(|_| bytes.len() == 32 || bytes.len() == 64)
                        .and_then(|seed| seed.try_into().ok())
                        .ok_or_else(bad)?;
                    return Ok(Key::Asymmetric(ed25519_dalek::SigningKey::from_bytes(
                        &seed,
                    )));
                }
                let key = BASE64
                    .decode(s.strip_prefix("whsec_").unwrap_or(s))
                    .map_err(|_| bad())?;
                if key.len() < MIN_SECRET_BYTES {
                    return Err(WebhookError::ShortSecret {
                        sink: sink.to_owned(),
                        index: i + 1,
                        bytes: key.len(),
                    });
                }
                Hmac::<Sha256>::new_from_slice(&key)
                    .map(Key::Symmetric)
                    .map_err(|_| bad())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(WebhookError::NoSecret {
                sink: sink.to_owned(),
            });
        }
        Ok(Signer { keys })
    }

    /// The public keys (`whpk_<base64>`) of the Ed25519 secrets, for receivers to verify `v1a`.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter_map(|k| match k {
                Key::Asymmetric(key) => Some(format!(
                    "whpk_{}",
                    BASE64.encode(key.verifying_key().to_bytes())
                )),
                Key::Symmetric(_) => None,
            })
            .collect()
    }

    /// The `webhook-signature` value: per secret, space-separated, `v1,<base64 HMAC-SHA256>`
    /// or `v1a,<base64 Ed25519 signature>` of `"{id}.{timestamp}.{body}"`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        let timestamp = timestamp.to_string();
        let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
        let mut out = String::with_capacity(self.keys.len() * 90);
        for key in &self.keys {
            if !out.is_empty() {
                out.push(' ');
            }
            match key {
                Key::Symmetric(key) => {
                    let mut mac = key.clone();
                    for part in signed {
                        mac.update(part);
                    }
                    out.push_str("v1,");
                    BASE64.encode_string(mac.finalize().into_bytes(), &mut out);
                }
                Key::Asymmetric(key) => {
                    // Ed25519 signs the whole message at once.
                    let signature = key.sign(&signed.concat());
                    out.push_str("v1a,");
                    BASE64.encode_string(signature.to_bytes(), &mut out);
                }
            }
        }
        out
    }
}

pub struct WebhookSink {
    name: String,
    url: url::Url,
    /// How a receiver may echo `url` back in an error body: redacted before the body is quoted.
    url_echoes: Vec<String>,
    client: reqwest::Client,
    signer: Signer,
    timeout: Duration,
    schedule: Vec<Duration>,
    encoder: Encoder,
    /// For CloudEvents bodies (see [`ContentType`]).
    content_type: ContentType,
    max_in_flight: usize,
    responses: Responses,
}

/// What only webhook sinks export, with its help text.
pub const METRICS: &[(&str, &str)] = &[(
    "rollcall_webhook_responses_total",
    "Webhook answers by sink and class (2xx, 3xx, 4xx, 5xx, or none: no answer).",
)];

/// A webhook sink has nothing to reopen on SIGHUP.
pub fn on_hangup() {}

/// The classes of `rollcall_webhook_responses_total`, by index: no answer, then the status
/// classes in order.
const RESPONSE_CLASSES: [&str; 5] = ["none", "2xx", "3xx", "4xx", "5xx"];
const NO_ANSWER: usize = 0;
const ANSWERED_2XX: usize = 1;

/// The sink's response counters, one per class, each registered at its first use (so that
/// only classes seen are exported) and then kept: looking a counter up by its labels for every
/// request costs allocations and a registry lookup.
#[derive(Default)]
struct Responses([OnceLock<metrics::Counter>; RESPONSE_CLASSES.len()]);

impl Responses {
    fn increment(&self, sink: &str, class: usize) {
        self.0[class]
            .get_or_init(|| {
                metrics::counter!("rollcall_webhook_responses_total", "sink" => sink.to_owned(), "class" => RESPONSE_CLASSES[class])
            })
            .increment(1);
    }
}

impl WebhookConfig {
    pub fn build(&self) -> Result<Box<dyn Sink>, WebhookError> {
        Ok(Box::new(WebhookSink::new(self)?))
    }

    /// What `check-config` can check without sending: the secrets and the HTTP client.
    pub fn check(&self) -> Result<(), WebhookError> {
        WebhookSink::new(self).map(drop)
    }
}

impl WebhookSink {
    fn new(config: &WebhookConfig) -> Result<WebhookSink, WebhookError> {
        let signer = Signer::new(&config.name, config.secrets()?.expose_secret())?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A request that finds no idle connection opens a new one, even when another
            // is on its way back to the pool; with room for only `max_in_flight` idle ones,
            // the surplus was closed again and the churn repeated (623 connections for 60,000
            // deliveries in the benchmark, against 56 with this room).
            .pool_max_idle_per_host(2 * config.max_in_flight)
            .user_agent(concat!("rollcall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client {
                sink: config.name.clone(),
                detail: e.without_url().to_string(),
            })?;
        Ok(WebhookSink {
            name: config.name.clone(),
            url: config.url.clone(),
            url_echoes: echoes(&config.url),
            client,
            signer,
            timeout: config.timeout,
            schedule: config.retry_schedule.clone(),
            // A signed JSON body per event: the structured form, as receivers expect it.
            encoder: Encoder {
                format: config.format,
                ocsf: config.ocsf_version,
                mode: Mode::Structured,
                binding: Binding::Http,
            },
            content_type: config.content_type,
            max_in_flight: config.max_in_flight,
            responses: Responses::default(),
        })
    }

    /// One signed POST of one event.
    async fn attempt(&self, message: &Message) -> Result<(), Refusal> {
        let timestamp = Utc::now().timestamp();
        // Static header names: a name parsed from a string is copied for every request.
        let mut request = self
            .client
            .post(self.url.clone())
            .header(HeaderName::from_static("webhook-id"), &message.id)
            .header(HeaderName::from_static("webhook-timestamp"), timestamp)
            .header(
                HeaderName::from_static("webhook-signature"),
                self.signer.sign(&message.id, timestamp, &message.body),
            )
            .header(reqwest::header::CONTENT_TYPE, self.content_type_of(message));
        for (name, value) in message.headers.iter() {
            request = request.header(HeaderName::from_static(name), value);
        }
        if message.replayed {
            request = request.header(HeaderName::from_static(REPLAYED_HEADER), "true");
        }
        let answered = |class: usize| self.responses.increment(&self.name, class);
        let response = match request.body(message.body.clone()).send().await {
            Ok(response) => response,
            Err(e) => {
                answered(NO_ANSWER);
                return Err(Refusal::new(self.transport(e)));
            }
        };
        let status = response.status();
        answered(match status.as_u16() {
            200..=299 => ANSWERED_2XX,
            300..=399 => ANSWERED_2XX + 1,
            400..=499 => ANSWERED_2XX + 2,
            _ => ANSWERED_2XX + 3,
        });
        let retry_after = match status.as_u16() {
            429 | 503 => response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::retry_after::parse(v, Utc::now())),
            _ => None,
        };
        let body = super::read_capped(response, BODY_CAP).await;
        let error = match status.as_u16() {
            200..=299 => return Ok(()),
            410 => WebhookError::Gone {
                sink: self.name.clone(),
            },
            code => WebhookError::Status {
                code,
                body: crate::text::one_line(&crate::text::redact(
                    &String::from_utf8_lossy(&body),
                    &self.url_echoes,
                )),
            },
        };
        Err(Refusal {
            retry_after,
            ..Refusal::new(error)
        })
    }

    /// The encoder's content type, unless the receiver asked for plain JSON.
    fn content_type_of<'m>(&self, message: &'m Message) -> &'m str {
        match self.content_type {
            ContentType::Json if message.content_type == "application/cloudevents+json" => {
                "application/json"
            }
            _ => &message.content_type,
        }
    }

    fn transport(&self, e: reqwest::Error) -> WebhookError {
        if e.is_timeout() {
            return WebhookError::Transport {
                detail: format!(
                    "no response within {}",
                    humantime::format_duration(self.timeout)
                ),
            };
        }
        // reqwest's own text is vague ("error sending request"); the cause is in the chain.
        // `without_url` keeps a token in the URL out of every message.
        WebhookError::Transport {
            detail: crate::text::error_chain(&e.without_url()),
        }
    }
}

/// The forms in which a receiver may echo the endpoint URL back: the whole URL, without its
/// scheme, its path with the query, and each path segment or query value long enough to be a
/// token (Slack-style hooks carry it in the path, others in the query).
fn echoes(url: &url::Url) -> Vec<String> {
    const TOKEN_LIKE: usize = 8;
    let whole = url.as_str().to_owned();
    let mut out = vec![
        whole.trim_end_matches('/').to_owned(),
        whole
            .split_once("://")
            .map_or(String::new(), |(_, rest)| rest.to_owned()),
    ];
    let path_and_query = &url[url::Position::BeforePath..];
    if path_and_query.len() > 1 {
        out.push(path_and_query.to_owned());
    }
    let segments = url.path_segments().into_iter().flatten().map(str::to_owned);
    let values = url.query_pairs().map(|(_, v)| v.into_owned());
    out.extend(segments.chain(values).filter(|s| s.len() >= TOKEN_LIKE));
    out
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Each request stands alone: one event per user in flight, retried on its own along the
    /// configured schedule, then dead-lettered.
    fn delivery(&self) -> Delivery {
        Delivery {
            order: Order::PerUser {
                schedule: self.schedule.clone(),
            },
            batch: 1,
            max_in_flight: self.max_in_flight,
        }
    }

    fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn takes_test_events(&self) -> bool {
        true
    }

    /// A HEAD request: any HTTP answer means the endpoint is reachable (no event is sent).
    fn probe(&self) -> BoxFuture<'_, Result<String, super::SinkError>> {
        Box::pin(async move {
            match self.client.head(self.url.clone()).send().await {
                Ok(answer) => Ok(format!(
                    "{}://{} answers (HTTP {} to a HEAD request)",
                    self.url.scheme(),
                    self.url.host_str().unwrap_or("?"),
                    answer.status().as_u16()
                )),
                Err(e) => Err(WebhookError::Unreachable {
                    sink: self.name.clone(),
                    detail: self.transport(e).to_string(),
                }
                .into()),
            }
        })
    }

    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            for (i, message) in batch.iter().enumerate() {
                self.attempt(message)
                    .await
                    .map_err(|r| Refusal { acked: i, ..r })?;
            }
            Ok(())
        })
    }
}
