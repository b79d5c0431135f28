//! What an operator sends again: a range of the log (`rollcall replay`) and dead letters
//! (`rollcall dlq retry`), each event with its original id.
//!
//! Owns how those sends go: in log order, waiting only for retries due within
//! [`ONCE_PATIENCE`], each dead letter encoded as first sent. It must never read or move a
//! sink's cursor, and a replay never dead-letters: its first failure stops it, naming where
//! to start again.

use std::sync::Arc;

use chrono::Utc;
use tracing::info;

use super::ctx::{Ctx, Outcome, Selected, ONCE_PATIENCE};
use super::error::DeliverError;
use crate::encode::Envelope;
use crate::sink::{Message, Order, Sink, SinkError};
use crate::store::{DeadLetter, SinkHealth, Store, StoreError, StoredEvent};

/// What `dlq retry` did.
#[derive(Debug, Default)]
pub struct RetryReport {
    pub delivered: Vec<u64>,
    /// Offset and why it failed again; these stay in the dead-letter queue.
    pub failed: Vec<(u64, String)>,
}

/// `rollcall replay`: send exactly `events` (a range the operator chose) in log order, with
/// their original ids, each marked as a replay, waiting only for retries due within [`ONCE_PATIENCE`]. Events the
/// sink's subscription leaves out (as it is configured now) are skipped. Never reads or moves the stored cursor and never
/// dead-letters: the first failure stops the replay. Returns how many events were sent.
pub async fn send_range(
    store: &Store,
    sink: &dyn Sink,
    events: &[StoredEvent],
) -> Result<u64, DeliverError> {
    let mut ctx = Ctx::new(store, sink, Some(ONCE_PATIENCE))?;
    ctx.replayed_below = u64::MAX;
    let mut messages = Vec::with_capacity(events.len());
    for e in events {
        if let Selected::Send(m) = ctx.message(e)? {
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

impl Ctx<'_> {
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
        // A copy kept redacted is redacted again unchanged.
        let stored = self.seen(&stored)?;
        let envelope = Envelope::parse(&stored).map_err(|source| DeliverError::Corrupt {
            sink: self.name.clone(),
            source,
        })?;
        let mut message = Message::encode(self.sink.encoder(), &envelope, self.store.id())
            .map_err(|source| DeliverError::Corrupt {
                sink: self.name.clone(),
                source,
            })?;
        // The id the receiver saw first, even if the stored copy disagrees.
        id.clone_into(&mut message.id);
        Ok(Arc::new(message))
    }
}
