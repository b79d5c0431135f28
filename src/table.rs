//! `rollcall table rebuild`: every current user, read from the store, republished to a sink
//! that keeps a table of them (a Kafka sink with `table = true`: docs/sinks.md, Current-users
//! table), for a topic that was lost, recreated or never filled.
//!
//! Owns which users a rebuild publishes (every source's stored users that the sink's
//! `sources` and `subjects` take, redacted as the sink redacts) and what makes it safe beside
//! the running sink: the log head is noted before the store is read, and once every row is
//! acknowledged the sink's cursor moves back to it, so whatever changed meanwhile is sent
//! again after the rows (the newest state wins a compacted topic). It never writes upstream,
//! never moves a cursor forward, and sends nothing to a sink that keeps no table.

use tokio::sync::mpsc;
use tracing::info;

use crate::config::Config;
use crate::sink::{Row, SinkConfig, SinkError};
use crate::store::{Store, StoreError};

/// Rows read ahead of the destination at most.
const AHEAD: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("sink '{0}' keeps no table: only a Kafka sink with `table = true` does (docs/sinks.md, Current-users table)")]
    NotATable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Rows published, one per current user the sink takes.
    pub users: u64,
    /// The log head when the store was read: events from there are sent again after the rows.
    pub head: u64,
    /// The sink's cursor before, when it was past `head` and so moved back to it.
    pub rewound: Option<u64>,
}

/// Publish every current user the sink takes; the caller then [`rewind`]s the sink to the
/// head noted before reading (through the running process when it serves the sink).
pub async fn rebuild(
    config: &Config,
    store: &Store,
    sink: &SinkConfig,
) -> Result<Rebuilt, TableError> {
    let name = sink.name().to_owned();
    let table = sink
        .kind()
        .table()
        .ok_or_else(|| TableError::NotATable(name.clone()))??;
    let redactor = sink
        .subscription()
        .redactor(&name)
        .map_err(SinkError::from)?;
    let head = store.head()?;
    let (tx, rx) = mpsc::channel(AHEAD);
    let reading = {
        let (store, config, subscription) =
            (store.clone(), config.clone(), sink.subscription().clone());
        let name = name.clone();
        tokio::task::spawn_blocking(move || -> Result<(), TableError> {
            for source in &config.sources {
                let kind = source.kind();
                let uri = kind.uri();
                kind.stored_users(&store, &mut |subject, record| {
                    if !subscription.takes_user(kind.name(), &subject) {
                        return Ok(());
                    }
                    let (subject, value) = match &redactor {
                        None => (subject, record),
                        Some(r) => {
                            r.redact_row(&subject, &record)
                                .map_err(|e| StoreError::Corrupt {
                                    what: format!(
                                        "a user record of source {} for sink {name}",
                                        kind.name()
                                    ),
                                    detail: e.to_string(),
                                })?
                        }
                    };
                    let row = Row {
                        key: format!("{uri}:{subject}"),
                        source: uri.clone(),
                        subject,
                        value,
                    };
                    // A dropped receiver means the publishing failed: it says why.
                    let _ = tx.blocking_send(row);
                    Ok(())
                })?;
            }
            Ok(())
        })
    };
    let published = table.publish(rx).await;
    let read = reading.await.expect("reading the store does not panic");
    let users = published?;
    read?;
    info!(sink = %name, users, head, "table rebuilt from the store");
    Ok(Rebuilt {
        users,
        head,
        rewound: None,
    })
}

/// Move the sink's cursor back to `head` when it is past it, so that what changed while the
/// rows went out is sent again after them; returns the cursor it had then.
pub fn rewind(store: &Store, sink: &str, head: u64) -> Result<Option<u64>, StoreError> {
    let cursor = store.cursor(sink)?;
    if cursor <= head {
        return Ok(None);
    }
    store.rewind_cursor(sink, head)?;
    Ok(Some(cursor))
}
