//! Delivery: the one engine that moves events from the log to a sink, at least once.
//!
//! Owns the at-least-once rule for every sink kind, written once: a window of the events read
//! beyond the sink's stored cursor, the cursor that only ever moves to below the oldest event
//! not yet acknowledged (or dead-lettered, or filtered out), throttled cursor saves, the retry
//! pauses, the sink's health in the store, dead letters, and how `once`, `run`, `replay` and
//! `dlq retry` drive a sink. It speaks to sinks only through [`Sink`], and never knows a kind.
//!
//! Order per user is kept one of two ways, as the sink declares ([`Order`]): one event per user
//! in flight with per-event retries and dead letters (webhooks), or batches back to back into
//! a destination that keeps order itself, where a failure rewinds to the cursor (Kafka, JSONL).
//!
//! Under `run` every sink is served by its own task, so a slow or dead sink never delays
//! another one, nor the polling. It must never move a cursor past an event the sink did not
//! confirm, and never drop an event: a sink that cannot go on stops and says why. Events that
//! retention removed before the sink read them are gone from the log; the sink passes them
//! only loudly (a warning, a metric, and a count in the store that `status` shows).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::encode::{Envelope, Unreadable};
use crate::sink::{Delivery, Message, Order, Refusal, Sink, SinkError};
use crate::store::{DeadLetter, SinkHealth, Store, StoreError, StoredEvent};

/// Under `rollcall once` (and `dlq retry`, and replay), a retry due later than this is not
/// waited for: the event stays where it is (the cursor does not pass it) and the next run
/// tries it again.
pub const ONCE_PATIENCE: Duration = Duration::from_secs(60);
/// Events read beyond the cursor at most (or the sink's `max_in_flight`, if larger). Bounds
/// memory while one user's retries hold the cursor back; the others go on until it is full.
const WINDOW: usize = 4096;
const READ_CHUNK: usize = 512;
/// The cursor is written (and flushed) at most this often while events flow, and whenever
/// nothing is in flight: a crash re-sends at most this much, and a flush per event would cap
/// throughput far below what the destinations take.
const CURSOR_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sink '{sink}' stopped and skipped nothing: the store is damaged, or holds an event the sink's format cannot encode (the cause says which)")]
    Corrupt {
        sink: String,
        #[source]
        source: Unreadable,
    },
    #[error("sink '{sink}': {count} event(s) still failing after the attempts `once` waits for (last error: {last_error}); the next run retries them from the stored cursor")]
    StillFailing {
        sink: String,
        count: usize,
        last_error: String,
    },
    #[error("sink '{sink}': replaying the event at offset {offset} failed: {reason}. Events after it were not replayed; fix the destination, then replay again from --from-offset {offset}")]
    ReplayFailed {
        sink: String,
        offset: u64,
        reason: String,
    },
    #[error("sink '{sink}' does not dead-letter events (only webhook sinks do), so there is nothing to retry")]
    NoDeadLetters { sink: String },
}

impl DeliverError {
    /// Retrying cannot help until an operator acts: the sink stops (and says why).
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliverError::Sink(e) => e.is_permanent(),
            DeliverError::Corrupt { .. } | DeliverError::NoDeadLetters { .. } => true,
            _ => false,
        }
    }
}

/// What `dlq retry` did.
#[derive(Debug, Default)]
pub struct RetryReport {
    pub delivered: Vec<u64>,
    /// Offset and why it failed again; these stay in the dead-letter queue.
    pub failed: Vec<(u64, String)>,
}

/// Pauses between attempts of a failing sink: 1 s growing to 60 s, with jitter, never giving up
/// (a sink must not skip events; it waits for its destination to come back).
pub fn retry_pauses() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// `once`: deliver from the stored cursor up to the log head, waiting only for retries due
/// within [`ONCE_PATIENCE`]; returns how many events were delivered. Events still failing then
/// keep the cursor before them (later events of other users go anyway, and are re-sent on the
/// next run): that is an error, and so is a failure a pipelined sink cannot get past.
pub async fn drain(store: &Store, sink: &dyn Sink) -> Result<u64, DeliverError> {
    let ctx = Ctx::new(store, sink, Some(ONCE_PATIENCE))?;
    let result = ctx.pass(None).await;
    if let Err(e) = &result {
        ctx.failed(e);
    }
    result.map(|(delivered, _)| delivered)
}

