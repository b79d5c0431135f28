//! What the store keeps of each sink: its cursor (`cursors`: the next offset to deliver), the
//! events it skipped because retention compacted them away first and those its subscription
//! left out, its health as it last reported it (`sink/<sink>`, `skipped/<sink>` and
//! `filtered/<sink>` in `meta`), and its dead letters (`dlq/<sink>`).
//!
//! Owns moving a cursor durably (the one place that sees every delivery, so it counts them)
//! and keeping each dead letter with its bytes, so compaction cannot lose it. It never decides
//! when a cursor moves: its callers do (delivery, only past what the sink confirmed; replay's
//! rewind).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{be_u64, json_bytes, Store, StoreError};

/// How a sink is doing, as the sink last reported it; `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkHealth {
    #[default]
    Ok,
    /// Failing and retrying (broker down, endpoint erroring); nothing is skipped.
    Degraded,
    /// Stopped for good until an operator acts (e.g. a webhook endpoint answered 410 Gone).
    Disabled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    pub health: SinkHealth,
    pub since: Option<DateTime<Utc>>,
    /// Never holds a secret: sinks redact before reporting.
    pub last_error: Option<String>,
}

/// An event a sink gave up on, kept with its bytes (so compaction of the log cannot lose it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub offset: u64,
    pub event: serde_json::Value,
    pub reason: String,
    pub attempts: u32,
    pub at: DateTime<Utc>,
}

