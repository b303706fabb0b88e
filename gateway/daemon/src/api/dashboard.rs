//! The dashboard: its files (embedded in the binary, served at `/`), the
//! ticket that opens its WebSocket, and the WebSocket itself.
//!
//! # Authentication
//!
//! The page asks for a token of `read` scope in a form and sends it as an
//! `x-auth-token` header on every HTTP request; it never puts it in a URL.
//! A browser cannot set headers on a WebSocket, so the page first asks
//! `POST /api/dashboard/ticket` (with the header) for a one-time ticket and
//! opens `/ws/dashboard?ticket=…` with it. A ticket is 256 random bits, valid
//! for 30 seconds and for one connection; once used or expired it is
//! worthless, so it does no harm in an access log. Non-browser clients may
//! open the socket with the token in an `x-auth-token` or
//! `Authorization: Bearer` header instead. A `?token=` query parameter is
//! deliberately *not* accepted here. Without a valid ticket or token the
//! socket is closed with code 1008, like the other WebSockets.
//!
//! # Protocol (server to client; the client sends nothing)
//!
//! - `{"type":"hello","gateway_id","version","server_time","alerts":[…],"risk":{…},"metrics":{…}}` at once;
//! - `{"type":"events","events":[{event_id,user_id,session_id,source,label,valence,arousal,confidence,timestamp,transport,anomaly,risk_score,risks}],"skipped":N}`
//!   every 250 ms when anything happened: at most 100 events per message;
//!   `skipped` counts events not sent (beyond that, or lost because the
//!   client fell behind), so a browser is never flooded;
//! - `{"type":"alert","alert":{kind,severity,user_id,…,message}}` as alerts are raised;
//! - `{"type":"metrics",…}` every second: the global metrics of
//!   `/ws/emotions/metrics`, connections, live sessions and the risk board;
//! - `{"type":"status","plugins","sync","devices","mqtt","buffer","risk_sweep"}` every 5 s: the bodies of
//!   `GET /api/plugins`, `/api/sync` and `/api/devices`, and the latest risk
//!   sweep (its first 50 flagged users).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use emotion_core::analyzer::{Analysis, regions};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, status};
use crate::auth::{AuthError, Scope, presented_token};
use crate::live::{LiveEvent, TICKET_TTL};
use crate::state::AppState;
use crate::telemetry::{Transport, WsEndpoint};

/// Most events in one `events` message.
const MAX_EVENTS_PER_MESSAGE: usize = 100;
const EVENTS_EVERY: Duration = Duration::from_millis(250);
const METRICS_EVERY: Duration = Duration::from_secs(1);
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Users named per risk indicator (the count covers all).
const USERS_PER_INDICATOR: usize = 25;
/// Users whose current risk is read from the analyzer when a dashboard
/// connects; beyond that the board fills from live events only.
const MAX_SEEDED_USERS: usize = 50_000;

/// Content-Security-Policy of the pages: everything from this gateway only,
/// so nothing is fetched from elsewhere even by mistake.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A file compiled into the binary.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($ct:expr, $path:literal) => {
        Asset {
            content_type: $ct,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The files under `/dashboard/`.
fn dashboard_asset(path: &str) -> Option<Asset> {
    Some(match path {
        "app.js" => asset!(JS, "dashboard/app.js"),
        "report.html" => asset!(HTML, "dashboard/report.html"),
        "report.js" => asset!(JS, "dashboard/report.js"),
        "style.css" => asset!(CSS, "dashboard/style.css"),
        "vendor/uPlot.iife.min.js" => asset!(JS, "dashboard/vendor/uPlot.iife.min.js"),
        "vendor/uPlot.min.css" => asset!(CSS, "dashboard/vendor/uPlot.min.css"),
        "vendor/uPlot.LICENSE" => asset!(TEXT, "dashboard/vendor/uPlot.LICENSE"),
        _ => return None,
    })
}

/// The files under `/docs/`.
fn docs_asset(path: &str) -> Option<Asset> {
    Some(match path {
        "docs.js" => asset!(JS, "dashboard/docs/docs.js"),
        "swagger-ui-bundle.js" => asset!(JS, "dashboard/vendor/swagger-ui/swagger-ui-bundle.js"),
        "swagger-ui.css" => asset!(CSS, "dashboard/vendor/swagger-ui/swagger-ui.css"),
        "LICENSE" => asset!(TEXT, "dashboard/vendor/swagger-ui/LICENSE"),
        "NOTICE" => asset!(TEXT, "dashboard/vendor/swagger-ui/NOTICE"),
        _ => return None,
    })
}

fn serve(asset: Asset) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // The files change only with the binary; `no-cache` makes the
            // browser revalidate so an upgrade shows at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response();
    if asset.content_type == HTML {
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        resp.headers_mut().insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    summary = "The dashboard (HTML page)",
    description = "The live dashboard, embedded in the binary. Public; it asks for a token of `read` scope in a form.",
    responses((status = 200, description = "The page", content_type = "text/html"))
)]
pub async fn index() -> Response {
    serve(asset!(HTML, "dashboard/index.html"))
}