/// A change to the store an operator makes while a sink stands still; it says what it did.
pub type Change = Box<dyn FnOnce(&Store) -> Result<String, StoreError> + Send>;

/// An operator's request to a sink that `run` serves (`sink enable`, `replay --rewind`): stop
/// sending, run `then` with nothing in flight and the cursor saved, then start again from the
/// stored cursor, a stopped sink included.
pub struct Restart {
    pub then: Change,
    /// What `then` said, for the operator.
    pub done: oneshot::Sender<Result<String, StoreError>>,
}

impl Restart {
    fn apply(self, store: &Store) {
        // The operator may have gone away: nothing to tell then.
        let _ = self.done.send((self.then)(store));
    }
}

/// What `run` wakes a pass for.
struct Wake<'w> {
    head: &'w mut watch::Receiver<u64>,
    shutdown: &'w mut watch::Receiver<bool>,
    restarts: &'w mut mpsc::Receiver<Restart>,
}

/// `run`: deliver until `shutdown` turns true, reading more whenever `head` moves. A failure
/// is logged and retried from the stored cursor with growing pauses; a permanent one stops the
/// sink until an operator restarts it (`rollcall sink enable`) or rollcall restarts; it says
/// why, in the log and in `status`. Events in flight at shutdown (or at a restart) are
/// abandoned: the cursor is before them, so they are re-sent with the same id.
pub async fn serve(
    store: Store,
    sink: Box<dyn Sink>,
    mut head: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    mut restarts: mpsc::Receiver<Restart>,
) {
    let name = sink.name().to_owned();
    let mut pauses = retry_pauses();
    loop {
        let wait = match Ctx::new(&store, sink.as_ref(), None) {
            Err(e) => {
                error!(sink = %name, error = %e, "cannot read the sink's cursor; retrying");
                pauses.next()
            }
            Ok(ctx) => {
                let wake = Wake {
                    head: &mut head,
                    shutdown: &mut shutdown,
                    restarts: &mut restarts,
                };
                let result = ctx.pass(Some(wake)).await;
                if ctx.delivered.load(Relaxed) > 0 {
                    pauses = retry_pauses();
                }
                match result {
                    Ok((_, None)) => return,
                    Ok((_, Some(restart))) => {
                        info!(sink = %name, "restarting from the stored cursor, as asked");
                        restart.apply(&store);
                        pauses = retry_pauses();
                        continue;
                    }
                    Err(e) => {
                        ctx.failed(&e);
                        let said = crate::text::error_chain(&e);
                        if e.is_permanent() {
                            error!(sink = %name, error = %said, "sink stopped; `rollcall sink enable {name}` starts it again");
                            None
                        } else {
                            let wait = pauses.next().or(Some(Duration::from_secs(60)));
                            metrics::counter!("rollcall_delivery_retries_total", "sink" => name.clone()).increment(1);
                            error!(sink = %name, error = %said, retry_in = ?wait, "delivery failed; retrying from the stored cursor");
                            sink.recover();
                            wait
                        }
                    }
                }
            }
        };
        // Waiting (for the next try, or for an operator after a stop) ends early on shutdown
        // or on an operator's restart.
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shutdown.changed() => return,
            Some(restart) = restarts.recv() => {
                info!(sink = %name, "starting again, as asked");
                restart.apply(&store);
                pauses = retry_pauses();
            }
        }
    }
}

