//! The store: rollcall's only state, in one sled database.
//!
//! Owns six kinds of trees: `snapshot/<source>` (user key → user JSON), `members/<source>`
//! (the same keys → only the record's `roles` and `groups`, kept with each snapshot write so
//! that comparing membership walks a tenth of the bytes, docs/performance.md, Memory), `events`
//! (offset, big-endian u64 → event JSON, append-only), `cursors` (sink name → next offset to
//! deliver), `dlq/<sink>` (a sink's dead letters) and `meta` (schema version, store id, next
//! offset, per-source state such as high-water marks, sink health and the count of events each
//! sink skipped because retention compacted them away first, refused logins).
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

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::watch;

use crate::event::Event;
use crate::user::{Account, Key, Snapshot};

/// 2: `members/<source>` beside each snapshot (a version 1 store gains them when opened).
const SCHEMA_VERSION: u64 = 2;
const KEY_SCHEMA: &[u8] = b"schema_version";
/// A UUID made with the store: a new id means a new log, whose offsets start again at 0.
const KEY_STORE_ID: &[u8] = b"store_id";
/// What [`Store::probe`] writes to find out whether the store takes writes again.
const KEY_PROBE: &[u8] = b"probe";
const KEY_NEXT_OFFSET: &[u8] = b"next_offset";
/// The first offset still in the log; everything below it was compacted away by retention.
const KEY_LOG_START: &[u8] = b"log_start";
/// Bytes of the events in the log and the offset up to which they are counted (2 × u64 BE):
/// counted incrementally, so a size cap costs a scan of the new events, not of the whole log.
const KEY_LOG_BYTES: &[u8] = b"log_bytes";
/// sled's page cache (its default is 1 GiB): a cycle walks the stored users once in key order,
/// so a large cache would only hold every user in memory (docs/performance.md, Memory).
const CACHE_BYTES: u64 = 4 << 20;
/// Events removed per sled batch when compacting: bounds the memory of one batch.
const COMPACT_BATCH: usize = 10_000;

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

/// A source's own cursor as the store keeps it: the fields of a JSON object, stored flat beside
/// the generic source state. Only the source knows its type.
pub type StoredCursor = serde_json::Map<String, serde_json::Value>;

/// What the store remembers about one source between cycles: the generic part the runner
/// keeps, and the source's own cursor, which only the source reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The first full snapshot has been stored.
    pub initialized: bool,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_full_reconcile: Option<DateTime<Utc>>,
    pub last_error: Option<ErrorRecord>,
    /// The source stopped itself and why (its login was refused); cleared by changed
    /// credentials, by `rollcall source retry-login`, and by a successful poll.
    #[serde(default)]
    pub stopped: Option<ErrorRecord>,
    pub users_known: usize,
    /// Deletions held back by the mass-delete guard.
    pub deletion_guard: Option<DeletionGuard>,
    /// The source's own cursor (high-water marks, how far a log was read), opaque here. Kept
    /// flat beside the fields above, where earlier releases stored Superset's.
    #[serde(flatten)]
    pub cursor: StoredCursor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// What identifies the credentials a source logs in with, without holding them: a SHA-256 over
/// the URL, the username and the password (made by `source::Login::credentials`). The store
/// keeps it only beside a refused login, and never shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credentials(pub String);

/// A login the upstream refused, and the credentials it refused. Each refused login counts
/// towards locking the account (Kylin locks it after three, for good after ten: docs/kylin.md
/// K30, K32), so no process sends these credentials again, whatever restarts it: only other
/// credentials, or an operator's `rollcall source retry-login`, lift it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginRefusal {
    pub at: DateTime<Utc>,
    /// The upstream's answer, as the source's error put it.
    pub message: String,
    pub credentials: Credentials,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionGuard {
    pub since: DateTime<Utc>,
    /// The users that vanished together, by key (their event `subject`).
    #[serde(deserialize_with = "keys_as_strings")]
    pub user_ids: Vec<String>,
    /// How many users were known when they vanished.
    pub known: usize,
}

/// How a sink is doing, as the sink last reported it; `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkHealth {
    #[default]
    Ok,
    /// Failing and retrying (broker down, endpoint erroring); nothing is skipped.
    Degraded,
    /// Stopped for good until an operator acts (e.g. a webhook endpoint answered 410 Gone).
    Disabled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    pub health: SinkHealth,
    pub since: Option<DateTime<Utc>>,
    /// Never holds a secret: sinks redact before reporting.
    pub last_error: Option<String>,
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

