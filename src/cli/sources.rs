//! `rollcall reload` and `rollcall source forget`: the commands that change which sources
//! rollcall keeps, carried out by the running `rollcall run` (its runner applies them, one at a
//! time) or, for `forget`, on the store directly when no process holds it.

use std::io::Write;

use super::error::CliError;
use crate::config::Config;
use crate::runner::{Forgot, SourceControls};
use crate::store::Store;

/// Read the config of the running process again (from the path it was started with) and apply
/// its sources; say what changed.
pub(super) async fn reload(
    config: &Config,
    sources: Option<&SourceControls>,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let Some(sources) = sources else {
        return Err(CliError::NothingToReload);
    };
    let new = Config::load(&config.path)?;
    let reloaded = sources.reload(new).await.ok_or(CliError::ShuttingDown)??;
    let c = &reloaded.changes;
    writeln!(out, "{}: reloaded", config.path.display())?;
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    writeln!(out, "  sources added, polling now: {}", list(&c.added))?;
    writeln!(out, "  sources changed, restarted: {}", list(&c.changed))?;
    writeln!(
        out,
        "  sources removed, no longer polled: {}",
        list(&c.removed)
    )?;
    if !c.removed.is_empty() {
        writeln!(
            out,
            "  (their stored state is kept until `rollcall source forget NAME`)"
        )?;
    }
    if !reloaded.needs_restart.is_empty() {
        writeln!(
            out,
            "  changed but not applied until rollcall restarts: {}",
            reloaded.needs_restart.join(", ")
        )?;
    }
    Ok(0)
}

/// Remove what the store keeps of source `name`, which must not be in `config` (the config
/// the running process acts on, or the file when none runs).
pub(super) async fn forget(
    config: &Config,
    store: &Store,
    sources: Option<&SourceControls>,
    name: &str,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let configured = |place: String| CliError::StillConfigured {
        name: name.to_owned(),
        place,
        whose: match sources {
            Some(_) => "the config the running `rollcall run` acts on",
            None => "the config",
        },
    };
    if let Some(origin) = config.origin(name) {
        return Err(configured(origin.place()));
    }
    let forgot = match sources {
        Some(sources) => sources.forget(name).await.ok_or(CliError::ShuttingDown)??,
        None if store.forget_source(name)? => Forgot::Forgotten,
        None => Forgot::NothingStored,
    };
    match forgot {
        Forgot::Forgotten => {
            tracing::info!(source = %name, "source forgotten: its stored state is gone, its events stay in the log");
            writeln!(out, "source {name}: forgotten (the users as last seen, its state and cursor, refused logins); its events stay in the log. Added to the config again, it starts as a new source would")?;
            Ok(0)
        }
        Forgot::NothingStored => {
            let stored = store.stored_sources()?;
            Err(CliError::NothingStored {
                name: name.to_owned(),
                stored: if stored.is_empty() {
                    "none".to_owned()
                } else {
                    stored.join(", ")
                },
            })
        }
        Forgot::StillPolled => Err(configured(config.path.display().to_string())),
    }
}
