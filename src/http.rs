//! The operator's HTTP endpoints, served by `rollcall run` on `listen` (default 127.0.0.1:9464):
//!
//! - `/healthz` — the process can make progress: 503 once the store has refused every write
//!   for [`STORE_DEAD_AFTER`] (sled takes no write after an I/O error: only a restart helps);
//! - `/readyz` — the store takes writes, every source polled successfully within three poll
//!   intervals, none stopped itself (a login Kylin or Superset refused: unready at once, with
//!   the reason) nor is claimed by another store (docs/scaling.md, Claims), and no sink is stuck (disabled, or degraded for longer than [`STUCK_AFTER`]);
//!   503 with reasons otherwise;
//! - `/metrics` — Prometheus text format (see [`describe`] for the names), for the sources
//!   configured now: a source a reload removed leaves it;
//! - `/status` — what `rollcall status --json` prints, for when `run` holds the store.
//!
//! Owns the routes, the readiness rule and the metric names. It only reads the store.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};

use crate::claim::ClaimState;
use crate::config::{Config, LiveConfig};
use crate::store::{SinkHealth, Store};

/// A sink degraded for longer than this makes the service unready.
pub const STUCK_AFTER: Duration = Duration::from_secs(300);
/// A store that has refused every write (its first one and at least one retry) for this long
/// makes the process unhealthy: a restart is what can help.
pub const STORE_DEAD_AFTER: Duration = Duration::from_secs(10);

/// Produces the `/status` document.
pub type StatusFn = Arc<dyn Fn() -> Result<Value, String> + Send + Sync>;

#[derive(Clone)]
struct Ops {
    store: Store,
    config: LiveConfig,
    metrics: Option<PrometheusHandle>,
    status: StatusFn,
}

/// Install the process-wide Prometheus recorder. `None` if one is installed already.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        .ok()?
        .install_recorder()
        .ok()?;
    describe();
    metrics::gauge!("rollcall_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Some(handle)
}

/// Say which shard and store this process is (`rollcall_shard_info`), so that a dashboard over
/// several processes tells them apart.
pub fn note_shard(shard: Option<&str>, store_id: &str) {
    metrics::gauge!(
        "rollcall_shard_info",
        "shard" => shard.unwrap_or_default().to_owned(),
        "store_id" => store_id.to_owned()
    )
    .set(1.0);
}

