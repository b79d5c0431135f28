//! `rollcall dlq list|retry|purge`: a sink's dead letters.

use std::io::Write;

use super::args::DlqCommand;
use super::error::CliError;
use super::named::sink_config;
use crate::config::Config;
use crate::store::Store;
use crate::text::printable;

pub(super) async fn dlq(
    config: &Config,
    store: &Store,
    action: DlqCommand,
    out: &mut Vec<u8>,
) -> Result<u8, CliError> {
    let name = match &action {
        DlqCommand::List { sink, .. }
        | DlqCommand::Retry { sink, .. }
        | DlqCommand::Purge { sink, .. } => sink,
    };
    let sink = sink_config(config, name)?;
    match action {
        DlqCommand::List { json, .. } => {
            for l in store.dead_letters(name)? {
                if json {
                    serde_json::to_writer(&mut *out, &l).map_err(std::io::Error::from)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{} attempts\t{}\t{} {} id {}\t{}",
                        l.offset,
                        l.attempts,
                        l.at.to_rfc3339(),
                        l.event["type"].as_str().unwrap_or("?"),
                        l.event["subject"].as_str().unwrap_or("?"),
                        l.event["id"].as_str().unwrap_or("?"),
                        printable(&l.reason)
                    )?;
                }
            }
            Ok(0)
        }
        DlqCommand::Retry { offset, .. } => {
            let sink = sink.build()?;
            let report = crate::deliver::retry_dead_letters(store, sink.as_ref(), offset).await?;
            for o in &report.delivered {
                writeln!(out, "{o}\tdelivered")?;
            }
            for (o, reason) in &report.failed {
                writeln!(out, "{o}\tfailed again, kept: {}", printable(reason))?;
            }
            writeln!(
                out,
                "{} delivered, {} still dead-lettered",
                report.delivered.len(),
                store.dead_letter_count(name)?
            )?;
            Ok(u8::from(!report.failed.is_empty()))
        }
        DlqCommand::Purge { offset, .. } => {
            let offsets: Vec<u64> = match offset {
                Some(o) => vec![o],
                None => store.dead_letters(name)?.iter().map(|l| l.offset).collect(),
            };
            let mut purged = 0;
            for o in offsets {
                purged += usize::from(store.remove_dead_letter(name, o)?);
            }
            writeln!(out, "{purged} dead letter(s) purged from sink {name}")?;
            Ok(0)
        }
    }
}
