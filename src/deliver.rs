//! Delivery: moves events from the log to a sink, from the sink's stored cursor.
//!
//! Owns how `once` and `run` drive a sink, through the [`Sink`] interface only: it never knows
//! a sink's kind. Under `run` every sink is served by its own task, so a slow or dead sink never
//! delays another one, nor the polling. A failing sink is retried from its stored cursor with
//! growing pauses, and its health is kept in the store; a sink that keeps events in flight
//! while the head moves ([`Serving::Own`]) runs its own loop. It must never move a cursor past
//! an event a sink did not confirm: the at-least-once rule.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tracing::{error, info};

use crate::sink::{Serving, Sink, SinkError};
use crate::store::{SinkHealth, Store};

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Deliver everything between the sink's cursor and the log head; returns how many events.
pub async fn drain(store: &Store, sink: &mut Box<dyn Sink>) -> Result<u64, DeliverError> {
    Ok(sink.drain(store, None).await?)
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

/// Deliver until `shutdown` turns true: drain to the head, then wait for the head to move.
/// A failed delivery is logged and retried from the stored cursor with growing pauses; a
/// permanent failure stops the sink (it says why). A batch in progress when shutdown comes is
/// finished (or abandoned by the caller: it will be re-sent).
pub async fn serve(
    store: Store,
    sink: Box<dyn Sink>,
    mut head: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sink = match sink.serve(store.clone(), head.clone(), shutdown.clone()) {
        Serving::Own(run) => return run.await,
        Serving::Drained(sink) => sink,
    };
    let mut pauses = retry_pauses();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match sink.drain(&store, Some(&shutdown)).await {
            Ok(n) => {
                pauses = retry_pauses();
                if let Err(e) = store.set_sink_state(sink.name(), SinkHealth::Ok, None) {
                    error!(sink = sink.name(), error = %e, "cannot record the sink's health");
                }
                if n > 0 {
                    info!(sink = sink.name(), events = n, "delivered");
                }
                tokio::select! {
                    _ = head.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) if e.is_permanent() => {
                error!(sink = sink.name(), error = %e, "sink stopped");
                return;
            }
            Err(e) => {
                let wait = pauses.next().unwrap_or(Duration::from_secs(60));
                metrics::counter!("rollcall_delivery_retries_total", "sink" => sink.name().to_owned()).increment(1);
                if let Err(e) =
                    store.set_sink_state(sink.name(), SinkHealth::Degraded, Some(e.to_string()))
                {
                    error!(sink = sink.name(), error = %e, "cannot record the sink's health");
                }
                error!(sink = sink.name(), error = %e, retry_in = ?wait, "delivery failed; retrying from the stored cursor");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