/// Names and help texts of every metric rollcall exports.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "rollcall_poll_duration_seconds",
        Unit::Seconds,
        "Duration of a poll of one source."
    );
    describe_counter!(
        "rollcall_poll_errors_total",
        "Polls that failed, by source."
    );
    describe_gauge!(
        "rollcall_users_known",
        "Users in the stored snapshot, by source."
    );
    describe_gauge!(
        "rollcall_last_poll_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful poll, by source."
    );
    describe_gauge!(
        "rollcall_source_last_error_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last failed poll (an error, or its deadline passed), by source."
    );
    describe_gauge!(
        "rollcall_source_cycle_seconds",
        Unit::Seconds,
        "Duration of the last cycle, by source, whether it succeeded or not."
    );
    describe_gauge!(
        "rollcall_source_next_poll_timestamp_seconds",
        Unit::Seconds,
        "Unix time the next poll is due, by source; in the past while it waits for a turn among max_concurrent_polls or for the store."
    );
    describe_gauge!(
        "rollcall_source_polling",
        "1 while a poll of the source is running, 0 otherwise."
    );
    describe_gauge!(
        "rollcall_source_claimed_elsewhere",
        "1 while another store holds the claim on the source's URL, so this process does not poll it (docs/scaling.md, Claims); 0 once it may. Only where a sink keeps claims."
    );
    describe_counter!(
        "rollcall_events_derived_total",
        "Events appended to the log, by source and type."
    );
    describe_counter!(
        "rollcall_events_delivered_total",
        "Events delivered (cursor advances), by sink."
    );
    describe_counter!(
        "rollcall_delivery_failures_total",
        "Failed delivery attempts, by sink."
    );
    describe_counter!(
        "rollcall_delivery_retries_total",
        "Deliveries retried after a failure, by sink."
    );
    describe_counter!(
        "rollcall_events_skipped_total",
        "Events retention compacted away before the sink received them, by sink."
    );
    describe_counter!(
        "rollcall_events_filtered_total",
        "Events a sink's subscription left out (event_types, sources, subjects), by sink, over the store's life."
    );
    describe_counter!(
        "rollcall_events_dead_lettered_total",
        "Events given up on and parked in the dead-letter tree, by sink."
    );
    describe_gauge!(
        "rollcall_sink_lag_events",
        "Events in the log not yet delivered, by sink."
    );
    describe_gauge!(
        "rollcall_sink_lag_seconds",
        "Age of the oldest undelivered event, by sink."
    );
    describe_gauge!(
        "rollcall_sink_up",
        "1 when the sink is healthy, 0 when degraded or disabled."
    );
    describe_gauge!(
        "rollcall_dead_letters",
        "Events in the dead-letter tree, by sink."
    );
    describe_gauge!(
        "rollcall_store_size_bytes",
        Unit::Bytes,
        "Size of the sled store on disk."
    );
    describe_gauge!("rollcall_log_head", "Offset the next event will get.");
    describe_gauge!(
        "rollcall_build_info",
        "Always 1; the `version` label is the running rollcall's."
    );
    describe_gauge!(
        "rollcall_shard_info",
        "Always 1; the `shard` label is the config's `shard` (empty when unset), `store_id` the store's id."
    );
    describe_histogram!(
        "rollcall_delivery_latency_seconds",
        Unit::Seconds,
        "From when rollcall observed an event to when a sink acknowledged it, by sink."
    );
    for (name, help) in crate::sink::SinkConfig::kind_metrics() {
        describe_counter!(*name, *help);
    }
    describe_counter!(
        "rollcall_unreadable_records_total",
        "User records a source answered that could not be read, by source."
    );
}

/// Every metric name rollcall exports (as Prometheus shows them, histograms by their base
/// name): alert rules and dashboards may name only these (`tests/deploy.rs` checks it).
pub const METRICS: &[&str] = &[
    "rollcall_poll_duration_seconds",
    "rollcall_poll_errors_total",
    "rollcall_users_known",
    "rollcall_last_poll_success_timestamp_seconds",
    "rollcall_source_last_error_timestamp_seconds",
    "rollcall_source_cycle_seconds",
    "rollcall_source_next_poll_timestamp_seconds",
    "rollcall_source_polling",
    "rollcall_source_claimed_elsewhere",
    "rollcall_events_derived_total",
    "rollcall_events_delivered_total",
    "rollcall_delivery_failures_total",
    "rollcall_delivery_retries_total",
    "rollcall_events_skipped_total",
    "rollcall_events_filtered_total",
    "rollcall_events_dead_lettered_total",
    "rollcall_sink_lag_events",
    "rollcall_sink_lag_seconds",
    "rollcall_sink_up",
    "rollcall_dead_letters",
    "rollcall_store_size_bytes",
    "rollcall_log_head",
    "rollcall_build_info",
    "rollcall_shard_info",
    "rollcall_delivery_latency_seconds",
    "rollcall_webhook_responses_total",
    "rollcall_unreadable_records_total",
];

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    config: LiveConfig,
    metrics: Option<PrometheusHandle>,
    status: StatusFn,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ops = Ops {
        store,
        config,
        metrics,
        status,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status_json))
        .with_state(ops);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(ops): State<Ops>) -> Response {
    let dead = chrono::Duration::from_std(STORE_DEAD_AFTER).unwrap_or(chrono::Duration::MAX);
    match ops.store.fault() {
        Some(f) if f.failures > 1 && Utc::now() - f.since >= dead => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the store has refused every write since {} ({} attempts): {}. Free disk space or fix the store directory's permissions, then restart rollcall\n",
                f.since.to_rfc3339(),
                f.failures,
                f.message
            ),
        )
            .into_response(),
        _ => "ok\n".into_response(),
    }
}

