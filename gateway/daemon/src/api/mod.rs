//! The HTTP and WebSocket API. `router` builds it without a socket, so tests
//! can call it directly.

mod dashboard;
mod devices;
mod error;
mod export;
mod metrics;
pub mod openapi;
mod privacy;
mod readings;
mod rest;
mod status;
mod ws;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;

pub use error::ApiError;

use crate::auth::{Scope, presented_token};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/api/users/{id}/summary", get(rest::user_summary))
        .route("/api/users/{id}/events", get(rest::user_events))
        .route("/api/sessions/{id}", get(rest::session))
        .route("/api/sources", get(rest::sources))
        .route("/api/plugins", get(readings::plugins))
        .route("/api/sync", get(rest::sync))
        .route("/api/mqtt", get(rest::mqtt))
        .route("/api/devices", get(devices::devices))
        .route("/api/users/{id}/consent", get(privacy::get_consent))
        .route("/api/export", get(export::export))
        .route("/api/dashboard/ticket", post(dashboard::ticket))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_read));

    let admin = Router::new()
        .route("/api/users/{id}/consent", put(privacy::put_consent))
        .route("/api/users/{id}/data", delete(privacy::erase))
        .route("/api/ble/scan", post(devices::scan))
        .route("/api/ble/devices", get(devices::ble_devices))
        .route("/api/ble/pair", post(devices::pair))
        .route("/api/ble/pair/{address}", delete(devices::unpair))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));

    Router::new()
        .route("/health", get(rest::health))
        // WebSockets check their token themselves: a bad one must get close
        // code 1008 after the upgrade, not an HTTP error before it.
        .route("/ws/emotions/stream", get(ws::stream))
        .route("/ws/emotions/metrics", get(ws::metrics))
        .route("/ws/emotions", get(ws::legacy))
        .route("/ws/readings", get(readings::readings))
        // Opened with a one-time ticket (or a header token); see dashboard.rs.
        .route("/ws/dashboard", get(dashboard::ws))
        // The dashboard and the API docs are public pages; the dashboard asks
        // for a token, the docs hold no data.
        .route("/", get(dashboard::index))
        .route("/dashboard/{*file}", get(dashboard::dashboard_file))
        .route("/docs", get(dashboard::docs))
        .route("/docs/{*file}", get(dashboard::docs_file))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .merge(read)
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

/// The `token` query parameter, wherever it appears.
#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn require_read(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&state, &req, Scope::Read)?;
    Ok(next.run(req).await)
}

async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&state, &req, Scope::Admin)?;
    Ok(next.run(req).await)
}

fn authorize(state: &AppState, req: &Request, scope: Scope) -> Result<(), ApiError> {
    let q: Option<TokenQuery> = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok());
    let token = presented_token(q.as_ref().and_then(|q| q.token.as_deref()), req.headers());
    state.tokens.authorize(token, scope)?;
    Ok(())
}
