//! What `run` listens to besides the sink: the log head moving, shutdown, and an operator's
//! restart.
//!
//! Owns [`Restart`] (a change to the store made while the sink stands still) and [`Wake`]. It
//! must never send anything itself: a restart's change runs only once nothing is in flight and
//! the cursor is saved.

use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{Store, StoreError};

/// A change to the store an operator makes while a sink stands still; it says what it did.
pub type Change = Box<dyn FnOnce(&Store) -> Result<String, StoreError> + Send>;

/// An operator's request to a sink that `run` serves (`sink enable`, `replay --rewind`): stop
/// sending, run `then` with nothing in flight and the cursor saved, then start again from the
/// stored cursor, a stopped sink included.
pub struct Restart {
    pub then: Change,
    /// What `then` said, for the operator.
    pub done: oneshot::Sender<Result<String, StoreError>>,
}

impl Restart {
    pub(super) fn apply(self, store: &Store) {
        // The operator may have gone away: nothing to tell then.
        let _ = self.done.send((self.then)(store));
    }
}

/// What `run` wakes a pass for.
pub(super) struct Wake<'w> {
    pub(super) head: &'w mut watch::Receiver<u64>,
    pub(super) shutdown: &'w mut watch::Receiver<bool>,
    pub(super) restarts: &'w mut mpsc::Receiver<Restart>,
}
