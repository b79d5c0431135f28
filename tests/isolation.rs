//! One source that never answers delays no other: under `rollcall run` a healthy source goes on
//! being polled and its events delivered while the hung source's first request is still
//! outstanding, and `rollcall once` delivers the healthy source's events and names the hung
//! source once its `poll_deadline` passed. The real binary against the simulators; the hung
//! source is a Kylin whose every request the simulator holds (`FaultKind::Hang`).

use crate::support;

use std::process::Stdio;

use rollcall_sim::kylin::{self, KylinOptions, KylinSim, ADMIN};
use serde_json::Value;
use support::harness::Harness;
use support::running::{get, run, sample};
use support::sim::{Sim, SimOptions, GAMMA_ROLE};
use support::wait;

/// A Kylin that holds every request until it is dropped.
async fn hung_kylin() -> KylinSim {
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.inject(kylin::Fault {
        path_contains: String::new(),
        skip: 0,
        times: u32::MAX,
        kind: kylin::FaultKind::Hang,
    });
    sim
}

/// A config with the hung Kylin source `hung` first (`hung_extra` in its table) and the
/// Superset source `healthy` (`healthy_extra` in its table), each polled every second.
fn config(hung: &KylinSim, hung_extra: &str, healthy: &Sim, healthy_extra: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("superset.password");
    std::fs::write(&password, "admin\n").unwrap();
    let sources = format!(
        "{}\n[[sources]]\nkind = \"superset\"\nname = \"healthy\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = {:?}\npoll_interval = \"1s\"\naction_log = false\n{healthy_extra}\n",
        Harness::kylin_source(
            &dir,
            "hung",
            &hung.url,
            ADMIN,
            "KYLIN",
            &format!("poll_interval = \"1s\"\n{hung_extra}")
        ),
        healthy.url,
        password.display().to_string(),
    );
    Harness::with_sources(dir, &sources)
}

fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {status}"))
}

/// A child process, killed and reaped when dropped (also when the test fails).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn created(h: &Harness, id: u64) -> bool {
    let subject = id.to_string();
    h.events()
        .iter()
        .any(|e| e["type"] == "user.created" && e["subject"].as_str() == Some(&subject))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_answers_delays_no_poll_and_no_delivery_of_another_under_run() {
    let hung = hung_kylin().await;
    let healthy = Sim::start(SimOptions::default()).await;
    // Each request of the hung source may take five minutes: a runner that polled one source
    // after another would not come back to the healthy one within the test's patience.
    let h = config(&hung, "request_timeout = \"300s\"", &healthy, "");
    let r = run(&h).await;
    let status = || async {
        serde_json::from_str::<Value>(&get(format!("{}/status", r.base)).await.1).unwrap()
    };
    wait::until_async("the healthy source's first poll", || async {
        !source(&status().await, "healthy")["last_poll"].is_null()
    })
    .await;
    // Each change is made after the previous one arrived, so each takes a poll of its own.
    for i in 0..3 {
        let id = healthy.add_user(&format!("new{i}"), "pw", &[GAMMA_ROLE]);
        wait::until(
            &format!("user.created of user {id} in the JSONL file"),
            || created(&h, id),
        )
        .await;
    }
    assert_eq!(
        hung.requests().len(),
        1,
        "the hung source's first request is still outstanding: {:?}",
        hung.requests()
    );

    // `status` (through the admin socket) and /metrics show what each source is doing.
    let out = h.rollcall(&["status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stuck = source(&doc, "hung");
    assert!(stuck["polling_since"].is_string(), "{stuck}");
    assert!(stuck["last_poll"].is_null(), "{stuck}");
    assert!(stuck["last_cycle_seconds"].is_null(), "{stuck}");
    let fine = source(&doc, "healthy");
    assert!(fine["last_poll"].is_string(), "{fine}");
    assert!(fine["last_cycle_seconds"].is_number(), "{fine}");
    assert!(
        fine["next_poll"].is_string() || fine["polling_since"].is_string(),
        "{fine}"
    );
    let out = h.rollcall(&["status"]).await;
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("polling now, since:"), "{human}");
    assert!(human.contains("last cycle took:"), "{human}");

    let metrics = get(format!("{}/metrics", r.base)).await.1;
    assert_eq!(
        sample(&metrics, "rollcall_source_polling", ("source", "hung")),
        1.0
    );
    assert!(
        sample(
            &metrics,
            "rollcall_source_cycle_seconds",
            ("source", "healthy")
        ) > 0.0
    );
    assert!(
        sample(
            &metrics,
            "rollcall_source_next_poll_timestamp_seconds",
            ("source", "healthy")
        ) > 0.0
    );
    assert!(
        sample(
            &metrics,
            "rollcall_last_poll_success_timestamp_seconds",
            ("source", "healthy")
        ) > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_a_healthy_sources_events_and_names_the_hung_one_after_its_deadline() {
    let hung = hung_kylin().await;
    let healthy = Sim::start(SimOptions::default()).await;
    let h = config(
        &hung,
        "request_timeout = \"300s\"\npoll_deadline = \"3s\"",
        &healthy,
        "emit_initial_snapshot = true",
    );
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&h.config_path)
            .arg("once")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut pipe = child.0.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut text).unwrap();
        text
    });
    let mut exit = None;
    // The guard turns a `once` that waits for the hung source's requests into a failure.
    wait::until("`rollcall once` to exit", || {
        exit = child.0.try_wait().unwrap();
        exit.is_some()
    })
    .await;
    let stderr = stderr.join().unwrap();
    assert_eq!(exit.unwrap().code(), Some(4), "a source failed: {stderr}");
    assert!(
        stderr.contains("source 'hung'") && stderr.contains("poll_deadline of 3s"),
        "{stderr}"
    );
    let observed: Vec<Value> = h
        .events()
        .into_iter()
        .filter(|e| e["type"] == "user.observed")
        .collect();
    assert_eq!(observed.len(), 1, "{observed:?}");
    assert_eq!(observed[0]["source"], "superset://healthy");

    let out = h.rollcall(&["status", "--json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = source(&doc, "hung")["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("poll_deadline"), "{doc}");
}

/// A fleet holds a connection per source between polls (docs/scaling.md), so 120 sources
/// need more open files than a soft limit of 64 allows: rollcall raises its soft limit to the
/// hard one at start, and `once` polls every source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_needing_more_open_files_than_the_soft_limit_is_polled_whole() {
    const SOURCES: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("superset.password");
    std::fs::write(&password, "admin\n").unwrap();
    let mut sims = Vec::new();
    let mut sources = String::new();
    for i in 0..SOURCES {
        let sim = Sim::start(SimOptions::default()).await;
        sources.push_str(&format!(
            "[[sources]]\nkind = \"superset\"\nname = \"s{i}\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = {password:?}\naction_log = false\nemit_initial_snapshot = true\n\n",
            sim.url
        ));
        sims.push(sim);
    }
    let h = Harness::with_sources(dir, &sources);
    let config = h.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -Sn 64 && exec \"$0\" --config \"$1\" once")
            .arg(env!("CARGO_BIN_EXE_rollcall"))
            .arg(config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "rollcall once over {SOURCES} sources with a soft limit of 64 open files failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let observed: std::collections::BTreeSet<String> = h
        .events()
        .iter()
        .filter(|e| e["type"] == "user.observed")
        .map(|e| e["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(observed.len(), SOURCES, "every source's users are observed");
}
