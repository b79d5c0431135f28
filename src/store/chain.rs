//! The hash chain over the event log, as the store keeps it: every event appended gets its
//! link in the same transaction that appends it, and `meta` holds the chain's head
//! (`chain_head`: offset, hash and id of the last chained event), where it starts (`chain_start`:
//! its first offset still in the log and the hash that one follows, which compaction moves), and
//! when it was last signed (`checkpoint`).
//!
//! Owns appending events to the log (offsets, `sequence`, the link) and writing signed
//! checkpoints into it, every `checkpoint_every` events or `checkpoint_interval`. It never
//! decides what an event says, and never rewrites an event once appended. A store written
//! before it chained (schema 2 and older) starts its chain at its next event, from
//! [`GENESIS`]: the events before stay unchained.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use uuid::Uuid;

use super::{be_u64, json_bytes, Store, StoreError};
use crate::chain::checkpoint::{self, Signer};
use crate::chain::verify::Held;
use crate::chain::{self, Hash, GENESIS};
use crate::event::{Event, EventType, DATA_CONTENT_TYPE, SPEC_VERSION};

/// The last chained event: offset (u64 BE), hash (32 bytes), id (16 bytes).
const KEY_CHAIN_HEAD: &[u8] = b"chain_head";
/// The first chained offset still in the log (u64 BE) and the hash it follows (32 bytes).
pub(super) const KEY_CHAIN_START: &[u8] = b"chain_start";
/// The last checkpoint and the events appended since (JSON, [`Signing`]).
const KEY_CHECKPOINT: &[u8] = b"checkpoint";

/// Signed checkpoints: who signs, and how often.
pub struct Checkpoints {
    pub signer: Signer,
    /// A checkpoint after this many events since the last one.
    pub every: u64,
    /// A checkpoint once this long has passed since the last one, if any event came since.
    pub interval: Duration,
    /// The config's `shard`, which each checkpoint's `source` names as every event's does, so
    /// that a topic shared by shards can be verified shard by shard.
    pub shard: Option<String>,
}

/// The chain's last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub offset: u64,
    pub hash: Hash,
    pub id: Uuid,
}

/// When the chain was last signed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Signing {
    /// The offset of the last checkpoint event.
    last: Option<u64>,
    at: Option<DateTime<Utc>>,
    /// Events appended since, not counting checkpoints.
    unsigned: u64,
}

type Tx<T> = Result<T, ConflictableTransactionError<StoreError>>;

pub(super) fn abort<T>(r: Result<T, StoreError>) -> Tx<T> {
    r.map_err(ConflictableTransactionError::Abort)
}

/// Appends events to the log within one transaction, continuing the chain.
pub(super) struct Appender<'a> {
    store: &'a Store,
    now: DateTime<Utc>,
    head: Option<ChainHead>,
    start: Option<(u64, Hash)>,
    /// The chain began before this transaction.
    started_before: bool,
    signing: Signing,
}

impl<'a> Appender<'a> {
    pub(super) fn read(store: &'a Store, meta: &TransactionalTree, now: DateTime<Utc>) -> Tx<Self> {
        let head = abort(
            meta.get(KEY_CHAIN_HEAD)?
                .map(|v| decode_head(&v))
                .transpose(),
        )?;
        let start = abort(
            meta.get(KEY_CHAIN_START)?
                .map(|v| decode_start(&v))
                .transpose(),
        )?;
        let signing = abort(
            meta.get(KEY_CHECKPOINT)?
                .map(|v| decode_signing(&v))
                .transpose(),
        )?;
        Ok(Appender {
            store,
            now,
            head,
            start,
            started_before: start.is_some(),
            signing: signing.unwrap_or_default(),
        })
    }

    /// Append `event` at `offset` (its `sequence` that offset's), and a checkpoint after it when
    /// `checkpoint_every` events are unsigned; returns the next offset.
    pub(super) fn append(
        &mut self,
        events: &TransactionalTree,
        offset: u64,
        event: &Event,
    ) -> Tx<u64> {
        self.put(events, offset, event)?;
        self.signing.unsigned += 1;
        let store = self.store;
        match store.checkpoints.get() {
            Some(c) if self.signing.unsigned >= c.every => self.checkpoint(events, offset + 1, c),
            _ => Ok(offset + 1),
        }
    }