/// `rollcall replay`: send exactly `events` (a range the operator chose) in log order, with
/// their original ids, waiting only for retries due within [`ONCE_PATIENCE`]. Events the
/// sink's `event_types` exclude are skipped. Never reads or moves the stored cursor and never
/// dead-letters: the first failure stops the replay. Returns how many events were sent.
pub async fn send_range(
    store: &Store,
    sink: &dyn Sink,
    events: &[StoredEvent],
) -> Result<u64, DeliverError> {
    let ctx = Ctx::new(store, sink, Some(ONCE_PATIENCE))?;
    let mut messages = Vec::with_capacity(events.len());
    for e in events {
        if let Some(m) = ctx.message(e)? {
            messages.push(Arc::new(m));
        }
    }
    let Some(first) = messages.first() else {
        return Ok(0);
    };
    sink.prepare(first.offset).await?;
    let mut sent = 0;
    let failed = |offset: u64, error: SinkError| {
        if error.is_permanent() {
            DeliverError::Sink(error)
        } else {
            DeliverError::ReplayFailed {
                sink: ctx.name.clone(),
                offset,
                reason: crate::text::error_chain(&error),
            }
        }
    };
    match &ctx.delivery.order {
        Order::PerUser { .. } => {
            for m in messages {
                let reason = match ctx.deliver_one(&m).await {
                    Outcome::Delivered => {
                        sent += 1;
                        continue;
                    }
                    Outcome::Stopped(e) | Outcome::Failed(e) => return Err(failed(m.offset, e)),
                    Outcome::Exhausted { reason, .. } | Outcome::Deferred { reason } => reason,
                    Outcome::Unsent => "not sent".to_owned(),
                };
                return Err(DeliverError::ReplayFailed {
                    sink: ctx.name.clone(),
                    offset: m.offset,
                    reason,
                });
            }
        }
        Order::Pipelined => {
            for batch in messages.chunks(ctx.delivery.batch.max(1)) {
                if let Err(r) = sink.send(batch.to_vec()).await {
                    sink.recover();
                    return Err(failed(batch[r.acked.min(batch.len() - 1)].offset, r.error));
                }
                sent += batch.len() as u64;
            }
        }
    }
    Ok(sent)
}

/// `rollcall dlq retry`: send dead letters again (all, or the one at `only`) in offset order
/// with their original ids; those delivered leave the queue, the others stay with one more
/// reason. Only [`Order::PerUser`] sinks dead-letter.
pub async fn retry_dead_letters(
    store: &Store,
    sink: &dyn Sink,
    only: Option<u64>,
) -> Result<RetryReport, DeliverError> {
    let ctx = Ctx::new(store, sink, Some(ONCE_PATIENCE))?;
    if !matches!(ctx.delivery.order, Order::PerUser { .. }) {
        return Err(DeliverError::NoDeadLetters {
            sink: ctx.name.clone(),
        });
    }
    let mut report = RetryReport::default();
    for mut letter in store.dead_letters(&ctx.name)? {
        if only.is_some_and(|o| o != letter.offset) {
            continue;
        }
        let message = ctx.letter_message(&letter)?;
        match ctx.deliver_one(&message).await {
            Outcome::Delivered => {
                store.remove_dead_letter(&ctx.name, letter.offset)?;
                info!(sink = %ctx.name, offset = letter.offset, event_id = %message.id, "dead letter delivered");
                report.delivered.push(letter.offset);
            }
            Outcome::Stopped(e) => {
                let e = DeliverError::Sink(e);
                ctx.failed(&e);
                return Err(e);
            }
            Outcome::Exhausted { reason, attempts } => {
                letter.attempts += attempts;
                letter.reason = reason.clone();
                letter.at = Utc::now();
                store.dead_letter(&ctx.name, &letter)?;
                report.failed.push((letter.offset, reason));
            }
            Outcome::Deferred { reason } => report.failed.push((letter.offset, reason)),
            Outcome::Failed(e) => report
                .failed
                .push((letter.offset, crate::text::error_chain(&e))),
            Outcome::Unsent => report.failed.push((letter.offset, "not sent".to_owned())),
        }
    }
    if report.failed.is_empty() && store.sink_state(&ctx.name)?.health == SinkHealth::Degraded {
        store.set_sink_state(&ctx.name, SinkHealth::Ok, None)?;
    }
    Ok(report)
}

/// What became of one event.
enum Outcome {
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

/// One sink being delivered to, and what its deliveries share.
struct Ctx<'a> {
    store: &'a Store,
    sink: &'a dyn Sink,
    name: String,
    delivery: Delivery,
    /// How long a retry may be waited for; `None`: as long as the schedule says (`run`).
    patience: Option<Duration>,
    /// Events currently between a failed attempt and their outcome.
    retrying: AtomicUsize,
    /// Health was reported as not ok and has not been reported ok since.
    degraded: AtomicBool,
    delivered: AtomicU64,
    /// The sink's delivery latency histogram, looked up once rather than by its labels for
    /// every event.
    latency: OnceLock<metrics::Histogram>,
}

