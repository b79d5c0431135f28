//! The webhook sink: one signed HTTP POST per event, delivered the way Stripe and Svix deliver
//! theirs, signed per the Standard Webhooks spec.
//!
//! Owns signing, the HTTP client, the retry schedule, the window of events in flight beyond the
//! cursor, and the endpoint's dead letters. Events of one user (source + subject) go out one at
//! a time in log order; different users go in parallel, up to `max_in_flight`. The stored cursor
//! only moves to below the oldest event not yet delivered, filtered out or dead-lettered, so a
//! crash re-sends (with the same `webhook-id`) and never skips.
//!
//! It must never log, store or report a secret or the endpoint URL (which may carry a token:
//! the sink's name identifies the endpoint), follow a redirect, or read more than [`BODY_CAP`]
//! bytes of a response.

mod config;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

pub use config::WebhookConfig;

use super::{RetryReport, Serving, Sink, SinkError};
use crate::encode::{Binding, Encoder, Envelope, Mode, Unreadable};
use crate::store::{DeadLetter, SinkHealth, Store, StoreError, StoredEvent};

/// Response bytes read at most: enough for an error message, and the connection stays reusable
/// for the usual short answers.
pub const BODY_CAP: usize = 64 * 1024;
/// Under `rollcall once` (and `dlq retry`), a retry due later than this is not waited for: the
/// event stays where it is (the cursor does not pass it) and the next run tries it again.
pub const ONCE_PATIENCE: Duration = Duration::from_secs(60);
/// Events read beyond the cursor at most. Bounds memory while one user's retries hold the
/// cursor back; the others keep going until the window is full.
const WINDOW: usize = 4096;
const READ_CHUNK: usize = 512;
/// The cursor is written (and flushed) at most this often while events flow: a crash re-sends
/// at most this much, and a flush per event would cap throughput far below the HTTP rate.
const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// Pause before rebuilding the window after a store error under `run`.
const STORE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("sink '{sink}': {message}")]
    Secret { sink: String, message: String },
    #[error("sink '{sink}': secret #{index} is not `whsec_` followed by base64. Create one with `echo whsec_$(openssl rand -base64 32)` and give the same to the receiver")]
    BadSecret { sink: String, index: usize },
    #[error("sink '{sink}': no secret found where `secret_env`/`secret_file` points; put `whsec_<base64>` there")]
    NoSecret { sink: String },
    #[error("sink '{sink}': cannot build the HTTP client: {detail}")]
    Client { sink: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    #[error("sink '{sink}': the endpoint answered 410 Gone, so it is disabled and nothing more is sent to it. Fix the endpoint (or remove the sink), then restart rollcall: undelivered events are kept")]
    Gone { sink: String },
    #[error("sink '{sink}': replaying the event at offset {offset} failed: {reason}. Events after it were not replayed; fix the endpoint, then replay again from --from-offset {offset}")]
    ReplayFailed {
        sink: String,
        offset: u64,
        reason: String,
    },
    #[error("sink '{sink}': {count} event(s) still failing after the attempts `once` waits for (last error: {last_error}); the next run retries them from the stored cursor")]
    StillFailing {
        sink: String,
        count: usize,
        last_error: String,
    },
}

impl WebhookError {
    /// A disabled endpoint stays disabled until rollcall restarts.
    pub fn is_permanent(&self) -> bool {
        matches!(self, WebhookError::Gone { .. })
    }
}

/// Signs with every configured secret: during a rotation the receiver accepts either.
pub struct Signer {
    keys: Vec<Hmac<Sha256>>,
}

// Written by hand so that no derive can ever print key material.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer {{ {} secret(s) }}", self.keys.len())
    }
}

