//! Delivery: moves events from the log to a sink, from the sink's stored cursor.
//!
//! Owns the at-least-once rule: the cursor moves only after the sink confirmed a batch, so a
//! crash between the two re-sends that batch (with the same event ids) and never skips one.

use tracing::debug;

use crate::sink::{Sink, SinkError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Deliver everything between the sink's cursor and the log head; returns how many events.
pub async fn drain(store: &Store, sink: &mut Sink) -> Result<u64, DeliverError> {
    let mut delivered = 0;
    loop {
        let cursor = store.cursor(sink.name())?;
        let batch = store.events_from(cursor, sink.batch_size())?;
        let Some(last) = batch.last() else {
            return Ok(delivered);
        };
        let next = last.offset + 1;
        sink.send(&batch).await?;
        store.set_cursor(sink.name(), next)?;
        delivered += batch.len() as u64;
        debug!(sink = sink.name(), cursor = next, "batch delivered");
    }
}
