//! The command line: what an operator types, and what each command prints.
//!
//! Owns argument parsing, the human and JSON renderings of `status`, and exit codes. It must
//! never hold business logic: every command calls into the runner, the store or the config.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::{Config, ConfigError, SinkConfig, SourceConfig};
use crate::runner::{CycleOptions, Runner, RunnerError};
use crate::store::{SinkHealth, SinkState, SourceState, Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Turn user changes in Apache Superset into a reliable stream of events",
    long_about = "rollcall polls Superset's REST API, diffs what it sees against the state it stores \
                  (sled), and appends user events (created, updated, deactivated, deleted, role and \
                  group changes, logins) to an event log that it delivers to sinks such as JSONL files \
                  or stdout, at least once and with stable event ids.",
    after_help = "Examples:\n  rollcall check-config\n  rollcall once\n  rollcall --config /etc/rollcall.toml run\n  rollcall events --from 0 --limit 10\n  rollcall status --json"
)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(
        long,
        short,
        global = true,
        env = "ROLLCALL_CONFIG",
        default_value = "rollcall.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Poll every source at its interval and deliver events until stopped (Ctrl-C or SIGTERM).
    #[command(after_help = "Example:\n  SUPERSET_PASSWORD=… rollcall --config rollcall.toml run")]
    Run,
    /// Run one cycle (poll every source, deliver to every sink) and exit; the exit code is 0 only if everything succeeded.
    #[command(
        after_help = "Examples:\n  rollcall once                     # incremental, or full when due\n  rollcall once --full              # read every user now\n  rollcall once --confirm-deletes   # release deletions held by the mass-delete guard"
    )]
    Once {
        /// Do a full reconcile even if one is not due.
        #[arg(long)]
        full: bool,
        /// Emit deletions that the mass-delete guard is holding back (implies --full).
        #[arg(long)]
        confirm_deletes: bool,
    },
    /// Print stored events as JSON lines, in log order.
    #[command(
        after_help = "Examples:\n  rollcall events                   # the first 100 events\n  rollcall events --from 42 --limit 5"
    )]
    Events {
        /// First offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// How many events at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show each source's last poll and errors, the event log head, and each sink's cursor and lag.
    #[command(
        after_help = "Examples:\n  rollcall status\n  rollcall status --json | jq '.sinks[].lag_events'"
    )]
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config file and explain every problem, with its line.
    #[command(after_help = "Example:\n  rollcall --config rollcall.toml check-config")]
    CheckConfig,
    /// Make demo changes in a TEST Superset (create, edit, deactivate, re-role, log in as, delete
    /// two `demo…` users) with the first source's account, pausing so a running `rollcall run`
    /// sees each step. Never point this at production.
    #[command(
        after_help = "Example (while `rollcall run` runs in another terminal):\n  rollcall demo --pause 6s"
    )]
    Demo {
        /// Wait between steps; default: the source's poll_interval plus 2 s.
        #[arg(long, value_parser = humantime::parse_duration)]
        pause: Option<std::time::Duration>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
}

