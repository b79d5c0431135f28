//! The Kafka sink against rdkafka's in-process `MockCluster`, which speaks the real Kafka wire
//! protocol on localhost: delivery and per-user ordering, both CloudEvents binding modes
//! decoded back by a consumer, a broker that is down and comes back, SIGKILL of the real
//! binary mid-delivery, and the errors that must stop the sink instead of skipping an event.

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::Message;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::event::{Event, EventType};
use rollcall::sink::{Sink, SinkConfig};
use rollcall::store::{SinkHealth, Store};
use support::harness::Harness;
use support::kafka as mock;
use support::log::{append, event, stored_from};
use support::sim::{Sim, SimOptions};
use tokio::sync::watch;

const TOPIC: &str = "superset.user-events";
const SINK: &str = "siem-kafka";

/// A config with one Kafka sink; `extra` is appended to the sink's table.
fn config(dir: &Path, brokers: &str, extra: &str) -> Config {
    let sink = format!(
        r#"[[sinks]]
kind = "kafka"
name = "{SINK}"
brokers = "{brokers}"
topic = "{TOPIC}"
{extra}
"#
    );
    Config::parse(
        &support::config::offline(dir, "", &sink),
        Path::new("rollcall.toml"),
    )
    .unwrap()
}

fn sink(config: &Config) -> Box<dyn Sink> {
    SinkConfig::build(&config.sinks[0]).unwrap()
}

/// `rounds` events for each of `users` users, interleaved the way a busy log is.
fn events(users: u64, rounds: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for user in 1..=users {
            out.push(event(
                EventType::UserUpdated,
                &user.to_string(),
                Utc::now(),
                serde_json::json!({"user": {"id": user, "username": format!("u{user}")}, "round": round}),
            ));
        }
    }
    out
}

