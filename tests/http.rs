//! The HTTP endpoints of `rollcall run`: health, readiness that follows Superset's
//! availability and says why a Kylin source stopped, Prometheus metrics that parse and move, and
//! status while `run` holds the store.

use crate::support;

use std::process::Command;

use rollcall_sim::kylin::{KylinOptions, KylinSim, ADMIN, ADMIN_PASSWORD};
use support::harness::Harness;
use support::running::{get, run, sample, wait_for, Running};
use support::sim::{Sim, SimOptions};
use support::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_events_flow() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "poll_interval = \"1s\"");
    let r = run(&h).await;
    wait_for("the first poll", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    // The poll's duration is recorded just after its commit makes /readyz answer 200: wait
    // for every family to be there, not for readiness.
    let families = [
        "rollcall_poll_duration_seconds_count",
        "rollcall_users_known",
        "rollcall_last_poll_success_timestamp_seconds",
        "rollcall_sink_lag_events",
        "rollcall_store_size_bytes",
        "rollcall_dead_letters",
        "rollcall_build_info",
    ];
    wait_for("every metric family after the first poll", async || {
        let (status, text) = get(format!("{}/metrics", r.base)).await;
        status == 200 && families.iter().all(|f| text.contains(f))
    })
    .await;
    let (_, before) = get(format!("{}/metrics", r.base)).await;
    assert_eq!(
        sample(
            &before,
            "rollcall_events_derived_total",
            ("type", "user.created")
        ),
        0.0
    );
    for i in 0..3 {
        sim.add_user(&format!("u{i}"), "pw", &[4]);
    }
    wait_for("three events delivered", async || {
        let text = get(format!("{}/metrics", r.base)).await.1;
        sample(&text, "rollcall_events_delivered_total", ("sink", "siem")) >= 3.0
    })
    .await;
    let after = get(format!("{}/metrics", r.base)).await.1;
    assert!(
        sample(
            &after,
            "rollcall_delivery_latency_seconds_count",
            ("sink", "siem")
        ) >= 3.0,
        "each delivery's latency is observed"
    );
    assert_eq!(
        sample(
            &after,
            "rollcall_events_derived_total",
            ("type", "user.created")
        ),
        3.0
    );
    assert_eq!(
        sample(&after, "rollcall_sink_lag_events", ("sink", "siem")),
        0.0
    );
    assert_eq!(
        sample(&after, "rollcall_users_known", ("source", "test")),
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_superset_goes_down_and_ready_when_it_returns() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "poll_interval = \"1s\"\nrequest_timeout = \"1s\"");
    let r = run(&h).await;
    assert_eq!(get(format!("{}/healthz", r.base)).await.0, 200);
    wait_for("ready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    sim.set_down(true);
    wait_for("unready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 503
    })
    .await;
    let (_, body) = get(format!("{}/readyz", r.base)).await;
    assert!(
        body.contains("source test: no successful poll since"),
        "{body}"
    );
    assert_eq!(
        get(format!("{}/healthz", r.base)).await.0,
        200,
        "alive, just not ready"
    );
    sim.set_down(false);
    wait_for("ready again", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_on_a_live_process_and_1_with_a_reason_when_nothing_answers() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "poll_interval = \"1s\"");
    let r = run(&h).await;
    let port = r.base.rsplit(':').next().unwrap().to_owned();
    // `listen` on every interface, as in the container: the check asks the loopback address.
    h.edit_config(|c| {
        c.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"0.0.0.0:{port}\""),
        )
    });
    wait_for("ready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    for args in [&["healthcheck"][..], &["healthcheck", "--ready"]] {
        let out = h.rollcall(args).await;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    }
    drop(r);
    let out = h.rollcall(&["healthcheck"]).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("no answer"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_works_while_run_holds_the_store() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(
        &sim.url,
        "poll_interval = \"1s\"\nemit_initial_snapshot = true",
    );
    let r = run(&h).await;
    wait_for("ready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    // `status` finds the running process at `listen`: name the port the child bound.
    let bound = r.base.trim_start_matches("http://").to_owned();
    h.edit_config(|c| c.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{bound}\"")));
    let out = h.rollcall(&["status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["sources"][0]["users_known"], 1);
    assert_eq!(
        status["log_head"], 2,
        "the admin observed, then sync.completed"
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_command_waits_for_each_poll_so_a_running_rollcall_shows_every_event_type() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "poll_interval = \"1s\"");
    let r = run(&h).await;
    wait_for("ready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    let bound = r.base.trim_start_matches("http://").to_owned();
    h.edit_config(|c| c.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{bound}\"")));
    let out = h.rollcall(&["demo"]).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("waits for its next poll"), "{said}");
    // Every step was polled apart, so every type reaches the sink.
    let types = || -> std::collections::BTreeSet<String> {
        h.events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    wait::until("every Superset event type in the JSONL file", || {
        types() == support::harness::superset_event_types()
    })
    .await;
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_deliveries_of_a_webhook_sink_show_in_the_metrics() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // A receiver that fails the first request and accepts the rest.
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/",
        axum::routing::post({
            let hits = hits.clone();
            move || async move {
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim = Sim::start(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let h = Harness::new(
        &sim.url,
        &format!(
            "poll_interval = \"1s\"\n\n[[sinks]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{receiver}\"\nsecret_file = {:?}\nretry_schedule = [\"0s\", \"100ms\", \"100ms\"]",
            secret.display().to_string()
        ),
    );
    let r = run(&h).await;
    // Ready means the first poll is done: a user added before it would be part of the silently
    // stored initial snapshot.
    wait_for("ready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    sim.add_user("alice", "pw", &[4]);
    wait_for("the webhook delivery", async || {
        let text = get(format!("{}/metrics", r.base)).await.1;
        sample(&text, "rollcall_events_delivered_total", ("sink", "hook")) >= 1.0
    })
    .await;
    let text = get(format!("{}/metrics", r.base)).await.1;
    assert_eq!(
        sample(&text, "rollcall_delivery_retries_total", ("sink", "hook")),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "rollcall_sink_lag_events", ("sink", "hook")),
        0.0
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_endpoint_never_delays_another_sink() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    async fn receiver(hang: bool, hits: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if hang {
                    std::future::pending::<()>().await;
                }
                axum::http::StatusCode::NO_CONTENT
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
    let (slow_hits, fast_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let slow = receiver(true, slow_hits.clone()).await;
    let fast = receiver(false, fast_hits.clone()).await;
    let sim = Sim::start(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let hook = |name: &str, url: &str| {
        format!("\n\n[[sinks]]\nkind = \"webhook\"\nname = \"{name}\"\nurl = \"{url}\"\nsecret_file = {:?}\ntimeout = \"30s\"", secret.display().to_string())
    };
    let h = Harness::new(
        &sim.url,
        &format!(
            "poll_interval = \"1s\"{}{}",
            hook("slow", &slow),
            hook("fast", &fast)
        ),
    );
    let r = run(&h).await;
    // Ready means the first poll is done: a user added before it would be part of the silently
    // stored initial snapshot.
    wait_for("ready", async || {
        get(format!("{}/readyz", r.base)).await.0 == 200
    })
    .await;
    sim.add_user("alice", "pw", &[4]);
    wait_for(
        "the fast endpoint, the JSONL file, and the slow endpoint holding its request",
        async || {
            fast_hits.load(Ordering::SeqCst) >= 1
                && slow_hits.load(Ordering::SeqCst) >= 1
                && std::fs::read_to_string(h.events_path())
                    .unwrap_or_default()
                    .lines()
                    .count()
                    >= 1
        },
    )
    .await;
    // The fast sink's cursor moves once rollcall has read the 204, a moment after the receiver
    // counted the request: wait for the lag itself. The slow endpoint never answers, so its
    // event stays unacknowledged for as long as the test runs.
    wait_for("the fast sink's lag to reach 0", async || {
        let text = get(format!("{}/metrics", r.base)).await.1;
        sample(&text, "rollcall_sink_lag_events", ("sink", "fast")) == 0.0
    })
    .await;
    let text = get(format!("{}/metrics", r.base)).await.1;
    assert_eq!(
        sample(&text, "rollcall_sink_lag_events", ("sink", "slow")),
        1.0,
        "the slow sink still holds its one event"
    );
}

/// A Kylin, and a config polling it as `ADMIN` with a wrong password in the file
/// `cubes.password` (`extra` added to the source's table).
async fn kylin_with_a_wrong_password(extra: &str) -> (KylinSim, Harness) {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sources = Harness::kylin_source(&dir, "cubes", &sim.url, ADMIN, "wrong-password", extra);
    (sim, Harness::with_sources(dir, &sources))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_status_say_at_once_why_a_kylin_source_stopped_and_new_credentials_clear_it() {
    let (sim, h) = kylin_with_a_wrong_password("").await;
    let r = run(&h).await;
    let readyz = format!("{}/readyz", r.base);
    wait::until_async("/readyz to say the Kylin source stopped", || {
        let url = readyz.clone();
        async move {
            let (status, body) = get(url).await;
            status == 503 && body.contains("stopped")
        }
    })
    .await;
    let (_, body) = get(readyz).await;
    assert!(
        body.contains("source cubes: stopped")
            && body.contains("KE-010003208")
            && body.contains("retry-login"),
        "{body}"
    );
    let (_, status) = get(format!("{}/status", r.base)).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let stopped = status["sources"][0]["stopped"]["message"].as_str().unwrap();
    assert!(
        stopped.contains("refused the login of 'ADMIN'"),
        "{stopped}"
    );
    drop(r);
    assert_eq!(
        sim.failed_logins(ADMIN),
        1,
        "one failed login for the whole run"
    );

    let out = h.rollcall(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("STOPPED since") && text.contains("retry-login cubes"),
        "{text}"
    );

    // Fixed credentials and a restart: the source polls again and the stop is forgotten.
    std::fs::write(h.dir.path().join("cubes.password"), ADMIN_PASSWORD).unwrap();
    let out = h.rollcall(&["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&h.rollcall(&["status"]).await.stdout).into_owned();
    assert!(!text.contains("STOPPED"), "{text}");
    assert_eq!(sim.failed_logins(ADMIN), 1);
}

/// Cron, a crash-looping service manager and an operator's checks start rollcall again and
/// again: Kylin must see the refused credentials once, whatever starts follow, until they
/// change or an operator asks for one more try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_sent_once_across_every_kind_of_start() {
    let (sim, h) = kylin_with_a_wrong_password("").await;
    let logins = || sim.requests().iter().filter(|r| r.basic_auth).count();
    let refused = |out: &std::process::Output| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{text}");
        text
    };

    let first = refused(&h.rollcall(&["once"]).await);
    assert!(first.contains("KE-010003208"), "{first}");
    for _ in 0..2 {
        let again = refused(&h.rollcall(&["once"]).await);
        assert!(
            again.contains("refused at") && again.contains("retry-login cubes"),
            "{again}"
        );
    }
    let doctor = refused(&h.rollcall(&["doctor"]).await);
    assert!(
        doctor.contains(
            "FAIL  source cubes: log in: the login with these credentials was refused at"
        ),
        "{doctor}"
    );
    let demo = refused(&h.rollcall(&["demo", "--pause", "0s"]).await);
    assert!(demo.contains("refused at"), "{demo}");
    for _ in 0..2 {
        let r = run(&h).await;
        let metrics = format!("{}/metrics", r.base);
        wait_for("run's first poll of the stopped source", async || {
            sample(
                &get(metrics.clone()).await.1,
                "rollcall_poll_errors_total",
                ("source", "cubes"),
            ) >= 1.0
        })
        .await;
    }
    assert_eq!(logins(), 1, "one login for eight starts");
    assert_eq!(sim.failed_logins(ADMIN), 1);

    // Asked for by hand while `run` holds the store: exactly one more try, refused and
    // remembered again.
    let r = run(&h).await;
    let out = h.rollcall(&["source", "retry-login", "cubes"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("refused login is forgotten"),
        "{out:?}"
    );
    wait::until("the running process to try the login once more", || {
        sim.failed_logins(ADMIN) == 2
    })
    .await;
    // Kylin counts the refusal before rollcall has stored it: killed in between, the next
    // process would try once more. Said only after the refusal is stored.
    wait::until("the running process to store the refusal", || {
        r.logged_message("source stopped").is_some()
    })
    .await;
    drop(r);
    refused(&h.rollcall(&["once"]).await);
    assert_eq!(sim.failed_logins(ADMIN), 2);

    // A new password is other credentials: tried at once, with no retry-login.
    std::fs::write(h.dir.path().join("cubes.password"), ADMIN_PASSWORD).unwrap();
    let out = h.rollcall(&["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sim.failed_logins(ADMIN), 2);
    assert!(!sim.user(ADMIN).unwrap().locked);
}

/// The operator fixes the password in its file while `run` goes on: the running process reads
/// it again after the refusal and polls with it at once, with no restart and no retry-login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_fixed_in_its_file_is_used_by_the_running_process_without_a_restart() {
    let (sim, h) =
        kylin_with_a_wrong_password("poll_interval = \"1s\"\nemit_initial_snapshot = true").await;
    sim.add_user("kim", rollcall_sim::kylin::SEEDED_PASSWORD, &[]);
    let r = run(&h).await;
    let readyz = format!("{}/readyz", r.base);
    wait_for("the refused login to stop the source", async || {
        get(readyz.clone())
            .await
            .1
            .contains("source cubes: stopped")
    })
    .await;
    std::fs::write(h.dir.path().join("cubes.password"), ADMIN_PASSWORD).unwrap();
    let events = h.events_path();
    wait::until("kim's first event from the fixed password", || {
        std::fs::read_to_string(&events).is_ok_and(|t| t.contains("\"kim\""))
    })
    .await;
    wait_for("the source to be ready again", async || {
        get(readyz.clone()).await.0 == 200
    })
    .await;
    drop(r);
    assert_eq!(sim.failed_logins(ADMIN), 1);
}

/// Every line of the JSONL file and of the files rotated or moved away from it. A file the
/// running sink renames between the listing and the read (a rotation shifting `.1` to `.2`)
/// makes the listing start again.
fn lines_of_all_files(dir: &std::path::Path) -> Vec<String> {
    'listing: loop {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("events.jsonl") {
                match std::fs::read_to_string(&path) {
                    Ok(text) => lines.extend(text.lines().map(str::to_owned)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'listing,
                    Err(e) => panic!("{}: {e}", path.display()),
                }
            }
        }
        return lines;
    }
}

/// Runs a JSONL sink with `rotation` keys over 302 + 300 events, and `between` after the
/// first events landed; then checks that every event is in exactly one line of one file.
async fn rotate_under_load(rotation: &str, between: impl FnOnce(&Running, &std::path::Path)) {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(300, &[4]);
    let h = Harness::new(
        &sim.url,
        "emit_initial_snapshot = true\npoll_interval = \"1s\"",
    );
    h.edit_config(|c| {
        c.replace(
            "name = \"siem\"",
            &format!("name = \"siem\"\nbatch_size = 10\n{rotation}"),
        )
    });
    let r = run(&h).await;
    let dir = h.dir.path().to_owned();
    wait::until("the first events", || !lines_of_all_files(&dir).is_empty()).await;
    between(&r, &dir);
    sim.add_users(300, &[4]);
    // 301 users observed and the first full reconcile's sync.completed, then 300 created.
    let expected = 301 + 1 + 300;
    wait::until("every event in one of the files", || {
        lines_of_all_files(&dir).len() >= expected
    })
    .await;
    let mut ids = std::collections::HashSet::new();
    for line in lines_of_all_files(&dir) {
        let e: serde_json::Value = serde_json::from_str(&line).expect("every line is whole JSON");
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_owned()),
            "a duplicate: {line}"
        );
    }
    assert_eq!(ids.len(), expected);
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_rename_and_sighup_lose_and_duplicate_no_line() {
    rotate_under_load("", |r, dir| {
        // logrotate's `create` mode: rename, then SIGHUP; lines written in between land in
        // the renamed file, the rest in a new file by the old name.
        std::fs::rename(dir.join("events.jsonl"), dir.join("events.jsonl.moved")).unwrap();
        let hup = Command::new("kill")
            .args(["-HUP", &r.child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let log = r.log.clone();
        wait::until_blocking("the sink to reopen its file", || {
            log.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("SIGHUP: JSONL sinks reopen"))
        });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_rotation_by_size_keeps_whole_lines_and_loses_and_duplicates_none() {
    rotate_under_load("rotate_bytes = 20000\nkeep = 1000", |_, dir| {
        let first = dir.join("events.jsonl.1");
        wait::until_blocking("the first rotated file", || first.exists());
        assert!(
            std::fs::read_to_string(first).unwrap().len() <= 20_000,
            "a rotated file stays within rotate_bytes"
        );
    })
    .await;
}
