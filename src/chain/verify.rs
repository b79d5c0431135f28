//! Checking a copy of the log end to end, one delivered event at a time: a JSONL file, a Kafka
//! topic read back, the store's own log.
//!
//! Owns what counts as broken and names the first place where it is: content that does not
//! hash to its `chainhash` or an OCSF record's fingerprint (a changed value), a `chainprev`
//! that is not the hash of the event before (lines dropped, swapped or edited), an offset
//! skipped (a dropped line), an offset seen again with other content, a chain attribute
//! stripped after the chain began, a record naming another store's chain, a checkpoint whose
//! signature fails or whose signed head is not the chain's (hashes recomputed after a change),
//! a copy that ends before what it must reach (a cut tail). The same event twice (a redelivery,
//! a replay) is no break: it is recognised by its offset and hash; nor is a checkpoint a copy
//! leaves out (an OCSF copy), recognised by its id in the event after it. Memory does not grow
//! with the copy: the hashes a duplicate is compared with are kept in a temporary file.
//!
//! It reads nothing itself: readers feed it, and a [`Reference`] (the store) answers what the
//! copy must agree with.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use uuid::Uuid;

use super::checkpoint;
use super::index::Index;
use super::record::{Chained, Place, Record, Unreadable};
use super::{hex, unhex, Hash, GENESIS};

/// What a reference (the store) holds at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A chained event with this hash.
    Chained(Hash),
    /// An event from before the chain began.
    Unchained,
    /// Nothing any more: retention compacted it away.
    Compacted,
    /// Nothing yet: the offset is past the log's head.
    Beyond,
}

/// What a copy must agree with, offset by offset: the store's own chain. A copy verified
/// against a reference may skip offsets (a sink that filters by type).
pub trait Reference {
    fn held(&mut self, offset: u64) -> Result<Held, String>;
}

/// The end a copy must reach.
#[derive(Debug, Clone)]
pub struct End {
    /// The last offset the copy must hold (or pass).
    pub offset: u64,
    /// The hash the event there must have, when known.
    pub hash: Option<Hash>,
    /// Who says so, for the message (e.g. "the store's chain head").
    pub who: String,
}

/// How a copy is checked.
#[derive(Default)]
pub struct Options<'a> {
    /// The key every checkpoint must be signed with; without it each checkpoint is checked with
    /// the key it names, and the report lists those keys for the auditor to compare.
    pub pinned: Option<VerifyingKey>,
    /// What every event must agree with.
    pub reference: Option<&'a mut dyn Reference>,
    /// The copy may skip offsets (a sink that filters by type): each event is then checked
    /// against the reference rather than linked to the one before. Only with a reference.
    pub gaps: bool,
    /// Where the chain must start: its first offset and the hash that one follows (the store's
    /// record of it, which compaction moves).
    pub start: Option<(u64, Hash)>,
    pub end: Option<End>,
}

/// The first broken place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub place: Place,
    /// The log offset of the event there, when it could be read.
    pub offset: Option<u64>,
    pub what: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) if self.place != Place::Offset(o) => {
                write!(f, "{} (log offset {o}): {}", self.place, self.what)
            }
            _ => write!(f, "{}: {}", self.place, self.what),
        }
    }
}

/// Why a verification could not even run (the temporary file, the reference).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot keep the hashes seen in a temporary file (check TMPDIR and its free space)")]
    Index(#[from] std::io::Error),
    #[error("cannot read the store to compare with: {0}")]
    Reference(String),
}

/// What an intact (or unverifiable) copy holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// Chained events, each checked.
    pub chained: u64,
    /// Events without chain attributes, from before the chain began.
    pub unchained: u64,
    /// Records in a form that cannot carry the chain (OCSF 1.8.0): nothing in the copy proves
    /// them.
    pub unchainable: u64,
    /// The same event again (redeliveries, replays), recognised and not counted as chained.
    pub duplicates: u64,
    /// The first and last chained offsets.
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// The first chained event follows no event (a chain's very start), rather than one
    /// outside the copy.
    pub from_genesis: bool,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// Checkpoints the copy leaves out (an OCSF copy), each recognised by its id in the
    /// `chainprevid` of the event after it; their signatures are not in the copy.
    pub left_out: u64,
    /// The last offset a checked checkpoint signs.
    pub signed_through: Option<u64>,
    /// The keys the checked checkpoints were signed with.
    pub keys: BTreeSet<String>,
    /// Checked against a pinned key.
    pub pinned: bool,
    /// The store the checkpoints name, or the OCSF records (`chain_uid`).
    pub store: Option<String>,
}