    /// After the last event of a transaction: a checkpoint if `checkpoint_interval` has passed
    /// with events unsigned; then the chain's state goes to `meta`. Returns the next offset.
    pub(super) fn finish(
        mut self,
        events: &TransactionalTree,
        meta: &TransactionalTree,
        next: u64,
    ) -> Tx<u64> {
        let store = self.store;
        let next = match store.checkpoints.get() {
            Some(c) if self.due_by_time(c) => self.checkpoint(events, next, c)?,
            _ => next,
        };
        if let Some(h) = &self.head {
            let mut v = h.offset.to_be_bytes().to_vec();
            v.extend_from_slice(&h.hash);
            v.extend_from_slice(h.id.as_bytes());
            meta.insert(KEY_CHAIN_HEAD, v)?;
        }
        // Written only when the chain begins here: compaction moves it afterwards, outside
        // any commit, and a commit writing back what it read would undo that.
        if let (Some(start), false) = (self.start, self.started_before) {
            meta.insert(KEY_CHAIN_START, encode_start(start))?;
        }
        meta.insert(KEY_CHECKPOINT, json_bytes(&self.signing))?;
        Ok(next)
    }

    fn due_by_time(&self, c: &Checkpoints) -> bool {
        self.signing.unsigned > 0
            && self.signing.at.is_none_or(|at| {
                (self.now - at)
                    .to_std()
                    .is_ok_and(|passed| passed >= c.interval)
            })
    }

    fn put(&mut self, events: &TransactionalTree, offset: u64, event: &Event) -> Tx<()> {
        if !self.store.chaining.load(Relaxed) {
            events.insert(&offset.to_be_bytes(), chain::unchained(event, offset))?;
            return Ok(());
        }
        // An OCSF copy leaves out the events rollcall writes itself (checkpoints, the end of a
        // full reconcile): each gets an id derived from the event before it, so the record
        // after it tells it from a record dropped (docs/integrity.md, OCSF copies).
        let derived;
        let event = match self.head {
            Some(h) if !event.event_type.from_source() => {
                derived = Event {
                    id: checkpoint::id(self.store.id(), h.offset, &h.hash, event.time),
                    ..event.clone()
                };
                &derived
            }
            _ => event,
        };
        let (prev, prev_id) = self.head.map_or((GENESIS, None), |h| (h.hash, Some(h.id)));
        let (link, bytes) = chain::chain(event, offset, &prev, prev_id);
        events.insert(&offset.to_be_bytes(), bytes)?;
        self.start.get_or_insert((offset, prev));
        self.head = Some(ChainHead {
            offset,
            hash: link.hash,
            id: event.id,
        });
        Ok(())
    }

    /// Append a checkpoint signing the head at `offset`; returns the next offset.
    fn checkpoint(&mut self, events: &TransactionalTree, offset: u64, c: &Checkpoints) -> Tx<u64> {
        let Some(head) = self.head else {
            return Ok(offset);
        };
        let data = c.signer.sign(self.store.id(), head.offset, &head.hash);
        let event = Event {
            specversion: SPEC_VERSION.into(),
            // Derived by `put` from the head it signs, like every event rollcall writes itself.
            id: Uuid::nil(),
            source: crate::event::source_uri(
                &format!("rollcall://{}", self.store.id()),
                c.shard.as_deref(),
            ),
            event_type: EventType::Checkpoint,
            subject: "chain".into(),
            time: self.now,
            datacontenttype: DATA_CONTENT_TYPE.into(),
            dataschema: Some(EventType::Checkpoint.dataschema()),
            sequence: String::new(),
            data: serde_json::to_value(data).expect("a checkpoint serialises"),
        };
        self.put(events, offset, &event)?;
        self.signing = Signing {
            last: Some(offset),
            at: Some(self.now),
            unsigned: 0,
        };
        Ok(offset + 1)
    }
}

impl Store {
    /// Sign checkpoints with `c` from now on, in every handle of this open store (`run` and
    /// `once` set it from `[store] signing_key_file`; a second call changes nothing).
    pub fn sign_checkpoints(&self, c: Checkpoints) {
        let _ = self.checkpoints.set(Arc::new(c));
    }

    /// Append events without their chain attributes, as a store before the chain did: only
    /// for the benchmark's baseline and the tests of stores written before it. A log written
    /// so is not verifiable from the first such event on.
    #[doc(hidden)]
    pub fn append_unchained(&self) {
        self.chaining.store(false, Relaxed);
    }

