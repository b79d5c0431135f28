//! What the hash chain costs, and how fast it is checked.
//!
//! `cargo bench --bench chain` runs the full sizes: commits of 2,000 changed users with their
//! `user.updated` events (a cycle's chunk, `CHUNK` in `src/cycle.rs`) into a fresh store,
//! chained (and with signed checkpoints) against the same commits without the chain in the same
//! run, as events/s and the ratio, and the chain's own work per event without I/O; then
//! `rollcall verify` (the real binary) of a JSONL file of 1,000,000 chained events, its time
//! and peak memory. Under `cargo test` it runs the same code
//! on small sizes as a smoke test.

#[path = "support/events.rs"]
mod events;
#[path = "support/memory.rs"]
mod memory;
#[path = "support/mod.rs"]
mod support;
use support::report;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use rollcall::store::{Checkpoints, Commit, Record, Store};

const CHUNK: usize = 2000;
const RUNS: usize = 9;

/// How a commit run appends its events.
#[derive(Clone, Copy, PartialEq)]
enum Chaining {
    /// As a store before the chain: the baseline.
    Off,
    /// Chained, no key.
    On,
    /// Chained, a signed checkpoint every 1,000 events (the default).
    Signed,
}

fn main() {
    let (commits, verified) = if support::full_size() {
        (40_000, 1_000_000)
    } else {
        (4_000, 2_000)
    };
    support::run("rollcall hash chain benchmark", "chain", async {
        commit_throughput(commits);
        verify(verified);
    });
}

/// The chunks a run commits: each user's record and its event.
fn chunks(n: usize) -> Vec<(Vec<Record>, Vec<rollcall::event::Event>)> {
    let now = Utc::now();
    (0..n)
        .collect::<Vec<_>>()
        .chunks(CHUNK)
        .map(|chunk| {
            let events: Vec<_> = chunk
                .iter()
                .map(|&i| events::user_updated(i as u64, i as u64, now))
                .collect();
            let records = events
                .iter()
                .map(|e| Record {
                    key: e.subject.parse::<u64>().unwrap().to_be_bytes().to_vec(),
                    value: serde_json::to_vec(&e.data["user"]).unwrap(),
                })
                .collect();
            (records, events)
        })
        .collect()
}