async fn readyz(State(ops): State<Ops>) -> Response {
    match unready_reasons(&ops) {
        Ok(reasons) if reasons.is_empty() => {
            (StatusCode::OK, Json(json!({"ready": true}))).into_response()
        }
        Ok(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reasons": reasons})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reasons": [e]})),
        )
            .into_response(),
    }
}

/// Why the service is not ready; empty when it is.
fn unready_reasons(ops: &Ops) -> Result<Vec<String>, String> {
    let now = Utc::now();
    let mut reasons = Vec::new();
    if let Some(f) = ops.store.fault() {
        reasons.push(format!(
            "store: cannot write since {} ({} failed writes): {}",
            f.since.to_rfc3339(),
            f.failures,
            f.message
        ));
    }
    let config = ops.config.borrow().clone();
    for source in &config.sources {
        let name = source.name();
        let state = ops.store.source_state(name).map_err(|e| e.to_string())?;
        let window = chrono::Duration::from_std(source.kind().poll_interval() * 3)
            .unwrap_or(chrono::Duration::MAX);
        if let Some(stop) = &state.stopped {
            reasons.push(format!("source {name}: stopped: {}", stop.message));
            continue;
        }
        if let Some(ClaimState::ClaimedBy { owner, .. }) = &state.claim {
            reasons.push(format!(
                "source {name}: not polled, claimed by {} (`rollcall status` says what to do)",
                owner.who()
            ));
            continue;
        }
        match state.last_poll {
            Some(t) if now - t <= window => {}
            Some(t) => reasons.push(format!(
                "source {}: no successful poll since {}",
                name,
                t.to_rfc3339()
            )),
            None => reasons.push(format!("source {name}: no successful poll yet")),
        }
    }
    let names = deliveries(&config, &ops.store).map_err(|e| e.to_string())?;
    for name in names {
        let state = ops.store.sink_state(&name).map_err(|e| e.to_string())?;
        let stuck_since = chrono::Duration::from_std(STUCK_AFTER).unwrap_or(chrono::Duration::MAX);
        match state.health {
            SinkHealth::Ok => {}
            SinkHealth::Disabled => reasons.push(format!("sink {name}: disabled")),
            SinkHealth::Degraded if state.since.is_some_and(|t| now - t > stuck_since) => reasons
                .push(format!(
                    "sink {name}: degraded since {}",
                    state.since.map(|t| t.to_rfc3339()).unwrap_or_default()
                )),
            SinkHealth::Degraded => {}
        }
    }
    Ok(reasons)
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    let Some(handle) = &ops.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response();
    };
    let config = ops.config.borrow().clone();
    if let Err(e) = record_store_gauges(&ops.store, &config) {
        tracing::warn!(error = %e, "could not read the store for metrics");
    }
    let configured: std::collections::HashSet<&str> =
        config.sources.iter().map(|s| s.name()).collect();
    (
        [("content-type", "text/plain; version=0.0.4")],
        only_sources(&handle.render(), &configured),
    )
        .into_response()
}

