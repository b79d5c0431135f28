//! A fleet of sources, a file each, under the real `rollcall run`: the main config's `include`
//! names `sources.d/*.toml`; a file added and SIGHUP starts its source, a file removed and
//! SIGHUP stops it (its stored state stays, in `status`, until `rollcall source forget`), a
//! table changed and SIGHUP restarts that source only, and a broken file or a name used twice
//! is refused whole, naming file and line, while the running set goes on. Each source polls
//! its own Superset simulator, so what a source does is what its simulator sees.

use crate::support;

use rollcall_sim::superset::GAMMA_ROLE;
use serde_json::Value;
use support::harness::Harness;
use support::running::{run, Running};
use support::sim::{Sim, SimOptions};
use support::wait;

/// A config with no source of its own, whose `include` names `sources.d/*.toml`.
fn fleet() -> Harness {
    let h = Harness::with_sources(tempfile::tempdir().unwrap(), "");
    h.edit_config(|c| format!("include = [\"sources.d/*.toml\"]\n{c}"));
    std::fs::create_dir(h.dir.path().join("sources.d")).unwrap();
    std::fs::write(h.dir.path().join("password"), "admin\n").unwrap();
    h
}

/// The file of source `name`, polling `sim` every second; its `name` is on line 3.
fn source_file(h: &Harness, name: &str) -> std::path::PathBuf {
    h.dir.path().join("sources.d").join(format!("{name}.toml"))
}

/// Write the file of source `name` polling `sim` (with `extra` keys).
fn add_source(h: &Harness, name: &str, sim: &Sim, extra: &str) {
    std::fs::write(
        source_file(h, name),
        format!(
            "[[sources]]\nkind = \"superset\"\nname = \"{name}\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = {:?}\npoll_interval = \"1s\"\naction_log = false\nemit_initial_snapshot = true\n{extra}",
            sim.url,
            h.dir.path().join("password").display().to_string()
        ),
    )
    .unwrap();
}

fn hang_up(r: &Running) {
    // SAFETY: the child is ours and runs until `Running` is dropped.
    assert_eq!(
        unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
}

/// How many log lines say `message` of source `source`.
fn said_of(r: &Running, message: &str, source: &str) -> usize {
    r.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message && v["fields"]["source"] == source)
        .count()
}

/// How many reloads the process has carried out or refused so far.
fn reloads(r: &Running) -> usize {
    r.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("config reloaded: ") || l.contains("config reload refused"))
        .count()
}

/// SIGHUP, and wait until the process has read the config again.
async fn reload(r: &Running) {
    let before = reloads(r);
    hang_up(r);
    wait::until("the config read again after SIGHUP", || reloads(r) > before).await;
}

/// An event of `source` about user `id` in the JSONL file.
fn told(h: &Harness, source: &str, id: u64) -> bool {
    let subject = id.to_string();
    h.events().iter().any(|e| {
        e["source"] == format!("superset://{source}") && e["subject"].as_str() == Some(&subject)
    })
}

