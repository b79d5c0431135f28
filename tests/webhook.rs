//! The webhook sink against a real HTTP receiver in this process: signatures checked with the
//! official `standardwebhooks` crate, retries, `Retry-After`, 410, timeouts, dead letters and
//! `rollcall dlq`, SIGKILL mid-delivery, per-user ordering under parallelism, type filtering.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::event::{Event, EventType};
use rollcall::sink::{Sink, SinkConfig};
use rollcall::store::{SinkHealth, Store};
use support::log::{self, event};
use support::running;
use support::wait;
use tempfile::TempDir;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What the receiver answers to one request.
#[derive(Clone, Copy)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    delay: Duration,
    /// Answer with a body quoting the request's URL (its token too) and terminal escapes, as
    /// a careless receiver's error page does.
    echo_url: bool,
}

fn ok() -> Reply {
    status(200)
}

fn status(status: u16) -> Reply {
    Reply {
        status,
        retry_after: None,
        delay: Duration::ZERO,
        echo_url: false,
    }
}

/// One request as it arrived.
#[derive(Clone)]
struct Hit {
    id: String,
    subject: String,
    headers: HeaderMap,
    body: Bytes,
    arrived: Instant,
}

type Script = Box<dyn Fn(&Hit, usize) -> Reply + Send + Sync>;

#[derive(Default)]
struct Shared {
    script: Mutex<Option<Script>>,
    hits: Mutex<Vec<Hit>>,
    /// `(webhook-id, when)` of each 2xx answer that was sent out in full.
    accepted: Mutex<Vec<(String, Instant)>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

struct Receiver {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    async fn start(script: impl Fn(&Hit, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener, script)
    }

    fn on(
        listener: tokio::net::TcpListener,
        script: impl Fn(&Hit, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        *shared.script.lock().unwrap() = Some(Box::new(script));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            shared,
            server,
        }
    }

    fn script(&self, script: impl Fn(&Hit, usize) -> Reply + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Some(Box::new(script));
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<(String, Instant)> {
        self.shared.accepted.lock().unwrap().clone()
    }

    async fn wait_for_hits(&self, n: usize) {
        wait::until(&format!("the receiver to get {n} requests"), || {
            self.hits().len() >= n
        })
        .await;
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let echo = format!(
        "{{\"error\":\"no hook at http:\\/\\/{}{uri}\"}} \x1b[2J\x1b]0;pwned\x07",
        header(&headers, "host")
    );
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let hit = Hit {
        id: header(&headers, "webhook-id"),
        // CloudEvents' subject; an OCSF record names the user in `user.uid`.
        subject: event["subject"]
            .as_str()
            .or(event["user"]["uid"].as_str())
            .unwrap()
            .to_owned(),
        headers,
        body,
        arrived: Instant::now(),
    };
    let reply = {
        let mut hits = shared.hits.lock().unwrap();
        let attempt = hits.iter().filter(|h| h.id == hit.id).count() + 1;
        hits.push(hit.clone());
        (shared.script.lock().unwrap().as_ref().unwrap())(&hit, attempt)
    };
    // Counted down even when the client gives up and this future is dropped.
    struct Leave(Arc<Shared>);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(shared.clone());
    tokio::time::sleep(reply.delay).await;
    if (200..300).contains(&reply.status) {
        shared
            .accepted
            .lock()
            .unwrap()
            .push((hit.id.clone(), Instant::now()));
    }
    let body = if reply.echo_url {
        echo
    } else {
        "answer".into()
    };
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), body).into_response();
    if let Some(after) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers[name].to_str().unwrap().to_owned()
}

/// A store and a config with one webhook sink named `hooks`, in a temp dir; `rollcall run`
/// with it serves its endpoints on a port of its own.
struct Setup {
    dir: TempDir,
    config_path: PathBuf,
}

impl Setup {
    /// `sink` is appended to the `[[sinks]]` table (url and secret are set here). Its source
    /// is polled once an hour, and nothing answers there.
    fn new(url: &str, secrets: &str, sink: &str) -> Setup {
        Setup::polling("http://127.0.0.1:9", "1h", url, secrets, sink)
    }

