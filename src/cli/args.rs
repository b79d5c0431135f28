//! The command line as clap parses it: every command, its arguments and its help text with
//! an example. Only what an operator types: no command runs here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Turn user changes in Apache Superset into a reliable stream of events",
    long_about = "rollcall polls Superset's REST API, diffs what it sees against the state it stores \
                  (sled), and appends user events (created, updated, deactivated, deleted, role and \
                  group changes, logins), the action log's rows (audit.action) and AI agents' \
                  MCP tool calls (agent.tool_called) to an event log. \
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
    /// Validate the config file and the files its `include` names, and explain every
    /// problem, with its file and line.
    #[command(after_help = "Example:\n  rollcall --config rollcall.toml check-config")]
    CheckConfig,
    /// Make the running `rollcall run` read its config again, as SIGHUP does, and say what
    /// changed: sources added start, removed ones stop (their stored state is kept until
    /// `rollcall source forget`), changed ones restart, the others go on undisturbed. A config
    /// with a problem is refused whole, naming its file and line. Sinks, `[store]` and `listen`
    /// change only with a restart.
    #[command(after_help = "Example:\n  rollcall reload   # after adding sources.d/unit-b.toml")]
    Reload,
    /// Explain the config file itself, whatever file --config names.
    #[command(after_help = "Example:\n  rollcall config reference | less")]
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
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
    /// A sink's table of current users (a Kafka sink with `table = true`).
    #[command(
        after_help = "Example:\n  rollcall table rebuild --sink people   # after the topic was lost or recreated"
    )]
    Table {
        #[command(subcommand)]
        action: TableCommand,
    },
    /// Manage a source while rollcall runs (or before it starts).
    #[command(
        after_help = "Examples:\n  rollcall source retry-login cubes   # once its account is unlocked upstream\n  rollcall source forget unit-b       # once removed from the config and reloaded"
    )]
    Source {
        #[command(subcommand)]
        action: SourceCommand,
    },
    /// Check the hash chain of a copy of the event log end to end: a JSONL file of CloudEvents,
    /// the store's own log (--store), or a Kafka sink's topic read back (--topic). Names the
    /// first broken place (a changed value, a dropped or moved line, a cut tail); the same
    /// event twice (a redelivery, a replay) is no break. Exit 0 intact, 7 broken, 8
    /// unverifiable (nothing chained in it). See docs/integrity.md.
    #[command(
        group(clap::ArgGroup::new("copy").required(true).args(["file", "store", "topic"])),
        after_help = "Examples:\n  rollcall verify /var/log/rollcall/events.jsonl --key ed25519:…\n  rollcall verify received.jsonl --against-store   # a copy that skips events (a filtered webhook)\n  rollcall verify --store\n  rollcall verify --topic siem-kafka"
    )]
    Verify {
        /// A JSONL file of CloudEvents, one per line, as a JSONL sink writes them (or a webhook
        /// receiver keeps their bodies).
        file: Option<PathBuf>,
        /// Verify the store's own log.
        #[arg(long)]
        store: bool,
        /// Verify the topic of this Kafka sink (its `name`), read back with its brokers and
        /// options.
        #[arg(long, value_name = "SINK")]
        topic: Option<String>,
        /// Compare each line of FILE with the store's event at its offset, so a copy that skips
        /// events (a filtered sink's) verifies; when a JSONL sink of the config writes FILE,
        /// the file must also reach what that sink confirmed writing.
        #[arg(long, requires = "file")]
        against_store: bool,
        /// The public key checkpoints must be signed with, as `rollcall pubkey` prints it
        /// (`ed25519:…`). Without it each checkpoint is checked with the key it names, and the
        /// output shows that key to compare.
        #[arg(long, value_name = "PUBLIC_KEY")]
        key: Option<String>,
    },
    /// Print the public key of `[store] signing_key_file`, which signs the hash chain's
    /// checkpoints: give it to auditors to pin (`rollcall verify --key`). Never prints the
    /// private key.
    #[command(after_help = "Example:\n  rollcall pubkey > rollcall-checkpoints.pub")]
    Pubkey,
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
pub enum ConfigCommand {
    /// Print every key of the config file with its type, default and meaning, as Markdown:
    /// generated from rollcall's own config types, as the reference in docs/configuration.md.
    #[command(after_help = "Example:\n  rollcall config reference > configuration-reference.md")]
    Reference,
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
pub enum TableCommand {
    /// Publish every current user from the store to the sink's compacted topic, then send
    /// again what changed meanwhile, so the topic's last message per user is the user as
    /// they are now; works while `rollcall run` serves the sink.
    #[command(after_help = "Example:\n  rollcall table rebuild --sink people")]
    Rebuild {
        /// The sink's `name` in the config.
        #[arg(long)]
        sink: String,
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
    /// Remove everything the store keeps of a source no longer in the config: the users as
    /// last seen, its state and cursor, refused logins, and its claim on the claims topic of
    /// every Kafka sink (another process may then poll it). Its events stay in the log: they
    /// are history. Refused while the source is configured: remove it from the config and
    /// reload first. Added again later, it starts as a new source would.
    #[command(after_help = "Example:\n  rollcall source forget unit-b")]
    Forget {
        /// The source's `name`, as it was in the config.
        name: String,
    },
    /// Claim a source for this store although another store claims it (`status` shows which),
    /// on the claims topic of every Kafka sink: the other claims on its URL are withdrawn, so
    /// the process of that store refuses the source from its next poll on. Only for a store
    /// that is gone for good (its disk lost, its process retired without `source forget`):
    /// while its process runs, remove the source from its config and `source forget` it there
    /// instead. See docs/scaling.md, Claims.
    #[command(after_help = "Example:\n  rollcall source take-over finance")]
    TakeOver {
        /// The source's `name` in this config.
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
