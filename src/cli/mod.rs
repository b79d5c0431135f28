//! The command line: what an operator types, and what each command prints.
//!
//! Owns parsing (`args`), exit codes (`error`), reaching the store wherever it is (`forward`:
//! here, or through the running `rollcall run`), and one file per command. It must never hold
//! business logic: every command calls into the runner, the store or the config.

mod args;
mod check_config;
mod daemon;
mod demo;
mod dlq;
mod doctor;
mod error;
mod forward;
mod healthcheck;
mod named;
mod operate;
mod replay;
mod sources;
mod status;
mod table;
mod verify;

pub use crate::exit;
pub use args::{
    Cli, Command, ConfigCommand, DlqCommand, LogFormat, SinkCommand, SourceCommand, StoreCommand,
    TableCommand,
};
pub use error::CliError;

use std::io::Write;
use std::process::ExitCode;

use crate::config::Config;
use crate::runner::{CycleOptions, Runner};
use crate::store::{Store, StoreError};

/// Run a parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::CheckConfig => check_config::check_config(&cli.config),
        Command::Config {
            action: ConfigCommand::Reference,
        } => {
            std::io::stdout().write_all(crate::config::reference().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
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
            doctor::doctor(&cli.config, &Config::load(&cli.config)?, send_test_event).await
        }
        Command::Healthcheck { ready } => {
            healthcheck::healthcheck(&Config::load(&cli.config)?, ready).await
        }
        Command::Run => daemon::run(forward::Started::load(&cli.config)?).await,
        Command::Once {
            full,
            confirm_deletes,
        } => {
            let config = Config::load(&cli.config)?;
            let mut runner = Runner::new(&config, daemon::open_signing(&config)?)?;
            runner
                .cycle(CycleOptions {
                    full,
                    confirm_deletes,
                })
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { pause } => {
            demo::demo(&cli.config, &Config::load(&cli.config)?, pause).await
        }
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
        Command::Verify {
            file: Some(path),
            against_store: false,
            key,
            ..
        } => {
            let code = verify::file(&path, key.as_deref(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::from(code))
        }
        Command::Verify {
            topic: Some(name),
            key,
            ..
        } => {
            let config = Config::load(&cli.config)?;
            let code = verify::topic(
                &config,
                &name,
                key.as_deref(),
                &mut std::io::stdout().lock(),
            )?;
            Ok(ExitCode::from(code))
        }
        Command::Pubkey => {
            let config = Config::load(&cli.config)?;
            Ok(ExitCode::from(verify::pubkey(
                &config,
                &mut std::io::stdout().lock(),
            )?))
        }
        Command::Sink {
            action: SinkCommand::PublicKey { name },
        } => {
            let config = Config::load(&cli.config)?;
            let Some(keys) = named::sink_config(&config, &name)?.kind().public_keys() else {
                return Err(CliError::Unsigned(name));
            };
            let keys = keys?;
            if keys.is_empty() {
                return Err(CliError::NoPublicKey(name));
            }
            for key in keys {
                println!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        command @ (Command::Events { .. }
        | Command::Verify { .. }
        | Command::Store { .. }
        | Command::Status { .. }
        | Command::Replay { .. }
        | Command::Dlq { .. }
        | Command::Sink { .. }
        | Command::Table { .. }
        | Command::Source { .. }
        | Command::Reload) => {
            let mut args: Vec<String> = std::env::args().skip(1).collect();
            if let Command::Verify {
                file,
                against_store,
                key,
                ..
            } = &command
            {
                args = verify::forwarded_args(file.as_deref(), *against_store, key.as_deref())?;
            }
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
            let reply = forward::on_the_store(&cli.config, command, args).await?;
            std::io::stdout().write_all(&reply.stdout)?;
            std::io::stderr().write_all(reply.stderr.as_bytes())?;
            Ok(ExitCode::from(reply.code))
        }
    }
}
