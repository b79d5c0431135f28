//! Replay: re-deliver a chosen range of the event log to one sink, for recovery after a
//! consumer lost data (`rollcall replay`).
//!
//! Owns resolving where a replay starts (offset, time or event id), the type filter, the dry
//! run, and progress reporting. Events go out as stored, so they keep their ids and bytes,
//! each marked as a replay (docs/integrity.md). It
//! must never move a sink's live cursor, except with `--rewind`, which only moves it back and
//! sends nothing itself (the service re-sends from there).

use std::io::IsTerminal;
use std::ops::Range;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};
use tracing::{info, warn};

use crate::config::Config;
use crate::encode::Envelope;
use crate::sink::SinkError;
use crate::store::{Store, StoreError, StoredEvent};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no sink named '{name}' in the config; its sinks are: {known}")]
    UnknownSink { name: String, known: String },
    #[error("--type `{glob}` is not a valid glob: {detail}. Example: --type 'user.*'")]
    BadGlob { glob: String, detail: String },
    #[error("no event with id {id} in the log (offsets {log_start}..{head}){}", if *log_start > 0 { ". Events before offset ".to_owned() + &log_start.to_string() + " were compacted away by retention: it may have been one of them" } else { String::new() })]
    EventNotFound {
        id: uuid::Uuid,
        log_start: u64,
        head: u64,
    },
    #[error("offsets {from}..={to} were all compacted away by retention; the log now holds offsets {log_start}..{head}. Replay from --from-offset {log_start} or later")]
    AllCompacted {
        from: u64,
        to: u64,
        log_start: u64,
        head: u64,
    },
    #[error("nothing to replay: the range starts at offset {from}, and the log ends before offset {head}")]
    Empty { from: u64, head: u64 },
    #[error("sink '{sink}' has its cursor at {cursor} already, at or before offset {from}: there is nothing to rewind, the service sends from {cursor} anyway")]
    NothingToRewind {
        sink: String,
        cursor: u64,
        from: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Deliver(#[from] crate::deliver::DeliverError),
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Offset(u64),
    /// The first event whose `time` is at or after this instant.
    Since(DateTime<Utc>),
    /// The event with this id.
    EventId(uuid::Uuid),
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub sink: String,
    pub start: Start,
    /// Last offset to replay, inclusive; default: the newest event.
    pub to: Option<u64>,
    /// Only events whose `type` matches this glob (e.g. `user.*`).
    pub types: Option<String>,
    pub dry_run: bool,
    /// Move the sink's cursor back to the start instead of sending.
    pub rewind: bool,
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The offsets looked at, after the start was resolved and clamped to the log.
    pub range: Range<u64>,
    /// Asked-for offsets that retention compacted away.
    pub compacted: Option<Range<u64>>,
    /// Offsets of the events selected (after `--type`), as runs.
    pub selected: Vec<Range<u64>>,
    /// Events the sink took (a webhook sink skips the types its `event_types` exclude).
    pub sent: u64,
    /// With `rewind`: the sink's cursor before and after.
    pub rewound: Option<(u64, u64)>,
}

impl Report {
    pub fn selected_count(&self) -> u64 {
        self.selected.iter().map(|r| r.end - r.start).sum()
    }
}

/// Run a replay request against the store (which the caller holds exclusively).
pub async fn replay(config: &Config, store: &Store, req: &Request) -> Result<Report, ReplayError> {
    let Some(sink_config) = config.sinks.iter().find(|s| s.name() == req.sink) else {
        let known: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
        return Err(ReplayError::UnknownSink {
            name: req.sink.clone(),
            known: known.join(", "),
        });
    };
    let matcher = req
        .types
        .as_deref()
        .map(|g| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| ReplayError::BadGlob {
                    glob: g.to_owned(),
                    detail: e.kind().to_string(),
                })
        })
        .transpose()?;
    let (range, compacted) = resolve(store, req)?;
    if let Some(c) = &compacted {
        warn!(
            compacted = ?c,
            remaining = ?range,
            "offsets {}..{} were compacted away by retention and cannot be replayed; replaying what remains, {}..{}",
            c.start, c.end, range.start, range.end
        );
    }
    let mut report = Report {
        range: range.clone(),
        compacted,
        selected: Vec::new(),
        sent: 0,
        rewound: None,
    };
    if req.rewind {
        let cursor = store.cursor(&req.sink)?;
        if cursor <= range.start {
            return Err(ReplayError::NothingToRewind {
                sink: req.sink.clone(),
                cursor,
                from: range.start,
            });
        }
        report.selected.push(range.start..cursor);
        report.rewound = Some((cursor, range.start));
        if !req.dry_run {
            store.rewind_cursor(&req.sink, range.start)?;
            info!(sink = %req.sink, from = cursor, to = range.start, "cursor rewound; the service re-sends from there");
        }
        return Ok(report);
    }
    let sink = if req.dry_run {
        None
    } else {
        Some(sink_config.build()?)
    };
    let chunk = sink
        .as_ref()
        .map_or(1_000, |s| s.delivery().batch.max(1_000));
    let mut progress = Progress::new(&req.sink, range.end - range.start);
    let mut next = range.start;
    while next < range.end {
        let limit = chunk.min((range.end - next) as usize);
        let events = store.events_from(next, limit)?;
        let Some(last) = events.last() else { break };
        next = last.offset + 1;
        let batch = select(&events, matcher.as_ref(), range.end, &mut report.selected)?;
        if let Some(sink) = &sink {
            report.sent += crate::deliver::send_range(store, sink.as_ref(), &batch).await?;
        }
        progress.advance(next - range.start, report.sent);
    }
    progress.finish();
    Ok(report)
}

