//! The window of one pass: the events read beyond the sink's cursor, what is in flight, and
//! where the cursor may move.
//!
//! Owns reading the log in chunks (and passing a gap retention left, loudly), keeping one
//! user's events in order (one in flight per user, or batches back to back, as the sink
//! declares), taking in what became of each event (dead letters included), and saving the
//! cursor: throttled, in the background, one save at a time. It must never move the cursor
//! past an event that is still open (neither delivered, nor dead-lettered, nor filtered out),
//! and counts each event its subscription left out once, in the save that passes it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ctx::{Ctx, Outcome, Selected};
use super::error::DeliverError;
use crate::sink::{Message, Order, SinkError};
use crate::store::{DeadLetter, SinkHealth, StoreError, StoredEvent};

/// Events read beyond the cursor at most (or the sink's `max_in_flight`, if larger). Bounds
/// memory while one user's retries hold the cursor back; the others go on until it is full.
const WINDOW: usize = 4096;
const READ_CHUNK: usize = 512;
/// The cursor is written (and flushed) at most this often while events flow, and whenever
/// nothing is in flight: a crash re-sends at most this much, and a flush per event would cap
/// throughput far below what the destinations take.
pub(super) const CURSOR_EVERY: Duration = Duration::from_millis(100);

type Landed = Vec<(Arc<Message>, Outcome)>;

/// The per-user maps are looked up several times for every event, so they hash with foldhash
/// rather than SipHash; each map still gets a random seed.
type UserHasher = foldhash::fast::RandomState;

/// The events between the cursor and the read position, and what is in flight.
pub(super) struct Window<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// Next log offset to read.
    read: u64,
    /// As stored, or being stored by `saving`.
    pub(super) cursor: u64,
    saved_at: Instant,
    /// A cursor save on the blocking pool: a flush waits for the disk, which must not stall
    /// the deliveries (under disk load, a flush can take longer than many deliveries).
    saving: Option<JoinHandle<Result<(), StoreError>>>,
    /// The last read reached the log head, or a gap that stops reading for now.
    at_head: bool,
    /// The chunk after the last one read, being read on the blocking pool while that one is
    /// encoded and sent: a read from sled copies each event out of its pages, which costs
    /// about as much as encoding it, and would otherwise stall the deliveries. Never pending
    /// past a gap (the read that finds one starts none).
    ahead: Option<JoinHandle<Result<Vec<StoredEvent>, StoreError>>>,
    /// Where the log goes on after events retention compacted away before this sink read them
    /// (from `read` up to here): they are skipped once nothing read before them is open.
    pub(super) gap: Option<u64>,
    pub(super) head_alive: bool,
    /// Read and not yet delivered or dead-lettered.
    pub(super) open: BTreeSet<u64>,
    /// Offsets the subscription left out, in order, not yet counted in the store: they are
    /// counted with the cursor save that passes them.
    filtered: VecDeque<u64>,
    /// [`Order::PerUser`]: per user, its open events in order; the front one is in flight
    /// unless the user is in `ready` or `held`.
    queues: HashMap<Arc<str>, VecDeque<Arc<Message>>, UserHasher>,
    ready: VecDeque<Arc<str>>,
    /// Users whose front event was deferred (`once`): the rest of theirs wait for the next run.
    held: HashSet<Arc<str>, UserHasher>,
    /// [`Order::Pipelined`]: read and not yet sent, in log order.
    pending: VecDeque<Arc<Message>>,
    in_flight: usize,
    pub(super) tasks: FuturesUnordered<BoxFuture<'c, Landed>>,
    pub(super) delivered: u64,
    pub(super) last_deferral: Option<String>,
    /// [`Order::Pipelined`]: the first failure; nothing more is sent, and once what is in
    /// flight has settled, the pass ends and the next one starts from the cursor.
    pub(super) failure: Option<SinkError>,
    pub(super) stopped: Option<SinkError>,
}