impl<'a> Ctx<'a> {
    fn new(
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
            latency: OnceLock::new(),
        })
    }

    fn latency(&self) -> &metrics::Histogram {
        self.latency.get_or_init(|| {
            metrics::histogram!("rollcall_delivery_latency_seconds", "sink" => self.name.clone())
        })
    }

    /// The message for a stored event; `None` when the sink leaves its type out.
    fn message(&self, e: &StoredEvent) -> Result<Option<Message>, DeliverError> {
        let envelope = Envelope::parse(e).map_err(|source| DeliverError::Corrupt {
            sink: self.name.clone(),
            source,
        })?;
        if !self.sink.wants(&envelope.event_type) {
            return Ok(None);
        }
        let message = Message::encode(self.sink.encoder(), &envelope).map_err(|source| {
            DeliverError::Corrupt {
                sink: self.name.clone(),
                source,
            }
        })?;
        Ok(Some(message))
    }

    /// Record in the store why a pass ended badly.
    fn failed(&self, e: &DeliverError) {
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

    /// Deliver from the stored cursor until the log head is reached (`once`: `wake` is
    /// `None`), or until shutdown or an operator's restart (`run`: more is read whenever the
    /// head moves). Returns how many events were delivered, and the restart if one came.
    async fn pass(&self, wake: Option<Wake<'_>>) -> Result<(u64, Option<Restart>), DeliverError> {
        let mut w = Window::open(self)?;
        let result = self.deliver(&mut w, wake).await;
        // However the pass ended, a cursor save still running must land (or fail) before
        // anyone reads or moves the cursor: the next pass, an operator's restart.
        let saved = w.saved().await;
        let outcome = result?;
        saved?;
        Ok(outcome)
    }

    /// [`Ctx::pass`] in the window `w`.
    async fn deliver(
        &self,
        w: &mut Window<'_, 'a>,
        mut wake: Option<Wake<'_>>,
    ) -> Result<(u64, Option<Restart>), DeliverError> {
        self.sink.prepare(w.cursor).await?;
        loop {
            if let Some(wake) = &mut wake {
                if *wake.shutdown.borrow_and_update() {
                    w.save_cursor(true).await?;
                    return Ok((w.delivered, None));
                }
            }
            // What can start goes before the read: reading and encoding a chunk takes a while,
            // and the destination is busy with what is in flight meanwhile.
            w.launch();
            w.fill()?;
            w.launch();
            if w.gap.is_some() && w.open.is_empty() {
                w.skip_gap().await?;
                continue;
            }
            w.save_cursor(false).await?;
            if let Some(e) = w.stopped.take() {
                // A permanent failure: what is still in flight is abandoned (re-sent later).
                w.save_cursor(true).await?;
                return Err(e.into());
            }
            if w.tasks.is_empty() {
                if let Some(e) = w.failure.take() {
                    w.save_cursor(true).await?;
                    return Err(e.into());
                }
                w.calm_down()?;
            }
            let dirty = w.dirty();
            let Some(wake) = &mut wake else {
                match w.tasks.next().await {
                    Some(done) => w.finish(done)?,
                    None => break,
                }
                continue;
            };
            tokio::select! {
                Some(done) = w.tasks.next(), if !w.tasks.is_empty() => w.finish(done)?,
                changed = wake.head.changed(), if w.head_alive => w.head_alive = changed.is_ok(),
                // A dropped sender means nobody can ask any more: stop as if asked.
                stopped = wake.shutdown.changed() => if stopped.is_err() {
                    w.save_cursor(true).await?;
                    return Ok((w.delivered, None));
                },
                Some(restart) = wake.restarts.recv() => {
                    w.save_cursor(true).await?;
                    return Ok((w.delivered, Some(restart)));
                }
                _ = tokio::time::sleep(CURSOR_EVERY), if dirty => {}
            }
        }
        w.save_cursor(true).await?;
        if let Some(last_error) = w.last_deferral.take() {
            return Err(DeliverError::StillFailing {
                sink: self.name.clone(),
                count: w.held_events(),
                last_error,
            });
        }
        Ok((w.delivered, None))
    }

    /// Send one event through the sink's retry schedule (or until a retry would come later
    /// than the patience), honouring what the destination asks (`Retry-After`).
    async fn deliver_one(&self, message: &Arc<Message>) -> Outcome {
        let schedule: &[Duration] = match &self.delivery.order {
            Order::PerUser { schedule } => schedule,
            Order::Pipelined => &[],
        };
        let attempts = AtomicU64::new(0);
        let deferred = AtomicBool::new(false);
        let retried = AtomicBool::new(false);
        let longest = schedule.iter().max().copied().unwrap_or_default();
        let result = (|| async {
            attempts.fetch_add(1, Relaxed);
            self.sink.send(vec![message.clone()]).await
        })
        .retry(Jittered(schedule.iter().copied().skip(1)))
        .sleep(tokio::time::sleep)
        // A message the destination rejected for good is not tried again: it is dead-lettered.
        .when(|r: &Refusal| !r.error.is_permanent() && !r.rejected)
        .adjust(|r, next| {
            let next = next?;
            // The receiver knows best when it can take more, but no longer than the
            // schedule's longest wait: a typo of theirs must not park an event for days.
            let wait = r.retry_after.map_or(next, |after| after.min(longest));
            if self.patience.is_some_and(|p| wait > p) {
                deferred.store(true, Relaxed);
                return None;
            }
            Some(wait)
        })
        .notify(|r, wait| {
            if !retried.swap(true, Relaxed) {
                self.retrying.fetch_add(1, Relaxed);
            }
            self.degraded.store(true, Relaxed);
            metrics::counter!("rollcall_delivery_retries_total", "sink" => self.name.clone())
                .increment(1);
            let said = crate::text::error_chain(&r.error);
            warn!(sink = %self.name, offset = message.offset, event_id = %message.id, error = %said, retry_in = ?wait, "delivery failed; retrying");
            let state = Some(format!("offset {}: {said}", message.offset));
            if let Err(e) = self
                .store
                .set_sink_state(&self.name, SinkHealth::Degraded, state)
            {
                error!(sink = %self.name, error = %e, "cannot record the sink's health");
            }
        })
        .await;
        if retried.load(Relaxed) {
            self.retrying.fetch_sub(1, Relaxed);
        }
        match result {
            Ok(()) => Outcome::Delivered,
            Err(r) if r.error.is_permanent() => Outcome::Stopped(r.error),
            Err(r) if deferred.load(Relaxed) => Outcome::Deferred {
                reason: crate::text::error_chain(&r.error),
            },
            Err(r) => Outcome::Exhausted {
                reason: crate::text::error_chain(&r.error),
                attempts: u32::try_from(attempts.load(Relaxed)).unwrap_or(u32::MAX),
            },
        }
    }

    /// The event at `offset` as stored, for a dead letter.
    fn stored_event(&self, offset: u64) -> Result<serde_json::Value, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            what: format!("event at offset {offset}"),
            detail,
        };
        let stored = self
            .store
            .events_from(offset, 1)?
            .into_iter()
            .find(|e| e.offset == offset)
            .ok_or_else(|| corrupt("missing from the log while in flight".into()))?;
        serde_json::from_slice(&stored.bytes).map_err(|e| corrupt(e.to_string()))
    }

    /// A dead letter as first sent: encoded from the log while it still holds the event, else
    /// from the copy kept with the letter (same content and id, so it verifies alike).
    fn letter_message(&self, letter: &DeadLetter) -> Result<Arc<Message>, DeliverError> {
        let id = letter.event["id"].as_str().unwrap_or_default();
        let from_log = self
            .store
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
        let envelope = Envelope::parse(&stored).map_err(|source| DeliverError::Corrupt {
            sink: self.name.clone(),
            source,
        })?;
        let mut message = Message::encode(self.sink.encoder(), &envelope).map_err(|source| {
            DeliverError::Corrupt {
                sink: self.name.clone(),
                source,
            }
        })?;
        // The id the receiver saw first, even if the stored copy disagrees.
        id.clone_into(&mut message.id);
        Ok(Arc::new(message))
    }
}

