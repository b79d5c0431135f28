//! The `record_integrity` attestation of a 1.9.0 record (docs/integrity.md, "OCSF"): the
//! stored event's place in the store's chain, and the record's own fingerprint.
//!
//! Owns which attestation attribute holds what. It is built from the stored event's link and
//! the store's id alone, never from another record: a record is the same on every redelivery
//! and replay, and no state per sink or version is kept. So records are not chained to one
//! another by their fingerprints; each is anchored to the store's chain (its `chainhash`, and
//! its predecessor's), which every copy of the log shares. It never signs: a checkpoint's
//! signature is in the checkpoint, which OCSF has no record for.

use serde::Serialize;

use crate::chain::{self, Link};

/// OCSF's `fingerprint.algorithm_id` for SHA-256.
const SHA_256: u8 = 3;
/// `encoding_id` Hex.
const HEX: u8 = 1;
/// `serialization_id` JCS (RFC 8785): the record's fingerprint.
const JCS: u8 = 2;
/// `serialization_id` Other: a `chainhash` is over the previous hash and the CloudEvent.
const OTHER: u8 = 99;
/// What `serialization` says of a `chainhash`.
const CHAINHASH: &str = "rollcall chainhash";

/// An attestation without its `fingerprint`: that comes last, written in once the rest of the
/// record is written, as it covers all of it but itself (`build::record`).
#[derive(Serialize)]
pub(super) struct Attestation<'r> {
    /// The event's `chainhash`: what the next record's `prev_event.fingerprint` holds.
    pub(super) uid: String,
    /// The rollcall of the store that attests: `rollcall://<store id>`, the `source` of the
    /// checkpoints that sign the chain.
    pub(super) authority_uid: String,
    /// The store's id: its log is the chain (`data.store` of its checkpoints).
    pub(super) chain_uid: &'r str,
    /// The event before it in the log; none for the first event of the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) prev_event: Option<PrevEvent>,
}

#[derive(Serialize)]
pub(super) struct PrevEvent {
    /// Its id: its record's `metadata.uid` (a checkpoint has no record).
    uid: String,
    /// Its `chainhash`.
    fingerprint: Fingerprint,
}

#[derive(Serialize)]
pub(super) struct Fingerprint {
    algorithm_id: u8,
    algorithm: &'static str,
    encoding_id: u8,
    encoding: &'static str,
    serialization_id: u8,
    serialization: &'static str,
    value: String,
}

impl Fingerprint {
    fn sha_256(serialization_id: u8, serialization: &'static str, hash: &chain::Hash) -> Self {
        Fingerprint {
            algorithm_id: SHA_256,
            algorithm: "SHA-256",
            encoding_id: HEX,
            encoding: "Hex",
            serialization_id,
            serialization,
            value: chain::hex(hash),
        }
    }
}

/// The attestation of the event with `link` in the log of store `store`, its fingerprint to
/// come ([`fingerprint`]).
pub(super) fn attestation<'r>(link: &Link, store: &'r str) -> Attestation<'r> {
    Attestation {
        uid: chain::hex(&link.hash),
        authority_uid: format!("rollcall://{store}"),
        chain_uid: store,
        prev_event: link.prev_id.map(|id| PrevEvent {
            uid: id.to_string(),
            fingerprint: Fingerprint::sha_256(OTHER, CHAINHASH, &link.prev),
        }),
    }
}

/// Writes `record` (its attestation without a fingerprint), with `data` for its raw value, to
/// `out`, and returns its fingerprint: SHA-256 of its RFC 8785 form, as OCSF says (without the
/// fingerprint and `signatures`, which rollcall never writes).
pub(super) fn write_fingerprinted(
    record: &impl Serialize,
    data: &str,
    out: &mut Vec<u8>,
) -> Result<Fingerprint, serde_json::Error> {
    let hash = chain::attested::write_fingerprinted(record, data, out)?;
    Ok(Fingerprint::sha_256(JCS, "JCS", &hash))
}
