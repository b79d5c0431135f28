//! Sinks: where events go. This module is the registry of sink kinds and the interface every
//! kind implements.
//!
//! Owns the list of kinds (one line each in the `sinks!` invocation below), the [`Sink`] trait
//! and the vocabulary it speaks ([`Message`], [`Refusal`], [`Order`]). Config, check-config,
//! delivery, replay and dead letters all go through [`SinkConfig`] and [`Sink`] (and, for a kind
//! whose destinations come and go while it runs, [`Fleet`] and [`Roster`]; for a kind whose
//! destination several processes share, the [`Board`] they claim their sources on); outside tests,
//! only `rollcall sink public-key` (in `cli`) names a kind, the webhook, the one kind with keys
//! to show. Each kind lives in its own folder with its config (`config.rs`) and must never
//! import another kind, nor `deliver`.
//!
//! A sink only sends what it is given and says what was acknowledged. Everything that makes
//! delivery at-least-once (the cursor, the window of events in flight, retries and their
//! pauses, health, dead letters) is `deliver`'s, written once for every kind.

pub mod jsonl;
pub mod kafka;
pub mod redact;
pub mod ssf;
pub mod subscription;
pub mod webhook;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use toml::de::DeValue;
use toml::Spanned;

use crate::encode::{Encoder, Envelope, Unreadable};
use crate::settings::{one_of, Entry, Problems};
use crate::store::{Store, StoreError};
use subscription::Subscribed;
pub use subscription::{Subscription, TakesSubscription};

/// One event as a sink puts it on the wire: encoded once, then owned by the delivery engine
/// (it may wait in the window while retries go on).
#[derive(Debug, Clone)]
pub struct Message {
    /// Where the event is in the log.
    pub offset: u64,
    /// The event id: the same on every redelivery and replay, so consumers can de-duplicate.
    pub id: String,
    /// The ordering key (one per user, one per action-log row): events with the same key
    /// arrive in log order.
    pub key: Arc<str>,
    /// Attribute headers in the order they are sent; empty when the body carries them.
    pub headers: Headers,
    pub content_type: String,
    pub body: Bytes,
    /// When rollcall observed the event (its `time`), for the delivery latency metric.
    pub observed: Option<chrono::DateTime<chrono::Utc>>,
    /// A replay: the body carries the marker already, and a sink with headers of its own (a
    /// webhook) says so in one.
    pub replayed: bool,
    /// The message removes its key (a table's row of a deleted user): no value is sent.
    pub tombstone: bool,
}

impl Message {
    /// Fails only in OCSF, for a stored event whose `data` lacks what its `type` promises.
    pub fn encode(encoder: &Encoder, e: &Envelope<'_>, store: &str) -> Result<Message, Unreadable> {
        let encoded = encoder.encode(e, store)?;
        Ok(Message {
            offset: e.offset,
            id: e.id.to_string(),
            key: encoded.key.into(),
            headers: Headers::of(&encoded.headers),
            content_type: encoded.content_type.to_owned(),
            // A body borrowed from the stored event shares its bytes rather than copying them:
            // a kilobyte-sized allocation per event is one that glibc's allocator serves by
            // sorting its free lists first, which showed in the webhook sink's profile.
            body: match (encoded.body, e.stored) {
                (Cow::Borrowed(body), Some(stored)) => {
                    Bytes::from_owner(stored.clone()).slice_ref(body)
                }
                (Cow::Borrowed(body), None) => Bytes::copy_from_slice(body),
                (Cow::Owned(body), _) => Bytes::from(body),
            },
            observed: e.time().ok(),
            replayed: e.replayed,
            tombstone: encoder.tombstone(&e.event_type),
        })
    }
}

