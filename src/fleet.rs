//! Serving any sink, one whose destinations come and go included: `run` and `once` reach the
//! delivery engine through here.
//!
//! Owns how a [`Fleet`] is served: under `run`, its service runs in the sink's task and every
//! destination it hands over on its [`Roster`] gets a delivery task of its own (the engine's
//! [`deliver::serve`], with its own cursor, retries, health and dead letters), stopped when
//! the fleet asks or at shutdown; under `once`, each destination it names is drained in turn.
//! A sink that is one destination goes to the engine unchanged. It never knows a kind, and
//! never moves a cursor itself.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::deliver::{self, DeliverError};
use crate::sink::{Roster, Sink};
use crate::store::Store;

/// A destination being served: how to stop it, and its task.
struct Member {
    stop: watch::Sender<bool>,
    /// Kept open so that the engine never sees its restart channel closed.
    _restarts: mpsc::Sender<deliver::Restart>,
    task: JoinHandle<()>,
}

impl Member {
    async fn stop(self) {
        self.stop.send_replace(true);
        // A panic in the task already ended the process's wish to deliver to it; nothing to add.
        let _ = self.task.await;
    }
}

/// `run`: serve `sink` until `shutdown` turns true, as [`deliver::serve`] does; a fleet is
/// served through its roster.
pub async fn serve(
    store: Store,
    sink: Box<dyn Sink>,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    restarts: mpsc::Receiver<deliver::Restart>,
) {
    let Some(fleet) = sink.fleet() else {
        return deliver::serve(store, sink, head, shutdown, restarts).await;
    };
    let (roster_tx, mut roster) = mpsc::channel(16);
    let mut members: HashMap<String, Member> = HashMap::new();
    let service = fleet.run(store.clone(), roster_tx, shutdown.clone());
    tokio::pin!(service);
    let mut running = true;
    while running {
        tokio::select! {
            () = &mut service => running = false,
            asked = roster.recv() => match asked {
                None => running = false,
                Some(Roster::Serve(member)) => {
                    let name = member.name().to_owned();
                    if let Some(old) = members.remove(&name) {
                        old.stop().await;
                    }
                    let (stop, stopped) = watch::channel(false);
                    let (restarts_tx, restarts_rx) = mpsc::channel(1);
                    let task = tokio::spawn(deliver::serve(
                        store.clone(),
                        member,
                        store.watch_head(),
                        stopped,
                        restarts_rx,
                    ));
                    info!(sink = %sink.name(), destination = %name, "delivering");
                    members.insert(name, Member { stop, _restarts: restarts_tx, task });
                }
                Some(Roster::Stop { name, stopped }) => {
                    if let Some(member) = members.remove(&name) {
                        member.stop().await;
                        info!(sink = %sink.name(), destination = %name, "delivery stopped");
                    }
                    // The fleet may have gone on without waiting: nobody to tell then.
                    let _ = stopped.send(());
                }
            },
        }
    }
    for (_, member) in members.drain() {
        member.stop().await;
    }
}

/// `once`: deliver up to the log head, as [`deliver::drain`] does; a fleet's destinations are
/// drained one after another, every one of them even when one fails (the first error is
/// returned). Returns how many events were delivered.
pub async fn drain(store: &Store, sink: &dyn Sink) -> Result<u64, DeliverError> {
    let Some(fleet) = sink.fleet() else {
        return deliver::drain(store, sink).await;
    };
    let mut delivered = 0;
    let mut first_error = None;
    for member in fleet.members(store)? {
        match deliver::drain(store, member.as_ref()).await {
            Ok(n) => delivered += n,
            Err(e) => {
                warn!(sink = %sink.name(), destination = %member.name(), error = %e, "delivery failed; will retry from the stored cursor");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(delivered), Err)
}
