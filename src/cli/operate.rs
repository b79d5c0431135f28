//! The store commands themselves (`events`, `status`, `replay`, `dlq`, `sink`, `source`,
//! `reload`, `store export`, `verify --store` and `verify FILE --against-store`), run against a
//! store handed to them by `forward`: here or in the running process. They never open a store
//! or a socket.

use std::io::Write;

use chrono::Utc;

use super::args::{Command, SinkCommand, SourceCommand, StoreCommand, TableCommand};
use super::dlq::dlq;
use super::error::CliError;
use super::named::{sink_config, source_config};
use super::replay::replay;
use super::sources::{forget, reload, take_over};
use super::status::Status;
use crate::config::Config;
use crate::runner::Controls;
use crate::store::{SinkHealth, Store, StoreError};

/// Run a store command against `store`; `controls` reach the sinks and sources when `run`
/// serves them. Returns the exit code.
pub(super) async fn operate(
    config: &Config,
    command: Command,
    store: &Store,
    controls: Option<&Controls>,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let sinks = controls.map(|c| &c.sinks);
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
            replay(config, store, sinks, &request, out).await
        }
        Command::Dlq { action } => dlq(config, store, action, out).await,
        Command::Verify {
            file,
            key,
            topic: None,
            ..
        } => super::verify::with_store(config, store, file, key, out).await,
        Command::Source {
            action: SourceCommand::RetryLogin { name },
        } => {
            source_config(config, &name)?;
            if store.clear_login_refusals(&name)? > 0 {
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
                .login_refusal(&name, &crate::store::Credentials(credentials))?
                .map(|r| serde_json::json!({"at": r.at, "message": r.message}));
            serde_json::to_writer(&mut *out, &refused).map_err(std::io::Error::from)?;
            Ok(0)
        }
        Command::Sink {
            action: SinkCommand::Enable { name },
        } => sink_enable(config, store, sinks, &name, out).await,
        Command::Table {
            action: TableCommand::Rebuild { sink },
        } => super::table::rebuild(config, store, sinks, &sink, out).await,
        Command::Source {
            action: SourceCommand::Forget { name },
        } => forget(config, store, controls.map(|c| &c.sources), &name, out).await,
        Command::Source {
            action: SourceCommand::TakeOver { name },
        } => take_over(config, store, &name, out).await,
        Command::Reload => reload(config, controls.map(|c| &c.sources), out).await,
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
        }
        | Command::Verify { topic: Some(_), .. }
        | Command::Pubkey => Err(CliError::NotOverAdmin),
        Command::Run
        | Command::Once { .. }
        | Command::CheckConfig
        | Command::Config { .. }
        | Command::Completions { .. }
        | Command::Man
        | Command::Doctor { .. }
        | Command::Healthcheck { .. }
        | Command::Demo { .. } => Err(CliError::NotOverAdmin),
    }
}

pub(super) async fn sink_enable(
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
