//! Kylin full-read benchmark (every cycle reads every user, since Kylin's list has no filter by
//! change, so it must be cheap at 100k users).
//!
//! `cargo bench --bench kylin` runs the full size: the Kylin simulator with 100,000 users, a
//! rollcall cycle of a Kylin source compared with a bare reqwest loop reading the same pages
//! (same session, `Accept` and `page_size`) in the same run, and the store writes of an
//! unchanged cycle. It also times the simulator itself, which every Kylin test and benchmark
//! stands on: seeding the 100,000 users, and answering all of them in one page, against the
//! paged read of the same users. Under `cargo test` it runs the same code on 1,000 users as a
//! smoke test.

#[path = "support/mod.rs"]
mod support;
use rollcall_sim::kylin::{KylinOptions, KylinSim, ADMIN, ADMIN_PASSWORD, PUBLIC_ACCEPT};
use support::report;

use std::time::{Duration, Instant};

use rollcall::config::Config;
use rollcall::runner::{CycleOptions, Runner};
use rollcall::store::Store;

const RUNS: usize = 3;
/// rollcall's default `page_size` for Kylin, used by both loops.
const PAGE_SIZE: usize = 1000;

fn main() {
    let users = if support::full_size() { 100_000 } else { 1_000 };
    support::run("rollcall Kylin benchmark", "kylin", full_read(users));
}

async fn full_read(n: usize) {
    let sim = KylinSim::start(KylinOptions::default()).await;
    let start = Instant::now();
    sim.add_users(n);
    let seeded = start.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, ADMIN_PASSWORD).unwrap();
    let config_path = dir.path().join("rollcall.toml");
    std::fs::write(
        &config_path,
        format!(
            "[store]\npath = {:?}\n\n[[sources]]\nkind = \"kylin\"\nname = \"bench\"\nurl = \"{}\"\nusername = \"{ADMIN}\"\npassword_file = {:?}\npage_size = {PAGE_SIZE}\n\n[[sinks]]\nkind = \"jsonl\"\nname = \"file\"\npath = {:?}\n",
            dir.path().join("data").display().to_string(),
            sim.url,
            password.display().to_string(),
            dir.path().join("events.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let store = Store::open(&config.store.path).unwrap();
    let mut runner = Runner::new(&config, store).unwrap();

    let start = Instant::now();
    let first = runner
        .cycle(CycleOptions::default())
        .await
        .unwrap()
        .remove(0);
    let initial = start.elapsed();
    assert_eq!(first.users, n + 1);

    let mut baseline = Bare::new();
    let mut bare = Vec::new();
    let mut ours = Vec::new();
    let mut written = Vec::new();
    for _ in 0..RUNS {
        bare.push(baseline.read(&sim.url, n + 1).await);
        let size_before = runner.store().size_on_disk().unwrap();
        let start = Instant::now();
        let report = runner
            .cycle(CycleOptions::default())
            .await
            .unwrap()
            .remove(0);
        ours.push(start.elapsed());
        assert_eq!((report.users, report.events), (n + 1, 0));
        written.push((
            report.users_written,
            runner.store().size_on_disk().unwrap() as i64 - size_before as i64,
        ));
    }
    let one_page = baseline.one_page(&sim.url, n).await;
    // The baseline logs in once and keeps its cookie, as rollcall does: two sessions in all.
    let logins = sim.requests().iter().filter(|r| r.basic_auth).count();
    assert_eq!(logins, 2, "one Basic login per client, then the session");
    let (b, o) = (best(&bare), best(&ours));
    report!(
        "full read of a Kylin with {} users, {} pages of {PAGE_SIZE} (best of {RUNS}):",
        n + 1,
        (n + 1).div_ceil(PAGE_SIZE)
    );
    report!("  bare reqwest loop, same pages:   {:>8.1} ms", ms(b));
    report!("  rollcall cycle (read and diff):  {:>8.1} ms", ms(o));
    report!(
        "  ratio rollcall / bare:           {:>8.2}   (target ≤ 1.20)",
        o.as_secs_f64() / b.as_secs_f64()
    );
    report!("  first cycle (stores every user): {:>8.1} ms", ms(initial));
    report!("the Kylin simulator itself:");
    report!(
        "  seeding {n} users:           {:>8.1} ms   (target < 5000 ms)",
        ms(seeded)
    );
    report!(
        "  {n} users in one page:       {:>8.1} ms   (target < 10000 ms)",
        ms(one_page)
    );
    report!(
        "  ratio one page / paged read:    {:>8.2}",
        one_page.as_secs_f64() / b.as_secs_f64()
    );
    for (users, bytes) in &written {
        report!(
            "  unchanged cycle: {users} user records written, store size change {bytes:+} bytes"
        );
    }
    assert!(
        written.iter().all(|(u, _)| *u == 0),
        "an unchanged cycle must write no user record"
    );
}

/// The baseline: a reqwest client that reads the same pages by index and parses them, nothing
/// else. Basic credentials go with its first request only; the cookie store keeps the session.
struct Bare {
    http: reqwest::Client,
    session: bool,
}

impl Bare {
    fn new() -> Bare {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        Bare {
            http,
            session: false,
        }
    }

    async fn read(&mut self, url: &str, expect: usize) -> Duration {
        let start = Instant::now();
        let mut seen = 0;
        for page in 0.. {
            let mut req = self
                .http
                .get(format!("{url}/api/user"))
                .query(&[("page_offset", page), ("page_size", PAGE_SIZE)])
                .header("Accept", PUBLIC_ACCEPT);
            if !self.session {
                req = req.basic_auth(ADMIN, Some(ADMIN_PASSWORD));
                self.session = true;
            }
            let body: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            let rows = body["data"]["value"].as_array().unwrap().len();
            seen += rows;
            if rows < PAGE_SIZE {
                break;
            }
        }
        assert_eq!(seen, expect);
        start.elapsed()
    }

    /// The first `n` users in one page (the session is open by now), as a client that asks
    /// for everyone at once would read them.
    async fn one_page(&self, url: &str, n: usize) -> Duration {
        let start = Instant::now();
        let body: serde_json::Value = self
            .http
            .get(format!("{url}/api/user"))
            .query(&[("page_offset", 0), ("page_size", n)])
            .header("Accept", PUBLIC_ACCEPT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let elapsed = start.elapsed();
        assert_eq!(body["data"]["value"].as_array().unwrap().len(), n);
        assert_eq!(body["data"]["total_size"], n + 1);
        elapsed
    }
}

fn best(d: &[Duration]) -> Duration {
    *d.iter().min().unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