/// Events/s of committing `n` events, a chunk at a time, into a fresh store.
fn commit_run(n: usize, how: Chaining) -> f64 {
    let chunks = chunks(n);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    match how {
        Chaining::Off => store.append_unchained(),
        Chaining::On => {}
        Chaining::Signed => {
            std::fs::write(dir.path().join("key.pem"), key_pem()).unwrap();
            store.sign_checkpoints(Checkpoints {
                signer: rollcall::chain::checkpoint::Signer::load(&dir.path().join("key.pem"))
                    .unwrap(),
                every: 1000,
                interval: Duration::from_secs(3600),
            });
        }
    }
    let started = Instant::now();
    for (upserts, events) in chunks {
        store
            .commit(Commit {
                source: "bench",
                upserts,
                removals: Vec::new(),
                events,
                state: None,
            })
            .unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn commit_throughput(n: usize) {
    let (mut off, mut on, mut signed) = (Vec::new(), Vec::new(), Vec::new());
    // Each round runs the three in another order, so that neither a drift in the machine's load
    // nor the disk still writing back the previous run's store favours one of them.
    for round in 0..RUNS {
        for i in 0..3 {
            match (round + i) % 3 {
                0 => off.push(commit_run(n, Chaining::Off)),
                1 => on.push(commit_run(n, Chaining::On)),
                _ => signed.push(commit_run(n, Chaining::Signed)),
            }
        }
    }
    let ratios = |v: &[f64]| median(v.iter().zip(&off).map(|(a, b)| a / b).collect());
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    report!(
        "commits of {CHUNK} changed users and their events, {n} events a run, {RUNS} runs each:"
    );
    report!(
        "  without the chain (baseline): best {:.0} events/s, median {:.0}",
        best(&off),
        median(off.clone())
    );
    for (what, v) in [("chained", &on), ("chained, signed every 1,000", &signed)] {
        report!(
            "  {what}: best {:.0} events/s, median {:.0}; ratio / baseline: best of each {:.3}, median of the rounds' own {:.3}",
            best(v),
            median(v.clone()),
            best(v) / best(&off),
            ratios(v)
        );
    }
    chain_work(n, median(off));
}

/// The chain's own work per event, without I/O: what a commit does to an event without the chain
/// (serialize it) against what it does with it (serialize, hash the canonical bytes, link), as a
/// share of the baseline's time per committed event.
fn chain_work(n: usize, baseline_per_s: f64) {
    let now = Utc::now();
    let events: Vec<_> = (0..n as u64)
        .map(|i| {
            let mut e = events::user_updated(i, i, now);
            e.sequence = rollcall::event::Event::sequence_for(i);
            e
        })
        .collect();
    let time = |f: &dyn Fn(&rollcall::event::Event) -> usize| {
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let bytes: usize = events.iter().map(f).sum();
                assert!(bytes > 0);
                started.elapsed().as_secs_f64() / n as f64
            })
            .fold(f64::MAX, f64::min)
    };
    let plain = time(&|e| serde_json::to_vec(e).unwrap().len());
    let prev = [7; 32];
    let chained = time(&|e| rollcall::chain::chain(e, &prev, Some(e.id)).1.len());
    let extra = chained - plain;
    report!(
        "  the chain's own work: {:.2} µs an event (serialize {:.2} µs, serialize and chain {:.2} µs), {:.1} % of the baseline's {:.1} µs per committed event",
        extra * 1e6,
        plain * 1e6,
        chained * 1e6,
        100.0 * extra * baseline_per_s,
        1e6 / baseline_per_s
    );
}

/// A JSONL file of `n` chained events with a checkpoint every 1,000, as a JSONL sink writes
/// them, then `rollcall verify` of it.
fn verify(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("key.pem"), key_pem()).unwrap();
    store.sign_checkpoints(Checkpoints {
        signer: rollcall::chain::checkpoint::Signer::load(&dir.path().join("key.pem")).unwrap(),
        every: 1000,
        interval: Duration::from_secs(3600),
    });
    events::fill(&store, n as u64, 10_000);
    let file = dir.path().join("events.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let (mut lines, mut from) = (0u64, 0);
    loop {
        let chunk = store.events_from(from, 10_000).unwrap();
        let Some(last) = chunk.last() else { break };
        from = last.offset + 1;
        for e in &chunk {
            out.write_all(&e.bytes).unwrap();
            out.write_all(b"\n").unwrap();
            lines += 1;
        }
    }
    out.flush().unwrap();
    drop(store);
    let bytes = std::fs::metadata(&file).unwrap().len();
    let (took, peak_kib, said) = run_verify(&file);
    assert!(said.starts_with("intact:"), "{said}");
    report!(
        "rollcall verify of {lines} lines ({n} events and their checkpoints, {} MiB): {:.2} s ({:.0} events/s), peak memory {} MiB",
        bytes >> 20,
        took.as_secs_f64(),
        lines as f64 / took.as_secs_f64(),
        peak_kib >> 10
    );
}

/// `rollcall verify FILE`: its time, peak resident memory and what it said.
fn run_verify(file: &Path) -> (Duration, i64, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("verify")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rollcall starts");
    let mut peak = 0;
    loop {
        peak = peak.max(memory::vm_hwm_kib(child.id()).unwrap_or(0));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    (
        took,
        peak,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A key `openssl genpkey -algorithm ed25519` wrote (the tests sign with it too).
fn key_pem() -> &'static str {
    include_str!("../tests/fixtures/chain/signing.pem")
}
