//! Delivery: the one engine that moves events from the log to a sink, at least once.
//!
//! Owns the at-least-once rule for every sink kind, written once: a window of the events read
//! beyond the sink's stored cursor, the cursor that only ever moves to below the oldest event
//! not yet acknowledged (or dead-lettered, or filtered out), throttled cursor saves, the retry
//! pauses, the sink's health in the store, dead letters, and how `once`, `run`, `replay` and
//! `dlq retry` drive a sink. It speaks to sinks only through [`Sink`], and never knows a kind.
//!
//! Order per user is kept one of two ways, as the sink declares ([`Order`](crate::sink::Order)):
//! one event per user in flight with per-event retries and dead letters (webhooks), or batches
//! back to back into a destination that keeps order itself, where a failure rewinds to the
//! cursor (Kafka, JSONL).
//!
//! Under `run` every sink is served by its own task, so a slow or dead sink never delays
//! another one, nor the polling. It must never move a cursor past an event the sink did not
//! confirm, and never drop an event: a sink that cannot go on stops and says why. Events that
//! retention removed before the sink read them are gone from the log; the sink passes them
//! only loudly (a warning, a metric, and a count in the store that `status` shows).
//!
//! One file per concern: why delivery stopped (`error.rs`), what `run` listens to (`wake.rs`),
//! one sink being delivered to and what became of one event (`ctx.rs`), retries and their
//! pauses (`retry.rs`), the window of events beyond the cursor (`window.rs`), one pass
//! (`pass.rs`), and what an operator sends again (`resend.rs`). This file is how `once` and
//! `run` drive a sink; no file here imports it.

mod ctx;
mod error;
mod pass;
mod resend;
mod retry;
mod wake;
mod window;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

pub use ctx::ONCE_PATIENCE;
pub use error::DeliverError;
pub use resend::{retry_dead_letters, send_range, RetryReport};
pub use retry::retry_pauses;
pub use wake::{Change, Restart};

use crate::sink::Sink;
use crate::store::Store;
use ctx::Ctx;
use wake::Wake;

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

/// `run`: deliver until `shutdown` turns true, reading more whenever `head` moves. A failure
/// is logged and retried from the stored cursor with growing pauses; a permanent one stops the
/// sink until an operator restarts it (`rollcall sink enable`) or rollcall restarts; it says
/// why, in the log and in `status`. At shutdown nothing new is sent and what is in flight is
/// waited for (as long as `run` lets it), its cursor stored; events in flight at a restart, or
/// still out when `run` gives up waiting, are abandoned: the cursor is before them, so they are
/// re-sent with the same id.
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
