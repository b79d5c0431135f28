//! The sources `run` polls now, each in a task of its own with its stop handle, and the changes
//! an operator makes to that set while it runs: a reload of the config (SIGHUP) starts the
//! sources added, stops the ones removed and restarts the ones changed, and disturbs no other
//! (its schedule and its session go on); `rollcall source forget` removes the stored state of a
//! source no longer polled.
//!
//! Owns which source tasks run and the order of a reload: every new source is built before any
//! task stops, so a reload that cannot be applied whole changes nothing; a stopped task has
//! ended (its poll in flight cancelled, what it committed kept) before its source counts as
//! gone. Reloads and forgets reach the runner's loop one at a time through [`SourceControls`],
//! so a source is never forgotten while a task of it runs. It never reads a config file (the
//! caller hands it the config read) and applies nothing but sources.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

use super::error::RunnerError;
use super::poll::{Polls, Slot};
use crate::config::{Config, SourceChanges};
use crate::store::StoreError;

/// Every source task `run` has started and not stopped, by source name.
pub(super) struct SourceTasks {
    polls: Polls,
    /// True while the store refuses writes: no poll starts then.
    pause: Arc<watch::Sender<bool>>,
    tasks: JoinSet<()>,
    running: HashMap<String, AbortHandle>,
}

impl SourceTasks {
    pub(super) fn new(polls: Polls, pause: Arc<watch::Sender<bool>>) -> SourceTasks {
        SourceTasks {
            polls,
            pause,
            tasks: JoinSet::new(),
            running: HashMap::new(),
        }
    }

    /// Poll `slot`'s source on its schedule, in a task of its own, from now on.
    pub(super) fn start(&mut self, slot: Slot) {
        let name = slot.source.name().to_owned();
        info!(
            source = %name,
            every = %humantime::format_duration(slot.source.poll_interval()),
            deadline = %humantime::format_duration(slot.deadline),
            "polling started"
        );
        let task = self
            .tasks
            .spawn(self.polls.clone().serve(slot, self.pause.clone()));
        self.running.insert(name, task);
    }

    /// Stop polling the sources `names`: a poll in flight is cancelled (what it committed
    /// stays). Returns once each task has ended.
    pub(super) async fn stop(&mut self, names: &[String]) {
        let mut ending: HashSet<tokio::task::Id> = names
            .iter()
            .filter_map(|name| self.running.remove(name))
            .map(|task| {
                task.abort();
                task.id()
            })
            .collect();
        while !ending.is_empty() {
            match self.tasks.join_next_with_id().await {
                Some(Ok((id, ()))) => ending.remove(&id),
                Some(Err(e)) => {
                    let id = e.id();
                    resume_panic(e);
                    ending.remove(&id)
                }
                None => break,
            };
        }
        for name in names {
            self.polls.store.clear_activity(name);
            metrics::gauge!("rollcall_source_polling", "source" => name.clone()).set(0.0);
            info!(source = %name, "polling stopped");
        }
    }

    /// Cancel every task (their polls in flight with them); [`SourceTasks::all_ended`] then returns
    /// once all have.
    pub(super) fn abort_all(&mut self) {
        self.tasks.abort_all();
        self.running.clear();
    }

