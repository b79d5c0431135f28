//! The command line: what an operator types, and what each command prints.
//!
//! Owns argument parsing, the human and JSON renderings of `status`, and exit codes. It must
//! never hold business logic: every command calls into the runner, the store or the config.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::runner::{CycleError, CycleOptions, Runner, RunnerError};
use crate::store::{
    SinkHealth, SinkState, SourceActivity, SourceState, Store, StoreError, StoreFault,
};
use crate::text::{error_chain, printable};

#[derive(Debug, Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Turn user changes in Apache Superset into a reliable stream of events",
    long_about = "rollcall polls Superset's REST API, diffs what it sees against the state it stores \
                  (sled), and appends user events (created, updated, deactivated, deleted, role and \
                  group changes, logins) and the action log's rows (audit.action) to an event log. \
                  It delivers that log to sinks (JSONL files or stdout, Kafka, signed webhooks) at \
                  least once, with stable event ids, and can replay it from stored offsets.",
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
    /// List, re-send or delete the events a sink gave up on (dead letters).
    #[command(
        after_help = "Examples:\n  rollcall dlq list --sink provisioning\n  rollcall dlq retry --sink provisioning\n  rollcall dlq purge --sink provisioning --all"
    )]
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Exit 0 when the `rollcall run` of this config answers 200 on /healthz (with --ready:
    /// /readyz), 1 otherwise, saying why in one line: for a container's HEALTHCHECK, as the
    /// image has no curl.
    #[command(
        after_help = "Examples:\n  rollcall healthcheck            # alive: not stuck, the store still takes writes\n  rollcall healthcheck --ready    # ready: polls succeed, sinks deliver"
    )]
    Healthcheck {
        /// Ask /readyz instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// Check that everything the config names can be reached and used, without changing
    /// anything: every secret, a login and one small read per source, each sink's destination
    /// (Kafka metadata and topic, the webhook endpoint answering, the JSONL file). One line
    /// per check; exit 1 when any fails.
    #[command(
        after_help = "Examples:\n  rollcall --config /etc/rollcall.toml doctor\n  rollcall doctor --send-test-event   # also POST a signed `rollcall.test` event to each webhook"
    )]
    Doctor {
        /// Also send each webhook endpoint one signed test event (type `rollcall.test`, source
        /// `rollcall://doctor`), to check the receiver verifies and accepts it. Kafka topics
        /// and JSONL files never get one: their consumers read them as the log.
        #[arg(long)]
        send_test_event: bool,
    },
    /// Back up the store, or restore it: `export` writes every tree as JSON lines (consistent
    /// even while `rollcall run` holds the store); `import` creates the config's store from
    /// such a file, never merging into one that exists.
    #[command(
        after_help = "Examples:\n  rollcall store export --output rollcall-backup.jsonl\n  rollcall store import --input rollcall-backup.jsonl   # into a [store] path that does not exist yet"
    )]
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  rollcall completions bash > /etc/bash_completion.d/rollcall\n  rollcall completions zsh > \"${fpath[1]}/_rollcall\""
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from these very definitions.
    #[command(after_help = "Example:\n  rollcall man > /usr/local/share/man/man1/rollcall.1")]
    Man,
    /// Validate the config file and explain every problem, with its line.
    #[command(after_help = "Example:\n  rollcall --config rollcall.toml check-config")]
    CheckConfig,
    /// Re-deliver a range of the event log to one sink, with the original event ids, without
    /// moving its cursor (or, with --rewind, move its cursor back so the service re-sends).
    /// Works the same while `rollcall run` holds the store (it asks that process).
    #[command(
        group(clap::ArgGroup::new("start").required(true).args(["from_offset", "since", "event_id"])),
        after_help = "Examples:\n  rollcall replay --sink siem --since 2024-05-01T00:00:00Z --dry-run\n  rollcall replay --sink siem --from-offset 1200 --to-offset 1500\n  rollcall replay --sink provisioning --event-id 0190f1c2-… --type 'user.*'\n  rollcall replay --sink siem-kafka --from-offset 1200 --rewind"
    )]
    Replay {
        /// The sink's `name` in the config.
        #[arg(long)]
        sink: String,
        /// First log offset to send.
        #[arg(long)]
        from_offset: Option<u64>,
        /// Start at the first event whose `time` is at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Start at the event with this id.
        #[arg(long)]
        event_id: Option<uuid::Uuid>,
        /// Last log offset to send, inclusive (default: the newest event).
        #[arg(long)]
        to_offset: Option<u64>,
        /// Only events whose type matches this glob, e.g. 'user.*'.
        #[arg(long = "type", value_name = "GLOB")]
        types: Option<String>,
        /// Print what would be sent (count, offsets) and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move the sink's cursor back to the start instead of sending; the service re-sends
        /// everything from there when it starts.
        #[arg(long, conflicts_with_all = ["to_offset", "types"])]
        rewind: bool,
    },
    /// Manage a sink while rollcall runs (or before it starts).
    #[command(
        after_help = "Example:\n  rollcall sink enable provisioning   # after a 410 Gone, once the endpoint is fixed"
    )]
    Sink {
        #[command(subcommand)]
        action: SinkCommand,
    },
    /// Manage a source while rollcall runs (or before it starts).
    #[command(
        after_help = "Example:\n  rollcall source retry-login cubes   # once its account is unlocked upstream"
    )]
    Source {
        #[command(subcommand)]
        action: SourceCommand,
    },
    /// Make demo changes in the first source, a TEST Superset or Kylin, so every event type it
    /// can show appears: create, edit, deactivate, reactivate, regroup and delete two `demo…`
    /// users; in Superset also re-role them, log in and read dashboards as one, fail logins; in
    /// Kylin fail logins until one is locked and reset his password. Uses the source's own
    /// account (never failing its login twice); after each step it waits for the running
    /// `rollcall run` (found on `listen`) to poll again. Never point this at production.
    #[command(
        after_help = "Example (while `rollcall run` runs in another terminal):\n  rollcall demo --pause 6s"
    )]
    Demo {
        /// Wait this long between steps instead of for the running rollcall's next poll
        /// (default when none answers on `listen`: the source's poll_interval plus 2 s).
        #[arg(long, value_parser = humantime::parse_duration)]
        pause: Option<std::time::Duration>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write the whole store as JSON lines (to stdout, or to --output).
    #[command(
        after_help = "Example:\n  rollcall store export --output /backup/rollcall-$(date +%F).jsonl"
    )]
    Export {
        /// A file to write (created or truncated) instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Create the config's store from an export; the store path must not exist yet.
    #[command(
        after_help = "Example:\n  rollcall store import --input /backup/rollcall-2026-12-01.jsonl"
    )]
    Import {
        #[arg(long)]
        input: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Start a stopped sink again (after a 410 Gone, a refused Kafka event, …) from its stored
    /// cursor, without restarting rollcall; nothing it had not delivered was skipped.
    #[command(after_help = "Example:\n  rollcall sink enable provisioning")]
    Enable {
        /// The sink's `name` in the config.
        name: String,
    },
    /// Print the public key (`whpk_…`) of each Ed25519 (`whsk_`) secret of a webhook sink,
    /// for its receiver to verify `v1a` signatures with; secrets are never printed.
    #[command(after_help = "Example:\n  rollcall sink public-key provisioning")]
    PublicKey {
        /// The sink's `name` in the config.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Forget that the upstream refused this source's login, so the next poll (of the running
    /// `rollcall run`, or of the next command that polls) logs in once more with the same
    /// credentials. Until then no process sends them: each refused login counts towards
    /// locking the account. Changed credentials need no retry-login: they are tried at once.
    #[command(after_help = "Example:\n  rollcall source retry-login cubes")]
    RetryLogin {
        /// The source's `name` in the config.
        name: String,
    },
    /// Whether a refused login of these credentials is remembered: JSON `{"at", "message"}`
    /// or `null`; with `--refused`, remember one first. For `doctor` and `demo`, which log in
    /// outside a cycle and must neither send refused credentials again nor forget a refusal;
    /// `credentials` is what `source::Login::credentials` makes of them.
    #[command(hide = true)]
    LoginState {
        name: String,
        credentials: String,
        /// The upstream's answer to a login it has just refused.
        #[arg(long)]
        refused: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print a sink's dead letters, oldest first: offset, attempts, when, event, last error.
    #[command(
        after_help = "Examples:\n  rollcall dlq list --sink provisioning\n  rollcall dlq list --sink provisioning --json | jq -r .reason"
    )]
    List {
        /// The sink's `name` in the config.
        #[arg(long)]
        sink: String,
        /// One JSON object per line, with the whole event.
        #[arg(long)]
        json: bool,
    },
    /// Send a webhook sink's dead letters again, with their original `webhook-id`; those
    /// delivered leave the queue. Works while `rollcall run` holds the store.
    #[command(
        after_help = "Examples:\n  rollcall dlq retry --sink provisioning\n  rollcall dlq retry --sink provisioning --offset 42"
    )]
    Retry {
        #[arg(long)]
        sink: String,
        /// Only the dead letter at this log offset.
        #[arg(long)]
        offset: Option<u64>,
    },
    /// Delete dead letters without sending them.
    #[command(
        after_help = "Examples:\n  rollcall dlq purge --sink provisioning --offset 42\n  rollcall dlq purge --sink provisioning --all"
    )]
    Purge {
        #[arg(long)]
        sink: String,
        /// The dead letter at this log offset.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        offset: Option<u64>,
        /// Every dead letter of the sink.
        #[arg(long)]
        all: bool,
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
    #[error("{store}; asking the running process over HTTP failed too ({http}). Check `listen` in the config")]
    StatusUnavailable { store: String, http: String },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    #[error("no sink named '{name}' in the config; its sinks are: {known}")]
    UnknownSink { name: String, known: String },
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Deliver(#[from] crate::deliver::DeliverError),
    #[error("`rollcall demo` changes users in the first source, and the config has none: add a `[[sources]]` table for a TEST Superset or Kylin")]
    DemoNeedsSource,
    #[error("this command needs the store to itself, or no store yet (run, once, check-config, doctor, demo, healthcheck, completions, man, store import): stop `rollcall run` first, or run it where no `rollcall run` holds the store")]
    NotOverAdmin,
    #[error("sink '{0}' is not a webhook sink: only webhooks sign")]
    NotWebhook(String),
    #[error("sink '{0}' has no Ed25519 (`whsk_`) secret, so there is no public key: its `whsec_` secrets are shared with the receiver as they are")]
    NoPublicKey(String),
    #[error("sink '{0}' is in the config but not among the sinks the running `rollcall run` serves (it started with another config): restart it with this one")]
    NotRunning(String),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("this command names the config {named}, but the running `rollcall run` that holds the store was started with {running} and acts on that config only: run the command with `--config {running}`")]
    OtherConfig { named: PathBuf, running: PathBuf },
    #[error("there is no store at {0}: rollcall has not run with this config yet, or `[store] path` points elsewhere")]
    NoStore(PathBuf),
    #[error("sink '{0}' writes a file (or stdout) that the running `rollcall run` holds: a second writer would interleave its lines with the sink's. Use `rollcall replay --rewind` (the running sink re-sends from there, in order), or stop `rollcall run` and replay then")]
    LiveSingleWriter(String),
    #[error("`rollcall store export` to stdout would pass the whole store through the admin socket of the running `rollcall run`: give `--output FILE` (the running process writes it), or stop `rollcall run` first")]
    ExportToStdoutWhileRunning,
    #[error("no source named '{name}' in the config; its sources are: {known}")]
    UnknownSource { name: String, known: String },
    #[error("source '{name}': {error}")]
    RefusedBefore {
        name: String,
        #[source]
        error: crate::source::SourceError,
    },
}