/// One consumed message: partition, key, decoded event, and the raw value.
#[derive(Clone)]
struct Consumed {
    partition: i32,
    key: String,
    event: Event,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Decode a message in either binding mode back into the event, as a stock consumer would.
fn decode(m: &OwnedMessage) -> Consumed {
    let headers: BTreeMap<String, String> = mock::headers(m)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    let value = m.payload().unwrap().to_vec();
    let event = if headers["content-type"] == "application/cloudevents+json" {
        serde_json::from_slice(&value).unwrap()
    } else {
        let h = |k: &str| headers[k].clone();
        Event {
            specversion: h("ce_specversion"),
            id: h("ce_id").parse().unwrap(),
            source: h("ce_source"),
            event_type: serde_json::from_value(serde_json::Value::String(h("ce_type"))).unwrap(),
            subject: h("ce_subject"),
            time: h("ce_time").parse().unwrap(),
            datacontenttype: h("content-type"),
            dataschema: headers.get("ce_dataschema").cloned(),
            sequence: h("ce_sequence"),
            data: serde_json::from_slice(&value).unwrap(),
        }
    };
    Consumed {
        partition: m.partition(),
        key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
        event,
        value,
        headers,
    }
}

/// Read the topic from the start with a fresh consumer group: at least `n` messages, then
/// whatever else arrives before the topic is quiet for `quiet`.
async fn consume_at_least(brokers: &str, n: usize, quiet: Duration) -> Vec<Consumed> {
    consume_topic(brokers, TOPIC, n, quiet).await
}

async fn consume_topic(brokers: &str, topic: &str, n: usize, quiet: Duration) -> Vec<Consumed> {
    let got = mock::consume(brokers, topic, n, quiet).await;
    got.iter().map(decode).collect()
}

/// Exactly `n` messages: one more arriving within a second fails the test.
async fn consume(brokers: &str, n: usize) -> Vec<Consumed> {
    let got = consume_at_least(brokers, n, Duration::from_secs(1)).await;
    assert_eq!(got.len(), n, "no duplicates");
    got
}

/// Every stored event arrived, decoded identical, keyed by user, each user's events in one
/// partition and in log order.
fn assert_delivered_in_order(log: &[Event], got: &[Consumed]) {
    assert_eq!(got.len(), log.len(), "one message per event");
    let by_id: HashMap<_, _> = log.iter().map(|e| (e.id, e)).collect();
    let mut partitions: HashMap<&str, HashSet<i32>> = HashMap::new();
    let mut order: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in got {
        assert_eq!(
            &c.event, by_id[&c.event.id],
            "the consumer decodes an identical event"
        );
        assert_eq!(c.key, format!("{}:{}", c.event.source, c.event.subject));
        partitions.entry(&c.key).or_default().insert(c.partition);
        order.entry(&c.key).or_default().push(&c.event.sequence);
    }
    assert!(
        partitions.values().all(|p| p.len() == 1),
        "one user's events share a partition"
    );
    let used: HashSet<i32> = partitions.values().flatten().copied().collect();
    assert!(used.len() > 1, "keys spread over partitions: {used:?}");
    for e in log {
        let key = format!("{}:{}", e.source, e.subject);
        let want: Vec<&str> = log
            .iter()
            .filter(|o| o.subject == e.subject)
            .map(|o| o.sequence.as_str())
            .collect();
        assert_eq!(order[key.as_str()], want, "user {} in log order", e.subject);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_delivers_every_event_in_order_per_user_with_ce_headers() {
    let cluster = mock::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // Small batches, so many batches are in flight and the cursor moves many times.
    let config = config(dir.path(), &brokers, "batch_size = 37");
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(20, 25));
    let sink = sink(&config);
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 500);
    assert_eq!(store.cursor(SINK).unwrap(), 500);
    let log = stored_from(&store, 0);
    let got = consume(&brokers, 500).await;
    assert_delivered_in_order(&log, &got);
    let first = got.iter().find(|c| c.event.id == log[0].id).unwrap();
    assert_eq!(
        first.headers.keys().collect::<Vec<_>>(),
        [
            "ce_chainhash",
            "ce_chainprev",
            "ce_id",
            "ce_sequence",
            "ce_source",
            "ce_specversion",
            "ce_subject",
            "ce_time",
            "ce_type",
            "content-type"
        ]
    );
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&first.value).unwrap(),
        log[0].data,
        "the value is the event's data"
    );
    assert_eq!(store.sink_state(SINK).unwrap().health, SinkHealth::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_mode_sends_the_stored_event_bytes_unchanged() {
    let cluster = mock::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &brokers,
        "mode = \"structured\"\nbatch_size = 64",
    );
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(10, 20));
    let sink = sink(&config);
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 200);
    let log = stored_from(&store, 0);
    let got = consume(&brokers, 200).await;
    assert_delivered_in_order(&log, &got);
    let bytes: HashMap<String, Vec<u8>> = store
        .events_from(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| (e.event().unwrap().id.to_string(), e.bytes.to_vec()))
        .collect();
    for c in &got {
        assert_eq!(c.value, bytes[&c.event.id.to_string()]);
        assert_eq!(
            c.headers.keys().collect::<Vec<_>>(),
            ["content-type"],
            "no ce_ headers in structured mode"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_and_later_degrades_the_sink_and_loses_nothing() {
    let cluster = mock::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &brokers,
        "batch_size = 50\n[sinks.options]\n\"message.timeout.ms\" = 2000",
    );
    let store = Store::open(&config.store.path).unwrap();
    cluster.broker_down(1).unwrap();
    append(&store, events(10, 10));
    let (head_tx, head_rx) = watch::channel(store.head().unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_restart_tx, restart_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(deliver::serve(
        store.clone(),
        sink(&config),
        head_rx,
        stop_rx,
        restart_rx,
    ));

    support::wait::until("degraded while down at start", || {
        store.sink_state(SINK).unwrap().health == SinkHealth::Degraded
    })
    .await;
    let state = store.sink_state(SINK).unwrap();
    assert!(
        state.last_error.as_deref().unwrap().contains(&brokers),
        "{state:?}"
    );
    assert_eq!(store.cursor(SINK).unwrap(), 0);
    cluster.broker_up(1).unwrap();
    support::wait::until("the backlog after the broker came up", || {
        store.cursor(SINK).unwrap() == 100
    })
    .await;
    assert_eq!(store.sink_state(SINK).unwrap().health, SinkHealth::Ok);

    // Going away later: events keep being stored, the sink degrades, then catches up.
    cluster.broker_down(1).unwrap();
    append(&store, events(10, 10));
    head_tx.send_replace(store.head().unwrap());
    support::wait::until("degraded after the broker left", || {
        store.sink_state(SINK).unwrap().health == SinkHealth::Degraded
    })
    .await;
    assert!(store.cursor(SINK).unwrap() < 200);
    cluster.broker_up(1).unwrap();
    support::wait::until("the rest after the broker returned", || {
        store.cursor(SINK).unwrap() == 200
    })
    .await;
    stop_tx.send_replace(true);
    task.await.unwrap();

    let log = stored_from(&store, 0);
    let got = consume_at_least(&brokers, log.len(), Duration::from_secs(1)).await;
    let ids: HashSet<_> = got.iter().map(|c| c.event.id).collect();
    assert!(log.iter().all(|e| ids.contains(&e.id)), "nothing lost");
    assert_eq!(store.sink_state(SINK).unwrap().health, SinkHealth::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_then_restart_delivers_every_event_with_the_same_id() {
    let cluster = mock::cluster(TOPIC, 3);
    let brokers = cluster.bootstrap_servers();
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    h.edit_config(|c| c.replace(
        "[[sources]]",
        &format!(
            "[[sinks]]\nkind = \"kafka\"\nname = \"{SINK}\"\nbrokers = \"{brokers}\"\ntopic = \"{TOPIC}\"\nbatch_size = 5\n[sinks.options]\n\"queue.buffering.max.messages\" = 10\n\n[[sources]]"
        ),
    ));
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&h.config_path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(spawn(&["once"]).wait().unwrap().success());
    // The first cycle's sync.completed: the log the runs below start from.
    let first = Store::open(&h.config().store.path).unwrap().head().unwrap();
    sim.add_users(600, &[4]);
    // Few messages in flight (a 10-message queue) and slow acknowledgements stretch the
    // delivery over seconds, so the kills land inside it.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(40))
        .unwrap();
    // How long the poll and the delivery take depends on the machine's load, so the moment
    // to kill is found, not assumed: later after a kill that came before any progress,
    // sooner (with more to deliver) after one that came when all was delivered.
    let mut cursors = Vec::new();
    let mut users = 600;
    let mut delay = Duration::from_millis(700);
    let mut before = first;
    let mut landed = false;
    for _ in 0..30 {
        let mut child = spawn(&["run"]);
        tokio::time::sleep(delay).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = Store::open(&h.config().store.path).unwrap();
        let (cursor, head) = (store.cursor(SINK).unwrap(), store.head().unwrap());
        cursors.push((cursor, head));
        landed = before < cursor && cursor < head;
        if landed {
            break;
        }
        if cursor == head && head > first {
            sim.add_users(600, &[4]);
            users += 600;
            delay = delay.mul_f64(0.6);
        } else {
            delay = delay.mul_f64(1.5);
        }
        before = cursor;
    }
    assert!(
        landed,
        "a kill landed mid-delivery: (cursor, head) after each: {cursors:?}"
    );
    let last = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&h.config_path)
        .arg("once")
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "the run after the kills: {}",
        String::from_utf8_lossy(&last.stderr)
    );

    let store = Store::open(&h.config().store.path).unwrap();
    let log = stored_from(&store, 0);
    assert_eq!(
        log.iter()
            .filter(|e| e.event_type == EventType::UserCreated)
            .count(),
        users
    );
    assert_eq!(store.cursor(SINK).unwrap(), store.head().unwrap());
    drop(store);
    // At least once: duplicates are allowed, so read everything the topic holds.
    let got = consume_at_least(&brokers, log.len(), Duration::from_secs(3)).await;
    let by_id: HashMap<_, _> = got.iter().map(|c| (c.event.id, &c.event)).collect();
    for e in &log {
        assert_eq!(
            by_id.get(&e.id),
            Some(&e),
            "event {} reached Kafka with its ce_id ({cursors:?})",
            e.sequence
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_stops_the_sink_naming_its_offset_and_keeps_the_prefix() {
    let cluster = mock::cluster(TOPIC, 1);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &brokers,
        "[sinks.options]\n\"message.max.bytes\" = 2000",
    );
    let store = Store::open(&config.store.path).unwrap();
    let mut log = events(1, 6);
    log[4].data = serde_json::json!({"huge": "x".repeat(5000)});
    append(&store, log);
    let sink = sink(&config);
    let err = deliver::drain(&store, sink.as_ref())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("offset 4") && err.contains("message.max.bytes"),
        "{err}"
    );
    assert_eq!(store.cursor(SINK).unwrap(), 4, "the prefix stays delivered");
    let state = store.sink_state(SINK).unwrap();
    assert_eq!(state.health, SinkHealth::Disabled, "{state:?}");

    // Under `run` the sink stops instead of retrying, never moves past the event, and waits
    // for an operator (or shutdown).
    store.set_sink_state(SINK, SinkHealth::Ok, None).unwrap();
    let (_head_tx, head_rx) = watch::channel(store.head().unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_restart_tx, restart_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(deliver::serve(
        store.clone(),
        sink,
        head_rx,
        stop_rx,
        restart_rx,
    ));
    support::wait::until("the sink stopped", || {
        store.sink_state(SINK).unwrap().health == SinkHealth::Disabled
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("a stopped sink ends at shutdown")
        .unwrap();
    assert_eq!(store.cursor(SINK).unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_failure_stops_the_sink_naming_the_offset() {
    let cluster = mock::cluster(TOPIC, 1);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &brokers, "");
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(3, 2));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10],
    );
    let sink = sink(&config);
    let err = deliver::drain(&store, sink.as_ref())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not authorized") && err.contains("offset 0"),
        "{err}"
    );
    assert_eq!(store.cursor(SINK).unwrap(), 0);
    assert_eq!(store.sink_state(SINK).unwrap().health, SinkHealth::Disabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_a_clear_error_that_names_the_fix() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &brokers, "");
    let store = Store::open(&config.store.path).unwrap();
    append(&store, events(2, 2));
    let sink = sink(&config);
    let err = deliver::drain(&store, sink.as_ref())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("topic `{TOPIC}` does not exist")) && err.contains("create_topic"),
        "{err}"
    );
    assert_eq!(store.sink_state(SINK).unwrap().health, SinkHealth::Degraded);
    // Once the topic exists, the same sink delivers.
    cluster.create_topic(TOPIC, 2, 1).unwrap();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 4);
}

