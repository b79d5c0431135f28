//! The SSF sink in a real `rollcall run` against the Superset simulator, with a strict receiver
//! written from the specifications (`support::ssf`): discovery, the JWKS, push and poll
//! streams, every SET a Superset lifecycle makes, verification, pause, disable, a receiver
//! down then up, refusals that dead-letter, and the management API's answers to bad requests.

use crate::support;

use std::path::{Path, PathBuf};

use rollcall::store::Store;
use rollcall_sim::kylin::{KylinOptions, KylinSim, ADMIN, ADMIN_PASSWORD};
use serde_json::{json, Value};
use support::running::{self, Running};
use support::sim::{Sim, SimOptions};
use support::ssf::{self as receiver, Mood, Receiver, Trust};
use support::wait;
use tempfile::TempDir;

pub(crate) const PUSH: &str = "urn:ietf:rfc:8935";
pub(crate) const POLL: &str = "urn:ietf:rfc:8936";
pub(crate) const TOKEN: &str = "mgmt-7d1f0c9e2b";
pub(crate) const RX_AUTH: &str = "Bearer rx-chosen-secret";
const AUD: &str = "https://receiver.test/ssf";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const SUPPORTED: [&str; 6] = [
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-purged",
    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    "https://schemas.openid.net/secevent/caep/event-type/session-established",
    "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
];

/// A port free now, for the transmitter's listener: its issuer URL must name the port before
/// the process starts. (The metrics listener binds port 0 and logs what it got.)
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Setup<S = Sim> {
    dir: TempDir,
    config: PathBuf,
    issuer: String,
    sim: S,
}

/// The `[[sources]]` table of source `name`, `kind`, at `url`, as `username` with the password
/// in `password`.
fn source(kind: &str, name: &str, url: &str, username: &str, password: &Path) -> String {
    format!(
        r#"kind = "{kind}"
name = "{name}"
url = "{url}"
username = "{username}"
password_file = {password:?}"#,
        password = password.display().to_string(),
    )
}

impl Setup<Sim> {
    /// A config polling a fresh Superset simulator every second, with an SSF sink `signals`
    /// (`extra` added to its table) whose retries come fast.
    async fn new(extra: &str) -> Setup<Sim> {
        let sim = Sim::start(SimOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "admin\n").unwrap();
        let source = source("superset", "prod", &sim.url, "admin", &password);
        Setup::write(dir, sim, &source, extra)
    }
}

impl Setup<KylinSim> {
    /// The same with a Kylin simulator as the source `bi`.
    async fn kylin() -> Setup<KylinSim> {
        let sim = KylinSim::start(KylinOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, format!("{ADMIN_PASSWORD}\n")).unwrap();
        let source = source("kylin", "bi", &sim.url, ADMIN, &password);
        Setup::write(dir, sim, &source, "")
    }
}

impl Setup<()> {
    /// The same polling a real Superset at `url` as the service account `username`, as the
    /// source `prod`; `extra` is added after the SSF sink's table.
    pub(crate) fn superset(
        url: &str,
        username: &str,
        password_file: &Path,
        extra: &str,
    ) -> Setup<()> {
        let source = source("superset", "prod", url, username, password_file);
        Setup::write(tempfile::tempdir().unwrap(), (), &source, extra)
    }
}

impl<S> Setup<S> {
    fn write(dir: TempDir, sim: S, source: &str, extra: &str) -> Setup<S> {
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let key = format!(
            "{}/tests/fixtures/ssf/rsa-2048.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        let retries: Vec<&str> = std::iter::once("0s")
            .chain(std::iter::repeat_n("100ms", 600))
            .collect();
        let config = dir.path().join("rollcall.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:0"

[store]
path = {store:?}

[[sources]]
{source}
poll_interval = "1s"

[[sinks]]
kind = "ssf"
name = "signals"
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
signing_key_file = {key:?}
audience = "{AUD}"
management_token_file = {token:?}
retry_schedule = {retries:?}
subject_issuers = {{ prod = "https://superset.example.com/" }}
{extra}
"#,
                store = dir.path().join("data").display().to_string(),
                token = dir.path().join("token").display().to_string(),
            ),
        )
        .unwrap();
        Setup {
            dir,
            config,
            issuer,
            sim,
        }
    }

