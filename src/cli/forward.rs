//! Commands that read or change the store, wherever the store is: opened here when it is free,
//! or asked of the running `rollcall run` that holds it, over its admin socket; and that
//! process's side, answering such a request with the config it started with. Same output, same
//! exit code either way.

use std::io::Write;
use std::path::PathBuf;

use chrono::Utc;
use clap::Parser;
use serde::Deserialize;

use super::args::{Cli, Command, SourceCommand};
use super::error::CliError;
use super::operate::operate;
use super::status::status_over_http;
use crate::config::{Config, ConfigError, LiveConfig};
use crate::runner::Controls;
use crate::store::{Store, StoreError};
use crate::text::error_chain;

/// What a store command printed and its exit code, wherever it ran.
pub(super) struct Said {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: String,
    pub(super) code: u8,
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
pub(super) async fn on_the_store(
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
pub(super) async fn login_state(
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

/// The config `run` was started with, and its file kept resolved (symlinks followed) to tell
/// a request naming another file.
pub(super) struct Started {
    pub(super) config: Config,
    pub(super) path: PathBuf,
}

impl Started {
    pub(super) fn load(path: &std::path::Path) -> Result<Started, CliError> {
        let config = Config::load(path)?;
        let resolved = std::fs::canonicalize(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Started {
            config,
            path: resolved,
        })
    }
}

/// What a running `rollcall run` answers admin-socket requests with.
pub(super) struct Running {
    /// The config file it was started with, resolved.
    pub(super) path: PathBuf,
    /// The config it acts on now: its sources as last reloaded.
    pub(super) config: LiveConfig,
    pub(super) store: Store,
    pub(super) controls: Controls,
}

/// Answer one admin-socket request with the running process's store, sinks and config: a
/// request naming another config file than the one `run` started with is refused (acting on
/// it would mix sinks `run` does not serve with its store), and one naming the same file,
/// changed since `run` last read it, is told so.
pub(super) async fn answer(
    request: crate::admin::Request,
    running: std::sync::Arc<Running>,
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
    let config = running.config.borrow().clone();
    let result = match std::fs::canonicalize(&request.config) {
        Ok(named) if named == running.path => {
            if config.changed_on_disk() && !matches!(cli.command, Command::Reload) {
                note = format!(
                    "note: {} (or a file its `include` names) changed since this `rollcall run` started or last reloaded it; it acts on the config as it read it then: `rollcall reload` (or SIGHUP) applies the sources, a restart the rest\n",
                    named.display()
                );
            }
            operate(
                &config,
                cli.command,
                &running.store,
                Some(&running.controls),
                &mut out,
            )
            .await
        }
        _ => Err(CliError::OtherConfig {
            named: request.config,
            running: running.path.clone(),
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