impl Signer {
    /// `secrets`: one or more `whsec_<base64>`, separated by whitespace.
    pub fn new(sink: &str, secrets: &str) -> Result<Signer, WebhookError> {
        let keys = secrets
            .split_whitespace()
            .enumerate()
            .map(|(i, s)| {
                let bad = || WebhookError::BadSecret {
                    sink: sink.to_owned(),
                    index: i + 1,
                };
                let key = BASE64
                    .decode(s.strip_prefix("whsec_").unwrap_or(s))
                    .map_err(|_| bad())?;
                Hmac::<Sha256>::new_from_slice(&key).map_err(|_| bad())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(WebhookError::NoSecret {
                sink: sink.to_owned(),
            });
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
    /// per secret, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mut out = String::with_capacity(self.keys.len() * 48);
        for key in &self.keys {
            let mut mac = key.clone();
            for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
                mac.update(part);
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            BASE64.encode_string(mac.finalize().into_bytes(), &mut out);
        }
        out
    }
}

/// Why one attempt did not count as delivered. Its text never holds the URL or a secret.
#[derive(Debug)]
enum Refusal {
    Gone,
    Status {
        code: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    Transport(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Gone => f.write_str("HTTP 410 Gone"),
            Refusal::Status { code, body, .. } if body.is_empty() => write!(f, "HTTP {code}"),
            Refusal::Status { code, body, .. } => write!(f, "HTTP {code}: {body}"),
            Refusal::Transport(e) => f.write_str(e),
        }
    }
}

/// What became of one event.
enum Outcome {
    Delivered,
    Gone,
    /// Every attempt of the schedule failed.
    Exhausted {
        reason: String,
        attempts: u32,
    },
    /// A retry was due later than the caller waits (`once`); the event stays undelivered.
    Deferred {
        reason: String,
    },
}

/// The waits between attempts, with ±10 % jitter so that endpoints recovering from an outage
/// are not hit by every sender in the same second.
struct Schedule(std::vec::IntoIter<Duration>);

impl Iterator for Schedule {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.0
            .next()
            .map(|d| d.mul_f64(rand::random_range(0.9..1.1)))
    }
}

/// One event ready to send.
#[derive(Clone)]
struct Job {
    offset: u64,
    id: String,
    /// The encoder's attribute headers (none in structured mode).
    headers: Vec<(&'static str, String)>,
    content_type: String,
    body: Bytes,
    /// The stored CloudEvent, which a dead letter keeps whatever the sink's format: `dlq retry`
    /// encodes it again, and the body may be an OCSF record that cannot be read back.
    event: Bytes,
}

impl Job {
    /// Encode a stored event with its user (the ordering key); `None` when the sink's
    /// `event_types` leave it out.
    fn encode(sink: &WebhookSink, stored: &StoredEvent) -> Result<Option<(User, Job)>, Unreadable> {
        let e = Envelope::parse(stored)?;
        if sink
            .filter
            .as_ref()
            .is_some_and(|f| !f.contains(e.event_type.as_ref()))
        {
            return Ok(None);
        }
        Job::from_envelope(&sink.encoder, &e).map(Some)
    }

    fn from_envelope(encoder: &Encoder, e: &Envelope<'_>) -> Result<(User, Job), Unreadable> {
        let encoded = encoder.encode(e)?;
        let event = Bytes::copy_from_slice(e.bytes);
        let body = match encoded.body {
            // Structured CloudEvents: the body is the stored event; share the one copy.
            Cow::Borrowed(body) if std::ptr::eq(body, e.bytes) => event.clone(),
            Cow::Borrowed(body) => Bytes::copy_from_slice(body),
            Cow::Owned(body) => Bytes::from(body),
        };
        let job = Job {
            offset: e.offset,
            id: e.id.to_string(),
            headers: encoded
                .headers
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect(),
            content_type: encoded.content_type.to_owned(),
            body,
            event,
        };
        Ok((encoded.key.into(), job))
    }
}

/// The HTTP side, shared by the delivery tasks.
struct Endpoint {
    sink: String,
    url: url::Url,
    client: reqwest::Client,
    signer: Signer,
    timeout: Duration,
    schedule: Vec<Duration>,
    /// Events currently between a failed attempt and their outcome.
    retrying: AtomicUsize,
    /// Health was reported as not ok and has not been reported ok since.
    degraded: AtomicBool,
}

impl Endpoint {
    async fn attempt(&self, job: &Job) -> Result<(), Refusal> {
        let timestamp = Utc::now().timestamp();
        let mut request = self
            .client
            .post(self.url.clone())
            .header("webhook-id", &job.id)
            .header("webhook-timestamp", timestamp)
            .header(
                "webhook-signature",
                self.signer.sign(&job.id, timestamp, &job.body),
            )
            .header(reqwest::header::CONTENT_TYPE, &job.content_type);
        for (name, value) in &job.headers {
            request = request.header(*name, value);
        }
        let response = request
            .body(job.body.clone())
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = match status.as_u16() {
            429 | 503 => response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            _ => None,
        };
        let body = read_capped(response).await;
        match status.as_u16() {
            200..=299 => Ok(()),
            410 => Err(Refusal::Gone),
            code => Err(Refusal::Status {
                code,
                retry_after,
                body: snippet(&body),
            }),
        }
    }