impl Report {
    /// Nothing in the copy can be checked: no chained event, or (with a pinned key) no
    /// checkpoint it signed.
    pub fn unverifiable(&self) -> Option<&'static str> {
        if self.chained == 0 && self.unchainable > 0 {
            Some("its records are OCSF 1.8.0, which has no `record_integrity` profile to carry the chain: verify the file with --against-store, which compares each record with the store's event it names")
        } else if self.chained == 0 {
            Some("it holds no chained event (events stored before the store began its chain)")
        } else if self.pinned && self.checkpoints == 0 && self.left_out > 0 {
            Some("the chain is whole, but its checkpoints are not in this copy (OCSF has no record for them), so nothing in it proves who wrote it: verify the file with --against-store, which checks them in the store")
        } else if self.pinned && self.checkpoints == 0 {
            Some("the chain is whole, but no checkpoint in it is signed by the pinned key: nothing proves who wrote it")
        } else {
            None
        }
    }
}

/// The last chained event accepted, in log order.
struct Tip {
    offset: u64,
    hash: Hash,
    id: Option<Uuid>,
}

/// Checks a copy fed to it in the order the copy holds its events.
pub struct Verifier<'a> {
    options: Options<'a>,
    index: Option<Index>,
    tip: Option<Tip>,
    /// The offset of the last checked checkpoint.
    checkpoint: Option<u64>,
    report: Report,
}

