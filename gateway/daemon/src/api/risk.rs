//! The risk sweep's result (`GET /api/risk`, `POST /api/risk/sweep`), a
//! user's summary report (`GET /api/users/{id}/report`) and their latest
//! fused estimate (`GET /api/users/{id}/fused`).

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::rest::checked_id;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RiskQuery {
    /// Only flags of this level: `medium` or `high`.
    level: Option<String>,
    /// Accepted here so that `?token=` works; checked by the middleware.
    #[allow(dead_code)]
    token: Option<String>,
}

/// The JSON of a sweep result, filtered to `level`.
fn risk_json(state: &AppState, level: Option<&str>) -> Result<Value, ApiError> {
    let level = match level {
        None => None,
        Some("medium") => Some(emotion_core::analyzer::RiskLevel::Medium),
        Some("high") => Some(emotion_core::analyzer::RiskLevel::High),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "level must be `medium` or `high`, got `{other}`"
            )));
        }
    };
    let cfg = &state.config.risk_sweep;
    let settings = json!({
        "enabled": cfg.enabled,
        "interval": cfg.interval.to_string(),
        "lookback": cfg.lookback.to_string(),
        "min_events": cfg.min_events,
        "min_share": cfg.min_share,
    });
    Ok(match state.risk.latest() {
        None => json!({"sweep": settings, "swept_at": null, "count": 0, "flagged": []}),
        Some(r) => {
            let flagged: Vec<_> = r
                .flagged
                .iter()
                .filter(|f| level.is_none_or(|l| f.level == l))
                .collect();
            json!({
                "sweep": settings,
                "swept_at": r.swept_at,
                "took_ms": r.took_ms,
                "unreadable": r.unreadable,
                "count": flagged.len(),
                "flagged": flagged,
            })
        }
    })
}

#[utoipa::path(
    get,
    path = "/api/risk",
    tag = "users",
    summary = "Users the latest risk sweep flags, with their indicators and reasons",
    description = "The sweep runs every `risk_sweep.interval` over every user seen within `risk_sweep.lookback`. \
        Indicators: `high_stress`, `depression_indicators`, `anxiety_pattern` (a share of the recent events in the \
        region), `emotional_volatility`, `emotional_crisis`, `risk_score` (0.7 or more). Closed to tokens bound to users.",
    params(RiskQuery),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{sweep, swept_at, count, flagged: [{user_id, level, risk_score, indicators: [{indicator, reason}], events_considered, last_seen}]}", body = serde_json::Value),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope, or is bound to users", body = super::error::ErrorBody),
    )
)]
pub async fn risk(
    State(state): State<AppState>,
    Query(q): Query<RiskQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(risk_json(&state, q.level.as_deref())?))
}

#[utoipa::path(
    post,
    path = "/api/risk/sweep",
    tag = "users",
    summary = "Run the risk sweep now and return its result (admin)",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "As GET /api/risk", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the admin scope", body = super::error::ErrorBody),
    )
)]
pub async fn sweep(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let handles = state.risk_handles();
    let rule = state.config.risk_sweep.rule();
    tokio::task::spawn_blocking(move || crate::risk::sweep_now(&handles, &rule, Utc::now()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(risk_json(&state, None)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReportQuery {
    /// Days of the report, today included: 1 to 30 (default 7).
    days: Option<u32>,
    /// Accepted here so that `?token=` works; checked by the middleware.
    #[allow(dead_code)]
    token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/users/{id}/report",
    tag = "users",
    summary = "A user's summary report over the last days",
    description = "Counts, averages and the daily series of the period, the emotion mix, trajectory, patterns, \
        current state, risk score and risk-sweep indicators, anomalies, recommendations and the credit impact \
        (the credit summary of the same window). Computed from the analyzer's state, not by rescanning events. \
        The dashboard prints it at `/dashboard/report.html?user=ID&days=7`.",
    params(("id" = String, Path, description = "User id"), ReportQuery),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The report", body = serde_json::Value),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "No events for this user", body = super::error::ErrorBody),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    let days = q.days.unwrap_or(7);
    if !(1..=emotion_core::credit::HISTORY_DAYS).contains(&days) {
        return Err(ApiError::BadRequest(format!(
            "days must be between 1 and {}, got {days}",
            emotion_core::credit::HISTORY_DAYS
        )));
    }
    let report = {
        let mut an = state.analyzer.lock();
        crate::checkpoint::make_resident(&mut an, state.store.as_ref(), &id);
        an.user_report(&id, Utc::now(), days)
    };
    let report = report.ok_or_else(|| ApiError::NotFound(format!("no events for user `{id}`")))?;
    Ok(Json(json!(report)))
}

#[utoipa::path(
    get,
    path = "/api/users/{id}/fused",
    tag = "users",
    summary = "A user's latest fused estimate of valence and arousal",
    description = "Made from the user's latest event of each source within `fusion.window` when two or more \
        sources contribute: valence, arousal, the nearest label, confidence, agreement, and each source's \
        part. The same estimates stream on MQTT `emotions/{user_id}/fused` and on the dashboard.",
    params(("id" = String, Path, description = "User id")),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{user_id, valence, arousal, emotion_label, confidence, agreement, sources: [source names], timestamp, contributions: [{source, valence, arousal, confidence, valence_share, arousal_share, age_ms}]}", body = serde_json::Value),
        (status = 400, description = "Bad user id", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "No fused estimate (fewer than two sources recently, or fusion off)", body = super::error::ErrorBody),
    )
)]
pub async fn fused(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    let fused = state.analyzer.lock().fused_detail(&id);
    let (fused, parts) = fused.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no fused estimate for user `{id}`: it needs events from two or more sources within {}",
            state.config.fusion.window
        ))
    })?;
    let mut body = json!(fused);
    body["user_id"] = json!(id);
    body["contributions"] = json!(parts);
    Ok(Json(body))
}
