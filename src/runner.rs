//! The runner: schedules the polls of every source and serves every sink.
//!
//! Owns scheduling: each source is polled on its own schedule (its `poll_interval` after its
//! last poll ended), in a task of its own, at most `max_concurrent_polls` polls at once, each
//! cycle within its `poll_deadline`. So a source that never answers, answers slowly or has its
//! login refused delays no other source's polls and no sink's deliveries (docs/scaling.md).
//! Also owns what follows each poll (metrics, retention, errors recorded in the store), the
//! pause while the store refuses writes, and shutdown. One cycle of one source (observe, diff,
//! commit) is `cycle`'s. It keeps nothing between cycles that must survive a restart (that is in
//! the store); what it is doing with each source now, it tells the store's in-memory
//! [`SourceActivity`](crate::store::SourceActivity), which `status` and `/metrics` show.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

use futures::future::BoxFuture;

use crate::config::Config;
use crate::deliver::{self, DeliverError};
use crate::retention::Retention;
use crate::sink::{Sink, SinkConfig, SinkError};
use crate::source::{Source, SourceConfig, Visit};
use crate::store::{Credentials, Store, StoreError};
use crate::text::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// What a cycle failed on: its source, or the store.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error("source '{source_name}'")]
    Deadline {
        source_name: String,
        #[source]
        error: DeadlinePassed,
    },
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("stopped while the store refuses writes: everything committed before it failed is safe, and what was found since is derived again at the next start")]
    StoppedWithStoreFailing(#[source] StoreError),
}

impl From<StoreError> for RunnerError {
    fn from(e: StoreError) -> RunnerError {
        RunnerError::Cycle(CycleError::Store(e))
    }
}

/// A cycle ran past its source's `poll_deadline` and was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("the cycle did not end within its poll_deadline of {} and was cancelled. Check that the source answers (`rollcall doctor`), or raise `poll_deadline` if its cycles take this long", humantime::format_duration(*.deadline))]
pub struct DeadlinePassed {
    pub deadline: Duration,
}

pub use crate::cycle::{CycleError, CycleOptions, SourceReport};

/// How long sinks may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// How often `run` says it is alive while polls find nothing: a line per quiet poll every few
/// seconds would drown the events, and no line at all looks like a hang to a newcomer.
const QUIET_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Stands in for a next poll time that would overflow the clock (validation bounds intervals).
const A_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// What the source logs in with ([`Source::credentials`]).
    fn credentials(&self) -> &Credentials;
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
    fn credentials(&self) -> &Credentials {
        Source::credentials(self)
    }
    fn poll_interval(&self) -> Duration {
        self.schedule().poll_interval
    }
    fn poll<'a>(
        &'a mut self,
        store: &'a Store,
        opts: CycleOptions,
    ) -> BoxFuture<'a, Result<SourceReport, RunnerError>> {
        Box::pin(async move { Ok(crate::cycle::poll_source(store, self, opts).await?) })
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

/// A source and its deadline: what one source's task owns.
struct Slot {
    source: Box<dyn Poll>,
    /// What the source was built from, to build it again with credentials changed since.
    config: SourceConfig,
    /// A cycle still running this long after it started is cancelled.
    deadline: Duration,
}

/// What the polls of every source share.
#[derive(Clone)]
struct Polls {
    store: Store,
    /// One per poll that may run at once (`max_concurrent_polls`); a poll holds one while it
    /// runs. Fair: a source waiting for one gets it before any source that asks later.
    turns: Arc<Semaphore>,
    /// Taken by one poll at a time: two compactions at once would both count the bytes they
    /// remove.
    retention: Arc<Mutex<Retention>>,
}