    /// `rollcall run`, once its first poll has stored what is there and the transmitter
    /// listens.
    pub(crate) async fn run(&self) -> Running {
        let run = running::run_config(&self.config).await;
        wait::until("the transmitter to listen", || {
            run.logged_message("serving the SSF transmitter").is_some()
        })
        .await;
        running::wait_for("the first poll", || async {
            status(&run).await["sources"][0]["last_poll"].is_string()
        })
        .await;
        run
    }

    /// A management request with the token; the status and the JSON body (null when empty).
    pub(crate) async fn manage(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.issuer);
        let mut req = reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A push stream to `rx`, which from now on trusts this transmitter for it.
    pub(crate) async fn push_stream(&self, rx: &Receiver) -> Value {
        let (code, stream) = self
            .manage(
                "POST",
                "/ssf/stream",
                Some(json!({"delivery": {"method": PUSH, "endpoint_url": rx.url,
                        "authorization_header": RX_AUTH}})),
            )
            .await;
        assert_eq!(code, 201, "{stream}");
        rx.trust(self.trust(&stream).await);
        stream
    }

    pub(crate) async fn trust(&self, stream: &Value) -> Trust {
        let metadata = receiver::discover(&self.issuer).await;
        Trust {
            issuer: self.issuer.clone(),
            jwks: receiver::jwks(&metadata).await,
            aud: stream["aud"].as_str().unwrap().to_owned(),
            events_delivered: serde_json::from_value(stream["events_delivered"].clone()).unwrap(),
        }
    }

    async fn set_status(&self, stream: &Value, status: &str) {
        let (code, body) = self
            .manage(
                "POST",
                "/ssf/status",
                Some(json!({"stream_id": stream["stream_id"], "status": status})),
            )
            .await;
        assert_eq!((code, body["status"].as_str()), (200, Some(status)));
    }

    fn store(&self) -> Store {
        Store::open(&self.dir.path().join("data")).unwrap()
    }
}

async fn status(run: &Running) -> Value {
    serde_json::from_str(&run.get("/status").await.1).unwrap()
}

