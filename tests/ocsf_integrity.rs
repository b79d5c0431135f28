//! The chain on OCSF copies: a 1.9.0 sink's records carry it (`record_integrity`) and are valid
//! against that profile's schemas; the real `rollcall verify` checks a 1.9.0 file alone, and a
//! 1.8.0 or 1.9.0 file against the store, naming a changed value, a dropped line and two lines
//! swapped at their line, a cut tail against the store, and a redelivery as none (generated);
//! the checkpoints an OCSF copy leaves out are no gap, and the store proves their signatures.

use crate::support;

use std::process::{Command, Stdio};

use rollcall::chain::checkpoint::{self, parse_public, Signer};
use rollcall::event::Event;
use serde_json::Value;
use support::chain::{created, Written};
use support::ocsf::Version;

/// A store signing a checkpoint every `every` events, and one JSONL sink `audit` of OCSF
/// `version`.
fn ocsf_sink(version: Version, every: u64) -> Written {
    Written::with_sink(every, |jsonl| {
        format!(
            "[[sinks]]\nkind = \"jsonl\"\nname = \"audit\"\nformat = \"ocsf\"\nocsf_version = \"{}\"\npath = {:?}\n",
            support::ocsf::declared(version),
            jsonl.display().to_string()
        )
    })
}

/// The exit code, stdout and stderr of `rollcall verify` with `args`, with `w`'s config.
fn verify(w: &Written, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&w.config_path)
        .arg("verify")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn path(w: &Written) -> &str {
    w.jsonl.to_str().unwrap()
}