pub struct Runner {
    polls: Polls,
    sources: Vec<Slot>,
    sinks: Vec<Box<dyn Sink>>,
    /// Each sink's end of its [`SinkControls`] channel, handed to its task by `run`.
    restarts: Vec<mpsc::Receiver<deliver::Restart>>,
    controls: SinkControls,
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
                let source = s.build(Boxed).map_err(|error| CycleError::Source {
                    source_name: s.name().to_owned(),
                    error,
                })?;
                Ok(Slot {
                    source,
                    config: s.clone(),
                    deadline: s.kind().poll_deadline(),
                })
            })
            .collect::<Result<_, RunnerError>>()?;
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
            polls: Polls {
                store,
                turns: Arc::new(Semaphore::new(config.max_concurrent_polls)),
                retention: Arc::new(Mutex::new(Retention::new(config))),
            },
            sources,
            sinks,
            restarts,
            controls: SinkControls(std::sync::Arc::new(senders)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.polls.store
    }

    /// The handle the admin channel restarts sinks with while `run` serves them.
    pub fn controls(&self) -> SinkControls {
        self.controls.clone()
    }

    /// Poll every source once, at most `max_concurrent_polls` at once, each within its
    /// deadline; then deliver to every sink. Every source and sink gets its turn even when
    /// another fails; the first error (in the config's order of sources) is returned.
    pub async fn cycle(&mut self, opts: CycleOptions) -> Result<Vec<SourceReport>, RunnerError> {
        let polls = &self.polls;
        let results =
            futures::future::join_all(self.sources.iter_mut().map(|slot| polls.poll(slot, opts)))
                .await;
        let mut reports = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
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
        let store = &self.polls.store;
        let results = futures::future::join_all(self.sinks.iter_mut().map(|sink| async move {
            let name = sink.name().to_owned();
            let result = crate::fleet::drain(store, sink.as_ref())
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

    /// Poll forever, each source in its own task at its own interval, until `shutdown`
    /// resolves. Each sink delivers in its own task, woken when a commit moves the log head.
    /// Errors are logged and recorded in the store; polling goes on. A store that refuses a
    /// write pauses every source's polling (there is nowhere to put what a poll finds) until a
    /// probe write succeeds, probing with growing pauses. On shutdown, polls in flight are
    /// cancelled (what they committed stays) and sinks get [`SHUTDOWN_GRACE`] to finish the
    /// batch in hand; what is abandoned is re-sent on the next start.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), RunnerError> {
        tokio::pin!(shutdown);
        let store = self.polls.store.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sinks = JoinSet::new();
        let restarts = std::mem::take(&mut self.restarts);
        for (sink, restarts) in std::mem::take(&mut self.sinks).into_iter().zip(restarts) {
            sinks.spawn(crate::fleet::serve(
                store.clone(),
                sink,
                store.watch_head(),
                stop_rx.clone(),
                restarts,
            ));
        }
        // True while the store refuses writes: no poll starts then.
        let pause = Arc::new(watch::channel(false).0);
        let mut paused = pause.subscribe();
        let mut sources = JoinSet::new();
        for slot in std::mem::take(&mut self.sources) {
            info!(
                source = %slot.source.name(),
                every = %humantime::format_duration(slot.source.poll_interval()),
                deadline = %humantime::format_duration(slot.deadline),
                "polling started"
            );
            sources.spawn(self.polls.clone().serve(slot, pause.clone()));
        }
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                ended = sources.join_next() => {
                    // A source's task ends only by a panic, which ends the process as a panic
                    // of the one polling loop did.
                    if let Some(Err(e)) = ended {
                        if e.is_panic() {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                }
                _ = until(&mut paused, true) => {
                    if !store_back(&store, &mut shutdown).await {
                        break;
                    }
                    pause.send_replace(false);
                }
            }
        }
        info!("shutting down: polling stopped (polls in flight are cancelled; what they committed stays), letting sinks finish");
        sources.abort_all();
        stop_tx.send_replace(true);
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while sinks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            warn!("sinks did not finish within {SHUTDOWN_GRACE:?}; abandoning (undelivered events are re-sent on start)");
            sinks.abort_all();
        }
        // A poll in the middle of a commit ends it before its task goes.
        while sources.join_next().await.is_some() {}
        store
            .flush()
            .map_err(RunnerError::StoppedWithStoreFailing)?;
        info!("stopped");
        Ok(())
    }
}

impl Polls {
    /// Poll one source on its own schedule until the task is aborted: its interval after each
    /// poll ends, and none while the store refuses writes (`pause` is true). A store failure
    /// sets `pause`; `run` probes the store and clears it.
    async fn serve(self, mut slot: Slot, pause: Arc<watch::Sender<bool>>) {
        let name = slot.source.name().to_owned();
        let interval = slot.source.poll_interval();
        let mut paused = pause.subscribe();
        let mut quiet = Quiet::new();
        let mut due = Instant::now();
        loop {
            let at = Utc::now()
                + chrono::Duration::from_std(due.saturating_duration_since(Instant::now()))
                    .unwrap_or(chrono::Duration::MAX);
            self.store.note_activity(&name, |a| a.next_poll = Some(at));
            metrics::gauge!("rollcall_source_next_poll_timestamp_seconds", "source" => name.clone())
                .set(at.timestamp() as f64);
            tokio::time::sleep_until(due).await;
            until(&mut paused, false).await;
            match self.poll(&mut slot, CycleOptions::default()).await {
                Ok(report) => {
                    if let Some((polls, span)) = quiet.count(&report) {
                        info!(
                            source = %report.source,
                            polls,
                            "still polling: no change in the last {}",
                            humantime::format_duration(Duration::from_secs(span.as_secs()))
                        );
                    }
                }
                Err(RunnerError::Cycle(CycleError::Store(e))) => {
                    pause.send_replace(true);
                    error!(
                        source = %name,
                        error = %error_chain(&e),
                        "the store failed: what this poll had not committed yet, the next one derives again (nothing is lost). Polling pauses until the store takes a write again"
                    );
                }
                // `poll` has logged it.
                Err(_) => {}
            }
            due = Instant::now()
                .checked_add(interval)
                .unwrap_or_else(|| Instant::now() + A_YEAR);
        }
    }

    /// One cycle of `slot`'s source when a turn is free, cancelled at its deadline; then the
    /// metrics, retention, and the error recorded in the store.
    async fn poll(&self, slot: &mut Slot, opts: CycleOptions) -> Result<SourceReport, RunnerError> {
        let _turn = self
            .turns
            .acquire()
            .await
            .expect("the runner never closes its turns");
        let name = slot.source.name().to_owned();
        let store = &self.store;
        renew_credentials(store, slot)?;
        store.note_activity(&name, |a| {
            a.polling_since = Some(Utc::now());
            a.next_poll = None;
        });
        metrics::gauge!("rollcall_source_polling", "source" => name.clone()).set(1.0);
        let started = std::time::Instant::now();
        let cycle = slot
            .source
            .poll(store, opts)
            .instrument(info_span!("poll", source = %name));
        let result = match tokio::time::timeout(slot.deadline, cycle).await {
            Ok(result) => result,
            Err(_) => Err(RunnerError::Deadline {
                source_name: name.clone(),
                error: DeadlinePassed {
                    deadline: slot.deadline,
                },
            }),
        };
        let took = started.elapsed().as_secs_f64();
        store.note_activity(&name, |a| {
            a.polling_since = None;
            a.last_cycle_seconds = Some(took);
        });
        metrics::gauge!("rollcall_source_polling", "source" => name.clone()).set(0.0);
        metrics::histogram!("rollcall_poll_duration_seconds", "source" => name.clone())
            .record(took);
        metrics::gauge!("rollcall_source_cycle_seconds", "source" => name.clone()).set(took);
        if result.is_err() {
            metrics::counter!("rollcall_poll_errors_total", "source" => name.clone()).increment(1);
            metrics::gauge!("rollcall_source_last_error_timestamp_seconds", "source" => name.clone())
                .set(Utc::now().timestamp() as f64);
        } else {
            // The log only grows at a commit, so that is when old events may have to go.
            self.retention
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .after_commit(store);
        }
        match &result {
            Err(RunnerError::Cycle(CycleError::Source { error, .. })) if error.stops_source() => {
                // Said once at error level: every later cycle fails the same way, sending
                // nothing, until the credentials change or an operator retries the login.
                if store.source_state(&name)?.stopped.is_none() {
                    error!(source = %name, error = %error, "source stopped: it sends no requests until its credentials change or `rollcall source retry-login {name}`");
                } else {
                    debug!(source = %name, "source still stopped");
                }
                store.record_stop(&name, error.to_string())?;
            }
            Err(RunnerError::Cycle(CycleError::Source { error, .. })) => {
                error!(source = %name, error = %error, "poll failed; what it had committed stays (each user as read, with its events), the rest is read again by the next poll");
                store.record_error(&name, error.to_string())?;
            }
            Err(RunnerError::Deadline { error, .. }) => {
                error!(source = %name, error = %error, "poll cancelled at its deadline; what it had committed stays (each user as read, with its events), the rest is read again by the next poll");
                store.record_error(&name, error.to_string())?;
            }
            _ => {}
        }
        result
    }
}

/// Resolves once `flag` is `value`. The runner holds the flag's sender for as long as it
/// polls; should it be gone, nothing changes any more and this never resolves.
async fn until(flag: &mut watch::Receiver<bool>, value: bool) {
    if flag.wait_for(|v| *v == value).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// While the store refuses writes: probe it with growing pauses until it takes one (true), or
/// until `shutdown` resolves (false).
async fn store_back(
    store: &Store,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    let mut pauses = deliver::retry_pauses();
    let mut wait = next_pause(&mut pauses);
    loop {
        tokio::select! {
            _ = &mut *shutdown => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        match store.probe() {
            Ok(()) => {
                warn!("the store takes writes again; polling resumes");
                return true;
            }
            Err(e) => {
                wait = next_pause(&mut pauses);
                error!(error = %error_chain(&e), retry_in = ?wait, "the store still refuses writes; polling stays paused");
            }
        }
    }
}

/// After a refused login, builds the source again when its password (or user, or URL) no longer
/// is what was refused: a password fixed in its file or variable is then tried at the next poll,
/// without a restart. Reads the password only while a refusal is remembered.
fn renew_credentials(store: &Store, slot: &mut Slot) -> Result<(), RunnerError> {
    let name = slot.config.name();
    if store
        .login_refusal(name, slot.source.credentials())?
        .is_none()
    {
        return Ok(());
    }
    match slot.config.kind().login().current_credentials() {
        Ok(now) if &now != slot.source.credentials() => {
            slot.source = slot
                .config
                .build(Boxed)
                .map_err(|error| CycleError::Source {
                    source_name: name.to_owned(),
                    error,
                })?;
        }
        // Unchanged, or unreadable now: the source as built says so at its cycle.
        _ => {}
    }
    Ok(())
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

/// The scheduling of `run` and `cycle` with sources that the tests hold and release through
/// channels, on tokio's paused clock: a poll that could start has started by the time the
/// clock moves on by itself (it moves only when every task waits), so nothing here races.
#[cfg(test)]
mod scheduling {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    use super::*;

    /// Polls running at once across a test's sources, and the most there ever were.
    #[derive(Default)]
    struct Count {
        running: AtomicUsize,
        most: AtomicUsize,
    }

    /// Counts a poll as running until dropped (at its end, or when it is cancelled).
    struct Running<'a>(&'a Count);

    impl<'a> Running<'a> {
        fn new(count: &'a Count) -> Running<'a> {
            let now = count.running.fetch_add(1, SeqCst) + 1;
            count.most.fetch_max(now, SeqCst);
            Running(count)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.running.fetch_sub(1, SeqCst);
        }
    }

    /// How a fake source's polls end.
    #[derive(Clone)]
    enum Ends {
        /// At once.
        AtOnce,
        /// When the test adds a permit to this semaphore (one poll per permit).
        Released(Arc<Semaphore>),
        /// Never: the upstream does not answer.
        Never,
    }

    /// A source whose polls say when they start and end as `ends` says.
    struct Fake {
        name: String,
        count: Arc<Count>,
        started: UnboundedSender<String>,
        ends: Ends,
        credentials: Credentials,
    }

    impl Poll for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn credentials(&self) -> &Credentials {
            &self.credentials
        }
        fn poll_interval(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn poll<'a>(
            &'a mut self,
            _: &'a Store,
            _: CycleOptions,
        ) -> BoxFuture<'a, Result<SourceReport, RunnerError>> {
            Box::pin(async move {
                let _running = Running::new(&self.count);
                self.started.send(self.name.clone()).unwrap();
                match &self.ends {
                    Ends::AtOnce => {}
                    Ends::Released(release) => release.acquire().await.unwrap().forget(),
                    Ends::Never => std::future::pending().await,
                }
                Ok(SourceReport {
                    source: self.name.clone(),
                    full: false,
                    users: 0,
                    events: 0,
                    users_written: 0,
                    held_deletions: 0,
                })
            })
        }
    }

    /// What a test watches of its runner's polls.
    struct Watch {
        count: Arc<Count>,
        started: UnboundedReceiver<String>,
        store: Store,
        _dir: tempfile::TempDir,
    }

    impl Watch {
        /// The polls that started since the last call, in the order they started.
        fn started(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.started.try_recv().ok()).collect()
        }
    }

    /// A runner allowing `limit` polls at once over `sources` (name, how its polls end,
    /// deadline), with a real store and no sink.
    fn runner(limit: usize, sources: Vec<(&str, Ends, Duration)>) -> (Runner, Watch) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::tests::parse(crate::config::tests::EXAMPLE).unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let count = Arc::new(Count::default());
        let (tx, started) = unbounded_channel();
        let sources = sources
            .into_iter()
            .map(|(name, ends, deadline)| Slot {
                source: Box::new(Fake {
                    name: name.to_owned(),
                    count: count.clone(),
                    started: tx.clone(),
                    ends,
                    credentials: Credentials(String::new()),
                }),
                // Never rebuilt: no login of it is refused.
                config: config.sources[0].clone(),
                deadline,
            })
            .collect();
        let runner = Runner {
            polls: Polls {
                store: store.clone(),
                turns: Arc::new(Semaphore::new(limit)),
                retention: Arc::new(Mutex::new(Retention::new(&config))),
            },
            sources,
            sinks: Vec::new(),
            restarts: Vec::new(),
            controls: SinkControls::default(),
        };
        let watch = Watch {
            count,
            started,
            store,
            _dir: dir,
        };
        (runner, watch)
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// What `f` gives, or a failure when it has not come within an hour of the paused clock,
    /// which passes at once when nothing else can run: a regression fails instead of hanging.
    async fn within_an_hour<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(3600), f)
            .await
            .expect("done within an hour")
    }

    /// Lets every task run until all of them wait: the paused clock moves on only then.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn once_never_runs_more_than_max_concurrent_polls_at_once_and_polls_every_source() {
        let release = Arc::new(Semaphore::new(0));
        let names = ["a", "b", "c", "d", "e"];
        let (mut runner, mut w) = runner(
            2,
            names
                .iter()
                .map(|n| (*n, Ends::Released(release.clone()), DAY))
                .collect(),
        );
        let cycle =
            tokio::spawn(async move { runner.cycle(CycleOptions::default()).await.unwrap() });
        settle().await;
        assert_eq!(w.started(), ["a", "b"], "two turns, taken in order");
        for next in ["c", "d", "e"] {
            release.add_permits(1);
            settle().await;
            assert_eq!(
                w.started(),
                [next],
                "a turn given back is taken by the next"
            );
        }
        release.add_permits(2);
        let reports = within_an_hour(cycle).await.unwrap();
        let polled: Vec<&str> = reports.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(
            polled, names,
            "one report per source, in the config's order"
        );
        assert_eq!(w.count.most.load(SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn run_never_runs_more_than_max_concurrent_polls_at_once() {
        let release = Arc::new(Semaphore::new(0));
        let (runner, mut w) = runner(
            2,
            ["a", "b", "c"]
                .iter()
                .map(|n| (*n, Ends::Released(release.clone()), DAY))
                .collect(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(runner.run(async move {
            let _ = stopped.await;
        }));
        settle().await;
        assert_eq!(w.started(), ["a", "b"], "two turns");
        assert_eq!(w.count.running.load(SeqCst), 2);
        release.add_permits(1);
        settle().await;
        assert_eq!(
            w.started(),
            ["c"],
            "the source that waited took the turn given back"
        );
        assert_eq!(w.count.most.load(SeqCst), 2);
        stop.send(()).unwrap();
        within_an_hour(run).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn run_keeps_polling_a_healthy_source_while_another_never_answers() {
        let (runner, mut w) = runner(
            2,
            vec![("hung", Ends::Never, DAY), ("healthy", Ends::AtOnce, DAY)],
        );
        let store = w.store.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(runner.run(async move {
            let _ = stopped.await;
        }));
        let mut polls = Vec::new();
        // A runner that polled one source after another would never come back from the hung
        // one: the paused clock's hour then passes at once, and the wait fails.
        within_an_hour(async {
            while polls.iter().filter(|s| *s == "healthy").count() < 3 {
                polls.push(w.started.recv().await.unwrap());
            }
        })
        .await;
        assert_eq!(polls.iter().filter(|s| *s == "hung").count(), 1);
        let hung = store.activity("hung");
        assert!(hung.polling_since.is_some(), "{hung:?}");
        assert!(hung.last_cycle_seconds.is_none(), "{hung:?}");
        let healthy = store.activity("healthy");
        assert!(healthy.polling_since.is_none(), "{healthy:?}");
        assert!(healthy.last_cycle_seconds.is_some(), "{healthy:?}");
        assert!(healthy.next_poll.is_some(), "{healthy:?}");
        stop.send(()).unwrap();
        within_an_hour(run).await.unwrap().unwrap();
        assert_eq!(
            w.count.running.load(SeqCst),
            0,
            "the hung poll was cancelled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_past_its_deadline_is_cancelled_and_recorded_and_the_others_still_run() {
        let (mut runner, mut w) = runner(
            4,
            vec![
                ("hung", Ends::Never, Duration::from_secs(5)),
                ("healthy", Ends::AtOnce, DAY),
            ],
        );
        let err = within_an_hour(runner.cycle(CycleOptions::default()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RunnerError::Deadline { source_name, .. } if source_name == "hung"),
            "{err:?}"
        );
        assert_eq!(w.started(), ["hung", "healthy"]);
        assert_eq!(
            w.count.running.load(SeqCst),
            0,
            "the hung poll was cancelled"
        );
        let state = w.store.source_state("hung").unwrap();
        let recorded = state.last_error.expect("the deadline is recorded").message;
        assert!(recorded.contains("poll_deadline of 5s"), "{recorded}");
        assert!(w.store.activity("hung").polling_since.is_none());
    }
}
