//! The JSONL sink: one event per line, appended to a file (or stdout) for SIEM shippers.
//!
//! Writes each event's stored bytes unchanged, so a line is byte-identical on every
//! redelivery and replay. A batch is flushed and fsynced before it counts as delivered.
//! Writes are blocking: a batch is small, and the file is local.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

use super::SinkError;
use crate::config::JsonlConfig;
use crate::store::StoredEvent;

enum Target {
    Stdout,
    File(File),
}

pub struct JsonlSink {
    name: String,
    path: String,
    batch_size: usize,
    target: Target,
}

impl JsonlSink {
    pub fn open(config: &JsonlConfig) -> Result<JsonlSink, SinkError> {
        let target = if config.path == "-" {
            Target::Stdout
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&config.path)
                .map_err(|source| SinkError::Io {
                    sink: config.name.clone(),
                    path: config.path.clone(),
                    source,
                })?;
            Target::File(file)
        };
        Ok(JsonlSink {
            name: config.name.clone(),
            path: config.path.clone(),
            batch_size: config.batch_size,
            target,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn send(&mut self, batch: &[StoredEvent]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.bytes.len() + 1).sum());
        for e in batch {
            buf.extend_from_slice(&e.bytes);
            buf.push(b'\n');
        }
        let written = match &mut self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&buf).and_then(|()| out.flush())
            }
            Target::File(f) => f.write_all(&buf).and_then(|()| f.sync_data()),
        };
        written.map_err(|source| SinkError::Io {
            sink: self.name.clone(),
            path: self.path.clone(),
            source,
        })
    }
}
