//! WebSocket clients against a tiny in-test server that mimics the
//! gateway's `/ws/emotions/stream` protocol: a welcome, then one reply per
//! event, in order; `event_id`s make resends idempotent.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use firmware_sim::journey::Journey;
use firmware_sim::scenario::{self, Counter, Overrides, ScenarioKind, UserPlan, WsOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789";

#[derive(Default)]
struct Server {
    /// Stored events by event_id.
    stored: HashMap<String, Value>,
    /// Messages received (including resends).
    received: u64,
    /// Close every connection after this many events (to test reconnects).
    drop_after: Option<u64>,
    /// Reject events of this user with a validation error.
    reject_user: Option<String>,
    users: HashSet<String>,
}

type Shared = Arc<Mutex<Server>>;

async fn stream(
    ws: WebSocketUpgrade,
    Query(q): Query<HashMap<String, String>>,
    State(s): State<Shared>,
) -> Response {
    ws.on_upgrade(move |socket| handle(socket, q, s))
}

async fn handle(mut socket: WebSocket, q: HashMap<String, String>, s: Shared) {
    if q.get("token").map(String::as_str) != Some(TOKEN) {
        let _ = socket
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 1008,
                reason: "bad token".into(),
            })))
            .await;
        return;
    }
    let user = q.get("user_id").cloned().unwrap_or_default();
    s.lock().expect("lock").users.insert(user.clone());
    let welcome = json!({"status": "connected", "session_id": format!("session_{user}_1"),
                         "user_id": user, "supported_sources": [], "supported_emotions": [],
                         "timestamp": "2026-01-01T00:00:00Z"});
    if socket
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut on_this_connection = 0u64;
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else { continue };
        let reply = {
            let mut st = s.lock().expect("lock");
            st.received += 1;
            if st.drop_after.is_some_and(|n| on_this_connection >= n) {
                // Drop the connection with this event unanswered (and unstored).
                return;
            }
            on_this_connection += 1;
            match serde_json::from_str::<Value>(text.as_str()) {
                Err(_) => json!({"status": "error", "error": "invalid_json", "message": "bad"}),
                Ok(e) if e["user_id"] != user.as_str() => {
                    json!({"status": "error", "error": "validation_error", "message": "user_id"})
                }
                Ok(_) if st.reject_user.as_deref() == Some(user.as_str()) => {
                    json!({"status": "error", "error": "validation_error", "message": "valence: nope"})
                }
                Ok(e) => {
                    let id = e["event_id"].as_str().unwrap_or_default().to_owned();
                    let duplicate = st.stored.insert(id.clone(), e).is_some();
                    let mut r = json!({"status": "processed", "event_id": id, "task_id": id,
                                       "analysis": {"analysis": "insufficient_data"}, "metrics": {}});
                    if duplicate {
                        r["duplicate"] = json!(true);
                    }
                    r
                }
            }
        };
        if socket
            .send(Message::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn serve(state: Server) -> (SocketAddr, Shared) {
    let shared = Arc::new(Mutex::new(state));
    let app = Router::new()
        .route("/ws/emotions/stream", get(stream))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, shared)
}

fn opts(addr: SocketAddr) -> WsOptions {
    WsOptions {
        gateway: format!("ws://{addr}"),
        token: TOKEN.into(),
        speed: 200.0,
        event_interval_s: 1.0,
        timeout: Duration::from_secs(5),
        seed: 3,
    }
}

