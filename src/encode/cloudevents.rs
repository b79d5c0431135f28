//! CloudEvents on the wire: structured mode (the stored event as the body) and binary mode
//! (attributes as headers, `data` as the body), in the Kafka and HTTP protocol bindings.
//!
//! Owns the header names and their order, and the replay marker (the `replayed` extension
//! attribute). It must never change a byte of what consumers already receive but to add that
//! marker to a replay: the stored event is a CloudEvent in structured JSON already.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Encoded, Envelope};

/// CloudEvents binding mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Attributes in headers, `data` as the body.
    #[default]
    Binary,
    /// The whole event as the body.
    Structured,
}

/// The protocol binding: header names and the structured content type differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Kafka,
    Http,
}

impl Binding {
    fn attribute_headers(self) -> [&'static str; 7] {
        match self {
            Binding::Kafka => [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_subject",
                "ce_time",
                "ce_sequence",
            ],
            Binding::Http => [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-subject",
                "ce-time",
                "ce-sequence",
            ],
        }
    }

    /// The replay marker in binary mode: the `replayed` extension attribute as a header.
    fn replayed_header(self) -> &'static str {
        match self {
            Binding::Kafka => "ce_replayed",
            Binding::Http => "ce-replayed",
        }
    }

    fn dataschema_header(self) -> &'static str {
        match self {
            Binding::Kafka => "ce_dataschema",
            Binding::Http => "ce-dataschema",
        }
    }

    /// The hash chain's attributes (docs/integrity.md), sent when the event has them.
    fn chain_headers(self) -> [&'static str; 3] {
        match self {
            Binding::Kafka => ["ce_chainprevid", "ce_chainprev", "ce_chainhash"],
            Binding::Http => ["ce-chainprevid", "ce-chainprev", "ce-chainhash"],
        }
    }

    /// Both bindings say `application/cloudevents+json` for structured mode; a webhook sink
    /// can send plain `application/json` instead (its `content_type` key).
    fn structured_content_type(self) -> &'static str {
        "application/cloudevents+json"
    }
}

pub fn encode<'a>(e: &'a Envelope<'a>, mode: Mode, binding: Binding) -> Encoded<'a> {
    match mode {
        Mode::Structured => Encoded {
            key: e.key(),
            headers: Vec::new(),
            content_type: binding.structured_content_type(),
            body: if e.replayed {
                Cow::Owned(marked(e.bytes))
            } else {
                Cow::Borrowed(e.bytes)
            },
        },
        Mode::Binary => {
            let values = [
                &e.specversion,
                &e.id,
                &e.source,
                &e.event_type,
                &e.subject,
                &e.time,
                &e.sequence,
            ];
            let mut headers: Vec<(&'static str, &str)> = binding
                .attribute_headers()
                .into_iter()
                .zip(values.map(|v| v.as_ref()))
                .collect();
            if let Some(schema) = &e.dataschema {
                headers.push((binding.dataschema_header(), schema.as_ref()));
            }
            let chain = [&e.chainprevid, &e.chainprev, &e.chainhash];
            for (name, value) in binding.chain_headers().into_iter().zip(chain) {
                if let Some(value) = value {
                    headers.push((name, value.as_ref()));
                }
            }
            if e.replayed {
                headers.push((binding.replayed_header(), "true"));
            }
            Encoded {
                key: e.key(),
                headers,
                content_type: &e.datacontenttype,
                body: Cow::Borrowed(e.data.as_bytes()),
            }
        }
    }
}

/// The stored event with the replay marker, `"replayed":true`, as its last attribute: the rest
/// byte for byte as stored (the chain's hash leaves the marker out, docs/integrity.md).
fn marked(stored: &[u8]) -> Vec<u8> {
    let end = stored
        .iter()
        .rposition(|b| *b == b'}')
        .unwrap_or(stored.len());
    let mut out = Vec::with_capacity(stored.len() + 16);
    out.extend_from_slice(&stored[..end]);
    out.extend_from_slice(b",\"replayed\":true");
    out.extend_from_slice(&stored[end..]);
    out
}
