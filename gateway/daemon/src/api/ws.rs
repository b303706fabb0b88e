//! The WebSocket endpoints the original system's clients speak:
//! `/ws/emotions/stream`, `/ws/emotions/metrics` and the legacy `/ws/emotions`.

use std::future::Future;
use std::pin::Pin;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use emotion_core::analyzer::Analysis;
use emotion_core::event::{
    Body, BodyError, IngestContext, default_session_id, parse_user_id, validate_body,
};
use emotion_core::{EmotionLabel, Source};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{AuthError, Principal, Scope, presented_token};
use crate::config::HttpLimits;
use crate::edge::ConnInfo;
use crate::ingest::{Accepted, IngestError};
use crate::state::AppState;
use crate::telemetry::{Transport, WsEndpoint};

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    user_id: Option<String>,
    session_id: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenOnly {
    pub(crate) token: Option<String>,
}

/// Which reply an accepted event gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyStyle {
    /// `{"status":"processed", ...analysis, metrics}` (the stream endpoint).
    Processed,
    /// `{"status":"queued","task_id"}` (the legacy endpoint).
    Queued,
    /// [`ReplyStyle::Processed`] plus `"event"`, the event a plugin made
    /// (`/ws/readings`).
    ProcessedWithEvent,
}

/// Initial read buffer of a WebSocket (see `upgrade`).
const WS_READ_BUFFER: usize = 16 * 1024;

/// A reply that becomes ready when its event is durable (or at once, for errors).
pub(crate) type ReplyFuture = Pin<Box<dyn Future<Output = String> + Send>>;

#[utoipa::path(
    get,
    path = "/ws/emotions/stream",
    tag = "websocket",
    summary = "WebSocket: stream emotion events (original protocol)",
    description = "Scope `ingest`. See README.md, WebSocket API.",
    params(
        ("user_id" = String, Query, description = "The user the events belong to"),
        ("session_id" = Option<String>, Query, description = "Default: session_{user_id}_{unix_seconds}"),
        ("token" = Option<String>, Query, description = "A token of `ingest` scope (or send it as a header)"),
    ),
    security(("token" = []), ("bearer" = []), ("query_token" = [])),
    responses(
        (status = 101, description = "Switching protocols. On connect `{status: connected, session_id, …}`; per event `{status: processed, event_id, task_id, analysis, metrics}` in order; errors `invalid_json` / `validation_error`. A bad token closes with 1008."),
    )
)]
pub async fn stream(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    conn: Option<Extension<ConnInfo>>,
) -> Response {
    let user = q
        .user_id
        .as_deref()
        .ok_or_else(|| "the user_id query parameter is required".to_owned())
        .and_then(|u| {
            parse_user_id(&Value::String(u.to_owned())).map_err(|m| format!("user_id {m}"))
        });
    let session = q.session_id.clone().filter(|s| !s.is_empty());
    upgrade(
        ws,
        state,
        conn.map(|Extension(c)| c),
        q.token.as_deref(),
        &headers,
        Scope::Ingest,
        WsEndpoint::Stream,
        move |socket, state, principal| async move {
            match user {
                Err(m) => close(socket, close_code::POLICY, &m).await,
                Ok(user) if !principal.may_act_for(&user) => {
                    close(socket, close_code::POLICY, &principal.bound_message(&user)).await
                }
                Ok(user) => run_stream(socket, state, principal, user, session).await,
            }
        },
    )
}

#[utoipa::path(
    get,
    path = "/ws/emotions",
    tag = "websocket",
    summary = "WebSocket: legacy event endpoint",
    params(("token" = Option<String>, Query, description = "A token (or send it as a header)")),
    security(("token" = []), ("bearer" = []), ("query_token" = [])),
    responses(
        (status = 101, description = "Switching protocols. Each event is answered `{status: queued, task_id}` once durable. Scope `ingest`; a bad token closes with 1008."),
    )
)]
pub async fn legacy(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(q): Query<TokenOnly>,
    headers: HeaderMap,
    conn: Option<Extension<ConnInfo>>,
) -> Response {
    upgrade(
        ws,
        state,
        conn.map(|Extension(c)| c),
        q.token.as_deref(),
        &headers,
        Scope::Ingest,
        WsEndpoint::Legacy,
        |socket, state, principal| {
            let mode = Mode::Events {
                user: None,
                session: None,
                style: ReplyStyle::Queued,
            };
            serve(socket, state, principal, mode)
        },
    )
}

