//! Kafka sink throughput (issue: Kafka sink, point 5).
//!
//! `cargo bench --bench kafka` stores 1,000,000 events, then in the same run and on the same
//! broker measures (a) a bare rdkafka `FutureProducer` sending the same messages (same keys,
//! values and `ce_*` headers, already encoded, with the same idempotent `acks=all` settings),
//! and (b) rollcall's Kafka sink delivering the stored events from its cursor (reading the
//! log, encoding, moving the cursor). Two runs of each, interleaved, best of each; it prints
//! both rates and their ratio (target ≥ 0.8). Under `cargo test` it runs the same code on
//! 10,000 events as a smoke test; `ROLLCALL_BENCH_EVENTS` sets another size.
//!
//! The broker is rdkafka's in-process `MockCluster` unless `ROLLCALL_BENCH_BROKERS` names a
//! real one (e.g. tansu, see scripts/e2e-kafka.sh), which must auto-create or already hold the
//! topics `rollcall-bench-bare` and `rollcall-bench-sink`.

#[path = "support/mod.rs"]
mod support;
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use support::report;

use chrono::Utc;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::encode::{Binding, Encoder, Envelope, Format, Mode};
use rollcall::event::{Event, EventType, DATA_CONTENT_TYPE, SPEC_VERSION};
use rollcall::sink::kafka::headers;
use rollcall::sink::Message;
use rollcall::sink::SinkConfig;
use rollcall::store::{Commit, SourceState, Store};

const BARE_TOPIC: &str = "rollcall-bench-bare";
const SINK_TOPIC: &str = "rollcall-bench-sink";
const SINK: &str = "bench-sink";
const RUNS: usize = 2;

fn main() {
    let n: u64 = match std::env::var("ROLLCALL_BENCH_EVENTS") {
        Ok(v) => v.parse().expect("ROLLCALL_BENCH_EVENTS is a number"),
        Err(_) if support::full_size() => 1_000_000,
        Err(_) => 10_000,
    };
    support::run("rollcall Kafka sink benchmark", "kafka", bench(n));
}

async fn bench(n: u64) {
    let mock;
    let (brokers, broker_name) = match std::env::var("ROLLCALL_BENCH_BROKERS") {
        Ok(b) => (b.clone(), format!("broker at {b}")),
        Err(_) => {
            mock = MockCluster::new(1).unwrap();
            for topic in [BARE_TOPIC, SINK_TOPIC] {
                mock.create_topic(topic, 3, 1).unwrap();
            }
            (mock.bootstrap_servers(), "rdkafka MockCluster".to_owned())
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &brokers);
    let store = Store::open(&config.store.path).unwrap();
    let t = Instant::now();
    fill(&store, n);
    let stored = store.events_from(0, usize::MAX).unwrap();
    let bytes: usize = stored.iter().map(|e| e.bytes.len()).sum();
    report!(
        "  {n} events stored ({:.0} bytes each on average) in {:.1?}; broker: {broker_name}",
        bytes as f64 / n as f64,
        t.elapsed()
    );

    // (a) the baseline: the same messages, encoded before the clock starts.
    let messages: Vec<Encoded> = stored
        .iter()
        .map(|e| {
            let envelope = Envelope::parse(e).unwrap();
            let encoder = Encoder {
                format: Format::Cloudevents,
                mode: Mode::Binary,
                binding: Binding::Kafka,
            };
            let m = Message::encode(&encoder, &envelope).unwrap();
            let headers: Vec<(String, Vec<u8>)> = headers(&m)
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap().to_vec()))
                .collect();
            (m.key.to_string(), m.body.to_vec(), headers)
        })
        .collect();
    drop(stored);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    // Connected, with the topic's metadata, before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(BARE_TOPIC), Duration::from_secs(10))
        .unwrap();

    // Interleaved, alternating which goes first, best of each: other load on the machine
    // drifts, and the broker holds more messages as the run goes on.
    let (mut bare, mut ours) = (Duration::MAX, Duration::MAX);
    for run in 0..RUNS {
        for rollcall_first in [run % 2 == 1, run % 2 == 0] {
            if rollcall_first {
                ours = ours.min(rollcall(&store, &config, n).await);
            } else {
                bare = bare.min(bare_producer(&producer, &messages).await);
            }
        }
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    report!(
        "  bare rdkafka producer:  {bare:>10.2?}  {:>10.0} events/s  (best of {RUNS})",
        rate(bare)
    );
    report!(
        "  rollcall Kafka sink:    {ours:>10.2?}  {:>10.0} events/s  (best of {RUNS})",
        rate(ours)
    );
    report!(
        "  ratio rollcall / bare:  {:.2} (target ≥ 0.80)",
        rate(ours) / rate(bare)
    );
}

