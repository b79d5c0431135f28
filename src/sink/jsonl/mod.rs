//! The JSONL sink: one event per line, appended to a file (or stdout) for SIEM shippers.
//!
//! Owns the file and how a batch lands in it. Writes each event's encoded body (in
//! CloudEvents, the stored bytes unchanged), so a line is byte-identical on every redelivery
//! and replay. A batch counts as acknowledged only once it is written and fsynced; `deliver`
//! moves the cursor after that. Writes are blocking: a batch is small, and the file is local.

mod config;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

pub use config::JsonlConfig;

use super::{Delivery, Message, Order, Refusal, Sink};
use crate::encode::{Binding, Encoder, Mode};

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("sink '{sink}': cannot write {path}. Check that the directory exists, is writable and the disk is not full")]
    Io {
        sink: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl JsonlError {
    /// A full disk or a missing directory can be fixed while rollcall waits.
    pub fn is_permanent(&self) -> bool {
        false
    }
}

enum Target {
    Stdout,
    File(File),
}

pub struct JsonlSink {
    name: String,
    path: String,
    batch_size: usize,
    encoder: Encoder,
    target: Mutex<Target>,
}

impl JsonlConfig {
    pub fn build(&self) -> Result<Box<dyn Sink>, JsonlError> {
        let target = if self.path == "-" {
            Target::Stdout
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|source| JsonlError::Io {
                    sink: self.name.clone(),
                    path: self.path.clone(),
                    source,
                })?;
            Target::File(file)
        };
        Ok(Box::new(JsonlSink {
            name: self.name.clone(),
            path: self.path.clone(),
            batch_size: self.batch_size,
            // One JSON document per line: the structured form.
            encoder: Encoder {
                format: self.format,
                mode: Mode::Structured,
                binding: Binding::Http,
            },
            target: Mutex::new(target),
        }))
    }
}

impl JsonlSink {
    fn write(&self, batch: &[Arc<Message>]) -> Result<(), JsonlError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|m| m.body.len() + 1).sum());
        for m in batch {
            buf.extend_from_slice(&m.body);
            buf.push(b'\n');
        }
        // A panic elsewhere while holding the lock leaves the file as it was: keep using it.
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &mut *target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&buf).and_then(|()| out.flush())
            }
            Target::File(f) => f.write_all(&buf).and_then(|()| f.sync_data()),
        };
        written.map_err(|source| JsonlError::Io {
            sink: self.name.clone(),
            path: self.path.clone(),
            source,
        })
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// One batch at a time: written and fsynced, then acknowledged as a whole.
    fn delivery(&self) -> Delivery {
        Delivery {
            order: Order::Pipelined,
            batch: self.batch_size,
            max_in_flight: self.batch_size,
        }
    }

    fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        // Written before returning: batches land in the order they were handed over.
        let result = self.write(&batch).map_err(Refusal::new);
        Box::pin(async move { result })
    }
}