/// The `/status` row of a stream's deliveries.
async fn stream_row(run: &Running, stream: &Value) -> Value {
    let name = format!("signals/{}", stream["stream_id"].as_str().unwrap());
    status(run).await["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .cloned()
        .unwrap_or(Value::Null)
}

/// Wait until the log holds more events than `before` (a change was polled and committed).
async fn committed(run: &Running, before: u64) {
    running::wait_for("the change to be committed", || async {
        head(run).await > before
    })
    .await;
}

async fn head(run: &Running) -> u64 {
    status(run).await["log_head"].as_u64().unwrap()
}

/// Wait until `rx` has accepted `n` SETs; returns them.
async fn accepted(rx: &Receiver, n: usize) -> Vec<receiver::Accepted> {
    wait::until(&format!("{n} SETs accepted"), || rx.accepted().len() >= n).await;
    assert!(rx.refused().is_empty(), "{:?}", rx.refused());
    rx.accepted()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_discovers_the_transmitter_and_gets_every_superset_change_as_a_signed_set() {
    let s = Setup::new("").await;
    let run = s.run().await;
    let meta = receiver::discover(&s.issuer).await;
    assert_eq!(meta["spec_version"], "1_0");
    assert_eq!(meta["delivery_methods_supported"], json!([PUSH, POLL]));
    assert_eq!(meta["events_supported"], json!(SUPPORTED));
    for endpoint in [
        "configuration_endpoint",
        "status_endpoint",
        "add_subject_endpoint",
        "remove_subject_endpoint",
        "verification_endpoint",
    ] {
        assert!(
            meta[endpoint].as_str().unwrap().starts_with(&s.issuer),
            "{meta}"
        );
    }
    let rx = Receiver::start(RX_AUTH).await;
    let stream = s.push_stream(&rx).await;
    assert_eq!(stream["iss"], s.issuer.as_str());
    assert_eq!(stream["aud"], AUD);
    assert_eq!(stream["events_delivered"], json!(SUPPORTED));
    assert!(
        stream["delivery"].get("authorization_header").is_none(),
        "the receiver's secret is not shown back: {stream}"
    );

    // Verification, with the state echoed; a second one so soon is refused.
    let verify = json!({"stream_id": stream["stream_id"], "state": "qL3b9Zr2"});
    assert_eq!(
        s.manage("POST", "/ssf/verify", Some(verify.clone()))
            .await
            .0,
        204
    );
    let got = accepted(&rx, 1).await;
    assert!(got[0]
        .event_type()
        .ends_with("/ssf/event-type/verification"));
    assert_eq!(got[0].event()["state"], "qL3b9Zr2");
    assert_eq!(
        got[0].claims["sub_id"],
        json!({"format": "opaque", "id": stream["stream_id"]})
    );
    assert_eq!(s.manage("POST", "/ssf/verify", Some(verify)).await.0, 429);

    // A Superset lifecycle, one change per poll; a user appearing is not sent.
    let before = head(&run).await;
    let alice = s.sim.add_user("alice", "pw", &[4]);
    committed(&run, before).await;
    let sim = &s.sim;
    type Change<'a> = Box<dyn Fn() + 'a>;
    let steps: Vec<(Change, &str, Value)> = vec![
        (
            Box::new(|| assert!(sim.login("alice", "pw"))),
            "caep/event-type/session-established",
            json!(null),
        ),
        (
            Box::new(|| sim.update_user(alice, |u| u.roles.push(3))),
            "caep/event-type/token-claims-change",
            json!({"roles": ["Alpha", "Gamma"]}),
        ),
        (
            Box::new(|| sim.update_user(alice, |u| u.roles.retain(|r| *r != 3))),
            "caep/event-type/token-claims-change",
            json!({"roles": ["Gamma"]}),
        ),
        (
            Box::new(|| {
                sim.add_group("analysts", &[alice]);
            }),
            "caep/event-type/token-claims-change",
            json!({"groups": ["analysts"]}),
        ),
        (
            Box::new(|| {
                sim.update_user(alice, |u| {
                    u.first_name = "Alicia".into();
                    u.email = "alicia@example.org".into();
                })
            }),
            "caep/event-type/token-claims-change",
            json!({"given_name": "Alicia", "email": "alicia@example.org"}),
        ),
        (
            Box::new(|| sim.update_user(alice, |u| u.active = false)),
            "risc/event-type/account-disabled",
            json!(null),
        ),
        (
            Box::new(|| sim.update_user(alice, |u| u.active = true)),
            "risc/event-type/account-enabled",
            json!(null),
        ),
        (
            Box::new(|| assert!(sim.delete_user(alice))),
            "risc/event-type/account-purged",
            json!(null),
        ),
    ];
    for (i, (change, event_type, claims)) in steps.iter().enumerate() {
        change();
        let got = accepted(&rx, i + 2).await;
        let set = &got[i + 1];
        assert!(set.event_type().ends_with(event_type), "{:?}", set.claims);
        if !claims.is_null() {
            assert_eq!(set.event()["claims"], *claims);
        }
        assert_eq!(
            set.claims["sub_id"],
            json!({"format": "iss_sub", "iss": "https://superset.example.com/", "sub": alice.to_string()})
        );
        assert_eq!(set.claims["txn"], set.claims["jti"]);
        if set.event_type().starts_with(RISC) {
            assert_eq!(set.claims["toe"], set.claims["iat"], "the event's time");
        } else {
            assert!(set.event_type().starts_with(CAEP));
            assert!(set.event()["event_timestamp"].is_i64());
        }
    }
    // Each SET is one rollcall event, its jti the event id (the JSONL view is the store's).
    let events: Vec<Value> = s
        .store_events(run)
        .into_iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap();
            t.starts_with("user.") && t != "user.created"
        })
        .collect();
    let sets = rx.accepted();
    let jtis: Vec<&str> = sets[1..]
        .iter()
        .map(|a| a.claims["jti"].as_str().unwrap())
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(jtis, ids);
}

