//! Scale benchmark: that a cycle's memory and time do not grow with the number of users beyond
//! reading them. The real `rollcall once` as a child process against the Superset simulator,
//! per user count, in one run.
//!
//! For each size it reports: the first full reconcile (into an empty store), an unchanged full
//! reconcile next to a bare sequential keyset read of the same pages (best of two each,
//! interleaved: the ratio compares like with like), and an idle incremental cycle: wall time,
//! the process's own peak RSS (`VmHWM`, the kernel's high-water mark of the whole process, not
//! only its heap, sampled every 5 ms), requests made and bytes the store grew by. The simulator
//! spends [`ANSWER_TIME`] per request outside its lock, as a threaded Superset spends its own
//! time (tests/fixtures/superset-releases/v6.0.0/timing.json: 22–47 ms a page of 100 users).
//! Then a Kylin source at 100,000 users, whose every cycle is a whole read: time and peak RSS.
//! `cargo bench --bench scale` runs 10,000 and 100,000 users (and 1,000,000 with
//! `ROLLCALL_BENCH_1M=1`, which takes long); under `cargo test` it runs 300 users as a smoke test.

#[path = "support/process.rs"]
mod process;
#[path = "support/superset.rs"]
mod superset_baseline;
#[path = "support/mod.rs"]
mod support;
use process::{dir_size, vm_hwm_kib};
use superset_baseline::{bare_keyset_read, login};
use support::report;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rollcall_sim::kylin::{KylinOptions, KylinSim, ADMIN, ADMIN_PASSWORD};
use rollcall_sim::superset::{Sim, SimOptions};

const ANSWER_TIME: Duration = Duration::from_millis(20);

fn main() {
    let sizes: Vec<usize> = if !support::full_size() {
        vec![300]
    } else if std::env::var_os("ROLLCALL_BENCH_1M").is_some() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        vec![10_000, 100_000]
    };
    support::run("rollcall scale benchmark", "scale", async move {
        report!("| users | measure | time | peak RSS | requests | store growth |");
        report!("|---|---|---|---|---|---|");
        for &n in &sizes {
            scale(n).await;
        }
        kylin(if support::full_size() { 100_000 } else { 300 }).await;
    });
}

/// What one child process took.
struct Run {
    took: Duration,
    peak_rss_kib: i64,
    requests: usize,
    growth: i64,
}

async fn scale(n: usize) {
    let answer_time = if support::full_size() {
        ANSWER_TIME
    } else {
        Duration::ZERO
    };
    let sim = Sim::start(SimOptions {
        answer_time,
        ..SimOptions::default()
    })
    .await;
    sim.add_users(n, &[4]);
    // Idle means nothing changed within the polls' overlap but the one change that set the
    // high-water mark: users made a day ago, one edited now.
    sim.age_users(Duration::from_secs(24 * 3600));
    sim.update_user(2, |u| u.last_name = "Recent".into());
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "kind = \"superset\"\nurl = \"{}\"\nusername = \"admin\"",
        sim.url
    );
    let config = write_config(dir.path(), &source, "admin");

    let first = once(&sim, &config, &["--full"]).await;
    row(n, "first full reconcile (empty store)", &first);

    let http = reqwest::Client::new();
    let token = login(&http, &sim.url).await;
    let (mut bare, mut full) = (Duration::MAX, None::<Run>);
    for _ in 0..2 {
        let started = Instant::now();
        let rows = bare_keyset_read(&http, &sim.url, &token).await;
        assert_eq!(rows, n + 1, "the bare read sees every user");
        bare = bare.min(started.elapsed());
        let run = once(&sim, &config, &["--full"]).await;
        if full.as_ref().is_none_or(|f| run.took < f.took) {
            full = Some(run);
        }
    }
    let full = full.expect("two runs");
    report!(
        "| {n} | bare sequential keyset read | {} ms | | {} | |",
        bare.as_millis(),
        n / 100 + 2
    );
    row(n, "unchanged full reconcile", &full);
    report!(
        "| {n} | **full reconcile / bare read** | **{:.2}** (target ≤ 0.75) | | | |",
        full.took.as_secs_f64() / bare.as_secs_f64()
    );

    let idle = once(&sim, &config, &[]).await;
    row(n, "idle incremental cycle", &idle);
    let own = idle.took.saturating_sub(answer_time * idle.requests as u32);
    report!(
        "| {n} | idle cycle beyond Superset's answer time ({} requests × {} ms) | **{} ms** (target ≤ 500) | | | |",
        idle.requests,
        answer_time.as_millis(),
        own.as_millis()
    );
    // The first run after one that wrote pays sled's rewrite of its own snapshot file at
    // open (a few bytes either way, not a write of this cycle); the next idle cycle shows the
    // cycle's own.
    let again = once(&sim, &config, &[]).await;
    let status = child(&|| sim.requests().len(), &config, "status", &[]).await;
    row(
        n,
        "baseline: `rollcall status` (opens the store, reads no user)",
        &status,
    );
    row(n, "next idle incremental cycle", &again);
    // Only at full size: the stored poll time is rewritten once a minute, and a smoke run on
    // a loaded machine may take that long (tests/scale.rs checks the rule itself).
    if support::full_size() {
        // sled may also shrink its own files when it opens (a smaller snapshot file): what a
        // write of the cycle would show is growth.
        assert!(
            again.growth <= 0,
            "an idle cycle writes nothing, grew {}",
            again.growth
        );
    }
}