/// Exit codes, one per kind of trouble, so scripts and orchestrators can tell them apart
/// (docs/operations.md, Commands). 2 is clap's own, for a command line it cannot parse.
pub mod exit {
    /// The command ran, and something it checked or sent failed (see its output).
    pub const FAILED: u8 = 1;
    /// The config file is missing, unreadable or invalid, or names what is not there.
    pub const CONFIG: u8 = 3;
    /// A source could not be read (down, refusing the login, answering nonsense).
    pub const SOURCE: u8 = 4;
    /// Events were not all delivered: a sink failed or stopped (they stay in the log).
    pub const DELIVERY: u8 = 5;
    /// The store cannot be opened, read or written, or is held by another process.
    pub const STORE: u8 = 6;
}

impl CliError {
    /// The process's exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        use crate::replay::ReplayError;
        match self {
            CliError::Config(_)
            | CliError::UnknownSink { .. }
            | CliError::DemoNeedsSource
            | CliError::NotOverAdmin
            | CliError::NotWebhook(_)
            | CliError::NoPublicKey(_)
            | CliError::NotRunning(_)
            | CliError::OtherConfig { .. }
            | CliError::NoStore(_)
            | CliError::UnknownSource { .. }
            | CliError::LiveSingleWriter(_)
            | CliError::ExportToStdoutWhileRunning
            | CliError::Replay(ReplayError::UnknownSink { .. } | ReplayError::BadGlob { .. }) => {
                exit::CONFIG
            }
            CliError::Runner(
                RunnerError::Cycle(CycleError::Source { .. }) | RunnerError::Deadline { .. },
            )
            | CliError::Demo(_)
            | CliError::RefusedBefore { .. } => exit::SOURCE,
            CliError::Runner(RunnerError::Deliver(_) | RunnerError::Sink(_))
            | CliError::Sink(_)
            | CliError::Deliver(_)
            | CliError::Replay(ReplayError::Sink(_) | ReplayError::Deliver(_)) => exit::DELIVERY,
            CliError::Store(_)
            | CliError::Runner(
                RunnerError::Cycle(CycleError::Store(_)) | RunnerError::StoppedWithStoreFailing(_),
            )
            | CliError::Replay(ReplayError::Store(_))
            | CliError::Admin(_)
            | CliError::StatusUnavailable { .. } => exit::STORE,
            CliError::Stdout(_) | CliError::Replay(_) => exit::FAILED,
        }
    }
}