#[test]
fn an_invalid_librdkafka_option_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "127.0.0.1:9",
        "[sinks.options]\n\"compression.type\" = \"brotli\"",
    );
    let SinkConfig::Kafka(_) = &config.sinks[0] else {
        panic!("a kafka sink")
    };
    let err = SinkConfig::build(&config.sinks[0])
        .err()
        .expect("start-up fails")
        .to_string();
    assert!(
        err.contains("`compression.type`") && err.contains("[sinks.options]"),
        "{err}"
    );
}

/// Run by scripts/e2e-kafka.sh against a real broker process (tansu): rollcall (the real
/// binary) polls the simulator and delivers to the broker named by `ROLLCALL_E2E_BROKERS`, and
/// an rdkafka consumer group reads every event back, identical and in order per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker: run scripts/e2e-kafka.sh"]
async fn e2e_a_real_broker_receives_every_event_in_order_per_user() {
    let brokers = std::env::var("ROLLCALL_E2E_BROKERS").expect("set ROLLCALL_E2E_BROKERS");
    let topic = std::env::var("ROLLCALL_E2E_TOPIC").expect("set ROLLCALL_E2E_TOPIC");
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(50, &[4]);
    let h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    for mode in ["binary", "structured"] {
        h.edit_config(|c| c.replace(
            "[[sources]]",
            &format!(
                "[[sinks]]\nkind = \"kafka\"\nname = \"e2e-{mode}\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\nmode = \"{mode}\"\nbatch_size = 7\n\n[[sources]]"
            ),
        ));
    }
    let once = || {
        let status = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&h.config_path)
            .arg("once")
            .status()
            .unwrap();
        assert!(status.success());
    };
    once();
    sim.add_users(30, &[4]);
    once();
    let store = Store::open(&h.config().store.path).unwrap();
    let log = stored_from(&store, 0);
    assert!(log.len() >= 80, "{} events", log.len());
    for mode in ["binary", "structured"] {
        assert_eq!(
            store.cursor(&format!("e2e-{mode}")).unwrap(),
            log.len() as u64
        );
    }
    drop(store);
    // Both sinks wrote the topic: each event twice, once per binding mode.
    let got = consume_topic(&brokers, &topic, 2 * log.len(), Duration::from_secs(3)).await;
    assert_eq!(got.len(), 2 * log.len(), "nothing lost, nothing extra");
    for structured in [false, true] {
        let half: Vec<Consumed> = got
            .iter()
            .filter(|c| (c.headers["content-type"] == "application/cloudevents+json") == structured)
            .cloned()
            .collect();
        assert_delivered_in_order(&log, &half);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_an_unknown_topic_and_finds_an_existing_one() {
    let empty = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = sink(&config(dir.path(), &empty.bootstrap_servers(), ""));
    let err = missing.probe().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("topic `{TOPIC}` does not exist")) && err.contains("create_topic"),
        "{err}"
    );
    let with_topic = mock::cluster(TOPIC, 1);
    let found = sink(&config(dir.path(), &with_topic.bootstrap_servers(), ""))
        .probe()
        .await
        .unwrap();
    assert!(found.contains("found"), "{found}");
}
