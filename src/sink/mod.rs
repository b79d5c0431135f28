//! Sinks: where events go. A sink receives batches of stored events in log order and returns
//! only once the batch is durably handed over; the cursor is moved by `deliver`, never here.

pub mod jsonl;
pub mod kafka;
pub mod webhook;

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
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
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
    Webhook(webhook::WebhookSink),
    Kafka(kafka::KafkaSink),
}

impl Sink {
    pub fn from_config(config: &SinkConfig) -> Result<Sink, SinkError> {
        match config {
            SinkConfig::Jsonl(c) => Ok(Sink::Jsonl(jsonl::JsonlSink::open(c)?)),
            SinkConfig::Webhook(c) => Ok(Sink::Webhook(webhook::WebhookSink::new(c)?)),
            SinkConfig::Kafka(c) => Ok(Sink::Kafka(kafka::KafkaSink::new(c)?)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Jsonl(s) => s.name(),
            Sink::Webhook(s) => s.name(),
            Sink::Kafka(s) => s.name(),
        }
    }

    pub fn batch_size(&self) -> usize {
        match self {
            Sink::Jsonl(s) => s.batch_size(),
            Sink::Webhook(s) => s.batch_size(),
            Sink::Kafka(s) => s.batch_size(),
        }
    }

    /// Deliver a batch, in order; `Ok` means every event in it is durably delivered.
    pub async fn send(&mut self, batch: &[StoredEvent]) -> Result<(), Failed> {
        match self {
            Sink::Jsonl(s) => Ok(s.send(batch)?),
            // Its window of events in flight reaches past any one batch, so `deliver` hands
            // it the store (see `deliver::drain`) instead of batches.
            Sink::Webhook(s) => unreachable!(
                "deliver drives the webhook sink '{}' through its own loop, never by batch ({} events)",
                s.name(),
                batch.len()
            ),
            // The same: its messages in flight span batches (see `deliver::drain`).
            Sink::Kafka(s) => unreachable!(
                "deliver drives the kafka sink '{}' through its own loop, never by batch ({} events)",
                s.name(),
                batch.len()
            ),
        }
    }
}
