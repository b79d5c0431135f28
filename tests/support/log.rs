//! Events written straight into a store's log, as the runner would have derived and committed
//! them: for the tests of what reads the log (sinks, replay, retention) without polling a
//! source first.

use std::ops::Range;

use chrono::{DateTime, Utc};
use rollcall::event::{Event, EventType, DATA_CONTENT_TYPE, SPEC_VERSION};
use rollcall::store::{Commit, SourceState, Store};
use serde_json::Value;

/// An event of `event_type` about user `subject` of the source `superset://test`, observed at
/// `time`; the commit gives it its `sequence`.
pub fn event(event_type: EventType, subject: &str, time: DateTime<Utc>, data: Value) -> Event {
    Event {
        specversion: SPEC_VERSION.into(),
        id: uuid::Uuid::now_v7(),
        source: "superset://test".into(),
        event_type,
        subject: subject.into(),
        time,
        datacontenttype: DATA_CONTENT_TYPE.into(),
        dataschema: None,
        sequence: String::new(),
        data,
    }
}

/// Commits `events` as one cycle of the source `test` that changed no user record; returns
/// the offsets they were stored at.
pub fn append(store: &Store, events: Vec<Event>) -> Range<u64> {
    store
        .commit(Commit {
            source: "test",
            upserts: Vec::new(),
            removals: Vec::new(),
            events,
            state: Some(&SourceState::default()),
        })
        .unwrap()
}

/// The events stored from offset `from` on, as the store hands them to a sink.
pub fn stored_from(store: &Store, from: u64) -> Vec<Event> {
    store
        .events_from(from, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.event().unwrap())
        .collect()
}