    /// The chain's last event; `None` before the first chained event.
    pub fn chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.meta
            .get(KEY_CHAIN_HEAD)?
            .map(|v| decode_head(&v))
            .transpose()
    }

    /// The first chained offset still in the log, and the hash that event follows ([`GENESIS`]
    /// at the chain's very start; the hash of the last compacted event after compaction).
    pub fn chain_start(&self) -> Result<Option<(u64, Hash)>, StoreError> {
        self.meta
            .get(KEY_CHAIN_START)?
            .map(|v| decode_start(&v))
            .transpose()
    }

    /// What the log holds at `offset`, as `rollcall verify --against-store` compares a copy.
    pub fn held(&self, offset: u64) -> Result<Held, StoreError> {
        if offset >= self.head()? {
            return Ok(Held::Beyond);
        }
        let Some(bytes) = self.events.get(offset.to_be_bytes())? else {
            return Ok(Held::Compacted);
        };
        Ok(match stored_hash(offset, &bytes)? {
            Some(hash) => Held::Chained(hash),
            None => Held::Unchained,
        })
    }

    /// A checkpoint is due by time: signing is on, `checkpoint_interval` has passed since the
    /// last one, and events came since.
    pub(super) fn checkpoint_due(&self, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(c) = self.checkpoints.get() else {
            return Ok(false);
        };
        let signing = self
            .meta
            .get(KEY_CHECKPOINT)?
            .map(|v| decode_signing(&v))
            .transpose()?;
        Ok(Appender {
            store: self,
            now,
            head: None,
            start: None,
            started_before: false,
            signing: signing.unwrap_or_default(),
        }
        .due_by_time(c))
    }
}

/// The `chainhash` of a stored event; `None` for one stored before the chain.
pub(super) fn stored_hash(offset: u64, bytes: &[u8]) -> Result<Option<Hash>, StoreError> {
    #[derive(Deserialize)]
    struct Attrs<'a> {
        #[serde(borrow, default)]
        chainhash: Option<std::borrow::Cow<'a, str>>,
    }
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("event at offset {offset}"),
        detail,
    };
    let attrs: Attrs<'_> = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    attrs
        .chainhash
        .map(|h| chain::unhex(&h).ok_or_else(|| corrupt("its `chainhash` is not a hash".into())))
        .transpose()
}

pub(super) fn encode_start((offset, prev): (u64, Hash)) -> Vec<u8> {
    let mut v = offset.to_be_bytes().to_vec();
    v.extend_from_slice(&prev);
    v
}

fn decode_head(v: &[u8]) -> Result<ChainHead, StoreError> {
    let bad = || StoreError::Corrupt {
        what: "chain head".into(),
        detail: format!("expected 56 bytes, found {}", v.len()),
    };
    if v.len() != 56 {
        return Err(bad());
    }
    Ok(ChainHead {
        offset: be_u64(&v[..8], "chain head")?,
        hash: v[8..40].try_into().map_err(|_| bad())?,
        id: Uuid::from_slice(&v[40..]).map_err(|_| bad())?,
    })
}

fn decode_start(v: &[u8]) -> Result<(u64, Hash), StoreError> {
    if v.len() != 40 {
        return Err(StoreError::Corrupt {
            what: "chain start".into(),
            detail: format!("expected 40 bytes, found {}", v.len()),
        });
    }
    let hash: Hash = v[8..].try_into().expect("32 bytes");
    Ok((be_u64(&v[..8], "chain start")?, hash))
}

