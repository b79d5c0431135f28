//! `rollcall run`: the long-running process. Wires the runner, the HTTP endpoints, the admin
//! socket and the signals (SIGHUP reopens files and reloads the config's sources, SIGTERM and
//! Ctrl-C stop). It acts on the config it started with, its sources as last reloaded. Also opens
//! the store as every command that commits does (`run`, `once`): signing checkpoints when the
//! config has a key.

use std::process::ExitCode;

use super::error::CliError;
use super::forward::{answer, Running, Started};
use super::status::Status;
use crate::config::Config;
use crate::runner::{Runner, SourceControls};
use crate::store::Store;
use crate::text::error_chain;

/// `run`: poll and deliver until Ctrl-C or SIGTERM, serving /healthz, /readyz, /metrics and
/// /status on `listen` meanwhile.
pub(super) async fn run(started: Started) -> Result<ExitCode, CliError> {
    let config = &started.config;
    let store = open_signing(config)?;
    let metrics = crate::http::install_metrics();
    crate::http::note_shard(config.shard.as_deref(), store.id());
    let runner = Runner::new(config, store.clone())?;
    let live = runner.config();
    let (stop_http, stopped) = tokio::sync::watch::channel(false);
    match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => {
            let address = listener
                .local_addr()
                .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
            tracing::info!(address = %address, "serving /healthz /readyz /metrics /status");
            let status: crate::http::StatusFn = {
                let (live, store) = (live.clone(), store.clone());
                // The config is cloned out of the watch: a reload waits for no status read.
                std::sync::Arc::new(move || match Status::read(&live.borrow().clone(), &store) {
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
                live.clone(),
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
    let controls = runner.controls();
    // SIGHUP: each sink kind does what it does on it (JSONL sinks reopen their files by path,
    // after logrotate renamed them); then the config is read again and its sources applied.
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(CliError::Stdout)?;
        let (path, sources) = (config.path.clone(), controls.sources.clone());
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: JSONL sinks reopen their files before their next batch; reading the config again");
                crate::sink::SinkConfig::on_hangup();
                reload(&path, &sources).await;
            }
        });
    }
    // The admin socket: other commands reach this process's store through it.
    let socket = crate::admin::socket_path(&config.store.path);
    let listener = crate::admin::bind(&socket)?;
    tracing::info!(socket = %socket.display(), "serving events, status, replay, dlq and sink commands");
    {
        let running = std::sync::Arc::new(Running {
            path: started.path.clone(),
            config: live,
            store: store.clone(),
            controls,
        });
        let mut stopped = stop_http.subscribe();
        let until = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::admin::serve(
            listener,
            crate::admin::Limits::default(),
            move |request| answer(request, running.clone()),
            until,
        ));
    }
    let result = runner.run(shutdown_signal()).await;
    let _ = stop_http.send(true);
    let _ = std::fs::remove_file(&socket);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Read the config at `path` again and hand it to the runner. A config that does not load is
/// refused whole, every problem logged with its file and line, and the sources polled go on as
/// they were; so does a reload the runner cannot apply.
async fn reload(path: &std::path::Path, sources: &SourceControls) {
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(config = %path.display(), error = %error_chain(&e), "config reload refused: the sources polled go on as they were. Fix the problems named (`rollcall check-config` lists them) and send SIGHUP again");
            return;
        }
    };
    // Applied, the runner logged what changed; `None`: the runner is stopping.
    if let Some(Err(e)) = sources.reload(new).await {
        tracing::error!(config = %path.display(), error = %error_chain(&e), "config reload refused: a source cannot be set up; the sources polled go on as they were");
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
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

/// The store as the commands that commit (`run`, `once`) open it: signing checkpoints of the
/// hash chain with `[store] signing_key_file`, when one is set.
pub(super) fn open_signing(config: &crate::config::Config) -> Result<Store, CliError> {
    let store = Store::open(&config.store.path)?;
    if let Some(mut checkpoints) = config.store.checkpoints()? {
        checkpoints.shard = config.shard.clone();
        tracing::info!(key = %checkpoints.signer.public(), every = checkpoints.every, "signing checkpoints of the hash chain");
        store.sign_checkpoints(checkpoints);
    }
    Ok(store)
}
