//! Raw readings for the plugins: `/ws/readings` and `GET /api/plugins`.
//!
//! A reading goes to the plugin handling its source (batched with others by
//! the host), the event it yields goes through the buffer and analyzer like
//! any other, and the reply says what came of it:
//!
//! - `{"status":"processed","event_id",…,"event":{…},"analysis":{…},"metrics":{…}}`
//! - `{"status":"no_emotion"}` when the plugin found nothing to report;
//! - `{"status":"error","error":KIND,"message":…}` with KIND `invalid_json`,
//!   `validation_error`, or the host's kind (`no_plugin`, `quarantined`,
//!   `plugin_failed`, `plugin_error`, `invalid_emotion`, `overloaded`, …).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use emotion_core::reading::RawReading;
use serde_json::{Value, json};

use super::ws::{
    Mode, ReplyFuture, ReplyStyle, TokenOnly, accepted_reply, error_reply, forbidden_user_reply,
    ingest_error_reply, ready, serve, upgrade,
};
use crate::auth::{Principal, Scope};
use crate::readings::ReadingOutcome;
use crate::state::AppState;
use crate::telemetry::{Transport, WsEndpoint};

#[utoipa::path(
    get,
    path = "/ws/readings",
    tag = "websocket",
    summary = "WebSocket: raw readings for the plugins",
    params(("token" = Option<String>, Query, description = "A token of `ingest` scope (or send it as a header)")),
    security(("token" = []), ("bearer" = []), ("query_token" = [])),
    responses(
        (status = 101, description = "Switching protocols. Each message is a reading `{user_id, source, payload, …}`; each reply `processed` (with the plugin's event), `no_emotion` or an error. A bad token closes with 1008."),
    )
)]
pub async fn readings(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(q): Query<TokenOnly>,
    headers: HeaderMap,
    conn: Option<Extension<crate::edge::ConnInfo>>,
) -> Response {
    upgrade(
        ws,
        state,
        conn.map(|Extension(c)| c),
        q.token.as_deref(),
        &headers,
        Scope::Ingest,
        WsEndpoint::Readings,
        |socket, state, principal| serve(socket, state, principal, Mode::Readings(handle_reading)),
    )
}

/// Validate one reading and hand it to the host now (so the connection's
/// order is the submission order); the returned future resolves to its reply.
fn handle_reading(state: &AppState, principal: &Principal, text: &str) -> ReplyFuture {
    let body: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return ready(error_reply("invalid_json", "Message must be valid JSON")),
    };
    // A principal bound to one user fills it in for readings that omit it.
    let only_user = principal
        .users
        .as_deref()
        .filter(|u| u.len() == 1)
        .and_then(|u| u.first());
    let reading = match RawReading::from_json(&body, only_user.map(String::as_str)) {
        Ok(r) => r,
        Err(e) => {
            state.counters.record_rejected();
            let reply = json!({"status": "error", "error": "validation_error", "message": e.to_string(), "fields": e.errors});
            return ready(reply.to_string());
        }
    };
    if !principal.may_act_for(&reading.user_id) {
        state.counters.record_rejected();
        return ready(forbidden_user_reply(principal, &reading.user_id));
    }
    let outcome = state.readings.submit(reading, Transport::Readings, None);
    let counters = state.counters.clone();
    Box::pin(async move {
        match outcome.await {
            ReadingOutcome::Plugin(e) => error_reply(e.kind(), &e.to_string()),
            ReadingOutcome::NoEmotion => json!({"status": "no_emotion"}).to_string(),
            ReadingOutcome::Ingest(e) => ingest_error_reply(&e),
            ReadingOutcome::Stored(accepted) => {
                if !accepted.is_duplicate() {
                    counters.record_out(Transport::Readings, accepted.event.source);
                }
                // The processed reply, plus the event the plugin made.
                accepted_reply(&accepted, ReplyStyle::ProcessedWithEvent)
            }
        }
    })
}

/// `GET /api/plugins`: every plugin with version, sources, state, counters,
/// its replacement's canary, which plugin serves each source, and the batch
/// threads of each served source.
#[utoipa::path(
    get,
    path = "/api/plugins",
    tag = "plugins",
    summary = "Every plugin: version, sources, state, counters, canary of a replacement; routes and batch workers per source",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{plugins, routes, workers}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn plugins(State(state): State<AppState>) -> Json<Value> {
    Json(super::status::plugins(&state))
}
