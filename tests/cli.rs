//! The binary as an operator meets it: help texts, exit codes, `status`, `events`,
//! `check-config`, `config reference` (and the docs that hold it), and a second process on a
//! store that is in use.

use crate::support;
use support::wait;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::harness::Harness;
use support::running;
use support::sim::{Sim, SimOptions};

fn rollcall(h: Option<&Harness>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    if let Some(h) = h {
        cmd.arg("--config").arg(&h.config_path);
    }
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_command_explains_itself_with_an_example() {
    for cmd in [
        "run",
        "once",
        "events",
        "status",
        "check-config",
        "config",
        "demo",
        "replay",
        "dlq",
        "doctor",
        "healthcheck",
        "sink",
        "completions",
        "man",
        "verify",
        "pubkey",
    ] {
        let out = rollcall(None, &[cmd, "--help"]);
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("Example"),
            "`{cmd} --help` has no example:\n{help}"
        );
    }
    let top = text(&rollcall(None, &["--help"]).stdout);
    for cmd in ["run", "once", "events", "status", "check-config"] {
        assert!(top.contains(cmd));
    }
}

#[test]
fn check_config_names_the_bad_key_and_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    std::fs::write(&path, "[store]\npath = \"x\"\nsurprise = 1\n").unwrap();
    let out = rollcall(None, &["--config", path.to_str().unwrap(), "check-config"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("rollcall.toml:3: unknown field `surprise`"),
        "{err}"
    );
}