#[utoipa::path(
    get,
    path = "/ws/emotions/metrics",
    tag = "websocket",
    summary = "WebSocket: global metrics pushed periodically and on change",
    params(("token" = Option<String>, Query, description = "A token (or send it as a header)")),
    security(("token" = []), ("bearer" = []), ("query_token" = [])),
    responses(
        (status = 101, description = "Switching protocols. Pushes `{timestamp, metrics: {total_events, events_per_minute, unique_users, unique_sessions, avg_valence, avg_arousal, dominant_emotion, source_distribution}, active_connections, active_users}` every http.metrics_interval and, coalesced to at most one every 250 ms, when events arrive. Scope `read`; a bad token closes with 1008."),
    )
)]
pub async fn metrics(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(q): Query<TokenOnly>,
    headers: HeaderMap,
    conn: Option<Extension<ConnInfo>>,
) -> Response {
    upgrade(
        ws,
        state,
        conn.map(|Extension(c)| c),
        q.token.as_deref(),
        &headers,
        Scope::Read,
        WsEndpoint::Metrics,
        |socket, state, _| run_metrics(socket, state),
    )
}

/// Accept the upgrade, then either run `session` or, when the token is
/// missing, wrong or lacks `scope`, close with 1008 (the original clients
/// expect a close code, not an HTTP error). The session is tracked so that
/// shutdown waits for it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn upgrade<F, Fut>(
    ws: WebSocketUpgrade,
    state: AppState,
    conn: Option<ConnInfo>,
    query_token: Option<&str>,
    headers: &HeaderMap,
    scope: Scope,
    endpoint: WsEndpoint,
    session: F,
) -> Response
where
    F: FnOnce(WebSocket, AppState, Principal) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let auth =
        state
            .tokens
            .authorize_conn(presented_token(query_token, headers), conn.as_ref(), scope);
    let tasks = state.tasks.clone();
    let max = state.config.http.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        // tungstenite reserves its whole read buffer per connection (128 KiB
        // by default): idle sockets would cost that much each. Larger
        // messages still reserve what they need.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                // The connection keeps its slot while the session lasts.
                let _conn = conn;
                match auth {
                    Err(e) => refuse(socket, e).await,
                    Ok(principal) => {
                        // Counted for `/metrics` while the session lasts.
                        let _open = state.counters.ws_connection(endpoint);
                        session(socket, state, principal).await
                    }
                }
            })
        })
}

async fn refuse(socket: WebSocket, e: AuthError) {
    close(socket, close_code::POLICY, &e.to_string()).await;
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket.send(close_frame(code, reason)).await;
}

async fn run_stream(
    mut socket: WebSocket,
    state: AppState,
    principal: Principal,
    user: String,
    session: Option<String>,
) {
    let now = Utc::now();
    let session = session.unwrap_or_else(|| default_session_id(&user, now));
    let _guard = state.connections.open(&user);
    // Numeric user ids go back as numbers, as the original sent them.
    let user_json = user
        .parse::<u64>()
        .map_or_else(|_| json!(user), |n| json!(n));
    let welcome = json!({
        "status": "connected",
        "session_id": session,
        "user_id": user_json,
        "supported_sources": Source::ALL.map(Source::as_str),
        "supported_emotions": EmotionLabel::ALL.map(EmotionLabel::as_str),
        "timestamp": now.to_rfc3339(),
    });
    if socket
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mode = Mode::Events {
        user: Some(user),
        session: Some(session),
        style: ReplyStyle::Processed,
    };
    serve(socket, state, principal, mode).await;
}

/// What a connection carries.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// Emotion events, bound to a user and session on the stream endpoint.
    Events {
        user: Option<String>,
        session: Option<String>,
        style: ReplyStyle,
    },
    /// Raw readings for the plugins (`/ws/readings`), each handed to the
    /// function given (`readings::handle_reading`: passed in rather than
    /// called from here, as the readings endpoint builds on this module).
    Readings(fn(&AppState, &Principal, &str) -> ReplyFuture),
}

