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

#[tokio::test]
async fn the_risk_sweep_lists_flagged_users_and_alerts_once() {
    let h = Harness::new().await;
    let (status, before) = h.get("/api/risk").await;
    assert_eq!(status, StatusCode::OK);
    assert!(before["swept_at"].is_null(), "{before}");
    assert_eq!(before["sweep"]["lookback"], "86400s");
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(30);
    for i in 0..6 {
        let ts = (t0 + chrono::Duration::minutes(i)).to_rfc3339();
        // Mildly negative and activated: the anxiety pattern.
        ingest(&h, "31", json!({"user_id": "31", "source": "voice", "valence": -0.1, "arousal": 0.65, "timestamp": ts})).await;
        ingest(&h, "32", json!({"user_id": "32", "source": "voice", "valence": 0.5, "arousal": 0.3, "timestamp": ts})).await;
    }
    let post = |token: &str| {
        Request::post("/api/risk/sweep")
            .header("x-auth-token", token)
            .body(Body::empty())
            .expect("request")
    };
    let (status, _) = h.call(post(READ_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "running a sweep is admin");
    let (status, swept) = h.call(post(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{swept}");
    assert_eq!(swept["count"], 1, "{swept}");
    let flag = &swept["flagged"][0];
    assert_eq!(flag["user_id"], "31");
    assert_eq!(flag["level"], "medium");
    assert_eq!(flag["indicators"][0]["indicator"], "anxiety_pattern");
    assert!(
        flag["indicators"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("6 of the latest 6 events")),
        "{flag}"
    );
    // The latest result is what GET shows; filters and their errors.
    let (_, listed) = h.get("/api/risk").await;
    assert_eq!(listed["flagged"], swept["flagged"]);
    let (_, high) = h.get("/api/risk?level=high").await;
    assert_eq!(high["count"], 0);
    let (status, bad) = h.get("/api/risk?level=severe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    // One alert for the new flag, none for the same flag again.
    let sweeps = |h: &Harness| {
        h.state()
            .live
            .recent_alerts()
            .iter()
            .filter(|a| a.kind.as_str() == "risk_sweep")
            .count()
    };
    assert_eq!(sweeps(&h), 1);
    h.call(post(TOKEN)).await;
    assert_eq!(sweeps(&h), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn the_report_covers_the_period_from_the_analyzers_state() {
    let h = Harness::new().await;
    let now = chrono::Utc::now();
    for (days_ago, v, a, n) in [(12, 0.6, 0.4, 4), (0, -0.6, 0.85, 6)] {
        for i in 0..n {
            // Today's events at most an hour old, but never before midnight.
            let back = chrono::Duration::days(days_ago)
                + chrono::Duration::seconds(i * 60).min(
                    now - now
                        .date_naive()
                        .and_hms_opt(0, 0, 0)
                        .expect("midnight")
                        .and_utc(),
                );
            let ts = (now - back).to_rfc3339();
            ingest(&h, "41", json!({"user_id": "41", "source": "voice", "valence": v, "arousal": a, "timestamp": ts})).await;
        }
    }
    let (status, r) = h.get("/api/users/41/report?days=7").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["days"], 7);
    assert_eq!(
        r["counts"]["events"], 6,
        "the events of 12 days ago are outside: {r}"
    );
    assert_eq!(r["counts"]["all_time_events"], 10);
    assert_eq!(r["counts"]["high_stress_events"], 6);
    assert_eq!(r["averages"]["valence"], -0.6);
    assert_eq!(r["daily"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["credit_impact"]["window_days"], 7);
    assert_eq!(r["risk_flag"]["indicators"][0]["indicator"], "high_stress");
    assert!(
        r["recommendations"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{r}"
    );
    assert!(r["trajectory"]["valence"]["direction"].is_string(), "{r}");
    let (_, month) = h.get("/api/users/41/report?days=30").await;
    assert_eq!(month["counts"]["events"], 10);
    for bad in ["0", "31", "seven"] {
        let (status, body) = h.get(&format!("/api/users/41/report?days={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "days={bad}: {body}");
    }
    let (status, _) = h.get("/api/users/nobody/report").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.shutdown().await;
}

#[tokio::test]
async fn fused_estimates_combine_the_latest_event_of_each_source() {
    let h = Harness::new().await;
    let now = chrono::Utc::now().to_rfc3339();
    ingest(&h, "51", json!({"user_id": "51", "source": "voice", "valence": 0.2, "arousal": 0.8, "confidence": 0.85, "timestamp": now})).await;
    let (status, body) = h.get("/api/users/51/fused").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "one source is not fused: {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("two or more sources"))
    );
    ingest(&h, "51", json!({"user_id": "51", "source": "facial", "valence": 0.6, "arousal": 0.4, "confidence": 0.85, "timestamp": now})).await;
    let (status, f) = h.get("/api/users/51/fused").await;
    assert_eq!(status, StatusCode::OK, "{f}");
    assert_eq!(f["sources"], json!(["voice", "facial"]), "{f}");
    assert_eq!(f["contributions"].as_array().map(Vec::len), Some(2), "{f}");
    let (v, a) = (
        f["valence"].as_f64().expect("v"),
        f["arousal"].as_f64().expect("a"),
    );
    // At equal confidence, valence leans to the face (more reliable there),
    // arousal to the voice.
    assert!(v > 0.4 && v < 0.6, "{f}");
    assert!(a > 0.6 && a < 0.8, "{f}");
    assert!(
        f["agreement"].as_f64().is_some_and(|x| x > 0.0 && x < 1.0),
        "{f}"
    );
    // The per-event analysis counts each event once, not the estimate.
    let (_, summary) = h.get("/api/users/51/summary").await;
    assert_eq!(summary["event_count"], 2);
    h.shutdown().await;
}
