//! The JSONL sink: one event per line, appended to a file (or stdout) for SIEM shippers.
//!
//! Writes each event's encoded body (in CloudEvents, the stored bytes unchanged), so a line is
//! byte-identical on every redelivery and replay. A batch is flushed and fsynced before it
//! counts as delivered, and only then does the cursor move past it. Writes are blocking: a
//! batch is small, and the file is local.

mod config;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::debug;

pub use config::JsonlConfig;

use super::{Serving, Sink, SinkError};
use crate::encode::{Binding, Encoder, Envelope, Mode, Unreadable};
use crate::store::{Store, StoreError, StoredEvent};

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("sink '{sink}': cannot write {path}: {source}. Check that the directory exists, is writable and the disk is not full")]
    Io {
        sink: String,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    target: Target,
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
            target,
        }))
    }
}

impl JsonlSink {
    fn write(&mut self, batch: &[StoredEvent]) -> Result<(), JsonlError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.bytes.len() + 1).sum());
        for e in batch {
            let envelope = Envelope::parse(e)?;
            buf.extend_from_slice(&self.encoder.encode(&envelope)?.body);
            buf.push(b'\n');
        }
        let written = match &mut self.target {
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

    /// A batch at a time: write (and fsync), then move the cursor past it.
    fn drain_batches(
        &mut self,
        store: &Store,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<u64, JsonlError> {
        let mut delivered = 0;
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                return Ok(delivered);
            }
            let cursor = store.cursor(&self.name)?;
            let batch = store.events_from(cursor, self.batch_size)?;
            let Some(last) = batch.last() else {
                return Ok(delivered);
            };
            let next = last.offset + 1;
            self.write(&batch)?;
            store.set_cursor(&self.name, next)?;
            delivered += batch.len() as u64;
            debug!(sink = %self.name, cursor = next, "batch delivered");
        }
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn drain<'a>(
        &'a mut self,
        store: &'a Store,
        stop: Option<&'a watch::Receiver<bool>>,
    ) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move { Ok(self.drain_batches(store, stop)?) })
    }

    fn serve(
        self: Box<Self>,
        _store: Store,
        _head: watch::Receiver<u64>,
        _shutdown: watch::Receiver<bool>,
    ) -> Serving {
        Serving::Drained(self)
    }

    fn send_range<'a>(
        &'a mut self,
        _store: &'a Store,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move {
            self.write(events)?;
            Ok(events.len() as u64)
        })
    }
}