/// Run a parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "rollcall",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { send_test_event } => {
            doctor(&cli.config, &Config::load(&cli.config)?, send_test_event).await
        }
        Command::Healthcheck { ready } => healthcheck(&Config::load(&cli.config)?, ready).await,
        Command::Run => run(Started::load(&cli.config)?).await,
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
        Command::Demo { pause } => demo(&cli.config, &Config::load(&cli.config)?, pause).await,
        Command::Store {
            action: StoreCommand::Import { input },
        } => {
            let config = Config::load(&cli.config)?;
            let file =
                std::fs::File::open(&input).map_err(|source| StoreError::Export { source })?;
            let entries = Store::import(&config.store.path, std::io::BufReader::new(file))?;
            println!(
                "imported {entries} entries into a new store at {}",
                config.store.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sink {
            action: SinkCommand::PublicKey { name },
        } => {
            let config = Config::load(&cli.config)?;
            let crate::sink::SinkConfig::Webhook(webhook) = sink_config(&config, &name)? else {
                return Err(CliError::NotWebhook(name));
            };
            let keys = webhook
                .public_keys()
                .map_err(crate::sink::SinkError::from)?;
            if keys.is_empty() {
                return Err(CliError::NoPublicKey(name));
            }
            for key in keys {
                println!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        command @ (Command::Events { .. }
        | Command::Store { .. }
        | Command::Status { .. }
        | Command::Replay { .. }
        | Command::Dlq { .. }
        | Command::Sink { .. }
        | Command::Source { .. }) => {
            let mut args: Vec<String> = std::env::args().skip(1).collect();
            // The running process has another working directory: it writes where this one
            // resolved the path.
            if let Command::Store {
                action: StoreCommand::Export { output: Some(path) },
            } = &command
            {
                let path = std::path::absolute(path)?;
                args = vec![
                    "store".into(),
                    "export".into(),
                    "--output".into(),
                    path.display().to_string(),
                ];
            }
            let reply = on_the_store(&cli.config, command, args).await?;
            std::io::stdout().write_all(&reply.stdout)?;
            std::io::stderr().write_all(reply.stderr.as_bytes())?;
            Ok(ExitCode::from(reply.code))
        }
    }
}

/// What a store command printed and its exit code, wherever it ran.
struct Said {
    stdout: Vec<u8>,
    stderr: String,
    code: u8,
}

impl From<crate::admin::Reply> for Said {
    fn from(reply: crate::admin::Reply) -> Said {
        Said {
            stdout: reply.stdout.into_bytes(),
            stderr: reply.stderr,
            code: reply.code,
        }
    }
}

/// A command that reads or changes the store: run here when the store is free, or by the
/// running `rollcall run` that holds it, over its admin socket (`args` are its command line
/// there). Same output, same exit code.
async fn on_the_store(
    config_path: &std::path::Path,
    command: Command,
    args: Vec<String>,
) -> Result<Said, CliError> {
    let config = Config::load(config_path)?;
    // Opening would create an empty store and report it as healthy.
    if !config.store.path.exists() {
        return Err(CliError::NoStore(config.store.path.clone()));
    }
    let socket = crate::admin::socket_path(&config.store.path);
    let request = crate::admin::Request {
        config: std::path::absolute(config_path)?,
        args,
    };
    // A live socket means `run` holds the store: ask it first rather than wait on the lock.
    // A dead process's socket refuses the connection, and the store is opened here.
    if socket.exists() {
        if let Ok(reply) = crate::admin::ask(&socket, &request).await {
            return Ok(reply.into());
        }
    }
    let store = match Store::open(&config.store.path) {
        Ok(store) => store,
        Err(e @ StoreError::InUse { .. }) => {
            return match crate::admin::ask(&socket, &request).await {
                Ok(reply) => Ok(reply.into()),
                // A `run` from before the admin channel still answers /status over HTTP.
                Err(why) if matches!(command, Command::Status { .. }) => {
                    let status = status_over_http(&config).await.map_err(|http| {
                        CliError::StatusUnavailable {
                            store: e.to_string(),
                            http: format!("{http}; {}", error_chain(&why)),
                        }
                    })?;
                    let mut stdout = Vec::new();
                    let Command::Status { json } = command else {
                        unreachable!("matched above")
                    };
                    status.print(json, &mut stdout)?;
                    Ok(Said {
                        stdout,
                        stderr: String::new(),
                        code: 0,
                    })
                }
                Err(why) => Err(why.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let mut stdout = Vec::new();
    let result = operate(&config, command, &store, None, &mut stdout).await;
    match result {
        Ok(code) => Ok(Said {
            stdout,
            stderr: String::new(),
            code,
        }),
        Err(e) => {
            // What was printed before the failure still shows.
            std::io::stdout().write_all(&stdout)?;
            Err(e)
        }
    }
}

/// The login of `source` refused before with the credentials the config names now, if the
/// store remembers one (asked of the running `rollcall run` when it holds the store); with
/// `refused`, the upstream has just refused them, and the store remembers that first (in a
/// new store if there is none yet: the next `run` must not try them again either). For the
/// commands that log in outside a cycle (`doctor`, `demo`).
async fn login_state(
    config_path: &std::path::Path,
    config: &Config,
    source: &crate::source::SourceConfig,
    refused: Option<String>,
) -> Result<Option<crate::store::LoginRefusal>, CliError> {
    let name = source.name();
    // Without a readable password there is no login to hold back; the command says why.
    let Ok(credentials) = source.kind().login().current_credentials() else {
        return Ok(None);
    };
    if !config.store.path.exists() {
        if refused.is_none() {
            return Ok(None);
        }
        drop(Store::open(&config.store.path)?);
    }
    let mut args = vec![
        "source".to_owned(),
        "login-state".to_owned(),
        name.to_owned(),
        credentials.0.clone(),
    ];
    if let Some(message) = &refused {
        args.extend(["--refused".to_owned(), message.clone()]);
    }
    let command = Command::Source {
        action: SourceCommand::LoginState {
            name: name.to_owned(),
            credentials: credentials.0.clone(),
            refused,
        },
    };
    let said = on_the_store(config_path, command, args).await?;
    #[derive(Deserialize)]
    struct Refused {
        at: chrono::DateTime<Utc>,
        message: String,
    }
    Ok(serde_json::from_slice::<Option<Refused>>(&said.stdout)
        .ok()
        .flatten()
        .map(|r| crate::store::LoginRefusal {
            at: r.at,
            message: r.message,
            credentials,
        }))
}

/// The config `run` was started with: the only one it acts on, also for requests over its
/// admin socket. The file is kept resolved (symlinks followed) to tell a request naming another
/// file, and its text to tell that the file changed since.
struct Started {
    config: Config,
    path: PathBuf,
    text: Vec<u8>,
}

impl Started {
    fn load(path: &std::path::Path) -> Result<Started, CliError> {
        let config = Config::load(path)?;
        let unreadable = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let resolved = std::fs::canonicalize(path).map_err(unreadable)?;
        let text = std::fs::read(&resolved).map_err(unreadable)?;
        Ok(Started {
            config,
            path: resolved,
            text,
        })
    }
}

/// Answer one admin-socket request with the running process's store, sinks and config: a
/// request naming another config file than the one `run` started with is refused (acting on
/// it would mix sinks `run` does not serve with its store), and one naming the same file,
/// changed since, is told that the changes wait for a restart.
async fn answer(
    request: crate::admin::Request,
    started: std::sync::Arc<Started>,
    store: Store,
    controls: crate::runner::SinkControls,
) -> crate::admin::Reply {
    let args = std::iter::once("rollcall".to_owned()).chain(request.args);
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            return crate::admin::Reply {
                stderr: e.to_string(),
                code: 2,
                ..Default::default()
            }
        }
    };
    let mut out = Vec::new();
    let mut note = String::new();
    let result = match std::fs::canonicalize(&request.config) {
        Ok(named) if named == started.path => {
            if std::fs::read(&named).ok().as_ref() != Some(&started.text) {
                note = format!(
                    "note: {} changed since this `rollcall run` started; it acts on the config it started with until it is restarted\n",
                    named.display()
                );
            }
            operate(
                &started.config,
                cli.command,
                &store,
                Some(&controls),
                &mut out,
            )
            .await
        }
        _ => Err(CliError::OtherConfig {
            named: request.config,
            running: started.path.clone(),
        }),
    };
    let stdout = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(code) => crate::admin::Reply {
            stdout,
            stderr: note,
            code,
        },
        Err(e) => crate::admin::Reply {
            stdout,
            stderr: format!("{note}error: {}\n", error_chain(&e)),
            code: e.exit_code(),
        },
    }
}

/// Run a store command against `store`; `controls` reach the sinks when `run` serves them.
/// Returns the exit code.
async fn operate(
    config: &Config,
    command: Command,
    store: &Store,
    controls: Option<&crate::runner::SinkControls>,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    match command {
        Command::Events { from, limit } => {
            for e in store.events_from(from, limit)? {
                out.write_all(&e.bytes)?;
                out.write_all(b"\n")?;
            }
            Ok(0)
        }
        Command::Status { json } => {
            Status::read(config, store)?.print(json, out)?;
            Ok(0)
        }
        Command::Replay {
            sink,
            from_offset,
            since,
            event_id,
            to_offset,
            types,
            dry_run,
            rewind,
        } => {
            use crate::replay::Start;
            let start = match (from_offset, since, event_id) {
                (Some(o), _, _) => Start::Offset(o),
                (_, Some(t), _) => Start::Since(t.with_timezone(&Utc)),
                (_, _, Some(id)) => Start::EventId(id),
                (None, None, None) => unreachable!("clap requires one of the start options"),
            };
            let request = crate::replay::Request {
                sink,
                start,
                to: to_offset,
                types,
                dry_run,
                rewind,
            };
            replay(config, store, controls, &request, out).await
        }
        Command::Dlq { action } => dlq(config, store, action, out).await,
        Command::Source {
            action: SourceCommand::RetryLogin { name },
        } => {
            source_config(config, &name)?;
            if store.clear_login_refusal(&name)? {
                writeln!(out, "source {name}: the refused login is forgotten; its next poll logs in once with the configured credentials")?;
            } else {
                writeln!(
                    out,
                    "source {name}: no refused login is remembered; nothing to do"
                )?;
            }
            Ok(0)
        }
        Command::Source {
            action:
                SourceCommand::LoginState {
                    name,
                    credentials,
                    refused,
                },
        } => {
            if let Some(message) = refused {
                let refusal = crate::store::LoginRefusal {
                    at: Utc::now(),
                    message,
                    credentials: crate::store::Credentials(credentials.clone()),
                };
                store.record_login_refusal(&name, &refusal)?;
            }
            let refused = store
                .login_refusal(&name)?
                .filter(|r| r.credentials.0 == credentials)
                .map(|r| serde_json::json!({"at": r.at, "message": r.message}));
            serde_json::to_writer(&mut *out, &refused).map_err(std::io::Error::from)?;
            Ok(0)
        }
        Command::Sink {
            action: SinkCommand::Enable { name },
        } => sink_enable(config, store, controls, &name, out).await,
        Command::Store {
            action: StoreCommand::Export { output },
        } => {
            let entries = match output {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .map_err(|source| StoreError::Export { source })?;
                    let mut file = std::io::BufWriter::new(file);
                    let entries = store.export(&mut file)?;
                    file.flush()?;
                    writeln!(out, "exported {entries} entries to {}", path.display())?;
                    entries
                }
                None if controls.is_some() => return Err(CliError::ExportToStdoutWhileRunning),
                // Straight out, not through `out`: a store can be far larger than memory.
                None => {
                    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                    let entries = store.export(&mut stdout)?;
                    stdout.flush()?;
                    entries
                }
            };
            tracing::info!(entries, "store exported");
            Ok(0)
        }
        Command::Store {
            action: StoreCommand::Import { .. },
        }
        | Command::Sink {
            action: SinkCommand::PublicKey { .. },
        } => Err(CliError::NotOverAdmin),
        Command::Run
        | Command::Once { .. }
        | Command::CheckConfig
        | Command::Completions { .. }
        | Command::Man
        | Command::Doctor { .. }
        | Command::Healthcheck { .. }
        | Command::Demo { .. } => Err(CliError::NotOverAdmin),
    }
}

/// The source named `name` in `config`, or an error listing the ones there are.
fn source_config<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c crate::source::SourceConfig, CliError> {
    config
        .sources
        .iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
            CliError::UnknownSource {
                name: name.to_owned(),
                known: known.join(", "),
            }
        })
}