/// The waits between attempts, with ±10 % jitter so that endpoints recovering from an outage
/// are not hit by every sender in the same second.
struct Jittered<I>(I);

impl<I: Iterator<Item = Duration>> Iterator for Jittered<I> {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.0
            .next()
            .map(|d| d.mul_f64(rand::random_range(0.9..1.1)))
    }
}

type Landed = Vec<(Arc<Message>, Outcome)>;

/// The per-user maps are looked up several times for every event, so they hash with foldhash
/// rather than SipHash; each map still gets a random seed.
type UserHasher = foldhash::fast::RandomState;

/// The events between the cursor and the read position, and what is in flight.
struct Window<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// Next log offset to read.
    read: u64,
    /// As stored, or being stored by `saving`.
    cursor: u64,
    saved_at: Instant,
    /// A cursor save on the blocking pool: a flush waits for the disk, which must not stall
    /// the deliveries (under disk load, a flush can take longer than many deliveries).
    saving: Option<JoinHandle<Result<(), StoreError>>>,
    /// The last read reached the log head, or a gap that stops reading for now.
    at_head: bool,
    /// Where the log goes on after events retention compacted away before this sink read them
    /// (from `read` up to here): they are skipped once nothing read before them is open.
    gap: Option<u64>,
    head_alive: bool,
    /// Read and not yet delivered or dead-lettered.
    open: BTreeSet<u64>,
    /// [`Order::PerUser`]: per user, its open events in order; the front one is in flight
    /// unless the user is in `ready` or `held`.
    queues: HashMap<Arc<str>, VecDeque<Arc<Message>>, UserHasher>,
    ready: VecDeque<Arc<str>>,
    /// Users whose front event was deferred (`once`): the rest of theirs wait for the next run.
    held: HashSet<Arc<str>, UserHasher>,
    /// [`Order::Pipelined`]: read and not yet sent, in log order.
    pending: VecDeque<Arc<Message>>,
    in_flight: usize,
    tasks: FuturesUnordered<BoxFuture<'c, Landed>>,
    delivered: u64,
    last_deferral: Option<String>,
    /// [`Order::Pipelined`]: the first failure; nothing more is sent, and once what is in
    /// flight has settled, the pass ends and the next one starts from the cursor.
    failure: Option<SinkError>,
    stopped: Option<SinkError>,
}

