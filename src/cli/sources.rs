//! `rollcall reload`, `rollcall source forget` and `rollcall source take-over`: the commands
//! that change which sources rollcall keeps, carried out by the running `rollcall run` (its
//! runner applies them, one at a time) or, for `forget` and `take-over`, on the store directly
//! when no process holds it; both also change this store's claims (docs/scaling.md, Claims).

use std::io::Write;

use super::error::CliError;
use super::named::source_config;
use crate::claim::ClaimState;
use crate::config::Config;
use crate::runner::{Claims, Forgot, SourceControls};
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
    // Read before it is forgotten: the claim to withdraw once the source is.
    let held = match store.source_state(name)?.claim {
        Some(ClaimState::Held { url, .. }) => Some(url),
        _ => None,
    };
    let forgot = match sources {
        Some(sources) => sources.forget(name).await.ok_or(CliError::ShuttingDown)??,
        None if store.forget_source(name)? => Forgot::Forgotten,
        None => Forgot::NothingStored,
    };
    match forgot {
        Forgot::Forgotten => {
            tracing::info!(source = %name, "source forgotten: its stored state is gone, its events stay in the log");
            writeln!(out, "source {name}: forgotten (the users as last seen, its state and cursor, refused logins); its events stay in the log. Added to the config again, it starts as a new source would")?;
            let shared = held.as_ref().and_then(|url| {
                config
                    .sources
                    .iter()
                    .find(|s| crate::claim::normalize(s.kind().login().url) == *url)
            });
            if let (Some(url), Some(other)) = (&held, shared) {
                writeln!(
                    out,
                    "  its claim on {url} stays: source {} of this config polls that URL now",
                    other.name()
                )?;
            } else if let Some(url) = held {
                let claims = Claims::new(config, store.id())?;
                claims.release(name, &url).await?;
                for place in claims.places() {
                    writeln!(out, "  its claim on {url} is withdrawn from {place}: another process may poll it now")?;
                }
            }
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

/// Claim source `name` of `config` for this store, withdrawing every other store's claim on its
/// URL; say whose were withdrawn.
pub(super) async fn take_over(
    config: &Config,
    store: &Store,
    name: &str,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let source = source_config(config, name)?;
    let claims = Claims::new(config, store.id())?;
    if claims.is_empty() {
        return Err(CliError::NoClaims(name.to_owned()));
    }
    let withdrawn = claims.take_over(store, source).await?;
    for claim in &withdrawn {
        tracing::warn!(source = %name, taken_from = %claim.who(), "source taken over: the claim of another store is withdrawn");
        writeln!(
            out,
            "source {name}: the claim of {} (its source `{}`, since {}) is withdrawn: its process refuses the source from its next poll on",
            claim.who(),
            claim.source,
            claim.since.to_rfc3339()
        )?;
    }
    writeln!(
        out,
        "source {name}: claimed by this store (id {}) on {}; it is polled here from its next poll on",
        store.id(),
        claims.places().join(", ")
    )?;
    Ok(0)
}