/// A message's attribute headers: their values in one string, and each header's name and the
/// end of its value there. Two allocations per message rather than one per header: the
/// delivering thread allocates every message and librdkafka's frees it, and small allocations
/// by the thousand are what glibc's allocator spends its time on in the Kafka sink's profile.
#[derive(Debug, Default, Clone)]
pub struct Headers {
    values: String,
    names: Vec<(&'static str, usize)>,
}

impl Headers {
    fn of(headers: &[(&'static str, &str)]) -> Headers {
        let mut values = String::with_capacity(headers.iter().map(|(_, v)| v.len()).sum());
        let names = headers
            .iter()
            .map(|(name, value)| {
                values.push_str(value);
                (*name, values.len())
            })
            .collect();
        Headers { values, names }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Each header's name and value, in the order they are sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let mut start = 0;
        self.names.iter().map(move |(name, end)| {
            let value = &self.values[start..*end];
            start = *end;
            (*name, value)
        })
    }
}

/// At most `cap` bytes of an HTTP answer's body (what HTTP sinks read of a receiver's answer:
/// enough for an error message, never a flood).
pub(crate) async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() == cap {
            break;
        }
    }
    buf
}

/// Why a batch was not acknowledged in full.
#[derive(Debug)]
pub struct Refusal {
    /// Messages acknowledged from the start of the batch before the one refused; the rest of
    /// the batch counts as not sent (a pipelined sink re-sends them, at least once).
    pub acked: usize,
    /// What went wrong, in words an operator acts on; [`SinkError::is_permanent`] says whether
    /// trying again can help before an operator acts.
    pub error: SinkError,
    /// When the destination asked to be tried again (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The destination refused this one message for good, and said so (an SSF receiver's
    /// `400` with an error code): under [`Order::PerUser`] it is dead-lettered at once, without
    /// the rest of the retry schedule, and the sink goes on.
    pub rejected: bool,
}

impl Refusal {
    /// The first message of the batch was refused.
    pub fn new(error: impl Into<SinkError>) -> Refusal {
        Refusal {
            acked: 0,
            error: error.into(),
            retry_after: None,
            rejected: false,
        }
    }

    /// The first `acked` messages were acknowledged, the next one refused.
    pub fn after(acked: usize, error: impl Into<SinkError>) -> Refusal {
        Refusal {
            acked,
            ..Refusal::new(error)
        }
    }
}

/// How order per user is kept, which decides how the delivery engine sends and retries.
#[derive(Debug, Clone)]
pub enum Order {
    /// The engine sends one event per user at a time, and retries each event on its own
    /// after the pauses of `schedule`; an event that fails them all is dead-lettered, so one
    /// broken event never blocks the others. (Webhooks: each request stands alone.)
    PerUser { schedule: Vec<Duration> },
    /// The destination keeps the order of what it is given (one file; one partition per key
    /// with an idempotent producer), so the engine sends batches back to back. A failure
    /// rewinds to the oldest unacknowledged event and re-sends from there after a pause;
    /// nothing is ever dead-lettered.
    Pipelined,
}

/// How the delivery engine drives a sink.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub order: Order,
    /// Messages per [`Sink::send`] call (1 for [`Order::PerUser`]).
    pub batch: usize,
    /// Messages sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
}

/// One sink, built from its config. Object-safe: sinks are held as `Box<dyn Sink>`.
pub trait Sink: Send + Sync {
    /// The config's `name`: it keys the cursor, health and dead letters in the store.
    fn name(&self) -> &str;

    fn delivery(&self) -> Delivery;

    /// The encoder of the sink's `format` (and binding).
    fn encoder(&self) -> &Encoder;

    /// Whether the sink takes this event: what its [`Subscription`] chose (the registry's
    /// wrapper answers that), or what a destination that chooses its own events asked for (an
    /// SSF stream's `events_requested`). Those it does not take count as done, and as
    /// filtered out.
    fn takes(&self, _event: &Envelope<'_>) -> bool {
        true
    }