/// `text` (Prometheus text format) without the samples of a source not in `configured`: the
/// recorder keeps every series it was given, also those of a source a reload removed, which
/// would otherwise show its last values for as long as the process runs.
fn only_sources(text: &str, configured: &std::collections::HashSet<&str>) -> String {
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        if source_label(line).is_none_or(|s| configured.contains(s)) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// The value of a sample line's `source` label. Every label value rollcall sets is a name, an
/// event type or a number: none holds a comma or a quote.
fn source_label(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    let labels = &line[line.find('{')? + 1..line.find('}')?];
    labels
        .split(',')
        .find_map(|label| label.strip_prefix("source=\"")?.strip_suffix('"'))
}

/// Gauges that are read from the store at scrape time rather than tracked in memory.
fn record_store_gauges(store: &Store, config: &Config) -> Result<(), crate::store::StoreError> {
    let head = store.head()?;
    metrics::gauge!("rollcall_log_head").set(head as f64);
    metrics::gauge!("rollcall_store_size_bytes").set(store.size_on_disk()? as f64);
    for source in &config.sources {
        let state = store.source_state(source.name())?;
        metrics::gauge!("rollcall_users_known", "source" => source.name().to_owned())
            .set(state.users_known as f64);
        if let Some(t) = state.last_poll {
            metrics::gauge!("rollcall_last_poll_success_timestamp_seconds", "source" => source.name().to_owned())
                .set(t.timestamp() as f64);
        }
    }
    for name in deliveries(config, store)? {
        let cursor = store.cursor(&name)?;
        metrics::gauge!("rollcall_sink_lag_events", "sink" => name.clone())
            .set(head.saturating_sub(cursor) as f64);
        let oldest = store
            .events_from(cursor, 1)?
            .first()
            .map(|e| e.event())
            .transpose()?;
        let age = oldest.map_or(0, |e| (Utc::now() - e.time).num_seconds().max(0));
        metrics::gauge!("rollcall_sink_lag_seconds", "sink" => name.clone()).set(age as f64);
        metrics::gauge!("rollcall_dead_letters", "sink" => name.clone())
            .set(store.dead_letter_count(&name)? as f64);
        // Kept in the store, so the count goes on across restarts.
        metrics::counter!("rollcall_events_filtered_total", "sink" => name.clone())
            .absolute(store.filtered(&name)?);
        let up = store.sink_state(&name)?.health == SinkHealth::Ok;
        metrics::gauge!("rollcall_sink_up", "sink" => name).set(if up { 1.0 } else { 0.0 });
    }
    Ok(())
}

/// Every name a configured sink keeps a cursor under: its own, or one per SSF stream.
fn deliveries(config: &Config, store: &Store) -> Result<Vec<String>, crate::store::StoreError> {
    let mut names = Vec::new();
    for sink in &config.sinks {
        names.extend(sink.deliveries(store)?);
    }
    Ok(names)
}

async fn status_json(State(ops): State<Ops>) -> Response {
    match (ops.status)() {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e}))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_source_no_longer_configured_are_left_out_and_the_rest_kept() {
        let text = "# HELP rollcall_poll_errors_total Polls that failed, by source.\n\
# TYPE rollcall_poll_errors_total counter\n\
rollcall_poll_errors_total{source=\"kept\"} 1\n\
rollcall_poll_errors_total{source=\"gone\"} 2\n\
rollcall_events_derived_total{source=\"gone\",type=\"user.created\"} 3\n\
rollcall_poll_duration_seconds_bucket{source=\"gone\",le=\"0.1\"} 1\n\
rollcall_sink_up{sink=\"gone\"} 1\n\
rollcall_log_head 7\n";
        let configured = ["kept"].into_iter().collect();
        assert_eq!(
            only_sources(text, &configured),
            "# HELP rollcall_poll_errors_total Polls that failed, by source.\n\
# TYPE rollcall_poll_errors_total counter\n\
rollcall_poll_errors_total{source=\"kept\"} 1\n\
rollcall_sink_up{sink=\"gone\"} 1\n\
rollcall_log_head 7\n"
        );
    }

    #[test]
    fn every_metric_only_some_sink_kinds_export_is_listed_for_alert_rules() {
        let mut kinds = crate::sink::SinkConfig::kind_metrics().peekable();
        assert!(kinds.peek().is_some(), "the webhook kind has one");
        for (name, _) in kinds {
            assert!(METRICS.contains(name), "{name} is missing from METRICS");
        }
    }
}