/// What the runner of this process is doing with one source; kept in memory only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceActivity {
    /// A poll of the source is running, since then.
    pub polling_since: Option<DateTime<Utc>>,
    /// How long the last cycle took, whether it succeeded, failed or passed its deadline.
    pub last_cycle_seconds: Option<f64>,
    /// When the next poll is due; it may then wait for a turn among `max_concurrent_polls`.
    pub next_poll: Option<DateTime<Utc>>,
}

/// An event a sink gave up on, kept with its bytes (so compaction of the log cannot lose it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub offset: u64,
    pub event: serde_json::Value,
    pub reason: String,
    pub attempts: u32,
    pub at: DateTime<Utc>,
}

/// One event as stored: its offset and its exact bytes, which every sink sends unchanged.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub offset: u64,
    pub bytes: sled::IVec,
}

impl StoredEvent {
    pub fn event(&self) -> Result<Event, StoreError> {
        serde_json::from_slice(&self.bytes).map_err(|e| StoreError::Corrupt {
            what: format!("event at offset {}", self.offset),
            detail: e.to_string(),
        })
    }
}

/// Guard records written before keys were generic hold numeric ids.
fn keys_as_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<serde_json::Value>::deserialize(d)?;
    Ok(values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .collect())
}

/// A user record ready to store: its key's bytes and its JSON.
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// What `members/<source>` holds of a record: its top-level `roles` and `groups` as stored,
/// whatever the source's shape of them (`{}` for a record that is not a JSON object).
fn members_of(record: &[u8]) -> Vec<u8> {
    #[derive(Deserialize, Serialize)]
    struct Members<'a> {
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        roles: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        groups: Option<&'a serde_json::value::RawValue>,
    }
    match serde_json::from_slice::<Members>(record) {
        Ok(m) => json_bytes(&m),
        Err(_) => b"{}".to_vec(),
    }
}

/// Schema 1 → 2: a `members/<source>` tree for each snapshot, written in one batch per source
/// (a crash leaves schema 1, and the next open builds it again), then the new version.
fn add_members(db: &sled::Db, meta: &sled::Tree) -> Result<(), StoreError> {
    for name in db.tree_names() {
        let Some(source) = name.strip_prefix(b"snapshot/") else {
            continue;
        };
        let snapshot = db.open_tree(&name)?;
        let members = db.open_tree([b"members/".as_slice(), source].concat())?;
        // What an interrupted migration left may be stale by now (an older rollcall may have
        // written the snapshot since): built again from nothing.
        members.clear()?;
        let mut batch = sled::Batch::default();
        for kv in snapshot.iter() {
            let (k, v) = kv?;
            batch.insert(k, members_of(&v));
        }
        members.apply_batch(batch)?;
    }
    meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

impl Record {
    pub fn of<U: Account>(user: &U) -> Record {
        Record {
            key: user.key().to_bytes(),
            value: json_bytes(user),
        }
    }
}

/// A cycle's outcome, ready to commit.
pub struct Commit<'a> {
    pub source: &'a str,
    /// Users that are new or differ from the stored snapshot (unchanged users are not rewritten).
    pub upserts: Vec<Record>,
    /// Keys (as stored) that left the snapshot.
    pub removals: Vec<Vec<u8>>,
    /// Events without offsets; the store assigns them in order.
    pub events: Vec<Event>,
    /// The source state as of this commit; `None` for a part of a cycle (its users, removals
    /// and their events): the state stays as the last complete cycle stored it, so a crash
    /// after this part re-reads what is left, and finds this part's users already as they are.
    pub state: Option<&'a SourceState>,
}

/// What the store holds of one source's users, read record by record in key order: a cycle
/// never loads them all (docs/performance.md, Memory). Reads see every commit made before.
pub struct Known<U> {
    source: String,
    tree: sled::Tree,
    members: sled::Tree,
    user: std::marker::PhantomData<fn() -> U>,
}

