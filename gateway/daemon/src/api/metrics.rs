//! `GET /metrics`: Prometheus text exposition format (read scope).
//!
//! The gateway's own counters (telemetry.rs, the sync status, the plugin
//! host's status, the buffer's stats) stay the single bookkeeping; at scrape
//! time they are handed to the `metrics` recorder as absolute counter values
//! and gauge values, and the recorder renders them, together with anything
//! recorded directly (the flush-latency histogram, and whatever other
//! modules record with the `metrics` macros).
//!
//! It needs a `read` token like every other endpoint but `/health`: the
//! metrics name plugins, devices and user counts, which is more than a
//! liveness probe should tell strangers. Prometheus sends one with
//! `authorization: {type: Bearer, credentials: …}` in its scrape config.

use std::sync::Once;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use emotion_plugin_host::PluginState;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};

use super::ApiError;
use crate::state::AppState;
use crate::telemetry::{self, FLUSH_SECONDS};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    summary = "Prometheus metrics",
    description = "The gateway's metrics in the Prometheus text exposition format (0.0.4): events in and out per \
        transport and source, duplicates and rejections, plugin calls, errors and latency, buffer size and \
        group-commit flush latency (histogram), ingest queue depth, sync lag, open WebSocket and MQTT \
        connections, alerts, analyzer size. Needs a `read` token (Prometheus: `authorization` in the scrape config).",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the read scope", body = super::error::ErrorBody),
        (status = 503, description = "No Prometheus recorder could be installed", body = super::error::ErrorBody),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let handle = telemetry::prometheus().ok_or_else(|| {
        ApiError::Unavailable("the metrics recorder is not installed; see the gateway log".into())
    })?;
    describe();
    feed(&state).await;
    let body = handle.render();
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

