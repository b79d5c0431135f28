//! One commit: a part of a cycle (or the whole of it), as one sled transaction over the
//! snapshot, its membership tree, the event log and `meta`: the changed records, the events
//! they produced with consecutive offsets and their links in the hash chain (`chain.rs`), and
//! the source state when given.
//!
//! A checkpoint due by time, written after a poll that committed nothing, is such a transaction
//! of its own.
//!
//! Owns the rule the rest of rollcall relies on: a commit lands whole or not at all, and is
//! flushed to disk before any sink may see its events, so a crash at any instant loses nothing
//! and derives nothing twice. It never decides what changed (the cycle does), and never moves a
//! sink's cursor.

use std::ops::Range;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::chain::{abort, Appender};
use super::log::KEY_NEXT_OFFSET;
use super::snapshot::{members_of, Record};
use super::source_state::{state_key, SourceState};
use super::{be_u64, json_bytes, Store, StoreError};
use crate::event::Event;

/// A cycle's outcome, ready to commit.
pub struct Commit<'a> {
    pub source: &'a str,
    /// Users that are new or differ from the stored snapshot (unchanged users are not rewritten).
    pub upserts: Vec<Record>,
    /// Keys (as stored) that left the snapshot.
    pub removals: Vec<Vec<u8>>,
    /// Events without offsets; the store assigns them in order.
    pub events: Vec<Event>,
    /// The source state as of this commit; `None` for a part of a cycle (its users, removals
    /// and their events): the state stays as the last complete cycle stored it, so a crash
    /// after this part re-reads what is left, and finds this part's users already as they are.
    pub state: Option<&'a SourceState>,
}

impl Store {
    /// Commit a cycle atomically and durably, each event chained to the one before it (and a
    /// signed checkpoint after them when one is due); returns the offsets the log grew by.
    pub fn commit(&self, c: Commit<'_>) -> Result<Range<u64>, StoreError> {
        let range = self.writing(|| self.commit_durably(&c))?;
        if c.state.is_some() {
            self.unsaved_states().remove(c.source);
        }
        // Sources commit concurrently: the later of two commits may report first, and the
        // head must not step back to the earlier one's end. Every commit still wakes the sinks.
        self.head.send_modify(|head| *head = (*head).max(range.end));
        Ok(range)
    }

    fn commit_durably(&self, c: &Commit<'_>) -> Result<Range<u64>, StoreError> {
        // A poisoned gate only means an export panicked: commits go on.
        let _open = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.snapshot_tree(c.source)?;
        let members_tree = self.members_tree(c.source)?;
        let state = c.state.map(json_bytes);
        let members: Vec<Vec<u8>> = c.upserts.iter().map(|r| members_of(&r.value)).collect();
        let trees = (&self.events, &snapshot, &members_tree, &self.meta);
        let now = chrono::Utc::now();
        let result = trees.transaction(|(events, snap, snap_members, meta)| {
            let first = match meta.get(KEY_NEXT_OFFSET)? {
                Some(v) => {
                    be_u64(&v, "next offset").map_err(ConflictableTransactionError::Abort)?
                }
                None => 0,
            };
            let mut chain = Appender::read(self, meta, now)?;
            let mut next = first;
            for e in &c.events {
                next = chain.append(events, next, e)?;
            }
            let next = chain.finish(events, meta, next)?;
            meta.insert(KEY_NEXT_OFFSET, &next.to_be_bytes())?;
            if let Some(state) = &state {
                meta.insert(state_key(c.source).as_slice(), state.as_slice())?;
            }
            for (r, m) in c.upserts.iter().zip(&members) {
                snap.insert(r.key.as_slice(), r.value.as_slice())?;
                snap_members.insert(r.key.as_slice(), m.as_slice())?;
            }
            for key in &c.removals {
                snap.remove(key.as_slice())?;
                snap_members.remove(key.as_slice())?;
            }
            Ok(first..next)
        });
        let range = result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        })?;
        // Durable before any sink may deliver these events: otherwise a crash could lose the
        // commit after delivery, and the next cycle would derive the same change under new ids.
        self.db.flush()?;
        Ok(range)
    }

    /// Write a checkpoint now if one is due by time (`checkpoint_interval` passed with events
    /// unsigned): after each poll, so a quiet store is signed too. Returns its offset.
    pub fn checkpoint_if_due(&self) -> Result<Option<u64>, StoreError> {
        let now = chrono::Utc::now();
        if !self.checkpoint_due(now)? {
            return Ok(None);
        }
        let written = self.writing(|| {
            let _open = self.gate.read().unwrap_or_else(|e| e.into_inner());
            let result = (&self.events, &self.meta).transaction(|(events, meta)| {
                let first = match meta.get(KEY_NEXT_OFFSET)? {
                    Some(v) => abort(be_u64(&v, "next offset"))?,
                    None => 0,
                };
                let next = Appender::read(self, meta, now)?.finish(events, meta, first)?;
                meta.insert(KEY_NEXT_OFFSET, &next.to_be_bytes())?;
                Ok((first < next).then_some(first))
            });
            let written = result.map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
            self.db.flush()?;
            Ok(written)
        })?;
        if let Some(offset) = written {
            self.head
                .send_modify(|head| *head = (*head).max(offset + 1));
        }
        Ok(written)
    }
}
