//! `rollcall replay`: re-deliver a range of the log to one sink, or rewind its cursor.

use std::io::Write;

use super::error::CliError;
use super::named::sink_config;
use crate::config::Config;
use crate::store::Store;

pub(super) async fn replay(
    config: &Config,
    store: &Store,
    controls: Option<&crate::runner::SinkControls>,
    request: &crate::replay::Request,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let sink = &request.sink;
    let sends = !request.rewind && !request.dry_run;
    let live = controls.is_some_and(|c| c.serves(sink));
    if sends && live && sink_config(config, sink)?.kind().single_writer() {
        return Err(CliError::LiveSingleWriter(sink.clone()));
    }
    // A running sink keeps its cursor in memory: it moves the stored one itself, between
    // two passes, or its next save would undo the rewind.
    let live_rewind = request.rewind && !request.dry_run && controls.is_some();
    let dry = crate::replay::Request {
        dry_run: request.dry_run || live_rewind,
        ..request.clone()
    };
    let report = crate::replay::replay(config, store, &dry).await?;
    if let (true, Some(controls), Some((_, to))) = (live_rewind, controls, report.rewound) {
        let name = sink.clone();
        controls
            .restart(sink, move |store| {
                store.rewind_cursor(&name, to)?;
                Ok(String::new())
            })
            .await
            .ok_or_else(|| CliError::NotRunning(sink.clone()))??;
    }
    if let Some(c) = &report.compacted {
        writeln!(
            out,
            "offsets {}..{} were compacted away by retention and cannot be replayed; what remains: {}..{}",
            c.start, c.end, report.range.start, report.range.end
        )?;
    }
    let runs: Vec<String> = report
        .selected
        .iter()
        .map(|r| match r.end - r.start {
            1 => r.start.to_string(),
            _ => format!("{}-{}", r.start, r.end - 1),
        })
        .collect();
    let what = format!(
        "{} event(s), offsets {}",
        report.selected_count(),
        runs.join(", ")
    );
    match (report.rewound, dry.dry_run && !live_rewind) {
        (Some((from, to)), true) => writeln!(out, "dry run: would move the cursor of sink {sink} back from {from} to {to}, re-sending {what}")?,
        (Some((from, to)), false) if live_rewind => writeln!(out, "cursor of sink {sink} moved back from {from} to {to}; the running service is re-sending {what}")?,
        (Some((from, to)), false) => writeln!(out, "cursor of sink {sink} moved back from {from} to {to}; the service re-sends {what} when it runs")?,
        (None, true) => writeln!(out, "dry run: would send {what} to sink {sink}")?,
        (None, false) => writeln!(out, "replayed to sink {sink}: {} sent of {what}", report.sent)?,
    }
    Ok(0)
}
