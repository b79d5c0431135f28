//! `rollcall table rebuild`: republish a table sink's current users, here or through the
//! running `rollcall run`.

use std::io::Write;

use super::error::CliError;
use super::named::sink_config;
use crate::config::Config;
use crate::store::Store;

pub(super) async fn rebuild(
    config: &Config,
    store: &Store,
    controls: Option<&crate::runner::SinkControls>,
    sink: &str,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let rebuilt = crate::table::rebuild(config, store, sink_config(config, sink)?).await?;
    let head = rebuilt.head;
    let name = sink.to_owned();
    let rewind = move |store: &Store| {
        Ok(match crate::table::rewind(store, &name, head)? {
            Some(cursor) => format!("the events from log offset {head} (it was at {cursor}) are sent again after them"),
            None => format!("its cursor is at or before log offset {head}: it sends what changed meanwhile anyway"),
        })
    };
    // A running sink keeps its cursor in memory: it moves the stored one itself, between two
    // passes, or its next save would undo the move.
    let said = match controls.filter(|c| c.serves(sink)) {
        Some(controls) => controls
            .restart(sink, rewind)
            .await
            .ok_or_else(|| CliError::NotRunning(sink.to_owned()))??,
        None => rewind(store)?,
    };
    writeln!(
        out,
        "republished {} current user(s) to sink {sink}; {said}",
        rebuilt.users
    )?;
    Ok(0)
}
