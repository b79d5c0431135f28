//! A table row: the current record of one user, keyed `<source>:<subject>` like every event of
//! that user, for a compacted topic whose last message per key is the user as they are now
//! (docs/sinks.md, Current-users table). A deletion is a tombstone: the key with no value.
//!
//! Owns which events change a row (the user's events: each holds the record after it in
//! `data.user`), the row's value (that record, byte for byte as stored) and its headers (the
//! event it came from). It must never invent a row: an event that holds no user record of its
//! subject (an action-log row, an agent's call, rollcall's own) is not a row.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Encoded, Envelope, Unreadable};
use crate::event::EventType;

/// The value's content type: the record is plain JSON.
pub const CONTENT_TYPE: &str = "application/json";

/// Whether events of this `type` change a row.
pub fn carries(event_type: &str) -> bool {
    EventType::ALL.iter().any(|t| {
        t.as_str() == event_type
            && t.from_source()
            && !matches!(t, EventType::AuditAction | EventType::AgentToolCalled)
    })
}

/// Whether the event's row is a tombstone: its user is gone.
pub fn tombstone(event_type: &str) -> bool {
    event_type == EventType::UserDeleted.as_str()
}

/// The row of a user event: its user's record, with the event it came from in headers.
pub fn encode<'a>(e: &'a Envelope<'a>) -> Result<Encoded<'a>, Unreadable> {
    #[derive(Deserialize)]
    struct Data<'d> {
        #[serde(borrow)]
        user: &'d RawValue,
    }
    let body = if tombstone(&e.event_type) {
        Cow::Borrowed(&b""[..])
    } else {
        let data: Data<'a> = serde_json::from_str(e.data).map_err(|source| Unreadable {
            offset: e.offset,
            source: source.into(),
        })?;
        Cow::Borrowed(data.user.get().as_bytes())
    };
    let mut headers = vec![
        ("ce_id", e.id.as_ref()),
        ("ce_source", e.source.as_ref()),
        ("ce_type", e.event_type.as_ref()),
        ("ce_subject", e.subject.as_ref()),
        ("ce_time", e.time.as_ref()),
        ("ce_sequence", e.sequence.as_ref()),
    ];
    if e.replayed {
        headers.push(("ce_replayed", "true"));
    }
    Ok(Encoded {
        key: e.key(),
        headers,
        content_type: CONTENT_TYPE,
        body,
    })
}
