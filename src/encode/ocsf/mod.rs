//! OCSF 1.8.0 on the wire: every rollcall event as one JSON record of the OCSF class a SIEM
//! files it under (Account Change, Authentication, User Access Management, Group Management,
//! User Inventory Info, API Activity). What a record is read from is in `input`, which class,
//! activity and severity each event type gets in `mapping`, the record itself in `record`, and
//! OCSF's time and email types in `datatypes`.
//!
//! Owns the mapping: class, activity, severity and captions per event type, and which OCSF
//! attribute holds which part of the stored event. A record is built from the stored event
//! alone, so it is the same on every redelivery and replay, and `metadata.uid` is the event id
//! for SIEMs to de-duplicate on. It must never do I/O, never invent a value the stored event
//! does not hold (no client address, no actor Superset did not record), and never emit an
//! attribute OCSF 1.8.0 does not define: what has no attribute stays in `unmapped.data`, the
//! CloudEvents `data` verbatim. The rules it follows are in docs/ocsf-rules.md; the mapping
//! table and the severity choices are in docs/ocsf.md.

mod datatypes;
mod input;
mod mapping;
mod record;

use std::borrow::Cow;

use super::{Encoded, Envelope, Unreadable};
use record::record;

/// The OCSF schema version every record declares in `metadata.version`.
pub const VERSION: &str = "1.8.0";
/// Plain JSON: what SIEM HTTP collectors and Kafka connectors expect of an OCSF record.
pub const CONTENT_TYPE: &str = "application/json";

/// Why a stored event has no OCSF record. Reported as the source of [`Unreadable`].
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("its `data` is not the payload of a `{event_type}` event ({source}); deliver it with `format = \"cloudevents\"`, which sends it unchanged")]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
    #[error("a `{event_type}` event without `data.{field}`, which its OCSF record needs; deliver it with `format = \"cloudevents\"`, which sends it unchanged")]
    Missing {
        event_type: &'static str,
        field: &'static str,
    },
    #[error("`{field}` is `{text}`, not an RFC 3339 time ({source})")]
    Time {
        field: &'static str,
        text: String,
        source: chrono::ParseError,
    },
    #[error("event type `{0}` has no OCSF mapping in this rollcall version: upgrade rollcall, or deliver it with `format = \"cloudevents\"`")]
    UnknownType(String),
    #[error("source `{0}` is of a kind this rollcall version cannot name in OCSF: upgrade rollcall, or deliver it with `format = \"cloudevents\"`")]
    UnknownSource(String),
}

/// The record of one stored event, as the body of an [`Encoded`] event keyed like CloudEvents
/// (per user), with no attribute headers.
pub fn encode<'a>(e: &'a Envelope<'a>) -> Result<Encoded<'a>, Unreadable> {
    let body = record(e).map_err(|source| Unreadable {
        offset: e.offset,
        source: source.into(),
    })?;
    Ok(Encoded {
        key: e.key(),
        headers: Vec::new(),
        content_type: CONTENT_TYPE,
        body: Cow::Owned(body),
    })
}
