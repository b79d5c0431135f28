//! The store: rollcall's only state, in one sled database.
//!
//! Owns six kinds of trees: `snapshot/<source>` (user key → user JSON), `members/<source>`
//! (the same keys → only the record's `roles` and `groups`, kept with each snapshot write so
//! that comparing membership walks a tenth of the bytes, docs/performance.md, Memory), `events`
//! (offset, big-endian u64 → event JSON, append-only), `cursors` (sink name → next offset to
//! deliver), `dlq/<sink>` (a sink's dead letters) and `meta` (schema version, store id, next
//! offset, the hash chain's head, start and last checkpoint, per-source state such as
//! high-water marks, sink health and the count of events each sink skipped because retention
//! compacted them away first, refused logins).
//! Each commit (snapshot changes, the events they produced, and the source state when given)
//! is one transaction, flushed before any sink sees it; a cycle commits in chunks of bounded
//! size (see `cycle`), each holding its users as read, so a crash at any instant loses nothing
//! and derives nothing twice. No other module opens the database or reads or writes a tree
//! (they only pass sled's `IVec` buffers along, or wrap a store error), and this module never
//! talks to an upstream or to a sink.
//!
//! Every handle of one open store shares two things no write may bypass: the [`StoreFault`]
//! (a write that failed, until one succeeds: sled keeps refusing writes after an I/O error, so
//! `status`, `/readyz` and `/healthz` must hear of it even though it cannot be stored), and the
//! log head, which wakes the sinks at every commit. They also share, in memory only, what this
//! process's runner is doing with each source ([`SourceActivity`]: a poll running, the last
//! cycle's time, the next poll), so that `status` answered by a running process shows it; it
//! changes at every poll and means nothing to another process, so it is never written.
//!
//! One file per concern, each an `impl Store` of its own: `snapshot.rs` (the snapshots and
//! [`Known`]), `commit.rs` (the one transaction a cycle's changes land in, or a checkpoint due
//! by time), `chain.rs` (appending events with their links in the hash chain, and signed
//! checkpoints), `log.rs` (the event log, its head and compaction), `sink_state.rs` (sink
//! cursors, sink health, dead letters), `source_state.rs` (source states, refused logins,
//! in-memory activity), `streams.rs` (the records of destinations a sink's receivers create
//! while rollcall runs, `streams`), `backup.rs` (export and import) and `migrate.rs` (the schema
//! version and the steps to it). This file opens the store and holds what every handle shares.

mod backup;
mod chain;
mod commit;
mod log;
mod migrate;
mod sink_state;
mod snapshot;
mod source_state;
mod streams;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use chain::{ChainHead, Checkpoints};
pub use commit::Commit;
pub use log::StoredEvent;
use migrate::SCHEMA_VERSION;
pub use sink_state::{DeadLetter, SinkHealth, SinkState};
pub use snapshot::{Known, Record};
pub use source_state::{
    Credentials, DeletionGuard, ErrorRecord, LoginRefusal, SourceActivity, SourceState,
    StoredCursor,
};