    fn transport(&self, e: reqwest::Error) -> Refusal {
        if e.is_timeout() {
            return Refusal::Transport(format!(
                "no response within {}",
                humantime::format_duration(self.timeout)
            ));
        }
        // reqwest's own text is vague ("error sending request"); the cause is in the chain.
        // `without_url` keeps a token in the URL out of every message.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        Refusal::Transport(text)
    }

    /// Send one event through the whole schedule (or until a retry would come later than
    /// `patience`), honouring `Retry-After`.
    async fn deliver(&self, store: &Store, job: &Job, patience: Option<Duration>) -> Outcome {
        let attempts = AtomicU32::new(0);
        let deferred = AtomicBool::new(false);
        let retried = AtomicBool::new(false);
        let longest = self.schedule.iter().max().copied().unwrap_or_default();
        let result = (|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(job)
        })
        .retry(Schedule(
            self.schedule.iter().skip(1).copied().collect::<Vec<_>>().into_iter(),
        ))
        .sleep(tokio::time::sleep)
        .when(|r| !matches!(r, Refusal::Gone))
        .adjust(|r, next| {
            let next = next?;
            let wait = match r {
                // The receiver knows best when it can take more, but no longer than the
                // schedule's longest wait: a typo of theirs must not park an event for days.
                Refusal::Status {
                    retry_after: Some(after),
                    ..
                } => (*after).min(longest),
                _ => next,
            };
            if patience.is_some_and(|p| wait > p) {
                deferred.store(true, Ordering::Relaxed);
                return None;
            }
            Some(wait)
        })
        .notify(|r, wait| {
            if !retried.swap(true, Ordering::Relaxed) {
                self.retrying.fetch_add(1, Ordering::Relaxed);
            }
            self.degraded.store(true, Ordering::Relaxed);
            metrics::counter!("rollcall_delivery_retries_total", "sink" => self.sink.clone()).increment(1);
            warn!(sink = %self.sink, offset = job.offset, webhook_id = %job.id, error = %r, retry_in = ?wait, "webhook delivery failed; retrying");
            let message = format!("offset {}: {r}", job.offset);
            if let Err(e) = store.set_sink_state(&self.sink, SinkHealth::Degraded, Some(message)) {
                error!(sink = %self.sink, error = %e, "cannot record the sink's health");
            }
        })
        .await;
        if retried.load(Ordering::Relaxed) {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
        }
        match result {
            Ok(()) => Outcome::Delivered,
            Err(Refusal::Gone) => Outcome::Gone,
            Err(r) if deferred.load(Ordering::Relaxed) => Outcome::Deferred {
                reason: r.to_string(),
            },
            Err(r) => Outcome::Exhausted {
                reason: r.to_string(),
                attempts: attempts.load(Ordering::Relaxed),
            },
        }
    }
}

/// Seconds, or an HTTP date (RFC 9110 allows both).
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = BODY_CAP - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() == BODY_CAP {
            break;
        }
    }
    buf
}

