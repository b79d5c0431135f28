//! The runner: one cycle is poll → diff → commit → deliver, for every source and sink.
//!
//! Owns scheduling (incremental polls, periodic full reconciles), running each source's cycle
//! (`cycle`, which owns the mass-delete guard and stamping derived events with ids and times),
//! serving each sink under `run`, and pausing polls while the store refuses writes. It holds no
//! state of its own between cycles: everything that must survive a restart is in the store.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

use futures::future::BoxFuture;

use crate::config::Config;
use crate::deliver::{self, DeliverError};
use crate::sink::{Sink, SinkConfig, SinkError};
use crate::source::{Source, SourceError, Visit};
use crate::store::{Store, StoreError};
use crate::text::error_chain;

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

pub use crate::cycle::{CycleOptions, SourceReport};

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
        Box::pin(async move {
            crate::cycle::poll_source(store, self, opts)
                .await
                .map_err(|e| match e {
                    crate::cycle::CycleError::Source { source_name, error } => {
                        RunnerError::Source { source_name, error }
                    }
                    crate::cycle::CycleError::Store(e) => RunnerError::Store(e),
                })
        })
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
    /// Whether the running process serves a sink of this name.
    pub fn serves(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

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
                // nothing, until the credentials change or an operator retries the login.
                if self.store.source_state(&name)?.stopped.is_none() {
                    error!(source = %name, error = %error, "source stopped: it sends no requests until its credentials change or `rollcall source retry-login {name}`");
                } else {
                    debug!(source = %name, "source still stopped");
                }
                self.store.record_stop(&name, error.to_string())?;
            }
            Err(RunnerError::Source { error, .. }) => {
                error!(source = %name, error = %error, "poll failed; what it had committed stays (each user as read, with its events), the rest is read again by the next poll");
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
