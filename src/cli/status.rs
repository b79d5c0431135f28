//! What `rollcall status` shows, as text and JSON (also served on `/status`): each source's
//! polls and errors, the log, each sink's cursor, lag and health.

use std::io::Write;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::claim::ClaimState;
use crate::config::Config;
use crate::store::{
    SinkHealth, SinkState, SourceActivity, SourceState, Store, StoreError, StoreFault,
};
use crate::text::printable;

/// The status of a running `rollcall run`, from its HTTP endpoint.
pub(super) async fn status_over_http(config: &Config) -> Result<Status, String> {
    let url = format!("http://{}/status", config.listen);
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("{url}: {e}"))
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Status {
    pub(super) store: String,
    /// Made with the store: a new id is a new log, whose offsets started again at 0.
    #[serde(default)]
    pub(super) store_id: String,
    /// The config's `shard`, which every event's `source` names.
    #[serde(default)]
    pub(super) shard: Option<String>,
    /// Writes to the store are failing (only a running process knows: it is not stored).
    #[serde(default)]
    pub(super) store_error: Option<StoreFault>,
    /// Offset the next event will get.
    pub(super) log_head: u64,
    /// Oldest offset retention has kept; the ones below were compacted away.
    #[serde(default)]
    pub(super) log_start: u64,
    pub(super) store_bytes: u64,
    pub(super) sources: Vec<SourceStatus>,
    pub(super) sinks: Vec<SinkStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SourceStatus {
    pub(super) name: String,
    /// In the config; false for a source removed from it whose stored state is kept until
    /// `rollcall source forget`.
    #[serde(default = "configured")]
    pub(super) configured: bool,
    /// What the source's own cursor says an operator needs (e.g. the action log's health).
    #[serde(default)]
    pub(super) details: serde_json::Value,
    #[serde(flatten)]
    pub(super) state: SourceState,
    /// What the running process is doing with the source (all null when none polls it).
    #[serde(flatten)]
    pub(super) activity: SourceActivity,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SinkStatus {
    pub(super) name: String,
    pub(super) cursor: u64,
    pub(super) lag_events: u64,
    /// Age of the oldest undelivered event.
    pub(super) lag_seconds: Option<i64>,
    pub(super) dead_letters: usize,
    /// Events retention compacted away before this sink received them, over the store's life.
    #[serde(default)]
    pub(super) events_skipped: u64,
    /// Events the sink's subscription left out (`event_types`, `sources`, `subjects`), over the
    /// store's life.
    #[serde(default)]
    pub(super) events_filtered: u64,
    #[serde(flatten)]
    pub(super) state: SinkState,
}

/// A status without the `configured` field is of a release before reloads: every source it
/// lists is configured.
fn configured() -> bool {
    true
}

impl Status {
    pub(super) fn read(config: &Config, store: &Store) -> Result<Status, StoreError> {
        let head = store.head()?;
        let mut sources = config
            .sources
            .iter()
            .map(|s| {
                let mut state = store.source_state(s.name())?;
                // The cursor is the source's business: show what it says, not its internals.
                let cursor = std::mem::take(&mut state.cursor);
                Ok(SourceStatus {
                    name: s.name().to_owned(),
                    configured: true,
                    details: s.kind().status(&cursor),
                    state,
                    activity: store.activity(s.name()),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // What no source of the config reads any more is shown as stored, without details:
        // only the source knew how to read its cursor.
        for name in store.stored_sources()? {
            if config.source(&name).is_none() {
                let mut state = store.source_state(&name)?;
                state.cursor.clear();
                sources.push(SourceStatus {
                    activity: store.activity(&name),
                    name,
                    configured: false,
                    details: serde_json::Value::Null,
                    state,
                });
            }
        }
        let mut sinks = Vec::new();
        // A sink whose destinations come and go (SSF streams) has a row for each of them.
        for sink in &config.sinks {
            for name in sink.deliveries(store)? {
                let cursor = store.cursor(&name)?;
                let oldest = store
                    .events_from(cursor, 1)?
                    .first()
                    .map(|e| e.event())
                    .transpose()?;
                sinks.push(SinkStatus {
                    cursor,
                    lag_events: head.saturating_sub(cursor),
                    lag_seconds: oldest.map(|e| (Utc::now() - e.time).num_seconds()),
                    dead_letters: store.dead_letter_count(&name)?,
                    events_skipped: store.skipped(&name)?,
                    events_filtered: store.filtered(&name)?,
                    state: store.sink_state(&name)?,
                    name,
                });
            }
        }
        Ok(Status {
            store: store.path().display().to_string(),
            store_id: store.id().to_owned(),
            shard: config.shard.clone(),
            store_error: store.fault(),
            log_head: head,
            log_start: store.log_start()?,
            store_bytes: store.size_on_disk()?,
            sources,
            sinks,
        })
    }

    /// As JSON (`--json`) or for a person.
    pub(super) fn print(&self, json: bool, out: &mut impl Write) -> std::io::Result<()> {
        if json {
            serde_json::to_writer_pretty(&mut *out, self)?;
            writeln!(out)
        } else {
            self.render(out)
        }
    }

    pub(super) fn render(&self, out: &mut impl Write) -> std::io::Result<()> {
        let when = |t: Option<chrono::DateTime<Utc>>| match t {
            Some(t) => format!(
                "{} ({}s ago)",
                t.to_rfc3339(),
                (Utc::now() - t).num_seconds()
            ),
            None => "never".to_owned(),
        };
        writeln!(
            out,
            "store {} (id {}) — {} events, {} bytes on disk, oldest retained offset {}",
            self.store, self.store_id, self.log_head, self.store_bytes, self.log_start
        )?;
        if let Some(shard) = &self.shard {
            writeln!(out, "shard {shard}: every event's `source` names it")?;
        }
        if let Some(f) = &self.store_error {
            writeln!(
                out,
                "  STORE FAILING since {} ({} failed writes): {}. Nothing is committed meanwhile and polling is paused; free disk space or fix permissions, then restart rollcall",
                f.since.to_rfc3339(),
                f.failures,
                f.message
            )?;
        }
        for s in &self.sources {
            let st = &s.state;
            if !s.configured {
                let claim = match &st.claim {
                    Some(ClaimState::Held { .. }) => {
                        " and its claim, so no other process polls it,"
                    }
                    _ => "",
                };
                writeln!(
                    out,
                    "source {}: NOT IN THE CONFIG, not polled; {} users as last seen, last successful poll: {}. Its stored state{claim} is kept until `rollcall source forget {}`",
                    s.name,
                    st.users_known,
                    when(st.last_poll),
                    s.name
                )?;
                continue;
            }
            writeln!(out, "source {}: {} users known", s.name, st.users_known)?;
            writeln!(out, "  last successful poll: {}", when(st.last_poll))?;
            writeln!(
                out,
                "  last full reconcile:  {}",
                when(st.last_full_reconcile)
            )?;
            // Said by its own line below: the error repeats it.
            let claimed_elsewhere = matches!(st.claim, Some(ClaimState::ClaimedBy { .. }));
            let act = &s.activity;
            if let Some(since) = act.polling_since {
                writeln!(
                    out,
                    "  polling now, since:   {} ({}s)",
                    since.to_rfc3339(),
                    (Utc::now() - since).num_seconds()
                )?;
            } else if let Some(next) = act.next_poll {
                let wait = (next - Utc::now()).num_seconds();
                let due = if wait >= 0 {
                    format!("in {wait}s")
                } else {
                    format!("due {}s ago, waiting for a turn among max_concurrent_polls or for the store", -wait)
                };
                writeln!(out, "  next poll:            {} ({due})", next.to_rfc3339())?;
            }
            if let Some(took) = act.last_cycle_seconds {
                writeln!(out, "  last cycle took:      {took:.3}s")?;
            }
            match &st.claim {
                Some(ClaimState::Held { url, since }) => writeln!(
                    out,
                    "  claimed:              by this store since {} ({url})",
                    since.to_rfc3339()
                )?,
                Some(ClaimState::ClaimedBy { owner, seen }) => writeln!(
                    out,
                    "  CLAIMED BY ANOTHER STORE since {}: {} holds {} (as its source `{}`) since {}, last renewed {}; not polled here. Poll it in one process only: remove it from this config (then `rollcall source forget {}`), or from the other process's; if that store is gone for good, `rollcall source take-over {}`",
                    seen.to_rfc3339(),
                    printable(&owner.who()),
                    printable(&owner.url),
                    printable(&owner.source),
                    owner.since.to_rfc3339(),
                    owner.renewed.to_rfc3339(),
                    s.name,
                    s.name
                )?,
                None => {}
            }
            if let Some(stop) = &st.stopped {
                writeln!(
                    out,
                    "  STOPPED since {}, sending no requests until its credentials change or `rollcall source retry-login {}`: {}",
                    stop.at.to_rfc3339(),
                    s.name,
                    printable(&stop.message)
                )?;
            } else if let Some(e) = st.last_error.as_ref().filter(|_| !claimed_elsewhere) {
                if st.last_poll.is_none_or(|ok| ok < e.at) {
                    writeln!(
                        out,
                        "  LAST POLL FAILED at {}: {}",
                        e.at.to_rfc3339(),
                        printable(&e.message)
                    )?;
                }
            }
            if let Some(log) = s.details.get("action_log") {
                let at = log["read_up_to"].as_str().unwrap_or("never");
                match log["last_error"].as_object() {
                    Some(e) => writeln!(
                        out,
                        "  ACTION LOG FAILING since {}: {}",
                        e.get("at").and_then(|v| v.as_str()).unwrap_or("?"),
                        printable(e.get("message").and_then(|v| v.as_str()).unwrap_or("?"))
                    )?,
                    None => writeln!(out, "  action log:           read up to {at}")?,
                }
                if let Some(n) = log["unreadable_rows"].as_u64().filter(|n| *n > 0) {
                    writeln!(out, "  action log rows that could not be read: {n}")?;
                }
                if let Some(n) = log["mcp_calls_given_up"].as_u64().filter(|n| *n > 0) {
                    writeln!(out, "  MCP tool calls whose end was never logged: {n}")?;
                }
            }
            if let Some(users) = s.details["unreadable_users"]
                .as_array()
                .filter(|u| !u.is_empty())
            {
                writeln!(
                    out,
                    "  USERS THAT COULD NOT BE READ: {} (their stored records are kept, no event is derived for them, the other users go on):",
                    users.len()
                )?;
                for u in users {
                    writeln!(
                        out,
                        "    user {}: {}",
                        u["id"],
                        printable(u["reason"].as_str().unwrap_or("?"))
                    )?;
                }
            }
            if let Some(g) = &st.deletion_guard {
                writeln!(
                    out,
                    "  MASS-DELETE GUARD: {} of {} users vanished since {}; their deletions are held. \
                     A later full reconcile that agrees releases them, or run `rollcall once --confirm-deletes`",
                    g.user_ids.len(),
                    g.known,
                    g.since.to_rfc3339()
                )?;
            }
        }
        for s in &self.sinks {
            let age = s
                .lag_seconds
                .map(|l| format!(", oldest undelivered {l}s old"))
                .unwrap_or_default();
            let health = match s.state.health {
                SinkHealth::Ok => "ok",
                SinkHealth::Degraded => "DEGRADED",
                SinkHealth::Disabled => "DISABLED",
            };
            let filtered = match s.events_filtered {
                0 => String::new(),
                n => format!(", {n} filtered out"),
            };
            writeln!(
                out,
                "sink {}: {health}, cursor {}, lag {} events{age}, {} dead letters{filtered}",
                s.name, s.cursor, s.lag_events, s.dead_letters
            )?;
            if let (Some(e), false) = (&s.state.last_error, s.state.health == SinkHealth::Ok) {
                writeln!(out, "  last error: {}", printable(e))?;
            }
            if s.events_skipped > 0 {
                writeln!(
                    out,
                    "  EVENTS SKIPPED: {} events were compacted away by retention before this sink received them; they are lost to it (see the log for which offsets)",
                    s.events_skipped
                )?;
            }
        }
        Ok(())
    }
}