impl<'c, 'a> Window<'c, 'a> {
    pub(super) fn open(ctx: &'c Ctx<'a>) -> Result<Window<'c, 'a>, StoreError> {
        let cursor = ctx.store.cursor(&ctx.name)?;
        Ok(Window {
            ctx,
            read: cursor,
            cursor,
            saved_at: Instant::now(),
            saving: None,
            at_head: false,
            ahead: None,
            gap: None,
            head_alive: true,
            open: BTreeSet::new(),
            filtered: VecDeque::new(),
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
    pub(super) async fn fill(&mut self) -> Result<(), DeliverError> {
        while self.gap.is_none() && self.open.len() + READ_CHUNK <= self.capacity() {
            let events = match self.ahead.take() {
                Some(read) => joined(read.await)?,
                None => self.ctx.store.events_from(self.read, READ_CHUNK)?,
            };
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
            if !self.at_head {
                let (store, from) = (self.ctx.store.clone(), self.read);
                self.ahead = Some(tokio::task::spawn_blocking(move || {
                    store.events_from(from, READ_CHUNK)
                }));
            }
            for (e, selected) in events.iter().zip(self.ctx.select(&events)?) {
                self.admit(e.offset, selected);
            }
            if self.at_head {
                return Ok(());
            }
        }
        Ok(())
    }

    fn admit(&mut self, offset: u64, selected: Selected) {
        let message = match selected {
            Selected::Send(message) => message,
            Selected::Filtered => {
                self.filtered.push_back(offset);
                return;
            }
            Selected::Formless => return,
        };
        let message = Arc::new(message);
        self.open.insert(offset);
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
    }

    /// Start what may start: the front event of ready users, or the next batches.
    pub(super) fn launch(&mut self) {
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

    pub(super) fn finish(&mut self, landed: Landed) -> Result<(), DeliverError> {
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
                    // The letter keeps the stored CloudEvent (redacted, for a sink that
                    // redacts), whatever the sink's format: a retry re-encodes it, after
                    // retention may have dropped it from the log.
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
    pub(super) async fn skip_gap(&mut self) -> Result<(), DeliverError> {
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
    pub(super) fn calm_down(&self) -> Result<(), StoreError> {
        let ctx = self.ctx;
        if self.held.is_empty()
            && ctx.retrying.load(Relaxed) == 0
            && ctx.degraded.swap(false, Relaxed)
        {
            ctx.store.set_sink_state(&ctx.name, SinkHealth::Ok, None)?;
        }
        Ok(())
    }

    pub(super) fn held_events(&self) -> usize {
        self.held.iter().map(|u| self.queues[u].len()).sum()
    }

    /// Everything below this offset is delivered, filtered out or dead-lettered.
    fn safe_cursor(&self) -> u64 {
        self.open.first().copied().unwrap_or(self.read)
    }

    pub(super) fn dirty(&self) -> bool {
        self.safe_cursor() != self.cursor
    }

    /// Save the cursor if it moved: `now`, waiting for the write; otherwise at most every
    /// [`CURSOR_EVERY`] (or as soon as nothing is in flight), in the background, one save at a
    /// time so that saves land in order.
    pub(super) async fn save_cursor(&mut self, now: bool) -> Result<(), StoreError> {
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
        let passed = self.filtered.partition_point(|o| *o < self.cursor);
        self.filtered.drain(..passed);
        let (store, name, cursor) = (self.ctx.store.clone(), self.ctx.name.clone(), self.cursor);
        self.saving = Some(tokio::task::spawn_blocking(move || {
            store.advance_cursor(&name, cursor, passed as u64)
        }));
        if now {
            self.saved().await?;
        }
        Ok(())
    }

    /// Let the read ahead, if any, end: it holds the store open.
    pub(super) async fn read_ahead_done(&mut self) {
        if let Some(read) = self.ahead.take() {
            // What it read is not needed any more, and an error in it is met again by the
            // next read.
            let _ = read.await;
        }
    }

    /// Wait for the cursor save in the background, if any, and say how it went.
    pub(super) async fn saved(&mut self) -> Result<(), StoreError> {
        match self.saving.take() {
            None => Ok(()),
            // Only a runtime shutting down cancels it; the stored cursor stays as it was.
            Some(save) => joined(save.await),
        }
    }
}

/// What a store task on the blocking pool returned.
fn joined<T>(task: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    match task {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels one.
        Err(e) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(e)))),
    }
}

impl Ctx<'_> {
    /// The event at `offset` as stored (as the sink may see it), for a dead letter.
    fn stored_event(&self, offset: u64) -> Result<serde_json::Value, DeliverError> {
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
        let seen = self.seen(&stored)?;
        Ok(serde_json::from_slice(&seen.bytes).map_err(|e| corrupt(e.to_string()))?)
    }
}
