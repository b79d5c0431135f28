//! One sink being delivered to ([`Ctx`]): what every delivery to it shares, and what became of
//! one event ([`Outcome`]).
//!
//! Owns how a stored event becomes the sink's message (left out by its subscription, redacted
//! as its subscriber asked, marked when it is a replay), the counters a pass keeps, and
//! recording the sink's health when a pass ends badly. It must never move a cursor: that is
//! the window's, and only past what the sink confirmed.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use tracing::error;

use super::error::DeliverError;
use crate::encode::{Envelope, Unreadable};
use crate::sink::{Delivery, Message, Sink, SinkError};
use crate::store::{SinkHealth, Store, StoreError, StoredEvent};

/// Under `rollcall once` (and `dlq retry`, and replay), a retry due later than this is not
/// waited for: the event stays where it is (the cursor does not pass it) and the next run
/// tries it again.
pub const ONCE_PATIENCE: Duration = Duration::from_secs(60);

/// Events in a chunk worth sharing out among threads: fewer are encoded before another thread
/// would have started on them.
const PARALLEL_FROM: usize = 64;

/// What became of one event.
pub(super) enum Outcome {
    Delivered,
    /// [`Order::PerUser`]: every pause of the schedule passed; the event is dead-lettered.
    Exhausted {
        reason: String,
        attempts: u32,
    },
    /// A retry was due later than the caller waits; the event stays undelivered.
    Deferred {
        reason: String,
    },
    /// [`Order::Pipelined`]: not acknowledged; the window settles and rewinds.
    Failed(SinkError),
    /// Retrying cannot help until an operator acts: the sink stops.
    Stopped(SinkError),
    /// [`Order::Pipelined`]: after a refused message in the same batch; sent again.
    Unsent,
}

/// What a stored event is to the sink.
pub(super) enum Selected {
    Send(Message),
    /// The sink's subscription leaves it out: the cursor passes it, and it is counted.
    Filtered,
    /// The sink's format has no form for it (a checkpoint in OCSF): the cursor passes it.
    Formless,
}

/// One sink being delivered to, and what its deliveries share.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a Store,
    pub(super) sink: &'a dyn Sink,
    pub(super) name: String,
    pub(super) delivery: Delivery,
    /// How long a retry may be waited for; `None`: as long as the schedule says (`run`).
    pub(super) patience: Option<Duration>,
    /// Events currently between a failed attempt and their outcome.
    pub(super) retrying: AtomicUsize,
    /// Health was reported as not ok and has not been reported ok since.
    pub(super) degraded: AtomicBool,
    pub(super) delivered: AtomicU64,
    /// Events below this offset go out marked as replays: the sink's cursor was rewound past
    /// them (`rollcall replay --rewind`), or this is a replay (every event).
    pub(super) replayed_below: u64,
    /// The sink's delivery latency histogram, looked up once rather than by its labels for
    /// every event.
    latency: OnceLock<metrics::Histogram>,
    /// `run` is stopping: no retry is waited for any more (see [`Ctx::stop`]).
    pub(super) stopping: Arc<Stopping>,
}

/// Whether `run` is stopping, for the retries of a sink's deliveries to see.
#[derive(Default)]
pub(super) struct Stopping {
    flag: AtomicBool,
    now: tokio::sync::Notify,
}

impl Stopping {
    /// `run` is stopping: every pause ends now, and none starts.
    fn set(&self) {
        self.flag.store(true, Relaxed);
        self.now.notify_waiters();
    }

    pub(super) fn is_set(&self) -> bool {
        self.flag.load(Relaxed)
    }