impl<'c, 'a> Window<'c, 'a> {
    fn open(ctx: &'c Ctx<'a>) -> Result<Window<'c, 'a>, StoreError> {
        let cursor = ctx.store.cursor(&ctx.name)?;
        Ok(Window {
            ctx,
            read: cursor,
            cursor,
            saved_at: Instant::now(),
            saving: None,
            at_head: false,
            gap: None,
            head_alive: true,
            open: BTreeSet::new(),
            queues: HashMap::default(),
            ready: VecDeque::new(),
            held: HashSet::default(),
            pending: VecDeque::new(),
            in_flight: 0,
            tasks: FuturesUnordered::new(),
            delivered: 0,
            last_deferral: None,
            failure: None,
            stopped: None,
        })
    }

    fn capacity(&self) -> usize {
        WINDOW.max(self.ctx.delivery.max_in_flight)
    }

    /// Read from the log while the window has room, up to a gap left by retention.
    fn fill(&mut self) -> Result<(), DeliverError> {
        while self.gap.is_none() && self.open.len() + READ_CHUNK <= self.capacity() {
            let events = self.ctx.store.events_from(self.read, READ_CHUNK)?;
            // Offsets are dense but for what retention removed: a first offset past the read
            // position (or a log start past it) means those events are gone.
            let resumes = match events.first() {
                Some(e) => e.offset,
                None => self.ctx.store.log_start()?,
            };
            if resumes > self.read {
                self.gap = Some(resumes);
                self.at_head = true;
                return Ok(());
            }
            self.at_head = events.len() < READ_CHUNK;
            let Some(last) = events.last() else {
                return Ok(());
            };
            self.read = last.offset + 1;
            for e in &events {
                self.admit(e)?;
            }
            if self.at_head {
                return Ok(());
            }
        }
        Ok(())
    }