/// Read events, enqueue them in order, and send each reply in order once its
/// event is durable. At most `max_in_flight_per_connection` replies are
/// outstanding; beyond that the connection is not read (back-pressure).
pub(crate) async fn serve(socket: WebSocket, state: AppState, principal: Principal, mode: Mode) {
    let (mut sink, mut incoming) = socket.split();
    let mut pending: FuturesOrdered<ReplyFuture> = FuturesOrdered::new();
    let max_in_flight = state.config.http.max_in_flight_per_connection;
    let mut liveness = Liveness::new(&state.config.http.limits);
    let send_within = liveness.idle;
    let mut reading = true;
    // Why the gateway ends the connection, sent once the replies in flight are.
    let mut ending: Option<(u16, String)> = None;

    loop {
        tokio::select! {
            biased;
            Some(reply) = pending.next(), if !pending.is_empty() => {
                let sent = tokio::time::timeout(send_within, send_ready(&mut sink, &mut pending, reply)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
            msg = incoming.next(), if reading && pending.len() < max_in_flight => {
                liveness.heard();
                let text = match msg {
                    // The frame's own bytes, not a copy.
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => match Utf8Bytes::try_from(b) {
                        Ok(t) => t,
                        Err(_) => {
                            pending.push_back(ready(error_reply("invalid_json", "Message must be valid JSON (UTF-8 text)")));
                            continue;
                        }
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) if message_too_long(&e) => {
                        reading = false;
                        ending = Some((
                            close_code::SIZE,
                            format!("message larger than http.max_message_bytes ({} bytes)", state.config.http.max_message_bytes),
                        ));
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        // The client is gone or done: answer what is in flight
                        // if it still listens, then stop.
                        reading = false;
                        if pending.is_empty() {
                            return;
                        }
                        continue;
                    }
                };
                if let Err(wait) = principal.take(1.0) {
                    crate::auth::count_rate_limited("websocket");
                    pending.push_back(ready(rate_limited_reply(wait)));
                    continue;
                }
                let reply = match &mode {
                    Mode::Events { user, session, style } => {
                        handle_message(&state, &principal, text.as_str(), user.as_deref(), session.as_deref(), *style).await
                    }
                    Mode::Readings(handle) => handle(&state, &principal, text.as_str()),
                };
                pending.push_back(reply);
            }
            tick = liveness.tick(), if reading => match tick {
                Tick::Ping => {
                    let sent = tokio::time::timeout(send_within, sink.send(Message::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return;
                    }
                }
                // Not reading (back-pressure) is our silence, not the client's.
                Tick::Silent if pending.len() >= max_in_flight => {}
                Tick::Silent => {
                    reading = false;
                    ending = Some((close_code::AWAY, "no frame or pong within http.limits.ws_idle_timeout".into()));
                }
            },
            _ = state.shutdown.cancelled(), if reading => {
                reading = false;
            }
            else => break,
        }
        if !reading && pending.is_empty() {
            break;
        }
    }
    if let Some((code, reason)) = ending {
        if code == close_code::SIZE {
            let reply = error_reply("message_too_big", &reason);
            let _ = tokio::time::timeout(send_within, sink.send(Message::Text(reply.into()))).await;
        }
        let _ = tokio::time::timeout(send_within, sink.send(close_frame(code, &reason))).await;
    } else if state.shutdown.is_cancelled() {
        let _ = tokio::time::timeout(
            send_within,
            sink.send(close_frame(close_code::AWAY, "gateway shutting down")),
        )
        .await;
    }
}

/// Most replies written with one flush (one `send` syscall).
const REPLIES_PER_FLUSH: usize = 256;

/// Send `first` and every reply after it that is already ready, with one
/// flush: the ingest pipeline answers a whole group commit at once, so a
/// connection with many events in flight usually has several replies ready.
async fn send_ready(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    pending: &mut FuturesOrdered<ReplyFuture>,
    first: String,
) -> Result<(), axum::Error> {
    use futures_util::FutureExt;
    sink.feed(Message::Text(first.into())).await?;
    for _ in 1..REPLIES_PER_FLUSH {
        // Polling with a no-op waker is fine here: the select loop polls
        // `pending` again with its own waker before it waits.
        match pending.next().now_or_never() {
            Some(Some(reply)) => sink.feed(Message::Text(reply.into())).await?,
            _ => break,
        }
    }
    sink.flush().await
}

/// A close frame; reasons are cut to the protocol's 123 bytes.
fn close_frame(code: u16, reason: &str) -> Message {
    let mut reason = reason.to_owned();
    while reason.len() > 120 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// Whether a receive error is a message over the size limit (which gets an
/// error reply and close code 1009) rather than a broken connection.
fn message_too_long(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { .. }
        ))
    )
}

/// What [`Liveness::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Time to ping the client.
    Ping,
    /// Nothing heard for `ws_idle_timeout`: close the connection.
    Silent,
}