fn decode_signing(v: &[u8]) -> Result<Signing, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        what: "checkpoint state".into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::record::{read, Place, Wire};
    use crate::chain::verify::{End, Options, Report, Verifier};
    use crate::encode::Envelope;
    use crate::store::Commit;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                specversion: SPEC_VERSION.into(),
                id: Uuid::now_v7(),
                source: "superset://t".into(),
                event_type: EventType::UserUpdated,
                subject: i.to_string(),
                time: Utc::now(),
                datacontenttype: DATA_CONTENT_TYPE.into(),
                dataschema: None,
                sequence: String::new(),
                data: serde_json::json!({"i": i}),
            })
            .collect()
    }

    fn commit(store: &Store, n: usize) -> std::ops::Range<u64> {
        store
            .commit(Commit {
                source: "t",
                upserts: vec![],
                removals: vec![],
                events: events(n),
                state: None,
            })
            .unwrap()
    }

    /// The store's log through the verifier, as `rollcall verify --store` reads it.
    fn verify(store: &Store) -> Report {
        let head = store.chain_head().unwrap();
        let mut v = Verifier::new(Options {
            start: store.chain_start().unwrap(),
            end: head.map(|h| End {
                offset: h.offset,
                hash: Some(h.hash),
                who: "the head".into(),
            }),
            ..Options::default()
        });
        for e in store.events_from(0, usize::MAX).unwrap() {
            v.feed(Place::Offset(e.offset), read(Wire::Structured(&e.bytes)))
                .unwrap()
                .unwrap();
        }
        v.finish(Place::Offset(store.head().unwrap())).unwrap()
    }

    fn types(store: &Store) -> Vec<EventType> {
        store
            .events_from(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.event().unwrap().event_type)
            .collect()
    }

    #[test]
    fn the_chain_goes_on_across_a_restart_and_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            commit(&store, 3);
        }
        let store = Store::open(dir.path()).unwrap();
        commit(&store, 2);
        let r = verify(&store);
        assert_eq!((r.chained, r.from_genesis), (5, true));
        let Held::Chained(last_compacted) = store.held(2).unwrap() else {
            panic!("offset 2 is chained")
        };
        store.compact(3).unwrap();
        assert_eq!(store.chain_start().unwrap(), Some((3, last_compacted)));
        assert_eq!(store.held(2).unwrap(), Held::Compacted);
        commit(&store, 1);
        let r = verify(&store);
        assert_eq!((r.first, r.last, r.from_genesis), (Some(3), Some(5), false));
    }

    #[test]
    fn a_store_from_before_the_chain_begins_it_at_its_next_event() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.append_unchained();
            commit(&store, 3);
            store
                .meta
                .insert(super::super::migrate::KEY_SCHEMA, &2u64.to_be_bytes())
                .unwrap();
            store.meta.remove(KEY_CHECKPOINT).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.chain_start().unwrap(), None);
        commit(&store, 2);
        assert_eq!(store.chain_start().unwrap(), Some((3, GENESIS)));
        let r = verify(&store);
        assert_eq!((r.unchained, r.chained, r.first), (3, 2, Some(3)));
        assert_eq!(store.held(1).unwrap(), Held::Unchained);
        assert!(matches!(store.held(4).unwrap(), Held::Chained(_)));
        assert_eq!(store.held(5).unwrap(), Held::Beyond);
    }

    #[test]
    fn checkpoints_come_every_n_events_and_not_again_before_their_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.sign_checkpoints(Checkpoints {
            signer: Signer::from_seed([5; 32]),
            every: 10,
            interval: Duration::from_secs(3600),
            shard: None,
        });
        // 25 events: a checkpoint after the 10th and the 20th.
        assert_eq!(commit(&store, 25), 0..27);
        let t = types(&store);
        let at: Vec<usize> = (0..t.len())
            .filter(|i| t[*i] == EventType::Checkpoint)
            .collect();
        assert_eq!(at, [10, 21]);
        // Each is named by what it signs: the event just before it.
        for e in store.events_from(0, 30).unwrap() {
            let (v, link) = (e.event().unwrap(), Envelope::parse(&e).unwrap().link());
            if v.event_type == EventType::Checkpoint {
                let signed = crate::chain::unhex(v.data["head"].as_str().unwrap()).unwrap();
                assert_eq!(link.unwrap().prev, signed);
                assert!(checkpoint::is_id_of(
                    &v.id,
                    store.id(),
                    e.offset - 1,
                    &signed
                ));
                assert_eq!(
                    v.id,
                    checkpoint::id(store.id(), e.offset - 1, &signed, v.time)
                );
            }
        }
        assert_eq!(store.checkpoint_if_due().unwrap(), None, "not an hour yet");
        let r = verify(&store);
        assert_eq!((r.checkpoints, r.signed_through), (2, Some(20)));
    }

    #[test]
    fn a_store_never_signed_is_signed_at_its_first_chance_and_not_again_while_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        commit(&store, 2);
        store.sign_checkpoints(Checkpoints {
            signer: Signer::from_seed([5; 32]),
            every: 1000,
            interval: Duration::from_secs(3600),
            shard: None,
        });
        assert_eq!(store.checkpoint_if_due().unwrap(), Some(2));
        assert_eq!(*store.watch_head().borrow(), 3);
        assert_eq!(store.checkpoint_if_due().unwrap(), None);
        assert_eq!(verify(&store).signed_through, Some(1));
    }
}
