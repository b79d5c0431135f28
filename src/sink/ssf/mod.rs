//! The SSF sink: rollcall as an OpenID Shared Signals transmitter (SSF 1.0, CAEP 1.0, RISC
//! 1.0). Receivers discover it, create streams through its management API, and get Security
//! Event Tokens pushed (RFC 8935) or poll for them (RFC 8936); see `docs/ssf.md`.
//!
//! Owns the transmitter: its listener (`api.rs`: metadata, JWKS, stream management, poll),
//! its streams while it runs (`live.rs`), each stream's delivery as a sink of its own
//! (`member.rs`: one SET per event, pushed or queued for polling), what a stream is
//! (`stream.rs`), what an event becomes (`set.rs`), the signing key (`keys.rs`), a poll
//! stream's queue (`poll.rs`) and the config (`config.rs`). It is a [`Fleet`]: every stream
//! keeps its own cursor under `<sink>/<stream id>`, and the delivery engine serves it like any
//! sink (order per user, retries, `Retry-After`, dead letters, health, metrics), so a receiver
//! that was away gets everything it missed, as the SETs first made.
//!
//! It must never log, store in a message or return the management token, the signing key or
//! a receiver's `authorization_header`, follow a redirect, push over plain HTTP to anything but
//! a loopback address, or read more than [`BODY_CAP`] bytes of a receiver's answer.

mod api;
mod config;
mod keys;
mod live;
mod member;
mod poll;
mod set;
mod stream;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

pub use config::{DefaultSubjects, SigningAlgorithm, SsfConfig};

use crate::encode::Encoder;
use crate::sink::{Delivery, Fleet, Message, Order, Refusal, Roster, Sink, SinkError, SinkKind};
use crate::store::{Store, StoreError};

/// Response bytes read at most: enough for an error body.
pub const BODY_CAP: usize = 64 * 1024;

/// What only SSF sinks export: nothing beyond the engine's per-stream metrics.
pub const METRICS: &[(&str, &str)] = &[];

/// An SSF sink has nothing to reopen on SIGHUP.
pub fn on_hangup() {}

#[derive(Debug, thiserror::Error)]
pub enum SsfError {
    #[error("sink '{sink}': cannot read the signing key {path}")]
    KeyFile {
        sink: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sink '{sink}': {path} is not a {expected} private key in PEM ({detail}). Make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ssf.pem` (RS256) or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ssf.pem` (ES256)")]
    BadKey {
        sink: String,
        path: std::path::PathBuf,
        expected: String,
        detail: String,
    },
    #[error("sink '{sink}': the RSA key in {path} has {bits} bits; receivers expect at least 2048. Make a new one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ssf.pem`")]
    ShortKey {
        sink: String,
        path: std::path::PathBuf,
        bits: usize,
    },
    #[error("sink '{sink}': cannot read the management token")]
    Token {
        sink: String,
        #[source]
        source: crate::settings::SecretError,
    },
    #[error("sink '{sink}': cannot build the HTTP client: {detail}")]
    Client { sink: String, detail: String },
    #[error("sink '{sink}': cannot sign a SET: {detail}")]
    Sign { sink: String, detail: String },
    #[error("sink '{sink}' is an SSF transmitter: only its streams take events, each under `rollcall run` (`rollcall once` drains push streams); replaying to a stream is not supported, and each stream's dead letters show in `rollcall status` as `<sink>/<stream id>`")]
    NotADestination { sink: String },
    #[error("sink '{sink}': cannot read its streams from the store")]
    Store {
        sink: String,
        #[source]
        source: StoreError,
    },
    /// The receiver answered, but not 202. Its text never holds a secret.
    #[error("HTTP {code}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { code: u16, body: String },
    /// The receiver refused the SET for good (RFC 8935 §2.3, RFC 8936 `setErrs`).
    #[error("the receiver refused the SET: {err}: {description}")]
    Rejected { err: String, description: String },
    /// No answer: connection refused, TLS, timeout.
    #[error("{detail}")]
    Transport { detail: String },
    #[error("stream {stream}: the stored event is not one rollcall wrote: {detail}")]
    Unreadable { stream: String, detail: String },
}

impl SsfError {
    /// A key that cannot sign, or a sink asked to be a destination, stays so until an operator
    /// acts.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SsfError::KeyFile { .. }
                | SsfError::BadKey { .. }
                | SsfError::ShortKey { .. }
                | SsfError::Sign { .. }
                | SsfError::NotADestination { .. }
                | SsfError::Unreadable { .. }
        )
    }
}

/// The name a stream's deliveries keep their cursor, health and dead letters under.
pub fn delivery_name(sink: &str, stream_id: &str) -> String {
    format!("{sink}/{stream_id}")
}

