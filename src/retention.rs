//! Retention: which old events the log may drop, by age (`retain`) and by size (`max_bytes`).
//!
//! Owns the choice of the compaction bound; the store does the removing. It must never drop an
//! event a configured sink has not delivered yet (the bound stops at the slowest sink's cursor)
//! unless `force` is set, and then it says which sinks lost events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::encode::Envelope;
use crate::store::{Store, StoreError};

/// Events read at a time while looking for the bound.
const SCAN_CHUNK: usize = 1_000;

/// The `[store]` retention policy and the sinks whose cursors bound it.
#[derive(Debug, Clone)]
pub struct Retention {
    retain: Option<Duration>,
    max_bytes: Option<u64>,
    force: bool,
    sinks: Vec<crate::sink::SinkConfig>,
}

/// What one pass of retention did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Offsets removed now (empty when nothing was due or allowed).
    pub removed: std::ops::Range<u64>,
    /// Where the policy alone would have cut, when a sink's cursor held it back.
    pub wanted: Option<u64>,
    /// The sink that held it back (the slowest one).
    pub held_by: Option<String>,
    /// With `force`: sinks whose undelivered events were removed.
    pub overrun: Vec<String>,
}

impl Retention {
    pub fn new(config: &Config) -> Retention {
        Retention {
            retain: config.store.retain,
            max_bytes: config.store.max_bytes,
            force: config.store.force,
            sinks: config.sinks.clone(),
        }
    }

    /// No policy set: the log is kept whole.
    pub fn is_off(&self) -> bool {
        self.retain.is_none() && self.max_bytes.is_none()
    }

    /// Compact what the policy lets go as of `now`.
    pub fn enforce(&self, store: &Store, now: DateTime<Utc>) -> Result<Compaction, StoreError> {
        let start = store.log_start()?;
        let mut out = Compaction {
            removed: start..start,
            ..Compaction::default()
        };
        if self.is_off() {
            return Ok(out);
        }
        let by_age = match self.retain {
            // A cutoff before the earliest representable time keeps everything.
            Some(keep) => match chrono::Duration::from_std(keep)
                .ok()
                .and_then(|keep| now.checked_sub_signed(keep))
            {
                Some(cutoff) => first_at_or_after(store, start, cutoff)?,
                None => start,
            },
            None => start,
        };
        let by_size = match self.max_bytes {
            Some(cap) => first_within(store, start, cap)?,
            None => start,
        };
        let wanted = by_age.max(by_size);
        if wanted <= start {
            return Ok(out);
        }
        let mut bound = wanted;
        let mut slowest: Option<(u64, String)> = None;
        // Looked up now: a sink's destinations (an SSF transmitter's streams) come and go.
        for sink in &self.sinks {
            for name in sink.deliveries(store)? {
                let cursor = store.cursor(&name)?;
                if cursor < wanted {
                    if self.force {
                        out.overrun.push(name);
                    } else if slowest.as_ref().is_none_or(|(c, _)| cursor < *c) {
                        slowest = Some((cursor, name));
                    }
                }
            }
        }
        if let Some((cursor, sink)) = slowest {
            bound = cursor;
            out.wanted = Some(wanted);
            out.held_by = Some(sink);
        }
        out.removed = store.compact(bound)?;
        Ok(out)
    }

    /// Enforce after a commit, logging the outcome: retention never fails a poll.
    pub fn after_commit(&self, store: &Store) {
        if self.is_off() {
            return;
        }
        match self.enforce(store, Utc::now()) {
            Ok(c) => {
                if !c.removed.is_empty() {
                    info!(removed = ?c.removed, "retention compacted old events");
                }
                if let (Some(wanted), Some(sink)) = (c.wanted, &c.held_by) {
                    warn!(
                        sink = %sink,
                        log_start = c.removed.end,
                        wanted,
                        "retention held back: sink '{sink}' has not delivered these events yet. Fix the sink, or set `force = true` in [store] to drop them anyway"
                    );
                }
                if !c.overrun.is_empty() {
                    warn!(sinks = ?c.overrun, log_start = c.removed.end, "retention with `force` removed events these sinks had not delivered; they continue from the new log start");
                }
            }
            Err(e) => {
                error!(error = %e, "retention failed; the log is kept whole and retried after the next commit")
            }
        }
    }
}

/// The first offset at or after `from` whose event is no older than `cutoff` (the head when
/// every event is older).
fn first_at_or_after(store: &Store, from: u64, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut next = from;
    loop {
        let chunk = store.events_from(next, SCAN_CHUNK)?;
        let Some(last) = chunk.last() else {
            return store.head();
        };
        for e in &chunk {
            if Envelope::parse(e)?.time()? >= cutoff {
                return Ok(e.offset);
            }
        }
        next = last.offset + 1;
    }
}

/// The first offset from which the rest of the log fits in `cap` bytes.
fn first_within(store: &Store, from: u64, cap: u64) -> Result<u64, StoreError> {
    let mut bytes = store.log_bytes()?;
    let mut next = from;
    while bytes > cap {
        let chunk = store.events_from(next, SCAN_CHUNK)?;
        let Some(last) = chunk.last() else {
            return store.head();
        };
        for e in &chunk {
            if bytes <= cap {
                return Ok(e.offset);
            }
            bytes = bytes.saturating_sub(e.bytes.len() as u64);
        }
        next = last.offset + 1;
    }
    Ok(next)
}
