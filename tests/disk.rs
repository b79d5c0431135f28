//! Faults of the disk under the store and the JSONL sink, made real: the child rollcall gets a
//! file size limit (`RLIMIT_FSIZE`, so a write past it fails with EFBIG as on a full disk), a
//! damaged sled config, or a store directory that vanished. Each test drives the real binary.

use crate::support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::harness::Harness;
use support::running;
use support::sim::{Sim, SimOptions};
use support::wait;

/// The real binary with `h`'s config. Writes past `fsize` bytes fail with EFBIG instead of
/// killing the process with SIGXFSZ, as a write to a full disk fails with ENOSPC.
fn rollcall(h: &Harness, args: &[&str], fsize: Option<u64>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.arg("--config").arg(&h.config_path).args(args);
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if let Some(limit) = fsize {
                set_fsize(0, limit)?;
            }
            Ok(())
        });
    }
    cmd
}

/// Limit the size of files process `pid` (0: this one) may write.
fn set_fsize(pid: libc::pid_t, limit: u64) -> std::io::Result<()> {
    let rlim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `rlim` outlives the call; a null old-limit pointer is allowed.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &rlim, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap()
}

fn store_file(h: &Harness) -> std::path::PathBuf {
    h.config().store.path.join("db")
}

fn created_subjects(h: &Harness) -> Vec<String> {
    h.events()
        .iter()
        .filter(|e| e["type"] == "user.created")
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_is_logged_shown_unready_unhealthy_and_pauses_polling() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "poll_interval = \"1s\"\naction_log = false");
    let mut r = running::start(rollcall(&h, &[], None)).await;
    wait::until_async("the first poll", || async {
        r.get("/readyz").await.0 == 200
    })
    .await;

    // The disk fills: from now on the store file cannot grow much, and the next poll brings
    // far more than that.
    let size = std::fs::metadata(store_file(&h)).unwrap().len();
    set_fsize(r.child.id() as libc::pid_t, size + 256 * 1024).unwrap();
    sim.add_users(3000, &[support::sim::GAMMA_ROLE]);
    let mut failed = None;
    wait::until("the failed poll to be logged", || {
        failed = r.logged_message("the store failed");
        failed.is_some()
    })
    .await;
    let failed = failed.unwrap();
    assert_eq!(failed["level"], "ERROR");
    assert!(
        failed["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("File too large"),
        "{failed}"
    );
    let requests_when_it_failed = sim.requests().len();

    let (status, body) = r.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("store: cannot write since"), "{body}");
    let (status, body) = r.get("/status").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(
        doc["store_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("File too large")),
        "{doc}"
    );
    wait::until_async(
        "/healthz to fail: the store takes no write any more",
        || async { r.get("/healthz").await.0 == 503 },
    )
    .await;
    // Each failed probe is logged.
    r.said("the store still refuses writes").await;
    assert_eq!(
        sim.requests().len(),
        requests_when_it_failed,
        "nothing is polled while the store refuses writes"
    );

    // SAFETY: the child is ours and still running (its log is read until it exits).
    assert_eq!(
        unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let exit = tokio::task::spawn_blocking(move || {
        let status = r.child.wait().unwrap();
        (status, r)
    })
    .await
    .unwrap();
    let (status, r) = exit;
    assert!(
        !status.success(),
        "stopping with a failing store is a failure"
    );
    wait::until("the reason to be printed", || {
        r.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("stopped while the store refuses writes"))
    })
    .await;
    drop(r);

    // Once the disk has room again, a restart derives everything the failed polls found.
    let out = output(rollcall(&h, &["once"], None)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut created = created_subjects(&h);
    created.sort();
    created.dedup();
    assert_eq!(
        created.len(),
        3000,
        "every new user's event, once in the log"
    );
}

/// Valid JSONL filling `bytes`, as an earlier run would have left it.
fn prefill(h: &Harness, bytes: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(bytes + 32);
    let mut i = 0;
    while text.len() < bytes {
        text.extend_from_slice(format!("{{\"earlier\":{i}}}\n").as_bytes());
        i += 1;
    }
    std::fs::write(h.events_path(), &text).unwrap();
    text
}

fn assert_every_line_is_json(text: &[u8]) {
    assert!(
        text.is_empty() || text.ends_with(b"\n"),
        "ends in a whole line"
    );
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if !line.is_empty() {
            serde_json::from_slice::<Value>(line).unwrap_or_else(|e| {
                panic!(
                    "line {} is not JSON ({e}): {}",
                    i + 1,
                    String::from_utf8_lossy(line)
                )
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_write_that_fails_half_way_is_cut_back_to_its_last_whole_line() {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(50, &[support::sim::GAMMA_ROLE]);
    let h = Harness::new(&sim.url, "emit_initial_snapshot = true\naction_log = false");
    // Far larger than the store grows here, so only the JSONL file reaches the limit, and in
    // the middle of the batch.
    let before = prefill(&h, 8 << 20);
    let out = output(rollcall(&h, &["once"], Some(before.len() as u64 + 3000))).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot write") && stderr.contains("File too large"),
        "{stderr}"
    );
    let after = std::fs::read(h.events_path()).unwrap();
    assert!(
        after == before,
        "the partial batch is cut back: the file is as it was"
    );

    let out = output(rollcall(&h, &["once"], None)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read(h.events_path()).unwrap();
    assert_every_line_is_json(&text);
    let observed = text[before.len()..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(
        observed, 52,
        "each user's event once (and the full reconcile's sync.completed), after the earlier lines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_last_line_left_by_a_crash_is_cut_when_the_sink_opens_the_file() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "emit_initial_snapshot = true\naction_log = false");
    let whole = "{\"earlier\":1}\n";
    std::fs::write(
        h.events_path(),
        format!("{whole}{{\"specversion\":\"1.0\",\"id\":\"01"),
    )
    .unwrap();
    let out = output(rollcall(&h, &["once"], None)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut a partial last line"),
        "said so"
    );
    let text = std::fs::read(h.events_path()).unwrap();
    assert_every_line_is_json(&text);
    assert!(text.starts_with(whole.as_bytes()));
    assert_eq!(
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        3,
        "the earlier line, the admin observed, the full reconcile's sync.completed"
    );
}

fn store_files(h: &Harness) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(h.config().store.path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_says_what_happened_that_nothing_changed_and_what_to_do() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    assert!(output(rollcall(&h, &["once"], None)).await.status.success());
    // sled's own config file, damaged (no CRC can vouch for it any more).
    std::fs::write(
        h.config().store.path.join("conf"),
        "segment_size: lots\nuse_compression: false\nversion: 0.34\n\0\0\0\0",
    )
    .unwrap();
    let before = store_files(&h);
    for args in [["once"], ["status"]] {
        let out = output(rollcall(&h, &args, None)).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("an error line in: {stderr}"));
        for says in [
            "is damaged",
            "changing anything",
            "Restore the store directory from a backup",
        ] {
            assert!(error.contains(says), "{args:?}: `{says}` in: {error}");
        }
        assert_eq!(error.matches("corrupted").count(), 1, "once: {error}");
    }
    assert!(store_files(&h) == before, "nothing in the store changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_vanished_comes_back_loudly_with_a_new_id() {
    let sim = Sim::start(SimOptions::default()).await;
    let h = Harness::new(&sim.url, "");
    let out = output(rollcall(&h, &["once"], None)).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("NEW STORE"));
    let id = |out: Output| -> String {
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        status["store_id"].as_str().unwrap().to_owned()
    };
    let first = id(output(rollcall(&h, &["status", "--json"], None)).await);
    let out = output(rollcall(&h, &["once"], None)).await;
    assert!(!String::from_utf8_lossy(&out.stderr).contains("NEW STORE"));
    assert_eq!(
        id(output(rollcall(&h, &["status", "--json"], None)).await),
        first
    );

    std::fs::remove_dir_all(h.config().store.path).unwrap();
    let out = output(rollcall(&h, &["once"], None)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NEW STORE") && stderr.contains("start at 0"),
        "{stderr}"
    );
    let second = id(output(rollcall(&h, &["status", "--json"], None)).await);
    assert_ne!(second, first, "a new store is a new log");
    let out = output(rollcall(&h, &["status"], None)).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("(id {second})")));
}
