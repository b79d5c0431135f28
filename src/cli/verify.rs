//! `rollcall verify` and `rollcall pubkey`: which copy of the log to check and with what, then
//! the verdict as `verify` words it. A file alone needs no config (an auditor has none); the
//! store (`--store`, `--against-store`) is reached through `forward`, here or in the running
//! process; a topic with its sink's config.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::CliError;
use super::named::sink_config;
use crate::chain::checkpoint::{parse_public, Signer};
use crate::config::Config;
use crate::store::Store;

/// The pinned key of `--key`, if given.
fn pinned(key: Option<&str>) -> Result<Option<ed25519_dalek::VerifyingKey>, CliError> {
    Ok(key.map(parse_public).transpose()?)
}

/// `verify FILE` without the store.
pub(super) fn file(path: &Path, key: Option<&str>, out: &mut dyn Write) -> Result<u8, CliError> {
    let key = pinned(key)?;
    let verdict = tokio::task::block_in_place(|| crate::verify::file(path, key, None))?;
    Ok(verdict.print(out)?)
}

/// `verify --topic SINK`: the Kafka sink's topic, read back.
pub(super) fn topic(
    config: &Config,
    name: &str,
    key: Option<&str>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let key = pinned(key)?;
    let Some(events) = sink_config(config, name)?
        .kind()
        .read_back(config.shard.as_deref())
    else {
        return Err(CliError::NotReadBack(name.to_owned()));
    };
    let verdict = tokio::task::block_in_place(|| crate::verify::read_back(events?, key))?;
    Ok(verdict.print(out)?)
}

/// `verify --store` and `verify FILE --against-store`, against `store` (here or in the
/// running process).
pub(super) async fn with_store(
    config: &Config,
    store: &Store,
    file: Option<PathBuf>,
    key: Option<String>,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let key = pinned(key.as_deref())?;
    let (config, store) = (config.clone(), store.clone());
    // Seconds of hashing: off the async workers, which serve the running process's sinks.
    let verdict = tokio::task::spawn_blocking(move || match file {
        Some(path) => crate::verify::file(&path, key, Some((&store, &config))),
        None => crate::verify::store(&store, key),
    })
    .await
    .expect("verification does not panic")?;
    Ok(verdict.print(out)?)
}

/// The command line `verify` is asked with over the admin socket: FILE made absolute, since
/// the running process has another working directory.
pub(super) fn forwarded_args(
    file: Option<&Path>,
    against_store: bool,
    key: Option<&str>,
) -> Result<Vec<String>, CliError> {
    let mut args = vec!["verify".to_owned()];
    match file {
        Some(path) => args.push(std::path::absolute(path)?.display().to_string()),
        None => args.push("--store".into()),
    }
    if against_store {
        args.push("--against-store".into());
    }
    if let Some(key) = key {
        args.extend(["--key".to_owned(), key.to_owned()]);
    }
    Ok(args)
}

/// `pubkey`: the public key of `[store] signing_key_file`.
pub(super) fn pubkey(config: &Config, out: &mut dyn Write) -> Result<u8, CliError> {
    let Some(path) = &config.store.signing_key_file else {
        return Err(CliError::NoSigningKey);
    };
    writeln!(out, "{}", Signer::load(path)?.public())?;
    Ok(0)
}