fn row(n: usize, what: &str, run: &Run) {
    report!(
        "| {n} | {what} | {} ms | {:.0} MiB | {} | {} bytes |",
        run.took.as_millis(),
        run.peak_rss_kib as f64 / 1024.0,
        run.requests,
        run.growth
    );
}

/// A Kylin source at `n` users: its list has no filter by change, so
/// every cycle is a whole read, compared user by user with what is stored; its memory must
/// not hold the users either. Time against a bare read is `benches/kylin.rs`'s.
async fn kylin(n: usize) {
    let sim = KylinSim::start(KylinOptions::default()).await;
    sim.add_users(n);
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "kind = \"kylin\"\nurl = \"{}\"\nusername = \"{ADMIN}\"",
        sim.url
    );
    let config = write_config(dir.path(), &source, ADMIN_PASSWORD);
    let requests = || sim.requests().len();
    let first = child(&requests, &config, "once", &[]).await;
    row(n, "Kylin: first cycle (empty store)", &first);
    let unchanged = child(&requests, &config, "once", &[]).await;
    row(n, "Kylin: unchanged cycle (reads every user)", &unchanged);
}

/// A config of one source (its `kind`, `url` and `username` lines) and a JSONL sink.
fn write_config(dir: &Path, source: &str, password: &str) -> std::path::PathBuf {
    let password_file = dir.join("pw");
    std::fs::write(&password_file, password).unwrap();
    let path = dir.join("rollcall.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n\n[[sources]]\n{source}\nname = \"bench\"\npassword_file = {:?}\n\n[[sinks]]\nkind = \"jsonl\"\nname = \"file\"\npath = {:?}\n",
            dir.join("data").display().to_string(),
            password_file.display().to_string(),
            dir.join("events.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// Run `rollcall once` to its end in a child process.
async fn once(sim: &Sim, config: &Path, args: &[&str]) -> Run {
    child(&|| sim.requests().len(), config, "once", args).await
}

/// Run a rollcall command to its end in a child process; `requests` counts what the
/// simulator has received.
async fn child(
    requests: &dyn Fn() -> usize,
    config: &Path,
    command: &'static str,
    args: &[&str],
) -> Run {
    let store = config.parent().unwrap().join("data");
    let before = dir_size(&store);
    let requests_before = requests();
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (took, peak_rss_kib) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg(command)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rollcall starts");
        // The child's own high-water mark, sampled until it exits. Not `ru_maxrss` from
        // `wait4`: Linux carries the forking process's peak into a child across `exec`, and
        // this process holds the simulator's users.
        let mut peak = 0;
        let status = loop {
            peak = peak.max(vm_hwm_kib(child.id()).unwrap_or(0));
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "rollcall {command} exited with {status}");
        (started.elapsed(), peak)
    })
    .await
    .unwrap();
    Run {
        took,
        peak_rss_kib,
        requests: requests() - requests_before,
        growth: dir_size(&store) as i64 - before as i64,
    }
}
