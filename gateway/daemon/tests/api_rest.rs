//! The REST API and its error paths, in process: the router over the
//! in-memory store, called with `oneshot` (no socket, no process). The same
//! assertions as the binary's `privacy` tests where they overlap; the binary
//! tests stay for what needs a process. The REST views of events sent over a
//! WebSocket are in `ws_in_process.rs`.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Harness, READ_TOKEN, TOKEN, get};
use emotion_core::event::{IngestContext, validate};
use serde_json::{Value, json};

/// Store one valid event for `user` through the ingest queue.
async fn ingest(h: &Harness, user: &str, body: Value) -> Value {
    let Value::Object(m) = body else {
        panic!("an object")
    };
    let ctx = IngestContext {
        user_id: Some(user),
        session_id: None,
        gateway_id: "test",
        producer: "client",
        now: chrono::Utc::now(),
        event_id: uuid::Uuid::now_v7(),
        confidence_in_source_range: false,
    };
    let event = validate(&m, &ctx).expect("valid event");
    let accepted = h.state().ingest.submit(event).await.expect("stored");
    json!({"event_id": accepted.event.event_id, "session_id": accepted.event.session_id})
}

#[tokio::test]
async fn tokens_are_checked_and_errors_have_one_shape() {
    let h = Harness::new().await;
    // No token, a wrong token: 401 with the error body and a challenge.
    let resp = h
        .router
        .clone()
        .oneshot_request(get("/api/sources").body(Body::empty()).expect("req"))
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let (status, body) = h
        .call(get("/api/sources").body(Body::empty()).expect("req"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].is_string());
    let (status, _) = h
        .call(
            get("/api/sources")
                .header("x-auth-token", "bad-token-123456789")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The token as a query parameter and as a bearer header.
    let (status, _) = h
        .call(
            get(&format!("/api/sources?token={READ_TOKEN}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call(
            get("/api/sources")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_object() || body.is_array(), "{body}");

    // A read token on an admin endpoint: 403.
    let (status, body) = h
        .call(
            Request::builder()
                .method("DELETE")
                .uri("/api/users/5/data")
                .header("x-auth-token", READ_TOKEN)
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");

    // Health needs no token; an unknown endpoint is a 404 in the same shape.
    let (status, body) = h
        .call(get("/health").body(Body::empty()).expect("req"))
        .await;
    assert_eq!(status, StatusCode::OK, "health needs no token");
    assert_eq!(body["status"], "ok");
    let (status, body) = h.get("/api/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    h.shutdown().await;
}

#[tokio::test]
async fn bad_ids_and_unknown_users_are_400_and_404() {
    let h = Harness::new().await;
    let (status, body) = h.get("/api/users/nobody/summary").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = h.get("/api/users/bad%20id/summary").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, _) = h.get("/api/users/21/events?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.get("/api/sessions/no-such-session").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.shutdown().await;
}

#[tokio::test]
async fn rest_views_of_users_and_sessions() {
    let h = Harness::new().await;
    let mut session = String::new();
    for (i, ts) in [
        "2024-08-15T10:00:00Z",
        "2024-08-15T11:00:00Z",
        "2024-08-15T12:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let e = json!({"user_id": 21, "source": "text", "emotion_label": "joy", "valence": 0.1 * i as f64,
                       "arousal": 0.5, "timestamp": ts, "session_id": "s-21"});
        let r = ingest(&h, "21", e).await;
        session = r["session_id"].as_str().expect("session").to_owned();
    }
    let (status, window) = h
        .get("/api/users/21/events?from=2024-08-15T10:30:00Z&to=2024-08-15T12:00:00&limit=1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(window["count"], 1);
    assert_eq!(window["events"][0]["timestamp"], "2024-08-15T11:00:00Z");
    let (_, s) = h.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(s["session"]["metrics"]["event_count"], 3);
    assert_eq!(s["session"]["user_id"], "21");
    let (_, u) = h.get("/api/users/21/summary").await;
    assert_eq!(u["event_count"], 3);
    assert!(u["risk"]["score"].is_number());
    assert!(u["state"]["quadrant"].is_string());
    let (_, health) = h.get("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["buffer"]["events"], 3);
    h.shutdown().await;
}

#[tokio::test]
async fn status_endpoints_answer_without_their_components() {
    let h = Harness::new().await;
    // MQTT, sync and devices are not started in process: each says so.
    let (status, mqtt) = h.get("/api/mqtt").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mqtt["enabled"], false);
    let (_, sync) = h.get("/api/sync").await;
    assert_eq!(sync["enabled"], false);
    let (_, devices) = h.get("/api/devices").await;
    assert_eq!(devices["ble"]["available"], false);
    assert_eq!(devices["serial"], json!([]));
    let (_, plugins) = h.get("/api/plugins").await;
    assert_eq!(plugins["plugins"], json!([]));
    // The BLE pairing API without Bluetooth: 503 in the error shape.
    let (status, body) = h.get("/api/ble/devices").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "unavailable");
    // The API document is public.
    let (status, doc) = h
        .call(get("/api/openapi.json").body(Body::empty()).expect("req"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/users/{id}/summary"].is_object());
    h.shutdown().await;
}

/// `oneshot` returning the whole response (for headers).
trait OneshotRequest {
    async fn oneshot_request(self, req: Request<Body>) -> axum::response::Response;
}

impl OneshotRequest for axum::Router {
    async fn oneshot_request(self, req: Request<Body>) -> axum::response::Response {
        use tower::ServiceExt;
        self.oneshot(req).await.expect("infallible")
    }
}
