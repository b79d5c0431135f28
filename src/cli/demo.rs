//! `rollcall demo`: demo changes in a test Superset or Kylin, each step waiting for the running
//! rollcall's next poll. Never sends credentials an upstream refused before.

use std::process::ExitCode;

use super::error::CliError;
use super::forward::login_state;
use super::status::status_over_http;
use crate::config::Config;

pub(super) async fn demo(
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
    let mut tour = match source.demo().await {
        Ok(tour) => tour,
        Err(e @ crate::source::demo::DemoError::LoginRefused { .. }) => {
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

/// Waits until the running rollcall has completed a poll of `source` that started after
/// `after`. If `/status` stops answering, or no such poll comes for a long while, it says so
/// and waits `fallback` instead, so the demo never hangs on a rollcall that went away.
pub(super) async fn wait_for_poll(
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