#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "dashboard",
    summary = "The dashboard's scripts, styles and vendored chart library",
    params(("file" = String, Path, description = "`app.js`, `report.html` (a user's printable report: `?user=ID&days=7`), `report.js`, `style.css`, `vendor/uPlot.iife.min.js`, `vendor/uPlot.min.css`, `vendor/uPlot.LICENSE`")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = super::error::ErrorBody),
    )
)]
pub async fn dashboard_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    dashboard_asset(&file)
        .map(serve)
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard file `{file}`")))
}

#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    summary = "Interactive API documentation",
    description = "Swagger UI over `/api/openapi.json`, served from the binary: it works with no network access.",
    responses((status = 200, description = "The page", content_type = "text/html"))
)]
pub async fn docs() -> Response {
    serve(asset!(HTML, "dashboard/docs/index.html"))
}

#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    summary = "The documentation viewer's files",
    params(("file" = String, Path, description = "`docs.js`, `swagger-ui-bundle.js`, `swagger-ui.css`, `LICENSE`, `NOTICE`")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = super::error::ErrorBody),
    )
)]
pub async fn docs_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    docs_asset(&file)
        .map(serve)
        .ok_or_else(|| ApiError::NotFound(format!("no docs file `{file}`")))
}

/// The answer of `POST /api/dashboard/ticket`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ticket {
    /// 64 hex digits; use it once, within `expires_in_seconds`.
    pub ticket: String,
    pub expires_in_seconds: u64,
    /// Where to open the WebSocket with it (relative to the gateway).
    pub url: String,
}