/// Hand the current values of every counter to the recorder.
async fn feed(state: &AppState) {
    let c = &state.counters;
    gauge!("emotion_gateway_uptime_seconds").set(state.started.elapsed().as_secs_f64());

    for (t, s, n) in c.events_in() {
        counter!("emotion_gateway_events_in_total", "transport" => t.as_str(), "source" => s.as_str())
            .absolute(n);
    }
    for (t, s, n) in c.events_out() {
        counter!("emotion_gateway_events_out_total", "transport" => t.as_str(), "source" => s.as_str())
            .absolute(n);
    }
    let snap = c.snapshot();
    counter!("emotion_gateway_events_duplicate_total").absolute(snap.duplicates);
    counter!("emotion_gateway_events_rejected_total").absolute(snap.rejected);
    let (flushes, flushed) = c.flush_totals();
    counter!("emotion_gateway_buffer_flushes_total").absolute(flushes);
    counter!("emotion_gateway_buffer_flushed_events_total").absolute(flushed);
    gauge!("emotion_gateway_ingest_queue_events").set(state.ingest.queued() as f64);

    let store = state.store.clone();
    if let Ok(stats) = tokio::task::spawn_blocking(move || store.stats()).await {
        gauge!("emotion_gateway_buffer_events").set(stats.events as f64);
        gauge!("emotion_gateway_buffer_batches").set(stats.batches as f64);
        gauge!("emotion_gateway_buffer_bytes").set(stats.bytes_on_disk as f64);
        counter!("emotion_gateway_buffer_corrupt_batches_skipped_total")
            .absolute(stats.corrupt_batches_skipped);
    }
    let damage = state.store.damage();
    gauge!("emotion_gateway_buffer_acknowledged_lost_events").set(damage.acknowledged_lost as f64);
    gauge!("emotion_gateway_buffer_repairs").set(damage.repairs.len() as f64);

    for p in state.plugins.status() {
        let name = p.name.clone();
        counter!("emotion_gateway_plugin_calls_total", "plugin" => name.clone())
            .absolute(p.stats.calls);
        counter!("emotion_gateway_plugin_readings_total", "plugin" => name.clone())
            .absolute(p.stats.readings);
        counter!("emotion_gateway_plugin_failures_total", "plugin" => name.clone())
            .absolute(p.stats.failures);
        counter!("emotion_gateway_plugin_errors_total", "plugin" => name.clone())
            .absolute(p.stats.errors);
        if let Some(us) = p.stats.mean_us_per_reading {
            gauge!("emotion_gateway_plugin_reading_latency_seconds", "plugin" => name.clone())
                .set(us / 1e6);
        }
        let current = match p.state {
            PluginState::Running => "running",
            PluginState::Quarantined { .. } => "quarantined",
            PluginState::Rejected { .. } => "rejected",
        };
        for st in ["running", "quarantined", "rejected"] {
            gauge!("emotion_gateway_plugin_state", "plugin" => name.clone(), "state" => st)
                .set(if st == current { 1.0 } else { 0.0 });
        }
    }

    let sync = state.sync.view(chrono::Utc::now(), state.store.as_ref());
    gauge!("emotion_gateway_sync_enabled").set(f64::from(u8::from(sync.enabled)));
    gauge!("emotion_gateway_sync_connected").set(f64::from(u8::from(sync.connected)));
    gauge!("emotion_gateway_sync_lag_events").set(sync.lag_events as f64);
    gauge!("emotion_gateway_sync_lag_seconds").set(sync.lag_seconds);
    counter!("emotion_gateway_sync_events_shipped_total").absolute(sync.events_shipped);
    counter!("emotion_gateway_sync_events_withheld_total").absolute(sync.events_withheld);
    counter!("emotion_gateway_sync_summaries_shipped_total").absolute(sync.summaries_shipped);
    counter!("emotion_gateway_sync_batches_total").absolute(sync.batches);
    counter!("emotion_gateway_sync_failures_total").absolute(sync.failures);
    gauge!("emotion_gateway_sync_dead_letter_events").set(sync.dead_letters as f64);
    counter!("emotion_gateway_sync_events_dead_lettered_total")
        .absolute(sync.dead_lettered_since_start);
    counter!("emotion_gateway_sync_other_refusals_total").absolute(sync.other_refusals);

    for (endpoint, n) in c.ws_connections() {
        gauge!("emotion_gateway_websocket_connections", "endpoint" => endpoint.path())
            .set(n as f64);
    }
    gauge!("emotion_gateway_mqtt_connections").set(c.mqtt_connections() as f64);
    gauge!("emotion_gateway_event_stream_users").set(state.connections.active_users() as f64);

    for (kind, n) in state.live.alerts_raised() {
        counter!("emotion_gateway_alerts_total", "kind" => kind.as_str()).absolute(n);
    }

    let (users, evicted, sessions) = {
        let an = state.analyzer.lock();
        (an.resident_users(), an.evicted_users(), an.live_sessions())
    };
    gauge!("emotion_gateway_analyzer_users").set((users + evicted) as f64);
    gauge!("emotion_gateway_analyzer_evicted_users").set(evicted as f64);
    gauge!("emotion_gateway_analyzer_live_sessions").set(sessions as f64);

    let r = state.devices.counters();
    for (outcome, n) in [
        ("received", r.received),
        ("stored", r.stored),
        ("no_emotion", r.no_emotion),
        ("failed", r.failed),
    ] {
        counter!("emotion_gateway_device_readings_total", "outcome" => outcome).absolute(n);
    }
    if let Some(m) = state.devices.ble() {
        gauge!("emotion_gateway_ble_pairings").set(m.pairings().len() as f64);
    }
}