    fn admit(&mut self, e: &StoredEvent) -> Result<(), DeliverError> {
        let Some(message) = self.ctx.message(e)? else {
            return Ok(());
        };
        let message = Arc::new(message);
        self.open.insert(e.offset);
        match self.ctx.delivery.order {
            Order::PerUser { .. } => {
                let queue = self.queues.entry(message.key.clone()).or_default();
                queue.push_back(message.clone());
                if queue.len() == 1 {
                    self.ready.push_back(message.key.clone());
                }
            }
            Order::Pipelined => self.pending.push_back(message),
        }
        Ok(())
    }

    /// Start what may start: the front event of ready users, or the next batches.
    fn launch(&mut self) {
        if self.failure.is_some() || self.stopped.is_some() {
            return;
        }
        let ctx = self.ctx;
        let limit = ctx.delivery.max_in_flight.max(1);
        match ctx.delivery.order {
            Order::PerUser { .. } => {
                while self.in_flight < limit {
                    let Some(user) = self.ready.pop_front() else {
                        return;
                    };
                    let message = self.queues[&user][0].clone();
                    self.in_flight += 1;
                    self.tasks.push(Box::pin(async move {
                        let outcome = ctx.deliver_one(&message).await;
                        vec![(message, outcome)]
                    }));
                }
            }
            Order::Pipelined => {
                let batch = ctx.delivery.batch.max(1);
                // A short batch only when nothing more can be read for now.
                let full = self.open.len() + READ_CHUNK > self.capacity();
                while self.pending.len() >= batch
                    || ((self.at_head || full) && !self.pending.is_empty())
                {
                    let n = batch.min(self.pending.len());
                    if self.in_flight > 0 && self.in_flight + n > limit {
                        return;
                    }
                    let messages: Vec<Arc<Message>> = self.pending.drain(..n).collect();
                    self.in_flight += n;
                    // `send` hands the batch over now, so batches keep log order.
                    let sent = ctx.sink.send(messages.clone());
                    self.tasks.push(Box::pin(async move {
                        let refusal = sent.await.err();
                        let acked = refusal.as_ref().map_or(messages.len(), |r| r.acked);
                        let mut refusal = refusal.map(|r| r.error);
                        messages
                            .into_iter()
                            .enumerate()
                            .map(|(i, m)| {
                                let outcome = match refusal.take_if(|_| i >= acked) {
                                    None if i < acked => Outcome::Delivered,
                                    Some(e) if e.is_permanent() => Outcome::Stopped(e),
                                    Some(e) => Outcome::Failed(e),
                                    // Sent after the refused one: not counted, sent again.
                                    None => Outcome::Unsent,
                                };
                                (m, outcome)
                            })
                            .collect()
                    }));
                }
            }
        }
    }

    fn finish(&mut self, landed: Landed) -> Result<(), DeliverError> {
        let ctx = self.ctx;
        for (message, outcome) in landed {
            self.in_flight -= 1;
            match outcome {
                Outcome::Delivered => {
                    self.delivered += 1;
                    ctx.delivered.fetch_add(1, Relaxed);
                    if let Some(latency) = message
                        .observed
                        .and_then(|t| (Utc::now() - t).to_std().ok())
                    {
                        ctx.latency().record(latency.as_secs_f64());
                    }
                    debug!(sink = %ctx.name, offset = message.offset, "delivered");
                    let calm = self.held.is_empty()
                        && self.failure.is_none()
                        && ctx.retrying.load(Relaxed) == 0;
                    if calm && ctx.degraded.swap(false, Relaxed) {
                        ctx.store.set_sink_state(&ctx.name, SinkHealth::Ok, None)?;
                    }
                }
                Outcome::Exhausted { reason, attempts } => {
                    // The letter keeps the stored CloudEvent, whatever the sink's format: a
                    // retry re-encodes it, after retention may have dropped it from the log.
                    let event = ctx.stored_event(message.offset)?;
                    ctx.store.dead_letter(
                        &ctx.name,
                        &DeadLetter {
                            offset: message.offset,
                            event,
                            reason: reason.clone(),
                            attempts,
                            at: Utc::now(),
                        },
                    )?;
                    warn!(sink = %ctx.name, offset = message.offset, event_id = %message.id, attempts, error = %reason, "retry schedule exhausted; event dead-lettered (see `rollcall dlq list`)");
                }
                Outcome::Deferred { reason } => {
                    self.held.insert(message.key.clone());
                    self.last_deferral = Some(reason);
                    continue;
                }
                Outcome::Failed(e) => {
                    self.failure.get_or_insert(e);
                    continue;
                }
                Outcome::Stopped(e) => {
                    self.stopped.get_or_insert(e);
                    continue;
                }
                Outcome::Unsent => continue,
            }
            self.open.remove(&message.offset);
            if let Some(queue) = self.queues.get_mut(&message.key) {
                queue.pop_front();
                if queue.is_empty() {
                    self.queues.remove(&message.key);
                } else {
                    self.ready.push_back(message.key.clone());
                }
            }
        }
        Ok(())
    }

