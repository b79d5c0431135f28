//! Fleet benchmark: many sources in one process, one of them hung. The real binary as a child
//! process against one Superset simulator per source (1,000 users each, answering in
//! [`ANSWER_TIME`] a request as a real one does, docs/performance.md), plus a source that
//! accepts connections and never answers.
//!
//! For each fleet size it reports:
//!
//! - **first start**: `rollcall once` into an empty store: wall time, the process's peak RSS
//!   (`VmHWM`), the most requests the simulators answered at once (against
//!   `max_concurrent_polls`, 8 on two cores) and the most sockets the process held;
//! - **under `run`** (on that store, every source polled every [`INTERVAL`]), after each
//!   source's first poll of this process: CPU time per source poll (the process's CPU time
//!   over the polls its `rollcall_poll_duration_seconds` histogram counted: idle polls, since
//!   nothing changes), bytes the store grew by per idle cycle of the fleet, the longest gap
//!   between two polls of a healthy source next to the interval (target: two intervals while
//!   the hung source times out), and peak RSS.
//!
//! `cargo bench --bench fleet` runs 10, 100, 200 and 500 sources; under `cargo test` it runs
//! 3 sources of 20 users as a smoke test.

#[path = "support/process.rs"]
mod process;
#[path = "support/mod.rs"]
mod support;
use process::{dir_size, vm_hwm_kib};
use support::report;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollcall_sim::superset::{Sim, SimOptions};
use rollcall_sim::InFlight;

/// A real Superset's time for a page (docs/performance.md, Scale).
const ANSWER_TIME: Duration = Duration::from_millis(20);
/// Every source's `poll_interval` under `run`.
const INTERVAL: Duration = Duration::from_secs(10);
/// Polls each healthy source makes under `run` while it is measured.
const MEASURED_POLLS: u64 = 3;

/// How big a run is: full size under `cargo bench`, a smoke test under `cargo test`.
struct Size {
    users: usize,
    answer_time: Duration,
    interval: Duration,
}

fn main() {
    let (fleets, size) = if support::full_size() {
        (
            vec![10, 100, 200, 500],
            Size {
                users: 1_000,
                answer_time: ANSWER_TIME,
                interval: INTERVAL,
            },
        )
    } else {
        (
            vec![3],
            Size {
                users: 20,
                answer_time: Duration::ZERO,
                interval: Duration::from_secs(1),
            },
        )
    };
    support::run("rollcall fleet benchmark", "fleet", async move {
        report!("| sources (+1 hung) | first start | peak RSS | most requests at once | most sockets | run: CPU per poll | store growth per idle cycle | longest gap between polls | run: peak RSS |");
        report!("|---|---|---|---|---|---|---|---|---|");
        for n in fleets {
            fleet(n, &size).await;
        }
    });
}

async fn fleet(n: usize, size: &Size) {
    let in_flight = Arc::new(InFlight::default());
    let mut sims = Vec::new();
    for _ in 0..n {
        let sim = Sim::start(SimOptions {
            answer_time: size.answer_time,
            in_flight: Some(in_flight.clone()),
            ..SimOptions::default()
        })
        .await;
        sim.add_users(size.users, &[4]);
        // Idle: nothing changed within the polls' overlap but the one change that set the
        // high-water mark.
        sim.age_users(Duration::from_secs(24 * 3600));
        sim.update_user(2, |u| u.last_name = "Recent".into());
        sims.push(sim);
    }
    let hung = hung().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sims, &hung, size.interval);
    let store = dir.path().join("data");

    let first = once(&config, &in_flight).await;

    let run = measure_run(&config, &store, n).await;
    report!(
        "| {n} | {:.1?} | {} MiB | {} | {} | {:.2} ms | {} bytes | {:.1} s ({:.2}× the interval) | {} MiB |",
        first.took,
        first.peak_rss_kib / 1024,
        in_flight.most(),
        first.most_sockets,
        run.cpu_per_poll.as_secs_f64() * 1e3,
        run.growth_per_cycle,
        run.longest_gap.as_secs_f64(),
        run.longest_gap.as_secs_f64() / size.interval.as_secs_f64(),
        run.peak_rss_kib / 1024,
    );
    if support::full_size() {
        let verdicts = [
            (
                n != 100 || first.peak_rss_kib <= 256 * 1024,
                "100 sources within 256 MiB",
            ),
            (
                run.cpu_per_poll <= Duration::from_millis(10),
                "at most 10 ms CPU per idle poll",
            ),
            (run.growth_per_cycle == 0, "nothing written by idle cycles"),
            (
                run.longest_gap <= 2 * size.interval,
                "every healthy source polled within two intervals",
            ),
        ];
        for (met, target) in verdicts {
            if !met {
                report!("  {n} sources: target NOT met: {target}");
            }
        }
    }
    drop(hung);
    drop(sims);
}