/// The offsets to look at, and the asked-for ones that were compacted away.
fn resolve(store: &Store, req: &Request) -> Result<(Range<u64>, Option<Range<u64>>), ReplayError> {
    let log_start = store.log_start()?;
    let head = store.head()?;
    let from = match req.start {
        Start::Offset(o) => o,
        Start::Since(t) => find(store, log_start, |e| Ok(e.time()? >= t))?.unwrap_or(head),
        Start::EventId(id) => find(store, log_start, |e| Ok(e.id() == Some(id)))?.ok_or(
            ReplayError::EventNotFound {
                id,
                log_start,
                head,
            },
        )?,
    };
    let end = req.to.map_or(head, |to| to.saturating_add(1)).min(head);
    if from >= end {
        return Err(ReplayError::Empty { from, head: end });
    }
    if from >= log_start {
        return Ok((from..end, None));
    }
    if end <= log_start {
        return Err(ReplayError::AllCompacted {
            from,
            to: end - 1,
            log_start,
            head,
        });
    }
    Ok((log_start..end, Some(from..log_start)))
}

/// The offset of the first event from `from` on that matches.
fn find(
    store: &Store,
    from: u64,
    matches: impl Fn(&Envelope<'_>) -> Result<bool, crate::encode::Unreadable>,
) -> Result<Option<u64>, StoreError> {
    let mut next = from;
    loop {
        let events = store.events_from(next, 1_000)?;
        let Some(last) = events.last() else {
            return Ok(None);
        };
        for e in &events {
            if matches(&Envelope::parse(e)?)? {
                return Ok(Some(e.offset));
            }
        }
        next = last.offset + 1;
    }
}

/// The events below `end` that pass the type filter; their offsets are added to `runs`.
fn select(
    events: &[StoredEvent],
    matcher: Option<&GlobMatcher>,
    end: u64,
    runs: &mut Vec<Range<u64>>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events.iter().filter(|e| e.offset < end) {
        if let Some(m) = matcher {
            if !m.is_match(Envelope::parse(e)?.event_type.as_ref()) {
                continue;
            }
        }
        match runs.last_mut() {
            Some(r) if r.end == e.offset => r.end += 1,
            _ => runs.push(e.offset..e.offset + 1),
        }
        out.push(e.clone());
    }
    Ok(out)
}

/// A bar with rate and ETA on a terminal; a log line every [`LOG_EVERY`] otherwise (a bar
/// would fill a log file with control characters).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    sink: String,
    total: u64,
    started: Instant,
    logged: Instant,
}

impl Progress {
    fn new(sink: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "replay to {prefix} {bar:30} {pos}/{len} events, {per_sec}, ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(sink.to_owned());
            bar
        });
        Progress {
            bar,
            sink: sink.to_owned(),
            total,
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    /// `done` offsets of `total` looked at, `sent` events sent.
    fn advance(&mut self, done: u64, sent: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.logged.elapsed() < LOG_EVERY {
            return;
        }
        self.logged = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = (self.total - done) as f64 / rate.max(0.001);
        info!(
            sink = %self.sink,
            done,
            total = self.total,
            sent,
            per_sec = rate.round() as u64,
            eta = %humantime::format_duration(Duration::from_secs(eta.round() as u64)),
            "replay progress"
        );
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
