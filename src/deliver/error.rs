//! Why delivering to a sink stopped: the one error of the delivery engine.
//!
//! Owns [`DeliverError`] and the rule that tells a failure worth retrying from one that needs
//! an operator. Each message says what the operator should do; it must never hold an event's
//! content or a secret, only offsets, counts and the sink's own error.

use crate::encode::Unreadable;
use crate::sink::SinkError;
use crate::store::StoreError;

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
