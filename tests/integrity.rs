//! The tamper-evident trail end to end: a JSONL sink's file, the store and a filtered copy
//! checked by the real `rollcall verify`, each exit code, damage of every kind named at its
//! place (a generated property), and the chain through a restart and a compaction.

use crate::support;

use std::process::{Command, Output, Stdio};

use rollcall::store::Store;
use support::chain::{created, Written};

fn rollcall(w: &Written, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&w.config_path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit code and stdout of `rollcall verify` with `args`.
fn verify(w: &Written, args: &[&str]) -> (i32, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = rollcall(w, &all);
    assert!(
        out.stderr.is_empty() || out.status.code() != Some(0),
        "{}",
        text(&out.stderr)
    );
    (out.status.code().unwrap(), text(&out.stdout))
}

fn path(w: &Written) -> &str {
    w.jsonl.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jsonl_sinks_file_is_intact_and_signed_by_the_key_rollcall_pubkey_prints() {
    let w = Written::new(4);
    w.commit_and_deliver(created(10)).await;
    let out = rollcall(&w, &["pubkey"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    assert_eq!(key, w.public_key());
    assert!(!text(&out.stdout).contains("PRIVATE"));

    let (code, said) = verify(&w, &[path(&w), "--key", &key]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.starts_with("intact: 12 chained events, log offsets 0 to 11, from the chain's start"),
        "{said}"
    );
    assert!(said.contains("signed: 2 checkpoints"), "{said}");
    assert!(said.contains("by the pinned key"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_exits_7_naming_the_line_of_a_changed_value_and_8_when_nothing_is_chained() {
    let w = Written::new(100);
    w.commit_and_deliver(created(5)).await;
    let original = std::fs::read_to_string(&w.jsonl).unwrap();
    let changed = original.replacen("\"id\":102", "\"id\":666", 1);
    assert_ne!(changed, original);
    std::fs::write(&w.jsonl, &changed).unwrap();
    let (code, said) = verify(&w, &[path(&w)]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.starts_with("BROKEN at line 3 (log offset 2): its content does not hash"),
        "{said}"
    );

    let unchained: String = original
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for name in ["chainhash", "chainprev", "chainprevid"] {
                v.as_object_mut().unwrap().remove(name);
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(&w.jsonl, unchained).unwrap();
    let (code, said) = verify(&w, &[path(&w)]);
    assert_eq!(code, 8, "{said}");
    assert!(
        said.starts_with("UNVERIFIABLE: it holds no chained event"),
        "{said}"
    );

    // Chained, but the pinned key signed nothing in it (the first checkpoint, after the five
    // events, is not in it): nothing proves who wrote it.
    let first_five: String = original.lines().take(5).map(|l| format!("{l}\n")).collect();
    assert!(!first_five.contains("rollcall.checkpoint"));
    std::fs::write(&w.jsonl, first_five).unwrap();
    let (code, said) = verify(&w, &[path(&w), "--key", &w.public_key()]);
    assert_eq!(code, 8, "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_store_is_intact_and_names_the_offset_of_an_event_changed_in_the_store() {
    let w = Written::new(3);
    w.commit_and_deliver(created(7)).await;
    let (code, said) = verify(&w, &["--store"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("intact: 9 chained events"), "{said}");

    let db = sled::open(&w.config().store.path).unwrap();
    let events = db.open_tree("events").unwrap();
    let stored = events.get(5u64.to_be_bytes()).unwrap().unwrap();
    let forged = text(&stored).replace("\"id\":104", "\"id\":4");
    assert_ne!(forged.as_bytes(), &stored[..]);
    events
        .insert(5u64.to_be_bytes(), forged.as_bytes())
        .unwrap();
    db.flush().unwrap();
    drop((events, db));
    let (code, said) = verify(&w, &["--store"]);
    assert_eq!(code, 7, "{said}");
    assert!(said.starts_with("BROKEN at log offset 5: "), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_copy_verifies_against_the_store_but_not_alone() {
    let w = Written::new(3);
    w.commit_and_deliver(created(7)).await;
    // A receiver that took only the checkpoints (a webhook with `event_types`).
    let kept: Vec<u8> = w
        .lines()
        .into_iter()
        .filter(|l| text(l).contains("\"type\":\"rollcall.checkpoint\""))
        .flatten()
        .collect();
    let copy = w.dir.path().join("received.jsonl");
    std::fs::write(&copy, kept).unwrap();
    let copy = copy.to_str().unwrap();
    let (code, said) = verify(&w, &[copy]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.contains("--against-store"),
        "the break says how to verify it: {said}"
    );
    let (code, said) = verify(&w, &[copy, "--against-store", "--key", &w.public_key()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("intact: 2 chained events"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tail_cut_after_a_signed_checkpoint_is_named_against_the_store() {
    let w = Written::new(3);
    w.commit_and_deliver(created(7)).await;
    let lines = w.lines();
    // Cut right after the second checkpoint (offset 7): what the sink wrote after it is gone.
    let kept: Vec<u8> = lines[..8].concat();
    assert!(text(&lines[7]).contains("rollcall.checkpoint"));
    std::fs::write(&w.jsonl, kept).unwrap();
    let (code, said) = verify(&w, &[path(&w)]);
    assert_eq!(
        code, 0,
        "a file alone cannot tell where it should end: {said}"
    );
    let (code, said) = verify(&w, &[path(&w), "--against-store"]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.starts_with("BROKEN at line 9: the copy ends at log offset 7, but sink 'audit'"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chain_goes_on_through_a_restart_and_a_compaction() {
    let w = Written::new(4);
    w.commit_and_deliver(created(6)).await;
    w.commit_and_deliver(created(6)).await;
    {
        let store = Store::open(&w.config().store.path).unwrap();
        store.compact(5).unwrap();
    }
    w.commit_and_deliver(created(3)).await;
    let (code, said) = verify(&w, &["--store"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("continuing a chain from before log offset 5"),
        "{said}"
    );
    let (code, said) = verify(&w, &[path(&w), "--against-store", "--key", &w.public_key()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("from the chain's start"), "{said}");
}

#[test]
fn a_missing_signing_key_stops_the_start_and_pubkey_naming_what_to_do() {
    let w = Written::new(3);
    std::fs::remove_file(w.dir.path().join("signing.pem")).unwrap();
    for args in [&["pubkey"][..], &["once"]] {
        // The source's password is there: only the key is missing.
        let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&w.config_path)
            .args(args)
            .env("UNUSED", "pw")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let said = text(&out.stderr);
        assert!(
            said.contains("openssl genpkey -algorithm ed25519"),
            "{said}"
        );
    }
}

// --- damage of every kind, generated ------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn generated_damage_to_a_written_chain_is_named_at_its_line_and_redeliveries_are_not() {
    let w = Written::new(4);
    w.commit_and_deliver(created(12)).await;
    assert_eq!(w.lines().len(), 15, "12 events and 3 checkpoints");
    let key = rollcall::chain::checkpoint::parse_public(&w.public_key()).unwrap();
    support::damage::is_named_at_its_line(
        "integrity::generated_damage_to_a_written_chain_is_named_at_its_line_and_redeliveries_are_not",
        &w,
        key,
        Some(Some(key)),
    );
}

// --- the chain on the other sinks -----------------------------------------------------------

/// Write into `topic`, beside `original`, a message someone else made of it: its key, headers
/// and partition, with `from` replaced by `to` in its value; where it landed.
async fn forge(
    brokers: &str,
    topic: &str,
    original: &rdkafka::message::OwnedMessage,
    from: &str,
    to: &str,
) -> rdkafka::producer::future_producer::Delivery {
    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let mut headers = OwnedHeaders::new();
    for h in original.headers().iter().flat_map(|h| h.iter()) {
        headers = headers.insert(Header {
            key: h.key,
            value: h.value,
        });
    }
    let payload = text(original.payload().unwrap());
    let forged = payload.replace(from, to);
    assert_ne!(forged, payload, "{from} is in the message");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .partition(original.partition())
                .key(original.key().unwrap())
                .payload(&forged)
                .headers(headers),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_topic_reads_every_partition_back_in_log_order_and_names_a_forged_message() {
    const TOPIC: &str = "audit-events";
    let cluster = support::kafka::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let w = Written::with_sink(4, |_| {
        format!("[[sinks]]\nkind = \"kafka\"\nname = \"siem\"\nbrokers = \"{brokers}\"\ntopic = \"{TOPIC}\"\n")
    });
    // Users of their own: their keys spread the events over the three partitions.
    w.commit_and_deliver(created(10)).await;
    let (code, said) = verify(&w, &["--topic", "siem", "--key", &w.public_key()]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.starts_with("intact: 12 chained events, log offsets 0 to 11"),
        "{said}"
    );

    // At least once: the sink sends again from an older cursor.
    {
        let store = w.store();
        store.set_cursor("siem", 5).unwrap();
    }
    w.commit_and_deliver(Vec::new()).await;
    let (code, said) = verify(&w, &["--topic", "siem"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("7 duplicates"), "{said}");

    // A message written by someone else: the event at offset 6 again, with other data.
    let messages =
        support::kafka::consume(&brokers, TOPIC, 19, std::time::Duration::from_millis(500)).await;
    let original = messages
        .iter()
        .find(|m| support::kafka::headers(m)["ce_sequence"] == b"00000000000000000006")
        .unwrap();
    let delivered = forge(&brokers, TOPIC, original, "\"id\":105", "\"id\":5").await;
    let (code, said) = verify(&w, &["--topic", "siem"]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.starts_with(&format!(
            "BROKEN at partition {} offset {} (log offset 6): its content does not hash",
            delivered.partition, delivered.offset
        )),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_topic_of_an_ocsf_sink_checks_each_records_attestation_and_names_a_forged_one() {
    use rdkafka::message::Message;

    const TOPIC: &str = "audit-ocsf";
    let cluster = support::kafka::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let w = Written::with_sink(4, |_| {
        format!("[[sinks]]\nkind = \"kafka\"\nname = \"siem\"\nbrokers = \"{brokers}\"\ntopic = \"{TOPIC}\"\nformat = \"ocsf\"\n")
    });
    w.commit_and_deliver(created(10)).await;
    // The two checkpoints are left out of the topic; the records after them name them.
    let (code, said) = verify(&w, &["--topic", "siem"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.starts_with("intact: 10 chained events"), "{said}");

    // A record written by someone else: the one of user 105 again, for another user.
    let messages =
        support::kafka::consume(&brokers, TOPIC, 10, std::time::Duration::from_millis(500)).await;
    let original = messages
        .iter()
        .find(|m| text(m.payload().unwrap()).contains("\"uid\":\"105\""))
        .expect("the record of user 105");
    let delivered = forge(
        &brokers,
        TOPIC,
        original,
        "\"uid\":\"105\"",
        "\"uid\":\"5\"",
    )
    .await;
    let (code, said) = verify(&w, &["--topic", "siem"]);
    assert_eq!(code, 7, "{said}");
    assert!(
        said.starts_with(&format!(
            "BROKEN at partition {} offset {}",
            delivered.partition, delivered.offset
        )),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ocsf_copy_alone_verifies_across_the_end_of_a_full_reconcile_it_leaves_out() {
    let w = Written::with_sink(100, |jsonl| {
        format!(
            "[[sinks]]\nkind = \"jsonl\"\nname = \"audit\"\nformat = \"ocsf\"\npath = {:?}\n",
            jsonl.display().to_string()
        )
    });
    let mut events = created(4);
    let mut sync = events[0].clone();
    sync.id = uuid::Uuid::now_v7();
    sync.event_type = rollcall::event::EventType::SyncCompleted;
    events.insert(2, sync);
    w.commit_and_deliver(events).await;
    assert_eq!(
        w.lines().len(),
        4,
        "the user events, not the sync.completed"
    );
    let (code, said) = verify(&w, &[path(&w)]);
    assert_eq!(code, 0, "{said}");

    // A record dropped where the marker was left out is still a record dropped.
    let kept: Vec<u8> = w
        .lines()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .flat_map(|(_, l)| l.iter().copied())
        .collect();
    std::fs::write(&w.jsonl, kept).unwrap();
    let (code, said) = verify(&w, &[path(&w)]);
    assert_eq!(code, 7, "{said}");
    assert!(said.contains("log offsets 2 to 3 are missing"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ocsf_sink_leaves_the_checkpoints_out_and_moves_past_them() {
    let w = Written::with_sink(3, |jsonl| {
        format!(
            "[[sinks]]\nkind = \"jsonl\"\nname = \"audit\"\nformat = \"ocsf\"\npath = {:?}\n",
            jsonl.display().to_string()
        )
    });
    w.commit_and_deliver(created(7)).await;
    let lines = w.lines();
    assert_eq!(lines.len(), 7, "the 7 user events, not the 2 checkpoints");
    assert_eq!(w.store().cursor("audit").unwrap(), 9);
}