/// A source that accepts connections and never answers; dropping it closes them.
struct Hung {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hung() -> Hung {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Hung { url, task }
}

fn write_config(dir: &Path, sims: &[Sim], hung: &Hung, interval: Duration) -> PathBuf {
    let password = dir.join("password");
    std::fs::write(&password, "admin\n").unwrap();
    let source = |name: &str, url: &str, extra: &str| {
        format!(
            "[[sources]]\nkind = \"superset\"\nname = \"{name}\"\nurl = \"{url}\"\nusername = \"admin\"\npassword_file = {password:?}\npoll_interval = \"{}s\"\naction_log = false\n{extra}\n",
            interval.as_secs()
        )
    };
    let mut sources: String = sims
        .iter()
        .enumerate()
        .map(|(i, sim)| source(&format!("s{i}"), &sim.url, ""))
        .collect();
    sources.push_str(&source(
        "hung",
        &hung.url,
        "request_timeout = \"2s\"\nmax_retries = 0",
    ));
    let config = dir.join("rollcall.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[store]\npath = {:?}\n\n[[sinks]]\nkind = \"jsonl\"\nname = \"siem\"\npath = {:?}\n\n{sources}",
            dir.join("data"),
            dir.join("events.jsonl"),
        ),
    )
    .unwrap();
    config
}

struct First {
    took: Duration,
    peak_rss_kib: i64,
    most_sockets: usize,
}

/// `rollcall once` to its end: it exits 4, naming the hung source, once that source's
/// deadline has passed.
async fn once(config: &Path, in_flight: &InFlight) -> First {
    let config = config.to_owned();
    let first = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&config)
            .arg("once")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rollcall starts");
        let (mut peak, mut most_sockets) = (0, 0);
        let status = loop {
            peak = peak.max(vm_hwm_kib(child.id()).unwrap_or(0));
            most_sockets = most_sockets.max(sockets(child.id()));
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            status.code(),
            Some(4),
            "rollcall once should fail the hung source alone"
        );
        First {
            took: started.elapsed(),
            peak_rss_kib: peak,
            most_sockets,
        }
    })
    .await
    .unwrap();
    assert!(in_flight.most() > 0, "the simulators were asked nothing");
    first
}

struct Measured {
    cpu_per_poll: Duration,
    growth_per_cycle: i64,
    longest_gap: Duration,
    peak_rss_kib: i64,
}

/// `rollcall run` on the fleet until each healthy source has made [`MEASURED_POLLS`] polls
/// after its first one of this process.
async fn measure_run(config: &Path, store: &Path, n: usize) -> Measured {
    let mut run = Run::start(config);
    let metrics = format!("http://{}/metrics", run.address().await);
    let healthy: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    // Every healthy source's first poll of this process is done: from here all is idle.
    let polls = loop {
        let now = scrape(&metrics).await;
        if healthy
            .iter()
            .all(|s| now.get(s).is_some_and(|&c| c >= 1.0))
        {
            break now;
        }
        run.check_alive();
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (cpu_before, size_before) = (run.cpu_time(), dir_size(store));
    let started = Instant::now();
    let mut last_poll: BTreeMap<String, (f64, Instant)> = polls
        .iter()
        .map(|(s, &c)| (s.clone(), (c, started)))
        .collect();
    let mut longest_gap = Duration::ZERO;
    let counted = loop {
        let now = scrape(&metrics).await;
        let at = Instant::now();
        for source in &healthy {
            let count = now.get(source).copied().unwrap_or(0.0);
            let (seen, since) = last_poll[source];
            longest_gap = longest_gap.max(at - since);
            if count > seen {
                last_poll.insert(source.clone(), (count, at));
            }
        }
        let done = healthy
            .iter()
            .all(|s| now.get(s).copied().unwrap_or(0.0) >= polls[s] + MEASURED_POLLS as f64);
        if done {
            break now;
        }
        run.check_alive();
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cpu = run.cpu_time() - cpu_before;
    let all_polls: f64 = counted.values().sum::<f64>() - polls.values().sum::<f64>();
    let cycles = all_polls / (n + 1) as f64;
    let growth = dir_size(store) as i64 - size_before as i64;
    Measured {
        cpu_per_poll: cpu.div_f64(all_polls.max(1.0)),
        growth_per_cycle: (growth as f64 / cycles.max(1.0)).round() as i64,
        longest_gap,
        peak_rss_kib: run.peak_rss_kib(),
    }
}

/// Polls made so far per source: the count of its `rollcall_poll_duration_seconds`.
async fn scrape(metrics: &str) -> BTreeMap<String, f64> {
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the scrape parses as Prometheus text");
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == "rollcall_poll_duration_seconds_count")
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some((s.labels.get("source")?.to_owned(), value))
        })
        .collect()
}

/// A `rollcall run` child; dropping it kills it.
struct Run {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Run {
    fn start(config: &Path) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json", "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rollcall starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Run { child, log }
    }

    /// The address `run` logged it serves on.
    async fn address(&mut self) -> String {
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(v["fields"]["address"].as_str()?.to_owned())
            });
            if let Some(address) = found {
                return address;
            }
            self.check_alive();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Fail the benchmark, with what the process logged, if it has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "rollcall run exited with {status}:\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
    }

    fn cpu_time(&self) -> Duration {
        cpu_time(self.child.id()).expect("the process's CPU time")
    }

    /// The kernel's high-water mark of the process's resident memory so far.
    fn peak_rss_kib(&self) -> i64 {
        vm_hwm_kib(self.child.id()).expect("the process's peak RSS")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time a running process has used so far (user and system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces, inside parentheses): utime
    // and stime are the 14th and 15th of the whole line, in clock ticks.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the running system and has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Sockets a running process holds open (its listeners included).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}