/// A UUID made with the store: a new id means a new log, whose offsets start again at 0.
const KEY_STORE_ID: &[u8] = b"store_id";
/// What [`Store::probe`] writes to find out whether the store takes writes again.
const KEY_PROBE: &[u8] = b"probe";
/// sled's page cache (its default is 1 GiB): a cycle walks the stored users once in key order,
/// so a large cache would only hold every user in memory (docs/performance.md, Memory).
const CACHE_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write or read the store export")]
    Export {
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists already: `store import` creates a new store and never merges into one. Import into a path that does not exist, then point `[store] path` at it")]
    ImportTarget { path: PathBuf },
    #[error("line {line} of the import: {what}; nothing usable was imported, delete the new store directory and import a whole `rollcall store export`")]
    ImportFile { line: usize, what: String },
    #[error("the store at {path} is already in use by another rollcall process; stop it first (or point [store] path elsewhere). While `rollcall run` holds it, `events`, `status`, `replay`, `dlq` and `sink` go through that process")]
    InUse { path: PathBuf },
    #[error("cannot open the store at {path}; rollcall changed nothing. Check that the directory is readable and writable by this user and the disk is not full")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the store at {path} is damaged: sled read corrupted data {at}. rollcall stopped before changing anything in it. Restore the store directory from a backup taken while rollcall was stopped; or move it away to start a new, empty store (a new store id: event offsets and `sequence` start again at 0, and its first poll records the users as they are then, so changes since the store's last good state are not reported)")]
    Corrupted { path: PathBuf, at: String },
    #[error("the store at {path} has schema version {found}, this rollcall understands {SCHEMA_VERSION}; use the rollcall release that wrote it")]
    Schema { path: PathBuf, found: u64 },
    #[error("store I/O failed. Check free disk space and the permissions of the store directory; sled refuses every write after a failed one, so restart rollcall once it is fixed")]
    Sled(#[from] sled::Error),
    #[error("the store holds an unreadable {what}: {detail}")]
    Corrupt { what: String, detail: String },
}

/// Writes to the store are failing: from the first failure until a write succeeds again. Kept
/// in memory by every handle of the open store, since it cannot be stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreFault {
    /// The first failed write since the last one that succeeded.
    pub since: DateTime<Utc>,
    /// The latest failed write.
    pub last_at: DateTime<Utc>,
    /// Writes that failed since `since`.
    pub failures: u64,
    /// Why the latest one failed, with every cause.
    pub message: String,
}