/// What every stream of one transmitter shares.
pub(crate) struct Transmitter {
    pub(crate) config: SsfConfig,
    pub(crate) signer: keys::Signer,
    /// SHA-256 of the management token; `None`: the management API is off.
    pub(crate) token: Option<[u8; 32]>,
    pub(crate) client: reqwest::Client,
    /// The issuer as written in every SET and document: without a trailing `/`.
    pub(crate) issuer: String,
}

impl Transmitter {
    fn new(config: &SsfConfig) -> Result<Transmitter, SsfError> {
        use secrecy::ExposeSecret;
        use sha2::Digest;
        let signer = keys::Signer::load(config)?;
        let token = config
            .token()?
            .map(|t| sha2::Sha256::digest(t.expose_secret().as_bytes()).into());
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("rollcall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SsfError::Client {
                sink: config.name.clone(),
                detail: e.to_string(),
            })?;
        Ok(Transmitter {
            config: config.clone(),
            signer,
            token,
            client,
            issuer: config.issuer.as_str().trim_end_matches('/').to_owned(),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }
}

/// A transmitter signs its SETs (its JWKS is its public key), and each of its streams keeps
/// a cursor of its own.
/// Each receiver chooses its stream's events (`events_requested`, subjects): a filter of the
/// sink's own would hide events from receivers that asked for them.
impl crate::sink::TakesSubscription for SsfConfig {
    const TAKES: bool = false;
}

impl SinkKind for SsfConfig {
    fn public_keys(&self) -> Option<Result<Vec<String>, SinkError>> {
        let jwks = keys::Signer::load(self).map(|s| vec![s.jwks().to_string()]);
        Some(jwks.map_err(SinkError::from))
    }

    /// The streams whose events are kept (enabled or paused).
    fn deliveries(&self, store: &Store) -> Option<Result<Vec<String>, StoreError>> {
        Some(stream::stored(store, &self.name).map(|streams| {
            streams
                .iter()
                .filter(|s| s.holds_events())
                .map(|s| delivery_name(&self.name, &s.stream_id))
                .collect()
        }))
    }
}

impl SsfConfig {
    pub fn build(&self) -> Result<Box<dyn Sink>, SsfError> {
        Ok(Box::new(SsfSink {
            transmitter: Arc::new(Transmitter::new(self)?),
            encoder: member::ENCODER,
        }))
    }

    /// What `check-config` can check without listening: the key, the token, the HTTP client.
    pub fn check(&self) -> Result<(), SsfError> {
        Transmitter::new(self).map(drop)
    }
}

/// The transmitter as the config's sink: it delivers nothing itself, its streams do.
struct SsfSink {
    transmitter: Arc<Transmitter>,
    encoder: Encoder,
}

impl Sink for SsfSink {
    fn name(&self) -> &str {
        self.transmitter.name()
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            order: Order::PerUser {
                schedule: self.transmitter.config.retry_schedule.clone(),
            },
            batch: 1,
            max_in_flight: 1,
        }
    }

    fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn send(&self, _: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        let sink = self.name().to_owned();
        Box::pin(async move { Err(Refusal::new(SsfError::NotADestination { sink })) })
    }

    /// The key signs (its `kid`); the listener is `run`'s.
    fn probe(&self) -> BoxFuture<'_, Result<String, SinkError>> {
        let t = &self.transmitter;
        let said = format!(
            "signing key loads ({:?}, kid {}); streams are served on {} under `rollcall run`",
            t.config.algorithm,
            t.signer.kid(),
            t.config.listen
        );
        Box::pin(async move { Ok(said) })
    }

    fn fleet(&self) -> Option<&dyn Fleet> {
        Some(self)
    }
}

impl Fleet for SsfSink {
    fn run(
        &self,
        store: Store,
        roster: mpsc::Sender<Roster>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'_, ()> {
        let t = self.transmitter.clone();
        Box::pin(async move {
            let live = live::Live::start(t, store, roster, shutdown.clone()).await;
            api::serve(live, shutdown).await;
        })
    }

    /// Enabled push streams: a poll stream needs its receiver, which only `run` listens for.
    fn members(&self, store: &Store) -> Result<Vec<Box<dyn Sink>>, SinkError> {
        let t = &self.transmitter;
        let streams = stream::stored(store, t.name()).map_err(|source| SsfError::Store {
            sink: t.name().to_owned(),
            source,
        })?;
        Ok(streams
            .into_iter()
            .filter(|s| s.status == stream::Status::Enabled && !stream::is_poll(&s.delivery))
            .map(|s| member::StreamSink::boxed(t.clone(), Arc::new(member::Shared::new(s))))
            .collect())
    }
}