/// Run a parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Run => {
            let config = Config::load(&cli.config)?;
            let runner = Runner::new(&config, Store::open(&config.store.path)?)?;
            runner.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once {
            full,
            confirm_deletes,
        } => {
            let config = Config::load(&cli.config)?;
            let mut runner = Runner::new(&config, Store::open(&config.store.path)?)?;
            runner
                .cycle(CycleOptions {
                    full,
                    confirm_deletes,
                })
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { from, limit } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.store.path)?;
            let mut out = std::io::stdout().lock();
            for e in store.events_from(from, limit)? {
                out.write_all(&e.bytes)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { pause } => demo(&Config::load(&cli.config)?, pause).await,
        Command::Status { json } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.store.path)?;
            let status = Status::read(&config, &store)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &status).map_err(std::io::Error::from)?;
                writeln!(out)?;
            } else {
                status.render(&mut out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_config(path: &std::path::Path) -> Result<ExitCode, CliError> {
    let config = Config::load(path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid", path.display())?;
    writeln!(out, "  store: {}", config.store.path.display())?;
    let mut ok = true;
    for s in &config.sources {
        let SourceConfig::Superset(c) = s;
        writeln!(
            out,
            "  source {}: superset at {} as '{}', poll every {}, full reconcile every {}, times in {}",
            c.name,
            c.url,
            c.username,
            humantime::format_duration(c.poll_interval),
            humantime::format_duration(c.full_reconcile_interval),
            c.timezone
        )?;
        if let Err(e) = c.password() {
            ok = false;
            writeln!(out, "  problem: {e}")?;
        }
    }
    for s in &config.sinks {
        match s {
            SinkConfig::Jsonl(c) => writeln!(
                out,
                "  sink {}: jsonl to {}",
                c.name,
                if c.path == "-" { "stdout" } else { &c.path }
            )?,
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn demo(config: &Config, pause: Option<std::time::Duration>) -> Result<ExitCode, CliError> {
    use secrecy::ExposeSecret;
    let SourceConfig::Superset(source) = &config.sources[0];
    let pause = pause.unwrap_or(source.poll_interval + std::time::Duration::from_secs(2));
    let password = source.password()?;
    let admin = crate::demo::Admin::login(
        source.url.as_str(),
        &source.username,
        password.expose_secret(),
    )
    .await?;
    let mut demo = crate::demo::Demo::new(admin);
    for step in crate::demo::Step::ALL {
        let (what, expect) = demo.run(step).await?;
        let expect: Vec<String> = expect.iter().map(|(t, id)| format!("{t} {id}")).collect();
        println!("{what}  →  expect {}", expect.join(", "));
        tokio::time::sleep(pause).await;
    }
    println!("done: a running rollcall has shown every event type above");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[derive(Debug, Serialize)]
struct Status {
    store: String,
    /// Offset the next event will get.
    log_head: u64,
    store_bytes: u64,
    sources: Vec<SourceStatus>,
    sinks: Vec<SinkStatus>,
}

#[derive(Debug, Serialize)]
struct SourceStatus {
    name: String,
    #[serde(flatten)]
    state: SourceState,
}

#[derive(Debug, Serialize)]
struct SinkStatus {
    name: String,
    cursor: u64,
    lag_events: u64,
    /// Age of the oldest undelivered event.
    lag_seconds: Option<i64>,
    dead_letters: usize,
    #[serde(flatten)]
    state: SinkState,
}

impl Status {
    fn read(config: &Config, store: &Store) -> Result<Status, StoreError> {
        let head = store.head()?;
        let sources = config
            .sources
            .iter()
            .map(|s| {
                Ok(SourceStatus {
                    name: s.name().to_owned(),
                    state: store.source_state(s.name())?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let sinks = config
            .sinks
            .iter()
            .map(|s| {
                let cursor = store.cursor(s.name())?;
                let oldest = store
                    .events_from(cursor, 1)?
                    .first()
                    .map(|e| e.event())
                    .transpose()?;
                Ok(SinkStatus {
                    name: s.name().to_owned(),
                    cursor,
                    lag_events: head.saturating_sub(cursor),
                    lag_seconds: oldest.map(|e| (Utc::now() - e.time).num_seconds()),
                    dead_letters: store.dead_letter_count(s.name())?,
                    state: store.sink_state(s.name())?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Status {
            store: store.path().display().to_string(),
            log_head: head,
            store_bytes: store.size_on_disk()?,
            sources,
            sinks,
        })
    }

    fn render(&self, out: &mut impl Write) -> std::io::Result<()> {
        let when = |t: Option<chrono::DateTime<Utc>>| match t {
            Some(t) => format!(
                "{} ({}s ago)",
                t.to_rfc3339(),
                (Utc::now() - t).num_seconds()
            ),
            None => "never".to_owned(),
        };
        writeln!(
            out,
            "store {} — {} events, {} bytes on disk",
            self.store, self.log_head, self.store_bytes
        )?;
        for s in &self.sources {
            let st = &s.state;
            writeln!(out, "source {}: {} users known", s.name, st.users_known)?;
            writeln!(out, "  last successful poll: {}", when(st.last_poll))?;
            writeln!(
                out,
                "  last full reconcile:  {}",
                when(st.last_full_reconcile)
            )?;
            if let Some(e) = &st.last_error {
                if st.last_poll.is_none_or(|ok| ok < e.at) {
                    writeln!(
                        out,
                        "  LAST POLL FAILED at {}: {}",
                        e.at.to_rfc3339(),
                        e.message
                    )?;
                }
            }
            if let Some(g) = &st.deletion_guard {
                writeln!(
                    out,
                    "  MASS-DELETE GUARD: {} of {} users vanished since {}; their deletions are held. \
                     A later full reconcile that agrees releases them, or run `rollcall once --confirm-deletes`",
                    g.user_ids.len(),
                    g.known,
                    g.since.to_rfc3339()
                )?;
            }
        }
        for s in &self.sinks {
            let age = s
                .lag_seconds
                .map(|l| format!(", oldest undelivered {l}s old"))
                .unwrap_or_default();
            let health = match s.state.health {
                SinkHealth::Ok => "ok",
                SinkHealth::Degraded => "DEGRADED",
                SinkHealth::Disabled => "DISABLED",
            };
            writeln!(
                out,
                "sink {}: {health}, cursor {}, lag {} events{age}, {} dead letters",
                s.name, s.cursor, s.lag_events, s.dead_letters
            )?;
            if let (Some(e), false) = (&s.state.last_error, s.state.health == SinkHealth::Ok) {
                writeln!(out, "  last error: {e}")?;
            }
        }
        Ok(())
    }
}