#[utoipa::path(
    post,
    path = "/api/dashboard/ticket",
    tag = "dashboard",
    summary = "A one-time ticket for the dashboard's WebSocket",
    description = "Browsers cannot set headers on a WebSocket, and a token in a URL ends up in logs. \
        This returns a ticket (valid 30 s, for one connection) to open `/ws/dashboard?ticket=…` with.",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "A fresh ticket", body = Ticket),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the read scope", body = super::error::ErrorBody),
    )
)]
pub async fn ticket(State(state): State<AppState>) -> Json<Ticket> {
    let ticket = state.live.issue_ticket();
    Json(Ticket {
        url: format!("/ws/dashboard?ticket={ticket}"),
        ticket,
        expires_in_seconds: TICKET_TTL.as_secs(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TicketQuery {
    /// A ticket from `POST /api/dashboard/ticket`.
    ticket: Option<String>,
}

#[utoipa::path(
    get,
    path = "/ws/dashboard",
    tag = "websocket",
    summary = "WebSocket: the dashboard's live feed",
    description = "Upgrade to a WebSocket. Authenticate with `?ticket=` (from `POST /api/dashboard/ticket`) or an \
        `x-auth-token` / `Authorization: Bearer` header with a token of `read` scope (`?token=` is not accepted here). \
        A bad ticket or token closes the socket with code 1008. Server messages: `hello`, `events` (every 250 ms, at most \
        100 per message plus a `skipped` count), `alert`, `metrics` (every second: global metrics, connections, \
        live sessions, risk indicators), `status` (every 5 s: plugins, sync, devices, the latest risk sweep).",
    params(TicketQuery),
    responses(
        (status = 101, description = "Switching protocols to WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade request"),
    )
)]
pub async fn ws(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(q): Query<TicketQuery>,
    headers: HeaderMap,
    conn: Option<axum::Extension<crate::edge::ConnInfo>>,
) -> Response {
    // A ticket is checked (and used up) before the upgrade; the refusal
    // still comes as close code 1008 after it, like the other sockets.
    // Ok(Some(name)): opened with a header token, audited here (a ticket was
    // audited when it was issued).
    let auth: Result<Option<String>, String> = match q.ticket.as_deref() {
        Some(t) if state.live.redeem_ticket(t) => Ok(None),
        Some(_) => Err("invalid or expired ticket: get a new one from POST /api/dashboard/ticket".into()),
        None => state
            .tokens
            .authorize_conn(
                presented_token(None, &headers),
                conn.as_ref().map(|c| &c.0),
                Scope::Read,
            )
            .map_err(|e| match e {
                AuthError::Missing => {
                    "missing ticket: open with ?ticket= from POST /api/dashboard/ticket, or send a read token as a header"
                        .to_owned()
                }
                other => other.to_string(),
            })
            .and_then(|p| match p.users {
                // The dashboard shows every user's events.
                Some(_) => Err(format!("`{}` is bound to users; the dashboard covers every user", p.name)),
                None => Ok(Some(p.name)),
            }),
    };
    let tasks = state.tasks.clone();
    // The client has nothing to say on this socket (what it sends is
    // ignored), so anything large is refused.
    ws.max_message_size(4096).on_upgrade(move |mut socket| {
        tasks.track_future(async move {
            // The connection keeps its slot while the session lasts.
            let _conn = conn;
            match auth {
                Err(reason) => close(&mut socket, close_code::POLICY, &reason).await,
                Ok(audited) => {
                    if let Some(name) = audited {
                        let audit = state.audit.clone();
                        let write = move || audit.record(&name, "GET /ws/dashboard", None, "101");
                        let _ = tokio::task::spawn_blocking(write).await;
                    }
                    let _open = state.counters.ws_connection(WsEndpoint::Dashboard);
                    run(socket, state).await
                }
            }
        })
    })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // Close reasons are limited to 123 bytes by the protocol.
    let reason: String = reason.chars().take(120).collect();
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn run(mut socket: WebSocket, state: AppState) {
    // Subscribe first, so nothing between the snapshot and the feed is lost.
    let mut events = state.live.subscribe_events();
    let mut alerts = state.live.subscribe_alerts();
    let mut board = RiskBoard::seeded(&state);
    let recent = state.live.recent_alerts();
    let recent: Vec<&crate::live::Alert> = recent.iter().map(|a| &**a).collect();
    let hello = json!({
        "type": "hello",
        "gateway_id": state.config.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "server_time": Utc::now().to_rfc3339(),
        "alerts": recent,
        "metrics": metrics_frame(&state, &board),
    });
    if !send(&mut socket, &hello).await || !send(&mut socket, &status_frame(&state).await).await {
        return;
    }
    let mut batch: Vec<Value> = Vec::new();
    let mut skipped: u64 = 0;
    let mut flush = tokio::time::interval(EVENTS_EVERY);
    let mut metrics = tokio::time::interval(METRICS_EVERY);
    let mut status = tokio::time::interval(STATUS_EVERY);
    for t in [&mut flush, &mut metrics, &mut status] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // The first ticks fire at once; the hello already covered them.
    metrics.reset();
    status.reset();
    let mut liveness = super::ws::Liveness::new(&state.config.http.limits);
    loop {
        tokio::select! {
            t = liveness.tick() => {
                if t == super::ws::Tick::Silent || socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            r = events.recv() => match r {
                Ok(le) => {
                    board.update(&le);
                    if batch.len() < MAX_EVENTS_PER_MESSAGE {
                        state.counters.record_out(Transport::Dashboard, le.event.source);
                        batch.push(compact(&le));
                    } else {
                        skipped += 1;
                    }
                }
                Err(RecvError::Lagged(n)) => skipped += n,
                Err(RecvError::Closed) => return,
            },
            r = alerts.recv() => match r {
                Ok(a) => {
                    if !send(&mut socket, &json!({"type": "alert", "alert": &*a})).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = flush.tick() => {
                if !batch.is_empty() || skipped > 0 {
                    let msg = json!({"type": "events", "events": std::mem::take(&mut batch), "skipped": skipped});
                    skipped = 0;
                    if !send(&mut socket, &msg).await {
                        return;
                    }
                }
            }
            _ = metrics.tick() => {
                if !send(&mut socket, &metrics_frame(&state, &board)).await {
                    return;
                }
            }
            _ = status.tick() => {
                if !send(&mut socket, &status_frame(&state).await).await {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                _ => liveness.heard(),
            },
            _ = state.shutdown.cancelled() => {
                close(&mut socket, close_code::AWAY, "gateway shutting down").await;
                return;
            }
        }
    }
}

/// One event, as small as the dashboard needs it.
fn compact(le: &LiveEvent) -> Value {
    let e = &le.event;
    let (anomaly, risk_score, risks) = match &le.outcome.analysis {
        Analysis::Contextual(c) => (
            c.anomaly.as_ref().map(|a| a.severity),
            Some(c.risk.score),
            c.state
                .risk_assessment
                .specific_risks
                .iter()
                .map(|r| r.pattern)
                .collect::<Vec<_>>(),
        ),
        Analysis::InsufficientData { .. } => (None, None, region_risks(e.valence, e.arousal)),
    };
    json!({
        "event_id": e.event_id,
        "user_id": e.user_id,
        "session_id": e.session_id,
        "source": e.source,
        "label": e.emotion_label,
        "valence": e.valence,
        "arousal": e.arousal,
        "confidence": e.confidence,
        "timestamp": e.timestamp,
        "transport": le.transport.as_str(),
        "anomaly": anomaly,
        "risk_score": risk_score,
        "risks": risks,
        // The user's new fused estimate, small: the dashboard's fused card.
        "fused": le.outcome.fused.as_ref().map(|f| json!({
            "valence": f.valence,
            "arousal": f.arousal,
            "label": f.emotion_label(),
            "confidence": f.confidence,
            "agreement": f.agreement,
            "sources": f.sources().collect::<Vec<_>>(),
        })),
    })
}

/// The risk regions a single point lies in (volatility needs a history).
fn region_risks(v: f64, a: f64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if regions::high_stress(v, a) {
        out.push("high_stress");
    }
    if regions::depression(v, a) {
        out.push("depression_indicators");
    }
    if regions::anxiety(v, a) {
        out.push("anxiety_pattern");
    }
    out
}

/// The risk indicators, keyed as the dashboard shows them.
const INDICATORS: [(&str, u8); 5] = [
    ("high_stress", HIGH_STRESS),
    ("depression_indicators", DEPRESSION),
    ("anxiety", ANXIETY),
    ("volatility", VOLATILITY),
    ("crisis", CRISIS),
];
const HIGH_STRESS: u8 = 1;
const DEPRESSION: u8 = 2;
const ANXIETY: u8 = 4;
const VOLATILITY: u8 = 8;
/// Crisis: the user's risk score is flagged (≥ 0.7), the analyzer's crisis
/// indicator (the credit rules delay and offer support for it).
const CRISIS: u8 = 16;

fn flags_of(patterns: impl Iterator<Item = &'static str>, flagged: bool) -> u8 {
    let mut f = if flagged { CRISIS } else { 0 };
    for p in patterns {
        f |= match p {
            "high_stress" => HIGH_STRESS,
            "depression_indicators" => DEPRESSION,
            "anxiety_pattern" => ANXIETY,
            "emotional_volatility" => VOLATILITY,
            _ => 0,
        };
    }
    f
}

/// Each user's current risk indicators: the latest event's state and the
/// user's risk score. Kept per dashboard connection, so it costs nothing
/// while no dashboard is open.
#[derive(Debug, Default)]
struct RiskBoard {
    users: HashMap<String, u8>,
}

impl RiskBoard {
    /// Start from the analyzer's view of every user.
    fn seeded(state: &AppState) -> RiskBoard {
        let an = state.analyzer.lock();
        let users = an
            .user_ids()
            .take(MAX_SEEDED_USERS)
            .filter_map(|id| {
                let s = an.user_summary(id)?;
                let patterns = s
                    .state
                    .as_ref()
                    .map(|st| {
                        st.risk_assessment
                            .specific_risks
                            .iter()
                            .map(|r| r.pattern)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let f = flags_of(patterns.into_iter(), s.risk.flagged);
                (f != 0).then(|| (id.to_owned(), f))
            })
            .collect();
        RiskBoard { users }
    }

    fn update(&mut self, le: &LiveEvent) {
        let e = &le.event;
        let f = match &le.outcome.analysis {
            Analysis::Contextual(c) => flags_of(
                c.state
                    .risk_assessment
                    .specific_risks
                    .iter()
                    .map(|r| r.pattern),
                c.risk.flagged,
            ),
            // Too little history for volatility or a risk score: keep what
            // was known of those, take the regions from the point.
            Analysis::InsufficientData { .. } => {
                let prev = self.users.get(e.user_id.as_str()).copied().unwrap_or(0);
                (prev & (VOLATILITY | CRISIS))
                    | flags_of(region_risks(e.valence, e.arousal).into_iter(), false)
            }
        };
        if f == 0 {
            self.users.remove(e.user_id.as_str());
        } else {
            self.users.insert(e.user_id.clone(), f);
        }
    }

    fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, bit) in INDICATORS {
            let all: BTreeSet<&str> = self
                .users
                .iter()
                .filter(|(_, f)| **f & bit != 0)
                .map(|(u, _)| u.as_str())
                .collect();
            let users: Vec<&str> = all.iter().take(USERS_PER_INDICATOR).copied().collect();
            out.insert(name.into(), json!({"count": all.len(), "users": users}));
        }
        Value::Object(out)
    }
}

fn metrics_frame(state: &AppState, board: &RiskBoard) -> Value {
    let now = Utc::now();
    let (metrics, live_sessions) = {
        let an = state.analyzer.lock();
        (an.global_metrics(now), an.live_sessions())
    };
    json!({
        "type": "metrics",
        "timestamp": now.to_rfc3339(),
        "metrics": metrics,
        "live_sessions": live_sessions,
        "active_connections": state.connections.active_connections(),
        "active_users": state.connections.active_users(),
        "risk": board.to_json(),
    })
}

async fn status_frame(state: &AppState) -> Value {
    let plugins = status::plugins(state);
    let sync = status::sync(state);
    let devices = status::devices(state).await;
    let mqtt = status::mqtt(state);
    let buffer = status::buffer(state);
    let risk_sweep = risk_sweep_frame(state);
    json!({"type": "status", "plugins": plugins, "sync": sync, "devices": devices, "mqtt": mqtt, "buffer": buffer,
           "risk_sweep": risk_sweep})
}

/// Flagged users the status frame names (the count covers all).
const FLAGGED_SHOWN: usize = 50;

/// The latest risk sweep, small: who, how bad, which indicators.
fn risk_sweep_frame(state: &AppState) -> Value {
    let enabled = state.config.risk_sweep.enabled;
    let Some(r) = state.risk.latest() else {
        return json!({"enabled": enabled, "swept_at": null, "count": 0, "flagged": []});
    };
    let flagged: Vec<Value> = r
        .flagged
        .iter()
        .take(FLAGGED_SHOWN)
        .map(|f| {
            json!({"user_id": f.user_id, "level": f.level, "risk_score": f.risk_score,
                   "indicators": f.indicator_names().collect::<Vec<_>>()})
        })
        .collect();
    json!({"enabled": enabled, "swept_at": r.swept_at, "count": r.flagged.len(), "flagged": flagged})
}