    /// Waits until every task has ended.
    pub(super) async fn all_ended(&mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result {
                resume_panic(e);
            }
        }
    }

    /// Resolves only if a task panics: the panic then ends the process, as a panic of the one
    /// polling loop did. A source's task never ends by itself otherwise (a stopped one is
    /// awaited by [`SourceTasks::stop`]).
    pub(super) async fn panicked(&mut self) {
        loop {
            match self.tasks.join_next().await {
                Some(Err(e)) => resume_panic(e),
                Some(Ok(())) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Apply `new`, the config read again, to the sources of `running`: build every source
    /// added or changed, then stop the removed and changed ones, then start the built ones.
    /// Returns the config that now runs (`running` with `new`'s sources) and what changed; a
    /// source that cannot be built changes nothing.
    pub(super) async fn reload(
        &mut self,
        running: &Config,
        new: Config,
    ) -> Result<(Config, Reloaded), RunnerError> {
        let changes = running.source_changes(&new);
        let needs_restart = running.needs_restart(&new);
        let slots = new
            .sources
            .iter()
            .filter(|s| {
                let name = s.name().to_owned();
                changes.added.contains(&name) || changes.changed.contains(&name)
            })
            .map(Slot::build)
            .collect::<Result<Vec<_>, _>>()?;
        let stopping: Vec<String> = changes
            .removed
            .iter()
            .chain(&changes.changed)
            .cloned()
            .collect();
        self.stop(&stopping).await;
        for slot in slots {
            self.start(slot);
        }
        info!(
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len(),
            sources = new.sources.len(),
            "config reloaded: sources added started, removed stopped (their stored state is kept until `rollcall source forget NAME`), changed restarted; the others go on undisturbed"
        );
        if !needs_restart.is_empty() {
            warn!(
                keys = %needs_restart.join(", "),
                config = %running.path.display(),
                "changes to {} are not applied by a reload: restart rollcall for them (a reload applies only sources)",
                needs_restart.join(", ")
            );
        }
        Ok((
            running.with_sources_of(new),
            Reloaded {
                changes,
                needs_restart,
            },
        ))
    }

    /// Forget what the store keeps of `name`, unless a task of it runs.
    pub(super) fn forget(&self, name: &str) -> Result<Forgot, StoreError> {
        if self.running.contains_key(name) {
            return Ok(Forgot::StillPolled);
        }
        Ok(match self.polls.store.forget_source(name)? {
            true => Forgot::Forgotten,
            false => Forgot::NothingStored,
        })
    }

    /// Carry out one operator's order.
    pub(super) async fn obey(&mut self, order: Order, config: &watch::Sender<Arc<Config>>) {
        match order {
            Order::Reload { config: new, done } => {
                let running = config.borrow().clone();
                let result = self.reload(&running, *new).await.map(|(now, reloaded)| {
                    config.send_replace(Arc::new(now));
                    reloaded
                });
                let _ = done.send(result);
            }
            Order::Forget { name, done } => {
                let _ = done.send(self.forget(&name));
            }
        }
    }
}

/// A task that panicked passes its panic on; one that was cancelled has simply ended.
fn resume_panic(e: tokio::task::JoinError) {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// What a reload changed.
#[derive(Debug)]
pub struct Reloaded {
    pub changes: SourceChanges,
    /// Keys of the main file that changed but wait for a restart.
    pub needs_restart: Vec<String>,
}

/// What became of a `rollcall source forget`.
#[derive(Debug, PartialEq)]
pub enum Forgot {
    Forgotten,
    /// The store held nothing of that name.
    NothingStored,
    /// The running process polls it: it is in the config it runs.
    StillPolled,
}

/// An operator's order to the runner's loop, with where its answer goes.
pub(super) enum Order {
    Reload {
        config: Box<Config>,
        done: oneshot::Sender<Result<Reloaded, RunnerError>>,
    },
    Forget {
        name: String,
        done: oneshot::Sender<Result<Forgot, StoreError>>,
    },
}

/// How the operator's side reaches the sources `run` polls: reload the config, forget a
/// source. Each order is carried out by the runner's loop, one at a time.
#[derive(Clone)]
pub struct SourceControls(pub(super) mpsc::Sender<Order>);

impl SourceControls {
    /// Apply `config`, the config read again: sources added, removed and changed. `None` when
    /// the runner has stopped.
    pub async fn reload(&self, config: Config) -> Option<Result<Reloaded, RunnerError>> {
        let (done, said) = oneshot::channel();
        let order = Order::Reload {
            config: Box::new(config),
            done,
        };
        self.0.send(order).await.ok()?;
        said.await.ok()
    }

    /// Forget what the store keeps of source `name`, unless it is polled. `None` when the
    /// runner has stopped.
    pub async fn forget(&self, name: &str) -> Option<Result<Forgot, StoreError>> {
        let (done, said) = oneshot::channel();
        let order = Order::Forget {
            name: name.to_owned(),
            done,
        };
        self.0.send(order).await.ok()?;
        said.await.ok()
    }
}