    /// What the sink's subscriber may not see in clear (`redact_fields`): the engine redacts
    /// each event before the sink encodes it, and before it keeps a dead letter. Only the
    /// registry's wrapper has one.
    fn redactor(&self) -> Option<&redact::Redactor> {
        None
    }

    /// Get ready to send the event at `offset` and after: called before the first send and
    /// after a failure (connect, check the destination exists).
    fn prepare(&self, _offset: u64) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    /// Send `batch` in order; `Ok` once every message is acknowledged. An
    /// [`Order::Pipelined`] sink hands the whole batch to the destination before `send`
    /// returns (the future only waits for acknowledgements), so calls keep log order.
    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>>;

    /// For `rollcall doctor`: check the destination can be reached without sending an event;
    /// says what was checked.
    fn probe(&self) -> BoxFuture<'_, Result<String, SinkError>>;

    /// Whether `rollcall doctor --send-test-event` may send this sink a test event: only where
    /// a receiver can tell it apart and drop it (a webhook answers it and is done), never into
    /// a topic or a file that consumers read as the log.
    fn takes_test_events(&self) -> bool {
        false
    }

    /// After a failed send, before the engine tries again (e.g. replace a producer that
    /// failed for good).
    fn recover(&self) {}

    /// A sink whose destinations come and go while `run` serves it; `None` for a sink that is
    /// one destination.
    fn fleet(&self) -> Option<&dyn Fleet> {
        None
    }
}

/// Under `run`, what a [`Fleet`] asks of whoever serves it.
pub enum Roster {
    /// Deliver to this destination from its stored cursor, as to any sink, until stopped.
    Serve(Box<dyn Sink>),
    /// Stop delivering to the destination of this name; `stopped` is told once nothing of it
    /// is in flight and its cursor is saved (also when nothing served it).
    Stop {
        name: String,
        stopped: oneshot::Sender<()>,
    },
}

/// A sink whose destinations come and go while `run` serves it: an SSF transmitter, whose
/// receivers create, pause and delete streams. It runs a service of its own (its listener) and
/// hands each destination over as a sink of its own, keeping its cursor under its own name,
/// which the delivery engine serves like any other sink.
pub trait Fleet: Send + Sync {
    /// `run`: serve until `shutdown` turns true, asking for destinations on `roster`.
    fn run(
        &self,
        store: Store,
        roster: mpsc::Sender<Roster>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'_, ()>;

    /// `once`: the destinations that can be delivered to without the service.
    fn members(&self, store: &Store) -> Result<Vec<Box<dyn Sink>>, SinkError>;
}

/// What a sink kind does beyond sending, where only some kinds do anything: each kind's config
/// implements it, and the defaults do nothing. With the registry's per-kind `METRICS` and
/// `on_hangup`, it is how the rest of rollcall asks a kind without naming it.
pub trait SinkKind {
    /// The destination takes one writer only (a file): while `run` serves the sink, nothing
    /// else may send to it.
    fn single_writer(&self) -> bool {
        false
    }

    /// The public keys receivers verify this sink's signatures with (`rollcall sink
    /// public-key`); `None` when the kind signs nothing.
    fn public_keys(&self) -> Option<Result<Vec<String>, SinkError>> {
        None
    }

    /// The file the sink appends to; `None` when it writes elsewhere (stdout, the network).
    fn file(&self) -> Option<&std::path::Path> {
        None
    }

    /// What the destination holds of the shard `shard` (the config's: where several shards
    /// share a destination, only the events whose `source` names it), read back in log order
    /// for `rollcall verify --topic`; `None` when the kind cannot be read back.
    fn read_back(&self, _shard: Option<&str>) -> Option<Result<ReadBack, SinkError>> {
        None
    }

    /// A sink that publishes the current users as a table (a Kafka sink with `table =
    /// true`), for `rollcall table rebuild`; `None` when the kind keeps no table.
    fn table(&self) -> Option<Result<Box<dyn Table>, SinkError>> {
        None
    }