/// Pings a WebSocket every `ws_ping_interval` and notices when its client
/// has sent nothing, not even a pong, for `ws_idle_timeout`: a dead or
/// hostile peer does not hold its connection for ever.
#[derive(Debug)]
pub(crate) struct Liveness {
    ping: tokio::time::Interval,
    last_heard: tokio::time::Instant,
    pub(crate) idle: std::time::Duration,
}

impl Liveness {
    pub(crate) fn new(limits: &HttpLimits) -> Self {
        let every = limits.ws_ping_interval.0;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Liveness {
            ping,
            last_heard: tokio::time::Instant::now(),
            idle: limits.ws_idle_timeout.0,
        }
    }

    /// The client sent something.
    pub(crate) fn heard(&mut self) {
        self.last_heard = tokio::time::Instant::now();
    }

    pub(crate) async fn tick(&mut self) -> Tick {
        self.ping.tick().await;
        if self.last_heard.elapsed() >= self.idle {
            Tick::Silent
        } else {
            Tick::Ping
        }
    }
}

/// The reply to a message over its principal's rate limit (it is not
/// processed; the client may send it again after `retry_after_ms`).
fn rate_limited_reply(wait: std::time::Duration) -> String {
    json!({
        "status": "error",
        "error": "rate_limited",
        "message": "rate limit exceeded; this message was not processed",
        "retry_after_ms": wait.as_millis().max(1) as u64,
    })
    .to_string()
}

/// The reply to an event or reading for a user its principal is not bound to.
pub(crate) fn forbidden_user_reply(principal: &Principal, user: &str) -> String {
    error_reply("forbidden_user", &principal.bound_message(user))
}

pub(crate) fn ready(s: String) -> ReplyFuture {
    Box::pin(std::future::ready(s))
}

pub(crate) fn error_reply(error: &str, message: &str) -> String {
    json!({"status": "error", "error": error, "message": message}).to_string()
}

/// Parse and validate one message; enqueue it if valid. Returns the future of
/// its reply. Enqueueing happens here, before the next message is read, so
/// the buffer keeps each connection's order.
async fn handle_message(
    state: &AppState,
    principal: &Principal,
    text: &str,
    user: Option<&str>,
    session: Option<&str>,
    style: ReplyStyle,
) -> ReplyFuture {
    let body = match Body::parse_str(text) {
        Ok(body) => body,
        Err(BodyError::NotObject) => {
            return ready(error_reply("invalid_json", "Message must be a JSON object"));
        }
        Err(BodyError::NotJson(_)) => {
            return ready(error_reply("invalid_json", "Message must be valid JSON"));
        }
    };
    let ctx = IngestContext {
        user_id: user,
        session_id: session,
        gateway_id: &state.config.gateway_id,
        producer: "client",
        now: Utc::now(),
        event_id: Uuid::now_v7(),
        confidence_in_source_range: state.config.validation.confidence
            == crate::config::ConfidenceCheck::SourceRange,
    };
    let event = match validate_body(body, &ctx) {
        Ok(e) => e,
        Err(e) => {
            state.counters.record_rejected();
            let reply = json!({
                "status": "error",
                "error": "validation_error",
                "message": e.to_string(),
                "fields": e.errors,
            });
            return ready(reply.to_string());
        }
    };
    if !principal.may_act_for(&event.user_id) {
        state.counters.record_rejected();
        return ready(forbidden_user_reply(principal, &event.user_id));
    }
    let counters = state.counters.clone();
    match state.ingest.enqueue_via(event, Transport::WebSocket).await {
        Err(e) => ready(ingest_error_reply(&e)),
        Ok(pending) => Box::pin(async move {
            match pending.wait().await {
                Ok(accepted) => {
                    if !accepted.is_duplicate() {
                        counters.record_out(Transport::WebSocket, accepted.event.source);
                    }
                    accepted_reply(&accepted, style)
                }
                Err(e) => ingest_error_reply(&e),
            }
        }),
    }
}

