//! Sinks: where events go, at least once and in log order per user.
//!
//! The JSONL sink takes batches and `deliver` moves its cursor after each one. The Kafka and
//! webhook sinks keep events in flight beyond any one batch, so they read the log themselves and
//! move their own cursor, never past an event that is not yet delivered (or dead-lettered).
//! No sink ever skips an event silently.

pub mod jsonl;
pub mod kafka;
pub mod webhook;

use crate::config::SinkConfig;

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
}
