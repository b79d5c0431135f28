//! A poll stream's queue (RFC 8936): the SETs the delivery engine handed over, waiting for a
//! receiver to fetch and acknowledge them.
//!
//! Owns what a poll returns (SETs not handed out yet, and those handed out longer ago than the
//! redelivery wait without an acknowledgement), the long poll, and what an acknowledgement or
//! an error report does: each SET the engine offered resolves its offer, so the engine's
//! cursor moves only past what the receiver acknowledged (or reported, which dead-letters it).
//! A SET whose offer is withdrawn (the engine stopped) leaves the queue. No I/O.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// What a receiver said of one SET.
pub type Verdict = Result<(), Reported>;

/// A SET the receiver reported as invalid (`setErrs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub err: String,
    pub description: String,
}

struct Entry {
    jti: String,
    set: String,
    handed_out: Option<Instant>,
    /// `None` for a SET nobody waits for (a verification).
    verdict: Option<oneshot::Sender<Verdict>>,
}

#[derive(Default)]
pub struct Queue {
    entries: Mutex<Vec<Entry>>,
    arrived: Notify,
}

/// What one poll returns.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// `(jti, SET)` in the order they were offered.
    pub sets: Vec<(String, String)>,
    pub more_available: bool,
}

impl Queue {
    /// Queue a SET; the answer comes when a receiver acknowledges or reports it. Dropping the
    /// receiver end withdraws it (see [`Queue::withdraw`]).
    pub fn offer(&self, jti: &str, set: String) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        self.push(jti, set, Some(tx));
        rx
    }

    /// Queue a SET nobody waits for.
    pub fn post(&self, jti: &str, set: String) {
        self.push(jti, set, None);
    }

    fn push(&self, jti: &str, set: String, verdict: Option<oneshot::Sender<Verdict>>) {
        let mut entries = self.lock();
        entries.retain(|e| e.jti != jti);
        entries.push(Entry {
            jti: jti.to_owned(),
            set,
            handed_out: None,
            verdict,
        });
        drop(entries);
        self.arrived.notify_waiters();
    }

    /// Take a SET out of the queue without an answer (its offer was dropped).
    pub fn withdraw(&self, jti: &str) {
        self.lock().retain(|e| e.jti != jti);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The receiver acknowledged `jti` (`ack`) or reported it (`setErrs`). An unknown `jti`
    /// (acknowledged twice, or before a restart) is ignored.
    pub fn settle(&self, jti: &str, verdict: Verdict) {
        let entry = {
            let mut entries = self.lock();
            let Some(at) = entries.iter().position(|e| e.jti == jti) else {
                return;
            };
            entries.remove(at)
        };
        if let Some(tx) = entry.verdict {
            // The engine may have stopped meanwhile; it sends the SET again then.
            let _ = tx.send(verdict);
        }
    }

    /// Up to `max` SETs that may go out now (`None`: no limit), marked as handed out; waits up
    /// to `wait` for one when there is none.
    pub async fn take(&self, max: Option<usize>, wait: Duration, redeliver: Duration) -> Batch {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so that an offer between the look and the wait wakes it.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let batch = self.hand_out(max, redeliver);
            if !batch.sets.is_empty() || wait.is_zero() {
                return batch;
            }
            let due = self
                .next_redelivery(redeliver)
                .map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(due) => if due >= deadline {
                    return self.hand_out(max, redeliver);
                },
            }
        }
    }

    fn hand_out(&self, max: Option<usize>, redeliver: Duration) -> Batch {
        let now = Instant::now();
        let mut entries = self.lock();
        let mut batch = Batch::default();
        for e in entries.iter_mut() {
            if e.handed_out
                .is_some_and(|at| now.duration_since(at) < redeliver)
            {
                continue;
            }
            if max.is_some_and(|m| batch.sets.len() >= m) {
                batch.more_available = true;
                break;
            }
            e.handed_out = Some(now);
            batch.sets.push((e.jti.clone(), e.set.clone()));
        }
        batch
    }

    /// When the earliest SET handed out without an answer may go out again.
    fn next_redelivery(&self, redeliver: Duration) -> Option<Instant> {
        self.lock()
            .iter()
            .filter_map(|e| e.handed_out)
            .min()
            .map(|at| at + redeliver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn an_acknowledged_set_answers_its_offer_and_leaves_the_queue() {
        let q = Queue::default();
        let a = q.offer("a", "A".into());
        let b = q.offer("b", "B".into());
        let batch = q.take(Some(1), Duration::ZERO, LONG).await;
        assert_eq!(batch.sets, [("a".to_owned(), "A".to_owned())]);
        assert!(batch.more_available);
        q.settle("a", Ok(()));
        assert_eq!(a.await.unwrap(), Ok(()));
        let reported = Reported {
            err: "invalid_audience".into(),
            description: "no".into(),
        };
        q.settle("b", Err(reported.clone()));
        assert_eq!(b.await.unwrap(), Err(reported));
        q.settle("b", Ok(()));
        assert_eq!(q.take(None, Duration::ZERO, LONG).await, Batch::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_set_handed_out_goes_out_again_only_after_the_redelivery_wait() {
        let q = Queue::default();
        let _a = q.offer("a", "A".into());
        assert_eq!(q.take(None, Duration::ZERO, LONG).await.sets.len(), 1);
        assert!(q.take(None, Duration::ZERO, LONG).await.sets.is_empty());
        let again = q.take(None, 2 * LONG, LONG).await;
        assert_eq!(again.sets.len(), 1, "after the wait, unacknowledged");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_returns_as_soon_as_a_set_is_offered() {
        let q = std::sync::Arc::new(Queue::default());
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.take(None, LONG, LONG).await }
        });
        tokio::task::yield_now().await;
        q.post("v", "V".into());
        let batch = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the offer")
            .unwrap();
        assert_eq!(batch.sets, [("v".to_owned(), "V".to_owned())]);
    }
}
