//! `rollcall run` as a child process serving its HTTP endpoints, and reading what they answer
//! and what it logs. A [`Running`] owns its child: dropping it, also when a test panics, kills
//! the process (SIGKILL) and reaps it, and a failing test shows the process's log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::harness::Harness;
use super::wait;

pub struct Running {
    pub child: Child,
    pub base: String,
    /// The process's log lines, shown when a test fails.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "rollcall run's log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
    }
}

impl Running {
    /// The first log line (parsed) for which `pick` gives something.
    pub fn logged<T>(&self, pick: impl Fn(&Value) -> Option<T>) -> Option<T> {
        self.log.lock().unwrap().iter().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            pick(&v)
        })
    }

    /// The first log line whose message starts with `start`.
    pub fn logged_message(&self, start: &str) -> Option<Value> {
        self.logged(|v| {
            v["fields"]["message"]
                .as_str()?
                .starts_with(start)
                .then(|| v.clone())
        })
    }

    /// The first log line whose message starts with `start`, once the test has read it: what
    /// the process answers over HTTP can arrive before the test has read its log that far.
    pub async fn said(&self, start: &str) -> Value {
        let mut line = None;
        super::wait::until(&format!("the log to say {start:?}"), || {
            line = self.logged_message(start);
            line.is_some()
        })
        .await;
        line.unwrap()
    }

    /// Status and body of `path` on the process's HTTP endpoints.
    pub async fn get(&self, path: &str) -> (u16, String) {
        get(format!("{}{path}", self.base)).await
    }
}

/// The real binary with the config at `config`, to which a test adds what it needs before
/// [`start`] runs it (`disk` limits the size of the files it may write).
pub fn command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.arg("--config").arg(config);
    cmd
}

/// `rollcall run` with `h`'s config; see [`start`].
pub async fn run(h: &Harness) -> Running {
    start(command(&h.config_path)).await
}

/// `rollcall run` with the config at `config` (which must set `listen`); see [`start`].
pub async fn run_config(config: &Path) -> Running {
    start(command(config)).await
}

/// `cmd` (see [`command`]) as `rollcall run`, once its endpoints answer. The config's `listen`
/// must have port 0: the child binds the port itself and logs the address it got, so no other
/// process can take the port between a probe and the bind.
pub async fn start(mut cmd: Command) -> Running {
    let mut child = cmd
        .args(["--log-format", "json", "run"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr so the process never blocks on a full pipe.
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    // From here on `Running` owns the child: dropping it (also on panic) kills and reaps it.
    let mut running = Running {
        child,
        base: String::new(),
        log,
    };
    let mut address = None;
    wait::until("rollcall run to log the address it serves on", || {
        address = running.logged(|v| Some(v["fields"]["address"].as_str()?.to_owned()));
        address.is_some()
    })
    .await;
    running.base = format!("http://{}", address.unwrap());
    let healthz = format!("{}/healthz", running.base);
    wait::until_async("rollcall run to serve /healthz", || {
        let url = healthz.clone();
        async move { reqwest::get(url).await.is_ok() }
    })
    .await;
    running
}

pub async fn get(url: String) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

pub async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + wait::DEADLINE;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn sample(text: &str, name: &str, label: (&str, &str)) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("the scrape parses as Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
