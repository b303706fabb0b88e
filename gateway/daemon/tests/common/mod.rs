//! An in-process gateway for tests: the application state over the in-memory
//! store, its router called directly (`oneshot`) or served on 127.0.0.1:0
//! inside the test. No process, no data directory, no plugins.

#![allow(dead_code)] // each test file uses a part of this

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use emotion_gateway::app::{self, Assembled};
use emotion_gateway::config::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

pub const TOKEN: &str = "test-token-0123456789";
pub const READ_TOKEN: &str = "read-only-token-0123456789";

/// How long a test waits for one reply before it fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug)]
pub struct Harness {
    pub gw: Option<Assembled>,
    pub router: axum::Router,
    /// Set once [`Harness::serve`] ran.
    pub addr: Option<SocketAddr>,
    /// Holds the (empty) plugin directory.
    _dir: tempfile::TempDir,
}

/// The embedded configuration with the binary tests' tokens, no plugins,
/// MQTT, BLE or sync, and a fast metrics stream.
pub fn config(dir: &std::path::Path) -> Config {
    config_with(dir, &[])
}

/// [`config`] with more `EMOTION_GATEWAY__…` overrides (`("HTTP__LIMITS__…", value)`).
pub fn config_with(dir: &std::path::Path, extra: &[(&str, String)]) -> Config {
    let tokens = format!(
        r#"[{{name = "test", token = "{TOKEN}", scopes = ["ingest", "read", "admin"]}}, {{name = "reader", token = "{READ_TOKEN}", scopes = ["read"]}}]"#
    );
    let env = [
        ("AUTH__TOKENS", tokens),
        ("HTTP__LISTEN", "127.0.0.1:0".into()),
        ("HTTP__METRICS_INTERVAL", "200ms".into()),
        ("STORAGE__PATH", dir.join("unused").display().to_string()),
        ("PLUGINS__DIR", dir.join("no-plugins").display().to_string()),
        (
            "PLUGINS__CACHE_DIR",
            dir.join("cache").display().to_string(),
        ),
        ("MQTT__ENABLED", "false".into()),
        ("BLE__ENABLED", "false".into()),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (*k, v.clone())))
    .map(|(k, v)| (format!("EMOTION_GATEWAY__{k}"), v));
    Config::load(None, env).expect("test configuration is valid")
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with(&[]).await
    }

    /// A harness whose configuration has these overrides as well.
    pub async fn with(extra: &[(&str, String)]) -> Harness {
        let dir = tempfile::tempdir().expect("tmp");
        let gw = app::in_memory(config_with(dir.path(), extra))
            .await
            .expect("in-memory gateway");
        let router = emotion_gateway::api::router(gw.state.clone());
        Harness {
            gw: Some(gw),
            router,
            addr: None,
            _dir: dir,
        }
    }

    pub fn state(&self) -> &emotion_gateway::state::AppState {
        &self.gw.as_ref().expect("running").state
    }

    /// Serve the router on a free loopback port through the network edge
    /// (TLS and limits of the configuration), as the gateway does.
    pub async fn serve(mut self) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.addr = Some(listener.local_addr().expect("addr"));
        app::serve_api(self.state(), listener)
            .await
            .expect("serve the API");
        self
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr.expect("served"))
    }

    /// One request through the router, without a socket: (status, JSON body).
    pub async fn call(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, body)
    }

    /// `GET path` with the full token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(
            get(path)
                .header("x-auth-token", TOKEN)
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    /// Open `/ws/emotions/stream` for `user` and read the welcome.
    pub async fn stream(&self, user: &str) -> (Ws, Value) {
        let url = self.ws_url(&format!("/ws/emotions/stream?user_id={user}&token={TOKEN}"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let welcome = next_json(&mut ws).await;
        (ws, welcome)
    }

    /// Stop the state's sessions and drain the pipeline.
    pub async fn shutdown(mut self) {
        // The router holds a clone of the state (and so the ingest queue).
        self.router = axum::Router::new();
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
    }
}

pub fn get(path: &str) -> axum::http::request::Builder {
    Request::builder().method("GET").uri(path)
}

pub async fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next text message as JSON (pings and pongs skipped).
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .expect("a reply in time")
            .expect("connection open")
            .expect("a message");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON reply"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The close code the server sends.
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let msg = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .expect("a close in time");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return 0,
            Some(Ok(_)) => continue,
        }
    }
}