/// The sink named `name` in `config`, or an error listing the ones there are.
fn sink_config<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c crate::sink::SinkConfig, CliError> {
    config
        .sinks
        .iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = config.sinks.iter().map(|s| s.name()).collect();
            CliError::UnknownSink {
                name: name.to_owned(),
                known: known.join(", "),
            }
        })
}

async fn sink_enable(
    config: &Config,
    store: &Store,
    controls: Option<&crate::runner::SinkControls>,
    name: &str,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    sink_config(config, name)?;
    let enable = {
        let name = name.to_owned();
        move |store: &Store| {
            store.set_sink_state(&name, SinkHealth::Ok, None)?;
            Ok(format!(
                "sink {name} enabled: sending from offset {}",
                store.cursor(&name)?
            ))
        }
    };
    let said = match controls {
        // The running sink restarts from its stored cursor once its state is cleared.
        Some(controls) => controls
            .restart(name, enable)
            .await
            .ok_or_else(|| CliError::NotRunning(name.to_owned()))??,
        None => format!("{}; rollcall sends when it runs", enable(store)?),
    };
    writeln!(out, "{said}")?;
    Ok(0)
}

fn check_config(path: &std::path::Path) -> Result<ExitCode, CliError> {
    let config = Config::load(path)?;
    // Secrets are resolved before anything is printed, so the verdict comes first and is one.
    let mut lines = vec![
        format!("  store: {}", config.store.path.display()),
        format!(
            "  polls: at most {} at once (max_concurrent_polls)",
            config.max_concurrent_polls
        ),
    ];
    let mut problems = Vec::new();
    for s in &config.sources {
        lines.push(format!("  source {}: {}", s.name(), s.kind().describe()));
        if let Err(e) = s.kind().check_secrets() {
            problems.push(format!("  source {}: {}", s.name(), error_chain(&e)));
        }
    }
    for s in &config.sinks {
        lines.push(format!("  sink {}: {}", s.name(), s.describe()));
        if let Err(e) = s.check() {
            problems.push(format!("  sink {}: {}", s.name(), error_chain(&e)));
        }
    }
    let mut out = std::io::stdout().lock();
    if problems.is_empty() {
        writeln!(out, "{}: valid", path.display())?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{}: not usable as it is: {} problem(s)",
            path.display(),
            problems.len()
        )?;
        for line in problems {
            writeln!(out, "{line}")?;
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn dlq(
    config: &Config,
    store: &Store,
    action: DlqCommand,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let name = match &action {
        DlqCommand::List { sink, .. }
        | DlqCommand::Retry { sink, .. }
        | DlqCommand::Purge { sink, .. } => sink,
    };
    let sink = sink_config(config, name)?;
    match action {
        DlqCommand::List { json, .. } => {
            for l in store.dead_letters(name)? {
                if json {
                    serde_json::to_writer(&mut *out, &l).map_err(std::io::Error::from)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{} attempts\t{}\t{} {} id {}\t{}",
                        l.offset,
                        l.attempts,
                        l.at.to_rfc3339(),
                        l.event["type"].as_str().unwrap_or("?"),
                        l.event["subject"].as_str().unwrap_or("?"),
                        l.event["id"].as_str().unwrap_or("?"),
                        printable(&l.reason)
                    )?;
                }
            }
            Ok(0)
        }
        DlqCommand::Retry { offset, .. } => {
            let sink = sink.build()?;
            let report = crate::deliver::retry_dead_letters(store, sink.as_ref(), offset).await?;
            for o in &report.delivered {
                writeln!(out, "{o}\tdelivered")?;
            }
            for (o, reason) in &report.failed {
                writeln!(out, "{o}\tfailed again, kept: {}", printable(reason))?;
            }
            writeln!(
                out,
                "{} delivered, {} still dead-lettered",
                report.delivered.len(),
                store.dead_letter_count(name)?
            )?;
            Ok(u8::from(!report.failed.is_empty()))
        }
        DlqCommand::Purge { offset, .. } => {
            let offsets: Vec<u64> = match offset {
                Some(o) => vec![o],
                None => store.dead_letters(name)?.iter().map(|l| l.offset).collect(),
            };
            let mut purged = 0;
            for o in offsets {
                purged += usize::from(store.remove_dead_letter(name, o)?);
            }
            writeln!(out, "{purged} dead letter(s) purged from sink {name}")?;
            Ok(0)
        }
    }
}

async fn demo(
    config_path: &std::path::Path,
    config: &Config,
    pause: Option<std::time::Duration>,
) -> Result<ExitCode, CliError> {
    let source = config.sources.first().ok_or(CliError::DemoNeedsSource)?;
    let name = source.name();
    if let Some(refusal) = login_state(config_path, config, source, None).await? {
        return Err(CliError::RefusedBefore {
            name: name.to_owned(),
            error: crate::source::SourceError::RefusedBefore {
                name: name.to_owned(),
                refusal,
            },
        });
    }
    let mut tour = match crate::demo::Tour::start(source).await {
        Ok(tour) => tour,
        Err(e @ crate::demo::DemoError::LoginRefused { .. }) => {
            login_state(config_path, config, source, Some(e.to_string())).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    // Waiting for the running rollcall's next poll, not for a fixed time, keeps two steps
    // from landing in one poll on a busy machine (a deactivation and a reactivation in one
    // poll are no change at all).
    let watching = pause.is_none() && status_over_http(config).await.is_ok();
    let fallback = source.kind().poll_interval() + std::time::Duration::from_secs(2);
    if watching {
        println!(
            "rollcall run answers on {}: each step waits for its next poll of '{name}'",
            config.listen
        );
    } else if pause.is_none() {
        println!(
            "no rollcall run answers on {}: pausing {} between steps",
            config.listen,
            humantime::format_duration(fallback)
        );
    }
    while let Some(shown) = tour.next().await {
        let shown = shown?;
        let done = chrono::Utc::now();
        println!("{}  →  expect {}", shown.what, shown.expect.join(", "));
        if watching {
            wait_for_poll(config, name, done, fallback).await;
        } else {
            tokio::time::sleep(pause.unwrap_or(fallback)).await;
        }
    }
    println!("done: a running rollcall has shown every event type above");
    Ok(ExitCode::SUCCESS)
}

/// `run`: poll and deliver until Ctrl-C or SIGTERM, serving /healthz, /readyz, /metrics and
/// /status on `listen` meanwhile.
async fn run(started: Started) -> Result<ExitCode, CliError> {
    let config = &started.config;
    let store = Store::open(&config.store.path)?;
    let metrics = crate::http::install_metrics();
    let runner = Runner::new(config, store.clone())?;
    let (stop_http, stopped) = tokio::sync::watch::channel(false);
    match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => {
            let address = listener
                .local_addr()
                .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
            tracing::info!(address = %address, "serving /healthz /readyz /metrics /status");
            let status: crate::http::StatusFn = {
                let (config, store) = (config.clone(), store.clone());
                std::sync::Arc::new(move || match Status::read(&config, &store) {
                    Ok(s) => serde_json::to_value(s).map_err(|e| e.to_string()),
                    // sled may refuse reads too once a write failed: show the failure itself,
                    // which is what an operator looking at /status needs then.
                    Err(e) => match store.fault() {
                        Some(fault) => Ok(serde_json::json!({
                            "store": store.path().display().to_string(),
                            "store_id": store.id(),
                            "store_error": fault,
                            "unreadable": error_chain(&e),
                        })),
                        None => Err(error_chain(&e)),
                    },
                })
            };
            let mut stopped = stopped;
            let until = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let http = crate::http::serve(
                listener,
                store.clone(),
                std::sync::Arc::new(config.clone()),
                metrics,
                status,
                until,
            );
            tokio::spawn(async move {
                if let Err(e) = http.await {
                    tracing::error!(error = %e, "the HTTP endpoints stopped");
                }
            });
        }
        // Polling matters more than the endpoints: go on without them, loudly.
        Err(e) => {
            tracing::error!(address = %config.listen, error = %e, "cannot serve HTTP endpoints; set `listen` to a free address")
        }
    }
    // SIGHUP: JSONL sinks reopen their files by path (after logrotate renamed them).
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(CliError::Stdout)?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: JSONL sinks reopen their files before their next batch");
                crate::sink::jsonl::reopen_all();
            }
        });
    }
    // The admin socket: other commands reach this process's store through it.
    let socket = crate::admin::socket_path(&config.store.path);
    let listener = crate::admin::bind(&socket)?;
    tracing::info!(socket = %socket.display(), "serving events, status, replay, dlq and sink commands");
    {
        let (store, controls) = (store.clone(), runner.controls());
        let started = std::sync::Arc::new(started);
        let mut stopped = stop_http.subscribe();
        let until = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::admin::serve(
            listener,
            crate::admin::Limits::default(),
            move |request| answer(request, started.clone(), store.clone(), controls.clone()),
            until,
        ));
    }
    let result = runner.run(shutdown_signal()).await;
    let _ = stop_http.send(true);
    let _ = std::fs::remove_file(&socket);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Waits until the running rollcall has completed a poll of `source` that started after
