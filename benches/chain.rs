//! What the hash chain costs, and how fast it is checked.
//!
//! `cargo bench --bench chain` runs the full sizes: commits of 2,000 changed users with their
//! `user.updated` events (a cycle's chunk, `CHUNK` in `src/cycle.rs`) into a fresh store,
//! chained (and with signed checkpoints) against the same commits without the chain in the same
//! run, and without the chain but with events as long as chained ones (what the chain's bytes
//! alone cost), as events/s and CPU time per event and their ratios, and the chain's own work
//! per event without I/O; then
//! `rollcall verify` (the real binary) of a JSONL file of 1,000,000 chained events, its time
//! and peak memory. Under `cargo test` it runs the same code
//! on small sizes as a smoke test.

#[path = "support/events.rs"]
mod events;
#[path = "support/process.rs"]
mod process;
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
const RUNS: usize = 15;

/// How a commit run appends its events.
#[derive(Clone, Copy, PartialEq)]
enum Chaining {
    /// As a store before the chain: the baseline.
    Off,
    /// As the baseline, each event made as long as the chain makes it (a `pad` in `data`): what
    /// the chain's bytes alone cost.
    Padded,
    /// Chained, no key.
    On,
    /// Chained, a signed checkpoint every 1,000 events (the default).
    Signed,
}

const ALL: [Chaining; 4] = [
    Chaining::Off,
    Chaining::Padded,
    Chaining::On,
    Chaining::Signed,
];

/// One run: events/s, and the committing thread's CPU time per event (µs), which other
/// processes' load on the cores does not inflate as it does the wall clock.
#[derive(Clone, Copy)]
struct Run {
    per_s: f64,
    cpu_us: f64,
}

fn main() {
    let (commits, verified) = if support::full_size() {
        (20_000, 1_000_000)
    } else {
        (4_000, 2_000)
    };
    support::run("rollcall hash chain benchmark", "chain", async {
        commit_throughput(commits);
        verify(verified);
    });
}

/// The chunks a run commits: each user's record and its event (with `pad` bytes more in it).
fn chunks(n: usize, pad: usize) -> Vec<(Vec<Record>, Vec<rollcall::event::Event>)> {
    let now = Utc::now();
    (0..n)
        .collect::<Vec<_>>()
        .chunks(CHUNK)
        .map(|chunk| {
            let events: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let mut e = events::user_updated(i as u64, i as u64, now);
                    if pad > 0 {
                        e.data["pad"] = serde_json::json!("x".repeat(pad));
                    }
                    e
                })
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

/// What the chain adds to a stored event, in bytes.
fn chain_bytes() -> usize {
    let e = events::user_updated(5, 5, Utc::now());
    let chained = rollcall::chain::chain(&e, 5, &[1; 32], Some(e.id)).1.len();
    // `,"pad":""` is itself part of the padding.
    chained - rollcall::chain::unchained(&e, 5).len() - r#","pad":"""#.len()
}

/// The CPU time the calling thread has used, in µs: the commits' own, without what sled's
/// background threads (of this run's store, or still of the last run's) do meanwhile.
fn cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD exists on Linux.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Commit `n` events, a chunk at a time, into a fresh store.
fn commit_run(n: usize, how: Chaining) -> Run {
    let chunks = chunks(
        n,
        if how == Chaining::Padded {
            chain_bytes()
        } else {
            0
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    match how {
        Chaining::Off | Chaining::Padded => store.append_unchained(),
        Chaining::On => {}
        Chaining::Signed => {
            std::fs::write(dir.path().join("key.pem"), key_pem()).unwrap();
            store.sign_checkpoints(Checkpoints {
                signer: rollcall::chain::checkpoint::Signer::load(&dir.path().join("key.pem"))
                    .unwrap(),
                every: 1000,
                interval: Duration::from_secs(3600),
                shard: None,
            });
        }
    }
    let (started, cpu) = (Instant::now(), cpu_us());
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
    Run {
        per_s: n as f64 / started.elapsed().as_secs_f64(),
        cpu_us: (cpu_us() - cpu) / n as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn commit_throughput(n: usize) {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); ALL.len()];
    // Each round runs them in another order, so that neither a drift in the machine's load nor
    // the disk still writing back the previous run's store favours one of them.
    for round in 0..RUNS {
        for i in 0..ALL.len() {
            let which = (round + i) % ALL.len();
            runs[which].push(commit_run(n, ALL[which]));
        }
    }
    let off = &runs[0];
    let ratio = |v: &[Run], f: fn(&Run) -> f64| {
        median(v.iter().zip(off).map(|(a, b)| f(a) / f(b)).collect())
    };
    report!(
        "commits of {CHUNK} changed users and their events, {n} events a run, {RUNS} rounds; the chain adds {} bytes to each event:",
        chain_bytes()
    );
    for (what, v) in [
        "without the chain (baseline)",
        "without the chain, events as long as chained ones",
        "chained",
        "chained, signed every 1,000",
    ]
    .into_iter()
    .zip(&runs)
    {
        report!(
            "  {what}: median {:.0} events/s, {:.1} µs CPU an event; against the baseline, median of the rounds' own: throughput {:.3}, CPU {:.3}",
            median(v.iter().map(|r| r.per_s).collect()),
            median(v.iter().map(|r| r.cpu_us).collect()),
            ratio(v, |r| r.per_s),
            ratio(v, |r| r.cpu_us)
        );
    }
    chain_work(n, median(off.iter().map(|r| r.cpu_us).collect()));
}

/// The chain's own work per event, without I/O: what a commit does to an event without the chain
/// (serialize it) against what it does with it (serialize, hash the canonical bytes, link), as a
/// share of the baseline's CPU time per committed event.
fn chain_work(n: usize, baseline_cpu_us: f64) {
    let now = Utc::now();
    let events: Vec<_> = (0..n as u64)
        .map(|i| events::user_updated(i, i, now))
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
    let plain = time(&|e| rollcall::chain::unchained(e, 9).len());
    let prev = [7; 32];
    let chained = time(&|e| rollcall::chain::chain(e, 9, &prev, Some(e.id)).1.len());
    let extra = chained - plain;
    report!(
        "  the chain's own work: {:.2} µs an event (serialize {:.2} µs, serialize and chain {:.2} µs), {:.1} % of the baseline's {:.1} µs CPU per committed event",
        extra * 1e6,
        plain * 1e6,
        chained * 1e6,
        100.0 * extra * 1e6 / baseline_cpu_us,
        baseline_cpu_us
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
        shard: None,
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
    let bytes = process::dir_size(&file);
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
        peak = peak.max(process::vm_hwm_kib(child.id()).unwrap_or(0));
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
