//! One cycle of one source: observe, compare each user read with its stored record by key,
//! commit what changed in bounded chunks, then the confirmed deletions (after the mass-delete
//! guard saw them all), then the events the source reads natively.
//!
//! Owns what makes a cycle's memory independent of the number of users (docs/performance.md,
//! Memory): no snapshot is ever loaded whole. The source hands users over a page at a time
//! ([`Fresh`]); each is compared with the one record stored under its key, and changes are
//! committed with their events in chunks of at most [`CHUNK`] records. A crash between two
//! chunks loses nothing and derives nothing twice: every committed chunk holds its users as
//! read, so the cycle run again finds them unchanged and goes on from where it stopped.
//! A full reconcile ends with a `sync.completed`, in its last commit; a cycle that changed
//! nothing writes nothing else. Also owns the mass-delete guard and stamping derived events
//! with ids and times. Must never talk to an upstream or a sink.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::diff::{self, DiffOptions};
use crate::event::{
    source_uri, Derived, Event, EventType, SyncCompleted, DATA_CONTENT_TYPE, SPEC_VERSION,
    SYNC_SUBJECT,
};
use crate::source::{read_cursor, stored_cursor, Fresh, Mode, Source, SourceError};
use crate::store::{
    Commit, DeletionGuard, Known, LoginRefusal, Record, SourceState, Store, StoreError,
};
use crate::user::{Account, Key};

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