/// The start of a response body, on one line, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out.trim().to_owned()
}

pub struct WebhookSink {
    endpoint: Arc<Endpoint>,
    encoder: Encoder,
    /// The `type`s to send; `None`: all.
    filter: Option<HashSet<&'static str>>,
    max_in_flight: usize,
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
            .pool_max_idle_per_host(config.max_in_flight)
            .user_agent(concat!("rollcall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client {
                sink: config.name.clone(),
                detail: e.without_url().to_string(),
            })?;
        Ok(WebhookSink {
            endpoint: Arc::new(Endpoint {
                sink: config.name.clone(),
                url: config.url.clone(),
                client,
                signer,
                timeout: config.timeout,
                schedule: config.retry_schedule.clone(),
                retrying: AtomicUsize::new(0),
                degraded: AtomicBool::new(false),
            }),
            // A signed JSON body per event: the structured form, as receivers expect it.
            encoder: Encoder {
                format: config.format,
                mode: Mode::Structured,
                binding: Binding::Http,
            },
            filter: config
                .event_types
                .as_ref()
                .map(|t| t.iter().map(|t| t.as_str()).collect()),
            max_in_flight: config.max_in_flight,
        })
    }

    fn name(&self) -> &str {
        &self.endpoint.sink
    }

    /// For `once`: deliver up to the log head, waiting only for retries due within
    /// [`ONCE_PATIENCE`]. Events still failing then keep the cursor before them (later events
    /// of other users are sent anyway, and re-sent on the next run); that is an error.
    /// Returns how many events were delivered.
    async fn drain(&mut self, store: &Store) -> Result<u64, WebhookError> {
        let mut window = Window::open(self, store, Some(ONCE_PATIENCE))?;
        loop {
            window.fill(self)?;
            window.launch(self);
            window.save_cursor(false)?;
            let Some(done) = window.tasks.join_next().await else {
                break;
            };
            window.finish(done)?;
        }
        window.save_cursor(true)?;
        if let Some(last_error) = window.last_deferral.take() {
            return Err(WebhookError::StillFailing {
                sink: self.name().to_owned(),
                count: window.held_events(),
                last_error,
            });
        }
        Ok(window.delivered)
    }

    /// For `run`: deliver until `shutdown` turns true, through the whole retry schedule,
    /// reading more whenever `head` moves. Events in flight at shutdown are abandoned (the
    /// cursor is before them, so they are re-sent with the same id on the next start). After
    /// a 410 Gone the sink sends nothing more until rollcall restarts.
    async fn run(
        mut self,
        store: Store,
        mut head: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let result = self.serve_window(&store, &mut head, &mut shutdown).await;
            let pause = match result {
                Ok(()) => return,
                Err(e @ WebhookError::Gone { .. }) => {
                    error!(sink = self.name(), error = %e, "webhook endpoint disabled");
                    None
                }
                Err(e) => {
                    error!(sink = self.name(), error = %e, retry_in = ?STORE_RETRY, "webhook delivery stopped; restarting from the stored cursor");
                    Some(STORE_RETRY)
                }
            };
            let stop = async {
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() {
                        return;
                    }
                }
            };
            match pause {
                None => return stop.await,
                Some(pause) => tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop => return,
                },
            }
        }
    }

    async fn serve_window(
        &mut self,
        store: &Store,
        head: &mut watch::Receiver<u64>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), WebhookError> {
        let mut window = Window::open(self, store, None)?;
        let mut head_alive = true;
        loop {
            if *shutdown.borrow_and_update() {
                window.save_cursor(true)?;
                return Ok(());
            }
            window.fill(self)?;
            window.launch(self);
            window.save_cursor(false)?;
            let dirty = window.dirty();
            tokio::select! {
                Some(done) = window.tasks.join_next(), if !window.tasks.is_empty() => {
                    window.finish(done)?;
                }
                changed = head.changed(), if head_alive => head_alive = changed.is_ok(),
                // A dropped sender means nobody can ask any more: stop as if asked.
                stopped = shutdown.changed() => if stopped.is_err() {
                    window.save_cursor(true)?;
                    return Ok(());
                },
                _ = tokio::time::sleep(CURSOR_EVERY), if dirty => {}
            }
        }
    }

    /// `rollcall dlq retry`: send dead letters again (all, or the one at `only`), in offset
    /// order, with the same `webhook-id`; those delivered leave the queue.
    async fn retry_dead_letters(
        &self,
        store: &Store,
        only: Option<u64>,
    ) -> Result<RetryReport, WebhookError> {
        let mut report = RetryReport::default();
        for mut letter in store.dead_letters(self.name())? {
            if only.is_some_and(|o| o != letter.offset) {
                continue;
            }
            let job = self.letter_job(store, &letter)?;
            match self
                .endpoint
                .deliver(store, &job, Some(ONCE_PATIENCE))
                .await
            {
                Outcome::Delivered => {
                    store.remove_dead_letter(self.name(), letter.offset)?;
                    info!(sink = self.name(), offset = letter.offset, webhook_id = %job.id, "dead letter delivered");
                    report.delivered.push(letter.offset);
                }
                Outcome::Gone => {
                    store.set_sink_state(
                        self.name(),
                        SinkHealth::Disabled,
                        Some(format!("offset {}: HTTP 410 Gone", letter.offset)),
                    )?;
                    return Err(WebhookError::Gone {
                        sink: self.name().to_owned(),
                    });
                }
                Outcome::Exhausted { reason, attempts } => {
                    letter.attempts += attempts;
                    letter.reason = reason.clone();
                    letter.at = Utc::now();
                    store.dead_letter(self.name(), &letter)?;
                    report.failed.push((letter.offset, reason));
                }
                Outcome::Deferred { reason } => report.failed.push((letter.offset, reason)),
            }
        }
        if report.failed.is_empty() && store.sink_state(self.name())?.health == SinkHealth::Degraded
        {
            store.set_sink_state(self.name(), SinkHealth::Ok, None)?;
        }
        Ok(report)
    }

    /// For `rollcall replay`: send exactly `events` (a range the operator chose), one at a
    /// time in log order with their original `webhook-id`, waiting only for retries due within
    /// [`ONCE_PATIENCE`]. Events this sink's `event_types` exclude are skipped. Never reads or
    /// moves the stored cursor and never dead-letters: the first failure stops the replay.
    /// Returns how many events were sent.
    async fn send_range(&self, store: &Store, events: &[StoredEvent]) -> Result<u64, WebhookError> {
        let mut sent = 0;
        for e in events {
            let Some((_, job)) = Job::encode(self, e)? else {
                continue;
            };
            let reason = match self
                .endpoint
                .deliver(store, &job, Some(ONCE_PATIENCE))
                .await
            {
                Outcome::Delivered => {
                    sent += 1;
                    continue;
                }
                Outcome::Gone => {
                    return Err(WebhookError::Gone {
                        sink: self.name().to_owned(),
                    })
                }
                Outcome::Exhausted { reason, .. } | Outcome::Deferred { reason } => reason,
            };
            return Err(WebhookError::ReplayFailed {
                sink: self.name().to_owned(),
                offset: e.offset,
                reason,
            });
        }
        Ok(sent)
    }
}

