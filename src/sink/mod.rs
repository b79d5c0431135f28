//! Sinks: where events go. This module is the registry of sink kinds and the interface every
//! kind implements.
//!
//! Owns the list of kinds (one line each in the `sinks!` invocation below) and the [`Sink`] trait. Nothing outside
//! this file matches on a sink's kind: config, check-config, delivery, replay and dead letters
//! all go through [`SinkConfig`] and [`Sink`]. Each kind lives in its own folder with its
//! config (`config.rs`) and must never import another kind, nor `deliver`.
//!
//! Every sink delivers at least once and in log order per user, moving its stored cursor only
//! past events delivered (or dead-lettered); no sink ever skips an event silently.

pub mod jsonl;
pub mod kafka;
pub mod webhook;

use futures::future::BoxFuture;
use tokio::sync::watch;
use toml::de::DeValue;
use toml::Spanned;

use crate::settings::{one_of, Entry, Problems};
use crate::store::{Store, StoredEvent};

/// One sink, built from its config. Object-safe: sinks are held as `Box<dyn Sink>`.
pub trait Sink: Send {
    /// The config's `name`: it keys the cursor, health and dead letters in the store.
    fn name(&self) -> &str;

    /// Events read from the log at a time (replay reads in chunks of this size).
    fn batch_size(&self) -> usize;

    /// Deliver from the stored cursor up to the log head (or until `stop` turns true), moving
    /// the cursor only past what is delivered; returns how many events were delivered.
    fn drain<'a>(
        &'a mut self,
        store: &'a Store,
        stop: Option<&'a watch::Receiver<bool>>,
    ) -> BoxFuture<'a, Result<u64, SinkError>>;

    /// How `run` drives this sink (see [`Serving`]).
    fn serve(
        self: Box<Self>,
        store: Store,
        head: watch::Receiver<u64>,
        shutdown: watch::Receiver<bool>,
    ) -> Serving;

    /// For `rollcall replay`: send exactly `events` (a range the operator chose), never reading
    /// or moving the stored cursor; returns how many the sink took (a filter may skip some).
    fn send_range<'a>(
        &'a mut self,
        store: &'a Store,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<u64, SinkError>>;

    /// For `rollcall dlq retry`: send dead letters again (all, or the one at `only`); those
    /// delivered leave the queue. Only sinks that give up on events have any.
    fn retry_dead_letters<'a>(
        &'a self,
        _store: &'a Store,
        _only: Option<u64>,
    ) -> BoxFuture<'a, Result<RetryReport, SinkError>> {
        let sink = self.name().to_owned();
        Box::pin(async move { Err(SinkError::NoDeadLetters { sink }) })
    }
}

/// How `run` drives a sink.
pub enum Serving {
    /// `deliver` drains it whenever the log head moves, pausing between failed attempts.
    Drained(Box<dyn Sink>),
    /// It keeps events in flight while the head moves (one user retrying must not hold back
    /// the others), so it runs its own loop until shutdown.
    Own(BoxFuture<'static, ()>),
}

/// What `dlq retry` did.
#[derive(Debug, Default)]
pub struct RetryReport {
    pub delivered: Vec<u64>,
    /// Offset and why it failed again; these stay in the dead-letter queue.
    pub failed: Vec<(u64, String)>,
}

/// The registry: one line per kind, `kind => Variant(module::Config, module::Error)`. Generates
/// [`SinkConfig`] (parsed by `kind`) and [`SinkError`], and their dispatch. Each kind's config
/// provides `name`, `validate`, `describe`, `check` and `build`; each error, `is_permanent`.
macro_rules! sinks {
    ($($kind:ident => $variant:ident($config:ty, $error:ty)),+ $(,)?) => {
        /// One `[[sinks]]` entry, of any kind.
        #[derive(Debug, Clone)]
        pub enum SinkConfig {
            $($variant($config),)+
        }

        #[derive(Debug, thiserror::Error)]
        pub enum SinkError {
            $(
                #[error(transparent)]
                $variant(#[from] $error),
            )+
            #[error("sink '{sink}' does not dead-letter events (only webhook sinks do), so there is nothing to retry")]
            NoDeadLetters { sink: String },
        }

        impl SinkConfig {
            /// Every kind, as written in `kind = "…"`.
            pub const KINDS: &'static [&'static str] = &[$(stringify!($kind)),+];

            /// Read one `[[sinks]]` table (without its `kind`) as `kind`; problems go to `p`.
            pub fn parse(
                kind: &str,
                at: std::ops::Range<usize>,
                table: &Spanned<DeValue<'_>>,
                p: &mut Problems<'_>,
            ) -> Option<SinkConfig> {
                match kind {
                    $(stringify!($kind) => p.de(table).map(SinkConfig::$variant),)+
                    other => {
                        p.at(
                            at,
                            format!(
                                "unknown sink kind `{other}`; expected {}",
                                one_of(SinkConfig::KINDS)
                            ),
                        );
                        None
                    }
                }
            }

            pub fn name(&self) -> &str {
                match self {
                    $(SinkConfig::$variant(c) => &c.name,)+
                }
            }

            /// The checks serde cannot make, each reported at its key in `entry`.
            pub fn validate(&self, entry: Entry<'_, '_>, p: &mut Problems<'_>) {
                match self {
                    $(SinkConfig::$variant(c) => c.validate(entry, p),)+
                }
            }

            /// The `check-config` line: what and where, never a secret (nor a URL's path).
            pub fn describe(&self) -> String {
                match self {
                    $(SinkConfig::$variant(c) => c.describe(),)+
                }
            }

            /// What `check-config` can check without reaching the destination (secrets).
            pub fn check(&self) -> Result<(), SinkError> {
                match self {
                    $(SinkConfig::$variant(c) => Ok(c.check()?),)+
                }
            }

            /// Build the sink. Connects to nothing yet, but whatever can be checked without
            /// the destination (secrets, client options) is checked here.
            pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
                match self {
                    $(SinkConfig::$variant(c) => Ok(c.build()?),)+
                }
            }
        }

        impl SinkError {
            /// Retrying cannot help until an operator acts: the sink stops (and says why).
            pub fn is_permanent(&self) -> bool {
                match self {
                    $(SinkError::$variant(e) => e.is_permanent(),)+
                    SinkError::NoDeadLetters { .. } => true,
                }
            }
        }
    };
}

sinks! {
    jsonl => Jsonl(jsonl::JsonlConfig, jsonl::JsonlError),
    webhook => Webhook(webhook::WebhookConfig, webhook::WebhookError),
    kafka => Kafka(kafka::KafkaConfig, kafka::KafkaError),
}