#[test]
fn missing_config_file_says_how_to_point_at_one() {
    let out = rollcall(None, &["--config", "/nonexistent/rollcall.toml", "status"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--config PATH"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_then_status_and_events_show_the_log_and_lag() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "emit_initial_snapshot = true");
    sim.add_user("alice", "pw", &[4]);
    let out = h.rollcall(&["once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("poll complete"),
        "logs go to stderr"
    );

    let status: serde_json::Value =
        serde_json::from_slice(&rollcall(Some(&h), &["status", "--json"]).stdout).unwrap();
    // Two users observed, then the full reconcile's sync.completed.
    assert_eq!(status["log_head"], 3);
    assert_eq!(status["sources"][0]["name"], "test");
    assert_eq!(status["sources"][0]["users_known"], 2);
    assert!(status["sources"][0]["last_sync"].is_string(), "{status}");
    assert_eq!(status["sinks"][0]["cursor"], 3);
    assert_eq!(status["sinks"][0]["lag_events"], 0);

    let human = text(&rollcall(Some(&h), &["status"]).stdout);
    assert!(
        human.contains("source test: 2 users known")
            && human.contains("sink siem: ok, cursor 3, lag 0 events"),
        "{human}"
    );

    let events = text(&rollcall(Some(&h), &["events", "--from", "1", "--limit", "5"]).stdout);
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 2);
    support::schema::assert_valid_jsonl(&events);
    assert!(lines[0].contains("\"sequence\":\"00000000000000000001\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_nonzero_when_superset_is_unreachable() {
    let h = Harness::new("http://127.0.0.1:9", "request_timeout = \"1s\"");
    let out = h.rollcall(&["once"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("could not reach Superset"),
        "{}",
        text(&out.stderr)
    );
    let status = text(&rollcall(Some(&h), &["status"]).stdout);
    assert!(
        status.contains("LAST POLL FAILED") && status.contains("could not reach Superset"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_is_told_the_store_is_in_use() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    let run = running::run(&h).await;
    let mut err = String::new();
    // `once` polls and delivers itself: it is never handed to the running process.
    wait::until("`once` to find the store held by `run`", || {
        let out = rollcall(Some(&h), &["once"]);
        err = text(&out.stderr);
        !out.status.success() && err.contains("already in use")
    })
    .await;
    drop(run);
    assert!(
        err.contains("already in use by another rollcall process"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_run_cleanly_within_the_grace_period() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(
        &sim.url,
        "emit_initial_snapshot = true\npoll_interval = \"1s\"",
    );
    let run = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&h.config_path)
        .arg("run")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The admin observed, then the first full reconcile's sync.completed.
    wait::until("the first events in the JSONL file", || {
        std::fs::read_to_string(h.events_path())
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    })
    .await;
    let pid = run.id().to_string();
    let started = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || run.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    // The grace period is 8 s; the margin absorbs a loaded machine, a hang does not fit in it.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?} to stop",
        started.elapsed()
    );
    let log = text(&out.stderr);
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    // The store was left consistent: the next process starts where this one stopped.
    let status: serde_json::Value =
        serde_json::from_slice(&rollcall(Some(&h), &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["sinks"][0]["lag_events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_appears_in_the_most_verbose_logs() {
    let sim = Sim::start(SimOptions {
        access_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    sim.add_user("svc", "S3cret-Passw0rd-42", &[1]);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "S3cret-Passw0rd-42").unwrap();
    let h = Harness::with_account(&sim.url, "svc", &password, "");
    let config = h.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_rollcall"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .output()
                .unwrap()
        };
        let mut logs = Vec::new();
        for args in [
            &["-vv", "once"][..],
            &["--log-format", "json", "-vv", "once"],
            &["status", "--json"],
            &["check-config"],
        ] {
            let out = run(args);
            std::thread::sleep(Duration::from_millis(1100)); // let the access token expire: refresh path too
            logs.extend(out.stderr);
            logs.extend(out.stdout);
        }
        String::from_utf8_lossy(&logs).into_owned()
    })
    .await
    .unwrap();
    assert!(
        out.contains("poll complete"),
        "the verbose logs were captured"
    );
    assert!(!out.contains("S3cret-Passw0rd-42"), "password leaked");
    // JWTs start with the base64 of `{"`: none may appear.
    assert!(!out.contains("eyJ"), "a token leaked");
}

#[test]
fn check_config_with_an_unset_password_variable_says_one_thing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    std::fs::write(
        &path,
        "[store]\npath = \"x\"\n[[sources]]\nkind = \"superset\"\nname = \"prod\"\nurl = \"http://127.0.0.1:1\"\nusername = \"u\"\npassword_env = \"ROLLCALL_TEST_SURELY_UNSET\"\n[[sinks]]\nkind = \"jsonl\"\nname = \"s\"\npath = \"-\"\n",
    )
    .unwrap();
    let out = rollcall(None, &["--config", path.to_str().unwrap(), "check-config"]);
    assert!(!out.status.success());
    let said = text(&out.stdout);
    assert!(!said.contains("valid"), "{said}");
    assert!(
        said.contains("source prod: cannot read the password: environment variable ROLLCALL_TEST_SURELY_UNSET (named by `password_env`) is not set"),
        "{said}"
    );
    assert_eq!(said.matches("source prod").count(), 1, "{said}");
}

#[test]
fn check_config_fails_when_a_kafka_secret_option_variable_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    std::fs::write(
        &path,
        "[store]\npath = \"x\"\n[[sources]]\nkind = \"superset\"\nname = \"prod\"\nurl = \"http://127.0.0.1:1\"\nusername = \"u\"\npassword_file = \"/dev/null\"\n[[sinks]]\nkind = \"kafka\"\nname = \"bus\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"\n[sinks.options_env]\n\"sasl.password\" = \"ROLLCALL_TEST_SURELY_UNSET_KAFKA\"\n",
    )
    .unwrap();
    let out = rollcall(None, &["--config", path.to_str().unwrap(), "check-config"]);
    let said = text(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("sink bus:")
            && said.contains("ROLLCALL_TEST_SURELY_UNSET_KAFKA")
            && said.contains("sasl.password"),
        "{said}"
    );
}

#[test]
fn a_missing_config_file_names_its_cause_once() {
    let out = rollcall(None, &["--config", "/nonexistent/rollcall.toml", "status"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn status_on_a_store_that_does_not_exist_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    let store = dir.path().join("no-store-here");
    std::fs::write(
        &path,
        format!("[store]\npath = {:?}\n[[sources]]\nkind = \"superset\"\nname = \"prod\"\nurl = \"http://127.0.0.1:1\"\nusername = \"u\"\npassword_env = \"X\"\n[[sinks]]\nkind = \"jsonl\"\nname = \"s\"\npath = \"-\"\n", store.display().to_string()),
    )
    .unwrap();
    let out = rollcall(None, &["--config", path.to_str().unwrap(), "status"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("there is no store at"),
        "{}",
        text(&out.stderr)
    );
    assert!(!store.exists());
}

/// `rollcall doctor` with the harness's config as edited by `edit`: (exit ok, stdout).
async fn doctor(h: &Harness) -> (bool, String) {
    let out = h.rollcall(&["doctor"]).await;
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_working_setup_line_by_line() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    let (ok, said) = doctor(&h).await;
    assert!(ok, "{said}");
    for check in [
        "read users",
        "read role membership",
        "read groups",
        "read the action log",
        "sink siem: appends to",
    ] {
        assert!(said.contains(check), "{check}: {said}");
    }
    assert!(!said.contains("FAIL"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_naming_a_wrong_password_after_one_attempt() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    std::fs::write(h.dir.path().join("password"), "wrong\n").unwrap();
    let (ok, said) = doctor(&h).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  source test") && said.contains("refused the login"),
        "{said}"
    );
    let logins = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/security/login")
        .count();
    assert_eq!(logins, 1, "one failed login, then the doctor stops asking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_naming_a_missing_permission() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_user("viewer", "pw-viewer", &[4]);
    let h = Harness::new(&sim.url, "");
    std::fs::write(h.dir.path().join("password"), "pw-viewer\n").unwrap();
    h.edit_config(|c| c.replace("username = \"admin\"", "username = \"viewer\""));
    let (ok, said) = doctor(&h).await;
    assert!(!ok, "{said}");
    assert!(said.contains("FAIL") && said.contains("403"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_naming_an_unset_secret_and_an_unreachable_webhook() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    let secret = h.dir.path().join("secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    h.edit_config(|c| {
        c.replace(
            &format!("password_file = {:?}", h.dir.path().join("password").display().to_string()),
            "password_env = \"ROLLCALL_TEST_DOCTOR_SURELY_UNSET\"",
        ) + &format!(
            "\n[[sinks]]\nkind = \"webhook\"\nname = \"hooks\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = {:?}\n",
            secret.display().to_string()
        )
    });
    let (ok, said) = doctor(&h).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  source test") && said.contains("ROLLCALL_TEST_DOCTOR_SURELY_UNSET"),
        "{said}"
    );
    assert!(
        said.contains("FAIL  sink hooks") && said.contains("cannot be reached"),
        "{said}"
    );
    assert!(
        said.contains("ok    sink siem"),
        "the other checks still run: {said}"
    );
}

#[test]
fn exit_codes_tell_a_config_problem_from_an_unreachable_source() {
    let out = rollcall(None, &["--config", "/nonexistent/rollcall.toml", "once"]);
    assert_eq!(out.status.code(), Some(3), "config: {}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcall.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n[[sources]]\nkind = \"superset\"\nname = \"prod\"\nurl = \"http://127.0.0.1:9\"\nusername = \"u\"\npassword_file = \"/dev/null\"\nmax_retries = 0\n[[sinks]]\nkind = \"jsonl\"\nname = \"s\"\npath = {:?}\n",
            dir.path().join("data").display().to_string(),
            dir.path().join("events.jsonl").display().to_string()
        ),
    )
    .unwrap();
    let out = rollcall(None, &["--config", path.to_str().unwrap(), "once"]);
    assert_eq!(out.status.code(), Some(4), "source: {}", text(&out.stderr));
    let out = rollcall(None, &["bogus-command"]);
    assert_eq!(out.status.code(), Some(2), "usage");
}

#[test]
fn completions_and_a_man_page_come_from_the_command_definitions() {
    let bash = rollcall(None, &["completions", "bash"]);
    assert!(bash.status.success());
    let script = text(&bash.stdout);
    assert!(
        script.contains("complete") && script.contains("doctor"),
        "{script}"
    );
    let man = rollcall(None, &["man"]);
    assert!(man.status.success());
    let page = text(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH rollcall"),
        "{page}"
    );
}

/// The reference in docs/configuration.md is what `rollcall config reference` prints from the
/// config types, so it cannot drift from them. `ROLLCALL_BLESS=1` writes the printed text
/// into the doc instead of failing.
#[test]
fn the_configuration_doc_holds_what_config_reference_prints() {
    let out = rollcall(None, &["config", "reference"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    // The section runs to the end of the file: nothing follows it.
    let start = doc.find("\n## Reference\n").map(|at| at + 1);
    if std::env::var_os("ROLLCALL_BLESS").is_some() {
        let before = &doc[..start.unwrap_or(doc.len())];
        std::fs::write(&path, format!("{before}{printed}")).unwrap();
        return;
    }
    let written = &doc[start.expect("docs/configuration.md has a `## Reference` section")..];
    let differs = written
        .lines()
        .zip(printed.lines())
        .find(|(w, p)| w != p)
        .map_or_else(
            || "one is longer".to_owned(),
            |(w, p)| format!("the doc says\n  {w}\nthe command\n  {p}"),
        );
    assert!(
        written == printed,
        "docs/configuration.md's Reference is not what `rollcall config reference` prints ({differs}). \
         Run `ROLLCALL_BLESS=1 cargo test --test tests cli::the_configuration_doc` to write it there, \
         or paste the command's output over the section"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_exported_while_run_holds_it_imports_into_a_new_store_with_the_same_events() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(20, &[4]);
    let h = Harness::new(
        &sim.url,
        "emit_initial_snapshot = true\npoll_interval = \"1s\"",
    );
    let run = running::run(&h).await;
    // 21 users observed, then the first full reconcile's sync.completed.
    wait::until_async("the first events", || async {
        text(&h.rollcall(&["events"]).await.stdout).lines().count() == 22
    })
    .await;
    let backup = h.dir.path().join("backup.jsonl");
    let out = h
        .rollcall(&["store", "export", "--output", backup.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = text(&h.rollcall(&["events"]).await.stdout);
    let id_before = text(&h.rollcall(&["status", "--json"]).await.stdout);
    drop(run);

    let old_store = h.dir.path().join("data").display().to_string();
    let new_store = h.dir.path().join("restored").display().to_string();
    h.edit_config(|c| c.replace(&format!("{old_store:?}"), &format!("{new_store:?}")));
    let out = h
        .rollcall(&["store", "import", "--input", backup.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&h.rollcall(&["events"]).await.stdout), before);
    let status: serde_json::Value =
        serde_json::from_str(&text(&h.rollcall(&["status", "--json"]).await.stdout)).unwrap();
    let was: serde_json::Value = serde_json::from_str(&id_before).unwrap();
    assert_eq!(status["store_id"], was["store_id"], "the same store, moved");
    assert_eq!(status["sources"][0]["users_known"], 21);
    // Never merged into an existing store.
    let again = h
        .rollcall(&["store", "import", "--input", backup.to_str().unwrap()])
        .await;
    assert_eq!(again.status.code(), Some(6), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("never merges"));
}

/// Commands sent to a running `rollcall run` act as if run here: a relative `--output` is the
/// one this shell resolved, a store never passes whole through the admin socket, and a JSONL
/// file the running sink writes gets no second writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_run_holds_the_store_export_writes_where_the_cli_resolved_and_a_live_file_gets_no_second_writer(
) {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(5, &[4]);
    let h = Harness::new(
        &sim.url,
        "emit_initial_snapshot = true\npoll_interval = \"1s\"",
    );
    let run = running::run(&h).await;
    let events = h.dir.path().join("events.jsonl");
    // Six users observed, then the first full reconcile's sync.completed.
    wait::until("the running sink to write the first events", || {
        std::fs::read_to_string(&events).is_ok_and(|t| t.lines().count() == 7)
    })
    .await;
    let in_dir = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&h.config_path)
            .args(args)
            .current_dir(h.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let out = in_dir(&["store", "export", "--output", "backup.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let backup = std::fs::read_to_string(h.dir.path().join("backup.jsonl")).unwrap();
    assert!(
        backup.starts_with("{\"rollcall_store_export\":1"),
        "{backup}"
    );
    assert!(
        !std::path::Path::new("backup.jsonl").exists(),
        "written in the running process's directory instead"
    );

    let out = in_dir(&["store", "export"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--output FILE"),
        "{}",
        text(&out.stderr)
    );

    let out = in_dir(&["replay", "--sink", "siem", "--from-offset", "0"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("interleave") && text(&out.stderr).contains("--rewind"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&events).unwrap().lines().count(),
        7,
        "nothing written beside the running sink"
    );
    drop(run);
}
