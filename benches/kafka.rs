//! Kafka sink throughput: the sink must keep up with a bare producer, and OCSF encoding must
//! not cost it much.
//!
//! `cargo bench --bench kafka` stores 300,000 schema-shaped `user.updated` events, then in
//! the same run and on the same broker measures (a) a bare rdkafka `FutureProducer` sending the
//! same messages (same keys, values and `ce_*` headers, already encoded, with the same
//! idempotent `acks=all` settings), (b) rollcall's Kafka sink delivering the stored events from
//! its cursor (reading the log, encoding, moving the cursor) in CloudEvents, and (c) the same
//! sink with `format = "ocsf"` (each event also encoded as an OCSF record). Three runs of each,
//! interleaved, alternating which goes first, best of each; it prints the rates and the ratios
//! rollcall / bare (target ≥ 0.9) and OCSF / CloudEvents (OCSF may cost up to 25 %: ≥ 0.75). Under `cargo test` it
//! runs the same code on 10,000 events as a smoke test; `ROLLCALL_BENCH_EVENTS` sets another
//! size.
//!
//! The broker is rdkafka's in-process `MockCluster` unless `ROLLCALL_BENCH_BROKERS` names a
//! real one (e.g. tansu, see scripts/e2e-kafka.sh), which must auto-create or already hold the
//! topics `rollcall-bench-bare`, `rollcall-bench-sink` and `rollcall-bench-ocsf`.

#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/events.rs"]
mod events;
#[path = "support/mod.rs"]
mod support;
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use support::report;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::encode::{ocsf, Binding, Encoder, Envelope, Format, Mode};
use rollcall::sink::kafka::headers;
use rollcall::sink::Message;
use rollcall::sink::SinkConfig;
use rollcall::store::Store;

const BARE_TOPIC: &str = "rollcall-bench-bare";
const SINK_TOPIC: &str = "rollcall-bench-sink";
const OCSF_TOPIC: &str = "rollcall-bench-ocsf";
const SINK: &str = "bench-sink";
const OCSF_SINK: &str = "bench-ocsf";
const USERS: u64 = 10_000;
const RUNS: usize = 3;

fn main() {
    let n: u64 = match std::env::var("ROLLCALL_BENCH_EVENTS") {
        Ok(v) => v.parse().expect("ROLLCALL_BENCH_EVENTS is a number"),
        // The broker keeps every message of every run in memory: 300,000 events of this size
        // make about 4 GB over the nine runs.
        Err(_) if support::full_size() => 300_000,
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
            for topic in [BARE_TOPIC, SINK_TOPIC, OCSF_TOPIC] {
                mock.create_topic(topic, 3, 1).unwrap();
            }
            (mock.bootstrap_servers(), "rdkafka MockCluster".to_owned())
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &brokers);
    let store = Store::open(&config.store.path).unwrap();
    let t = Instant::now();
    events::fill(&store, n, USERS);
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
                ocsf: ocsf::Version::default(),
            };
            let m = Message::encode(&encoder, &envelope, "store").unwrap();
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
    let (mut bare, mut ours, mut ocsf) = (Duration::MAX, Duration::MAX, Duration::MAX);
    // OCSF / CloudEvents of each run: the two ran back to back, so they saw the same load.
    let mut ratios = Vec::with_capacity(RUNS);
    // CPU per event of each measurement, run by run.
    let mut cpu: [Vec<Took>; 3] = Default::default();
    for run in 0..RUNS {
        let mut order = [Run::Bare, Run::CloudEvents, Run::Ocsf];
        if run % 2 == 1 {
            order.reverse();
        }
        let mut took = [Took::default(); 3];
        for which in order {
            took[which as usize] = match which {
                Run::Bare => bare_producer(&producer, &messages).await,
                Run::CloudEvents => rollcall(&store, &config, 0, n).await,
                Run::Ocsf => rollcall(&store, &config, 1, n).await,
            };
        }
        let [bare_took, cloudevents_took, ocsf_took] = took;
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        report!(
            "  run {}: bare {:>7.0}/s, rollcall CloudEvents {:>7.0}/s, rollcall OCSF {:>7.0}/s",
            run + 1,
            rate(bare_took.wall),
            rate(cloudevents_took.wall),
            rate(ocsf_took.wall)
        );
        report!(
            "         CPU µs per event (process / sending thread): bare {}, CloudEvents {}, OCSF {}",
            bare_took.cpu(n),
            cloudevents_took.cpu(n),
            ocsf_took.cpu(n)
        );
        bare = bare.min(bare_took.wall);
        ours = ours.min(cloudevents_took.wall);
        ocsf = ocsf.min(ocsf_took.wall);
        ratios.push(cloudevents_took.wall.as_secs_f64() / ocsf_took.wall.as_secs_f64());
        for (all, this) in cpu.iter_mut().zip(took) {
            all.push(this);
        }
    }
    ratios.sort_by(f64::total_cmp);
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
        "  rollcall sink, OCSF:    {ocsf:>10.2?}  {:>10.0} events/s  (best of {RUNS})",
        rate(ocsf)
    );
    let [bare_cpu, ours_cpu, ocsf_cpu] = cpu.map(|mut runs| {
        runs.sort_by_key(|t| t.process);
        runs[RUNS / 2].cpu(n)
    });
    report!(
        "  CPU µs per event, median (process / sending thread): bare {bare_cpu}, rollcall {ours_cpu}, OCSF {ocsf_cpu}"
    );
    report!(
        "  ratio rollcall / bare:  {:.2} (target ≥ 0.90)",
        rate(ours) / rate(bare)
    );
    report!(
        "  ratio OCSF / CloudEvents: {:.2} best of each, {:.2} median of the runs' own ratios (target ≥ 0.75: OCSF may cost up to 25 %)",
        rate(ocsf) / rate(ours),
        ratios[RUNS / 2]
    );
}