/// Why a cycle failed: its source, or the store.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("source '{source_name}'")]
    Source {
        source_name: String,
        #[source]
        error: SourceError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses to poll with credentials the upstream refused before, in this process or an earlier
/// one, without sending a request: each refused login counts towards locking the account.
/// Other credentials (the password was changed since) are tried.
fn check_login<S: Source>(store: &Store, source: &S) -> Result<(), CycleError> {
    let name = source.name();
    match store.login_refusal(name, source.credentials())? {
        Some(refusal) => Err(CycleError::Source {
            source_name: name.to_owned(),
            error: SourceError::RefusedBefore {
                name: name.to_owned(),
                refusal,
            },
        }),
        None => Ok(()),
    }
}

/// Changed records (or events) per commit at most: what a cycle holds in memory before it
/// writes, and what a crash makes it read again.
const CHUNK: usize = 2_000;

/// How stale the stored source state may grow while cycles change nothing: within it, an
/// idle cycle writes nothing and this process keeps the poll time and cursor in memory
/// (`status`, `/readyz` and its next cycle see them); past it, they are written, so that a
/// `status` of a stopped rollcall is right to the minute.
const POLL_TIME_WRITTEN_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// One cycle of `source`; its events name `shard`, the process's, in their `source`.
pub(crate) async fn poll_source<S: Source>(
    store: &Store,
    source: &mut S,
    opts: CycleOptions,
    shard: Option<&str>,
) -> Result<SourceReport, CycleError> {
    let name = source.name().to_owned();
    let schedule = source.schedule();
    let started = std::time::Instant::now();
    let now = Utc::now();
    check_login(store, source)?;
    let stored_state = store.stored_source_state(&name)?;
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
    let known = store.known::<S::User>(&name)?;
    if full {
        heal(store, &known, &name)?;
    }
    // Counted afresh at each full read, so that no drift outlives one.
    let known_before = if full { known.len() } else { state.users_known };
    let mut apply = Apply {
        store,
        known: &known,
        source: &name,
        stamp: Stamp {
            uri: source_uri(&source.uri(), shard),
            now,
        },
        initialized: state.initialized,
        emit_initial: source.emit_initial_snapshot(),
        opts: DiffOptions {
            service_account: source.service_account().map(str::to_owned),
        },
        upserts: BTreeMap::new(),
        events: Vec::new(),
        added: 0,
        seen: 0,
        written: 0,
        derived: 0,
        offsets: None,
    };
    let observed = source.observe(&known, &mut cursor, mode, &mut apply).await;
    let observation = match observed {
        Ok(observation) => observation,
        Err(error) => {
            if error.refused_login() {
                store.record_login_refusal(
                    &name,
                    &LoginRefusal {
                        at: Utc::now(),
                        message: error.to_string(),
                        credentials: source.credentials().clone(),
                    },
                )?;
            }
            return Err(CycleError::Source {
                source_name: name,
                error,
            });
        }
    };

    let mut gone = observation.gone;
    let held = guard_deletions(
        &mut gone,
        known_before,
        &mut state,
        mode,
        opts.confirm_deletes,
        now,
    );
    let mut removals = Vec::new();
    for key in gone {
        let Some(before) = apply.current(&key)? else {
            continue;
        };
        apply.upserts.remove(&key.to_bytes());
        // A first cycle that emits the initial snapshot has told of every user it holds (this
        // cycle's `user.observed`, or an earlier attempt's committed with its record): one it
        // then confirms gone (a read by pages repeated while they shifted) is told gone too.
        if apply.initialized || apply.emit_initial {
            let mut derived = Vec::new();
            diff::change(Some(&before), None, &apply.opts, &mut derived);
            apply.push(Some(key.to_bytes()), derived);
        }
        removals.push(key.to_bytes());
    }

    state.initialized = true;
    state.last_poll = Some(now);
    state.last_error = None;
    state.stopped = None;
    if full {
        state.last_full_reconcile = Some(now);
    }
    // A full read ends with its marker, committed with its last user events, so a consumer
    // that has it holds every change the read found (docs/events.md, Completeness).
    let sync = full && due(state.last_sync, schedule.sync_every, now);
    if sync {
        state.last_sync = Some(now);
    }
    state.users_known = (known_before + apply.added).saturating_sub(removals.len());
    state.cursor = stored_cursor(&cursor);
    let users_written = apply.written + apply.upserts.len() + removals.len();
    let changed = !apply.upserts.is_empty() || !apply.events.is_empty() || !removals.is_empty();
    if changed || sync || state_is_due(stored_state.as_ref(), &state, now) {
        let marker = sync.then(|| {
            apply.sync_completed(SyncCompleted {
                mode: "full".into(),
                started: now,
                finished: Utc::now(),
                users_seen: apply.seen,
                users_known: state.users_known,
                events: apply.derived,
                held_deletions: held,
            })
        });
        apply.commit_then(removals, Some(&state), marker)?;
    } else {
        store.keep_unsaved(&name, state.clone());
    }
    // Native events (the action log) come after the user events are committed, in a commit
    // of their own: however long the source takes to read them, the sinks already have the
    // user events. A crash between the two commits re-reads them from the stored cursor.
    let native = source.native_events(&mut cursor, now).await;
    let read = stored_cursor(&cursor);
    if !native.is_empty() {
        state.cursor = read;
        apply.push(None, native);
        apply.commit(Vec::new(), Some(&state))?;
    } else if read != state.cursor {
        state.cursor = read;
        if state_is_due(stored_state.as_ref(), &state, now) {
            apply.commit(Vec::new(), Some(&state))?;
        } else {
            store.keep_unsaved(&name, state.clone());
        }
    }
    let report = SourceReport {
        source: name.clone(),
        full,
        users: state.users_known,
        events: apply.derived,
        users_written,
        held_deletions: held,
    };
    // A quiet incremental poll every few seconds would drown the events in the log.
    macro_rules! poll_complete {
        ($level:ident) => {
            $level!(
                full,
                users = report.users,
                events = report.events,
                users_written = report.users_written,
                offsets = ?apply.offsets,
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

fn due(last: Option<DateTime<Utc>>, every: std::time::Duration, now: DateTime<Utc>) -> bool {
    last.is_none_or(|t| {
        now - t >= chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
    })
}

/// Whether a cycle that changed no user must still write the source state: anything in it
/// other than the poll time and the source's cursor changed, or the stored poll time has
/// grown stale. The cursor holds lower bounds of the next read (high-water marks, how far a
/// log was read): a crash that loses a newer one makes the next cycle read a little more, and
/// find nothing new in it.
fn state_is_due(stored: Option<&SourceState>, now_state: &SourceState, now: DateTime<Utc>) -> bool {
    let Some(stored) = stored else {
        return true;
    };
    let same = SourceState {
        last_poll: stored.last_poll,
        cursor: stored.cursor.clone(),
        ..now_state.clone()
    };
    same != *stored
        || stored
            .last_poll
            .is_none_or(|t| now - t >= POLL_TIME_WRITTEN_EVERY)
}

/// Gives derived events their id, source and time.
struct Stamp {
    uri: String,
    now: DateTime<Utc>,
}

impl Stamp {
    fn event(&self, d: Derived) -> Event {
        Event {
            specversion: SPEC_VERSION.into(),
            id: uuid::Uuid::now_v7(),
            source: self.uri.clone(),
            event_type: d.event_type,
            subject: d.subject.unwrap_or_else(|| "anonymous".to_owned()),
            time: self.now,
            datacontenttype: DATA_CONTENT_TYPE.into(),
            dataschema: Some(d.event_type.dataschema()),
            sequence: String::new(),
            data: d.data,
        }
    }
}

/// Compares the users a source hands over with their stored records, and commits what
/// changed with its events, a chunk at a time.
struct Apply<'a, U: Account> {
    store: &'a Store,
    known: &'a Known<U>,
    source: &'a str,
    stamp: Stamp,
    initialized: bool,
    emit_initial: bool,
    opts: DiffOptions,
    /// Records read but not committed yet, by key bytes: a user handed over twice in one
    /// cycle is compared with what the cycle already found, not with the older stored record.
    upserts: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Events not committed yet, with the key bytes of their user (`None` for the source's
    /// own events).
    events: Vec<(Option<Vec<u8>>, Derived)>,
    /// Users stored for the first time by this cycle.
    added: usize,
    /// Users the source handed over in this cycle.
    seen: usize,
    /// Records written by the chunks committed so far.
    written: usize,
    /// Events derived by the cycle.
    derived: usize,
    /// Offsets the cycle's events got.
    offsets: Option<Range<u64>>,
}

impl<U: Account> Fresh<U> for Apply<'_, U> {
    fn users(&mut self, users: Vec<U>) -> Result<(), StoreError> {
        self.seen += users.len();
        for user in users {
            self.one(user)?;
        }
        if self.upserts.len() >= CHUNK || self.events.len() >= CHUNK {
            self.commit(Vec::new(), None)?;
        }
        Ok(())
    }
}

impl<U: Account> Apply<'_, U> {
    /// What the cycle knows of `key` now: read this cycle, or as stored. A stored record of
    /// another key (an earlier version trusted a by-id answer for another id) is not this
    /// user's: [`heal`] moves it at the next full reconcile.
    fn current(&self, key: &U::Key) -> Result<Option<U>, StoreError> {
        match self.current_bytes(key)? {
            Some(bytes) => self.record_of(key, &bytes),
            None => Ok(None),
        }
    }

    /// The bytes of what the cycle knows of `key`: read this cycle, or as stored.
    fn current_bytes(&self, key: &U::Key) -> Result<Option<sled::IVec>, StoreError> {
        match self.upserts.get(&key.to_bytes()) {
            Some(pending) => Ok(Some(pending.as_slice().into())),
            None => self.known.raw(key),
        }
    }

    /// Parse the bytes known of `key`: `None` when they are the record of another key.
    fn record_of(&self, key: &U::Key, bytes: &[u8]) -> Result<Option<U>, StoreError> {
        let record: U = self.known.parse(key, bytes)?;
        Ok((record.key() == *key).then_some(record))
    }

    fn one(&mut self, user: U) -> Result<(), StoreError> {
        let key = user.key();
        let key_bytes = key.to_bytes();
        let bytes = serde_json::to_vec(&user).map_err(|e| StoreError::Corrupt {
            what: format!("record of user {key} read from source {}", self.source),
            detail: e.to_string(),
        })?;
        let known = self.current_bytes(&key)?;
        // The same bytes are the same record: most users of a full read end here, unparsed.
        if known.as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        let before = match &known {
            Some(known) => self.record_of(&key, known)?,
            None => None,
        };
        let mut derived = Vec::new();
        // A first cycle that emits the initial snapshot has told of every user it holds: one
        // it reads again (pages read again while they shifted) and finds changed is told what
        // changed, as a later cycle would tell it.
        if self.initialized || (self.emit_initial && before.is_some()) {
            diff::change(before.as_ref(), Some(&user), &self.opts, &mut derived);
        } else if self.emit_initial {
            derived.push(diff::observed(&user));
        }
        // The service account's own logins derive no event; storing them would make every
        // cycle of a process that logs in write (docs/performance.md, Idle cycles).
        let own = self.opts.service_account.as_deref() == Some(user.username());
        if own && derived.is_empty() && before.is_some() {
            return Ok(());
        }
        if before.is_none() && !self.upserts.contains_key(&key_bytes) {
            self.added += 1;
        }
        self.push(Some(key_bytes.clone()), derived);
        self.upserts.insert(key_bytes, bytes);
        Ok(())
    }

    fn push(&mut self, key: Option<Vec<u8>>, derived: Vec<Derived>) {
        for d in derived {
            metrics::counter!("rollcall_events_derived_total", "source" => self.source.to_owned(), "type" => d.event_type.as_str())
                .increment(1);
            self.derived += 1;
            self.events.push((key.clone(), d));
        }
    }

    /// The pending events, stamped, by user in key order (each user's in the order derived):
    /// within a commit, events come out as a diff of whole snapshots would give them, whatever
    /// order the pages and the confirmed deletions came in.
    fn take_events(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.events);
        events.sort_by(|a, b| a.0.cmp(&b.0));
        events
            .into_iter()
            .map(|(_, d)| self.stamp.event(d))
            .collect()
    }

    fn note(&mut self, range: Range<u64>) {
        self.offsets = Some(match self.offsets.take() {
            Some(r) => r.start..range.end,
            None => range,
        });
    }

    /// Commit the records and events found so far and `removals`: with the cycle's `state` at
    /// its end, without (the state as it was) for a part.
    fn commit(
        &mut self,
        removals: Vec<Vec<u8>>,
        state: Option<&SourceState>,
    ) -> Result<(), StoreError> {
        self.commit_then(removals, state, None)
    }

    /// [`Apply::commit`], with `last` after the events found so far.
    fn commit_then(
        &mut self,
        removals: Vec<Vec<u8>>,
        state: Option<&SourceState>,
        last: Option<Event>,
    ) -> Result<(), StoreError> {
        let mut events = self.take_events();
        events.extend(last);
        let range = self.store.commit(Commit {
            source: self.source,
            upserts: self.take_upserts(),
            removals,
            events,
            state,
        })?;
        self.note(range);
        Ok(())
    }

    /// The `sync.completed` that ends a full read, at the time it ends.
    fn sync_completed(&self, sync: SyncCompleted) -> Event {
        metrics::counter!("rollcall_events_derived_total", "source" => self.source.to_owned(), "type" => EventType::SyncCompleted.as_str())
            .increment(1);
        let finished = sync.finished;
        let mut event = self.stamp.event(Derived {
            event_type: EventType::SyncCompleted,
            subject: Some(SYNC_SUBJECT.to_owned()),
            data: serde_json::to_value(sync).unwrap_or_default(),
        });
        event.time = finished;
        event
    }

    fn take_upserts(&mut self) -> Vec<Record> {
        let upserts = std::mem::take(&mut self.upserts);
        self.written += upserts.len();
        upserts
            .into_iter()
            .map(|(key, value)| Record { key, value })
            .collect()
    }
}

/// Move each stored record that sits under another user's key (a by-id answer for another id,
/// trusted by an earlier version) to its own key, unless a record already holds that key
/// rightly; the misplaced copy goes. The events so far told consumers of the record's own
/// user, so the diff then runs from what they were told. One streaming pass, at each full
/// reconcile; it holds only the misplaced records.
fn heal<U: Account>(store: &Store, known: &Known<U>, source: &str) -> Result<(), StoreError> {
    let mut moved: Vec<(U::Key, U)> = Vec::new();
    for kv in known.records::<U>() {
        let (key, user) = kv?;
        if user.key() != key {
            moved.push((key, user));
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    let leaving: HashSet<Vec<u8>> = moved.iter().map(|(k, _)| k.to_bytes()).collect();
    for (key, user) in moved {
        warn!(stored_under = %key, record_of = %user.key(), "a stored record sits under another user's key; moving it to its own");
        let own = user.key().to_bytes();
        let own_taken = !leaving.contains(&own) && known.raw(&user.key())?.is_some();
        if !own_taken {
            upserts.push(Record::of(&user));
        }
        removals.push(key.to_bytes());
    }
    store.commit(Commit {
        source,
        upserts,
        removals,
        events: Vec::new(),
        state: None,
    })?;
    Ok(())
}

/// The mass-delete guard: when more than max(5, 10%) of the `known` users are confirmed gone
/// at once, hold the deletions back (empty `gone`) until a later full reconcile sees the same
/// users still gone, or the operator confirms. Returns how many deletions are held.
fn guard_deletions<K: Key>(
    gone: &mut Vec<K>,
    known: usize,
    state: &mut SourceState,
    mode: Mode,
    confirmed: bool,
    now: DateTime<Utc>,
) -> usize {
    let limit = (known / 10).max(5);
    if gone.len() <= limit || confirmed {
        if let Some(g) = state.deletion_guard.take() {
            info!(held = g.user_ids.len(), "mass-delete guard released");
        }
        return 0;
    }
    let names: Vec<String> = gone.iter().map(|k| k.to_string()).collect();
    let agrees = mode == Mode::Full
        && state.deletion_guard.as_ref().is_some_and(|g| {
            let now_gone: HashSet<&String> = names.iter().collect();
            g.since < now && g.user_ids.iter().all(|id| now_gone.contains(id))
        });
    if agrees {
        warn!(
            deleted = gone.len(),
            "a second full reconcile agrees with the mass-delete guard; emitting the deletions"
        );
        state.deletion_guard = None;
        return 0;
    }
    error!(
        vanished = gone.len(),
        known,
        "mass-delete guard: too many users vanished at once; no deletion emitted. A later full reconcile that agrees releases them, or run `rollcall once --confirm-deletes`"
    );
    let since = state.deletion_guard.as_ref().map_or(now, |g| g.since);
    let held = gone.len();
    gone.clear();
    state.deletion_guard = Some(DeletionGuard {
        since,
        user_ids: names,
        known,
    });
    held
}
