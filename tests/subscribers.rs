//! What subscribers of rollcall expect of its sinks, against real parts (a sled store on disk,
//! JSONL files, rdkafka's `MockCluster` speaking the Kafka wire protocol, HTTP receivers):
//! routing by type, source and subject on every kind, counted in `status`.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rdkafka::Message;
use rollcall::config::Config;
use rollcall::deliver;
use rollcall::event::{Event, EventType};
use rollcall::replay::{replay, Request, Start};
use rollcall::store::Store;
use serde_json::Value;
use support::kafka as mock;
use support::log::{append, event};

/// What a [`Hook`] received: each request's headers and body, in arrival order.
type Hits = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An HTTP receiver that answers 204 to every POST and keeps what arrived.
struct Hook {
    url: String,
    hits: Hits,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hook {
    async fn start() -> Hook {
        Hook::answering(StatusCode::NO_CONTENT).await
    }

    /// A receiver that answers `status` to every POST.
    async fn answering(status: StatusCode) -> Hook {
        let receive = move |State(hits): State<Hits>, headers: HeaderMap, body: Bytes| async move {
            hits.lock().unwrap().push((headers, body));
            status
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(hits.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hook { url, hits, server }
    }

    /// The bodies received, as JSON, in log order (different users' arrive in any order).
    fn events(&self) -> Vec<Value> {
        let mut events: Vec<Value> = self
            .hits
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect();
        events.sort_by_key(|e| e["sequence"].as_str().unwrap().to_owned());
        events
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A store and config in a temp dir: the offline source `test` plus a second, `hr`, never
/// polled either, and `sinks` after them.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(sinks: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        setup.write(sinks);
        setup
    }

    fn write(&self, sinks: &str) {
        let secret = self.dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let sinks = format!(
            r#"[[sources]]
kind = "superset"
name = "hr"
url = "http://127.0.0.1:2"
username = "admin"
password_env = "UNUSED"

{}"#,
            sinks.replace(
                "SECRET_FILE",
                &format!("{:?}", secret.display().to_string())
            )
        );
        std::fs::write(
            self.config_path(),
            support::config::offline(self.dir.path(), "", &sinks),
        )
        .unwrap();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("rollcall.toml")
    }

    fn config(&self) -> Config {
        Config::load(&self.config_path()).unwrap()
    }

    fn store(&self) -> Store {
        Store::open(&self.config().store.path).unwrap()
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// Deliver to every sink of the config, as `rollcall once` does after polling.
    async fn drain(&self, store: &Store) {
        for sink in &self.config().sinks {
            deliver::drain(store, sink.build().unwrap().as_ref())
                .await
                .unwrap();
        }
    }

    fn rollcall(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .unwrap()
    }
}

/// An event of `t` about `subject` from the source named `source`.
fn from(source: &str, t: EventType, subject: &str) -> Event {
    let mut e = event(
        t,
        subject,
        chrono::Utc::now(),
        serde_json::json!({"user": {"id": subject}}),
    );
    e.source = format!("superset://{source}");
    e
}

/// A mixed log: both sources, several types and subjects.
fn mixed() -> Vec<Event> {
    vec![
        from("test", EventType::UserCreated, "1"),
        from("hr", EventType::UserCreated, "12"),
        from("test", EventType::UserDeactivated, "13"),
        from("hr", EventType::UserUpdated, "2"),
        from("test", EventType::UserDeleted, "1"),
        from("hr", EventType::UserDeleted, "14"),
        from("test", EventType::UserLogin, "15"),
    ]
}

/// `(source, type, subject)` of each event.
fn routed(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn triple(source: &str, t: &str, subject: &str) -> (String, String, String) {
    (
        format!("superset://{source}"),
        t.to_owned(),
        subject.to_owned(),
    )
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sink_kind_receives_only_the_types_sources_and_subjects_it_chose_and_status_counts_the_rest(
) {
    let cluster = mock::cluster("hr-events", 1);
    let hook = Hook::start().await;
    let s = Setup::new("");
    s.write(&format!(
        r#"[[sinks]]
kind = "jsonl"
name = "offboarding"
path = {offboarding:?}
event_types = ["user.deleted", "user.deactivated"]

[[sinks]]
kind = "kafka"
name = "hr-kafka"
brokers = "{brokers}"
topic = "hr-events"
mode = "structured"
sources = ["hr"]

[[sinks]]
kind = "webhook"
name = "ones"
url = "{url}"
secret_file = SECRET_FILE
subjects = ["1*"]
sources = ["test"]
"#,
        offboarding = s.path("offboarding.jsonl"),
        brokers = cluster.bootstrap_servers(),
        url = hook.url,
    ));
    let store = s.store();
    append(&store, mixed());
    s.drain(&store).await;

    assert_eq!(
        routed(&jsonl(Path::new(&s.path("offboarding.jsonl")))),
        [
            triple("test", "user.deactivated", "13"),
            triple("test", "user.deleted", "1"),
            triple("hr", "user.deleted", "14"),
        ]
    );
    let kafka: Vec<Value> = mock::consume(
        &cluster.bootstrap_servers(),
        "hr-events",
        3,
        std::time::Duration::from_millis(500),
    )
    .await
    .iter()
    .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
    .collect();
    assert_eq!(
        routed(&kafka),
        [
            triple("hr", "user.created", "12"),
            triple("hr", "user.updated", "2"),
            triple("hr", "user.deleted", "14"),
        ]
    );
    assert_eq!(
        routed(&hook.events()),
        [
            triple("test", "user.created", "1"),
            triple("test", "user.deactivated", "13"),
            triple("test", "user.deleted", "1"),
            triple("test", "user.login", "15"),
        ]
    );
    for (sink, filtered) in [("offboarding", 4), ("hr-kafka", 4), ("ones", 3)] {
        assert_eq!(
            store.cursor(sink).unwrap(),
            7,
            "{sink} passed what it skips"
        );
        assert_eq!(store.filtered(sink).unwrap(), filtered, "{sink}");
    }
    drop(store);

    let out = s.rollcall(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts: Vec<(String, u64)> = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["events_filtered"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("offboarding".to_owned(), 4),
            ("hr-kafka".to_owned(), 4),
            ("ones".to_owned(), 3)
        ]
    );
    let text = String::from_utf8(s.rollcall(&["status"]).stdout).unwrap();
    assert!(
        text.contains(
            "sink offboarding: ok, cursor 7, lag 0 events, 0 dead letters, 4 filtered out"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_filter_applies_from_then_on_and_a_replay_resends_with_it() {
    let sink = |types: &str| {
        format!("[[sinks]]\nkind = \"jsonl\"\nname = \"audit\"\npath = \"PATH\"\nevent_types = {types}\n")
    };
    let s = Setup::new("");
    let path = s.path("audit.jsonl");
    s.write(&sink(r#"["user.created"]"#).replace("PATH", &path));
    let store = s.store();
    append(&store, mixed());
    s.drain(&store).await;
    let types = |events: Vec<Value>| -> Vec<String> {
        routed(&events).into_iter().map(|(_, t, _)| t).collect()
    };
    assert_eq!(
        types(jsonl(Path::new(&path))),
        ["user.created", "user.created"]
    );

    s.write(&sink(r#"["user.deleted"]"#).replace("PATH", &path));
    append(&store, vec![from("test", EventType::UserDeleted, "3")]);
    s.drain(&store).await;
    assert_eq!(
        types(jsonl(Path::new(&path))),
        ["user.created", "user.created", "user.deleted"],
        "the events before the change stay as they were sent"
    );
    assert_eq!(store.filtered("audit").unwrap(), 5);

    let report = replay(
        &s.config(),
        &store,
        &Request {
            sink: "audit".into(),
            start: Start::Offset(0),
            to: None,
            types: None,
            dry_run: false,
            rewind: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 3, "the replay sends what the filter takes now");
    assert_eq!(
        types(jsonl(Path::new(&path)))[3..],
        ["user.deleted", "user.deleted", "user.deleted"]
    );
    assert_eq!(
        store.cursor("audit").unwrap(),
        8,
        "the replay moved no cursor"
    );
    assert_eq!(store.filtered("audit").unwrap(), 5, "nor counted anything");
}

#[test]
fn routing_keys_are_checked_where_they_are_written() {
    let s = Setup::new("");
    let problems = |table: &str| -> String {
        s.write(table);
        let out = s.rollcall(&["check-config"]);
        assert!(!out.status.success(), "{table} was accepted");
        String::from_utf8(out.stderr).unwrap()
    };
    let lines = |err: &str| -> Vec<usize> {
        err.lines()
            .filter_map(|l| l.split(".toml:").nth(1)?.split(':').next()?.parse().ok())
            .collect()
    };
    let jsonl = "[[sinks]]\nkind = \"jsonl\"\nname = \"j\"\npath = \"-\"\n";
    let err = problems(&format!(
        "{jsonl}event_types = [\"user.exploded\"]\nsubjects = [\"a[\"]\n"
    ));
    assert!(err.contains("unknown variant `user.exploded`"), "{err}");
    assert!(err.contains("`a[` in `subjects` is not a glob"), "{err}");
    let at = lines(&err);
    assert_eq!(at.len(), 2, "{err}");
    assert_eq!(at[0] + 1, at[1], "each at its own line, in order: {err}");

    let err = problems(&format!("{jsonl}sources = [\"prod\"]\n"));
    assert!(
        err.contains(
            "`sources` names `prod`, which is no source of the config; its sources are: test, hr"
        ),
        "{err}"
    );
    assert_eq!(lines(&err), [at[0]], "{err}");

    let err = problems(&format!("{jsonl}sources = []\n"));
    assert!(
        err.contains("`sources` is empty, so nothing would be sent"),
        "{err}"
    );

    let ssf = "[[sinks]]\nkind = \"ssf\"\nname = \"signals\"\nlisten = \"127.0.0.1:0\"\nissuer = \"https://signals.example.com\"\nsigning_key_file = \"k.pem\"\naudience = \"r\"\nmanagement_token_env = \"T\"\nevent_types = [\"user.deleted\"]\n";
    let err = problems(ssf);
    assert!(
        err.contains("a `ssf` sink's receivers choose their events themselves, so `event_types` is not one of its keys"),
        "{err}"
    );
    assert_eq!(lines(&err).len(), 1, "{err}");
}

/// One event of every type rollcall emits, from a Superset and a Kylin source, as the runner
/// derives them.
fn realistic() -> Vec<Event> {
    support::events::every_kind_of_event()
        .into_iter()
        .map(|e| serde_json::from_value(e).unwrap())
        .collect()
}

fn request(sink: &str, from: u64) -> Request {
    Request {
        sink: sink.into(),
        start: Start::Offset(from),
        to: None,
        types: None,
        dry_run: false,
        rewind: false,
    }
}

/// `rollcall verify` with `args`: its exit code and what it printed.
fn verify(s: &Setup, args: &[&str]) -> (i32, String) {
    let out = s.rollcall(&[&["verify"], args].concat());
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_marked_on_every_kind_redeliveries_are_not_and_a_copy_with_replays_verifies() {
    let cluster = mock::cluster("events", 1);
    let hook = Hook::start().await;
    let s = Setup::new("");
    s.write(&format!(
        r#"[[sinks]]
kind = "jsonl"
name = "siem"
path = {siem:?}

[[sinks]]
kind = "kafka"
name = "bus"
brokers = "{brokers}"
topic = "events"

[[sinks]]
kind = "webhook"
name = "soc"
url = "{url}"
secret_file = SECRET_FILE
format = "ocsf"
"#,
        siem = s.path("siem.jsonl"),
        brokers = cluster.bootstrap_servers(),
        url = hook.url,
    ));
    let store = s.store();
    let stored = append(&store, realistic());
    let n = (stored.end - stored.start) as usize;
    s.drain(&store).await;
    // At least once: a sink sends again from an older cursor, as after a crash.
    store.set_cursor("siem", 3).unwrap();
    s.drain(&store).await;
    let live = jsonl(Path::new(&s.path("siem.jsonl")));
    assert_eq!(live.len(), 2 * n - 3);
    assert!(
        live.iter().all(|e| e.get("replayed").is_none()),
        "live and redelivered events carry no marker"
    );
    assert!(hook
        .hits
        .lock()
        .unwrap()
        .iter()
        .all(|(h, _)| !h.contains_key("rollcall-replayed")));

    for sink in ["siem", "bus", "soc"] {
        let report = replay(&s.config(), &store, &request(sink, 0))
            .await
            .unwrap();
        assert!(report.sent > 0, "{sink}");
    }
    drop(store);

    let all = jsonl(Path::new(&s.path("siem.jsonl")));
    let replayed = &all[2 * n - 3..];
    assert_eq!(replayed.len(), n);
    assert!(
        replayed.iter().all(|e| e["replayed"] == true),
        "{replayed:?}"
    );
    assert_eq!(
        &replayed.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
        &live[..n]
            .iter()
            .map(|e| e["id"].clone())
            .collect::<Vec<_>>(),
        "the same events, with their ids"
    );
    let (code, said) = verify(&s, &[&s.path("siem.jsonl")]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("{} duplicates", n + n - 3)),
        "{said}"
    );

    let messages = mock::consume(
        &cluster.bootstrap_servers(),
        "events",
        2 * n,
        std::time::Duration::from_millis(500),
    )
    .await;
    assert_eq!(messages.len(), 2 * n);
    let marked: Vec<bool> = messages
        .iter()
        .map(|m| mock::headers(m).get("ce_replayed").map(Vec::as_slice) == Some(b"true".as_slice()))
        .collect();
    assert_eq!(marked, [vec![false; n], vec![true; n]].concat());
    let (code, said) = verify(&s, &["--topic", "bus"]);
    assert_eq!(code, 0, "{said}");

    let hits = hook.hits.lock().unwrap().clone();
    let (live, replayed): (Vec<_>, Vec<_>) = hits
        .iter()
        .partition(|(h, _)| !h.contains_key("rollcall-replayed"));
    assert_eq!(live.len(), replayed.len());
    for (headers, body) in replayed {
        assert_eq!(headers["rollcall-replayed"], "true");
        let record: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            record["metadata"]["labels"],
            serde_json::json!(["replayed"])
        );
        support::ocsf::assert_valid_in(support::ocsf::Version::V1_9_0, &record);
    }
    for (_, body) in live {
        let record: Value = serde_json::from_slice(body).unwrap();
        assert!(record["metadata"].get("labels").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_sink_marks_what_it_had_sent_and_not_what_is_new() {
    let s = Setup::new("");
    s.write(&format!(
        "[[sinks]]\nkind = \"jsonl\"\nname = \"siem\"\npath = {:?}\n",
        s.path("siem.jsonl")
    ));
    let store = s.store();
    append(&store, realistic()[..6].to_vec());
    s.drain(&store).await;
    let mut rewind = request("siem", 2);
    rewind.rewind = true;
    replay(&s.config(), &store, &rewind).await.unwrap();
    append(&store, realistic()[6..8].to_vec());
    s.drain(&store).await;
    drop(store);
    let marks: Vec<(u64, bool)> = jsonl(Path::new(&s.path("siem.jsonl")))
        .iter()
        .map(|e| {
            (
                e["sequence"].as_str().unwrap().parse().unwrap(),
                e.get("replayed") == Some(&Value::Bool(true)),
            )
        })
        .collect();
    let expected: Vec<(u64, bool)> = (0..6)
        .map(|o| (o, false))
        .chain((2..6).map(|o| (o, true)))
        .chain((6..8).map(|o| (o, false)))
        .collect();
    assert_eq!(marks, expected);
    let (code, said) = verify(&s, &[&s.path("siem.jsonl")]);
    assert_eq!(code, 0, "{said}");
}

/// `(users_seen, users_known, events, held_deletions)` of a `sync.completed`, checking what
/// every marker holds besides.
fn sync_counts(marker: &Value, source: &str) -> (u64, u64, u64, u64) {
    assert_eq!(marker["type"], "sync.completed");
    assert_eq!(marker["source"], source);
    assert_eq!(marker["subject"], "sync");
    let data = &marker["data"];
    assert_eq!(data["mode"], "full");
    let started: chrono::DateTime<chrono::Utc> = data["started"].as_str().unwrap().parse().unwrap();
    let finished: chrono::DateTime<chrono::Utc> =
        data["finished"].as_str().unwrap().parse().unwrap();
    assert!(started <= finished, "{marker}");
    assert_eq!(marker["time"], data["finished"]);
    let n = |k: &str| data[k].as_u64().unwrap();
    (
        n("users_seen"),
        n("users_known"),
        n("events"),
        n("held_deletions"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_full_reconcile_ends_with_sync_completed_after_its_events_and_incremental_polls_add_none(
) {
    use support::harness::Harness;
    use support::sim::{Sim, SimOptions};
    let sim = Sim::start(SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw", &[4]);
    sim.add_user("bob", "pw", &[4]);
    let mut h = Harness::new(&sim.url, "");
    h.add_ocsf_sink(None);
    h.cycle().await;
    let superset_users = sim.users().len() as u64;
    let markers = h.sync_markers();
    assert_eq!(markers.len(), 1, "the first cycle is a full reconcile");
    assert_eq!(
        sync_counts(&markers[0], "superset://test"),
        (superset_users, superset_users, 0, 0),
        "every user seen, nothing changed on a first run"
    );

    sim.update_user(alice, |u| u.last_name = "Changed".into());
    h.cycle().await;
    assert_eq!(
        h.sync_markers().len(),
        1,
        "an incremental poll ends with none"
    );

    sim.update_user(alice, |u| u.first_name = "Again".into());
    h.full().await;
    h.full().await;
    let all = h.all_events();
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "sync.completed",
            "user.updated",
            "user.updated",
            "sync.completed",
            "sync.completed"
        ],
        "a full reconcile's marker follows its events; a quiet one writes its marker alone"
    );
    assert_eq!(
        sync_counts(&all[3], "superset://test"),
        (superset_users, superset_users, 1, 0),
        "the events of the cycle it ends: the incremental poll's are not counted"
    );
    assert_eq!(sync_counts(&all[4], "superset://test").2, 0);
    let sequences: Vec<u64> = all
        .iter()
        .map(|e| e["sequence"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sequences, [0, 1, 2, 3, 4]);
    assert!(
        h.ocsf_records(support::ocsf::Version::V1_9_0)
            .iter()
            .all(|r| r["metadata"]["event_code"] != "sync.completed"),
        "OCSF has no class for it: an OCSF sink passes it"
    );
    assert_eq!(h.ocsf_records(support::ocsf::Version::V1_9_0).len(), 2);
    let store_state = h.look_into_store(|s| s.source_state("test").unwrap());
    assert!(store_state.last_sync.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kylin_source_reading_every_user_each_poll_marks_a_full_read_at_most_every_15_minutes() {
    use rollcall_sim::kylin::{KylinOptions, KylinSim, ROLE_ANALYST, SEEDED_PASSWORD};
    use support::harness::Harness;
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.add_user("alice", SEEDED_PASSWORD, &[ROLE_ANALYST]);
    let mut h = Harness::kylin(&sim.url, "");
    h.cycle().await;
    h.cycle().await;
    h.cycle().await;
    let markers = h.sync_markers();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert_eq!(
        sync_counts(&markers[0], "kylin://test"),
        (2, 2, 0, 0),
        "ADMIN and alice"
    );
}

const REDACT_KEY: &str = "p6Vf1yV3m0x6eXU1Q2b9a8T7s6R5q4P3o2N1m0L9k8J=";
const REDACTED: [&str; 4] = ["email", "first_name", "last_name", "username"];

/// Every clear value of the redacted fields in `events`, wherever they hold one.
fn clear_values(events: &[Event]) -> std::collections::BTreeSet<String> {
    clear_values_of(events, &REDACTED)
}

/// Every clear value of `fields` in `events`: a user record's, a `changes` entry's.
fn clear_values_of(events: &[Event], fields: &[&str]) -> std::collections::BTreeSet<String> {
    fn walk(v: &Value, fields: &[&str], out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                let changed = map
                    .get("field")
                    .and_then(Value::as_str)
                    .is_some_and(|f| fields.contains(&f));
                for (k, v) in map {
                    let named = fields.contains(&k.as_str())
                        || (changed && (k == "before" || k == "after"));
                    if let (true, Some(s)) = (named, v.as_str()) {
                        out.insert(s.to_owned());
                    }
                    walk(v, fields, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, fields, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for e in events {
        walk(&e.data, fields, &mut out);
    }
    out.remove("");
    out
}

/// Fails when any string of `text` (JSON, or plain text when it is none) is a clear value,
/// holds a clear email, or holds a clear value as a word of a `message`, a `full_name` or a
/// Kafka key.
fn assert_nothing_clear(what: &str, text: &str, clear: &std::collections::BTreeSet<String>) {
    fn strings<'v>(v: &'v Value, key: &str, out: &mut Vec<(String, &'v str)>) {
        match v {
            Value::String(s) => out.push((key.to_owned(), s)),
            Value::Object(map) => map.iter().for_each(|(k, v)| strings(v, k, out)),
            Value::Array(items) => items.iter().for_each(|v| strings(v, key, out)),
            _ => {}
        }
    }
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_owned())))
        .collect();
    for v in &values {
        let mut found = Vec::new();
        strings(v, "key", &mut found);
        for (key, s) in found {
            for c in clear {
                let worded = matches!(key.as_str(), "message" | "full_name" | "key")
                    && s.split([' ', ':']).any(|w| w == c);
                assert!(
                    s != c && !(c.contains('@') && s.contains(c.as_str())) && !worded,
                    "{what}: `{c}` in clear at `{key}`: {s}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacting_sink_never_holds_a_clear_value_in_its_output_dead_letters_or_replays() {
    let cluster = mock::cluster("people", 1);
    let refusing = Hook::answering(StatusCode::BAD_REQUEST).await;
    let s = Setup::new("");
    let key = s.dir.path().join("redact.key");
    std::fs::write(&key, format!("{REDACT_KEY}\n")).unwrap();
    let fields = r#"redact_fields = ["email", "first_name", "last_name", "username"]"#;
    s.write(&format!(
        r#"[[sinks]]
kind = "jsonl"
name = "hashed"
path = {hashed:?}
{fields}
redact_key_file = {key:?}

[[sinks]]
kind = "kafka"
name = "people"
brokers = "{brokers}"
topic = "people"
{fields}
redact_key_file = {key:?}

[[sinks]]
kind = "jsonl"
name = "dropped-ocsf"
path = {ocsf:?}
format = "ocsf"
redact_fields = ["email", "first_name", "last_name"]

[[sinks]]
kind = "webhook"
name = "refused"
url = "{url}"
secret_file = SECRET_FILE
retry_schedule = ["0s"]
{fields}
"#,
        hashed = s.path("hashed.jsonl"),
        brokers = cluster.bootstrap_servers(),
        ocsf = s.path("ocsf.jsonl"),
        url = refusing.url,
        key = key.display().to_string(),
    ));
    let events = realistic();
    let clear = clear_values(&events);
    assert!(
        clear.contains("alicia@example.com") && clear.contains("carol"),
        "{clear:?}"
    );
    let store = s.store();
    let n = append(&store, events.clone()).end as usize;
    for sink in &s.config().sinks {
        // The webhook's receiver refuses everything: its events end as dead letters.
        let _ = deliver::drain(&store, sink.build().unwrap().as_ref()).await;
    }
    replay(&s.config(), &store, &request("hashed", 0))
        .await
        .unwrap();

    let hashed = std::fs::read_to_string(s.path("hashed.jsonl")).unwrap();
    assert_eq!(
        hashed.lines().count(),
        2 * n,
        "every event, then its replay"
    );
    assert_nothing_clear("the hashed JSONL file", &hashed, &clear);
    // The same input gives the same output: a join on the hash of a known email works.
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(REDACT_KEY.as_bytes()).unwrap();
    hmac::Mac::update(&mut mac, b"alicia@example.com");
    let expected: Vec<String> = hmac::Mac::finalize(mac)
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let alicia = format!("hmac-sha256:{}", expected.concat());
    assert!(
        hashed.matches(&alicia).count() >= 4,
        "alicia's email, hashed alike in each event"
    );
    for line in hashed.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(
            e.get("chainhash").is_none(),
            "a redacted copy claims no chain: {line}"
        );
    }
    let (code, said) = verify(&s, &[&s.path("hashed.jsonl")]);
    assert_eq!(code, 8, "nothing chained to check: {said}");

    let messages = mock::consume(
        &cluster.bootstrap_servers(),
        "people",
        n,
        std::time::Duration::from_millis(500),
    )
    .await;
    let mut kafka = String::new();
    for m in &messages {
        kafka.push_str(&format!("{}\n", String::from_utf8_lossy(m.key().unwrap())));
        kafka.push_str(&format!(
            "{}\n",
            String::from_utf8_lossy(m.payload().unwrap())
        ));
        for v in mock::headers(m).values() {
            kafka.push_str(&format!("{}\n", String::from_utf8_lossy(v)));
        }
    }
    assert_nothing_clear("the Kafka topic (keys, values, headers)", &kafka, &clear);

    let ocsf = std::fs::read_to_string(s.path("ocsf.jsonl")).unwrap();
    assert!(ocsf.lines().count() > 10);
    // This sink keeps usernames: a name that is also someone's username may stand as one.
    let usernames = clear_values_of(&events, &["username"]);
    let names: std::collections::BTreeSet<String> = clear_values_of(&events, &REDACTED[..3])
        .difference(&usernames)
        .cloned()
        .collect();
    assert_nothing_clear("the OCSF file", &ocsf, &names);
    for record in support::ocsf::assert_valid_jsonl_in(support::ocsf::Version::V1_9_0, &ocsf) {
        assert!(record["user"].get("email_addr").is_none(), "{record}");
    }

    let sent: String = refusing
        .hits
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| format!("{}\n", String::from_utf8_lossy(b)))
        .collect();
    assert!(!sent.is_empty());
    assert_nothing_clear("the webhook requests", &sent, &clear);
    let letters = store.dead_letters("refused").unwrap();
    assert_eq!(letters.len(), n, "every event was refused for good");
    let kept: String = letters.iter().map(|l| format!("{}\n", l.event)).collect();
    assert_nothing_clear("the dead letters", &kept, &clear);
    drop(store);
    let listed = s.rollcall(&["dlq", "list", "--sink", "refused", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    assert_nothing_clear(
        "`dlq list`",
        &String::from_utf8_lossy(&listed.stdout),
        &clear,
    );
    let retried = s.rollcall(&["dlq", "retry", "--sink", "refused"]);
    assert_nothing_clear(
        "`dlq retry`'s output",
        &String::from_utf8_lossy(&retried.stdout),
        &clear,
    );
    assert_nothing_clear(
        "`dlq retry`'s log",
        &String::from_utf8_lossy(&retried.stderr),
        &clear,
    );
    let resent: Vec<Value> = refusing.events();
    assert_eq!(resent.len(), 2 * n, "each dead letter sent again");
    let sent_again: String = resent.iter().map(|e| format!("{e}\n")).collect();
    assert_nothing_clear("the retried dead letters", &sent_again, &clear);
}

#[test]
fn redaction_keys_are_checked_where_they_are_written_and_a_short_key_is_refused_unseen() {
    let s = Setup::new("");
    let jsonl = "[[sinks]]\nkind = \"jsonl\"\nname = \"j\"\npath = \"-\"\n";
    let run = |table: &str, args: &[&str]| {
        s.write(table);
        let out = s.rollcall(args);
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), said)
    };
    let (code, err) = run(
        &format!("{jsonl}redact_fields = []\nredact_key_env = \"K\"\nredact_key_file = \"/k\"\n"),
        &["check-config"],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("`redact_fields` is empty"), "{err}");
    assert!(
        err.contains("set at most one of `redact_key_env` or `redact_key_file`"),
        "{err}"
    );
    assert!(
        err.contains("rollcall.toml:23:") && err.contains("rollcall.toml:25:"),
        "{err}"
    );
    let (_, err) = run(
        &format!("{jsonl}redact_key_env = \"K\"\n"),
        &["check-config"],
    );
    assert!(
        err.contains("rollcall.toml:23: a redaction key without `redact_fields` redacts nothing"),
        "{err}"
    );
    let (_, err) = run(
        &format!("{jsonl}redact_fields = [\"user.email\"]\n"),
        &["check-config"],
    );
    assert!(
        err.contains("`user.email` in `redact_fields` is no field name"),
        "{err}"
    );

    let key = s.dir.path().join("short.key");
    std::fs::write(&key, "hunter2-hunter2\n").unwrap();
    let (code, err) = run(
        &format!(
            "{jsonl}redact_fields = [\"email\"]\nredact_key_file = {:?}\n",
            key.display().to_string()
        ),
        &["check-config"],
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("the redaction key is 15 bytes; it needs at least 32"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the key is never shown: {err}");

    let (_, err) = run(
        &format!("{jsonl}format = \"ocsf\"\nredact_fields = [\"email\", \"username\"]\n"),
        &["check-config"],
    );
    assert!(
        err.contains("rollcall.toml:24: an OCSF record must name its user, so this sink cannot drop `username`"),
        "{err}"
    );
}

/// Each key of `messages` with its last value (`None`: a tombstone), in key order.
fn table_of(
    messages: &[rdkafka::message::OwnedMessage],
) -> std::collections::BTreeMap<String, Option<Value>> {
    messages
        .iter()
        .map(|m| {
            (
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().map(|p| serde_json::from_slice(p).unwrap()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_sink_holds_each_current_user_once_rebuilt_and_a_tombstone_after_a_deletion() {
    use support::harness::Harness;
    use support::sim::{Sim, SimOptions};
    let cluster = mock::cluster("people", 1);
    let sim = Sim::start(SimOptions::default()).await;
    let alice = sim.add_user("alice", "pw", &[4]);
    sim.add_user("bob", "pw", &[4]);
    let carol = sim.add_user("carol", "pw", &[4]);
    let mut h = Harness::new(&sim.url, "action_log = false");
    let brokers = cluster.bootstrap_servers();
    h.add_sink(&format!(
        "[[sinks]]\nkind = \"kafka\"\nname = \"people\"\nbrokers = \"{brokers}\"\ntopic = \"people\"\ntable = true\n"
    ));
    h.cycle().await;
    let said = h.rebuild_table("people").await;
    assert!(
        said.starts_with("republished 4 current user(s) to sink people"),
        "{said}"
    );

    sim.update_user(alice, |u| u.last_name = "Changed".into());
    // Before the deletion: Superset on SQLite would give carol's id to the next user.
    let dave = sim.add_user("dave", "pw", &[4]);
    assert!(sim.delete_user(carol));
    h.full().await;
    let changes = h.new_events();
    assert!(
        changes.iter().any(|e| e["type"] == "user.deleted"),
        "{changes:?}"
    );

    let messages = mock::read_to_end(&brokers, "people").await;
    assert!(
        messages.iter().all(|m| mock::headers(m)
            .get("ce_type")
            .is_none_or(|t| t.starts_with(b"user."))),
        "rows only: no sync marker, no action"
    );
    let table = table_of(&messages);
    let key = |id: u64| format!("superset://test:{id}");
    assert_eq!(
        table.get(&key(carol)),
        Some(&None),
        "carol's last message is a tombstone"
    );
    let live: std::collections::BTreeMap<String, Value> = table
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let current: std::collections::BTreeSet<String> =
        sim.users().iter().map(|u| key(u.id)).collect();
    assert_eq!(
        live.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        current
    );
    assert_eq!(
        live[&key(alice)]["last_name"],
        "Changed",
        "the newest record wins"
    );
    assert_eq!(live[&key(dave)]["username"], "dave");
    // A row is the record as the user's events hold it in `data.user`.
    let dave_created = changes
        .iter()
        .find(|e| e["subject"].as_str() == Some(dave.to_string().as_str()))
        .unwrap();
    assert_eq!(live[&key(dave)], dave_created["data"]["user"]);
}
