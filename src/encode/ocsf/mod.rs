//! OCSF on the wire: every rollcall event as one JSON record of the OCSF class a SIEM files it
//! under, in the OCSF version the sink names ([`Version`]: 1.9.0 by default, or 1.8.0). What a
//! record is read from is in `input`; which class, activity and severity each event type gets
//! in each version in `mapping`; the attributes a record can have in `record`, how each is
//! filled from the stored event in `build`, and OCSF's time and email types in `datatypes`.
//!
//! Owns the mapping: class, activity, severity and captions per event type and version, and
//! which OCSF attribute holds which part of the stored event. A record is built from the
//! stored event and the version alone, so it is the same on every redelivery and replay, and
//! `metadata.uid` is the event id for SIEMs to de-duplicate on. It must never do I/O, never
//! invent a value the stored event does not hold (no client address, no actor Superset did
//! not record), never emit an attribute its OCSF version (or a profile the record declares)
//! does not define, and in 1.9.0 never use a class or attribute 1.9.0 deprecates: what has no attribute stays in `unmapped.data`,
//! the CloudEvents `data` verbatim. The rules it follows are in docs/ocsf-rules.md; the
//! mapping table and the severity choices are in docs/ocsf.md.

mod attest;
mod build;
mod datatypes;
mod input;
mod mapping;
mod record;

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Encoded, Envelope, Unreadable};
use build::record;

/// The OCSF schema version of a sink's records: its `ocsf_version` key. Read by its own
/// [`Deserialize`], which names the versions rollcall writes; the names here are for the
/// configuration reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Version {
    /// Account changes as 3001 Account Change, roles as 3005 User Access Management.
    #[serde(rename = "1.8.0")]
    V1_8_0,
    /// Account changes and roles as 3007 User Management, which 1.9.0 puts in place of the two
    /// classes it deprecates; group members as the `users` of 3006 Group Management.
    #[default]
    #[serde(rename = "1.9.0")]
    V1_9_0,
}

impl Version {
    pub const ALL: [Version; 2] = [Version::V1_8_0, Version::V1_9_0];

    /// What a record declares in `metadata.version`, and what the config names.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_8_0 => "1.8.0",
            Version::V1_9_0 => "1.9.0",
        }
    }

    /// The version a record declares, when rollcall writes it; else what to say of the record.
    pub fn declared(text: &str) -> Result<Version, String> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "an OCSF {} record: rollcall writes 1.9.0 and 1.8.0",
                    crate::text::one_line(text)
                )
            })
    }
}

/// Only the versions rollcall can write: any other value is a config error that names them.
impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        struct Named;
        impl serde::de::Visitor<'_> for Named {
            type Value = Version;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"1.9.0\" (the default) or \"1.8.0\", as a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Version, E> {
                Version::ALL
                    .into_iter()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "`ocsf_version` \"{}\" is not a version rollcall writes: use \"1.9.0\" (the default) or \"1.8.0\" (the records rollcall sent before it wrote 1.9.0)",
                            crate::text::one_line(text)
                        ))
                    })
            }
        }
        d.deserialize_str(Named)
    }
}

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

/// The record of one stored event of store `store`'s log in `version`, as the body of an
/// [`Encoded`] event keyed like CloudEvents (per user), with no attribute headers. In 1.9.0 a
/// chained event's record declares `record_integrity` and carries its place in the store's chain
/// ([`attest`]).
pub fn encode<'a>(
    e: &'a Envelope<'a>,
    version: Version,
    store: &'a str,
) -> Result<Encoded<'a>, Unreadable> {
    let body = record(e, version, store).map_err(|source| Unreadable {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_each_version_as_the_config_reads_it() {
        for v in Version::ALL {
            let named = serde_json::to_value(v).unwrap();
            assert_eq!(named, v.as_str());
            assert_eq!(serde_json::from_value::<Version>(named).unwrap(), v);
        }
    }
}