impl<'a> Verifier<'a> {
    pub fn new(options: Options<'a>) -> Verifier<'a> {
        let pinned = options.pinned.is_some();
        Verifier {
            options,
            index: None,
            tip: None,
            checkpoint: None,
            report: Report {
                pinned,
                ..Report::default()
            },
        }
    }

    /// Check the next event of the copy, found at `place`.
    pub fn feed(
        &mut self,
        place: Place,
        event: Result<Record, Unreadable>,
    ) -> Result<Result<(), Break>, VerifyError> {
        let record = match event {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(Break {
                    place,
                    offset: None,
                    what: e.to_string(),
                }))
            }
        };
        self.report.events += 1;
        let broken = |what: String| {
            Ok(Err(Break {
                place,
                offset: Some(record.offset),
                what,
            }))
        };
        let held = match self.options.reference.as_mut() {
            Some(r) => Some(r.held(record.offset).map_err(VerifyError::Reference)?),
            None => None,
        };
        let Some(chained) = &record.chain else {
            if record.unchainable {
                self.report.unchainable += 1;
                return Ok(Ok(()));
            }
            let began = self.report.first.is_some_and(|f| record.offset >= f);
            if began || matches!(held, Some(Held::Chained(_))) {
                return broken("it carries no chain attributes, yet the chain had begun before it: they were removed".into());
            }
            self.report.unchained += 1;
            return Ok(Ok(()));
        };
        if chained.computed != chained.claimed {
            return broken(format!(
                "its content does not hash to {}: a value in it was changed",
                chained.claim
            ));
        }
        if let Some(store) = &chained.store {
            match &self.report.store {
                Some(first) if first != store => return broken(format!(
                    "it names the chain of store {store} (`chain_uid`), but the events before it that of store {first}: it was not written by the same store"
                )),
                _ => self.report.store = Some(store.clone()),
            }
        }
        if let Some(tip) = &self.tip {
            if record.offset <= tip.offset {
                return self.duplicate(&record, chained).map(|r| {
                    r.map_err(|what| Break {
                        place,
                        offset: Some(record.offset),
                        what,
                    })
                });
            }
        }
        match self.follows(&record, chained, held) {
            Err(what) => return broken(what),
            Ok(left_out) => self.report.left_out += u64::from(left_out),
        }
        if let Some(data) = &chained.checkpoint {
            if let Err(what) = self.signed(record.offset, chained, data) {
                return broken(what);
            }
        }
        let index = match &mut self.index {
            Some(index) => index,
            None => self.index.insert(Index::new(record.offset)?),
        };
        index.push(record.offset, &chained.link.hash)?;
        self.tip = Some(Tip {
            offset: record.offset,
            hash: chained.link.hash,
            id: Uuid::parse_str(&record.id).ok(),
        });
        if self.report.first.is_none() {
            self.report.first = Some(record.offset);
            self.report.from_genesis = chained.link.prev == GENESIS;
        }
        self.report.last = Some(record.offset);
        self.report.chained += 1;
        Ok(Ok(()))
    }

    /// An offset at or before the tip: the same event again, or a break. Its first copy must
    /// be in this copy: an event older than the copy's first one, or than an offset it skipped,
    /// cannot be told from a line moved.
    fn duplicate(
        &mut self,
        record: &Record,
        chained: &Chained,
    ) -> Result<Result<(), String>, VerifyError> {
        let seen = match &mut self.index {
            Some(index) => index.get(record.offset)?,
            None => None,
        };
        let Some(first) = seen else {
            let tip = self.tip.as_ref().map_or(0, |t| t.offset);
            return Ok(Err(format!("it comes after log offset {tip}, out of order, and this copy holds no earlier copy of it: lines were moved")));
        };
        if first != chained.link.hash {
            return Ok(Err(format!(
                "log offset {} appears again with other content than its first copy (chainhash {} there, {} here)",
                record.offset,
                hex(&first),
                hex(&chained.link.hash)
            )));
        }
        self.report.duplicates += 1;
        Ok(Ok(()))
    }

    /// A new offset past the tip: it must agree with the reference, and follow the tip.
    /// Returns whether it follows a checkpoint the copy leaves out.
    fn follows(
        &self,
        record: &Record,
        chained: &Chained,
        held: Option<Held>,
    ) -> Result<bool, String> {
        let link = &chained.link;
        match held {
            None | Some(Held::Compacted) => {}
            Some(Held::Chained(hash)) if hash == link.hash => {}
            Some(Held::Chained(hash)) => {
                return Err(format!(
                    "it differs from the store's event at this offset (chainhash {} in the store, {} here)",
                    hex(&hash),
                    hex(&link.hash)
                ))
            }
            Some(held) => return Err(not_in_store(held)),
        }
        if let (Some(tip), Some(store)) = (&self.tip, &chained.store) {
            // One offset between them, and it names as its predecessor the checkpoint that
            // signs the tip: a checkpoint the copy leaves out, not an event dropped.
            let after = link.prev_id.as_ref();
            let signing_tip =
                after.is_some_and(|id| checkpoint::is_id_of(id, store, tip.offset, &tip.hash));
            if record.offset == tip.offset + 2 && signing_tip {
                return Ok(true);
            }
        }
        match &self.tip {
            None => match self.options.start {
                Some((start, prev)) if record.offset == start && link.prev != prev => Err(format!(
                    "the chain starts here, but not from the hash the store recorded for its start ({}): the events before it were replaced",
                    hex(&prev)
                )),
                Some((start, _)) if record.offset != start => Err(format!(
                    "the chain should start at log offset {start}, but its first chained event is here"
                )),
                _ => Ok(false),
            },
            Some(tip) if record.offset == tip.offset + 1 => {
                // An OCSF record states the link in its attestation.
                let (prev, prev_id) = match chained.store {
                    Some(_) => ("`prev_event.fingerprint`", "`prev_event.uid`"),
                    None => ("`chainprev`", "`chainprevid`"),
                };
                if link.prev != tip.hash {
                    return Err(format!("its {prev} is not the `chainhash` of the event before it (log offset {}): an event between them was changed, dropped or moved", tip.offset));
                }
                if tip.id.is_some() && link.prev_id != tip.id {
                    return Err(format!(
                        "its {prev_id} does not name the event before it (log offset {})",
                        tip.offset
                    ));
                }
                Ok(false)
            }
            Some(_) if self.options.gaps && held.is_some() => Ok(false),
            Some(tip) => Err(format!(
                "log offsets {} to {} are missing before it: lines were dropped or moved (a copy that skips events on purpose, such as a webhook with `event_types`, is verified with --against-store)",
                tip.offset + 1,
                record.offset - 1
            )),
        }
    }

    /// A checkpoint: it signs the hash of the event just before it, with the right key.
    fn signed(
        &mut self,
        offset: u64,
        chained: &Chained,
        data: &Result<checkpoint::Data, String>,
    ) -> Result<(), String> {
        let data = data
            .as_ref()
            .map_err(|e| format!("a checkpoint whose `data` is not a checkpoint's: {e}"))?;
        let head = unhex(&data.head)
            .ok_or_else(|| "a checkpoint whose `head` is not a hash".to_owned())?;
        if data.offset + 1 != offset {
            return Err(format!(
                "a checkpoint signing log offset {}, not the event just before it",
                data.offset
            ));
        }
        if head != chained.link.prev {
            let since = self.checkpoint.map_or_else(
                || "the chain's start".to_owned(),
                |c| format!("the checkpoint at log offset {c}"),
            );
            return Err(format!(
                "this checkpoint signed head {} for log offset {}, but the chain before it hashes to {}: events since {since} were changed and their hashes recomputed",
                data.head,
                data.offset,
                hex(&chained.link.prev)
            ));
        }
        let key = checkpoint::check(data, &head, self.options.pinned.as_ref())
            .map_err(|e| format!("a checkpoint that proves nothing: {e}"))?;
        self.report.keys.insert(key);
        self.report.store.get_or_insert_with(|| data.store.clone());
        self.report.checkpoints += 1;
        self.report.signed_through = Some(data.offset);
        self.checkpoint = Some(offset);
        Ok(())
    }

    /// What was checked so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The copy ended just before `end`: check it reached what it must, and report.
    pub fn finish(self, end: Place) -> Result<Report, Break> {
        if let Some(must) = &self.options.end {
            let broken = |what: String| Break {
                place: end,
                offset: None,
                what,
            };
            match &self.tip {
                None if self.report.chained == 0 && self.report.unchained > 0 => {}
                Some(tip) if tip.offset > must.offset => {}
                Some(tip) if tip.offset == must.offset => {
                    if must.hash.is_some_and(|h| h != tip.hash) {
                        return Err(broken(format!(
                            "the last event (log offset {}) is not the one {} names",
                            tip.offset, must.who
                        )));
                    }
                }
                tip => {
                    let at = tip.as_ref().map_or_else(
                        || "before any chained event".to_owned(),
                        |t| format!("at log offset {}", t.offset),
                    );
                    return Err(broken(format!(
                        "the copy ends {at}, but {} reaches log offset {}: its last events were cut",
                        must.who, must.offset
                    )));
                }
            }
        }
        Ok(self.report)
    }
}