impl<U: Account> Known<U> {
    /// The stored JSON of a key, as written.
    pub fn raw(&self, key: &U::Key) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(key.to_bytes())?)
    }

    /// The record stored under `key`, which may (after a bug of an earlier version) be the
    /// record of another key.
    pub fn get(&self, key: &U::Key) -> Result<Option<U>, StoreError> {
        self.raw(key)?.map(|v| self.parse(key, &v)).transpose()
    }

    /// Parse a stored record (or the part of it `T` reads) of `key`.
    pub fn parse<T: serde::de::DeserializeOwned>(
        &self,
        key: &U::Key,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            what: format!("snapshot record of user {key} in source {}", self.source),
            detail: e.to_string(),
        })
    }

    /// How many users are stored (a walk over the keys).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Every stored key, in key order.
    pub fn keys(&self) -> impl Iterator<Item = Result<U::Key, StoreError>> + '_ {
        self.tree.iter().keys().map(|k| self.key(&k?))
    }

    /// Every stored record in key order, each parsed as `T` (a whole record, or only the
    /// fields a caller compares).
    pub fn records<T: serde::de::DeserializeOwned>(
        &self,
    ) -> impl Iterator<Item = Result<(U::Key, T), StoreError>> + '_ {
        self.walk(&self.tree)
    }

    /// Every stored user's `roles` and `groups` in key order, each parsed as `T`: what
    /// comparing membership reads, from a tree a tenth the size of the records.
    pub fn memberships<T: serde::de::DeserializeOwned>(
        &self,
    ) -> impl Iterator<Item = Result<(U::Key, T), StoreError>> + '_ {
        self.walk(&self.members)
    }

    fn walk<'a, T: serde::de::DeserializeOwned>(
        &'a self,
        tree: &'a sled::Tree,
    ) -> impl Iterator<Item = Result<(U::Key, T), StoreError>> + 'a {
        tree.iter().map(|kv| {
            let (k, v) = kv?;
            let key = self.key(&k)?;
            let value = self.parse(&key, &v)?;
            Ok((key, value))
        })
    }

    fn key(&self, bytes: &[u8]) -> Result<U::Key, StoreError> {
        U::Key::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
            what: format!("snapshot key in source {}", self.source),
            detail: format!("{} bytes that are no key of this source", bytes.len()),
        })
    }
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
        let schema = meta.get(KEY_SCHEMA).map_err(opened)?;
        let created = schema.is_none();
        match schema {
            None => {
                meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => match be_u64(&v, "schema version")? {
                SCHEMA_VERSION => {}
                1 => add_members(&db, &meta)?,
                found => {
                    return Err(StoreError::Schema {
                        path: path.to_owned(),
                        found,
                    })
                }
            },
        }
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
        let head = match meta.get(KEY_NEXT_OFFSET)? {
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

    fn snapshot_tree(&self, source: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("snapshot/{source}"))?)
    }

    fn members_tree(&self, source: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("members/{source}"))?)
    }

    /// The whole stored snapshot of a source, in memory: for tests and tools. A cycle reads
    /// it through [`Known`], record by record.
    pub fn snapshot<U: Account>(&self, source: &str) -> Result<Snapshot<U>, StoreError> {
        let known = self.known::<U>(source)?;
        let all = known.records::<U>().collect();
        all
    }

    /// What the store holds of a source's users, read on demand.
    pub fn known<U: Account>(&self, source: &str) -> Result<Known<U>, StoreError> {
        Ok(Known {
            source: source.to_owned(),
            tree: self.snapshot_tree(source)?,
            members: self.members_tree(source)?,
            user: std::marker::PhantomData,
        })
    }

    /// Keep the state of a cycle that found no change in memory only (see `unsaved`).
    pub fn keep_unsaved(&self, source: &str, state: SourceState) {
        self.unsaved_states().insert(source.to_owned(), state);
    }

    fn unsaved_states(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SourceState>> {
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change what this process's runner says it is doing with `source`.
    pub fn note_activity(&self, source: &str, note: impl FnOnce(&mut SourceActivity)) {
        let mut all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        note(all.entry(source.to_owned()).or_default());
    }

    /// What this process's runner is doing with `source`: all `None` in a process that does
    /// not poll it.
    pub fn activity(&self, source: &str) -> SourceActivity {
        let all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        all.get(source).cloned().unwrap_or_default()
    }

    /// The latest state of a source: as this process last left it, or as stored.
    pub fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        if let Some(state) = self.unsaved_states().get(source) {
            return Ok(state.clone());
        }
        Ok(self.stored_source_state(source)?.unwrap_or_default())
    }

    /// The source state as stored, without what cycles of this process kept unsaved.
    pub fn stored_source_state(&self, source: &str) -> Result<Option<SourceState>, StoreError> {
        self.meta
            .get(state_key(source))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("state of source {source}"),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// Remember a failed poll without touching the snapshot.
    pub fn record_error(&self, source: &str, message: String) -> Result<(), StoreError> {
        self.update_source_state(source, |state| {
            state.last_error = Some(ErrorRecord {
                at: Utc::now(),
                message,
            })
        })
    }

    /// Record that a source stopped itself, keeping when it first did.
    pub fn record_stop(&self, source: &str, message: String) -> Result<(), StoreError> {
        self.update_source_state(source, |state| {
            let at = state.stopped.as_ref().map_or_else(Utc::now, |s| s.at);
            state.last_error = Some(ErrorRecord {
                at: Utc::now(),
                message: message.clone(),
            });
            state.stopped = Some(ErrorRecord { at, message });
        })
    }

    /// The login of `source` the upstream refused, if one is remembered.
    pub fn login_refusal(&self, source: &str) -> Result<Option<LoginRefusal>, StoreError> {
        self.meta
            .get(refusal_key(source))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("refused login of source {source}"),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// Remember a refused login (durably: the next process must not try it again).
    pub fn record_login_refusal(
        &self,
        source: &str,
        refusal: &LoginRefusal,
    ) -> Result<(), StoreError> {
        self.writing(|| {
            self.meta.insert(refusal_key(source), json_bytes(refusal))?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// Forget a refused login and that the source stopped for it: the next poll logs in once.
    /// Returns whether one was remembered.
    pub fn clear_login_refusal(&self, source: &str) -> Result<bool, StoreError> {
        let had = self.login_refusal(source)?.is_some();
        if had {
            self.writing(|| {
                self.meta.remove(refusal_key(source))?;
                self.db.flush()?;
                Ok(())
            })?;
        }
        if self.source_state(source)?.stopped.is_some() {
            self.update_source_state(source, |state| state.stopped = None)?;
        }
        Ok(had)
    }

    fn update_source_state(
        &self,
        source: &str,
        update: impl FnOnce(&mut SourceState),
    ) -> Result<(), StoreError> {
        let mut state = self.source_state(source)?;
        update(&mut state);
        self.writing(|| {
            self.meta.insert(state_key(source), json_bytes(&state))?;
            self.db.flush()?;
            Ok(())
        })?;
        self.unsaved_states().remove(source);
        Ok(())
    }

    /// Commit a cycle atomically and durably; returns the offsets its events got.
    pub fn commit(&self, c: Commit<'_>) -> Result<Range<u64>, StoreError> {
        let range = self.writing(|| self.commit_durably(&c))?;
        if c.state.is_some() {
            self.unsaved_states().remove(c.source);
        }
        // Sources commit concurrently: the later of two commits may report first, and the
        // head must not step back to the earlier one's end. Every commit still wakes the sinks.
        self.head.send_modify(|head| *head = (*head).max(range.end));
        Ok(range)
    }

    fn commit_durably(&self, c: &Commit<'_>) -> Result<Range<u64>, StoreError> {
        // A poisoned gate only means an export panicked: commits go on.
        let _open = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.snapshot_tree(c.source)?;
        let members_tree = self.members_tree(c.source)?;
        let state = c.state.map(json_bytes);
        let members: Vec<Vec<u8>> = c.upserts.iter().map(|r| members_of(&r.value)).collect();
        let trees = (&self.events, &snapshot, &members_tree, &self.meta);
        let result = trees.transaction(|(events, snap, snap_members, meta)| {
            let first = match meta.get(KEY_NEXT_OFFSET)? {
                Some(v) => {
                    be_u64(&v, "next offset").map_err(ConflictableTransactionError::Abort)?
                }
                None => 0,
            };
            let mut next = first;
            for e in &c.events {
                let mut e = e.clone();
                e.sequence = Event::sequence_for(next);
                events.insert(&next.to_be_bytes(), json_bytes(&e))?;
                next += 1;
            }
            meta.insert(KEY_NEXT_OFFSET, &next.to_be_bytes())?;
            if let Some(state) = &state {
                meta.insert(state_key(c.source).as_slice(), state.as_slice())?;
            }
            for (r, m) in c.upserts.iter().zip(&members) {
                snap.insert(r.key.as_slice(), r.value.as_slice())?;
                snap_members.insert(r.key.as_slice(), m.as_slice())?;
            }
            for key in &c.removals {
                snap.remove(key.as_slice())?;
                snap_members.remove(key.as_slice())?;
            }
            Ok(first..next)
        });
        let range = result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        })?;
        // Durable before any sink may deliver these events: otherwise a crash could lose the
        // commit after delivery, and the next cycle would derive the same change under new ids.
        self.db.flush()?;
        Ok(range)
    }

    /// The offset the next event will get (= number of events ever appended).
    pub fn head(&self) -> Result<u64, StoreError> {
        match self.meta.get(KEY_NEXT_OFFSET)? {
            Some(v) => be_u64(&v, "next offset"),
            None => Ok(0),
        }
    }

    pub fn events_from(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.events
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok(StoredEvent {
                    offset: be_u64(&k, "event key")?,
                    bytes: v,
                })
            })
            .collect()
    }

    /// The oldest offset retention has kept: events below it were compacted away.
    pub fn log_start(&self) -> Result<u64, StoreError> {
        match self.meta.get(KEY_LOG_START)? {
            Some(v) => be_u64(&v, "log start"),
            None => Ok(0),
        }
    }

    /// Bytes of event JSON in the log (from the log start to the head).
    pub fn log_bytes(&self) -> Result<u64, StoreError> {
        let (mut bytes, mut counted) = self.counted_bytes()?;
        let head = self.head()?;
        if counted < head {
            for kv in self.events.range(counted.to_be_bytes()..) {
                let (k, v) = kv?;
                bytes += v.len() as u64;
                counted = be_u64(&k, "event key")? + 1;
            }
            self.writing(|| self.set_counted_bytes(bytes, counted))?;
        }
        Ok(bytes)
    }

    fn counted_bytes(&self) -> Result<(u64, u64), StoreError> {
        match self.meta.get(KEY_LOG_BYTES)? {
            Some(v) if v.len() == 16 => Ok((
                be_u64(&v[..8], "log bytes")?,
                be_u64(&v[8..], "log bytes offset")?,
            )),
            Some(v) => Err(StoreError::Corrupt {
                what: "log byte count".into(),
                detail: format!("expected 16 bytes, found {}", v.len()),
            }),
            // Never counted (a store from before retention): count from the log start.
            None => Ok((0, self.log_start()?)),
        }
    }

    fn set_counted_bytes(&self, bytes: u64, counted: u64) -> Result<(), StoreError> {
        let mut v = bytes.to_be_bytes().to_vec();
        v.extend_from_slice(&counted.to_be_bytes());
        self.meta.insert(KEY_LOG_BYTES, v)?;
        Ok(())
    }

    /// Remove every event below `below` (at most up to the head) and make `below` the log
    /// start; returns the offsets that are gone now. Never moves a cursor: choosing a bound
    /// that spares undelivered events is the caller's job (see `retention`).
    pub fn compact(&self, below: u64) -> Result<Range<u64>, StoreError> {
        let _no_export = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        self.writing(|| self.compact_below(below))
    }

    fn compact_below(&self, below: u64) -> Result<Range<u64>, StoreError> {
        let start = self.log_start()?;
        let below = below.min(self.head()?);
        if below <= start {
            return Ok(start..start);
        }
        // The new start is durable before any key goes: a crash half-way leaves keys below
        // the start (removed by the next compaction), never a start that claims too much.
        self.meta.insert(KEY_LOG_START, &below.to_be_bytes())?;
        self.db.flush()?;
        let (mut bytes, counted) = self.counted_bytes()?;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.events.range(..below.to_be_bytes()).take(COMPACT_BATCH) {
                let (k, v) = kv?;
                if be_u64(&k, "event key")? < counted {
                    bytes = bytes.saturating_sub(v.len() as u64);
                }
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.events.apply_batch(batch)?;
        }
        self.set_counted_bytes(bytes, counted.max(below))?;
        self.db.flush()?;
        Ok(start..below)
    }

    /// The next offset the sink has to deliver; a sink never seen starts at the beginning.
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        match self.cursors.get(sink)? {
            Some(v) => be_u64(&v, "cursor"),
            None => Ok(0),
        }
    }

    /// Durably move a sink's cursor.
    pub fn set_cursor(&self, sink: &str, next: u64) -> Result<(), StoreError> {
        self.writing(|| self.move_cursor(sink, next))
    }

    fn move_cursor(&self, sink: &str, next: u64) -> Result<(), StoreError> {
        let previous = self.cursors.insert(sink, &next.to_be_bytes())?;
        // Every sink moves its cursor here, so this is the one place that sees all deliveries.
        let previous = previous
            .map(|v| be_u64(&v, "cursor"))
            .transpose()?
            .unwrap_or(0);
        metrics::counter!("rollcall_events_delivered_total", "sink" => sink.to_owned())
            .increment(next.saturating_sub(previous));
        self.db.flush()?;
        Ok(())
    }

    /// Events retention compacted away before the sink received them, over the store's life
    /// (see [`Store::skip_compacted`]).
    pub fn skipped(&self, sink: &str) -> Result<u64, StoreError> {
        match self.meta.get(skipped_key(sink))? {
            Some(v) => be_u64(&v, "skipped events"),
            None => Ok(0),
        }
    }

    /// Move a sink's cursor from `from` to `to` over events retention compacted away before
    /// the sink received them, adding them to its skipped count in the same durable write;
    /// returns the count now. They are not counted as delivered.
    pub fn skip_compacted(&self, sink: &str, from: u64, to: u64) -> Result<u64, StoreError> {
        self.writing(|| {
            let key = skipped_key(sink);
            let total = (&self.cursors, &self.meta)
                .transaction(|(cursors, meta)| {
                    let before = match meta.get(&key)? {
                        Some(v) => be_u64(&v, "skipped events")
                            .map_err(ConflictableTransactionError::Abort)?,
                        None => 0,
                    };
                    let total = before.saturating_add(to.saturating_sub(from));
                    cursors.insert(sink.as_bytes(), &to.to_be_bytes())?;
                    meta.insert(key.as_slice(), &total.to_be_bytes())?;
                    Ok(total)
                })
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => StoreError::Sled(e),
                })?;
            self.db.flush()?;
            Ok(total)
        })
    }

    pub fn sink_state(&self, sink: &str) -> Result<SinkState, StoreError> {
        match self.meta.get(format!("sink/{sink}"))? {
            None => Ok(SinkState::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: format!("state of sink {sink}"),
                detail: e.to_string(),
            }),
        }
    }

    /// Record a sink's health; `since` is kept while the health does not change.
    pub fn set_sink_state(
        &self,
        sink: &str,
        health: SinkHealth,
        last_error: Option<String>,
    ) -> Result<(), StoreError> {
        let old = self.sink_state(sink)?;
        let since = if old.health == health && old.since.is_some() {
            old.since
        } else {
            Some(Utc::now())
        };
        if health == SinkHealth::Degraded {
            metrics::counter!("rollcall_delivery_failures_total", "sink" => sink.to_owned())
                .increment(1);
        }
        let state = SinkState {
            health,
            since,
            last_error,
        };
        if state != old {
            self.writing(|| {
                self.meta
                    .insert(format!("sink/{sink}"), json_bytes(&state))?;
                self.db.flush()?;
                Ok(())
            })?;
        }
        Ok(())
    }

    fn dlq_tree(&self, sink: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(dlq_name(sink))?)
    }

    /// A sink's dead-letter tree for reading: `None` when it has none, since opening a tree
    /// that does not exist creates it, a write that a failing store refuses.
    fn dlq_tree_if_any(&self, sink: &str) -> Result<Option<sled::Tree>, StoreError> {
        let name = dlq_name(sink);
        if !self.db.tree_names().iter().any(|t| t == name.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(self.db.open_tree(name)?))
    }

    /// Park an event a sink gave up on. Durable when this returns.
    pub fn dead_letter(&self, sink: &str, letter: &DeadLetter) -> Result<(), StoreError> {
        metrics::counter!("rollcall_events_dead_lettered_total", "sink" => sink.to_owned())
            .increment(1);
        self.writing(|| {
            self.dlq_tree(sink)?
                .insert(letter.offset.to_be_bytes(), json_bytes(letter))?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// A sink's dead letters, in offset order.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let Some(tree) = self.dlq_tree_if_any(sink)? else {
            return Ok(Vec::new());
        };
        tree.iter()
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("dead letter of sink {sink}"),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    pub fn dead_letter_count(&self, sink: &str) -> Result<usize, StoreError> {
        Ok(self.dlq_tree_if_any(sink)?.map_or(0, |t| t.len()))
    }

    /// Remove one dead letter (after a successful retry, or a purge).
    pub fn remove_dead_letter(&self, sink: &str, offset: u64) -> Result<bool, StoreError> {
        self.writing(|| {
            let removed = self.dlq_tree(sink)?.remove(offset.to_be_bytes())?.is_some();
            self.db.flush()?;
            Ok(removed)
        })
    }

    /// Make everything written so far durable.
    /// Write every tree of the store (log, snapshots, source states, cursors, sink states,
    /// dead letters) as JSON lines: a line naming each tree, then one line per entry, keys and
    /// values in base64 as stored. The copy is consistent even under `run`, without holding
    /// commits for the whole of it: no commit lands while every tree but the log is copied,
    /// and the log is copied afterwards up to the head it had then (it only grows at the end,
    /// and compaction waits for the export). It streams: what it holds at once is one entry.
    /// Returns the entries written. sled's own `export` does the reading.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let write = |out: &mut dyn std::io::Write, line: serde_json::Value| {
            serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| StoreError::Export { source })
        };
        let _no_compaction = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        write(
            out,
            serde_json::json!({"rollcall_store_export": 1, "store_id": self.id, "schema": SCHEMA_VERSION}),
        )?;
        let mut entries = 0;
        let (log_kind, head) = {
            let _closed = self.gate.write().unwrap_or_else(|e| e.into_inner());
            let mut log_kind = None;
            for (kind, name, items) in self.db.export() {
                if *name == *self.events.name() {
                    log_kind = Some(kind);
                    continue;
                }
                write(
                    out,
                    serde_json::json!({"tree": b64(&name), "type": b64(&kind)}),
                )?;
                for item in items {
                    let kv: Vec<String> = item.iter().map(|b| b64(b)).collect();
                    write(out, serde_json::json!({"kv": kv}))?;
                    entries += 1;
                }
            }
            (log_kind, self.head()?)
        };
        if let Some(kind) = log_kind {
            write(
                out,
                serde_json::json!({"tree": b64(&self.events.name()), "type": b64(&kind)}),
            )?;
            for kv in self.events.range(..head.to_be_bytes()) {
                let (k, v) = kv?;
                write(out, serde_json::json!({"kv": [b64(&k), b64(&v)]}))?;
                entries += 1;
            }
        }
        Ok(entries)
    }

    /// Create the store at `path` from an [`export`](Store::export). The path must not hold a
    /// store already: an import never merges. Returns the entries read.
    pub fn import(path: &Path, input: impl std::io::BufRead) -> Result<u64, StoreError> {
        use base64::Engine;
        if path.exists() {
            return Err(StoreError::ImportTarget {
                path: path.to_owned(),
            });
        }
        let bad = |line: usize, what: String| StoreError::ImportFile { line, what };
        let decode = |line: usize, v: &serde_json::Value| {
            v.as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(|| bad(line, "a key or value is not base64".into()))
        };
        let db = sled::Config::new().path(path).open()?;
        let mut tree: Option<sled::Tree> = None;
        let mut entries = 0;
        for (i, line) in input.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|source| StoreError::Export { source })?;
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| bad(n, format!("not JSON: {e}")))?;
            if n == 1 {
                if v["rollcall_store_export"] != 1 {
                    return Err(bad(
                        n,
                        "not the first line of a `rollcall store export`".into(),
                    ));
                }
                continue;
            }
            if let Some(name) = v.get("tree") {
                tree = Some(db.open_tree(decode(n, name)?)?);
                continue;
            }
            let (Some(t), Some(kv)) = (&tree, v["kv"].as_array()) else {
                return Err(bad(
                    n,
                    "an entry before any tree, or neither a tree nor an entry".into(),
                ));
            };
            let [k, v] = kv.as_slice() else {
                return Err(bad(n, "an entry is not [key, value]".into()));
            };
            t.insert(decode(n, k)?, decode(n, v)?)?;
            entries += 1;
        }
        db.flush()?;
        Ok(entries)
    }

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

fn dlq_name(sink: &str) -> String {
    format!("dlq/{sink}")
}

/// Beside the sink's state in `meta`: how many events it skipped (see [`Store::skipped`]).
fn skipped_key(sink: &str) -> Vec<u8> {
    format!("skipped/{sink}").into_bytes()
}

fn state_key(source: &str) -> Vec<u8> {
    format!("source/{source}").into_bytes()
}

fn refusal_key(source: &str) -> Vec<u8> {
    format!("login_refused/{source}").into_bytes()
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
    use super::*;
    use crate::event::EventType;
    use crate::user::{FieldChange, Member};

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
