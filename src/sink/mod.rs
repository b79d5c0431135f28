//! Sinks: where events go. A sink receives batches of stored events in log order and returns
//! only once the batch is durably handed over; the cursor is moved by `deliver`, never here.

pub mod jsonl;

use crate::config::SinkConfig;
use crate::store::StoredEvent;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink '{sink}': cannot write {path}: {source}. Check that the directory exists, is writable and the disk is not full")]
    Io {
        sink: String,
        path: String,
        source: std::io::Error,
    },
}

/// A batch that failed part-way: its first `delivered` events are durably delivered (the cursor
/// moves past them), the rest will be sent again.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    pub delivered: usize,
    #[source]
    pub error: SinkError,
}

impl From<SinkError> for Failed {
    fn from(error: SinkError) -> Failed {
        Failed {
            delivered: 0,
            error,
        }
    }
}

/// Every kind of sink, dispatched by enum: the set is closed and known at compile time.
pub enum Sink {
    Jsonl(jsonl::JsonlSink),
}

impl Sink {
    pub fn from_config(config: &SinkConfig) -> Result<Sink, SinkError> {
        match config {
            SinkConfig::Jsonl(c) => Ok(Sink::Jsonl(jsonl::JsonlSink::open(c)?)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Jsonl(s) => s.name(),
        }
    }

    pub fn batch_size(&self) -> usize {
        match self {
            Sink::Jsonl(s) => s.batch_size(),
        }
    }

    /// Deliver a batch, in order; `Ok` means every event in it is durably delivered.
    pub async fn send(&mut self, batch: &[StoredEvent]) -> Result<(), Failed> {
        match self {
            Sink::Jsonl(s) => Ok(s.send(batch)?),
        }
    }
}