/// `after`. If `/status` stops answering, or no such poll comes for a long while, it says so
/// and waits `fallback` instead, so the demo never hangs on a rollcall that went away.
async fn wait_for_poll(
    config: &Config,
    source: &str,
    after: chrono::DateTime<chrono::Utc>,
    fallback: std::time::Duration,
) {
    let patience = fallback
        .saturating_mul(10)
        .saturating_add(std::time::Duration::from_secs(60));
    let give_up = tokio::time::Instant::now().checked_add(patience);
    loop {
        let polled = match status_over_http(config).await {
            Ok(status) => status
                .sources
                .iter()
                .find(|s| s.name == source)
                .and_then(|s| s.state.last_poll)
                .is_some_and(|t| t > after),
            Err(e) => {
                println!("  (rollcall's /status stopped answering: {e}; pausing instead)");
                tokio::time::sleep(fallback).await;
                return;
            }
        };
        if polled {
            return;
        }
        if give_up.is_some_and(|t| tokio::time::Instant::now() > t) {
            println!("  (rollcall has not polled '{source}' for a long while; see its log)");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Builds a source and probes it.
struct Probing;

impl crate::source::Visit for Probing {
    type Output = futures::future::BoxFuture<'static, Vec<crate::source::Probe>>;

    fn visit<S: crate::source::Source>(self, mut source: S) -> Self::Output {
        Box::pin(async move { source.probe().await })
    }
}

/// `rollcall doctor`: one line per check, `ok` or `FAIL` and what to fix.
async fn doctor(
    config_path: &std::path::Path,
    config: &Config,
    send_test_event: bool,
) -> Result<ExitCode, CliError> {
    let mut refused = Vec::new();
    for source in &config.sources {
        refused.push(login_state(config_path, config, source, None).await?);
    }
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    let mut line = |ok: bool, what: String| -> std::io::Result<()> {
        failed += usize::from(!ok);
        writeln!(out, "{}  {what}", if ok { "ok  " } else { "FAIL" })
    };
    let mut newly_refused = Vec::new();
    for (source, refused) in config.sources.iter().zip(refused) {
        let name = source.name();
        if let Some(refusal) = refused {
            let error = crate::source::SourceError::RefusedBefore {
                name: name.to_owned(),
                refusal,
            };
            line(false, format!("source {name}: log in: {error}"))?;
            continue;
        }
        match source.build(Probing) {
            Err(e) => line(false, format!("source {name}: {}", error_chain(&e)))?,
            Ok(probe) => {
                for p in probe.await {
                    match p.result {
                        Ok(()) => line(true, format!("source {name}: {}", p.what))?,
                        Err(e) => {
                            if e.refused_login() {
                                newly_refused.push((source, e.to_string()));
                            }
                            line(
                                false,
                                format!("source {name}: {}: {}", p.what, error_chain(&e)),
                            )?
                        }
                    }
                }
            }
        }
    }
    for (source, message) in newly_refused {
        login_state(config_path, config, source, Some(message)).await?;
    }
    for sink in &config.sinks {
        let name = sink.name();
        let built = match sink.build() {
            Ok(built) => built,
            Err(e) => {
                line(false, format!("sink {name}: {}", error_chain(&e)))?;
                continue;
            }
        };
        match built.probe().await {
            Ok(said) => line(true, format!("sink {name}: {said}"))?,
            Err(e) => line(false, format!("sink {name}: {}", error_chain(&e)))?,
        }
        if send_test_event && built.takes_test_events() {
            let message = test_event();
            let id = message.id.clone();
            match built.send(vec![std::sync::Arc::new(message)]).await {
                Ok(()) => line(
                    true,
                    format!("sink {name}: accepted a signed test event (id {id})"),
                )?,
                Err(r) => line(
                    false,
                    format!(
                        "sink {name}: refused the signed test event (id {id}): {}",
                        error_chain(&r.error)
                    ),
                )?,
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The event `doctor --send-test-event` sends: a CloudEvent no source ever emits, so a receiver
/// can tell it from the log's events and drop it.
fn test_event() -> crate::sink::Message {
    let id = uuid::Uuid::now_v7().to_string();
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "rollcall://doctor",
        "type": "rollcall.test",
        "subject": "doctor",
        "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": {"message": "a test event from `rollcall doctor --send-test-event`; drop it"},
    });
    crate::sink::Message {
        offset: 0,
        id,
        key: "rollcall://doctor".into(),
        headers: Vec::new(),
        content_type: "application/cloudevents+json".into(),
        body: body.to_string().into(),
        observed: None,
    }
}

/// `rollcall healthcheck`: one GET of /healthz or /readyz on `listen` (on the loopback address
/// when `listen` is every interface), one line, exit 0 only on 200.
async fn healthcheck(config: &Config, ready: bool) -> Result<ExitCode, CliError> {
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let path = if ready { "readyz" } else { "healthz" };
    let url = format!("http://{address}/{path}");
    let answer = async {
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await.unwrap_or_default()))
    };
    let (code, said) = match answer.await {
        Ok((status, body)) if status.is_success() => {
            (ExitCode::SUCCESS, format!("{url}: {}", body.trim()))
        }
        Ok((status, body)) => (
            ExitCode::FAILURE,
            format!(
                "{url}: HTTP {}: {}",
                status.as_u16(),
                crate::text::one_line(body.trim())
            ),
        ),
        Err(e) => (
            ExitCode::FAILURE,
            format!(
                "{url}: no answer ({}); is `rollcall run` up with this config?",
                error_chain(&e.without_url())
            ),
        ),
    };
    println!("{said}");
    Ok(code)
}

/// The status of a running `rollcall run`, from its HTTP endpoint.
async fn status_over_http(config: &Config) -> Result<Status, String> {
    let url = format!("http://{}/status", config.listen);
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("{url}: {e}"))
}

async fn replay(
    config: &Config,
    store: &Store,
    controls: Option<&crate::runner::SinkControls>,
    request: &crate::replay::Request,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let sink = &request.sink;
    let sends = !request.rewind && !request.dry_run;
    let live = controls.is_some_and(|c| c.serves(sink));
    if sends && live && sink_config(config, sink)?.single_writer() {
        return Err(CliError::LiveSingleWriter(sink.clone()));
    }
    // A running sink keeps its cursor in memory: it moves the stored one itself, between
    // two passes, or its next save would undo the rewind.
    let live_rewind = request.rewind && !request.dry_run && controls.is_some();
    let dry = crate::replay::Request {
        dry_run: request.dry_run || live_rewind,
        ..request.clone()
    };
    let report = crate::replay::replay(config, store, &dry).await?;
    if let (true, Some(controls), Some((_, to))) = (live_rewind, controls, report.rewound) {
        let name = sink.clone();
        controls
            .restart(sink, move |store| {
                store.set_cursor(&name, to)?;
                Ok(String::new())
            })
            .await
            .ok_or_else(|| CliError::NotRunning(sink.clone()))??;
    }
    if let Some(c) = &report.compacted {
        writeln!(
            out,
            "offsets {}..{} were compacted away by retention and cannot be replayed; what remains: {}..{}",
            c.start, c.end, report.range.start, report.range.end
        )?;
    }
    let runs: Vec<String> = report
        .selected
        .iter()
        .map(|r| match r.end - r.start {
            1 => r.start.to_string(),
            _ => format!("{}-{}", r.start, r.end - 1),
        })
        .collect();
    let what = format!(
        "{} event(s), offsets {}",
        report.selected_count(),
        runs.join(", ")
    );
    match (report.rewound, dry.dry_run && !live_rewind) {
        (Some((from, to)), true) => writeln!(out, "dry run: would move the cursor of sink {sink} back from {from} to {to}, re-sending {what}")?,
        (Some((from, to)), false) if live_rewind => writeln!(out, "cursor of sink {sink} moved back from {from} to {to}; the running service is re-sending {what}")?,
        (Some((from, to)), false) => writeln!(out, "cursor of sink {sink} moved back from {from} to {to}; the service re-sends {what} when it runs")?,
        (None, true) => writeln!(out, "dry run: would send {what} to sink {sink}")?,
        (None, false) => writeln!(out, "replayed to sink {sink}: {} sent of {what}", report.sent)?,
    }
    Ok(0)
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

#[derive(Debug, Serialize, Deserialize)]
struct Status {
    store: String,
    /// Made with the store: a new id is a new log, whose offsets started again at 0.
    #[serde(default)]
    store_id: String,
    /// Writes to the store are failing (only a running process knows: it is not stored).
    #[serde(default)]
    store_error: Option<StoreFault>,
    /// Offset the next event will get.
    log_head: u64,
    /// Oldest offset retention has kept; the ones below were compacted away.
    #[serde(default)]
    log_start: u64,
    store_bytes: u64,
    sources: Vec<SourceStatus>,
    sinks: Vec<SinkStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SourceStatus {
    name: String,
    /// What the source's own cursor says an operator needs (e.g. the action log's health).
    #[serde(default)]
    details: serde_json::Value,
    #[serde(flatten)]
    state: SourceState,
    /// What the running process is doing with the source (all null when none polls it).
    #[serde(flatten)]
    activity: SourceActivity,
}

#[derive(Debug, Serialize, Deserialize)]
struct SinkStatus {
    name: String,
    cursor: u64,
    lag_events: u64,
    /// Age of the oldest undelivered event.
    lag_seconds: Option<i64>,
    dead_letters: usize,
    /// Events retention compacted away before this sink received them, over the store's life.
    #[serde(default)]
    events_skipped: u64,
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
                let mut state = store.source_state(s.name())?;
                // The cursor is the source's business: show what it says, not its internals.
                let cursor = std::mem::take(&mut state.cursor);
                Ok(SourceStatus {
                    name: s.name().to_owned(),
                    details: s.kind().status(&cursor),
                    state,
                    activity: store.activity(s.name()),
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
                    events_skipped: store.skipped(s.name())?,
                    state: store.sink_state(s.name())?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Status {
            store: store.path().display().to_string(),
            store_id: store.id().to_owned(),
            store_error: store.fault(),
            log_head: head,
            log_start: store.log_start()?,
            store_bytes: store.size_on_disk()?,
            sources,
            sinks,
        })
    }

    /// As JSON (`--json`) or for a person.
    fn print(&self, json: bool, out: &mut impl Write) -> std::io::Result<()> {
        if json {
            serde_json::to_writer_pretty(&mut *out, self)?;
            writeln!(out)
        } else {
            self.render(out)
        }
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
            "store {} (id {}) — {} events, {} bytes on disk, oldest retained offset {}",
            self.store, self.store_id, self.log_head, self.store_bytes, self.log_start
        )?;
        if let Some(f) = &self.store_error {
            writeln!(
                out,
                "  STORE FAILING since {} ({} failed writes): {}. Nothing is committed meanwhile and polling is paused; free disk space or fix permissions, then restart rollcall",
                f.since.to_rfc3339(),
                f.failures,
                f.message
            )?;
        }
        for s in &self.sources {
            let st = &s.state;
            writeln!(out, "source {}: {} users known", s.name, st.users_known)?;
            writeln!(out, "  last successful poll: {}", when(st.last_poll))?;
            writeln!(
                out,
                "  last full reconcile:  {}",
                when(st.last_full_reconcile)
            )?;
            let act = &s.activity;
            if let Some(since) = act.polling_since {
                writeln!(
                    out,
                    "  polling now, since:   {} ({}s)",
                    since.to_rfc3339(),
                    (Utc::now() - since).num_seconds()
                )?;
            } else if let Some(next) = act.next_poll {
                let wait = (next - Utc::now()).num_seconds();
                let due = if wait >= 0 {
                    format!("in {wait}s")
                } else {
                    format!("due {}s ago, waiting for a turn among max_concurrent_polls or for the store", -wait)
                };
                writeln!(out, "  next poll:            {} ({due})", next.to_rfc3339())?;
            }
            if let Some(took) = act.last_cycle_seconds {
                writeln!(out, "  last cycle took:      {took:.3}s")?;
            }
            if let Some(stop) = &st.stopped {
                writeln!(
                    out,
                    "  STOPPED since {}, sending no requests until its credentials change or `rollcall source retry-login {}`: {}",
                    stop.at.to_rfc3339(),
                    s.name,
                    printable(&stop.message)
                )?;
            } else if let Some(e) = &st.last_error {
                if st.last_poll.is_none_or(|ok| ok < e.at) {
                    writeln!(
                        out,
                        "  LAST POLL FAILED at {}: {}",
                        e.at.to_rfc3339(),
                        printable(&e.message)
                    )?;
                }
            }
            if let Some(log) = s.details.get("action_log") {
                let at = log["read_up_to"].as_str().unwrap_or("never");
                match log["last_error"].as_object() {
                    Some(e) => writeln!(
                        out,
                        "  ACTION LOG FAILING since {}: {}",
                        e.get("at").and_then(|v| v.as_str()).unwrap_or("?"),
                        printable(e.get("message").and_then(|v| v.as_str()).unwrap_or("?"))
                    )?,
                    None => writeln!(out, "  action log:           read up to {at}")?,
                }
                if let Some(n) = log["unreadable_rows"].as_u64().filter(|n| *n > 0) {
                    writeln!(out, "  action log rows that could not be read: {n}")?;
                }
            }
            if let Some(users) = s.details["unreadable_users"]
                .as_array()
                .filter(|u| !u.is_empty())
            {
                writeln!(
                    out,
                    "  USERS THAT COULD NOT BE READ: {} (their stored records are kept, no event is derived for them, the other users go on):",
                    users.len()
                )?;
                for u in users {
                    writeln!(
                        out,
                        "    user {}: {}",
                        u["id"],
                        printable(u["reason"].as_str().unwrap_or("?"))
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
                writeln!(out, "  last error: {}", printable(e))?;
            }
            if s.events_skipped > 0 {
                writeln!(
                    out,
                    "  EVENTS SKIPPED: {} events were compacted away by retention before this sink received them; they are lost to it (see the log for which offsets)",
                    s.events_skipped
                )?;
            }
        }
        Ok(())
    }
}
