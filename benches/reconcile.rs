//! Full-reconcile and diff benchmarks: rollcall's work on top of reading Superset's pages must
//! stay small next to the reading itself.
//!
//! `cargo bench --bench reconcile` runs the full sizes: a simulator with 100,000 users, a full
//! reconcile compared with a bare reqwest loop fetching the same pages in the same run, an
//! unchanged cycle's store writes, and a diff of 1,000,000 users with 1% changed (time and peak
//! memory), and per Superset release (5.0 pages by index and newest-first polls, 6.1 keyset
//! and filters) a full reconcile's time per user and an idle poll's requests and time. Under
//! `cargo test` it runs the same code on small sizes as a smoke test.

#[path = "support/superset.rs"]
mod superset_baseline;
#[path = "support/mod.rs"]
mod support;
use rollcall_sim::superset as sim;
use superset_baseline::{bare_keyset_read, login};
use support::report;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use peak_alloc::PeakAlloc;
use rollcall::config::Config;
use rollcall::diff::{diff, DiffOptions};
use rollcall::runner::{CycleOptions, Runner};
use rollcall::source::superset::{Snapshot, User};
use rollcall::store::Store;
use rollcall::user::Member;
use sim::{Release, Sim, SimOptions};

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

const RUNS: usize = 3;

fn main() {
    let (users, diff_users) = if support::full_size() {
        (100_000, 1_000_000)
    } else {
        (1_000, 10_000)
    };
    support::run("rollcall reconcile benchmark", "reconcile", async {
        reconcile(users).await;
        releases(users).await;
    });
    diff_bench(diff_users);
}