pub(crate) fn ingest_error_reply(e: &IngestError) -> String {
    let code = match e {
        IngestError::ShuttingDown => "unavailable",
        IngestError::Storage => "storage_error",
        IngestError::Erased => "erased_user",
    };
    error_reply(code, &e.to_string())
}

#[derive(Serialize)]
pub(crate) struct ProcessedReply<'a> {
    status: &'static str,
    event_id: Uuid,
    /// The original returned a task id for its background job; the event id
    /// serves as that handle here.
    task_id: Uuid,
    analysis: &'a Analysis,
    metrics: &'a emotion_core::analyzer::SessionMetrics,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a emotion_core::EmotionEvent>,
}

pub(crate) fn accepted_reply(a: &Accepted, style: ReplyStyle) -> String {
    let id = a.event.event_id;
    if style == ReplyStyle::Queued {
        return json!({"status": "queued", "task_id": id}).to_string();
    }
    let duplicate = Analysis::InsufficientData {
        analysis: "duplicate",
    };
    let (analysis, metrics) = match (&a.outcome, &a.current_metrics) {
        (Some(o), _) => (&o.analysis, o.metrics.clone()),
        (None, Some(m)) => (&duplicate, m.clone()),
        (None, None) => (
            &duplicate,
            emotion_core::analyzer::SessionMetrics {
                event_count: 0,
                avg_valence: None,
                avg_arousal: None,
                dominant_emotion: None,
                stability_score: 1.0,
            },
        ),
    };
    let reply = ProcessedReply {
        status: "processed",
        event_id: id,
        task_id: id,
        analysis,
        metrics: &metrics,
        duplicate: a.is_duplicate(),
        event: (style == ReplyStyle::ProcessedWithEvent).then_some(&*a.event),
    };
    // A reply is about 1.1 KB: sized up front rather than grown from
    // serde_json's 128 bytes (four copies; perf: memmove under the reply).
    let mut out = Vec::with_capacity(REPLY_CAPACITY);
    match serde_json::to_writer(&mut out, &reply).map(|()| String::from_utf8(out)) {
        Ok(Ok(s)) => s,
        _ => error_reply("internal", "reply could not be encoded"),
    }
}

/// Room for a `processed` reply without its event (about 1.1 KB).
const REPLY_CAPACITY: usize = 1536;

/// Pushes on change come at most this often (a burst of events is one push).
const METRICS_COALESCE: std::time::Duration = std::time::Duration::from_millis(250);

/// The global metrics, every `http.metrics_interval` and, coalesced, soon
/// after events arrive.
async fn run_metrics(mut socket: WebSocket, state: AppState) {
    let mut liveness = Liveness::new(&state.config.http.limits);
    let mut tick = tokio::time::interval(state.config.http.metrics_interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = state.live.subscribe_events();
    let mut feed_open = true;
    // A change not pushed yet, and when the coalesced push is due.
    let mut dirty = false;
    let mut last_push = tokio::time::Instant::now();
    let due = tokio::time::sleep(METRICS_COALESCE);
    tokio::pin!(due);
    loop {
        let push = tokio::select! {
            _ = tick.tick() => true,
            _ = &mut due, if dirty => true,
            r = events.recv(), if feed_open => {
                match r {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if !dirty {
                            dirty = true;
                            due.as_mut().reset((last_push + METRICS_COALESCE).max(tokio::time::Instant::now()));
                        }
                    }
                    // The feed ends only at shutdown; the interval still pushes.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => feed_open = false,
                }
                false
            }
            t = liveness.tick() => {
                if t == Tick::Silent || socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                false
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                _ => {
                    liveness.heard();
                    false
                }
            },
            _ = state.shutdown.cancelled() => {
                close(socket, close_code::AWAY, "gateway shutting down").await;
                return;
            }
        };
        if !push {
            continue;
        }
        dirty = false;
        last_push = tokio::time::Instant::now();
        let now = Utc::now();
        let metrics = state.analyzer.lock().global_metrics(now);
        let msg = json!({
            "timestamp": now.to_rfc3339(),
            "metrics": metrics,
            "active_connections": state.connections.active_connections(),
            "active_users": state.connections.active_users(),
        });
        let sent = tokio::time::timeout(
            liveness.idle,
            socket.send(Message::Text(msg.to_string().into())),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}