/// Rewrite the file's lines with `change`.
fn with_lines(w: &Written, change: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(&w.jsonl)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    change(&mut lines);
    std::fs::write(
        &w.jsonl,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_9_0_sinks_records_carry_the_stores_chain_and_are_valid_with_the_record_integrity_profile(
) {
    let w = ocsf_sink(Version::V1_9_0, 4);
    let events: Vec<Event> = support::events::every_kind_of_event()
        .into_iter()
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    let n = events.len();
    w.commit_and_deliver(events).await;
    let text = std::fs::read_to_string(&w.jsonl).unwrap();
    let records = support::ocsf::assert_valid_jsonl_in(Version::V1_9_0, &text);
    assert_eq!(records.len(), n, "every event, no checkpoint");
    let store = w.store().id().to_owned();
    for (i, r) in records.iter().enumerate() {
        let profiles = r["metadata"]["profiles"].as_array().unwrap();
        assert!(profiles.contains(&"record_integrity".into()), "{r}");
        let a = &r["attestation_list"][0];
        assert_eq!(a["chain_uid"], store.as_str());
        assert_eq!(a["authority_uid"], format!("rollcall://{store}"));
        let fp = &a["fingerprint"];
        assert_eq!(
            (&fp["algorithm_id"], &fp["encoding_id"]),
            (&3.into(), &1.into())
        );
        assert_eq!(fp["serialization_id"], 2, "JCS");
        let prev = &a["prev_event"];
        if i == 0 {
            assert!(prev.is_null(), "the chain's first event follows none: {r}");
            continue;
        }
        let before = &records[i - 1];
        let (offset, offset_before) = (
            r["metadata"]["sequence"].as_u64().unwrap(),
            before["metadata"]["sequence"].as_u64().unwrap(),
        );
        let hash_before = before["attestation_list"][0]["uid"].as_str().unwrap();
        if offset == offset_before + 1 {
            assert_eq!(prev["uid"], before["metadata"]["uid"]);
            assert_eq!(prev["fingerprint"]["value"], hash_before);
        } else {
            // A checkpoint between them, named by what it signs: the record before.
            assert_eq!(offset, offset_before + 2);
            let signed = rollcall::chain::unhex(hash_before).unwrap();
            let id = uuid::Uuid::parse_str(prev["uid"].as_str().unwrap()).unwrap();
            assert!(checkpoint::is_id_of(&id, &store, offset_before, &signed));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_a_1_9_0_file_alone_and_names_a_changed_value_a_dropped_line_and_a_swap() {
    let w = ocsf_sink(Version::V1_9_0, 3);
    w.commit_and_deliver(created(7)).await;
    let original = std::fs::read_to_string(&w.jsonl).unwrap();
    let (code, said, _) = verify(&w, &[path(&w)]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.starts_with("intact: 7 chained events, log offsets 0 to 8, from the chain's start"),
        "{said}"
    );
    assert!(
        said.contains("2 checkpoints sign this chain but are not in this copy"),
        "{said}"
    );
    let (code, said, _) = verify(&w, &[path(&w), "--against-store", "--key", &w.public_key()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.starts_with("intact: 9 chained events"), "{said}");
    assert!(said.contains("signed: 2 checkpoints"), "{said}");
    assert!(said.contains("by the pinned key"), "{said}");

    // Line 5 holds log offset 5 (after the checkpoint at 3); dropped or swapped with the next,
    // line 5 holds offset 6, which does not follow offset 4.
    let gap = "BROKEN at line 5 (log offset 6): log offsets 5 to 5 are missing before it";
    let named = [
        "BROKEN at line 5 (log offset 5): its content does not hash to its attestation's `fingerprint`",
        gap,
        gap,
    ];
    let damages =
        support::damage::tamperings(4, |l| l.replacen("\"message\":\"", "\"message\":\"not ", 1));
    for ((what, damage), named) in damages.into_iter().zip(named) {
        std::fs::write(&w.jsonl, &original).unwrap();
        with_lines(&w, |l| damage(l));
        assert_ne!(std::fs::read_to_string(&w.jsonl).unwrap(), original);
        let (code, said, _) = verify(&w, &[path(&w)]);
        assert_eq!(code, 7, "{what}: {said}");
        assert!(said.starts_with(named), "{what}: {said}");
        let (code, said, _) = verify(&w, &[path(&w), "--against-store"]);
        assert_eq!(code, 7, "{what}, against the store: {said}");
        assert!(said.starts_with("BROKEN at line 5 "), "{what}: {said}");
    }

    // A pinned key: the copy alone holds no checkpoint to prove who wrote it; the store does,
    // and a key that did not sign them is named.
    std::fs::write(&w.jsonl, &original).unwrap();
    let (code, said, _) = verify(&w, &[path(&w), "--key", &w.public_key()]);
    assert_eq!(code, 8, "{said}");
    assert!(said.contains("--against-store"), "{said}");
    let other = Signer::load(&other_key(&w)).unwrap().public();
    let (code, said, _) = verify(&w, &[path(&w), "--against-store", "--key", &other]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.starts_with("BROKEN at line 4 (log offset 3): a checkpoint that proves nothing"),
        "{said}"
    );
}

/// Another Ed25519 key than the one the store signs with, in `w`'s directory.
fn other_key(w: &Written) -> std::path::PathBuf {
    let path = w.dir.path().join("other.pem");
    // The PKCS#8 wrapping of seed [9; 32], as `openssl genpkey` writes one.
    let der: Vec<u8> = [
        &[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ][..],
        &[9; 32],
    ]
    .concat();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    std::fs::write(
        &path,
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_8_0_file_is_unverifiable_alone_and_checked_record_by_record_against_the_store() {
    let w = ocsf_sink(Version::V1_8_0, 3);
    w.commit_and_deliver(created(7)).await;
    let original = std::fs::read_to_string(&w.jsonl).unwrap();
    assert!(
        !original.contains("attestation_list"),
        "1.8.0 has no such profile"
    );
    let (code, said, _) = verify(&w, &[path(&w)]);
    assert_eq!(code, 8, "{said}");
    assert!(
        said.starts_with("UNVERIFIABLE: its records are OCSF 1.8.0"),
        "{said}"
    );
    assert!(said.contains("--against-store"), "{said}");
    let (code, said, _) = verify(&w, &[path(&w), "--against-store", "--key", &w.public_key()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.starts_with("intact: 9 chained events"), "{said}");
    assert!(said.contains("signed: 2 checkpoints"), "{said}");

    with_lines(&w, |l| {
        l[4] = l[4].replace("\"message\":\"", "\"message\":\"not ");
    });
    let (code, said, _) = verify(&w, &[path(&w), "--against-store"]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.starts_with("BROKEN at line 5 (log offset 5): it is not the store's event encoded afresh in OCSF 1.8.0: `message` differs"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_mixing_cloudevents_and_ocsf_records_is_refused_naming_the_line() {
    let w = ocsf_sink(Version::V1_9_0, 100);
    w.commit_and_deliver(created(2)).await;
    let store = w.store();
    let cloudevent = store.events_from(0, 1).unwrap().remove(0);
    drop(store);
    let mut text = std::fs::read_to_string(&w.jsonl).unwrap();
    text.push_str(&format!("{}\n", String::from_utf8_lossy(&cloudevent.bytes)));
    std::fs::write(&w.jsonl, text).unwrap();
    let (code, said, err) = verify(&w, &[path(&w)]);
    assert_eq!(code, 1, "{said}{err}");
    assert!(
        err.contains("mixes formats: line 3 is a CloudEvent, but line 1 an OCSF record"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_damage_to_a_1_9_0_file_is_named_at_its_line_alone_and_against_the_store() {
    let w = ocsf_sink(Version::V1_9_0, 4);
    w.commit_and_deliver(created(12)).await;
    assert_eq!(w.lines().len(), 12, "the events, not the 3 checkpoints");
    let key = parse_public(&w.public_key()).unwrap();
    support::damage::is_named_at_its_line(
        "ocsf_integrity::generated_damage_to_a_1_9_0_file_is_named_at_its_line_alone_and_against_the_store",
        &w,
        key,
        Some(None),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_damage_to_a_1_8_0_file_is_named_at_its_line_against_the_store() {
    let w = ocsf_sink(Version::V1_8_0, 4);
    w.commit_and_deliver(created(12)).await;
    let key = parse_public(&w.public_key()).unwrap();
    support::damage::is_named_at_its_line(
        "ocsf_integrity::generated_damage_to_a_1_8_0_file_is_named_at_its_line_against_the_store",
        &w,
        key,
        None,
    );
}

/// What an auditor without rollcall recomputes of a record: SHA-256 of its RFC 8785 form
/// without the attestation's fingerprint, and the link to the record before.
#[tokio::test(flavor = "multi_thread")]
async fn a_records_fingerprint_is_sha_256_of_its_rfc_8785_form_without_it() {
    let w = ocsf_sink(Version::V1_9_0, 100);
    let events: Vec<Event> = support::events::every_kind_of_event()
        .into_iter()
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    w.commit_and_deliver(events).await;
    for line in std::fs::read_to_string(&w.jsonl).unwrap().lines() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        let fingerprint = record["attestation_list"][0]
            .as_object_mut()
            .unwrap()
            .remove("fingerprint")
            .unwrap();
        let jcs = serde_json_canonicalizer::to_vec(&record).unwrap();
        use sha2::Digest;
        let digest = rollcall::chain::hex(&sha2::Sha256::digest(jcs).into());
        assert_eq!(fingerprint["value"], digest);
    }
}