/// A runner polling `sim` as admin into a fresh store (the directory lives as long as it).
fn runner_for(sim: &Sim) -> (tempfile::TempDir, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "admin").unwrap();
    let config_path = dir.path().join("rollcall.toml");
    std::fs::write(
        &config_path,
        format!(
            "[store]\npath = {:?}\n\n[[sources]]\nkind = \"superset\"\nname = \"bench\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = {:?}\n\n[[sinks]]\nkind = \"jsonl\"\nname = \"file\"\npath = {:?}\n",
            dir.path().join("data").display().to_string(),
            sim.url,
            password.display().to_string(),
            dir.path().join("events.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let store = Store::open(&config.store.path).unwrap();
    let runner = Runner::new(&config, store).unwrap();
    (dir, runner)
}

async fn reconcile(n: usize) {
    let sim = Sim::start(SimOptions::default()).await;
    sim.add_users(n, &[4]);
    let (_dir, mut runner) = runner_for(&sim);

    // Log the baseline in once, before rollcall's first cycle: every password login bumps the
    // account's `login_count`, which rollcall would rightly record as a change.
    let http = reqwest::Client::new();
    let token = login(&http, &sim.url).await;
    let start = Instant::now();
    let first = runner
        .cycle(CycleOptions::default())
        .await
        .unwrap()
        .remove(0);
    let initial = start.elapsed();
    assert_eq!(first.users, n + 1);

    let mut bare = Vec::new();
    let mut ours = Vec::new();
    let mut written = Vec::new();
    for _ in 0..RUNS {
        bare.push(bare_reqwest(&http, &token, &sim.url, n + 1).await);
        let size_before = runner.store().size_on_disk().unwrap();
        let start = Instant::now();
        let report = runner
            .cycle(CycleOptions {
                full: true,
                confirm_deletes: false,
            })
            .await
            .unwrap()
            .remove(0);
        ours.push(start.elapsed());
        written.push((
            report.users_written,
            runner.store().size_on_disk().unwrap() as i64 - size_before as i64,
        ));
    }
    let (b, o) = (best(&bare), best(&ours));
    report!("full reconcile of {} users (best of {RUNS}):", n + 1);
    report!("  bare reqwest loop, same pages:   {:>8.1} ms", ms(b));
    report!("  rollcall full reconcile:         {:>8.1} ms", ms(o));
    report!(
        "  ratio rollcall / bare:           {:>8.2}   (target ≤ 1.20)",
        o.as_secs_f64() / b.as_secs_f64()
    );
    report!("  first run (stores every user):   {:>8.1} ms", ms(initial));
    for (users, bytes) in &written {
        report!("  unchanged reconcile: {users} user records written, store size change {bytes:+} bytes");
    }
    assert!(
        written.iter().all(|(u, _)| *u == 0),
        "an unchanged cycle must write no user record"
    );
}

/// Superset 5.0 (no id or time filters: pages by index, newest-first polls; docs/superset.md,
/// Releases 4.1 to 6.1) against 6.1 (keyset and filters), on the same users. The simulator
/// answers either in time linear in the users, so this measures rollcall's side; offset paging's
/// cost in a real database grows with the offset (see docs/superset-setup.md, Superset releases
/// 4.1 to 6.1).
async fn releases(n: usize) {
    report!("per release, {} users (best of {RUNS}):", n + 1);
    for release in [Release::V6_1, Release::V5_0] {
        let sim = Sim::start(SimOptions {
            release,
            ..SimOptions::default()
        })
        .await;
        sim.add_users(n, &[4]);
        // Idle means nothing changed within the polls' overlap but the one change that set the
        // high-water mark.
        sim.age_users(Duration::from_secs(24 * 3600));
        sim.update_user(2, |u| u.last_name = "Recent".into());
        let (_dir, mut runner) = runner_for(&sim);
        runner.cycle(CycleOptions::default()).await.unwrap();
        let mut full = Vec::new();
        let mut idle = Vec::new();
        let mut requests = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            runner
                .cycle(CycleOptions {
                    full: true,
                    confirm_deletes: false,
                })
                .await
                .unwrap();
            full.push(start.elapsed());
            sim.clear_requests();
            let start = Instant::now();
            let report = runner
                .cycle(CycleOptions::default())
                .await
                .unwrap()
                .remove(0);
            idle.push(start.elapsed());
            assert!(!report.full && report.events == 0, "{report:?}");
            requests = sim.requests().len();
        }
        let per_user = best(&full).as_secs_f64() * 1e6 / (n + 1) as f64;
        report!(
            "  {release:?}: full reconcile {:>8.1} ms ({per_user:.1} µs per user); idle poll {:>6.1} ms, {requests} requests",
            ms(best(&full)),
            ms(best(&idle))
        );
    }
}

/// The baseline: fetch the same keyset pages and parse them, nothing else.
async fn bare_reqwest(http: &reqwest::Client, token: &str, url: &str, expect: usize) -> Duration {
    let start = Instant::now();
    assert_eq!(bare_keyset_read(http, url, token).await, expect);
    start.elapsed()
}

fn diff_bench(n: u64) {
    let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
    let user = |id: u64| User {
        id,
        username: format!("user{id:07}"),
        first_name: format!("First{id}"),
        last_name: "Example".into(),
        email: format!("user{id:07}@example.com"),
        active: true,
        roles: vec![Member {
            id: 4.into(),
            name: "Gamma".into(),
        }],
        groups: vec![],
        login_count: Some(3),
        fail_login_count: Some(0),
        last_login: Some(t(id as i64)),
        created_on: t(0),
        changed_on: t(id as i64),
        created_by: Some(1),
        changed_by: Some(1),
    };
    let old: Snapshot = (1..=n).map(|id| (id, user(id))).collect();
    let mut new = old.clone();
    for (id, u) in new.iter_mut() {
        if id % 100 == 0 {
            u.first_name.push_str("-renamed");
        }
    }
    let before_diff = PEAK.current_usage();
    PEAK.reset_peak_usage();
    let start = Instant::now();
    let events = diff(&old, &new, &DiffOptions::default());
    let took = start.elapsed();
    let peak = PEAK.peak_usage();
    assert_eq!(events.len() as u64, n / 100);
    report!("diff of {n} users, 1% changed:");
    report!(
        "  time:                            {:>8.1} ms   (target < 1000 ms)",
        ms(took)
    );
    report!(
        "  peak memory, both snapshots held:{:>8.1} MiB  (target < 1536 MiB)",
        peak as f64 / 1048576.0
    );
    report!(
        "  of which the diff itself:        {:>8.1} MiB",
        (peak - before_diff) as f64 / 1048576.0
    );
}

fn best(d: &[Duration]) -> Duration {
    *d.iter().min().unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