impl<S> Setup<S> {
    /// The events in the log, read once `run` has stopped.
    fn store_events(&self, run: Running) -> Vec<Value> {
        drop(run);
        self.store()
            .events_from(0, 1000)
            .unwrap()
            .iter()
            .map(|e| serde_json::from_slice(&e.bytes).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_receiver_down_then_up_gets_the_same_sets_and_pause_keeps_while_disable_drops() {
    let s = Setup::new("").await;
    let run = s.run().await;
    let rx = Receiver::start(RX_AUTH).await;
    let stream = s.push_stream(&rx).await;
    let bob = s.sim.add_user("bob", "pw", &[4]);
    committed(&run, head(&run).await).await;

    // Down: the SET is tried again and again; once up, the same bytes are accepted.
    rx.mood(Mood::Down);
    s.sim.update_user(bob, |u| u.active = false);
    wait::until("attempts while the receiver is down", || {
        rx.arrived().len() >= 3
    })
    .await;
    let first = rx.arrived()[0].clone();
    rx.mood(Mood::Strict);
    let got = accepted(&rx, 1).await;
    assert_eq!(got[0].raw, first, "re-sent byte for byte");
    assert!(got[0].event_type().ends_with("account-disabled"));
    assert!(rx.arrived().iter().all(|b| *b == first));

    // Paused: the change waits for the stream, and comes once it is enabled again.
    s.set_status(&stream, "paused").await;
    let (code, read) = s
        .manage(
            "GET",
            &format!(
                "/ssf/status?stream_id={}",
                stream["stream_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!((code, read["status"].as_str()), (200, Some("paused")));
    let before = head(&run).await;
    s.sim.update_user(bob, |u| u.active = true);
    committed(&run, before).await;
    running::wait_for("the paused stream to hold the event", || async {
        stream_row(&run, &stream).await["lag_events"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(rx.accepted().len(), 1);
    s.set_status(&stream, "enabled").await;
    let got = accepted(&rx, 2).await;
    assert!(got[1].event_type().ends_with("account-enabled"));

    // Disabled: what happens meanwhile is never sent; a user's SETs keep their order, so the
    // next one arriving alone proves it.
    s.set_status(&stream, "disabled").await;
    let before = head(&run).await;
    s.sim.update_user(bob, |u| u.roles.push(3));
    committed(&run, before).await;
    s.set_status(&stream, "enabled").await;
    s.sim.update_user(bob, |u| u.active = false);
    let got = accepted(&rx, 3).await;
    assert!(
        got[2].event_type().ends_with("account-disabled"),
        "{:?}",
        got[2].claims
    );

    // A refusal for good (400 with an error code) dead-letters the SET at once, with the why.
    rx.mood(Mood::Refuse);
    assert!(s.sim.delete_user(bob));
    // Durable once the cursor has moved past it (see the poll test).
    running::wait_for("the refused SET dead-lettered", || async {
        let row = stream_row(&run, &stream).await;
        row["dead_letters"] == 1 && row["lag_events"] == 0
    })
    .await;
    drop(run);
    let name = format!("signals/{}", stream["stream_id"].as_str().unwrap());
    let letters = s.store().dead_letters(&name).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event["type"], "user.deleted");
    assert!(
        letters[0].reason.contains("invalid_audience: not ours"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].attempts, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_receiver_long_polls_acknowledges_and_reports_errors_that_dead_letter() {
    let s = Setup::new("poll_wait = \"120s\"").await;
    let run = s.run().await;
    let (code, stream) = s
        .manage(
            "POST",
            "/ssf/stream",
            Some(json!({"delivery": {"method": POLL}, "format": "email"})),
        )
        .await;
    assert_eq!(code, 201, "{stream}");
    let endpoint = stream["delivery"]["endpoint_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(endpoint.starts_with(&format!("{}/ssf/poll/", s.issuer)));
    let trust = s.trust(&stream).await;
    let quick = json!({"returnImmediately": true});
    let (sets, more) = receiver::poll(&endpoint, TOKEN, &trust, quick.clone()).await;
    assert!(sets.is_empty() && !more);

    let carol = s.sim.add_user("carol", "pw", &[4]);
    committed(&run, head(&run).await).await;
    // A long poll waits for the SET the change makes.
    let waiting = {
        let (endpoint, trust) = (endpoint.clone(), trust.clone());
        tokio::spawn(async move { receiver::poll(&endpoint, TOKEN, &trust, json!({})).await })
    };
    s.sim.update_user(carol, |u| u.active = false);
    let (sets, _) = waiting.await.unwrap();
    assert_eq!(sets.len(), 1);
    let (jti, set) = sets.into_iter().next().unwrap();
    let set = set.unwrap();
    assert_eq!(
        set["sub_id"],
        json!({"format": "email", "email": "carol@example.com"}),
        "the format the stream asked for"
    );
    assert!(set["events"].get(SUPPORTED[0]).is_some());
    let ack_only = json!({"ack": [jti], "maxEvents": 0, "returnImmediately": true});
    let (sets, _) = receiver::poll(&endpoint, TOKEN, &trust, ack_only).await;
    assert!(sets.is_empty());

    // Verification comes through the queue too; then one SET reported, one acknowledged.
    let verify = json!({"stream_id": stream["stream_id"], "state": "s1"});
    assert_eq!(s.manage("POST", "/ssf/verify", Some(verify)).await.0, 204);
    s.sim.update_user(carol, |u| u.active = true);
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let (sets, _) = receiver::poll(&endpoint, TOKEN, &trust, json!({"maxEvents": 5})).await;
        seen.extend(sets.into_iter().map(|(j, s)| (j, s.unwrap())));
    }
    let (verification, enabled): (Vec<_>, Vec<_>) = seen.into_iter().partition(|(_, s)| {
        s["events"]
            .to_string()
            .contains("/ssf/event-type/verification")
    });
    assert_eq!(
        verification[0].1["events"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["state"],
        "s1"
    );
    let report = json!({
        "ack": [verification[0].0],
        "setErrs": {enabled[0].0.clone(): {"err": "invalid_request", "description": "not for us"}},
        "maxEvents": 0, "returnImmediately": true,
    });
    receiver::poll(&endpoint, TOKEN, &trust, report).await;
    // The cursor moves past a dead-lettered SET only once its dead letter is durable; a count
    // alone may be read between the letter's write and its flush.
    running::wait_for("the reported SET dead-lettered", || async {
        let row = stream_row(&run, &stream).await;
        row["dead_letters"] == 1 && row["lag_events"] == 0
    })
    .await;
    drop(run);
    let name = format!("signals/{}", stream["stream_id"].as_str().unwrap());
    let letters = s.store().dead_letters(&name).unwrap();
    assert_eq!(letters[0].event["type"], "user.reactivated");
    assert!(letters[0].reason.contains("invalid_request: not for us"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_malformed_requests_are_refused_with_ssf_error_bodies() {
    let s = Setup::new(
        "max_streams = 1\nmax_request_bytes = 1024\nallowed_push_endpoints = [\"https://rx.example/\"]",
    )
    .await;
    let run = s.run().await;
    let client = reqwest::Client::new();
    let url = format!("{}/ssf/stream", s.issuer);

    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["err"], "authentication_failed");
    let poll = client
        .post(format!("{}/ssf/poll/x", s.issuer))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 401, "the poll endpoint needs the token too");

    let malformed = client
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["err"], "invalid_request");

    for (body, says) in [
        (json!([1]), "JSON object"),
        (
            json!({"delivery": {"method": PUSH, "endpoint_url": "http://rx.example/e"}}),
            "https",
        ),
        (
            json!({"delivery": {"method": PUSH, "endpoint_url": "https://other.example/e"}}),
            "allowed push endpoints",
        ),
        (
            json!({"delivery": {"method": "urn:x"}}),
            "unsupported delivery method",
        ),
        (json!({"events_requested": [1]}), "events_requested"),
        (json!({"stream_id": "mine"}), "set by the transmitter"),
    ] {
        let (code, answer) = s.manage("POST", "/ssf/stream", Some(body.clone())).await;
        assert_eq!(code, 400, "{body} -> {answer}");
        assert_eq!(answer["err"], "invalid_request");
        assert!(
            answer["description"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let big = json!({"description": "x".repeat(2000)});
    let (code, _) = s.manage("POST", "/ssf/stream", Some(big)).await;
    assert_eq!(code, 413);

    let (code, stream) = s.manage("POST", "/ssf/stream", Some(json!({}))).await;
    assert_eq!(code, 201);
    let (code, full) = s.manage("POST", "/ssf/stream", Some(json!({}))).await;
    assert_eq!((code, full["err"].as_str()), (409, Some("invalid_request")));
    let id = stream["stream_id"].as_str().unwrap();
    for (method, path, body, expected) in [
        ("GET", "/ssf/stream?stream_id=nope".to_owned(), None, 404),
        ("DELETE", "/ssf/stream".to_owned(), None, 400),
        ("GET", "/ssf/status?stream_id=nope".to_owned(), None, 404),
        (
            "POST",
            "/ssf/status".to_owned(),
            Some(json!({"stream_id": id, "status": "asleep"})),
            400,
        ),
        (
            "POST",
            "/ssf/subjects:add".to_owned(),
            Some(json!({"stream_id": id, "subject": {"format": "email"}})),
            400,
        ),
        (
            "POST",
            "/ssf/subjects:add".to_owned(),
            Some(json!({"stream_id": id, "subject": {"format": "email", "email": "a@b"}})),
            200,
        ),
        (
            "POST",
            "/ssf/subjects:remove".to_owned(),
            Some(json!({"stream_id": id, "subject": {"format": "email", "email": "a@b"}})),
            204,
        ),
        (
            "POST",
            "/ssf/verify".to_owned(),
            Some(json!({"state": "s"})),
            400,
        ),
        (
            "POST",
            format!("/ssf/poll/{id}"),
            Some(json!({"maxEvents": -1})),
            400,
        ),
        (
            "POST",
            format!("/ssf/poll/{id}"),
            Some(json!({"ack": "x"})),
            400,
        ),
        (
            "PATCH",
            "/ssf/stream".to_owned(),
            Some(json!({"stream_id": id, "aud": "other"})),
            400,
        ),
        (
            "PATCH",
            "/ssf/stream".to_owned(),
            Some(json!({"stream_id": id, "description": "d"})),
            200,
        ),
        ("DELETE", format!("/ssf/stream?stream_id={id}"), None, 204),
        ("GET", format!("/ssf/stream?stream_id={id}"), None, 404),
    ] {
        let (code, answer) = s.manage(method, &path, body.clone()).await;
        assert_eq!(code, expected, "{method} {path} {body:?} -> {answer}");
        if code >= 400 {
            assert!(
                answer["err"].is_string() && answer["description"].is_string(),
                "{answer}"
            );
        }
    }
    let (code, list) = s.manage("GET", "/ssf/stream", None).await;
    assert_eq!((code, list), (200, json!([])));
    let log = run.log.lock().unwrap().join("\n");
    assert!(!log.contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kylin_locks_for_good_and_password_changes_become_risc_and_caep_sets() {
    let s = Setup::kylin().await;
    let carol = s.sim.add_user("carol", "pw", &["ROLE_ANALYST"]);
    s.sim.add_user("dave", "pw", &["ROLE_ANALYST"]);
    let run = s.run().await;
    let rx = Receiver::start(RX_AUTH).await;
    s.push_stream(&rx).await;

    // A temporary lock expires unseen, so it is not sent: dave's next SET comes alone.
    assert!(s.sim.lock("dave", 3));
    let before = head(&run).await;
    committed(&run, before).await;
    assert!(s
        .sim
        .set_authorities("dave", &["ROLE_ANALYST", "ROLE_MODELER"]));
    let got = accepted(&rx, 1).await;
    assert!(got[0].event_type().ends_with("token-claims-change"));
    assert_eq!(
        got[0].event()["claims"],
        json!({"groups": ["ROLE_ANALYST", "ROLE_MODELER"]})
    );

    // A lock for good disables; the password change that lifts it is a credential change and
    // makes the account usable again.
    assert!(s.sim.lock("carol", 10));
    let got = accepted(&rx, 2).await;
    assert!(got[1]
        .event_type()
        .ends_with("risc/event-type/account-disabled"));
    assert_eq!(
        got[1].claims["sub_id"],
        json!({"format": "iss_sub", "iss": "kylin://bi", "sub": carol})
    );
    assert!(s.sim.change_password("carol", "new-pw"));
    let got = accepted(&rx, 4).await;
    let mut types: Vec<&str> = got[2..].iter().map(|a| a.event_type()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "https://schemas.openid.net/secevent/caep/event-type/credential-change",
            "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
        ]
    );
    let change = got[2..]
        .iter()
        .find(|a| a.event_type().ends_with("credential-change"))
        .unwrap();
    assert_eq!(change.event()["credential_type"], "password");
    assert_eq!(change.event()["change_type"], "update");
    assert!(change.event()["reason_admin"]["en"].is_string());
}