#[tokio::test]
async fn a_scenario_sends_every_event_and_counts_the_acknowledgements() {
    let (addr, server) = serve(Server::default()).await;
    let plans = scenario::plans(
        ScenarioKind::Stress,
        Overrides {
            users: Some(3),
            duration: Some(Duration::from_secs(20)),
        },
    );
    let o = opts(addr);
    assert_eq!(o.total_events(&plans), 60);
    let counter = Arc::new(Counter::default());
    scenario::run_ws(&plans, &o, counter.clone(), &CancellationToken::new()).await;
    let c = counter.snapshot();
    assert_eq!(
        (c.sent, c.acknowledged, c.failed, c.duplicates),
        (60, 60, 0, 0)
    );
    let s = server.lock().expect("lock");
    assert_eq!(s.stored.len(), 60);
    assert_eq!(
        s.users,
        HashSet::from(["4001".into(), "4002".into(), "4003".into()])
    );
    // The events carry the original producer's fields and optional objects.
    for e in s.stored.values() {
        for k in [
            "user_id",
            "source",
            "emotion_label",
            "valence",
            "arousal",
            "confidence",
            "timestamp",
        ] {
            assert!(!e[k].is_null(), "{k} missing in {e}");
        }
        if e["source"] == "physiological" {
            assert!(e["biometrics"]["heart_rate"].is_number(), "{e}");
            assert!(e["context"].is_object(), "{e}");
        }
    }
    let sources: HashSet<&str> = s
        .stored
        .values()
        .filter_map(|e| e["source"].as_str())
        .collect();
    assert!(sources.len() >= 6, "{sources:?}");
}

#[tokio::test]
async fn a_dropped_connection_is_reopened_and_the_event_resent_once() {
    let (addr, server) = serve(Server {
        drop_after: Some(4),
        ..Server::default()
    })
    .await;
    let user = UserPlan {
        user_id: "77".into(),
        journey: Journey::Volatile,
        duration: Duration::from_secs(10),
    };
    let counter = Counter::default();
    scenario::run_user(&user, &opts(addr), 1, &counter, &CancellationToken::new()).await;
    let c = counter.snapshot();
    assert_eq!((c.sent, c.acknowledged, c.failed), (10, 10, 0));
    let s = server.lock().expect("lock");
    assert_eq!(s.stored.len(), 10, "each event stored once");
    assert!(s.received > 10, "some were resent: {}", s.received);
    assert_eq!(counter.failed.load(Ordering::Relaxed), 0);
}

/// A rejection reply is a refusal, counted with its reason; an event that
/// gets no answer at all failed.
#[tokio::test]
async fn rejected_events_count_as_refused_and_unreachable_ones_as_failed() {
    let (addr, _server) = serve(Server {
        reject_user: Some("5".into()),
        ..Server::default()
    })
    .await;
    let user = |id: &str| UserPlan {
        user_id: id.into(),
        journey: Journey::Stable,
        duration: Duration::from_secs(5),
    };
    let counter = Counter::default();
    scenario::run_user(
        &user("5"),
        &opts(addr),
        1,
        &counter,
        &CancellationToken::new(),
    )
    .await;
    let c = counter.snapshot();
    assert_eq!((c.sent, c.acknowledged, c.refused, c.failed), (5, 0, 5, 0));
    assert_eq!(c.refused_reasons["validation_error"], 5);

    // A wrong token: the server closes with 1008; every event fails.
    let counter = Counter::default();
    let mut o = opts(addr);
    o.token = "wrong-token-0123456789".into();
    o.timeout = Duration::from_millis(500);
    scenario::run_user(&user("6"), &o, 1, &counter, &CancellationToken::new()).await;
    let c = counter.snapshot();
    assert_eq!((c.sent, c.acknowledged, c.refused, c.failed), (5, 0, 0, 5));
}

#[tokio::test]
async fn the_binary_runs_a_scenario_and_exits_by_its_result() {
    let (addr, server) = serve(Server::default()).await;
    let bin = env!("CARGO_BIN_EXE_firmware-sim");
    let out = tokio::process::Command::new(bin)
        .args([
            "single-user",
            "--duration",
            "12",
            "--event-interval",
            "2",
            "--speed",
            "100",
            "--quiet",
        ])
        .args(["--gateway", &format!("http://{addr}"), "--token", TOKEN])
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("websocket"), "{stdout}");
    assert_eq!(server.lock().expect("lock").stored.len(), 6);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("websocket"))
        .expect("summary line");
    // sent, acknowledged, refused, failed, duplicates
    let numbers: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(numbers[1..], ["6", "6", "0", "0", "0"], "{line}");

    // Against nothing: every event fails and the exit code says so.
    let out = tokio::process::Command::new(bin)
        .args([
            "single-user",
            "--duration",
            "4",
            "--event-interval",
            "2",
            "--speed",
            "100",
            "--quiet",
        ])
        .args(["--gateway", "ws://127.0.0.1:9", "--timeout", "0.5"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
}