    /// The names the sink keeps cursors under in `store`, when they are not just its own name
    /// (a [`Fleet`]: one per destination that holds events back).
    fn deliveries(&self, _store: &Store) -> Option<Result<Vec<String>, StoreError>> {
        None
    }

    /// Where the processes writing to this sink's destination claim the sources they poll
    /// ([`Board`]); `None` when the kind keeps no claims, or the sink's config turns them off.
    /// Connects to nothing yet.
    fn board(&self) -> Option<Result<Box<dyn Board>, SinkError>> {
        None
    }
}

/// Where the rollcall processes that write to one destination claim the sources they poll, so
/// that no source is polled by two of them into it (docs/scaling.md, Claims): a Kafka sink's
/// claims topic. It holds at most one claim per store and URL: a store's newer claim on a URL
/// replaces its older one. Deciding who holds a source is [`crate::claim::verdict`]'s; a board
/// only keeps the claims.
pub trait Board: Send + Sync {
    /// Where the claims are, for messages (e.g. "the claims topic `t.claims` of sink 'bus'").
    fn place(&self) -> &str;

    /// Read every claim published before this call; from the first call that succeeds on, the
    /// board also follows what is published after it, by itself.
    fn catch_up(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// A catch-up has succeeded: until then, [`Board::claims`] knows nothing.
    fn caught_up(&self) -> bool;

    /// Every claim read so far, of every store.
    fn claims(&self) -> Vec<crate::claim::Claim>;

    /// Publish `claim`, replacing its store's earlier claim on its URL.
    fn publish<'a>(
        &'a self,
        claim: &'a crate::claim::Claim,
    ) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Withdraw the claim of the store `store` on `url`.
    fn withdraw<'a>(&'a self, url: &'a str, store: &'a str)
        -> BoxFuture<'a, Result<(), SinkError>>;
}

/// One current user as a table holds it: `key` `<source>:<subject>`, as the user's events are
/// keyed, and `value` the record as events hold it in `data.user`.
pub struct Row {
    pub key: String,
    pub source: String,
    pub subject: String,
    pub value: Vec<u8>,
}

/// A sink that keeps a table of the current users: `rollcall table rebuild` hands it every
/// current user as a [`Row`].
pub trait Table: Send + Sync {
    /// Publish `rows` in order; how many, once the destination acknowledged them all.
    fn publish(&self, rows: mpsc::Receiver<Row>) -> BoxFuture<'_, Result<u64, SinkError>>;
}

/// A destination's events read back, each where it was found, in log order.
pub type ReadBack = Box<dyn Iterator<Item = Result<crate::chain::record::Delivered, SinkError>>>;

