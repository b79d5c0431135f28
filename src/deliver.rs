//! Delivery: moves events from the log to a sink, from the sink's stored cursor.
//!
//! Owns the at-least-once rule: the cursor moves only after the sink confirmed a batch, so a
//! crash between the two re-sends that batch (with the same event ids) and never skips one.
//! Under `run` every sink is served by its own task, so a slow or dead sink never delays
//! another one, nor the polling.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::sink::jsonl::JsonlSink;
use crate::sink::{Sink, SinkError};
use crate::store::{SinkHealth, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Deliver everything between the sink's cursor and the log head; returns how many events.
pub async fn drain(store: &Store, sink: &mut Sink) -> Result<u64, DeliverError> {
    match sink {
        Sink::Jsonl(s) => drain_jsonl(store, s),
        // The webhook sink keeps events in flight beyond its cursor (one user retrying must not
        // hold back the others), so it reads the log and moves its cursor itself.
        Sink::Webhook(w) => Ok(w.drain(store).await.map_err(SinkError::from)?),
        // The Kafka sink keeps messages in flight across batches, for throughput.
        Sink::Kafka(k) => Ok(k.drain(store, None).await.map_err(SinkError::from)?),
    }
}

/// A batch at a time: write (and fsync), then move the cursor past it.
fn drain_jsonl(store: &Store, sink: &mut JsonlSink) -> Result<u64, DeliverError> {
    let mut delivered = 0;
    loop {
        let cursor = store.cursor(sink.name())?;
        let batch = store.events_from(cursor, sink.batch_size())?;
        let Some(last) = batch.last() else {
            return Ok(delivered);
        };
        let next = last.offset + 1;
        sink.send(&batch)?;
        store.set_cursor(sink.name(), next)?;
        delivered += batch.len() as u64;
        debug!(sink = sink.name(), cursor = next, "batch delivered");
    }
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
/// A failed delivery is logged and retried from the stored cursor with growing pauses; a batch
/// in progress when shutdown comes is finished (or abandoned by the caller: it will be re-sent).
pub async fn serve(
    store: Store,
    mut sink: Sink,
    mut head: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Sink::Webhook(w) = sink {
        return w.serve(store, head, shutdown).await;
    }
    if let Sink::Kafka(k) = sink {
        return k.serve(store, head, shutdown).await;
    }
    let mut pauses = retry_pauses();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match drain(&store, &mut sink).await {
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
