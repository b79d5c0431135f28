//! The command line's one error type and the exit codes it maps to, one per kind of trouble,
//! so scripts and orchestrators can tell them apart (docs/operations.md, exit codes).

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::exit;
use crate::runner::{CycleError, RunnerError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Claim(Box<crate::runner::ClaimError>),
    #[error("source `{0}` cannot be taken over: no sink of the config keeps claims (only a Kafka sink does, unless `claim_sources = false`), so no other store's claim stops this process polling it")]
    NoClaims(String),
    #[error("{store}; asking the running process over HTTP failed too ({http}). Check `listen` in the config")]
    StatusUnavailable { store: String, http: String },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Demo(#[from] crate::source::demo::DemoError),
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    #[error(transparent)]
    Table(#[from] crate::table::TableError),
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
    #[error(
        "sink '{0}' signs nothing, so it has no public key: only webhook sinks sign their events"
    )]
    Unsigned(String),
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
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    SigningKey(#[from] crate::chain::checkpoint::KeyError),
    #[error("the config has no `[store] signing_key_file`, so checkpoints are not signed and there is no public key. Create a key with `openssl genpkey -algorithm ed25519 -out rollcall-signing.pem` and name it in `[store] signing_key_file`")]
    NoSigningKey,
    #[error("sink '{0}' cannot be read back: --topic reads a Kafka sink's topic. A JSONL sink's file is verified with `rollcall verify FILE`")]
    NotReadBack(String),
    #[error("source '{name}' is in {whose} ({place}): remove its table from the config and reload (SIGHUP or `rollcall reload`) first; its events stay in the log either way")]
    StillConfigured {
        name: String,
        place: String,
        /// "the config", or the config the running process acts on.
        whose: &'static str,
    },
    #[error("the store holds nothing of a source named '{name}'; it holds state of these sources: {stored}")]
    NothingStored { name: String, stored: String },
    #[error("no `rollcall run` holds the store of this config, so there is nothing to reload: the next `rollcall run` reads the config as it is then")]
    NothingToReload,
    #[error("the running `rollcall run` is shutting down and takes no more orders; run the command again once it has stopped, or after it starts again")]
    ShuttingDown,
    #[error("source '{name}': {error}")]
    RefusedBefore {
        name: String,
        #[source]
        error: crate::source::SourceError,
    },
}

impl From<crate::runner::ClaimError> for CliError {
    fn from(e: crate::runner::ClaimError) -> CliError {
        CliError::Claim(Box::new(e))
    }
}

impl CliError {
    /// The process's exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        use crate::replay::ReplayError;
        use crate::table::TableError;
        match self {
            CliError::Config(_)
            | CliError::UnknownSink { .. }
            | CliError::DemoNeedsSource
            | CliError::NotOverAdmin
            | CliError::Unsigned(_)
            | CliError::NoPublicKey(_)
            | CliError::NotRunning(_)
            | CliError::OtherConfig { .. }
            | CliError::NoStore(_)
            | CliError::UnknownSource { .. }
            | CliError::NoClaims(_)
            | CliError::StillConfigured { .. }
            | CliError::NothingStored { .. }
            | CliError::NothingToReload
            | CliError::LiveSingleWriter(_)
            | CliError::SigningKey(_)
            | CliError::NoSigningKey
            | CliError::NotReadBack(_)
            | CliError::ExportToStdoutWhileRunning
            | CliError::Replay(ReplayError::UnknownSink { .. } | ReplayError::BadGlob { .. })
            | CliError::Table(TableError::NotATable(_)) => exit::CONFIG,
            CliError::Runner(
                RunnerError::Cycle(CycleError::Source { .. })
                | RunnerError::Deadline { .. }
                | RunnerError::Claim { .. },
            )
            | CliError::Demo(_)
            | CliError::RefusedBefore { .. } => exit::SOURCE,
            CliError::Claim(e) if matches!(**e, crate::runner::ClaimError::Store(_)) => exit::STORE,
            CliError::Claim(_) => exit::DELIVERY,
            CliError::Runner(RunnerError::Deliver(_) | RunnerError::Sink(_))
            | CliError::Sink(_)
            | CliError::Deliver(_)
            | CliError::Replay(ReplayError::Sink(_) | ReplayError::Deliver(_))
            | CliError::Table(TableError::Sink(_)) => exit::DELIVERY,
            CliError::Store(_)
            | CliError::Runner(
                RunnerError::Cycle(CycleError::Store(_)) | RunnerError::StoppedWithStoreFailing(_),
            )
            | CliError::Replay(ReplayError::Store(_))
            | CliError::Table(TableError::Store(_))
            | CliError::Verify(crate::verify::VerifyError::Store(_))
            | CliError::Admin(_)
            | CliError::StatusUnavailable { .. } => exit::STORE,
            CliError::Stdout(_)
            | CliError::Replay(_)
            | CliError::Verify(_)
            | CliError::ShuttingDown => exit::FAILED,
        }
    }
}