impl WebhookSink {
    /// A dead letter as first sent: encoded from the log while it still holds the event, else
    /// from the copy kept with the letter (same content and id, so it verifies alike).
    fn letter_job(&self, store: &Store, letter: &DeadLetter) -> Result<Job, WebhookError> {
        let id = letter.event["id"].as_str().unwrap_or_default();
        let from_log = store
            .events_from(letter.offset, 1)?
            .into_iter()
            .find(|e| e.offset == letter.offset)
            .filter(|e| Envelope::parse(e).is_ok_and(|env| env.id == id));
        let stored = match from_log {
            Some(e) => e,
            None => StoredEvent {
                offset: letter.offset,
                bytes: serde_json::to_vec(&letter.event)
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("dead letter at offset {}", letter.offset),
                        detail: e.to_string(),
                    })?
                    .into(),
            },
        };
        let (_, mut job) = Job::from_envelope(&self.encoder, &Envelope::parse(&stored)?)?;
        // The id the receiver saw first, even if the stored copy disagrees.
        id.clone_into(&mut job.id);
        Ok(job)
    }
}

type User = Arc<str>;

/// The events between the cursor and the read position, and what is in flight.
struct Window {
    store: Store,
    endpoint: Arc<Endpoint>,
    sink: String,
    patience: Option<Duration>,
    /// Next log offset to read.
    read: u64,
    /// As stored.
    cursor: u64,
    saved_at: Instant,
    /// Read and not yet delivered or dead-lettered.
    open: BTreeSet<u64>,
    /// Per user, its open events in order; the front one is in flight unless the user is in
    /// `ready` or `held`.
    queues: HashMap<User, VecDeque<Job>>,
    ready: VecDeque<User>,
    /// Users whose front event was deferred (`once`): the rest of theirs wait for the next run.
    held: HashSet<User>,
    tasks: JoinSet<(User, Outcome)>,
    delivered: u64,
    last_deferral: Option<String>,
}

