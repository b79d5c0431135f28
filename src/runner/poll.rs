//! One source's polls: the [`Poll`] face every kind shows the runner, a source with its
//! deadline ([`Slot`]), and what the polls of every source share ([`Polls`]): the turns among
//! `max_concurrent_polls`, retention after a commit, and the loop that polls one source on its
//! own schedule ([`Polls::serve`]) with what follows each poll (metrics, a signed checkpoint of
//! the hash chain once one is due, the error recorded in the store, the quiet-poll summary in
//! the log).
//!
//! Owns one source's schedule and one poll within its deadline, asked of the claims first
//! (`claims.rs`): a source another store holds takes no turn and sends no request. It never starts or stops a
//! source's task (`sources.rs` does) and never talks to a sink.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, Instrument};

use super::claims::{ClaimError, Claims};
use super::error::{DeadlinePassed, RunnerError};
use crate::cycle::{CycleError, CycleOptions, SourceReport};
use crate::retention::Retention;
use crate::source::{Source, SourceConfig, Visit};
use crate::store::{Credentials, Store};
use crate::text::error_chain;

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
pub(super) trait Poll: Send {
    fn name(&self) -> &str;
    fn poll_interval(&self) -> Duration;
    /// What the source logs in with ([`Source::credentials`]).
    fn credentials(&self) -> &Credentials;
    /// One cycle; its events name `shard`, the process's, in their `source`.
    fn poll<'a>(
        &'a mut self,
        store: &'a Store,
        opts: CycleOptions,
        shard: Option<&'a str>,
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
        shard: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SourceReport, RunnerError>> {
        Box::pin(async move { Ok(crate::cycle::poll_source(store, self, opts, shard).await?) })
    }
}

/// Boxes a source of any kind as a [`Poll`].
pub(super) struct Boxed;

impl Visit for Boxed {
    type Output = Box<dyn Poll>;
    fn visit<S: Source>(self, source: S) -> Box<dyn Poll> {
        Box::new(source)
    }
}

/// A source and its deadline: what one source's task owns.
pub(super) struct Slot {
    pub(super) source: Box<dyn Poll>,
    /// What the source was built from, to build it again with credentials changed since.
    pub(super) config: SourceConfig,
    /// A cycle still running this long after it started is cancelled.
    pub(super) deadline: Duration,
}

impl Slot {
    /// The source `config` describes, built, with its deadline.
    pub(super) fn build(config: &SourceConfig) -> Result<Slot, RunnerError> {
        let source = config.build(Boxed).map_err(|error| CycleError::Source {
            source_name: config.name().to_owned(),
            error,
        })?;
        Ok(Slot {
            source,
            config: config.clone(),
            deadline: config.kind().poll_deadline(),
        })
    }
}

/// What the polls of every source share.
#[derive(Clone)]
pub(super) struct Polls {
    pub(super) store: Store,
    /// One per poll that may run at once (`max_concurrent_polls`); a poll holds one while it
    /// runs. Fair: a source waiting for one gets it before any source that asks later.
    pub(super) turns: Arc<Semaphore>,
    /// Taken by one poll at a time: two compactions at once would both count the bytes they
    /// remove.
    pub(super) retention: Arc<Mutex<Retention>>,
    /// The config's `shard`, which every event's `source` names.
    pub(super) shard: Option<Arc<str>>,
    /// Whether this store may poll a source, asked before each poll.
    pub(super) claims: Arc<Claims>,
}

impl Polls {
    /// Poll one source on its own schedule until the task is aborted: its interval after each
    /// poll ends, and none while the store refuses writes (`pause` is true). A store failure
    /// sets `pause`; `run` probes the store and clears it.
    pub(super) async fn serve(self, mut slot: Slot, pause: Arc<watch::Sender<bool>>) {
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
    pub(super) async fn poll(
        &self,
        slot: &mut Slot,
        opts: CycleOptions,
    ) -> Result<SourceReport, RunnerError> {
        let name = slot.source.name().to_owned();
        let store = &self.store;
        // Before a turn is taken: a source that may not be polled holds none.
        if let Err(error) = self.claims.check(store, &slot.config).await {
            return Err(refused(store, &name, error)?);
        }
        if !self.claims.is_empty() {
            metrics::gauge!("rollcall_source_claimed_elsewhere", "source" => name.clone()).set(0.0);
        }
        let _turn = self
            .turns
            .acquire()
            .await
            .expect("the runner never closes its turns");
        renew_credentials(store, slot)?;
        store.note_activity(&name, |a| {
            a.polling_since = Some(Utc::now());
            a.next_poll = None;
        });
        metrics::gauge!("rollcall_source_polling", "source" => name.clone()).set(1.0);
        let started = std::time::Instant::now();
        let cycle = slot
            .source
            .poll(store, opts, self.shard.as_deref())
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
        // A quiet store is signed too: a checkpoint due by time is written after any poll.
        if let Err(e) = store.checkpoint_if_due() {
            error!(error = %error_chain(&e), "cannot write the signed checkpoint that is due; the next poll tries again");
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

/// A poll refused by the claims: counted and recorded as a failed poll (the claims said it
/// already when another store holds the source); the error to return.
fn refused(store: &Store, name: &str, error: ClaimError) -> Result<RunnerError, RunnerError> {
    // The store failing is the store's trouble, which pauses polling, not the claims'.
    let error = match error {
        ClaimError::Store(e) => return Err(e.into()),
        other => other,
    };
    metrics::counter!("rollcall_poll_errors_total", "source" => name.to_owned()).increment(1);
    metrics::gauge!("rollcall_source_last_error_timestamp_seconds", "source" => name.to_owned())
        .set(Utc::now().timestamp() as f64);
    metrics::gauge!("rollcall_source_claimed_elsewhere", "source" => name.to_owned())
        .set(if error.elsewhere() { 1.0 } else { 0.0 });
    if !error.elsewhere() {
        error!(source = %name, error = %error_chain(&error), "poll refused: the source is not claimed for this store");
    }
    store.record_error(name, error_chain(&error))?;
    Ok(RunnerError::Claim {
        source_name: name.to_owned(),
        error: Box::new(error),
    })
}

/// Resolves once `flag` is `value`. The runner holds the flag's sender for as long as it
/// polls; should it be gone, nothing changes any more and this never resolves.
pub(super) async fn until(flag: &mut watch::Receiver<bool>, value: bool) {
    if flag.wait_for(|v| *v == value).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// After a refused login, builds the source again when its password (or user, or URL) no longer
/// is what was refused: a password fixed in its file or variable is then tried at the next poll,
/// without a restart. Reads the password only while a refusal is remembered.
fn renew_credentials(store: &Store, slot: &mut Slot) -> Result<(), RunnerError> {
    if store
        .login_refusal(slot.config.name(), slot.source.credentials())?
        .is_none()
    {
        return Ok(());
    }
    match slot.config.kind().login().current_credentials() {
        Ok(now) if &now != slot.source.credentials() => {
            *slot = Slot::build(&slot.config)?;
        }
        // Unchanged, or unreadable now: the source as built says so at its cycle.
        _ => {}
    }
    Ok(())
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