fn not_in_store(held: Held) -> String {
    match held {
        Held::Chained(_) => "it differs from the store's event at this offset".into(),
        Held::Unchained => "the store holds this offset without a chain, yet here it is chained: it was not written by this store".into(),
        Held::Compacted => "the store compacted this offset away: there is nothing to compare it with".into(),
        Held::Beyond => "the store's log does not reach this offset yet: it was not written by this store".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::checkpoint::Signer;
    use crate::chain::record::{read, Wire};
    use crate::chain::{chain, Link};
    use crate::event::{Event, EventType, DATA_CONTENT_TYPE, SPEC_VERSION};

    fn event(offset: u64, event_type: EventType, data: serde_json::Value) -> Event {
        Event {
            specversion: SPEC_VERSION.into(),
            id: Uuid::now_v7(),
            source: "superset://t".into(),
            event_type,
            subject: "7".into(),
            time: chrono::Utc::now(),
            datacontenttype: DATA_CONTENT_TYPE.into(),
            dataschema: None,
            sequence: Event::sequence_for(offset),
            data,
        }
    }

    /// `n` events from offset 0, a checkpoint signed by `signer` after every `every`.
    fn written(n: u64, signer: &Signer, every: u64) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let (mut prev, mut prev_id) = (GENESIS, None);
        let mut since = 0;
        let mut offset = 0;
        while offset < n {
            let e = if since == every {
                since = 0;
                let data = signer.sign("store", offset - 1, &prev);
                event(
                    offset,
                    EventType::Checkpoint,
                    serde_json::to_value(data).unwrap(),
                )
            } else {
                since += 1;
                event(
                    offset,
                    EventType::UserUpdated,
                    serde_json::json!({"n": offset}),
                )
            };
            let (link, bytes): (Link, Vec<u8>) = chain(&e, offset, &prev, prev_id);
            (prev, prev_id) = (link.hash, Some(e.id));
            lines.push(bytes);
            offset += 1;
        }
        lines
    }

    fn check(lines: &[Vec<u8>], options: Options<'_>) -> Result<Report, Break> {
        let mut v = Verifier::new(options);
        for (i, line) in lines.iter().enumerate() {
            v.feed(Place::Line(i as u64 + 1), read(Wire::Structured(line)))
                .unwrap()?;
        }
        v.finish(Place::Line(lines.len() as u64 + 1))
    }

    fn broken_at(lines: &[Vec<u8>]) -> u64 {
        match check(lines, Options::default()) {
            Err(Break {
                place: Place::Line(n),
                ..
            }) => n,
            other => panic!("not broken at a line: {other:?}"),
        }
    }

    #[test]
    fn an_untouched_chain_is_intact_and_its_checkpoints_are_checked() {
        let signer = Signer::from_seed([1; 32]);
        let r = check(&written(20, &signer, 5), Options::default()).unwrap();
        assert_eq!((r.chained, r.first, r.last), (20, Some(0), Some(19)));
        assert!(r.from_genesis);
        assert_eq!(r.checkpoints, 3);
        assert_eq!(r.signed_through, Some(16));
        assert_eq!(r.keys.into_iter().collect::<Vec<_>>(), [signer.public()]);
    }

    #[test]
    fn a_changed_value_is_named_at_its_line() {
        let mut lines = written(10, &Signer::from_seed([1; 32]), 100);
        lines[4] = String::from_utf8(lines[4].clone())
            .unwrap()
            .replace("\"n\":4", "\"n\":5")
            .into_bytes();
        assert_eq!(broken_at(&lines), 5);
    }

    #[test]
    fn a_dropped_line_is_named_where_the_gap_shows_and_two_swapped_lines_at_the_first() {
        let lines = written(10, &Signer::from_seed([1; 32]), 100);
        let mut dropped = lines.clone();
        dropped.remove(3);
        assert_eq!(broken_at(&dropped), 4);
        let mut swapped = lines.clone();
        swapped.swap(6, 7);
        assert_eq!(broken_at(&swapped), 7);
    }

    #[test]
    fn redeliveries_and_replays_are_recognised_not_broken() {
        let lines = written(10, &Signer::from_seed([1; 32]), 4);
        let mut copy = lines[..6].to_vec();
        copy.extend_from_slice(&lines[3..]);
        copy.extend_from_slice(&lines[0..2]);
        let r = check(&copy, Options::default()).unwrap();
        assert_eq!((r.chained, r.duplicates), (10, 5));
    }

    #[test]
    fn an_offset_again_with_other_content_is_broken() {
        let lines = written(6, &Signer::from_seed([1; 32]), 100);
        let mut other = written(6, &Signer::from_seed([1; 32]), 100);
        let mut copy = lines.clone();
        copy.push(other.remove(2));
        assert_eq!(broken_at(&copy), 7);
    }

    #[test]
    fn stripped_chain_attributes_after_the_chain_began_are_broken() {
        let mut lines = written(5, &Signer::from_seed([1; 32]), 100);
        let mut v: serde_json::Value = serde_json::from_slice(&lines[3]).unwrap();
        for name in [
            crate::chain::HASH,
            crate::chain::PREV,
            crate::chain::PREV_ID,
        ] {
            v.as_object_mut().unwrap().remove(name);
        }
        lines[3] = serde_json::to_vec(&v).unwrap();
        assert_eq!(broken_at(&lines), 4);
    }

    #[test]
    fn hashes_recomputed_after_a_change_are_caught_by_the_next_checkpoint() {
        let signer = Signer::from_seed([1; 32]);
        let lines = written(12, &signer, 5);
        // Rewrite offset 7 and chain everything after it again, as a forger would.
        let mut events: Vec<Event> = lines
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        events[7].data = serde_json::json!({"n": 70});
        let mut forged = lines[..7].to_vec();
        let last: serde_json::Value = serde_json::from_slice(&lines[6]).unwrap();
        let mut prev = crate::chain::unhex(last[crate::chain::HASH].as_str().unwrap()).unwrap();
        let mut prev_id = Some(events[6].id);
        for e in &events[7..] {
            let offset = e.offset().unwrap();
            let (link, bytes) = chain(e, offset, &prev, prev_id);
            (prev, prev_id) = (link.hash, Some(e.id));
            forged.push(bytes);
        }
        let b = check(&forged, Options::default()).unwrap_err();
        assert_eq!(b.place, Place::Line(12), "the checkpoint after the change");
        assert!(b.what.contains("recomputed"), "{}", b.what);
    }

    #[test]
    fn a_checkpoint_by_another_key_than_the_pinned_one_is_broken() {
        let lines = written(8, &Signer::from_seed([1; 32]), 3);
        let pinned =
            crate::chain::checkpoint::parse_public(&Signer::from_seed([2; 32]).public()).unwrap();
        let b = check(
            &lines,
            Options {
                pinned: Some(pinned),
                ..Options::default()
            },
        )
        .unwrap_err();
        assert_eq!(b.place, Place::Line(4));
    }

    #[test]
    fn a_copy_that_ends_before_what_it_must_reach_lost_its_tail() {
        let lines = written(10, &Signer::from_seed([1; 32]), 4);
        let end = |offset| Options {
            end: Some(End {
                offset,
                hash: None,
                who: "the sink".into(),
            }),
            ..Options::default()
        };
        assert!(check(&lines, end(9)).is_ok());
        let b = check(&lines[..7], end(9)).unwrap_err();
        assert_eq!(b.place, Place::Line(8));
    }

    /// A store that holds the first copy's chain.
    struct Held(Vec<Hash>);

    impl Reference for Held {
        fn held(&mut self, offset: u64) -> Result<super::Held, String> {
            Ok(self
                .0
                .get(offset as usize)
                .map_or(super::Held::Beyond, |h| super::Held::Chained(*h)))
        }
    }

    #[test]
    fn a_filtered_copy_verifies_against_the_store_and_a_foreign_line_does_not() {
        let lines = written(10, &Signer::from_seed([1; 32]), 100);
        let hashes = lines
            .iter()
            .map(|l| read(Wire::Structured(l)).unwrap().chain.unwrap().link.hash)
            .collect();
        let mut store = Held(hashes);
        let mut against_store = |copy: &[Vec<u8>]| {
            check(
                copy,
                Options {
                    reference: Some(&mut store),
                    gaps: true,
                    ..Options::default()
                },
            )
        };
        let subset: Vec<Vec<u8>> = lines.iter().step_by(3).cloned().collect();
        assert!(check(&subset, Options::default()).is_err(), "gaps alone");
        assert_eq!(against_store(&subset).unwrap().chained, 4);
        let mut foreign = subset.clone();
        foreign[2] = written(10, &Signer::from_seed([1; 32]), 100)[6].clone();
        assert_eq!(against_store(&foreign).unwrap_err().place, Place::Line(3));
    }

    #[test]
    fn a_copy_without_chain_is_unverifiable() {
        let lines: Vec<Vec<u8>> = (0..3)
            .map(|o| {
                serde_json::to_vec(&event(o, EventType::UserCreated, serde_json::json!({})))
                    .unwrap()
            })
            .collect();
        let r = check(&lines, Options::default()).unwrap();
        assert_eq!(r.unchained, 3);
        assert!(r.unverifiable().is_some());
    }
}