type Encoded = (String, Vec<u8>, Vec<(String, Vec<u8>)>);

/// The baseline: send every message, keeping as many in flight as librdkafka's queue holds.
async fn bare_producer(producer: &FutureProducer, messages: &[Encoded]) -> Duration {
    let t = Instant::now();
    let mut pending = VecDeque::new();
    for (key, value, headers) in messages {
        // Headers are built per message, as any producer must (rdkafka takes them by value).
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new_with_capacity(8), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut record = FutureRecord::to(BARE_TOPIC)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    pending.pop_front().unwrap().await.unwrap().unwrap();
                }
                Err((e, _)) => panic!("bare producer: {e}"),
            }
        }
    }
    for delivery in pending {
        delivery.await.unwrap().unwrap();
    }
    t.elapsed()
}

/// rollcall: a fresh sink delivers the whole log from cursor 0, in binary mode.
async fn rollcall(store: &Store, config: &Config, n: u64) -> Duration {
    store.set_cursor(SINK, 0).unwrap();
    let sink = SinkConfig::build(&config.sinks[0]).unwrap();
    let t = Instant::now();
    let delivered = deliver::drain(store, sink.as_ref()).await.unwrap();
    let took = t.elapsed();
    assert_eq!(delivered, n);
    assert_eq!(store.cursor(SINK).unwrap(), n);
    took
}

fn config(dir: &Path, brokers: &str) -> Config {
    let raw = format!(
        r#"[store]
path = {store:?}

[[sources]]
kind = "superset"
name = "bench"
url = "http://127.0.0.1:1"
username = "admin"
password_env = "UNUSED"

[[sinks]]
kind = "kafka"
name = "{SINK}"
brokers = "{brokers}"
topic = "{SINK_TOPIC}"
"#,
        store = dir.join("data").display().to_string(),
    );
    Config::parse(&raw, Path::new("bench.toml")).unwrap()
}

/// `n` events spread over 10,000 users, shaped like `user.updated` events.
fn fill(store: &Store, n: u64) {
    let now = Utc::now();
    let mut offset = 0;
    while offset < n {
        let chunk = (n - offset).min(10_000);
        let events = (offset..offset + chunk)
            .map(|i| {
                let user = i % 10_000 + 1;
                Event {
                    specversion: SPEC_VERSION.into(),
                    id: uuid::Uuid::now_v7(),
                    source: "superset://bench".into(),
                    event_type: EventType::UserUpdated,
                    subject: user.to_string(),
                    time: now,
                    datacontenttype: DATA_CONTENT_TYPE.into(),
                    dataschema: None,
                    sequence: String::new(),
                    data: serde_json::json!({
                        "user": {
                            "id": user,
                            "username": format!("user{user}"),
                            "email": format!("user{user}@example.com"),
                            "first_name": "Bench",
                            "last_name": format!("User {user}"),
                            "active": true,
                            "roles": ["Gamma"],
                        },
                        "changes": {"last_name": {"old": "Old", "new": format!("User {user}")}},
                    }),
                }
            })
            .collect();
        store
            .commit(Commit {
                source: "bench",
                upserts: Vec::new(),
                removals: Vec::new(),
                events,
                state: &SourceState::default(),
            })
            .unwrap();
        offset += chunk;
    }
}