impl Window {
    fn open(
        sink: &WebhookSink,
        store: &Store,
        patience: Option<Duration>,
    ) -> Result<Window, WebhookError> {
        let cursor = store.cursor(sink.name())?;
        // Whatever a previous process reported is cleared at the first quiet moment.
        let reported = store.sink_state(sink.name())?.health;
        sink.endpoint
            .degraded
            .store(reported != SinkHealth::Ok, Ordering::Relaxed);
        Ok(Window {
            store: store.clone(),
            endpoint: sink.endpoint.clone(),
            sink: sink.name().to_owned(),
            patience,
            read: cursor,
            cursor,
            saved_at: Instant::now(),
            open: BTreeSet::new(),
            queues: HashMap::new(),
            ready: VecDeque::new(),
            held: HashSet::new(),
            tasks: JoinSet::new(),
            delivered: 0,
            last_deferral: None,
        })
    }

    /// Read from the log while the window has room.
    fn fill(&mut self, sink: &WebhookSink) -> Result<(), WebhookError> {
        while self.open.len() + READ_CHUNK <= WINDOW {
            let events = self.store.events_from(self.read, READ_CHUNK)?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            self.read = last.offset + 1;
            for e in &events {
                self.admit(sink, e)?;
            }
            if events.len() < READ_CHUNK {
                return Ok(());
            }
        }
        Ok(())
    }

    fn admit(&mut self, sink: &WebhookSink, e: &StoredEvent) -> Result<(), WebhookError> {
        let Some((user, job)) = Job::encode(sink, e)? else {
            return Ok(());
        };
        self.open.insert(e.offset);
        let queue = self.queues.entry(user.clone()).or_default();
        queue.push_back(job);
        if queue.len() == 1 {
            self.ready.push_back(user);
        }
        Ok(())
    }

    /// Start the front event of ready users, up to `max_in_flight`.
    fn launch(&mut self, sink: &WebhookSink) {
        while self.tasks.len() < sink.max_in_flight {
            let Some(user) = self.ready.pop_front() else {
                return;
            };
            let job = self.queues[&user][0].clone();
            let endpoint = sink.endpoint.clone();
            let store = self.store.clone();
            let patience = self.patience;
            self.tasks.spawn(async move {
                let outcome = endpoint.deliver(&store, &job, patience).await;
                (user, outcome)
            });
        }
    }

