//! The HTTP and WebSocket API. `router` builds it without a socket, so tests
//! can call it directly.

mod audit;
mod dashboard;
mod devices;
mod error;
mod export;
mod metrics;
pub mod openapi;
mod privacy;
mod readings;
mod rest;
mod risk;
mod status;
mod ws;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;

pub use error::ApiError;

use crate::auth::{Principal, Scope, presented_token};
use crate::edge::ConnInfo;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/api/users/{id}/summary", get(rest::user_summary))
        .route("/api/users/{id}/report", get(risk::report))
        .route("/api/users/{id}/fused", get(risk::fused))
        .route("/api/risk", get(risk::risk))
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
        .route("/api/audit", get(audit::audit))
        .route("/api/risk/sweep", post(risk::sweep))
        .route("/api/pseudonyms", get(privacy::pseudonyms))
        .route("/api/ble/scan", post(devices::scan))
        .route("/api/ble/devices", get(devices::ble_devices))
        .route("/api/ble/devices/{address}/drop", post(devices::drop_link))
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
    guarded(state, req, next, Scope::Read).await
}

async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    guarded(state, req, next, Scope::Admin).await
}

/// Authorize, run, and write the audit entry of a request that reads a
/// user's data, exports, or is an administrative action (refusals included).
async fn guarded(
    state: AppState,
    req: Request,
    next: Next,
    scope: Scope,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_owned();
    let audited = scope == Scope::Admin
        || path.starts_with("/api/users/")
        || EVERY_USER_PATHS.iter().any(|p| path.starts_with(p));
    let action = format!(
        "{} {}",
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map_or(path.as_str(), MatchedPath::as_str)
    );
    let user = user_of_path(&path).map(str::to_owned);
    let (principal, result) = match authorize(&state, &req, scope) {
        Ok(p) => {
            let resp = next.run(req).await;
            let outcome = resp.status().as_u16().to_string();
            (p.name, Ok((resp, outcome)))
        }
        Err((name, e)) => (name, Err(e)),
    };
    if audited {
        let outcome = match &result {
            Ok((_, status)) => status.clone(),
            Err(e) => format!("refused: {e}"),
        };
        let audit = state.audit.clone();
        let write = move || audit.record(&principal, &action, user.as_deref(), &outcome);
        if let Err(e) = tokio::task::spawn_blocking(write).await {
            tracing::error!(error = %e, "audit task failed");
        }
    }
    result.map(|(resp, _)| resp)
}

/// Authenticate (token, or the connection's client certificate), check the
/// scope, take one from the principal's rate limit, and keep a principal
/// bound to users to their own data.
/// The name an audit entry gives a request whose token did not check out.
const UNAUTHENTICATED: &str = "-";

fn authorize(
    state: &AppState,
    req: &Request,
    scope: Scope,
) -> Result<Principal, (String, ApiError)> {
    let q: Option<TokenQuery> = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok());
    let token = presented_token(q.as_ref().and_then(|q| q.token.as_deref()), req.headers());
    let conn = req.extensions().get::<ConnInfo>();
    let principal = state
        .tokens
        .authorize_conn(token, conn, scope)
        .map_err(|e| (UNAUTHENTICATED.to_owned(), e.into()))?;
    let refuse = |e: ApiError| Err((principal.name.clone(), e));
    if let Err(wait) = principal.take(1.0) {
        crate::auth::count_rate_limited("http");
        return refuse(ApiError::RateLimited(wait));
    }
    if principal.users.is_some() {
        let path = req.uri().path();
        match user_of_path(path) {
            Some(user) if principal.may_act_for(user) => {}
            Some(user) => return refuse(ApiError::Forbidden(principal.bound_message(user))),
            None if EVERY_USER_PATHS.iter().any(|p| path.starts_with(p)) => {
                return refuse(ApiError::Forbidden(format!(
                    "`{}` is bound to users; this endpoint covers every user",
                    principal.name
                )));
            }
            None => {}
        }
    }
    Ok(principal)
}

/// Read endpoints over every user's data, closed to bound principals.
const EVERY_USER_PATHS: &[&str] = &[
    "/api/export",
    "/api/sessions/",
    "/api/dashboard/ticket",
    "/api/risk",
];

/// The `{id}` of `/api/users/{id}/…`.
fn user_of_path(path: &str) -> Option<&str> {
    path.strip_prefix("/api/users/")?.split('/').next()
}