/// What one measurement of a run sends.
#[derive(Clone, Copy)]
enum Run {
    Bare,
    CloudEvents,
    Ocsf,
}

/// What one measurement took: its time, and the CPU time of the process and of the thread that
/// sent (the bare producer's loop, or the delivery engine's task).
#[derive(Clone, Copy, Default)]
struct Took {
    wall: Duration,
    process: Duration,
    thread: Duration,
}

impl Took {
    /// Measure `f` from now.
    async fn of(f: impl std::future::Future<Output = ()>) -> Took {
        let (t, process, thread) = (Instant::now(), cpu::process(), cpu::this_thread());
        f.await;
        Took {
            wall: t.elapsed(),
            process: cpu::process().saturating_sub(process),
            thread: cpu::this_thread().saturating_sub(thread),
        }
    }

    fn cpu(&self, n: u64) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        format!("{:.1} / {:.1}", per(self.process), per(self.thread))
    }
}

type Encoded = (String, Vec<u8>, Vec<(String, Vec<u8>)>);

/// The baseline: send every message, keeping as many in flight as librdkafka's queue holds.
async fn bare_producer(producer: &FutureProducer, messages: &[Encoded]) -> Took {
    Took::of(async {
        let mut pending = VecDeque::new();
        for (key, value, headers) in messages {
            // Headers are built per message, as any producer must (rdkafka takes them by value).
            let headers =
                headers
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
    })
    .await
}

/// rollcall: a fresh sink (the config's `sink`th: CloudEvents in binary mode, or OCSF)
/// delivers the whole log from cursor 0.
/// The sink's producer and its threads are still alive when the CPU time is read.
async fn rollcall(store: &Store, config: &Config, sink: usize, n: u64) -> Took {
    let sink = SinkConfig::build(&config.sinks[sink]).unwrap();
    store.set_cursor(sink.name(), 0).unwrap();
    let took = Took::of(async {
        let delivered = deliver::drain(store, sink.as_ref()).await.unwrap();
        assert_eq!(delivered, n);
    })
    .await;
    assert_eq!(store.cursor(sink.name()).unwrap(), n);
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

[[sinks]]
kind = "kafka"
name = "{OCSF_SINK}"
brokers = "{brokers}"
topic = "{OCSF_TOPIC}"
format = "ocsf"
"#,
        store = dir.join("data").display().to_string(),
    );
    Config::parse(&raw, Path::new("bench.toml")).unwrap()
}