/// HELP lines, once per process.
fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_gauge!("emotion_gateway_uptime_seconds", "Seconds since the gateway started.");
        describe_counter!(
            "emotion_gateway_events_in_total",
            "Events newly stored, by the transport they came over and their source."
        );
        describe_counter!(
            "emotion_gateway_events_out_total",
            "Analyzed events delivered back out (processed replies, the dashboard's live stream, MQTT analysis), by transport and source."
        );
        describe_counter!(
            "emotion_gateway_events_duplicate_total",
            "Events whose event_id was already stored (not stored again)."
        );
        describe_counter!(
            "emotion_gateway_events_rejected_total",
            "Events and readings refused by validation or because their user was erased."
        );
        describe_counter!(
            "emotion_gateway_rate_limited_total",
            "Requests, events and readings refused because their principal was over its rate limit, by transport (http, websocket)."
        );
        describe_counter!(
            "emotion_gateway_mqtt_rejected_total",
            "MQTT messages not stored, by kind (too_large, invalid_json, validation_error, unknown_source, not_authorized, no_emotion, plugin_error, erased_user, rate_limited)."
        );
        describe_counter!(
            "emotion_http_connections_refused_total",
            "HTTP connections closed at once because the connection limits and the overflow lane were full, by the limit hit."
        );
        describe_counter!(
            "emotion_http_overflow_refusals_total",
            "Requests answered 503 in the overflow lane (beyond the connection limits; /health is still answered)."
        );
        describe_counter!(
            "emotion_http_tls_handshake_failures_total",
            "TLS handshakes on the HTTP listener that failed or timed out (wrong CA, plain text, no client certificate, …)."
        );
        describe_counter!("emotion_gateway_buffer_flushes_total", "Group commits (one flush each).");
        describe_counter!(
            "emotion_gateway_buffer_flushed_events_total",
            "Events written by group commits."
        );
        describe_histogram!(
            FLUSH_SECONDS,
            metrics::Unit::Seconds,
            "Time one group commit (append + flush) took."
        );
        describe_gauge!(
            "emotion_gateway_ingest_queue_events",
            "Events waiting for the buffer writer."
        );
        describe_gauge!("emotion_gateway_buffer_events", "Events in the durable buffer.");
        describe_gauge!(
            "emotion_gateway_analyzer_evicted_users",
            "Users whose analysis state left RAM after analyzer.user_idle (stored in the buffer)."
        );
        describe_gauge!("emotion_gateway_buffer_batches", "Group-commit batches in the buffer.");
        describe_gauge!("emotion_gateway_buffer_bytes", "Size of the buffer on disk.");
        describe_counter!(
            "emotion_gateway_buffer_corrupt_batches_skipped_total",
            "Damaged batches detected and skipped when reading the buffer."
        );
        describe_gauge!(
            "emotion_gateway_buffer_acknowledged_lost_events",
            "Acknowledged events lost to damage of the buffer (exact, over the store's life)."
        );
        describe_gauge!(
            "emotion_gateway_buffer_repairs",
            "Times the buffer was found damaged, moved aside and rebuilt from what could be salvaged."
        );
        describe_counter!("emotion_gateway_plugin_calls_total", "Calls into a plugin (batches).");
        describe_counter!("emotion_gateway_plugin_readings_total", "Readings routed to a plugin.");
        describe_counter!(
            "emotion_gateway_plugin_failures_total",
            "Plugin calls that failed as a whole (trap, timeout, memory, garbage)."
        );
        describe_counter!(
            "emotion_gateway_plugin_errors_total",
            "Readings a plugin answered with an error (including refusals while quarantined)."
        );
        describe_gauge!(
            "emotion_gateway_plugin_reading_latency_seconds",
            "Mean wall time per reading of a plugin's successful calls."
        );
        describe_gauge!(
            "emotion_gateway_plugin_state",
            "1 for the plugin's current state (running, quarantined, rejected), 0 for the others."
        );
        describe_gauge!("emotion_gateway_sync_enabled", "1 when central sync is on.");
        describe_gauge!("emotion_gateway_sync_connected", "1 while connected to the central database.");
        describe_gauge!("emotion_gateway_sync_lag_events", "Events not yet shipped to the central database.");
        describe_gauge!(
            "emotion_gateway_sync_lag_seconds",
            "Age of the oldest event not yet shipped."
        );
        describe_counter!("emotion_gateway_sync_events_shipped_total", "Events shipped centrally.");
        describe_counter!(
            "emotion_gateway_sync_events_withheld_total",
            "Events not shipped because their user has not consented to analytics."
        );
        describe_counter!("emotion_gateway_sync_summaries_shipped_total", "Credit/risk summaries shipped.");
        describe_counter!("emotion_gateway_sync_batches_total", "Sync transactions committed.");
        describe_counter!("emotion_gateway_sync_failures_total", "Failed sync attempts.");
        describe_gauge!(
            "emotion_gateway_sync_dead_letter_events",
            "Events in the dead-letter store: refused by the central database for their content and passed over."
        );
        describe_counter!(
            "emotion_gateway_sync_events_dead_lettered_total",
            "Events dead-lettered since the gateway started."
        );
        describe_counter!(
            "emotion_gateway_sync_other_refusals_total",
            "Consent, summary and erasure writes the central database refused for their content."
        );
        describe_gauge!(
            "emotion_gateway_websocket_connections",
            "Open WebSocket connections, by endpoint."
        );
        describe_gauge!("emotion_gateway_mqtt_connections", "Open MQTT client connections.");
        describe_gauge!(
            "emotion_gateway_event_stream_users",
            "Users with an open /ws/emotions/stream connection."
        );
        describe_counter!(
            "emotion_gateway_alerts_total",
            "Alerts raised (debounced per user and kind), by kind."
        );
        describe_gauge!("emotion_gateway_analyzer_users", "Users known to the analyzer.");
        describe_gauge!(
            "emotion_gateway_analyzer_live_sessions",
            "Sessions with live analyzer state."
        );
        describe_counter!(
            "emotion_gateway_device_readings_total",
            "Serial and BLE readings, by outcome."
        );
        describe_gauge!("emotion_gateway_ble_pairings", "Paired BLE devices.");
    });
}
