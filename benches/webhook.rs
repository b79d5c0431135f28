//! Webhook sink throughput: signing, per-user order and cursor writes must cost little against
//! a bare HTTP client, and OCSF encoding little against CloudEvents.
//!
//! `cargo bench --bench webhook` posts 30,000 stored events (1,000 users) to a local axum
//! receiver four times per run, interleaved, best of five: through the real sink (sled reads,
//! per-user ordering, Standard Webhooks signing, cursor writes) in CloudEvents, the same sink
//! with `format = "ocsf"` (each event also encoded as an OCSF record), a bare reqwest client
//! posting the stored bodies with the same concurrency and nothing else, and a minimal signed
//! sender: the bare client plus what any Standard Webhooks sender reading rollcall's log must
//! do per event (read it from the log, parse its attributes, sign it, send the three headers),
//! so that the sink's own overhead shows apart from the protocol's. It prints the rates and the
//! ratios rollcall / bare, rollcall / minimal sender and OCSF / CloudEvents, each best of each
//! and as the median of the runs' own ratios. Under `cargo test` it runs the same code on 600
//! events.

#[path = "support/events.rs"]
mod events;
#[path = "support/mod.rs"]
mod support;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::report;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::encode::{ocsf, Binding, Encoder, Envelope, Format, Mode};
use rollcall::sink::webhook::Signer;
use rollcall::sink::SinkConfig;
use rollcall::store::Store;

const RUNS: usize = 5;
const USERS: usize = 1_000;
const IN_FLIGHT: usize = 16;

fn main() {
    let events = if support::full_size() { 30_000 } else { 600 };
    support::run("webhook benchmark", "webhook", bench(events));
}

async fn count(State(hits): State<Arc<AtomicUsize>>, _body: Bytes) -> &'static str {
    hits.fetch_add(1, Ordering::Relaxed);
    ""
}

