//! The runner: schedules the polls of every source and serves every sink.
//!
//! Owns scheduling: each source is polled on its own schedule (its `poll_interval` after its
//! last poll ended), in a task of its own, at most `max_concurrent_polls` polls at once, each
//! cycle within its `poll_deadline`. So a source that never answers, answers slowly or has its
//! login refused delays no other source's polls and no sink's deliveries (docs/scaling.md).
//! Also owns what follows each poll (metrics, retention, a signed checkpoint once one is due,
//! errors recorded in the store), the pause while the store refuses writes, the set of sources
//! changing under `run` (a reload of the config, a source forgotten) and shutdown; and, before
//! each poll, whether this store may poll the source at all, by the claims processes sharing a
//! Kafka cluster publish (docs/scaling.md, Claims). One cycle of one source (observe, diff,
//! commit) is `cycle`'s. It keeps nothing between cycles that must survive a restart (that is in
//! the store); what it is doing with each source now, it tells the store's in-memory
//! [`SourceActivity`](crate::store::SourceActivity), which `status` and `/metrics` show.
//!
//! One file per concern: one source's polls and schedule (`poll.rs`), the source tasks `run`
//! keeps and the operator's orders that change them (`sources.rs`), claiming sources and
//! refusing those another store holds (`claims.rs`), the error (`error.rs`); this
//! file wires them with the sinks, for `once` and `run`.

mod claims;
mod error;
mod poll;
mod sources;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Config;
use crate::deliver;
use crate::retention::Retention;
use crate::sink::{Sink, SinkConfig};
use crate::store::{Store, StoreError};
use crate::text::error_chain;
pub use claims::{ClaimError, Claims};
pub use error::{DeadlinePassed, RunnerError};
use poll::{until, Polls, Slot};
pub use sources::{Forgot, Reloaded, SourceControls};
use sources::{Order, SourceTasks};

pub use crate::cycle::{CycleError, CycleOptions, SourceReport};

/// How long sinks may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

pub struct Runner {
    polls: Polls,
    sources: Vec<Slot>,
    sinks: Vec<Box<dyn Sink>>,
    /// Each sink's end of its [`SinkControls`] channel, handed to its task by `run`.
    restarts: Vec<mpsc::Receiver<deliver::Restart>>,
    controls: SinkControls,
    /// The config `run` acts on: its sources as last reloaded, the rest as it started.
    config: watch::Sender<Arc<Config>>,
    /// The operator's orders to the sources (reload, forget): the sending end is handed out
    /// as [`SourceControls`], `run` takes the receiving one.
    orders: (mpsc::Sender<Order>, Option<mpsc::Receiver<Order>>),
}

/// How an operator reaches what `run` runs (the admin channel, SIGHUP).
#[derive(Clone)]
pub struct Controls {
    pub sinks: SinkControls,
    pub sources: SourceControls,
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
            .map(Slot::build)
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
                claims: Arc::new(Claims::new(config, store.id())?),
                store,
                turns: Arc::new(Semaphore::new(config.max_concurrent_polls)),
                retention: Arc::new(Mutex::new(Retention::new(config))),
                shard: config.shard.as_deref().map(Arc::from),
            },
            sources,
            sinks,
            restarts,
            controls: SinkControls(std::sync::Arc::new(senders)),
            config: watch::channel(Arc::new(config.clone())).0,
            orders: orders(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.polls.store
    }

    /// The handles the admin channel and the signals reach what `run` runs with: sinks to
    /// restart, the config to reload, a source to forget.
    pub fn controls(&self) -> Controls {
        Controls {
            sinks: self.controls.clone(),
            sources: SourceControls(self.orders.0.clone()),
        }
    }

    /// The config `run` acts on, as it changes: after a reload, the sources it read then, and
    /// everything else as it started (only sources are reloaded).
    pub fn config(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
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
        let mut tasks = SourceTasks::new(self.polls.clone(), pause.clone());
        for slot in std::mem::take(&mut self.sources) {
            tasks.start(slot);
        }
        let mut orders = self
            .orders
            .1
            .take()
            .expect("a runner runs once: `run` takes it by value");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tasks.panicked() => {}
                Some(order) = orders.recv() => tasks.obey(order, &self.config).await,
                _ = until(&mut paused, true) => {
                    if !store_back(&store, &mut shutdown).await {
                        break;
                    }
                    pause.send_replace(false);
                }
            }
        }
        info!("shutting down: polling stopped (polls in flight are cancelled; what they committed stays), letting sinks finish");
        tasks.abort_all();
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
        tasks.all_ended().await;
        store
            .flush()
            .map_err(RunnerError::StoppedWithStoreFailing)?;
        info!("stopped");
        Ok(())
    }
}

/// The channel of the operator's orders to `run`'s sources: a few at a time, each waits for
/// its answer.
fn orders() -> (mpsc::Sender<Order>, Option<mpsc::Receiver<Order>>) {
    let (tx, rx) = mpsc::channel(4);
    (tx, Some(rx))
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

/// The next pause of a schedule that never runs out; 60 s if it does.
fn next_pause(pauses: &mut impl Iterator<Item = Duration>) -> Duration {
    pauses.next().unwrap_or(Duration::from_secs(60))
}

/// The scheduling of `run` and `cycle` with sources that the tests hold and release through
/// channels, on tokio's paused clock: a poll that could start has started by the time the
/// clock moves on by itself (it moves only when every task waits), so nothing here races.
#[cfg(test)]
mod scheduling {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    use super::poll::Poll;
    use super::*;
    use crate::store::Credentials;
    use futures::future::BoxFuture;

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
            _: Option<&'a str>,
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
                shard: None,
                claims: Arc::new(Claims::new(&config, store.id()).unwrap()),
            },
            sources,
            sinks: Vec::new(),
            restarts: Vec::new(),
            controls: SinkControls::default(),
            config: watch::channel(Arc::new(config)).0,
            orders: orders(),
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

    #[tokio::test(start_paused = true)]
    async fn a_stopped_source_is_polled_no_more_and_the_others_go_on_undisturbed() {
        let (mut runner, mut w) =
            runner(4, vec![("a", Ends::AtOnce, DAY), ("b", Ends::AtOnce, DAY)]);
        let pause = Arc::new(watch::channel(false).0);
        let mut tasks = SourceTasks::new(runner.polls.clone(), pause);
        for slot in std::mem::take(&mut runner.sources) {
            tasks.start(slot);
        }
        let mut polls = Vec::new();
        within_an_hour(async {
            while ["a", "b"]
                .iter()
                .any(|n| polls.iter().filter(|s| s == n).count() < 2)
            {
                polls.push(w.started.recv().await.unwrap());
            }
        })
        .await;
        assert_eq!(
            tasks.forget("a").unwrap(),
            Forgot::StillPolled,
            "a source polled is never forgotten"
        );
        within_an_hour(tasks.stop(&["a".to_owned()])).await;
        assert_eq!(
            w.store.activity("a"),
            crate::store::SourceActivity::default()
        );
        w.started();
        let mut after = Vec::new();
        within_an_hour(async {
            while after.iter().filter(|s| *s == "b").count() < 3 {
                after.push(w.started.recv().await.unwrap());
            }
        })
        .await;
        assert!(!after.contains(&"a".to_owned()), "{after:?}");
        assert_eq!(tasks.forget("a").unwrap(), Forgot::NothingStored);
        tasks.abort_all();
        within_an_hour(tasks.all_ended()).await;
    }
}
