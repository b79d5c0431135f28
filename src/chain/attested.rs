//! The chain as an OCSF 1.9.0 record carries it, in the `record_integrity` profile: one
//! `attestation_list` entry whose `uid` is the event's `chainhash`, whose `prev_event` names the
//! event before it in the store's log (`uid`: its id; `fingerprint.value`: its `chainhash`),
//! whose `chain_uid` is the store's id, and whose `fingerprint` is SHA-256 of the record's
//! RFC 8785 form without that fingerprint (and without `signatures`, as OCSF says).
//!
//! Owns the fingerprint both sides compute ([`fingerprint`]) and reading a record back into
//! what the verifier checks ([`read`]). The record's other attributes are the OCSF encoder's:
//! it only reads the few it needs, and never judges the chain (that is `verify`'s). The record's
//! fingerprint proves its content unchanged since rollcall wrote it; the link (`uid`,
//! `prev_event`) proves its place in the store's chain, and so the order of the records.

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::canonical::{canonical, is_canonical, sorted_digest};
use super::outline;
use super::record::{Chained, Record, Unreadable};
use super::{unhex, Hash, Link, GENESIS};

/// The attribute of a record that holds its attestations.
pub const LIST: &str = "attestation_list";
/// The profile a record with [`LIST`] declares in `metadata.profiles`.
pub const PROFILE: &str = "record_integrity";

/// Writes `record` (its attestation without a `fingerprint` yet) to `out` as serde_json writes
/// it (but for its raw value, written as `raw`: see `outline::write_hashed`),
/// and returns its fingerprint: what [`fingerprint`] computes of its value. The record's
/// attributes are in the order a reader expects, not RFC 8785's, so its form in order is put
/// together from where serde_json wrote each member (`outline`), without reading the text
/// again; anything outside the subset that allows it is put in order by a scan of the text,
/// or else parsed, the slow way.
pub fn write_fingerprinted(
    record: &impl serde::Serialize,
    raw: &str,
    out: &mut Vec<u8>,
) -> Result<Hash, serde_json::Error> {
    let start = out.len();
    if let Some(hash) = outline::write_hashed(record, Some(raw), out)? {
        return Ok(hash);
    }
    let text = &out[start..];
    match sorted_digest(text) {
        Some(hash) => Ok(hash),
        None => serde_json::from_slice(text).map(|record| fingerprint(&record)),
    }
}

/// SHA-256 of the RFC 8785 form of `record` as it is: the fingerprint of a record whose
/// attestation has no `fingerprint` (nor `signatures`) yet.
fn fingerprint(record: &Value) -> Hash {
    let text = if is_canonical(record) {
        serde_json::to_vec(record).expect("a JSON value serialises")
    } else {
        canonical(record)
    };
    Sha256::digest(text).into()
}

/// A record's own fingerprint, as rollcall writes it: `hash` in hex, SHA-256 of the record's
/// RFC 8785 (JCS) form.
fn expected(hash: &Hash) -> Value {
    serde_json::json!({
        "algorithm_id": 3, "algorithm": "SHA-256", "encoding_id": 1, "encoding": "Hex",
        "serialization_id": 2, "serialization": "JCS", "value": super::hex(hash),
    })
}

/// What a line of a copy is.
pub enum Form {
    CloudEvent,
    /// An OCSF record, parsed, and the version it declares (`metadata.version`).
    Ocsf {
        version: String,
        record: Value,
    },
}

/// Which form a line is in: a CloudEvent has `specversion`, an OCSF record `class_uid` and
/// `metadata.version`. What rollcall writes starts with `specversion` or `class_uid`, so a
/// CloudEvent is told by its first bytes, and an OCSF record parsed once.
pub fn form(line: &[u8]) -> Result<Form, Unreadable> {
    if line.starts_with(br#"{"specversion":"#) {
        return Ok(Form::CloudEvent);
    }
    let record: Value = serde_json::from_slice(line).map_err(|e| Unreadable(e.to_string()))?;
    if record.get("specversion").is_some() {
        return Ok(Form::CloudEvent);
    }
    let version = record
        .get("metadata")
        .and_then(|m| m.get("version"))
        .and_then(Value::as_str);
    match (record.get("class_uid"), version) {
        (Some(_), Some(v)) => Ok(Form::Ocsf {
            version: v.to_owned(),
            record,
        }),
        _ => Err(Unreadable(
            "neither a CloudEvent (`specversion`) nor an OCSF record (`class_uid`, `metadata.version`)"
                .into(),
        )),
    }
}

/// The attributes of an OCSF record the verifier reads.
pub struct Named {
    /// `metadata.sequence`: the log offset.
    pub offset: u64,
    /// `metadata.uid`: the event id.
    pub id: String,
    /// `metadata.event_code`: the CloudEvents `type`.
    pub event_type: String,
}

