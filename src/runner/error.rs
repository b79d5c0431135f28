//! Why the runner stopped, or a poll failed: its one error type.
//!
//! Owns the words of a cycle cancelled at its deadline; it decides nothing.

use std::time::Duration;

use crate::cycle::CycleError;
use crate::deliver::DeliverError;
use crate::sink::SinkError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// What a cycle failed on: its source, or the store.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error("source '{source_name}'")]
    Deadline {
        source_name: String,
        #[source]
        error: DeadlinePassed,
    },
    /// The source may not be polled now: another store holds its claim, or the claims cannot
    /// be read (docs/scaling.md, Claims).
    #[error("source '{source_name}'")]
    Claim {
        source_name: String,
        #[source]
        error: Box<super::claims::ClaimError>,
    },
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("stopped while the store refuses writes: everything committed before it failed is safe, and what was found since is derived again at the next start")]
    StoppedWithStoreFailing(#[source] StoreError),
}

impl From<StoreError> for RunnerError {
    fn from(e: StoreError) -> RunnerError {
        RunnerError::Cycle(CycleError::Store(e))
    }
}

/// A cycle ran past its source's `poll_deadline` and was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("the cycle did not end within its poll_deadline of {} and was cancelled. Check that the source answers (`rollcall doctor`), or raise `poll_deadline` if its cycles take this long", humantime::format_duration(*.deadline))]
pub struct DeadlinePassed {
    pub deadline: Duration,
}