    fn finish(
        &mut self,
        done: Result<(User, Outcome), tokio::task::JoinError>,
    ) -> Result<(), WebhookError> {
        let (user, outcome) = match done {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => unreachable!("delivery tasks are only cancelled with their window: {e}"),
        };
        let job = self.queues[&user]
            .front()
            .expect("the event in flight is its user's first")
            .clone();
        match outcome {
            Outcome::Delivered => {
                self.delivered += 1;
                debug!(sink = %self.sink, offset = job.offset, "delivered");
                let calm =
                    self.held.is_empty() && self.endpoint.retrying.load(Ordering::Relaxed) == 0;
                if calm && self.endpoint.degraded.swap(false, Ordering::Relaxed) {
                    self.store
                        .set_sink_state(&self.sink, SinkHealth::Ok, None)?;
                }
            }
            Outcome::Exhausted { reason, attempts } => {
                let event =
                    serde_json::from_slice(&job.event).map_err(|e| StoreError::Corrupt {
                        what: format!("event at offset {}", job.offset),
                        detail: e.to_string(),
                    })?;
                self.store.dead_letter(
                    &self.sink,
                    &DeadLetter {
                        offset: job.offset,
                        event,
                        reason: reason.clone(),
                        attempts,
                        at: Utc::now(),
                    },
                )?;
                warn!(sink = %self.sink, offset = job.offset, webhook_id = %job.id, attempts, error = %reason, "retry schedule exhausted; event dead-lettered (see `rollcall dlq list`)");
            }
            Outcome::Gone => {
                self.save_cursor(true)?;
                self.store.set_sink_state(
                    &self.sink,
                    SinkHealth::Disabled,
                    Some(format!("offset {}: HTTP 410 Gone", job.offset)),
                )?;
                return Err(WebhookError::Gone {
                    sink: self.sink.clone(),
                });
            }
            Outcome::Deferred { reason } => {
                self.held.insert(user);
                self.last_deferral = Some(reason);
                return Ok(());
            }
        }
        let queue = self
            .queues
            .get_mut(&user)
            .expect("a user in flight has a queue");
        queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&user);
        } else {
            self.ready.push_back(user);
        }
        self.open.remove(&job.offset);
        Ok(())
    }

    fn held_events(&self) -> usize {
        self.held.iter().map(|u| self.queues[u].len()).sum()
    }

    /// Everything below this offset is delivered, filtered out or dead-lettered.
    fn safe_cursor(&self) -> u64 {
        self.open.first().copied().unwrap_or(self.read)
    }

    fn dirty(&self) -> bool {
        self.safe_cursor() != self.cursor
    }

    fn save_cursor(&mut self, now: bool) -> Result<(), WebhookError> {
        let endpoint_quiet = self.held.is_empty() && self.tasks.is_empty() && self.open.is_empty();
        if self.dirty() && (now || self.saved_at.elapsed() >= CURSOR_EVERY || endpoint_quiet) {
            self.cursor = self.safe_cursor();
            self.store.set_cursor(&self.sink, self.cursor)?;
            self.saved_at = Instant::now();
        }
        Ok(())
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        WebhookSink::name(self)
    }

    fn batch_size(&self) -> usize {
        READ_CHUNK
    }

    fn drain<'a>(
        &'a mut self,
        store: &'a Store,
        _stop: Option<&'a watch::Receiver<bool>>,
    ) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move { Ok(WebhookSink::drain(self, store).await?) })
    }

    fn serve(
        self: Box<Self>,
        store: Store,
        head: watch::Receiver<u64>,
        shutdown: watch::Receiver<bool>,
    ) -> Serving {
        Serving::Own(Box::pin((*self).run(store, head, shutdown)))
    }

    fn send_range<'a>(
        &'a mut self,
        store: &'a Store,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move { Ok(WebhookSink::send_range(self, store, events).await?) })
    }

    fn retry_dead_letters<'a>(
        &'a self,
        store: &'a Store,
        only: Option<u64>,
    ) -> BoxFuture<'a, Result<RetryReport, SinkError>> {
        Box::pin(async move { Ok(WebhookSink::retry_dead_letters(self, store, only).await?) })
    }
}