/// The registry: one line per kind, `kind => Variant(module::Config, module::Error)`. Generates
/// [`SinkConfig`] (parsed by `kind`) and [`SinkError`], and their dispatch. Each kind's config
/// provides `name`, `validate`, `describe`, `check` and `build`, holds the `subscription` the
/// registry reads, implements [`SinkKind`] and [`TakesSubscription`] and derives `JsonSchema`
/// (its doc comments are the reference operators read);
/// each error, `is_permanent`; each kind's module, `METRICS` (the metrics only it exports,
/// with their help) and `on_hangup` (what it does on SIGHUP).
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
            /// The sink's redaction key, whatever its kind.
            #[error(transparent)]
            Redact(#[from] redact::RedactError),
        }

        impl SinkConfig {
            /// Every kind, as written in `kind = "…"`.
            pub const KINDS: &'static [&'static str] = &[$(stringify!($kind)),+];

            /// Every kind with the schema of its table, for `rollcall config reference`.
            pub const TABLES: &'static [(&'static str, fn() -> schemars::Schema)] =
                &[$((stringify!($kind), subscription::table::<$config>)),+];

            /// Read one `[[sinks]]` table (without its `kind`) as `kind`: the keys of its
            /// [`Subscription`], then the kind's own; problems go to `p`.
            pub fn parse(
                kind: &str,
                at: std::ops::Range<usize>,
                table: &Spanned<DeValue<'_>>,
                p: &mut Problems<'_>,
            ) -> Option<SinkConfig> {
                let [ours, theirs] = Subscription::split(table);
                let subscription: Option<Subscription> = p.de(&ours);
                let config = match kind {
                    $(stringify!($kind) => p.de(&theirs).map(SinkConfig::$variant),)+
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
                };
                let mut config = config?;
                let subscription = subscription?;
                let written = subscription.written();
                if !config.takes_subscription() && !written.is_empty() {
                    for key in written {
                        p.at(
                            subscription::key_span(&ours, key),
                            format!(
                                "a `{kind}` sink's receivers choose their events themselves, so `{key}` is not one of its keys: remove it (docs/sinks.md, Routing)"
                            ),
                        );
                    }
                    return None;
                }
                *config.subscription_mut() = subscription;
                Some(config)
            }

            /// Whether the kind's table takes the keys of a [`Subscription`].
            fn takes_subscription(&self) -> bool {
                match self {
                    $(SinkConfig::$variant(_) => <$config as TakesSubscription>::TAKES,)+
                }
            }

            /// What the sink's subscriber chose to receive.
            pub fn subscription(&self) -> &Subscription {
                match self {
                    $(SinkConfig::$variant(c) => &c.subscription,)+
                }
            }

            fn subscription_mut(&mut self) -> &mut Subscription {
                match self {
                    $(SinkConfig::$variant(c) => &mut c.subscription,)+
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

            /// The names this sink keeps cursors under (status, metrics, readiness and
            /// retention look at each): its own, or one per destination of a fleet.
            pub fn deliveries(&self, store: &Store) -> Result<Vec<String>, StoreError> {
                self.kind()
                    .deliveries(store)
                    .unwrap_or_else(|| Ok(vec![self.name().to_owned()]))
            }

            /// What only some kinds do, asked of this sink's kind.
            pub fn kind(&self) -> &dyn SinkKind {
                match self {
                    $(SinkConfig::$variant(c) => c,)+
                }
            }

            /// The metrics only some kinds export, with their help text.
            pub fn kind_metrics() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
                [$($kind::METRICS),+].into_iter().flatten()
            }

            /// SIGHUP: each kind does what it does on it (JSONL reopens its files by path).
            pub fn on_hangup() {
                $($kind::on_hangup();)+
            }

            /// What `check-config` can check without reaching the destination (secrets, the
            /// redaction key).
            pub fn check(&self) -> Result<(), SinkError> {
                self.subscription().redactor(self.name())?;
                match self {
                    $(SinkConfig::$variant(c) => Ok(c.check()?),)+
                }
            }

            /// Build the sink, taking what its [`Subscription`] chose. Connects to nothing
            /// yet, but whatever can be checked without the destination (secrets, client
            /// options) is checked here.
            pub fn build(&self) -> Result<Box<dyn Sink>, SinkError> {
                let sink = match self {
                    $(SinkConfig::$variant(c) => c.build()?,)+
                };
                Ok(Subscribed::wrap(sink, self.subscription())?)
            }
        }

        impl SinkError {
            /// Retrying cannot help until an operator acts: the sink stops (and says why).
            pub fn is_permanent(&self) -> bool {
                match self {
                    $(SinkError::$variant(e) => e.is_permanent(),)+
                    SinkError::Redact(_) => true,
                }
            }
        }
    };
}

sinks! {
    jsonl => Jsonl(jsonl::JsonlConfig, jsonl::JsonlError),
    webhook => Webhook(webhook::WebhookConfig, webhook::WebhookError),
    kafka => Kafka(kafka::KafkaConfig, kafka::KafkaError),
    ssf => Ssf(ssf::SsfConfig, ssf::SsfError),
}