/// The offset, id and type an OCSF record names.
pub fn named(record: &Value) -> Result<Named, Unreadable> {
    let metadata = record
        .get("metadata")
        .ok_or_else(|| Unreadable("it has no `metadata`".into()))?;
    let text = |name: &str| {
        metadata
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Unreadable(format!("`metadata.{name}` is missing or not a string")))
    };
    let offset = metadata
        .get("sequence")
        .and_then(Value::as_u64)
        .ok_or_else(|| Unreadable("`metadata.sequence` is not a log offset".into()))?;
    Ok(Named {
        offset,
        id: text("uid")?,
        event_type: text("event_code")?,
    })
}

/// Read one OCSF record: its link from its attestation, and whether its content still gives
/// the fingerprint stated there. One without an attestation has no chain: a record of an event
/// stored before the chain began, or in a version without `record_integrity` (1.8.0), which
/// the caller says (`unchainable`).
pub fn read(mut record: Value, unchainable: bool) -> Result<Record, Unreadable> {
    let named = named(&record)?;
    let mut out = Record {
        offset: named.offset,
        id: named.id,
        event_type: named.event_type,
        // `metadata.log_name` holds the event's CloudEvents `source`, the shard included.
        source: record["metadata"]["log_name"].as_str().map(str::to_owned),
        chain: None,
        unchainable,
    };
    let declared = record["metadata"]["profiles"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == PROFILE));
    let Some(list) = record.get_mut(LIST) else {
        if declared {
            return Err(Unreadable(format!(
                "it declares `{PROFILE}` but has no `{LIST}`: its attestation was removed or renamed"
            )));
        }
        return Ok(out);
    };
    let bad = |what: &str| Unreadable(format!("its attestation's {what}"));
    let attestation = list
        .get_mut(0)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("list holds no attestation"))?;
    let hash = |v: Option<&Value>| v.and_then(Value::as_str).and_then(unhex);
    let stated = attestation.remove("fingerprint");
    let claimed = hash(stated.as_ref().and_then(|f| f.get("value")))
        .ok_or_else(|| bad("`fingerprint.value` is missing or not 64 hex digits"))?;
    // What the fingerprint says it is, which it cannot cover itself: only what rollcall writes.
    if stated != Some(expected(&claimed)) {
        return Err(bad("`fingerprint` is not SHA-256 of its RFC 8785 form in hex, as rollcall writes it: it was changed"));
    }
    if attestation.remove("signatures").is_some() {
        return Err(bad(
            "`signatures` are not rollcall's, which signs only its checkpoints: they were added",
        ));
    }
    let own = hash(attestation.get("uid")).ok_or_else(|| bad("`uid` is not a chainhash"))?;
    let store = attestation
        .get("chain_uid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad("`chain_uid` is missing"))?;
    let (prev, prev_id) = match attestation.get("prev_event") {
        None => (GENESIS, None),
        Some(p) => {
            let prev = hash(p.get("fingerprint").and_then(|f| f.get("value")))
                .ok_or_else(|| bad("`prev_event.fingerprint.value` is not a chainhash"))?;
            let id = p
                .get("uid")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| bad("`prev_event.uid` is not an event id"))?;
            (prev, Some(id))
        }
    };
    out.chain = Some(Chained {
        link: Link {
            hash: own,
            prev,
            prev_id,
        },
        claimed,
        computed: fingerprint(&record),
        claim: "its attestation's `fingerprint`",
        checkpoint: None,
        store: Some(store),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example chain OCSF publishes with 1.9.0 (`record_integrity`): SHA-256 of the RFC
    /// 8785 form, as rollcall computes it.
    #[test]
    fn the_upstream_examples_fingerprints_are_what_rollcall_computes() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ocsf/1.9.0/examples/"
        );
        for name in ["chain_1_genesis", "chain_2"] {
            let path = format!("{dir}3007_user_management.valid.record_integrity.{name}.json");
            let mut record: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let fp = record[LIST][0]
                .as_object_mut()
                .unwrap()
                .remove("fingerprint")
                .unwrap();
            assert_eq!(
                super::super::hex(&fingerprint(&record)),
                fp["value"].as_str().unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_line_is_told_a_cloudevent_or_an_ocsf_record_of_its_version() {
        let is_cloudevent = |line: &[u8]| matches!(form(line), Ok(Form::CloudEvent));
        assert!(is_cloudevent(br#"{"specversion":"1.0"}"#));
        assert!(is_cloudevent(br#"{"id":"x","specversion":"1.0"}"#));
        let line = br#"{"class_uid":3007,"metadata":{"version":"1.8.0"}}"#;
        assert!(matches!(form(line), Ok(Form::Ocsf { version, .. }) if version == "1.8.0"));
        assert!(form(br#"{"a":1}"#).is_err());
        assert!(form(b"{").is_err());
    }
}
