//! The runner: one cycle is poll → diff → commit → deliver, for every source and sink.
//!
//! Owns scheduling (incremental polls, periodic full reconciles), the mass-delete guard, and
//! stamping derived events with ids and times. It holds no state of its own between cycles:
//! everything that must survive a restart is in the store.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

use futures::future::BoxFuture;

use crate::config::Config;
use crate::deliver::{self, DeliverError};
use crate::diff::{self, DiffOptions};
use crate::event::{Event, DATA_CONTENT_TYPE, SPEC_VERSION};
use crate::sink::{Sink, SinkConfig, SinkError};
use crate::source::{read_cursor, stored_cursor, Mode, Source, SourceError, Visit};
use crate::store::{Commit, DeletionGuard, Record, SourceState, Store, StoreError};
use crate::text::error_chain;
use crate::user::{Account, Key, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("source '{source_name}'")]
    Source {
        source_name: String,
        #[source]
        error: SourceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("stopped while the store refuses writes: everything committed before it failed is safe, and what was found since is derived again at the next start")]
    StoppedWithStoreFailing(#[source] StoreError),
}

/// Choices an operator can make for one cycle.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleOptions {
    /// Read every user even if a full reconcile is not due.
    pub full: bool,
    /// Apply deletions the mass-delete guard would hold back.
    pub confirm_deletes: bool,
}

/// What one source's cycle did.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub source: String,
    pub full: bool,
    pub users: usize,
    pub events: usize,
    /// User records written to the store: zero when nothing changed.
    pub users_written: usize,
    pub held_deletions: usize,
}

/// How long sinks may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// How often `run` says it is alive while polls find nothing: a line per quiet poll every few
/// seconds would drown the events, and no line at all looks like a hang to a newcomer.
const QUIET_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Quiet polls of one source since its last line in the log.
struct Quiet {
    polls: u32,
    since: Instant,
}

impl Quiet {
    fn new() -> Quiet {
        Quiet {
            polls: 0,
            since: Instant::now(),
        }
    }

    /// Counts one poll; returns how many quiet polls over how long when a line is due. A poll
    /// with events or a full reconcile logs its own line, so it starts the count again.
    fn count(&mut self, report: &SourceReport) -> Option<(u32, Duration)> {
        if report.events > 0 || report.full {
            *self = Quiet::new();
            return None;
        }
        self.polls += 1;
        let span = self.since.elapsed();
        if span < QUIET_SUMMARY_EVERY {
            return None;
        }
        let polls = self.polls;
        *self = Quiet::new();
        Some((polls, span))
    }
}

/// One source, whatever its kind: what the runner needs to schedule and poll it.
trait Poll: Send {
    fn name(&self) -> &str;
    fn poll_interval(&self) -> Duration;
    fn poll<'a>(
        &'a mut self,
        store: &'a Store,
        opts: CycleOptions,
    ) -> BoxFuture<'a, Result<SourceReport, RunnerError>>;
}

impl<S: Source> Poll for S {
    fn name(&self) -> &str {
        Source::name(self)
    }
    fn poll_interval(&self) -> Duration {
        self.schedule().poll_interval
    }
    fn poll<'a>(
        &'a mut self,
        store: &'a Store,
        opts: CycleOptions,
    ) -> BoxFuture<'a, Result<SourceReport, RunnerError>> {
        Box::pin(poll_source(store, self, opts))
    }
}

/// Boxes a source of any kind as a [`Poll`].
struct Boxed;

impl Visit for Boxed {
    type Output = Box<dyn Poll>;
    fn visit<S: Source>(self, source: S) -> Box<dyn Poll> {
        Box::new(source)
    }
}

pub struct Runner {
    store: Store,
    sources: Vec<Box<dyn Poll>>,
    sinks: Vec<Box<dyn Sink>>,
    /// Each sink's end of its [`SinkControls`] channel, handed to its task by `run`.
    restarts: Vec<mpsc::Receiver<deliver::Restart>>,
    controls: SinkControls,
    retention: crate::retention::Retention,
}

/// How an operator reaches the sinks `run` serves (the admin channel): by name, a sink can be
/// asked to restart from its stored cursor after running a change to the store.
#[derive(Clone, Default)]
pub struct SinkControls(
    std::sync::Arc<std::collections::HashMap<String, mpsc::Sender<deliver::Restart>>>,
);

