//! The `rollcall` binary: parse the command line, set up logging, run the command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rollcall::cli::{execute, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    raise_open_file_limit();
    match execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            // The whole chain, each cause once: the top error's message does not repeat its
            // source's (thiserror's `#[source]`), so joining them loses and repeats nothing.
            eprintln!("error: {}", rollcall::text::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr: stdout carries events when a JSONL sink writes to `-`.
fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "rollcall=debug,info",
        _ => "rollcall=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Each source keeps its connection to its upstream open between polls, so a fleet holds a
/// socket per source (docs/scaling.md): past a thousand sources that outgrows the soft limit
/// of open files many service managers set (systemd: 1,024), while the hard limit is far
/// higher. Raise the soft limit to the hard one, as long-running servers do; a failure leaves
/// the limit as it was and is only logged, since a small fleet never needs more.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files allowed"),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the limit of open files; a fleet of many sources may run out of them")
        }
    }
}