async fn bench(n: usize) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(count))
        .with_state(hits.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let store_path = dir.path().join("data");
    let store = Store::open(&store_path).unwrap();
    events::fill(&store, n as u64, USERS as u64);
    let bodies: Vec<Bytes> = store
        .events_from(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| Bytes::copy_from_slice(&e.bytes))
        .collect();
    let mean = bodies.iter().map(Bytes::len).sum::<usize>() / n;
    report!("{n} events of {USERS} users, {mean} bytes each on average, {IN_FLIGHT} in flight");
    encoding_alone(&store, n);

    let bare_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap();
    // rollcall / bare, rollcall / minimal sender and OCSF / CloudEvents of each run: the four
    // senders of a run went back to back, so each pair saw the same load.
    let signer = Signer::new("bench", &std::fs::read_to_string(&secret).unwrap()).unwrap();
    let (mut sink_ratios, mut ratios) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    let mut minimal_ratios = Vec::with_capacity(RUNS);
    let (mut best_bare, mut best_sink, mut best_ocsf, mut best_minimal) =
        (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    for run in 0..RUNS {
        let requests = futures::stream::iter(bodies.iter().cloned()).map(|body| {
            bare_client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
        });
        let bare = post_all(requests, &hits, n).await;
        let minimal = minimal_sender(&store, &bare_client, &url, &signer, &hits, n).await;

        // Which format goes first alternates: the store's cache and the machine's load drift.
        let formats = if run % 2 == 0 {
            ["cloudevents", "ocsf"]
        } else {
            ["ocsf", "cloudevents"]
        };
        let (mut signed, mut ocsf) = (Duration::MAX, Duration::MAX);
        for format in formats {
            let took = through_sink(
                &store,
                &hits,
                n,
                config(&store_path, &url, &secret, run, format),
            )
            .await;
            if format == "ocsf" {
                ocsf = took;
            } else {
                signed = took;
            }
        }

        report!(
            "run {}: bare reqwest {:>7.0}/s, minimal signed sender {:>7.0}/s, rollcall signed {:>7.0}/s, rollcall signed OCSF {:>7.0}/s",
            run + 1,
            rate(n, bare),
            rate(n, minimal),
            rate(n, signed),
            rate(n, ocsf)
        );
        best_bare = best_bare.min(bare);
        best_minimal = best_minimal.min(minimal);
        minimal_ratios.push(minimal.as_secs_f64() / signed.as_secs_f64());
        best_sink = best_sink.min(signed);
        best_ocsf = best_ocsf.min(ocsf);
        sink_ratios.push(bare.as_secs_f64() / signed.as_secs_f64());
        ratios.push(signed.as_secs_f64() / ocsf.as_secs_f64());
    }
    sink_ratios.sort_by(f64::total_cmp);
    minimal_ratios.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    report!(
        "best of {RUNS}: bare reqwest {:.0} deliveries/s ({} ms), rollcall webhook sink {:.0} signed deliveries/s ({} ms)",
        rate(n, best_bare),
        best_bare.as_millis(),
        rate(n, best_sink),
        best_sink.as_millis()
    );
    report!(
        "ratio rollcall / bare (throughput): {:.2} best of each, {:.2} median of the runs' own ratios (target >= 0.90, and >= 5,000/s)",
        rate(n, best_sink) / rate(n, best_bare),
        sink_ratios[RUNS / 2]
    );
    report!(
        "best of {RUNS}: minimal signed sender {:.0} deliveries/s ({} ms); ratio rollcall / minimal signed sender: {:.2} best of each, {:.2} median of the runs' own ratios",
        rate(n, best_minimal),
        best_minimal.as_millis(),
        rate(n, best_sink) / rate(n, best_minimal),
        minimal_ratios[RUNS / 2]
    );
    report!(
        "best of {RUNS}: rollcall webhook sink in OCSF {:.0} signed deliveries/s ({} ms)",
        rate(n, best_ocsf),
        best_ocsf.as_millis()
    );
    report!(
        "ratio OCSF / CloudEvents (throughput): {:.2} best of each, {:.2} median of the runs' own ratios (target >= 0.75: OCSF may cost up to 25 %)",
        rate(n, best_ocsf) / rate(n, best_sink),
        ratios[RUNS / 2]
    );
    server.abort();
}

/// The least a sender of rollcall's log must do per event beyond the bare client: read it from
/// the log (in chunks, as the sink does), parse its attributes for its id, sign it (Standard
/// Webhooks, the sink's own signer) and send the three headers. No per-user order, cursor,
/// retries or metrics: what is left between this and the sink is the sink's own overhead.
async fn minimal_sender(
    store: &Store,
    client: &reqwest::Client,
    url: &str,
    signer: &Signer,
    hits: &AtomicUsize,
    n: usize,
) -> Duration {
    const CHUNK: usize = 512;
    let requests = futures::stream::iter((0..n as u64).step_by(CHUNK))
        .flat_map(|from| futures::stream::iter(store.events_from(from, CHUNK).unwrap()))
        .map(|event| {
            let envelope = Envelope::parse(&event).unwrap();
            let timestamp = chrono::Utc::now().timestamp();
            client
                .post(url)
                .header("webhook-id", envelope.id.as_ref())
                .header("webhook-timestamp", timestamp)
                .header(
                    "webhook-signature",
                    signer.sign(&envelope.id, timestamp, &event.bytes),
                )
                .header("content-type", "application/cloudevents+json")
                .body(Bytes::from_owner(event.bytes.clone()))
        });
    post_all(requests, hits, n).await
}

/// Sends the requests `IN_FLIGHT` at a time (their building included: the stream is lazy),
/// checks every answer and that all `n` arrived, and says how long it took.
async fn post_all(
    requests: impl futures::Stream<Item = reqwest::RequestBuilder>,
    hits: &AtomicUsize,
    n: usize,
) -> Duration {
    hits.store(0, Ordering::Relaxed);
    let started = Instant::now();
    requests
        .map(|request| async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success());
            response.bytes().await.unwrap();
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<()>()
        .await;
    let took = started.elapsed();
    assert_eq!(hits.load(Ordering::Relaxed), n);
    took
}

/// What encoding costs without the sink around it: every stored event parsed and encoded, in
/// CloudEvents (structured: the stored bytes, borrowed) and in OCSF, best of five each.
fn encoding_alone(store: &Store, n: usize) {
    let stored = store.events_from(0, usize::MAX).unwrap();
    let per_event = |format: Format| {
        let encoder = Encoder {
            format,
            mode: Mode::Structured,
            binding: Binding::Http,
            ocsf: ocsf::Version::default(),
        };
        let mut best = Duration::MAX;
        for _ in 0..RUNS {
            let started = Instant::now();
            let bytes: usize = stored
                .iter()
                .map(|e| {
                    let envelope = Envelope::parse(e).unwrap();
                    encoder.encode(&envelope, "store").unwrap().body.len()
                })
                .sum();
            best = best.min(started.elapsed());
            assert!(bytes > 0);
        }
        best.as_secs_f64() * 1e6 / n as f64
    };
    let (cloudevents, ocsf) = (per_event(Format::Cloudevents), per_event(Format::Ocsf));
    report!("encoding alone (best of {RUNS}): CloudEvents {cloudevents:.2} µs/event, OCSF {ocsf:.2} µs/event");
}

/// One drain of the whole log through a fresh sink; checks every event arrived.
async fn through_sink(store: &Store, hits: &AtomicUsize, n: usize, config: Config) -> Duration {
    hits.store(0, Ordering::Relaxed);
    let sink = SinkConfig::build(&config.sinks[0]).unwrap();
    let started = Instant::now();
    let delivered = deliver::drain(store, sink.as_ref()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(delivered as usize, n);
    assert_eq!(hits.load(Ordering::Relaxed), n);
    assert_eq!(store.cursor(sink.name()).unwrap(), n as u64);
    took
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

/// A webhook sink in `format`, named anew for each run and format so its cursor starts at 0.
fn config(
    store: &std::path::Path,
    url: &str,
    secret: &std::path::Path,
    run: usize,
    format: &str,
) -> Config {
    let raw = format!(
        r#"[store]
path = {store:?}

[[sources]]
kind = "superset"
name = "bench"
url = "http://127.0.0.1:9"
username = "admin"
password_env = "UNUSED"

[[sinks]]
kind = "webhook"
name = "bench-{format}-{run}"
url = "{url}"
secret_file = {secret:?}
max_in_flight = {IN_FLIGHT}
format = "{format}"
"#,
        store = store.display().to_string(),
        secret = secret.display().to_string(),
    );
    Config::parse(&raw, std::path::Path::new("bench.toml")).unwrap()
}
