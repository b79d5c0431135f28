//! The event log: `events` (offset, big-endian u64 → the event's JSON, append-only), its head
//! (the next offset, in `meta`), the first offset retention kept, and the bytes it holds.
//!
//! Owns reading the log and compacting it: events are read as stored (the exact bytes every
//! sink sends), the byte count is kept incrementally, and compaction removes events below a
//! bound only, never reusing an offset, and keeps the hash of the last event it removed as
//! where the hash chain now starts. It never chooses that bound (`retention` does, sparing
//! what a sink has not delivered) and never appends: events enter the log only with a commit.

use std::ops::Range;

use super::chain::{encode_start, stored_hash, KEY_CHAIN_START};
use super::{be_u64, Store, StoreError};
use crate::event::Event;

/// The offset the next event will get.
pub(super) const KEY_NEXT_OFFSET: &[u8] = b"next_offset";
/// The first offset still in the log; everything below it was compacted away by retention.
const KEY_LOG_START: &[u8] = b"log_start";
/// Bytes of the events in the log and the offset up to which they are counted (2 × u64 BE):
/// counted incrementally, so a size cap costs a scan of the new events, not of the whole log.
const KEY_LOG_BYTES: &[u8] = b"log_bytes";
/// Events removed per sled batch when compacting: bounds the memory of one batch.
const COMPACT_BATCH: usize = 10_000;

/// One event as stored: its offset and its exact bytes, which every sink sends unchanged.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub offset: u64,
    pub bytes: sled::IVec,
}

impl StoredEvent {
    pub fn event(&self) -> Result<Event, StoreError> {
        serde_json::from_slice(&self.bytes).map_err(|e| StoreError::Corrupt {
            what: format!("event at offset {}", self.offset),
            detail: e.to_string(),
        })
    }
}

impl Store {
    /// The offset the next event will get (= number of events ever appended).
    pub fn head(&self) -> Result<u64, StoreError> {
        match self.meta.get(KEY_NEXT_OFFSET)? {
            Some(v) => be_u64(&v, "next offset"),
            None => Ok(0),
        }
    }

    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.events
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok(StoredEvent {
                    offset: be_u64(&k, "event key")?,
                    bytes: v,
                })
            })
            .collect()
    }

    /// The oldest offset retention has kept: events below it were compacted away.
    pub fn log_start(&self) -> Result<u64, StoreError> {
        match self.meta.get(KEY_LOG_START)? {
            Some(v) => be_u64(&v, "log start"),
            None => Ok(0),
        }
    }

    /// Bytes of event JSON in the log (from the log start to the head).
    pub fn log_bytes(&self) -> Result<u64, StoreError> {
        let (mut bytes, mut counted) = self.counted_bytes()?;
        let head = self.head()?;
        if counted < head {
            for kv in self.events.range(counted.to_be_bytes()..) {
                let (k, v) = kv?;
                bytes += v.len() as u64;
                counted = be_u64(&k, "event key")? + 1;
            }
            self.writing(|| self.set_counted_bytes(bytes, counted))?;
        }
        Ok(bytes)
    }

    fn counted_bytes(&self) -> Result<(u64, u64), StoreError> {
        match self.meta.get(KEY_LOG_BYTES)? {
            Some(v) if v.len() == 16 => Ok((
                be_u64(&v[..8], "log bytes")?,
                be_u64(&v[8..], "log bytes offset")?,
            )),
            Some(v) => Err(StoreError::Corrupt {
                what: "log byte count".into(),
                detail: format!("expected 16 bytes, found {}", v.len()),
            }),
            // Never counted (a store from before retention): count from the log start.
            None => Ok((0, self.log_start()?)),
        }
    }

    fn set_counted_bytes(&self, bytes: u64, counted: u64) -> Result<(), StoreError> {
        let mut v = bytes.to_be_bytes().to_vec();
        v.extend_from_slice(&counted.to_be_bytes());
        self.meta.insert(KEY_LOG_BYTES, v)?;
        Ok(())
    }

    /// Remove every event below `below` (at most up to the head) and make `below` the log
    /// start; returns the offsets that are gone now. Never moves a cursor: choosing a bound
    /// that spares undelivered events is the caller's job (see `retention`).
    pub fn compact(&self, below: u64) -> Result<Range<u64>, StoreError> {
        let _no_export = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        self.writing(|| self.compact_below(below))
    }

    /// Where the chain starts once the log starts at `below`: `None` while it starts there
    /// or later (or there is no chain).
    fn chain_start_after(
        &self,
        below: u64,
    ) -> Result<Option<(u64, crate::chain::Hash)>, StoreError> {
        match self.chain_start()? {
            Some((start, _)) if start < below => {}
            _ => return Ok(None),
        }
        let last = below - 1;
        let bytes = self
            .events
            .get(last.to_be_bytes())?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("event at offset {last}"),
                detail: "missing from the log, though below its head and above its start".into(),
            })?;
        Ok(stored_hash(last, &bytes)?.map(|hash| (below, hash)))
    }

    fn compact_below(&self, below: u64) -> Result<Range<u64>, StoreError> {
        let start = self.log_start()?;
        let below = below.min(self.head()?);
        if below <= start {
            return Ok(start..start);
        }
        // The new start is durable before any key goes: a crash half-way leaves keys below
        // the start (removed by the next compaction), never a start that claims too much.
        // With it, in the same batch, where the chain now starts: the hash of the last event
        // that goes, so the first one kept still follows something provable.
        let mut new_start = sled::Batch::default();
        new_start.insert(KEY_LOG_START, &below.to_be_bytes());
        if let Some(chain_start) = self.chain_start_after(below)? {
            new_start.insert(KEY_CHAIN_START, encode_start(chain_start));
        }
        self.meta.apply_batch(new_start)?;
        self.db.flush()?;
        let (mut bytes, counted) = self.counted_bytes()?;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.events.range(..below.to_be_bytes()).take(COMPACT_BATCH) {
                let (k, v) = kv?;
                if be_u64(&k, "event key")? < counted {
                    bytes = bytes.saturating_sub(v.len() as u64);
                }
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.events.apply_batch(batch)?;
        }
        self.set_counted_bytes(bytes, counted.max(below))?;
        self.db.flush()?;
        Ok(start..below)
    }
}
