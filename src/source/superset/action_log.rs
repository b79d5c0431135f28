//! Reading the action log, `/api/v1/log/`: the rows logged since the log cursor (less an
//! overlap), oldest first, within each cycle's budget, turned into `audit.action` and
//! `agent.tool_called` events by the pure rules of `audit.rs` and `mcp.rs`.
//!
//! Owns the requests and the budget (rows and time per cycle), the checks that the log honoured
//! the filter and the paging asked for, and the progress bar of a long backfill. A log that
//! cannot be read is a warning kept in the cursor: it never fails the cycle, and the users
//! stream never waits for it.

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::api::{self, truncated, ListQuery, LOG};
use super::audit::{ActionFilter, Judge, LogCursor, RawRow};
use super::client::Client;
use super::config::{span, SupersetConfig, MAX_LOG_BACKFILL, MAX_OVERLAP};
use super::cursor::{Cursor, LogError};
use super::error::SupersetError;
use crate::event::Derived;

/// Show a progress bar when a log read has more rows than this (a first-start backfill).
const PROGRESS_ABOVE: u64 = 2_000;
/// New action-log rows read per cycle at most: bounds the memory of a backfill, and how long
/// the next poll of the users waits; the rest is read by the next cycles.
const LOG_ROWS_PER_CYCLE: usize = 10_000;
/// How long one cycle may spend reading the action log (checked between pages).
const LOG_TIME_PER_CYCLE: std::time::Duration = std::time::Duration::from_secs(20);

/// Read the action log past the cursor. A log that cannot be read (disabled, forbidden,
/// down) is a warning recorded in the cursor: the users stream never waits for it.
pub async fn read(
    client: &Client,
    config: &SupersetConfig,
    filter: &ActionFilter,
    cursor: &mut Cursor,
    now: DateTime<Utc>,
) -> Vec<Derived> {
    let overlap = span(config.incremental_overlap, MAX_OVERLAP);
    let backfill = span(config.log_backfill, MAX_LOG_BACKFILL);
    let since = cursor.log.since(overlap, backfill, now);
    let read = match rows(client, config.page_size, since, &cursor.log).await {
        Ok(read) => read,
        Err(e) => {
            warn!(error = %e, "action log unavailable; the users stream goes on");
            cursor.log_error = Some(LogError {
                at: now,
                message: e.to_string(),
            });
            return Vec::new();
        }
    };
    let judge = Judge {
        filter,
        service_account: cursor.service_account_id,
        overlap,
    };
    if !read.complete {
        info!(
            rows = read.rows.len(),
            "action log: this cycle's budget is spent ({LOG_ROWS_PER_CYCLE} new rows or {}); the next cycles read on from here",
            humantime::format_duration(LOG_TIME_PER_CYCLE)
        );
    }
    let accepted = cursor.log.accept(since, read.rows, &judge);
    if accepted.malformed > 0 {
        warn!(
            rows = accepted.malformed,
            "unreadable action-log rows skipped"
        );
        cursor.log_malformed_rows += accepted.malformed as u64;
    }
    for call in &accepted.unfinished {
        warn!(
            tool = %call.tool,
            started_at = %call.started_at,
            "an MCP tool call never logged its end within {}: given up, so no agent.tool_called joins its start (its rows stay audit.action events)",
            humantime::format_duration(super::mcp::OPEN_FOR.to_std().unwrap_or_default())
        );
    }
    debug!(
        events = accepted.events.len(),
        duplicates = accepted.duplicates,
        own_noise = accepted.own_noise,
        filtered = accepted.filtered,
        "action log read"
    );
    cursor.log_error = None;
    accepted.events
}

/// What one cycle read of the action log.
struct LogRead {
    rows: Vec<RawRow>,
    /// Every row after `since` was read; false when the cycle's budget ended the read first.
    complete: bool,
}

/// The action-log rows logged after `since`, oldest first, with their ids: all of them, or
/// as many as the cycle's budget allows (at most [`LOG_ROWS_PER_CYCLE`] rows not in
/// `known`, and pages started within [`LOG_TIME_PER_CYCLE`]). Each row must be after
/// `since` (a dropped filter would otherwise replay the whole log) and each page must bring
/// a row not seen on an earlier one (a dropped `page` would otherwise never end).
async fn rows(
    client: &Client,
    page_size: u32,
    since: DateTime<Utc>,
    known: &LogCursor,
) -> Result<LogRead, SupersetError> {
    // Log times are UTC (docs/superset.md S16), whatever the server's zone.
    let value = api::to_filter_value(since, chrono_tz::UTC);
    let floor = truncated(since).naive_utc();
    let started = std::time::Instant::now();
    let mut read = LogRead {
        rows: Vec::new(),
        complete: true,
    };
    let mut ids = std::collections::HashSet::new();
    let mut new_rows = 0;
    let mut progress: Option<indicatif::ProgressBar> = None;
    for page in 0.. {
        if new_rows >= LOG_ROWS_PER_CYCLE || started.elapsed() >= LOG_TIME_PER_CYCLE {
            read.complete = false;
            break;
        }
        let result = client
            .list::<serde_json::Value>(LOG, &ListQuery::log_page(value.clone(), page, page_size))
            .await?;
        if page == 0 && result.count > PROGRESS_ABOVE {
            progress = Some(progress_bar(result.count));
        }
        let n = result.result.len();
        let mut brought_new = false;
        for (id, row) in result.ids.into_iter().zip(result.result) {
            let dttm = row.get("dttm").and_then(|v| v.as_str()).and_then(|s| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
            });
            if dttm.is_some_and(|t| t <= floor) {
                return Err(SupersetError::FilterIgnored {
                    detail: format!(
                        "asked for log rows after {value}, got row {id} of {}",
                        dttm.unwrap_or_default()
                    ),
                });
            }
            if !ids.insert(id) {
                continue;
            }
            brought_new = true;
            if !known.has_seen(id) {
                new_rows += 1;
            }
            read.rows.push(RawRow { id, row });
        }
        if n > 0 && !brought_new {
            return Err(SupersetError::FilterIgnored {
                detail: format!(
                    "page {page} of the action log brought only rows of earlier pages: `page` is ignored, and reading on would never end"
                ),
            });
        }
        if let Some(bar) = &progress {
            bar.set_position(read.rows.len() as u64);
        }
        if n < page_size as usize {
            break;
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(read)
}

/// Rows per second and time left, on stderr, only when it is a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "action log backfill {bar:30} {pos}/{len} rows, {per_sec}, ETA {eta}",
        )
        .expect("a valid template"),
    );
    bar
}