    /// Skip a gap in the log once nothing read before it is open: the cursor moves past it
    /// without counting its events as delivered, the store counts them for `status`, and the
    /// log and a metric say how many this sink will never receive.
    async fn skip_gap(&mut self) -> Result<(), DeliverError> {
        let Some(to) = self.gap.take() else {
            return Ok(());
        };
        // What was delivered before the gap is saved as delivered first.
        self.save_cursor(true).await?;
        let (ctx, from) = (self.ctx, self.read);
        let total = ctx.store.skip_compacted(&ctx.name, from, to)?;
        self.read = to;
        self.cursor = to;
        let skipped = to - from;
        metrics::counter!("rollcall_events_skipped_total", "sink" => ctx.name.clone())
            .increment(skipped);
        warn!(
            sink = %ctx.name,
            skipped,
            from,
            to,
            total,
            "sink '{}' skipped {skipped} events (offsets {from}..{to}): retention compacted them away before it received them (with `force`, or before the sink was configured), so they are lost to it. To keep it from happening again, raise `retain`/`max_bytes`, or leave `force` unset so that retention waits for every configured sink",
            ctx.name
        );
        Ok(())
    }

    /// Nothing in flight, nothing held: a health reported earlier is over.
    fn calm_down(&self) -> Result<(), StoreError> {
        let ctx = self.ctx;
        if self.held.is_empty()
            && ctx.retrying.load(Relaxed) == 0
            && ctx.degraded.swap(false, Relaxed)
        {
            ctx.store.set_sink_state(&ctx.name, SinkHealth::Ok, None)?;
        }
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

    /// Save the cursor if it moved: `now`, waiting for the write; otherwise at most every
    /// [`CURSOR_EVERY`] (or as soon as nothing is in flight), in the background, one save at a
    /// time so that saves land in order.
    async fn save_cursor(&mut self, now: bool) -> Result<(), StoreError> {
        if self.saving.as_ref().is_some_and(JoinHandle::is_finished) || now {
            self.saved().await?;
        }
        let quiet = self.tasks.is_empty();
        let due = now || quiet || self.saved_at.elapsed() >= CURSOR_EVERY;
        if !self.dirty() || !due || self.saving.is_some() {
            return Ok(());
        }
        self.cursor = self.safe_cursor();
        self.saved_at = Instant::now();
        let (store, name, cursor) = (self.ctx.store.clone(), self.ctx.name.clone(), self.cursor);
        self.saving = Some(tokio::task::spawn_blocking(move || {
            store.set_cursor(&name, cursor)
        }));
        if now {
            self.saved().await?;
        }
        Ok(())
    }

    /// Wait for the cursor save in the background, if any, and say how it went.
    async fn saved(&mut self) -> Result<(), StoreError> {
        match self.saving.take() {
            None => Ok(()),
            Some(save) => match save.await {
                Ok(saved) => saved,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only a runtime shutting down cancels it; the stored cursor stays as it was.
                Err(e) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(e)))),
            },
        }
    }
}