impl SinkControls {
    /// Ask sink `name` to stop sending, run `then` with nothing in flight, and start again;
    /// returns what `then` said. `None` when no running sink has that name.
    pub async fn restart(
        &self,
        name: &str,
        then: impl FnOnce(&Store) -> Result<String, StoreError> + Send + 'static,
    ) -> Option<Result<String, StoreError>> {
        let (done, said) = tokio::sync::oneshot::channel();
        let restart = deliver::Restart {
            then: Box::new(then),
            done,
        };
        self.0.get(name)?.send(restart).await.ok()?;
        said.await.ok()
    }
}

impl Runner {
    pub fn new(config: &Config, store: Store) -> Result<Runner, RunnerError> {
        let sources = config
            .sources
            .iter()
            .map(|s| {
                s.build(Boxed).map_err(|error| RunnerError::Source {
                    source_name: s.name().to_owned(),
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        let sinks: Vec<Box<dyn Sink>> = config
            .sinks
            .iter()
            .map(SinkConfig::build)
            .collect::<Result<_, _>>()?;
        if store.created() {
            // Loud on purpose: a store that vanished is re-created here, and its offsets and
            // `sequence` start again at 0 in sinks that still hold the old store's events.
            warn!(
                store = %store.path().display(),
                store_id = %store.id(),
                "NEW STORE: no earlier state was found, so event offsets and `sequence` start at 0. If rollcall ran with this config before, its store is gone: restore it from a backup, or tell consumers that a new log begins (store id {})",
                store.id()
            );
        } else {
            info!(store = %store.path().display(), store_id = %store.id(), "store opened");
        }
        // A source stopped in an earlier process is tried again in this one.
        for source in &config.sources {
            store.clear_stop(source.name())?;
        }
        let (senders, restarts): (std::collections::HashMap<_, _>, Vec<_>) = sinks
            .iter()
            .map(|s| {
                let (tx, rx) = mpsc::channel(4);
                ((s.name().to_owned(), tx), rx)
            })
            .unzip();
        Ok(Runner {
            store,
            sources,
            sinks,
            restarts,
            controls: SinkControls(std::sync::Arc::new(senders)),
            retention: crate::retention::Retention::new(config),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The handle the admin channel restarts sinks with while `run` serves them.
    pub fn controls(&self) -> SinkControls {
        self.controls.clone()
    }

    /// Poll every source once, then deliver to every sink. Every source and sink gets its turn
    /// even when another fails; the first error is returned.
    pub async fn cycle(&mut self, opts: CycleOptions) -> Result<Vec<SourceReport>, RunnerError> {
        let mut reports = Vec::new();
        let mut first_error = None;
        for i in 0..self.sources.len() {
            match self.poll(i, opts).await {
                Ok(r) => reports.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.deliver_all().await {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }

    /// Deliver to every sink concurrently, each up to the log head.
    pub async fn deliver_all(&mut self) -> Result<(), RunnerError> {
        let store = &self.store;
        let results = futures::future::join_all(self.sinks.iter_mut().map(|sink| async move {
            let name = sink.name().to_owned();
            let result = deliver::drain(store, sink.as_ref())
                .instrument(info_span!("deliver", sink = %name))
                .await;
            (name, result)
        }))
        .await;
        let mut first_error = None;
        for (name, result) in results {
            match result {
                Ok(0) => {}
                Ok(n) => info!(sink = %name, events = n, "delivered"),
                Err(e) => {
                    error!(sink = %name, error = %e, "delivery failed; will retry from the stored cursor");
                    first_error.get_or_insert(e.into());
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Poll forever, each source at its own interval, until `shutdown` resolves. Each sink
    /// delivers in its own task, woken when a commit moves the log head. Errors are logged and
    /// recorded in the store; polling goes on. A store that refuses a write pauses polling
    /// (there is nowhere to put what a poll finds) until a probe write succeeds, probing with
    /// growing pauses. On shutdown, sinks get [`SHUTDOWN_GRACE`] to finish the batch in hand;
    /// what is abandoned is re-sent on the next start.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), RunnerError> {
        tokio::pin!(shutdown);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sinks = JoinSet::new();
        let restarts = std::mem::take(&mut self.restarts);
        for (sink, restarts) in std::mem::take(&mut self.sinks).into_iter().zip(restarts) {
            sinks.spawn(deliver::serve(
                self.store.clone(),
                sink,
                self.store.watch_head(),
                stop_rx.clone(),
                restarts,
            ));
        }
        let mut due: Vec<Instant> = vec![Instant::now(); self.sources.len()];
        for source in &self.sources {
            info!(
                source = %source.name(),
                every = %humantime::format_duration(source.poll_interval()),
                "polling started"
            );
        }
        let mut quiet: Vec<Quiet> = self.sources.iter().map(|_| Quiet::new()).collect();
        let mut store_retry = None;
        loop {
            if let Some((at, pauses)) = &mut store_retry {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep_until(*at) => {}
                }
                match self.store.probe() {
                    Ok(()) => {
                        warn!("the store takes writes again; polling resumes");
                        store_retry = None;
                    }
                    Err(e) => {
                        let wait = next_pause(pauses);
                        *at = Instant::now() + wait;
                        error!(error = %error_chain(&e), retry_in = ?wait, "the store still refuses writes; polling stays paused");
                        continue;
                    }
                }
            }
            let (i, at) = due
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(_, t)| *t)
                .expect("config validation requires at least one source");
            let interval = self.sources[i].poll_interval();
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(at) => {}
            }
            match self.poll(i, CycleOptions::default()).await {
                Ok(report) => {
                    if let Some((polls, span)) = quiet[i].count(&report) {
                        info!(
                            source = %report.source,
                            polls,
                            "still polling: no change in the last {}",
                            humantime::format_duration(Duration::from_secs(span.as_secs()))
                        );
                    }
                }
                Err(RunnerError::Store(e)) => {
                    let mut pauses = deliver::retry_pauses();
                    let wait = next_pause(&mut pauses);
                    error!(
                        source = %self.sources[i].name(),
                        error = %error_chain(&e),
                        retry_in = ?wait,
                        "the store failed: what this poll had not committed yet, the next one derives again (nothing is lost). Polling pauses until the store takes a write again"
                    );
                    store_retry = Some((Instant::now() + wait, pauses));
                }
                // `poll` has logged it.
                Err(_) => {}
            }
            // Validation bounds the interval; a year stands in should one overflow the clock.
            due[i] = Instant::now()
                .checked_add(interval)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        }
        info!("shutting down: polling stopped, letting sinks finish");
        stop_tx.send_replace(true);
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while sinks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            warn!("sinks did not finish within {SHUTDOWN_GRACE:?}; abandoning (undelivered events are re-sent on start)");
            sinks.abort_all();
        }
        self.store
            .flush()
            .map_err(RunnerError::StoppedWithStoreFailing)?;
        info!("stopped");
        Ok(())
    }

    async fn poll(&mut self, i: usize, opts: CycleOptions) -> Result<SourceReport, RunnerError> {
        let name = self.sources[i].name().to_owned();
        let span = info_span!("poll", source = %name);
        let started = std::time::Instant::now();
        let result = self.sources[i]
            .poll(&self.store, opts)
            .instrument(span)
            .await;
        metrics::histogram!("rollcall_poll_duration_seconds", "source" => name.clone())
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("rollcall_poll_errors_total", "source" => name.clone()).increment(1);
        } else {
            // The log only grows at a commit, so that is when old events may have to go.
            self.retention.after_commit(&self.store);
        }
        match &result {
            Err(RunnerError::Source { error, .. }) if error.stops_source() => {
                // Said once at error level: every later cycle fails the same way, sending
                // nothing, until a restart.
                if self.store.source_state(&name)?.stopped.is_none() {
                    error!(source = %name, error = %error, "source stopped: it sends no requests until rollcall restarts");
                } else {
                    debug!(source = %name, "source still stopped");
                }
                self.store.record_stop(&name, error.to_string())?;
            }
            Err(RunnerError::Source { error, .. }) => {
                error!(source = %name, error = %error, "poll failed; nothing was stored");
                self.store.record_error(&name, error.to_string())?;
            }
            _ => {}
        }
        result
    }
}

/// The next pause of a schedule that never runs out; 60 s if it does.
fn next_pause(pauses: &mut impl Iterator<Item = Duration>) -> Duration {
    pauses.next().unwrap_or(Duration::from_secs(60))
}

fn due(last: Option<DateTime<Utc>>, every: Duration, now: DateTime<Utc>) -> bool {
    last.is_none_or(|t| {
        now - t >= chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
    })
}

async fn poll_source<S: Source>(
    store: &Store,
    source: &mut S,
    opts: CycleOptions,
) -> Result<SourceReport, RunnerError> {
    let name = source.name().to_owned();
    let schedule = source.schedule();
    let started = std::time::Instant::now();
    let now = Utc::now();
    let stored: Snapshot<S::User> = store.snapshot(&name)?;
    let prev = rekeyed(&stored);
    let prev = prev.as_ref();
    let mut state = store.source_state(&name)?;
    let mut cursor: S::Cursor = read_cursor(&state.cursor).map_err(|e| StoreError::Corrupt {
        what: format!("cursor of source {name}"),
        detail: e.to_string(),
    })?;
    let full = !state.initialized
        || opts.full
        || opts.confirm_deletes
        || due(
            state.last_full_reconcile,
            schedule.full_reconcile_interval,
            now,
        );
    let mode = if full { Mode::Full } else { Mode::Incremental };
    let source_error = |error| RunnerError::Source {
        source_name: name.clone(),
        error,
    };
    let observation = source
        .observe(prev, &mut cursor, mode)
        .await
        .map_err(source_error)?;
    let mut fresh = observation.fresh;
    let held = guard_deletions(
        prev,
        &mut fresh,
        &mut state,
        mode,
        opts.confirm_deletes,
        now,
    );

    let derived = if state.initialized {
        diff::diff(
            prev,
            &fresh,
            &DiffOptions {
                service_account: source.service_account().map(str::to_owned),
            },
        )
    } else if source.emit_initial_snapshot() {
        diff::observe_all(&fresh)
    } else {
        Vec::new()
    };
    let uri = source.uri();
    let stamp = |derived: Vec<crate::diff::Derived>| -> Vec<Event> {
        derived
            .into_iter()
            .map(|d| Event {
                specversion: SPEC_VERSION.into(),
                id: uuid::Uuid::now_v7(),
                source: uri.clone(),
                event_type: d.event_type,
                subject: d.subject.unwrap_or_else(|| "anonymous".to_owned()),
                time: now,
                datacontenttype: DATA_CONTENT_TYPE.into(),
                dataschema: Some(d.event_type.dataschema()),
                sequence: String::new(),
                data: d.data,
            })
            .collect()
    };
    let count = |events: &[Event]| {
        for e in events {
            metrics::counter!("rollcall_events_derived_total", "source" => name.clone(), "type" => e.event_type.as_str())
                .increment(1);
        }
    };
    let events = stamp(derived);

    state.initialized = true;
    state.last_poll = Some(now);
    state.last_error = None;
    state.stopped = None;
    if full {
        state.last_full_reconcile = Some(now);
    }
    state.users_known = fresh.len();
    state.cursor = stored_cursor(&cursor);

    // Writes go against what is stored, so a record found under another key is rewritten.
    let upserts = fresh
        .values()
        .filter(|u| stored.get(&u.key()) != Some(*u))
        .map(Record::of)
        .collect::<Vec<_>>();
    let removals = stored
        .keys()
        .filter(|key| !fresh.contains_key(key))
        .map(Key::to_bytes)
        .collect::<Vec<_>>();
    let mut report = SourceReport {
        source: name.clone(),
        full,
        users: fresh.len(),
        events: events.len(),
        users_written: upserts.len() + removals.len(),
        held_deletions: held,
    };
    count(&events);
    let mut offsets = store.commit(Commit {
        source: &name,
        upserts,
        removals,
        events,
        state: &state,
    })?;
    // Native events (the action log) come after the user events are committed, in a commit
    // of their own: however long the source takes to read them, the sinks already have the
    // user events. A crash between the two commits re-reads them from the stored cursor.
    let native = stamp(source.native_events(&fresh, &mut cursor, now).await);
    let read = stored_cursor(&cursor);
    if !native.is_empty() || read != state.cursor {
        state.cursor = read;
        report.events += native.len();
        count(&native);
        offsets.end = store
            .commit(Commit {
                source: &name,
                upserts: Vec::new(),
                removals: Vec::new(),
                events: native,
                state: &state,
            })?
            .end;
    }
    // A quiet incremental poll every few seconds would drown the events in the log.
    macro_rules! poll_complete {
        ($level:ident) => {
            $level!(
                full,
                users = report.users,
                events = report.events,
                users_written = report.users_written,
                offsets = ?offsets,
                requests = observation.requests,
                took_ms = started.elapsed().as_millis() as u64,
                "poll complete"
            )
        };
    }
    if report.events > 0 || full {
        poll_complete!(info);
    } else {
        poll_complete!(debug);
    }
    Ok(report)
}

/// The stored snapshot with each record under its own key: what the events so far have told.
/// A record stored under another key (a by-id answer for a different id, trusted by an earlier
/// version) moves to its own key, unless a record already holds that key rightly. The diff
/// then runs from what consumers were told, and the commit rewrites what is stored.
fn rekeyed<U: Account>(stored: &Snapshot<U>) -> Cow<'_, Snapshot<U>> {
    if stored.iter().all(|(key, u)| u.key() == *key) {
        return Cow::Borrowed(stored);
    }
    let mut out: Snapshot<U> = stored
        .iter()
        .filter(|(key, u)| u.key() == **key)
        .map(|(key, u)| (key.clone(), u.clone()))
        .collect();
    for (key, u) in stored {
        if u.key() != *key {
            warn!(stored_under = %key, record_of = %u.key(), "a stored record sits under another user's key; reading it as its own user's");
            out.entry(u.key()).or_insert_with(|| u.clone());
        }
    }
    Cow::Owned(out)
}

/// The mass-delete guard: when more than max(5, 10%) of the known users vanish at once, hold
/// the deletions back (put the users back into `fresh`) until a later full reconcile sees the
/// same users still gone, or the operator confirms. Returns how many deletions are held.
fn guard_deletions<U: Account>(
    prev: &Snapshot<U>,
    fresh: &mut Snapshot<U>,
    state: &mut SourceState,
    mode: Mode,
    confirmed: bool,
    now: DateTime<Utc>,
) -> usize {
    let vanished: Vec<&U::Key> = prev.keys().filter(|k| !fresh.contains_key(k)).collect();
    let vanished_names: Vec<String> = vanished.iter().map(|k| k.to_string()).collect();
    let limit = (prev.len() / 10).max(5);
    if vanished.len() <= limit || confirmed {
        if let Some(g) = state.deletion_guard.take() {
            info!(held = g.user_ids.len(), "mass-delete guard released");
        }
        return 0;
    }
    let agrees = mode == Mode::Full
        && state.deletion_guard.as_ref().is_some_and(|g| {
            g.since < now && g.user_ids.iter().all(|id| vanished_names.contains(id))
        });
    if agrees {
        warn!(
            deleted = vanished.len(),
            "a second full reconcile agrees with the mass-delete guard; emitting the deletions"
        );
        state.deletion_guard = None;
        return 0;
    }
    error!(
        vanished = vanished.len(),
        known = prev.len(),
        "mass-delete guard: too many users vanished at once; no deletion emitted. A later full reconcile that agrees releases them, or run `rollcall once --confirm-deletes`"
    );
    for key in &vanished {
        fresh.insert((*key).clone(), prev[*key].clone());
    }
    let since = state.deletion_guard.as_ref().map_or(now, |g| g.since);
    let held = vanished.len();
    state.deletion_guard = Some(DeletionGuard {
        since,
        user_ids: vanished_names,
        known: prev.len(),
    });
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(events: usize, full: bool) -> SourceReport {
        SourceReport {
            source: "local".into(),
            full,
            users: 1,
            events,
            users_written: 0,
            held_deletions: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_polls_are_summed_up_once_a_minute_and_a_poll_with_events_starts_over() {
        let mut quiet = Quiet::new();
        for _ in 0..11 {
            tokio::time::advance(Duration::from_secs(5)).await;
            assert_eq!(quiet.count(&report(0, false)), None);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            quiet.count(&report(0, false)),
            Some((12, Duration::from_secs(60)))
        );
        tokio::time::advance(Duration::from_secs(55)).await;
        assert_eq!(quiet.count(&report(3, false)), None, "it logged itself");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(quiet.count(&report(0, false)), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            quiet.count(&report(0, true)),
            None,
            "a full reconcile logs itself"
        );
    }
}
