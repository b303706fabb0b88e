//! The WebSocket protocol, in process: the router over the in-memory store,
//! served on 127.0.0.1:0 inside the test. These are the original clients'
//! WebSocket flows that used to start the real binary (`tests/tests/ws_protocol.rs`,
//! removed): every assertion of those tests is here, none of them needs a
//! process. The HTTP requests go through the router with `oneshot`.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Harness, READ_TOKEN, TOKEN, close_code, get, next_json, send_json};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn served() -> Harness {
    Harness::new().await.serve().await
}

/// The stored events of `user`, oldest first.
async fn user_events(h: &Harness, user: &str) -> Vec<Value> {
    let (status, body) = h
        .get(&format!("/api/users/{user}/events?limit=100000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

/// `GET path` with the full token; the JSON body of a 2xx answer.
async fn get_json(h: &Harness, path: &str) -> Value {
    let (status, body) = h.get(path).await;
    assert!(status.is_success(), "GET {path}: {status}: {body}");
    body
}

/// `GET path` with `authorization: Bearer` and the full token.
fn bearer(path: &str) -> Request<Body> {
    get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn welcome_has_the_original_shape() {
    let h = served().await;
    let (_ws, welcome) = h.stream("42").await;
    assert_eq!(welcome["status"], "connected");
    assert_eq!(welcome["user_id"], 42);
    let session = welcome["session_id"].as_str().expect("session id");
    assert!(session.starts_with("session_42_"), "{session}");
    let unix: i64 = session["session_42_".len()..]
        .parse()
        .expect("unix seconds");
    assert!((unix - unix_now()).abs() < 60, "{session}");
    let sources: Vec<&str> = welcome["supported_sources"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        sources,
        [
            "text",
            "voice",
            "facial",
            "physiological",
            "survey",
            "biometric",
            "behavioral",
            "contextual"
        ]
    );
    let emotions = welcome["supported_emotions"].as_array().expect("array");
    for l in ["joy", "aggressiveness", "unknown", "calm", "stress"] {
        assert!(emotions.contains(&json!(l)), "{l}");
    }
    assert!(welcome["timestamp"].is_string());

    // An explicit session id is used as given.
    let url = h.ws_url(&format!(
        "/ws/emotions/stream?user_id=42&session_id=my-session&token={TOKEN}"
    ));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert_eq!(next_json(&mut ws).await["session_id"], "my-session");
    h.shutdown().await;
}

#[tokio::test]
async fn a_stress_sequence_shows_high_stress_and_no_improvement() {
    let h = served().await;
    let (mut ws, _) = h.stream("7").await;
    let seq = [
        ("anxiety", -0.35, 0.75),
        ("fear", -0.5, 0.8),
        ("anger", -0.55, 0.85),
        ("anxiety", -0.6, 0.85),
        ("fear", -0.7, 0.9),
        ("anger", -0.72, 0.92),
    ];
    let mut replies = Vec::new();
    for (label, v, a) in seq {
        let ev = json!({"user_id": 7, "source": "voice", "emotion_label": label, "valence": v,
                        "arousal": a, "confidence": 0.82, "timestamp": "2024-08-15T14:30:00.123456"});
        send_json(&mut ws, &ev).await;
        replies.push(next_json(&mut ws).await);
    }
    assert_eq!(replies[0]["status"], "processed");
    assert_eq!(
        replies[0]["analysis"],
        json!({"analysis": "insufficient_data"})
    );
    for r in &replies {
        assert!(uuid::Uuid::parse_str(r["event_id"].as_str().expect("id")).is_ok());
        assert_eq!(r["task_id"], r["event_id"]);
    }
    let last = &replies[5];
    let analysis = &last["analysis"];
    assert_eq!(analysis["analysis"], "contextual");
    let patterns = analysis["patterns"].as_array().expect("patterns");
    assert!(patterns.contains(&json!("high_stress")), "{analysis}");
    let trend = analysis["valence_trend"].as_str().expect("trend");
    assert!(trend == "declining" || trend == "stable", "{trend}");
    assert_eq!(analysis["session_length"], 6);
    for k in [
        "arousal_trend",
        "emotional_stability",
        "stability_score",
        "state",
        "trajectory",
        "risk",
    ] {
        assert!(!analysis[k].is_null(), "missing {k}: {analysis}");
    }
    assert_eq!(analysis["state"]["quadrant"], "high_negative");
    let m = &last["metrics"];
    assert_eq!(m["event_count"], 6);
    assert_eq!(m["avg_valence"], -0.57);
    assert!(
        m["dominant_emotion"] == "anxiety"
            || m["dominant_emotion"] == "fear"
            || m["dominant_emotion"] == "anger"
    );
    assert!(
        m["stability_score"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s))
    );
    h.shutdown().await;
}

/// Events of all 8 sources, with optional fields in the shapes the original
/// producer sent.
fn multi_source_events(user: u64) -> Vec<Value> {
    let ctx = json!({"time_period": "afternoon", "day_of_week": "friday", "weather": "sunny"});
    let loc = json!({"type": "office", "latitude": -23.561414, "longitude": -46.655881, "accuracy": 12.5});
    let dev = json!({"device_type": "smartwatch", "platform": "iOS", "app_version": "2.3.1"});
    let bio = json!({"heart_rate": 88.2, "skin_conductance": 6.1, "breathing_rate": 19.4, "temperature": 98.7});
    vec![
        json!({"user_id": user, "source": "text", "emotion_label": "joy", "valence": 0.72, "arousal": 0.61,
               "confidence": 0.74, "context": {"message_type": "chat", "message_length": 120, "contains_emojis": true},
               "raw_data": {"text_sample": "Sample text showing joy emotion...", "word_count": 24,
                            "sentiment_scores": {"positive": 0.7, "negative": 0.1, "neutral": 0.2}},
               "location": loc, "device_info": dev}),
        json!({"user_id": user, "source": "voice", "emotion_label": "calm", "valence": 0.41, "arousal": 0.22,
               "confidence": 0.81, "context": {"call_type": "phone", "speech_rate": 120, "volume_level": 0.5},
               "raw_data": {"audio_duration": 12.5, "frequency_analysis": {"fundamental_freq": 180.0,
                            "formants": [700, 1220, 2600]}, "speech_features": {"jitter": 0.01, "shimmer": 0.04}}}),
        json!({"user_id": user, "source": "facial", "emotion_label": "surprise", "valence": 0.15, "arousal": 0.8,
               "confidence": 0.9, "context": {"detection_quality": 0.93, "lighting_conditions": "good", "face_angle": "frontal"},
               "raw_data": {"face_landmarks": [[10.0, 20.0], [11.5, 21.0]], "action_units": {"AU1": 3.2, "AU2": 2.9, "AU5": 2.0, "AU26": 3.1},
                            "head_pose": {"pitch": 2.0, "yaw": -5.5, "roll": 1.0}}}),
        json!({"user_id": user, "source": "physiological", "emotion_label": "stress", "valence": -0.5, "arousal": 0.8,
               "confidence": 0.93, "biometrics": bio, "context": ctx,
               "raw_data": {"sensor_reading": 71.2}}),
        json!({"user_id": user, "source": "survey", "emotion_label": "contentment", "confidence": 0.95}),
        json!({"user_id": user, "source": "biometric", "valence": -0.2, "arousal": 0.35, "confidence": 0.94,
               "biometrics": bio, "device_info": dev}),
        json!({"user_id": user, "source": "behavioral", "emotion_label": "boredom", "valence": -0.3, "arousal": 0.15,
               "confidence": 0.6, "location": loc}),
        json!({"user_id": user, "source": "contextual", "emotion_label": "neutral", "valence": 0.0, "arousal": 0.4,
               "confidence": 0.5, "context": ctx, "location": null, "device_info": null}),
    ]
}

#[tokio::test]
async fn every_source_with_every_optional_field_is_stored_as_sent() {
    let h = served().await;
    // The binary's default, which the stored events carry.
    assert_eq!(h.state().config.gateway_id, "edge-gateway");
    let (mut ws, _) = h.stream("101").await;
    let events = multi_source_events(101);
    let mut ids = Vec::new();
    for e in &events {
        send_json(&mut ws, e).await;
        let r = next_json(&mut ws).await;
        assert_eq!(r["status"], "processed", "{e} -> {r}");
        ids.push(r["event_id"].as_str().expect("id").to_owned());
    }
    let stored = user_events(&h, "101").await;
    assert_eq!(stored.len(), 8);
    for (i, (sent, got)) in events.iter().zip(&stored).enumerate() {
        assert_eq!(got["event_id"], ids[i].as_str());
        assert_eq!(got["source"], sent["source"]);
        assert_eq!(got["producer"], "client");
        assert_eq!(got["gateway_id"], "edge-gateway");
        for k in [
            "raw_data",
            "biometrics",
            "location",
            "device_info",
            "context",
        ] {
            if sent[k].is_object() {
                assert_eq!(got[k], sent[k], "{k} of event {i}");
            }
        }
    }
    // Label-only survey event got the table's coordinates; coordinates-only
    // biometric event got the nearest label.
    assert!(stored[4]["valence"].as_f64().is_some_and(|v| v > 0.5));
    assert!(stored[5]["emotion_label"].is_string());
    let summary = get_json(&h, "/api/users/101/summary").await;
    assert_eq!(summary["event_count"], 8);
    let sources = get_json(&h, "/api/sources").await;
    assert_eq!(sources["sources"].as_array().map(Vec::len), Some(8));
    assert_eq!(
        sources["sources"][3],
        json!({"source": "physiological", "confidence_range": [0.85, 0.98]})
    );
    h.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_error_replies_and_the_connection_stays_open() {
    let h = served().await;
    let (mut ws, _) = h.stream("5").await;

    ws.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["status"].as_str(), r["error"].as_str()),
        (Some("error"), Some("invalid_json"))
    );
    ws.send(Message::Text("[1, 2]".into())).await.expect("send");
    assert_eq!(next_json(&mut ws).await["error"], "invalid_json");

    let cases = [
        (
            json!({"user_id": 5, "source": "text", "emotion_label": "joy", "valence": 2.0, "arousal": 0.5}),
            "valence",
        ),
        (
            json!({"user_id": 5, "source": "text", "emotion_label": "joy", "valence": 0.5, "arousal": -0.1}),
            "arousal",
        ),
        (
            json!({"user_id": 5, "source": "text", "emotion_label": "joy", "confidence": "NaN"}),
            "confidence",
        ),
        (
            json!({"user_id": 5, "source": "telepathy", "emotion_label": "joy"}),
            "source",
        ),
        (
            json!({"user_id": 0, "source": "text", "emotion_label": "joy"}),
            "user_id",
        ),
    ];
    for (body, field) in cases {
        send_json(&mut ws, &body).await;
        let r = next_json(&mut ws).await;
        assert_eq!(r["status"], "error", "{body}");
        assert_eq!(r["error"], "validation_error", "{body}");
        let msg = r["message"].as_str().expect("message");
        assert!(msg.contains(field), "{body}: {msg}");
        assert_eq!(r["fields"][0]["field"], field);
    }
    // Still open and working.
    send_json(
        &mut ws,
        &json!({"user_id": 5, "source": "text", "emotion_label": "joy"}),
    )
    .await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["status"], "processed");
    assert_eq!(r["task_id"], r["event_id"]);
    assert!(r["analysis"].is_object() && r["metrics"].is_object(), "{r}");
    assert_eq!(
        user_events(&h, "5").await.len(),
        1,
        "nothing invalid was stored"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_or_missing_tokens_close_with_1008_and_http_gets_401() {
    let h = served().await;
    for url in [
        h.ws_url("/ws/emotions/stream?user_id=1&token=wrong-token-123456"),
        h.ws_url("/ws/emotions/stream?user_id=1"),
        h.ws_url(&format!("/ws/emotions/stream?user_id=1&token={READ_TOKEN}")),
        h.ws_url("/ws/emotions/metrics?token=nope"),
        h.ws_url("/ws/emotions?token=nope"),
        h.ws_url(&format!("/ws/readings?token={READ_TOKEN}")),
        h.ws_url(&format!("/ws/emotions/stream?user_id=0&token={TOKEN}")),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("upgrade");
        assert_eq!(close_code(&mut ws).await, 1008, "{url}");
    }
    // The token is also accepted as a header.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = h
        .ws_url("/ws/emotions/stream?user_id=1")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(next_json(&mut ws).await["status"], "connected");

    // HTTP: no token or a wrong one is a 401; the read token as a query
    // parameter, health without a token; a bearer token on unknown and bad ids.
    let (status, body) = h
        .call(get("/api/sources").body(Body::empty()).expect("req"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = h
        .call(
            get("/api/sources")
                .header("x-auth-token", "bad-token-123456789")
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h
        .call(
            get(&format!("/api/sources?token={READ_TOKEN}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call(get("/health").body(Body::empty()).expect("req"))
        .await;
    assert_eq!(status, StatusCode::OK, "health needs no token");
    let (status, _) = h.call(bearer("/api/users/nobody/summary")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call(bearer("/api/users/bad%20id/summary")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    h.shutdown().await;
}

#[tokio::test]
async fn the_legacy_endpoint_queues_and_replies_in_order_under_pipelining() {
    let h = served().await;
    let url = h.ws_url(&format!("/ws/emotions?token={TOKEN}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    send_json(
        &mut ws,
        &json!({"user_id": 3, "source": "text", "emotion_label": "joy"}),
    )
    .await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["status"], "queued");
    assert!(r["task_id"].is_string());

    // Many events on the stream without waiting: replies come back in order.
    let (mut ws, _) = h.stream("77").await;
    let n = 500;
    for i in 0..n {
        let v = (i as f64 / n as f64) * 2.0 - 1.0;
        let body = if i % 50 == 49 {
            json!({"user_id": 77, "source": "text", "valence": 9})
        } else {
            json!({"user_id": 77, "source": "survey", "valence": v, "arousal": 0.5, "context": {"seq": i}})
        };
        ws.feed(Message::Text(body.to_string().into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
    let mut ids = Vec::new();
    for i in 0..n {
        let r = next_json(&mut ws).await;
        if i % 50 == 49 {
            assert_eq!(r["error"], "validation_error", "reply {i}");
        } else {
            assert_eq!(r["status"], "processed", "reply {i}");
            ids.push(r["event_id"].as_str().expect("id").to_owned());
        }
    }
    let stored = user_events(&h, "77").await;
    assert_eq!(stored.len(), ids.len());
    let mut expected_seq = (0..n).filter(|i| i % 50 != 49);
    for (got, id) in stored.iter().zip(&ids) {
        assert_eq!(
            got["event_id"],
            id.as_str(),
            "replies and storage in the same order"
        );
        assert_eq!(got["context"]["seq"], expected_seq.next().expect("seq"));
    }
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    h.shutdown().await;
}

#[tokio::test]
async fn client_event_ids_make_retries_idempotent() {
    let h = served().await;
    let (mut ws, _) = h.stream("8").await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({"event_id": id, "user_id": 8, "source": "text", "emotion_label": "joy"});
    send_json(&mut ws, &body).await;
    let first = next_json(&mut ws).await;
    send_json(&mut ws, &body).await;
    let second = next_json(&mut ws).await;
    assert_eq!(first["event_id"], id.as_str());
    assert_eq!(second["event_id"], id.as_str());
    assert_eq!(second["duplicate"], true);
    assert_eq!(user_events(&h, "8").await.len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn the_metrics_stream_pushes_totals_that_match_what_was_sent() {
    let h = served().await;
    let mut sent = 0u64;
    for user in ["11", "12", "13"] {
        let (mut ws, _) = h.stream(user).await;
        for e in multi_source_events(user.parse().expect("num")) {
            send_json(&mut ws, &e).await;
            sent += 1;
        }
        for _ in 0..8 {
            assert_eq!(next_json(&mut ws).await["status"], "processed");
        }
    }
    let (_keep_open, _) = h.stream("14").await;
    let url = h.ws_url(&format!("/ws/emotions/metrics?token={READ_TOKEN}"));
    let (mut m, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("metrics");
    let first = next_json(&mut m).await;
    let second = next_json(&mut m).await;
    for msg in [&first, &second] {
        let metrics = &msg["metrics"];
        assert_eq!(metrics["total_events"], sent);
        assert_eq!(metrics["events_per_minute"], sent);
        assert_eq!(metrics["unique_users"], 3);
        assert_eq!(metrics["unique_sessions"], 3);
        assert_eq!(metrics["source_distribution"]["voice"], 3);
        assert_eq!(
            metrics["source_distribution"].as_object().map(|o| o.len()),
            Some(8)
        );
        for k in ["avg_valence", "avg_arousal", "dominant_emotion"] {
            assert!(!metrics[k].is_null(), "{k}");
        }
        assert_eq!(msg["active_connections"], 1, "the open event stream");
        assert_eq!(msg["active_users"], 1);
        assert!(msg["timestamp"].is_string());
    }
    h.shutdown().await;
}

#[tokio::test]
async fn the_metrics_stream_also_pushes_on_change_coalesced() {
    // An interval far longer than the test: every push after the first is
    // one on change.
    let h = Harness::with(&[("HTTP__METRICS_INTERVAL", "1h".into())])
        .await
        .serve()
        .await;
    let url = h.ws_url(&format!("/ws/emotions/metrics?token={READ_TOKEN}"));
    let (mut m, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("metrics");
    assert_eq!(next_json(&mut m).await["metrics"]["total_events"], 0);
    // A burst of 30 events: pushed soon, and in a few pushes, not 30.
    let (mut ws, _) = h.stream("21").await;
    for e in multi_source_events(21).into_iter().cycle().take(30) {
        send_json(&mut ws, &e).await;
    }
    for _ in 0..30 {
        assert_eq!(next_json(&mut ws).await["status"], "processed");
    }
    let started = std::time::Instant::now();
    let mut pushes = 0;
    loop {
        let msg = next_json(&mut m).await;
        pushes += 1;
        if msg["metrics"]["total_events"] == 30 {
            break;
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the change was pushed late"
    );
    // The events took at most a few 250 ms windows to store.
    assert!(pushes <= 8, "{pushes} pushes for one burst");
    h.shutdown().await;
}

#[tokio::test]
async fn readings_without_a_plugin_get_typed_error_replies() {
    let h = served().await;
    let url = h.ws_url(&format!("/ws/readings?token={TOKEN}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws.send(Message::Text("nope".into())).await.expect("send");
    assert_eq!(next_json(&mut ws).await["error"], "invalid_json");
    send_json(&mut ws, &json!({"user_id": 7, "source": "telepathy"})).await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["error"], "validation_error", "{r}");
    assert!(r["fields"].is_array(), "{r}");
    // Valid, but no plugin is loaded in this harness.
    send_json(
        &mut ws,
        &json!({"user_id": 7, "source": "physiological", "payload": {"heart_rate": 70}}),
    )
    .await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["error"], "no_plugin", "{r}");
    h.shutdown().await;
}

#[tokio::test]
async fn rest_views_of_users_and_sessions() {
    let h = served().await;
    let (mut ws, welcome) = h.stream("21").await;
    let session = welcome["session_id"].as_str().expect("session").to_owned();
    for (i, ts) in [
        "2024-08-15T10:00:00Z",
        "2024-08-15T11:00:00Z",
        "2024-08-15T12:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let e = json!({"user_id": 21, "source": "text", "emotion_label": "joy", "valence": 0.1 * i as f64,
                       "arousal": 0.5, "timestamp": ts});
        send_json(&mut ws, &e).await;
        next_json(&mut ws).await;
    }
    let window = get_json(
        &h,
        "/api/users/21/events?from=2024-08-15T10:30:00Z&to=2024-08-15T12:00:00&limit=1",
    )
    .await;
    assert_eq!(window["count"], 1);
    assert_eq!(window["events"][0]["timestamp"], "2024-08-15T11:00:00Z");
    let s = get_json(&h, &format!("/api/sessions/{session}")).await;
    assert_eq!(s["session"]["metrics"]["event_count"], 3);
    assert_eq!(s["session"]["user_id"], "21");
    let u = get_json(&h, "/api/users/21/summary").await;
    assert_eq!(u["event_count"], 3);
    assert!(u["risk"]["score"].is_number());
    assert!(u["state"]["quadrant"].is_string());
    let (status, _) = h.call(bearer("/api/users/21/events?from=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let health = get_json(&h, "/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["buffer"]["events"], 3);
    h.shutdown().await;
}