#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    id: String,
    /// This open created the store: there was no state before.
    created: bool,
    db: sled::Db,
    events: sled::Tree,
    cursors: sled::Tree,
    meta: sled::Tree,
    fault: Arc<Mutex<Option<StoreFault>>>,
    head: Arc<watch::Sender<u64>>,
    /// Commits hold it shared; an export holds it alone while it copies everything but the
    /// log, so it sees no commit half-way (sled has no snapshot that spans trees).
    gate: Arc<RwLock<()>>,
    /// An export holds it from start to end, compaction while it removes events: the log an
    /// export copies after the gate opens again loses nothing below the head it noted.
    compacting: Arc<Mutex<()>>,
    /// Source states newer than the stored ones, of cycles that found no change: such a cycle
    /// writes nothing (docs/performance.md, Idle cycles), yet `status`, `/readyz` and the next
    /// cycle of this process see it. Losing it in a crash costs nothing: it holds only the poll
    /// time and cursors, which are lower bounds of what the next cycle reads.
    unsaved: Arc<Mutex<std::collections::HashMap<String, SourceState>>>,
    /// What this process's runner is doing with each source (see [`SourceActivity`]).
    activity: Arc<Mutex<std::collections::HashMap<String, SourceActivity>>>,
    /// How checkpoints are signed, once `run` or `once` set it (see `chain.rs`).
    checkpoints: Arc<OnceLock<Arc<Checkpoints>>>,
    /// Events get their chain attributes; off only for a benchmark's baseline.
    chaining: Arc<AtomicBool>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // A process that has just stopped (or a store handle just dropped) can hold sled's file
        // lock a moment longer while its flusher thread ends; only a lock that lasts is "in use".
        let mut attempts = 0;
        loop {
            match Store::open_once(path) {
                Err(StoreError::InUse { .. }) if attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Store, StoreError> {
        let opened = |source: sled::Error| match &source {
            // sled takes an exclusive file lock; a second process gets WouldBlock.
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StoreError::InUse {
                    path: path.to_owned(),
                }
            }
            sled::Error::Corruption { at, .. } => StoreError::Corrupted {
                path: path.to_owned(),
                at: at.map_or_else(|| "at an unknown place".to_owned(), |p| format!("at {p}")),
            },
            _ => StoreError::Open {
                path: path.to_owned(),
                source,
            },
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(opened)?;
        let tree = |name: &str| db.open_tree(name).map_err(opened);
        let (events, cursors, meta) = (tree("events")?, tree("cursors")?, tree("meta")?);
        let schema = meta.get(migrate::KEY_SCHEMA).map_err(opened)?;
        let created = schema.is_none();
        migrate::upgrade(&db, &meta, path, schema)?;
        // Stores made before ids existed get one now: it is new to their consumers only from
        // here on, which is as much as anyone can tell.
        let id = match meta.get(KEY_STORE_ID)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                meta.insert(KEY_STORE_ID, id.as_bytes())?;
                db.flush()?;
                id
            }
        };
        let head = match meta.get(log::KEY_NEXT_OFFSET)? {
            Some(v) => be_u64(&v, "next offset")?,
            None => 0,
        };
        Ok(Store {
            path: path.to_owned(),
            id,
            created,
            events,
            cursors,
            meta,
            db,
            fault: Arc::new(Mutex::new(None)),
            head: Arc::new(watch::channel(head).0),
            gate: Arc::new(RwLock::new(())),
            compacting: Arc::new(Mutex::new(())),
            unsaved: Arc::default(),
            activity: Arc::default(),
            checkpoints: Arc::default(),
            chaining: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id made with the store; a different id is a different log.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This open created the store: nothing was stored here before.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Writes are failing, and since when; `None` while they succeed.
    pub fn fault(&self) -> Option<StoreFault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The log head, updated at every commit: sinks wait on it for new events.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Write and flush a marker: succeeds once the store takes writes again.
    pub fn probe(&self) -> Result<(), StoreError> {
        self.writing(|| {
            self.meta
                .insert(KEY_PROBE, Utc::now().to_rfc3339().as_bytes())?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// Runs a write, keeping the store's fault up to date: an I/O failure is one more failed
    /// write, a success ends the fault.
    fn writing<T>(&self, write: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = write();
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => *fault = None,
            Err(e @ StoreError::Sled(_)) => {
                let now = Utc::now();
                let message = crate::text::error_chain(e);
                match fault.as_mut() {
                    Some(f) => {
                        f.last_at = now;
                        f.failures += 1;
                        f.message = message;
                    }
                    None => {
                        *fault = Some(StoreFault {
                            since: now,
                            last_at: now,
                            failures: 1,
                            message,
                        })
                    }
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.writing(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

fn json_bytes<T: Serialize + ?Sized>(t: &T) -> Vec<u8> {
    serde_json::to_vec(t).expect("rollcall's own types always serialise")
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::migrate::KEY_SCHEMA;
    use super::*;
    use crate::event::{Event, EventType};
    use crate::user::{Account, FieldChange, Member};

    fn event(subject: &str) -> Event {
        Event {
            specversion: "1.0".into(),
            id: uuid::Uuid::now_v7(),
            source: "superset://t".into(),
            event_type: EventType::UserCreated,
            subject: subject.into(),
            time: Utc::now(),
            datacontenttype: "application/json".into(),
            dataschema: None,
            sequence: String::new(),
            data: serde_json::json!({}),
        }
    }

    /// The least a user can be: the store only needs a key and a record.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
    }

    impl Account for User {
        type Key = u64;
        fn key(&self) -> u64 {
            self.id
        }
        fn same_incarnation(&self, other: &User) -> bool {
            self == other
        }
        fn username(&self) -> &str {
            ""
        }
        fn active(&self) -> bool {
            true
        }
        fn roles(&self) -> &[Member] {
            &[]
        }
        fn groups(&self) -> &[Member] {
            &[]
        }
        fn profile_changes(_: &User, _: &User) -> Vec<FieldChange> {
            Vec::new()
        }
        fn activity(_: &User, _: &User, _: bool) -> Vec<(EventType, serde_json::Value)> {
            Vec::new()
        }
    }

    fn user(id: u64) -> User {
        User { id }
    }

    #[test]
    fn commit_assigns_consecutive_offsets_and_stores_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let state = SourceState {
            initialized: true,
            ..Default::default()
        };
        let (a, b) = (user(1), user(2));
        let range = store
            .commit(Commit {
                source: "t",
                upserts: vec![Record::of(&a), Record::of(&b)],
                removals: vec![],
                events: vec![event("1"), event("2")],
                state: Some(&state),
            })
            .unwrap();
        assert_eq!(range, 0..2);
        let range = store
            .commit(Commit {
                source: "t",
                upserts: vec![],
                removals: vec![1u64.to_be_bytes().to_vec()],
                events: vec![event("1")],
                state: Some(&state),
            })
            .unwrap();
        assert_eq!(range, 2..3);
        assert_eq!(store.head().unwrap(), 3);
        assert_eq!(
            store
                .snapshot::<User>("t")
                .unwrap()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [2]
        );
        let stored = store.events_from(1, 10).unwrap();
        assert_eq!(stored.iter().map(|e| e.offset).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(stored[1].event().unwrap().sequence, "00000000000000000002");
        assert!(store.source_state("t").unwrap().initialized);
    }

    /// What comparing membership reads of each stored user, as raw JSON by key.
    fn memberships(store: &Store) -> Vec<(u64, serde_json::Value)> {
        store
            .known::<User>("t")
            .unwrap()
            .memberships::<serde_json::Value>()
            .map(Result::unwrap)
            .collect()
    }

    fn record(id: u64, roles: serde_json::Value) -> Record {
        let value = serde_json::json!({"id": id, "name": "x", "roles": roles, "groups": []});
        Record {
            key: id.to_be_bytes().to_vec(),
            value: value.to_string().into_bytes(),
        }
    }

    #[test]
    fn each_commit_keeps_the_stored_memberships_beside_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let commit = |upserts, removals| {
            store
                .commit(Commit {
                    source: "t",
                    upserts,
                    removals,
                    events: vec![],
                    state: None,
                })
                .unwrap()
        };
        let gamma = serde_json::json!([{"id": 4, "name": "Gamma"}]);
        commit(
            vec![record(1, gamma.clone()), record(2, gamma.clone())],
            vec![],
        );
        commit(
            vec![record(2, serde_json::json!([]))],
            vec![1u64.to_be_bytes().to_vec()],
        );
        assert_eq!(
            memberships(&store),
            [(2, serde_json::json!({"roles": [], "groups": []}))]
        );
    }

    #[test]
    fn a_store_of_schema_1_gains_the_stored_memberships_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(KEY_SCHEMA, &1u64.to_be_bytes())
                .unwrap();
            let snapshot = db.open_tree("snapshot/t").unwrap();
            let r = record(7, serde_json::json!([{"id": 3, "name": "Alpha"}]));
            snapshot.insert(r.key, r.value).unwrap();
            snapshot
                .insert(8u64.to_be_bytes(), b"not json".as_slice())
                .unwrap();
            // Left by a migration that was interrupted, for a user deleted since.
            db.open_tree("members/t")
                .unwrap()
                .insert(9u64.to_be_bytes(), b"{}".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            memberships(&store),
            [
                (
                    7,
                    serde_json::json!({"roles": [{"id": 3, "name": "Alpha"}], "groups": []})
                ),
                (8, serde_json::json!({}))
            ]
        );
        // Read through the open store: opening sled again right after a drop can find its
        // file lock still held by the flusher thread.
        assert_eq!(
            store.meta.get(KEY_SCHEMA).unwrap().unwrap().as_ref(),
            SCHEMA_VERSION.to_be_bytes()
        );
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let state = SourceState::default();
            let u = user(5);
            store
                .commit(Commit {
                    source: "t",
                    upserts: vec![Record::of(&u)],
                    removals: vec![],
                    events: vec![event("5")],
                    state: Some(&state),
                })
                .unwrap();
            store.set_cursor("siem", 1).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor("siem").unwrap(), 1);
        assert_eq!(store.cursor("never-seen").unwrap(), 0);
        assert_eq!(store.head().unwrap(), 1);
        assert!(store.snapshot::<User>("t").unwrap().contains_key(&5));
    }

    #[test]
    fn sink_state_keeps_since_while_health_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.sink_state("k").unwrap().health, SinkHealth::Ok);
        store
            .set_sink_state("k", SinkHealth::Degraded, Some("broker down".into()))
            .unwrap();
        let first = store.sink_state("k").unwrap();
        store
            .set_sink_state("k", SinkHealth::Degraded, Some("still down".into()))
            .unwrap();
        let second = store.sink_state("k").unwrap();
        assert_eq!(first.since, second.since);
        assert_eq!(second.last_error.as_deref(), Some("still down"));
    }

    #[test]
    fn dead_letters_are_kept_listed_and_removed_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for offset in [7, 3] {
            let letter = DeadLetter {
                offset,
                event: serde_json::json!({"id": offset}),
                reason: "HTTP 500".into(),
                attempts: 8,
                at: Utc::now(),
            };
            store.dead_letter("hook", &letter).unwrap();
        }
        assert_eq!(
            store
                .dead_letters("hook")
                .unwrap()
                .iter()
                .map(|d| d.offset)
                .collect::<Vec<_>>(),
            [3, 7]
        );
        assert!(store.remove_dead_letter("hook", 3).unwrap());
        assert_eq!(store.dead_letter_count("hook").unwrap(), 1);
        assert_eq!(store.dead_letter_count("other").unwrap(), 0);
    }

    #[test]
    fn compact_removes_events_below_the_bound_and_keeps_the_byte_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let state = SourceState::default();
        let events: Vec<Event> = (1..=5).map(|i| event(&i.to_string())).collect();
        store
            .commit(Commit {
                source: "t",
                upserts: vec![],
                removals: vec![],
                events,
                state: Some(&state),
            })
            .unwrap();
        let sizes: Vec<u64> = store
            .events_from(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.bytes.len() as u64)
            .collect();
        assert_eq!(store.log_bytes().unwrap(), sizes.iter().sum::<u64>());
        assert_eq!(store.compact(2).unwrap(), 0..2);
        assert_eq!(store.log_start().unwrap(), 2);
        assert_eq!(store.events_from(0, 10).unwrap()[0].offset, 2);
        assert_eq!(store.log_bytes().unwrap(), sizes[2..].iter().sum::<u64>());
        assert_eq!(store.compact(1).unwrap(), 2..2, "never moves back");
        assert_eq!(store.compact(99).unwrap(), 2..5, "stops at the head");
        assert_eq!(store.log_bytes().unwrap(), 0);
        assert_eq!(store.head().unwrap(), 5, "offsets are never reused");
    }

    #[test]
    fn error_record_leaves_snapshot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.record_error("t", "boom".into()).unwrap();
        let state = store.source_state("t").unwrap();
        assert_eq!(state.last_error.unwrap().message, "boom");
        assert!(store.snapshot::<User>("t").unwrap().is_empty());
        assert_eq!(store.head().unwrap(), 0);
    }
}

#[cfg(test)]
mod fuzz {
    use super::log::KEY_NEXT_OFFSET;
    use super::source_state::state_key;
    use super::*;
    use proptest::prelude::*;

    /// Stored bytes no rollcall wrote: a damaged disk, a foreign writer, another version.
    fn stored_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            crate::fuzz::any_json().prop_map(|v| v.to_string().into_bytes()),
        ]
    }

    proptest! {
        // Each case opens a store on disk: fewer cases than the other targets in the normal
        // suite, as many as `scripts/fuzz.sh` asks for (PROPTEST_CASES) when it runs.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]
        #[test]
        fn fuzz_stored_records_of_any_bytes_never_panic(
            event in stored_bytes(),
            state in stored_bytes(),
            record in stored_bytes(),
            cursor in stored_bytes(),
            letter in stored_bytes(),
            sink_state in stored_bytes(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("data")).unwrap();
            store.events.insert(0u64.to_be_bytes(), event).unwrap();
            store.meta.insert(KEY_NEXT_OFFSET, &1u64.to_be_bytes()).unwrap();
            store.meta.insert(state_key("s"), state).unwrap();
            store.snapshot_tree("s").unwrap().insert(7u64.to_be_bytes(), record).unwrap();
            store.cursors.insert("k", cursor).unwrap();
            store.dlq_tree("k").unwrap().insert(0u64.to_be_bytes(), letter).unwrap();
            store.meta.insert(b"sink/k".as_slice(), sink_state).unwrap();
            // Each read answers Ok or a clear error; none may panic.
            for e in store.events_from(0, 10).unwrap_or_default() {
                let _ = e.event();
                let _ = crate::encode::Envelope::parse(&e);
            }
            let _ = store.source_state("s");
            let _ = store.snapshot::<crate::source::superset::User>("s");
            let _ = store.snapshot::<crate::source::kylin::KylinUser>("s");
            let _ = store.cursor("k");
            let _ = store.dead_letters("k");
            let _ = store.sink_state("k");
        }
    }
}