impl Store {
    /// The next offset the sink has to deliver; a sink never seen starts at the beginning.
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        match self.cursors.get(sink)? {
            Some(v) => be_u64(&v, "cursor"),
            None => Ok(0),
        }
    }

    /// Durably move a sink's cursor.
    pub fn set_cursor(&self, sink: &str, next: u64) -> Result<(), StoreError> {
        self.writing(|| self.move_cursor(sink, next))
    }

    fn move_cursor(&self, sink: &str, next: u64) -> Result<(), StoreError> {
        let previous = self.cursors.insert(sink, &next.to_be_bytes())?;
        // Every sink moves its cursor here, so this is the one place that sees all deliveries.
        let previous = previous
            .map(|v| be_u64(&v, "cursor"))
            .transpose()?
            .unwrap_or(0);
        metrics::counter!("rollcall_events_delivered_total", "sink" => sink.to_owned())
            .increment(next.saturating_sub(previous));
        self.db.flush()?;
        Ok(())
    }

    /// Events retention compacted away before the sink received them, over the store's life
    /// (see [`Store::skip_compacted`]).
    pub fn skipped(&self, sink: &str) -> Result<u64, StoreError> {
        match self.meta.get(skipped_key(sink))? {
            Some(v) => be_u64(&v, "skipped events"),
            None => Ok(0),
        }
    }

    /// Move a sink's cursor from `from` to `to` over events retention compacted away before
    /// the sink received them, adding them to its skipped count in the same durable write;
    /// returns the count now. They are not counted as delivered.
    pub fn skip_compacted(&self, sink: &str, from: u64, to: u64) -> Result<u64, StoreError> {
        let (_, total) =
            self.move_counting(sink, to, &skipped_key(sink), to.saturating_sub(from))?;
        Ok(total)
    }

    /// Move a sink's cursor back to `to` for its service to re-send from there (`rollcall
    /// replay --rewind`), noting where it was: the events below that went out before, so they
    /// go out again marked as replays ([`Store::replayed_below`]). One durable write.
    pub fn rewind_cursor(&self, sink: &str, to: u64) -> Result<(), StoreError> {
        let key = replayed_key(sink);
        self.cursor_and_meta(|cursors, meta| {
            let was = counted(
                cursors.insert(sink.as_bytes(), &to.to_be_bytes())?,
                "cursor",
            )?;
            let below = counted(meta.get(&key)?, "replayed offsets")?.max(was);
            meta.insert(key.as_slice(), &below.to_be_bytes())?;
            Ok(())
        })
    }

    /// The offset below which the sink's events go out marked as replays: where its cursor was
    /// when it was last rewound (0: never).
    pub fn replayed_below(&self, sink: &str) -> Result<u64, StoreError> {
        match self.meta.get(replayed_key(sink))? {
            Some(v) => be_u64(&v, "replayed offsets"),
            None => Ok(0),
        }
    }

    /// Events the sink's subscription left out (docs/sinks.md, Routing), over the store's
    /// life (see [`Store::advance_cursor`]).
    pub fn filtered(&self, sink: &str) -> Result<u64, StoreError> {
        match self.meta.get(filtered_key(sink))? {
            Some(v) => be_u64(&v, "filtered events"),
            None => Ok(0),
        }
    }

    /// Durably move a sink's cursor to `next`, past `filtered` events its subscription left
    /// out, which are added to its filtered count in the same write (so a crash counts none
    /// of them twice); the rest of the advance counts as delivered.
    pub fn advance_cursor(&self, sink: &str, next: u64, filtered: u64) -> Result<(), StoreError> {
        if filtered == 0 {
            return self.set_cursor(sink, next);
        }
        let (previous, _) = self.move_counting(sink, next, &filtered_key(sink), filtered)?;
        metrics::counter!("rollcall_events_delivered_total", "sink" => sink.to_owned())
            .increment(next.saturating_sub(previous).saturating_sub(filtered));
        Ok(())
    }

    /// Move a sink's cursor to `to` and add `add` to the count under `key` in `meta`, in one
    /// durable write; returns the cursor before and the count after.
    fn move_counting(
        &self,
        sink: &str,
        to: u64,
        key: &[u8],
        add: u64,
    ) -> Result<(u64, u64), StoreError> {
        self.cursor_and_meta(|cursors, meta| {
            let total = counted(meta.get(key)?, "a sink's count")?.saturating_add(add);
            let previous = counted(
                cursors.insert(sink.as_bytes(), &to.to_be_bytes())?,
                "cursor",
            )?;
            meta.insert(key, &total.to_be_bytes())?;
            Ok((previous, total))
        })
    }

    /// One durable transaction over the cursors and `meta`.
    fn cursor_and_meta<T>(
        &self,
        f: impl Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<T, ConflictableTransactionError<StoreError>>,
    ) -> Result<T, StoreError> {
        self.writing(|| {
            let done = (&self.cursors, &self.meta)
                .transaction(|(cursors, meta)| f(cursors, meta))
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => StoreError::Sled(e),
                })?;
            self.db.flush()?;
            Ok(done)
        })
    }

    pub fn sink_state(&self, sink: &str) -> Result<SinkState, StoreError> {
        match self.meta.get(format!("sink/{sink}"))? {
            None => Ok(SinkState::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: format!("state of sink {sink}"),
                detail: e.to_string(),
            }),
        }
    }

    /// Record a sink's health; `since` is kept while the health does not change.
    pub fn set_sink_state(
        &self,
        sink: &str,
        health: SinkHealth,
        last_error: Option<String>,
    ) -> Result<(), StoreError> {
        let old = self.sink_state(sink)?;
        let since = if old.health == health && old.since.is_some() {
            old.since
        } else {
            Some(Utc::now())
        };
        if health == SinkHealth::Degraded {
            metrics::counter!("rollcall_delivery_failures_total", "sink" => sink.to_owned())
                .increment(1);
        }
        let state = SinkState {
            health,
            since,
            last_error,
        };
        if state != old {
            self.writing(|| {
                self.meta
                    .insert(format!("sink/{sink}"), json_bytes(&state))?;
                self.db.flush()?;
                Ok(())
            })?;
        }
        Ok(())
    }

    pub(super) fn dlq_tree(&self, sink: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(dlq_name(sink))?)
    }

    /// A sink's dead-letter tree for reading: `None` when it has none, since opening a tree
    /// that does not exist creates it, a write that a failing store refuses.
    fn dlq_tree_if_any(&self, sink: &str) -> Result<Option<sled::Tree>, StoreError> {
        let name = dlq_name(sink);
        if !self.db.tree_names().iter().any(|t| t == name.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(self.db.open_tree(name)?))
    }

    /// Park an event a sink gave up on. Durable when this returns.
    pub fn dead_letter(&self, sink: &str, letter: &DeadLetter) -> Result<(), StoreError> {
        metrics::counter!("rollcall_events_dead_lettered_total", "sink" => sink.to_owned())
            .increment(1);
        self.writing(|| {
            self.dlq_tree(sink)?
                .insert(letter.offset.to_be_bytes(), json_bytes(letter))?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// A sink's dead letters, in offset order.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let Some(tree) = self.dlq_tree_if_any(sink)? else {
            return Ok(Vec::new());
        };
        tree.iter()
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("dead letter of sink {sink}"),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    pub fn dead_letter_count(&self, sink: &str) -> Result<usize, StoreError> {
        Ok(self.dlq_tree_if_any(sink)?.map_or(0, |t| t.len()))
    }

    /// Remove one dead letter (after a successful retry, or a purge).
    pub fn remove_dead_letter(&self, sink: &str, offset: u64) -> Result<bool, StoreError> {
        self.writing(|| {
            let removed = self.dlq_tree(sink)?.remove(offset.to_be_bytes())?.is_some();
            self.db.flush()?;
            Ok(removed)
        })
    }
}

/// A cursor or a count read in a transaction; absent is 0.
fn counted(
    v: Option<sled::IVec>,
    what: &str,
) -> Result<u64, ConflictableTransactionError<StoreError>> {
    v.map(|v| be_u64(&v, what))
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(ConflictableTransactionError::Abort)
}

fn dlq_name(sink: &str) -> String {
    format!("dlq/{sink}")
}

/// Beside the sink's state in `meta`: how many events it skipped (see [`Store::skipped`]).
fn skipped_key(sink: &str) -> Vec<u8> {
    format!("skipped/{sink}").into_bytes()
}

/// Beside the sink's state in `meta`: where its cursor was when it was last rewound (see
/// [`Store::replayed_below`]).
fn replayed_key(sink: &str) -> Vec<u8> {
    format!("replayed/{sink}").into_bytes()
}

/// Beside the sink's state in `meta`: how many events its subscription left out (see
/// [`Store::filtered`]).
fn filtered_key(sink: &str) -> Vec<u8> {
    format!("filtered/{sink}").into_bytes()
}