    /// The same, its source `test` polling the Superset at `source` as admin/admin `every` so
    /// often.
    fn polling(source: &str, every: &str, url: &str, secrets: &str, sink: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("webhook-secret");
        std::fs::write(&secret_file, format!("{secrets}\n")).unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "admin\n").unwrap();
        let config_path = dir.path().join("rollcall.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"listen = "127.0.0.1:0"

[store]
path = {store:?}

[[sources]]
kind = "superset"
name = "test"
url = "{source}"
username = "admin"
password_file = {password_file:?}
poll_interval = "{every}"

[[sinks]]
kind = "webhook"
name = "hooks"
url = "{url}"
secret_file = {secret_file:?}
{sink}
"#,
                store = dir.path().join("data").display().to_string(),
                password_file = password_file.display().to_string(),
                secret_file = secret_file.display().to_string(),
            ),
        )
        .unwrap();
        Setup { dir, config_path }
    }

    fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    fn store(&self) -> Store {
        Store::open(&self.config().store.path).unwrap()
    }

    fn sink(&self) -> Box<dyn Sink> {
        SinkConfig::build(&self.config().sinks[0]).unwrap()
    }

    fn rollcall(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Append events `(type, subject)` to the log; returns them as stored (id, offset).
fn append(store: &Store, events: &[(EventType, &str)]) -> Vec<Event> {
    let events: Vec<Event> = events
        .iter()
        .map(|(t, subject)| {
            event(
                *t,
                subject,
                chrono::Utc::now(),
                serde_json::json!({"user": {"id": subject}}),
            )
        })
        .collect();
    let range = log::append(store, events);
    log::stored_from(store, range.start)
}

fn created(subjects: &[&'static str]) -> Vec<(EventType, &'static str)> {
    subjects
        .iter()
        .map(|s| (EventType::UserCreated, *s))
        .collect()
}

fn verifies(secret: &str, hit: &Hit) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&hit.body, &hit.headers)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_the_standardwebhooks_crate_for_each_rotated_secret() {
    let rx = Receiver::start(|_, _| ok()).await;
    let s = Setup::new(&rx.url, &format!("{SECRET} {OLD_SECRET}"), "");
    let store = s.store();
    let events = append(&store, &created(&["1", "2", "3"]));
    let sink = s.sink();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 3);

    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    let stored = store.events_from(0, 10).unwrap();
    for hit in &hits {
        assert!(verifies(SECRET, hit), "the current secret verifies");
        assert!(verifies(OLD_SECRET, hit), "the old secret verifies too");
        assert!(
            !verifies("whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==", hit),
            "another secret must not"
        );
        let e = events.iter().find(|e| e.id.to_string() == hit.id).unwrap();
        let offset = e.offset().unwrap() as usize;
        assert_eq!(
            hit.body,
            stored[offset].bytes.as_ref(),
            "body = stored bytes"
        );
        assert_eq!(
            header(&hit.headers, "content-type"),
            "application/cloudevents+json",
            "the CloudEvents HTTP binding's structured mode"
        );
        let ts: i64 = header(&hit.headers, "webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    }
    assert_eq!(store.cursor("hooks").unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_is_delivered_on_the_second_attempt_with_the_same_webhook_id() {
    let rx = Receiver::start(|_, attempt| if attempt == 1 { status(500) } else { ok() }).await;
    let s = Setup::new(
        &rx.url,
        SECRET,
        "retry_schedule = [\"0s\", \"50ms\", \"50ms\"]",
    );
    let store = s.store();
    let events = append(&store, &created(&["1"]));
    let sink = s.sink();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 1);

    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    for hit in &hits {
        assert_eq!(hit.id, events[0].id.to_string());
        assert!(verifies(SECRET, hit));
    }
    assert!(hits[1].arrived - hits[0].arrived >= Duration::from_millis(40));
    assert_eq!(store.cursor("hooks").unwrap(), 1);
    assert_eq!(store.dead_letter_count("hooks").unwrap(), 0);
    assert_eq!(
        store.sink_state("hooks").unwrap().health,
        SinkHealth::Ok,
        "health is ok again once the retry succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_and_503_is_honoured_over_a_shorter_schedule() {
    let rx = Receiver::start(|_, attempt| match attempt {
        1 => Reply {
            retry_after: Some("1"),
            ..status(429)
        },
        2 => Reply {
            retry_after: Some("1"),
            ..status(503)
        },
        _ => ok(),
    })
    .await;
    let s = Setup::new(
        &rx.url,
        SECRET,
        "retry_schedule = [\"0s\", \"10ms\", \"10ms\", \"2s\"]",
    );
    let store = s.store();
    append(&store, &created(&["1"]));
    let sink = s.sink();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 1);
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    for pair in hits.windows(2) {
        let gap = pair[1].arrived - pair[0].arrived;
        assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_and_keeps_the_event_undelivered() {
    let rx = Receiver::start(|_, _| status(410)).await;
    let s = Setup::new(&rx.url, SECRET, "retry_schedule = [\"0s\", \"10ms\"]");
    let store = s.store();
    append(&store, &created(&["1", "1"]));
    let sink = s.sink();
    let err = deliver::drain(&store, sink.as_ref())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("410 Gone") && err.contains("disabled"),
        "{err}"
    );
    assert!(!err.contains("MfKQ9r8GKYqrTwjUPD8"), "no secret in errors");
    assert_eq!(rx.hits().len(), 1, "no retry, nothing more sent");
    assert_eq!(store.cursor("hooks").unwrap(), 0);
    assert_eq!(store.dead_letter_count("hooks").unwrap(), 0);
    assert_eq!(
        store.sink_state("hooks").unwrap().health,
        SinkHealth::Disabled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_answer_in_time_is_retried_with_the_same_webhook_id() {
    // The first answer would come after an hour: the drain ends only if the sink gave up on
    // it. The guard turns a sink that waits into a failure rather than a hung test run; no
    // load comes near it.
    let rx = Receiver::start(|_, attempt| Reply {
        delay: if attempt == 1 {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        },
        ..ok()
    })
    .await;
    let s = Setup::new(
        &rx.url,
        SECRET,
        "timeout = \"300ms\"\nretry_schedule = [\"0s\", \"10ms\"]",
    );
    let store = s.store();
    let events = append(&store, &created(&["1"]));
    let sink = s.sink();
    let drained = tokio::time::timeout(
        Duration::from_secs(600),
        deliver::drain(&store, sink.as_ref()),
    )
    .await
    .expect("the sink waited for the answer past its timeout");
    assert_eq!(drained.unwrap(), 1);
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.id == events[0].id.to_string()));
    assert_eq!(rx.accepted().len(), 1, "only the second answer was read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_the_whole_schedule_dead_letters_then_dlq_retry_delivers_the_same_id() {
    // A port nobody listens on, until the receiver starts on it for the retry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook?token=URLTOKEN");
    let s = Setup::new(
        &url,
        SECRET,
        "retry_schedule = [\"0s\", \"20ms\", \"20ms\"]",
    );
    let events = {
        let store = s.store();
        let events = append(&store, &created(&["1", "2"]));
        let sink = s.sink();
        assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 0);
        assert_eq!(
            store.cursor("hooks").unwrap(),
            2,
            "the cursor passes dead letters"
        );
        let letters = store.dead_letters("hooks").unwrap();
        assert_eq!(letters.len(), 2);
        assert!(letters.iter().all(|l| l.attempts == 3), "{letters:?}");
        events
    };

    let list = s.rollcall(&["dlq", "list", "--sink", "hooks"]);
    assert!(list.status.success());
    let list = String::from_utf8(list.stdout).unwrap();
    for e in &events {
        assert!(list.contains(&e.id.to_string()), "{list}");
    }
    let status = s.rollcall(&["status", "--json"]);
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(status.contains("\"dead_letters\": 2"), "{status}");
    for output in [&list, &status] {
        assert!(
            !output.contains("MfKQ9r8GKYqrTwjUPD8"),
            "no secret: {output}"
        );
        assert!(!output.contains("URLTOKEN"), "no URL token: {output}");
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let rx = Receiver::on(listener, |_, _| ok());
    let out = s.rollcall(&["dlq", "retry", "--sink", "hooks"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 delivered, 0 still dead-lettered"),
        "{text}"
    );
    let mut ids: Vec<String> = rx.hits().iter().map(|h| h.id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected, "the same webhook-id as the first attempts");
    assert!(rx.hits().iter().all(|h| verifies(SECRET, h)));
    assert_eq!(s.store().dead_letter_count("hooks").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocsf_webhook_is_signed_over_the_ocsf_body_and_a_dead_letter_retries_the_same_bytes() {
    // Every first attempt of the first event fails until the schedule is spent.
    let rx = Receiver::start(|hit, attempt| {
        if hit.subject == "1" && attempt <= 2 {
            status(500)
        } else {
            ok()
        }
    })
    .await;
    let s = Setup::new(
        &rx.url,
        SECRET,
        "format = \"ocsf\"\nocsf_version = \"1.8.0\"\nretry_schedule = [\"0s\", \"20ms\"]",
    );
    let store = s.store();
    let examples: Vec<Event> = support::events::every_kind_of_event()
        .into_iter()
        .filter(|e| e["source"].as_str().unwrap().starts_with("superset://"))
        .filter(|e| ["user.created", "user.role_added"].contains(&e["type"].as_str().unwrap()))
        .map(|e| serde_json::from_value(e).unwrap())
        .collect();
    let ids: Vec<String> = examples.iter().map(|e| e.id.to_string()).collect();
    log::append(&store, examples);
    let sink = s.sink();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 1);
    let letters = store.dead_letters("hooks").unwrap();
    assert_eq!(letters.len(), 1, "the first event is dead-lettered");
    assert_eq!(
        letters[0].event["id"], ids[0],
        "a dead letter keeps the stored CloudEvent, not the OCSF body"
    );

    let report = deliver::retry_dead_letters(&store, sink.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(report.delivered.len(), 1);
    let hits = rx.hits();
    assert_eq!(
        hits.len(),
        4,
        "2 failed attempts, the second event, the retry"
    );
    for hit in &hits {
        assert!(verifies(SECRET, hit), "the signature covers the OCSF body");
        assert_eq!(header(&hit.headers, "content-type"), "application/json");
        let record: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
        support::ocsf::assert_valid(&record);
        assert_eq!(
            record["metadata"]["uid"], hit.id,
            "webhook-id is the event id"
        );
        assert!(ids.contains(&hit.id));
    }
    let first: Vec<&Hit> = hits.iter().filter(|h| h.id == ids[0]).collect();
    assert_eq!(first.len(), 3);
    assert!(
        first.iter().all(|h| h.body == first[0].body),
        "every attempt and the retry send the same bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_purge_drops_one_letter_or_all() {
    let s = Setup::new(
        "http://127.0.0.1:9/hook",
        SECRET,
        "retry_schedule = [\"0s\"]",
    );
    {
        let store = s.store();
        append(&store, &created(&["1", "2", "3"]));
        deliver::drain(&store, s.sink().as_ref()).await.unwrap();
        assert_eq!(store.dead_letter_count("hooks").unwrap(), 3);
    }
    let one = s.rollcall(&["dlq", "purge", "--sink", "hooks", "--offset", "1"]);
    assert!(one.status.success());
    let offsets: Vec<u64> = s
        .store()
        .dead_letters("hooks")
        .unwrap()
        .iter()
        .map(|l| l.offset)
        .collect();
    assert_eq!(offsets, [0, 2]);
    assert!(s
        .rollcall(&["dlq", "purge", "--sink", "hooks", "--all"])
        .status
        .success());
    assert_eq!(s.store().dead_letter_count("hooks").unwrap(), 0);
    let unknown = s.rollcall(&["dlq", "list", "--sink", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("its sinks are: hooks"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_leaves_an_event_whose_next_retry_is_hours_away_for_the_next_run() {
    let rx = Receiver::start(|hit, _| {
        if hit.subject == "1" {
            status(500)
        } else {
            ok()
        }
    })
    .await;
    let s = Setup::new(&rx.url, SECRET, "");
    let store = s.store();
    let events = append(&store, &created(&["1", "2"]));
    let started = Instant::now();
    let err = deliver::drain(&store, s.sink().as_ref())
        .await
        .unwrap_err()
        .to_string();
    // The default schedule: immediately, 5 s, then 5 min, which `once` does not wait for.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        err.contains("1 event(s) still failing") && err.contains("HTTP 500"),
        "{err}"
    );
    assert_eq!(
        store.cursor("hooks").unwrap(),
        0,
        "the cursor stays before it"
    );
    assert_eq!(store.dead_letter_count("hooks").unwrap(), 0);
    assert_eq!(rx.accepted().len(), 1, "the other user was not held back");
    assert_eq!(
        store.sink_state("hooks").unwrap().health,
        SinkHealth::Degraded
    );

    rx.script(|_, _| ok());
    assert_eq!(deliver::drain(&store, s.sink().as_ref()).await.unwrap(), 2);
    assert_eq!(store.cursor("hooks").unwrap(), 2);
    let first = events[0].id.to_string();
    assert_eq!(
        rx.accepted().iter().filter(|(id, _)| *id == first).count(),
        1
    );
    assert_eq!(store.sink_state("hooks").unwrap().health, SinkHealth::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_events_arrive_in_log_order_while_other_users_proceed_in_parallel() {
    // User 1 fails every first attempt and so retries each event; the others are merely slow.
    let rx = Receiver::start(|hit, attempt| {
        if hit.subject == "1" && attempt == 1 {
            status(500)
        } else {
            Reply {
                delay: Duration::from_millis(15),
                ..ok()
            }
        }
    })
    .await;
    let s = Setup::new(
        &rx.url,
        SECRET,
        "max_in_flight = 4\nretry_schedule = [\"0s\", \"100ms\", \"100ms\"]",
    );
    let store = s.store();
    let users = ["1", "2", "3", "4", "5", "6", "7", "8"];
    let mut log = Vec::new();
    for _ in 0..10 {
        log.extend(created(&users));
    }
    let events = append(&store, &log);
    assert_eq!(deliver::drain(&store, s.sink().as_ref()).await.unwrap(), 80);

    let offset_of: HashMap<String, u64> = events
        .iter()
        .map(|e| (e.id.to_string(), e.offset().unwrap()))
        .collect();
    let subject_of: HashMap<String, String> = events
        .iter()
        .map(|e| (e.id.to_string(), e.subject.clone()))
        .collect();
    let accepted = rx.accepted();
    assert_eq!(accepted.len(), 80, "each event accepted exactly once");
    let mut per_user: BTreeMap<String, Vec<(u64, Instant)>> = BTreeMap::new();
    for (id, at) in &accepted {
        per_user
            .entry(subject_of[id].clone())
            .or_default()
            .push((offset_of[id], *at));
    }
    for (user, seq) in &per_user {
        let offsets: Vec<u64> = seq.iter().map(|(o, _)| *o).collect();
        assert!(offsets.is_sorted(), "user {user} out of order: {offsets:?}");
    }
    // A later event of a user is not even tried before the earlier one was accepted.
    for hit in rx.hits() {
        let (offset, user) = (offset_of[&hit.id], &subject_of[&hit.id]);
        if let Some((_, prev_at)) = per_user[user].iter().rev().find(|(o, _)| *o < offset) {
            assert!(
                hit.arrived >= *prev_at,
                "user {user}: offset {offset} sent too early"
            );
        }
    }
    let most = rx.shared.most_in_flight.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} requests in flight at once");
    let last_of = |u: &str| per_user[u].last().unwrap().1;
    for u in &users[1..] {
        assert!(
            last_of(u) < last_of("1"),
            "user {u} waited for user 1's retries"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_event_types_are_sent_and_the_cursor_passes_the_rest() {
    let rx = Receiver::start(|_, _| ok()).await;
    let s = Setup::new(
        &rx.url,
        SECRET,
        "event_types = [\"user.created\", \"user.deleted\"]",
    );
    let store = s.store();
    append(
        &store,
        &[
            (EventType::UserCreated, "1"),
            (EventType::UserUpdated, "1"),
            (EventType::UserLogin, "2"),
            (EventType::UserDeleted, "1"),
            (EventType::UserUpdated, "2"),
        ],
    );
    assert_eq!(deliver::drain(&store, s.sink().as_ref()).await.unwrap(), 2);
    let types: Vec<String> = rx
        .hits()
        .iter()
        .map(|h| {
            let e: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
            e["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(types, ["user.created", "user.deleted"]);
    assert_eq!(store.cursor("hooks").unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_redelivers_with_the_same_webhook_id() {
    // The first process gets no answer in time: every request hangs until it is killed.
    let rx = Receiver::start(|_, _| Reply {
        delay: Duration::from_secs(30),
        ..ok()
    })
    .await;
    let s = Setup::new(&rx.url, SECRET, "timeout = \"60s\"\nmax_in_flight = 4");
    let events = append(&s.store(), &created(&["1", "2", "3", "4", "5", "6"]));
    let run = running::run_config(&s.config_path).await;
    rx.wait_for_hits(4).await;
    drop(run); // SIGKILL
    let first: Vec<String> = rx.hits().iter().map(|h| h.id.clone()).collect();
    assert!(rx.accepted().is_empty());

    rx.script(|_, _| ok());
    let run = running::run_config(&s.config_path).await;
    wait::until("every event accepted after the restart", || {
        rx.accepted().len() >= events.len()
    })
    .await;
    drop(run);
    let accepted: Vec<String> = rx.accepted().into_iter().map(|(id, _)| id).collect();
    for e in &events {
        assert!(
            accepted.contains(&e.id.to_string()),
            "event {} delivered",
            e.id
        );
    }
    for id in &first {
        assert!(
            accepted.contains(id),
            "{id} sent again with the same webhook-id"
        );
    }
    assert!(rx.hits().iter().all(|h| verifies(SECRET, h)));
    assert!(s.path().join("data").exists());
}

/// The CLI, off the async runtime (the child it talks to polls a simulator this test serves).
async fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_run_up_the_cli_retries_dead_letters_re_enables_a_gone_endpoint_replays_and_lists_events(
) {
    use support::sim::{Sim, SimOptions};
    let sim = Sim::start(SimOptions::default()).await;
    let rx = Receiver::start(|_, _| status(500)).await;
    let s = Setup::polling(
        &sim.url,
        "1s",
        &rx.url,
        SECRET,
        "retry_schedule = [\"0s\", \"10ms\"]",
    );
    let config = s.config_path.clone();
    let mut run = running::run_config(&config).await;

    // The first poll stores what is there without events: wait for it.
    wait::until_async("the first poll", || async {
        cli(&config, &["status", "--json"])
            .await
            .1
            .contains("\"users_known\": 1")
    })
    .await;
    // A dead letter, listed and retried through the running process.
    let alice = sim.add_user("alice", "pw", &[4]);
    wait::until_async("alice's event dead-lettered", || async {
        cli(&config, &["dlq", "list", "--sink", "hooks"])
            .await
            .1
            .contains("user.created")
    })
    .await;
    rx.script(|_, _| ok());
    // Alice's event, and the first poll's sync.completed before it, both refused.
    let (fine, said) = cli(&config, &["dlq", "retry", "--sink", "hooks"]).await;
    assert!(
        fine && said.contains("2 delivered, 0 still dead-lettered"),
        "{said}"
    );

    // A 410 stops the sink; `sink enable` starts it again, and the event it held goes out.
    rx.script(|_, _| status(410));
    let bob = sim.add_user("bob", "pw", &[4]);
    wait::until_async("the sink disabled by a 410", || async {
        cli(&config, &["status", "--json"])
            .await
            .1
            .contains("\"disabled\"")
    })
    .await;
    rx.script(|_, _| ok());
    let (fine, said) = cli(&config, &["sink", "enable", "hooks"]).await;
    assert!(fine && said.contains("sink hooks enabled"), "{said}");
    wait::until("bob's event accepted after the restart", || {
        rx.hits().iter().any(|h| h.subject == bob.to_string()) && rx.accepted().len() >= 2
    })
    .await;

    // `events` lists the log; a replay through the running process re-sends it with the
    // same ids.
    let (fine, listed) = cli(&config, &["events"]).await;
    assert!(fine, "{listed}");
    for subject in [alice, bob] {
        assert!(
            listed.contains(&format!("\"subject\":\"{subject}\"")),
            "{listed}"
        );
    }
    let logged: Vec<String> = listed
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let before = rx.accepted().len();
    let (fine, said) = cli(
        &config,
        &["replay", "--sink", "hooks", "--from-offset", "0"],
    )
    .await;
    assert!(fine && said.contains("3 sent"), "{said}");
    let accepted: Vec<String> = rx.accepted().into_iter().map(|(id, _)| id).collect();
    assert_eq!(accepted[before..], logged[..]);

    // The running process acts on the config it started with: a sink added to the file since
    // waits for a restart, and the command says so.
    let archive = s.path().join("archive.jsonl");
    let mut raw = std::fs::read_to_string(&config).unwrap();
    raw.push_str(&format!(
        "\n[[sinks]]\nkind = \"jsonl\"\nname = \"archive\"\npath = {:?}\n",
        archive.display().to_string()
    ));
    std::fs::write(&config, &raw).unwrap();
    let (fine, said) = cli(
        &config,
        &["replay", "--sink", "archive", "--from-offset", "0"],
    )
    .await;
    assert!(
        !fine
            && said.contains("changed since this `rollcall run` started")
            && said.contains("no sink named 'archive'"),
        "{said}"
    );
    assert!(!archive.exists());
    // Another config file naming the same store is refused, naming both files.
    let other = s.path().join("other.toml");
    std::fs::write(&other, &raw).unwrap();
    let (fine, said) = cli(&other, &["status"]).await;
    assert!(
        !fine
            && said.contains("other.toml")
            && said.contains(&format!(
                "--config {}",
                config.canonicalize().unwrap().display()
            )),
        "{said}"
    );

    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the same process ran throughout"
    );
    use std::os::unix::fs::PermissionsExt;
    let socket = s.path().join("data.admin").join("rollcall.sock");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode(socket.parent().unwrap()), mode(&socket)),
        (0o700, 0o600),
        "only the store's owner may use the admin socket"
    );
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_of_one_actor_do_not_wait_behind_one_another() {
    // Row 1 is refused until every other row of the same actor has been accepted: that can
    // only happen if those do not queue behind it.
    let others = Arc::new(AtomicUsize::new(0));
    let accepted_others = others.clone();
    let rx = Receiver::start(move |hit, _| {
        let event: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
        if event["data"]["log_id"] != 1 {
            accepted_others.fetch_add(1, Ordering::SeqCst);
            ok()
        } else if accepted_others.load(Ordering::SeqCst) < 9 {
            status(500)
        } else {
            ok()
        }
    })
    .await;
    let schedule = vec!["\"20ms\""; 40].join(", ");
    let s = Setup::new(
        &rx.url,
        SECRET,
        &format!("max_in_flight = 4\nretry_schedule = [\"0s\", {schedule}]"),
    );
    let store = s.store();
    let rows: Vec<Event> = (1..=10)
        .map(|log_id| {
            event(
                EventType::AuditAction,
                "7",
                chrono::Utc::now(),
                serde_json::json!({"log_id": log_id, "action": "DashboardRestApi.get"}),
            )
        })
        .collect();
    log::append(&store, rows);
    assert_eq!(deliver::drain(&store, s.sink().as_ref()).await.unwrap(), 10);
    assert_eq!(others.load(Ordering::SeqCst), 9);
    assert_eq!(
        store.dead_letter_count("hooks").unwrap(),
        0,
        "row 1 got through too"
    );
    assert_eq!(rx.accepted().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_echoing_the_endpoint_url_and_escapes_has_both_made_harmless_everywhere() {
    let rx = Receiver::start(|_, _| Reply {
        echo_url: true,
        ..status(400)
    })
    .await;
    let url = format!("{}?token=ECHOTOKEN12345", rx.url);
    let s = Setup::new(&url, SECRET, "retry_schedule = [\"0s\"]");
    {
        let store = s.store();
        append(&store, &created(&["1"]));
        let sink = s.sink();
        deliver::drain(&store, sink.as_ref()).await.unwrap();
        let letters = store.dead_letters("hooks").unwrap();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0].reason.contains("no hook at [redacted]"),
            "{}",
            letters[0].reason
        );
    }
    let list = s.rollcall(&["dlq", "list", "--sink", "hooks"]);
    let status = s.rollcall(&["status"]);
    for out in [&list, &status] {
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("ECHOTOKEN"), "no URL token: {text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "no raw escape: {text}"
        );
    }
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("\\u{1b}[2J"),
        "escapes are shown escaped: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_parses_only_json_gets_application_json_when_configured() {
    let rx = Receiver::start(|_, _| ok()).await;
    let s = Setup::new(&rx.url, SECRET, "content_type = \"application/json\"");
    let store = s.store();
    append(&store, &created(&["1"]));
    let sink = s.sink();
    assert_eq!(deliver::drain(&store, sink.as_ref()).await.unwrap(), 1);
    assert_eq!(
        header(&rx.hits()[0].headers, "content-type"),
        "application/json"
    );
    assert!(verifies(SECRET, &rx.hits()[0]));
}

#[test]
fn a_secret_shorter_than_24_bytes_is_refused_by_check_config() {
    let s = Setup::new(
        "http://127.0.0.1:9/hook",
        "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==",
        "",
    );
    let out = s.rollcall(&["check-config"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("22 bytes") && said.contains("at least 24") && !said.contains("dGhpcyBp"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_secret_signs_v1a_which_the_receiver_verifies_with_the_public_key_only() {
    use base64::Engine;
    use ed25519_dalek::Verifier;
    let b64 = base64::engine::general_purpose::STANDARD;
    let seed = [7u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let rx = Receiver::start(|_, _| ok()).await;
    // Rotating from HMAC to Ed25519: both sign while the receiver moves over.
    let s = Setup::new(&rx.url, &format!("{SECRET} whsk_{}", b64.encode(seed)), "");
    let store = s.store();
    append(&store, &created(&["1"]));
    assert_eq!(deliver::drain(&store, s.sink().as_ref()).await.unwrap(), 1);
    let hit = &rx.hits()[0];
    assert!(verifies(SECRET, hit), "the v1 signature still verifies");
    let signatures = header(&hit.headers, "webhook-signature");
    let v1a = signatures
        .split(' ')
        .find_map(|s| s.strip_prefix("v1a,"))
        .expect("a v1a signature");
    let signature = ed25519_dalek::Signature::from_slice(&b64.decode(v1a).unwrap()).unwrap();
    let signed = [
        hit.id.as_bytes(),
        b".",
        header(&hit.headers, "webhook-timestamp").as_bytes(),
        b".",
        &hit.body,
    ]
    .concat();
    assert!(public.verify(&signed, &signature).is_ok());
    let mut tampered = signed.clone();
    tampered.push(b' ');
    assert!(public.verify(&tampered, &signature).is_err());
    // The receiver gets the public key from the CLI, never the secret.
    let out = s.rollcall(&["sink", "public-key", "hooks"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert_eq!(
        printed.trim(),
        format!("whpk_{}", b64.encode(public.to_bytes()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_sends_a_signed_test_event_only_when_asked() {
    let rx = Receiver::start(|_, _| ok()).await;
    let s = Setup::new(&rx.url, SECRET, "");
    let plain = s.rollcall(&["doctor"]);
    assert!(rx.hits().is_empty(), "no event without the flag");
    assert!(String::from_utf8_lossy(&plain.stdout).contains("ok    sink hooks"));
    let asked = s.rollcall(&["doctor", "--send-test-event"]);
    let said = String::from_utf8_lossy(&asked.stdout);
    assert!(
        said.contains("sink hooks: accepted a signed test event"),
        "{said}"
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    assert!(verifies(SECRET, &hits[0]));
    let event: serde_json::Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(event["type"], "rollcall.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_retry_waits_stops_without_waiting_for_it_and_keeps_the_event_for_the_next_start(
) {
    let rx = Receiver::start(|_, _| status(500)).await;
    let s = Setup::new(&rx.url, SECRET, "");
    append(&s.store(), &created(&["1"]));
    let r = running::run_config(&s.config_path).await;
    // Tried at once and again after 5 s; the next try is minutes away.
    rx.wait_for_hits(2).await;
    // SAFETY: the child is ours and still running (its log is read until it exits).
    assert_eq!(
        unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let (status, r) = tokio::task::spawn_blocking(move || {
        let mut r = r;
        let status = r.child.wait().unwrap();
        (status, r)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    r.said("stopped").await;
    let log = r.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("did not finish"),
        "the retry's pause ended with the stop: {log}"
    );
    drop(r);
    assert_eq!(
        s.store().cursor("hooks").unwrap(),
        0,
        "left for the next start"
    );
}