    /// A retry's pause of `wait`, over as soon as `run` stops.
    pub(super) async fn pause(self: Arc<Self>, wait: Duration) {
        let stopped = self.now.notified();
        tokio::pin!(stopped);
        // Registered before the flag is read: a stop between the two still ends the pause.
        stopped.as_mut().enable();
        if self.is_set() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopped => {}
        }
    }
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        store: &'a Store,
        sink: &'a dyn Sink,
        patience: Option<Duration>,
    ) -> Result<Ctx<'a>, StoreError> {
        // Whatever a previous process reported is cleared at the first quiet moment.
        let reported = store.sink_state(sink.name())?.health;
        Ok(Ctx {
            store,
            sink,
            name: sink.name().to_owned(),
            delivery: sink.delivery(),
            patience,
            retrying: AtomicUsize::new(0),
            degraded: AtomicBool::new(reported != SinkHealth::Ok),
            delivered: AtomicU64::new(0),
            replayed_below: store.replayed_below(sink.name())?,
            latency: OnceLock::new(),
            stopping: Arc::default(),
        })
    }

    /// `run` is stopping: deliveries in flight may land, but one waiting to be retried is not
    /// tried again (its pause ends now, and it is left for the next start).
    pub(super) fn stop(&self) {
        self.stopping.set();
    }

    pub(super) fn latency(&self) -> &metrics::Histogram {
        self.latency.get_or_init(|| {
            metrics::histogram!("rollcall_delivery_latency_seconds", "sink" => self.name.clone())
        })
    }

    /// What each of `events` is to the sink, in their order. A chunk long enough is encoded on
    /// every core: encoding is most of a delivery's own work (an OCSF record with its
    /// attestation takes several times what sending it does), and on one thread it would
    /// bound what the sink sends (docs/performance.md, "Kafka sink").
    pub(super) fn select(&self, events: &[StoredEvent]) -> Result<Vec<Selected>, DeliverError> {
        if events.len() < PARALLEL_FROM {
            return events.iter().map(|e| self.message(e)).collect();
        }
        events.par_iter().map(|e| self.message(e)).collect()
    }

    /// The message for a stored event, unless the sink's subscription leaves it out or its
    /// format has no form for it.
    pub(super) fn message(&self, e: &StoredEvent) -> Result<Selected, DeliverError> {
        let mut envelope = Envelope::parse(e).map_err(|source| DeliverError::Corrupt {
            sink: self.name.clone(),
            source,
        })?;
        envelope.replayed = e.offset < self.replayed_below;
        if !self.sink.encoder().carries(&envelope.event_type) {
            return Ok(Selected::Formless);
        }
        if !self.sink.takes(&envelope) {
            return Ok(Selected::Filtered);
        }
        let seen = self.seen(e)?;
        if let Cow::Owned(redacted) = &seen {
            envelope = Envelope::parse(redacted).map_err(|source| DeliverError::Corrupt {
                sink: self.name.clone(),
                source,
            })?;
            envelope.replayed = e.offset < self.replayed_below;
        }
        let message =
            Message::encode(self.sink.encoder(), &envelope, self.store.id()).map_err(|source| {
                DeliverError::Corrupt {
                    sink: self.name.clone(),
                    source,
                }
            })?;
        Ok(Selected::Send(message))
    }

    /// The stored event as this sink may see it: redacted when its subscriber asked
    /// (`redact_fields`), else as stored.
    pub(super) fn seen<'e>(
        &self,
        e: &'e StoredEvent,
    ) -> Result<Cow<'e, StoredEvent>, DeliverError> {
        let Some(redactor) = self.sink.redactor() else {
            return Ok(Cow::Borrowed(e));
        };
        redactor
            .redact(e)
            .map(Cow::Owned)
            .map_err(|source| DeliverError::Corrupt {
                sink: self.name.clone(),
                source: Unreadable {
                    offset: e.offset,
                    source: source.into(),
                },
            })
    }

    /// Record in the store why a pass ended badly.
    pub(super) fn failed(&self, e: &DeliverError) {
        let health = if e.is_permanent() {
            SinkHealth::Disabled
        } else {
            SinkHealth::Degraded
        };
        self.degraded.store(true, Relaxed);
        let said = crate::text::error_chain(e);
        if let Err(e) = self.store.set_sink_state(&self.name, health, Some(said)) {
            error!(sink = %self.name, error = %e, "cannot record the sink's health");
        }
    }
}