async fn status(h: &Harness) -> Value {
    let out = h.rollcall(&["status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn source<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
}

/// Waits until `sim` has answered `more` requests beyond those it had.
async fn polled_on(sim: &Sim, more: usize) {
    let until = sim.requests().len() + more;
    wait::until("the source to go on polling", || {
        sim.requests().len() >= until
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_added_removed_and_changed_in_included_files_apply_on_sighup_and_others_go_on() {
    let (a, b) = (
        Sim::start(SimOptions::default()).await,
        Sim::start(SimOptions::default()).await,
    );
    let h = fleet();
    add_source(&h, "unit-a", &a, "");
    let r = run(&h).await;
    let alice = a.add_user("alice", "pw", &[GAMMA_ROLE]);
    wait::until("unit-a's user", || told(&h, "unit-a", alice)).await;

    // Added: a file and SIGHUP, and its users arrive; unit-a goes on undisturbed.
    let bob = b.add_user("bob", "pw", &[GAMMA_ROLE]);
    add_source(&h, "unit-b", &b, "");
    reload(&r).await;
    wait::until("unit-b's user after the reload", || told(&h, "unit-b", bob)).await;
    assert_eq!(said_of(&r, "polling started", "unit-a"), 1, "not restarted");
    assert_eq!(said_of(&r, "polling stopped", "unit-a"), 0);

    // Removed: unit-b is polled no more, while unit-a is; its state stays.
    std::fs::remove_file(source_file(&h, "unit-b")).unwrap();
    reload(&r).await;
    assert_eq!(said_of(&r, "polling stopped", "unit-b"), 1);
    // A request it had sent when it stopped has landed once unit-a polled on a while.
    polled_on(&a, 10).await;
    let b_requests = b.requests().len();
    polled_on(&a, 10).await;
    assert_eq!(
        b.requests().len(),
        b_requests,
        "a removed source sends no request"
    );
    let doc = status(&h).await;
    let gone = source(&doc, "unit-b").expect("a removed source's state stays in status");
    assert_eq!(gone["configured"], false, "{gone}");
    assert!(gone["users_known"].as_u64().unwrap() >= 2, "{gone}");
    assert!(gone["last_poll"].is_string(), "{gone}");
    assert!(
        gone["polling_since"].is_null() && gone["next_poll"].is_null(),
        "{gone}"
    );
    assert_eq!(source(&doc, "unit-a").unwrap()["configured"], true);
    let human = String::from_utf8_lossy(&h.rollcall(&["status"]).await.stdout).into_owned();
    assert!(
        human.contains("source unit-b: NOT IN THE CONFIG")
            && human.contains("rollcall source forget unit-b"),
        "{human}"
    );
    let metrics = r.get("/metrics").await.1;
    assert!(
        metrics.contains("source=\"unit-a\"") && !metrics.contains("source=\"unit-b\""),
        "{metrics}"
    );

    // Changed: any key of its table, and the source restarts; its events go on.
    add_source(&h, "unit-a", &a, "page_size = 50\n");
    reload(&r).await;
    assert_eq!(said_of(&r, "polling stopped", "unit-a"), 1);
    assert_eq!(said_of(&r, "polling started", "unit-a"), 2);
    let carol = a.add_user("carol", "pw", &[GAMMA_ROLE]);
    wait::until("unit-a's user after its restart", || {
        told(&h, "unit-a", carol)
    })
    .await;

    // Broken: refused whole, naming file and line; the running set goes on.
    let broken = source_file(&h, "unit-c");
    add_source(&h, "unit-c", &b, "");
    let text = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(
        &broken,
        text.replace("poll_interval = \"1s\"", "poll_interval = \"1ns\""),
    )
    .unwrap();
    reload(&r).await;
    let refused = r
        .logged_message("config reload refused")
        .expect("the refusal is logged");
    assert_eq!(refused["level"], "ERROR", "{refused}");
    let why = refused["fields"]["error"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "{}:7: `poll_interval` must be between 1s and 1day",
            broken.display()
        )),
        "{why}"
    );
    assert_eq!(said_of(&r, "polling started", "unit-c"), 0);

    // A name used twice, across files: refused whole, naming both places.
    std::fs::remove_file(&broken).unwrap();
    let twin = source_file(&h, "zz-twin");
    add_source(&h, "unit-a", &b, "");
    std::fs::rename(source_file(&h, "unit-a"), &twin).unwrap();
    add_source(&h, "unit-a", &a, "page_size = 50\n");
    reload(&r).await;
    let refusals: Vec<String> = r
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("config reload refused"))
        .cloned()
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals[1].contains("zz-twin.toml:3: duplicate name `unit-a`")
            && refusals[1].contains("unit-a.toml:3 has it already"),
        "{}",
        refusals[1]
    );
    let dave = a.add_user("dave", "pw", &[GAMMA_ROLE]);
    wait::until("unit-a's user after two refused reloads", || {
        told(&h, "unit-a", dave)
    })
    .await;
    assert_eq!(said_of(&r, "polling started", "unit-a"), 2, "not restarted");
    assert_eq!(
        said_of(&r, "polling started", "unit-b"),
        1,
        "not started again"
    );
    std::fs::remove_file(&twin).unwrap();

    // Forgotten through the running process: refused while configured, or for a name the
    // store does not hold; the removed source's state goes, its events stay.
    let out = h.rollcall(&["source", "forget", "unit-a"]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("source 'unit-a' is in the config the running `rollcall run` acts on")
            && said.contains("unit-a.toml:1")
            && said.contains("remove its table from the config and reload"),
        "{said}"
    );
    let out = h.rollcall(&["source", "forget", "unit-z"]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("holds nothing of a source named 'unit-z'")
            && said.contains("unit-a, unit-b"),
        "{said}"
    );
    let out = h.rollcall(&["source", "forget", "unit-b"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("source unit-b: forgotten"));
    assert!(source(&status(&h).await, "unit-b").is_none());
    assert!(told(&h, "unit-b", bob), "its events stay in the log");
    let out = h.rollcall(&["events", "--limit", "1000"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("superset://unit-b"));

    // `rollcall reload` does what SIGHUP does, and says what changed or why it refused.
    add_source(&h, "unit-b", &b, "");
    let out = h.rollcall(&["reload"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("sources added, polling now: unit-b"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The answer can come before the test has read the child's log that far.
    wait::until("unit-b polled again after `rollcall reload`", || {
        said_of(&r, "polling started", "unit-b") == 2
    })
    .await;
    std::fs::write(&broken, "[[sources]\n").unwrap();
    let out = h.rollcall(&["reload"]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains(&format!("{}:1:", broken.display())),
        "{said}"
    );
    assert_eq!(
        said_of(&r, "polling stopped", "unit-b"),
        1,
        "nothing changed"
    );
    drop(r);
    std::fs::remove_file(&broken).unwrap();
    let out = h.rollcall(&["reload"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to reload"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_removed_from_the_config_is_forgotten_on_the_store_when_no_process_runs() {
    let (a, b) = (
        Sim::start(SimOptions::default()).await,
        Sim::start(SimOptions::default()).await,
    );
    let h = fleet();
    add_source(&h, "unit-a", &a, "");
    add_source(&h, "unit-b", &b, "");
    let out = h.rollcall(&["once"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = h.rollcall(&["source", "forget", "unit-b"]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("source 'unit-b' is in the config (")
            && said.contains("unit-b.toml:1"),
        "{said}"
    );
    std::fs::remove_file(source_file(&h, "unit-b")).unwrap();
    let doc = status(&h).await;
    assert_eq!(source(&doc, "unit-b").unwrap()["configured"], false);
    let out = h.rollcall(&["source", "forget", "unit-b"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = status(&h).await;
    assert!(source(&doc, "unit-b").is_none(), "{doc}");
    assert!(source(&doc, "unit-a").is_some(), "{doc}");
    let store = rollcall::store::Store::open(&h.dir.path().join("data")).unwrap();
    assert_eq!(store.stored_sources().unwrap(), ["unit-a"]);
    assert!(
        store
            .events_from(0, 1000)
            .unwrap()
            .iter()
            .any(|e| e.event().unwrap().source == "superset://unit-b"),
        "its events stay in the log"
    );
    drop(store);
    let out = h.rollcall(&["source", "forget", "unit-b"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds nothing of a source named 'unit-b'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_file_and_line_of_each_problem_in_included_files() {
    // A Superset each: one upstream polled by two sources is a problem of its own.
    let (a, other) = (
        Sim::start(SimOptions::default()).await,
        Sim::start(SimOptions::default()).await,
    );
    let h = fleet();
    add_source(&h, "unit-a", &a, "");
    add_source(&h, "unit-b", &other, "");
    let out = h.rollcall(&["check-config"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "included: {}",
            source_file(&h, "unit-b").display()
        )) && said.contains(&format!(
            "source unit-b ({}:1)",
            source_file(&h, "unit-b").display()
        )),
        "{said}"
    );

    // Each problem of each file; an entry with a bad key is left out of the name check.
    let b = source_file(&h, "unit-b");
    let text = std::fs::read_to_string(&b).unwrap();
    std::fs::write(
        &b,
        text.replace("unit-b", "unit-a") + "[store]\npath = \"elsewhere\"\n",
    )
    .unwrap();
    add_source(&h, "unit-c", &a, "colour = \"blue\"\n");
    let out = h.rollcall(&["check-config"]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let (b, c) = (b.display(), source_file(&h, "unit-c").display().to_string());
    for expected in [
        format!(
            "{b}:3: duplicate name `unit-a`: {}:3 has it already",
            source_file(&h, "unit-a").display()
        ),
        format!("{b}:10: an included file holds only [[sources]] tables, not `store`"),
        format!("{c}:10: unknown field `colour`"),
    ] {
        assert!(said.contains(&expected), "{expected}\n{said}");
    }
}
