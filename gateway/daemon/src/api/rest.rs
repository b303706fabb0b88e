//! REST endpoints.

use axum::Json;
use axum::extract::{Path, Query, State};
use emotion_core::event::{check_identifier, parse_timestamp_str};
use emotion_core::{Analyzer, Source};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::buffer::EventQuery;
use crate::state::AppState;

/// Most events one listing returns.
const MAX_LIMIT: usize = 100_000;

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Liveness and state",
    description = "Public (no token): status, uptime, buffer size, group-commit figures, analyzer size, connections, plugin and sync state.",
    responses(
        (status = 200, description = "Status, uptime, buffer, ingest counters, analyzer size, connections, plugins, sync", body = serde_json::Value),
    )
)]
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let (users, evicted, live_sessions) = {
        let an = state.analyzer.lock();
        (an.resident_users(), an.evicted_users(), an.live_sessions())
    };
    let damage = state.store.damage();
    let mut warnings = Vec::new();
    if damage.acknowledged_lost > 0 {
        warnings.push(format!(
            "the buffer was damaged: {} acknowledged events could not be recovered (see buffer_damage)",
            damage.acknowledged_lost
        ));
    }
    Json(json!({
        "status": "ok",
        "gateway_id": state.config.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "warnings": warnings,
        "buffer": state.store.stats(),
        "buffer_damage": damage,
        "ingest": state.counters.snapshot(),
        "analyzer": {"users": users + evicted, "resident_users": users, "evicted_users": evicted, "live_sessions": live_sessions},
        "connections": {
            "event_streams": state.connections.active_connections(),
            "users": state.connections.active_users(),
        },
        "plugins": plugin_summary(&state),
        "sync": state.sync.view(chrono::Utc::now(), state.store.as_ref()),
    }))
}

/// `GET /api/mqtt`: the MQTT transport's listeners, clients and upstream link.
#[utoipa::path(
    get,
    path = "/api/mqtt",
    tag = "mqtt",
    summary = "MQTT: connected clients, per-device counts, upstream connection state",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "enabled; embedded (listeners, connections, per-device counts, rejections); upstream (state, counters)", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn mqtt(State(state): State<AppState>) -> Json<Value> {
    Json(super::status::mqtt(&state))
}

/// `GET /api/sync`: the central sync's progress and lag, and the events the
/// central database refused (dead letters).
#[utoipa::path(
    get,
    path = "/api/sync",
    tag = "sync",
    summary = "The central sync's progress and lag",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "enabled, connected, cursor, lag_events, lag_seconds, counters, last error; dead_letters (events refused centrally for their content and passed over), dead_letters_recent (the newest ten: event_id, user_id, position, sqlstate, message, at), other_refusals", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn sync(State(state): State<AppState>) -> Json<Value> {
    Json(super::status::sync(&state))
}

/// Counts of plugins by state, for `/health`.
fn plugin_summary(state: &AppState) -> Value {
    let (mut running, mut quarantined, mut rejected) = (0, 0, 0);
    for p in state.plugins.status() {
        match p.state {
            emotion_plugin_host::PluginState::Running => running += 1,
            emotion_plugin_host::PluginState::Quarantined { .. } => quarantined += 1,
            emotion_plugin_host::PluginState::Rejected { .. } => rejected += 1,
        }
    }
    json!({"running": running, "quarantined": quarantined, "rejected": rejected})
}

pub(super) fn checked_id(kind: &str, id: &str) -> Result<(), ApiError> {
    check_identifier(id).map_err(|m| ApiError::BadRequest(format!("{kind} id {m}")))
}

#[utoipa::path(
    get,
    path = "/api/users/{id}/summary",
    tag = "users",
    summary = "The analyzer's view of a user",
    params(("id" = String, Path, description = "User id")),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "State, trajectory, recent anomalies, risk score, metrics", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "No events for this user", body = super::error::ErrorBody),
    )
)]
pub async fn user_summary(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    let summary = {
        let mut an = state.analyzer.lock();
        crate::checkpoint::make_resident(&mut an, state.store.as_ref(), &id);
        an.user_summary(&id)
    };
    let summary =
        summary.ok_or_else(|| ApiError::NotFound(format!("no events for user `{id}`")))?;
    Ok(Json(json!(summary)))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/users/{id}/events",
    tag = "users",
    summary = "A user's stored events, in order",
    params(
        ("id" = String, Path, description = "User id"),
        ("from" = Option<String>, Query, description = "Only events at or after this time (event timestamp)"),
        ("to" = Option<String>, Query, description = "Only events at or before this time"),
        ("limit" = Option<usize>, Query, description = "Most events returned (default 1000, max 100000)"),
    ),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{user_id, count, events}", body = serde_json::Value),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn user_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    let parse = |name: &str, v: Option<String>| {
        v.map(|s| parse_timestamp_str(&s).map_err(|m| ApiError::BadRequest(format!("{name}: {m}"))))
            .transpose()
    };
    let query = EventQuery {
        from: parse("from", q.from)?,
        to: parse("to", q.to)?,
        limit: q.limit.unwrap_or(1000).min(MAX_LIMIT),
    };
    let store = state.store.clone();
    let user = id.clone();
    let events = tokio::task::spawn_blocking(move || store.user_events(&user, &query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(
        json!({"user_id": id, "count": events.len(), "events": events}),
    ))
}

/// A session's analysis. Sessions idle long enough to have left the analyzer's
/// memory are rebuilt from the buffer.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    tag = "users",
    summary = "A session's metrics and trajectory",
    params(("id" = String, Path, description = "Session id")),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{live, session}: rebuilt from the buffer if the session went idle", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "No events for this session", body = super::error::ErrorBody),
    )
)]
pub async fn session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_id("session", &id)?;
    if let Some(s) = state.analyzer.lock().session_summary(&id) {
        return Ok(Json(json!({"live": true, "session": s})));
    }
    let store = state.store.clone();
    let sid = id.clone();
    let events = tokio::task::spawn_blocking(move || store.session_events(&sid, MAX_LIMIT))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no events for session `{id}`")));
    }
    let mut an = Analyzer::new(state.config.analyzer_config());
    for e in &events {
        an.ingest(e);
    }
    let summary = an
        .session_summary(&id)
        .ok_or_else(|| ApiError::Internal("rebuilt session has no summary".into()))?;
    Ok(Json(json!({"live": false, "session": summary})))
}

#[utoipa::path(
    get,
    path = "/api/sources",
    tag = "users",
    summary = "The 8 sources and their confidence ranges",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{sources: [{source, confidence_range}]}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn sources() -> Json<Value> {
    let list: Vec<Value> = Source::ALL
        .into_iter()
        .map(|s| {
            let (lo, hi) = s.confidence_range();
            json!({"source": s.as_str(), "confidence_range": [lo, hi]})
        })
        .collect();
    Json(json!({"sources": list}))
}
