//! Retries and their pauses: the growing pauses of a sink that keeps failing under `run`
//! ([`retry_pauses`]), and one event sent through its sink's own retry schedule (per-user
//! sinks), both with jitter.
//!
//! Owns when the next attempt comes, honouring what the destination asks (`Retry-After`, up
//! to the schedule's longest wait), and when `once` stops waiting ([`ONCE_PATIENCE`]). It must
//! never give up on a sink: a failing sink waits for its destination to come back; only an
//! event whose whole schedule failed is handed back, to be dead-lettered.
//!
//! [`ONCE_PATIENCE`]: super::ONCE_PATIENCE

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tracing::{error, warn};

use super::ctx::{Ctx, Outcome};
use crate::sink::{Message, Order, Refusal};
use crate::store::SinkHealth;

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

impl Ctx<'_> {
    /// Send one event through the sink's retry schedule (or until a retry would come later
    /// than the patience), honouring what the destination asks (`Retry-After`).
    pub(super) async fn deliver_one(&self, message: &Arc<Message>) -> Outcome {
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
        .sleep({
            let stopping = self.stopping.clone();
            move |wait| stopping.clone().pause(wait)
        })
        // A message the destination rejected for good is not tried again: it is dead-lettered.
        .when(|r: &Refusal| !r.error.is_permanent() && !r.rejected)
        .adjust(|r, next| {
            let next = next?;
            // Stopping: left for the next start rather than waited for.
            if self.stopping.is_set() {
                deferred.store(true, Relaxed);
                return None;
            }
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
}
