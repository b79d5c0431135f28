//! `rollcall run` as a child process serving its HTTP endpoints, and reading what they answer.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// `rollcall run` on `127.0.0.1:0`, once its endpoints answer. The child binds the port itself
/// and logs the address it got, so no other process can take the port between a probe and the
/// bind.
pub async fn run(h: &Harness) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["--log-format", "json", "--config"])
        .arg(&h.config_path)
        .arg("run")
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
        address = running.log.lock().unwrap().iter().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(v["fields"]["address"].as_str()?.to_owned())
        });
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
