//! The WebSocket protocol, in process: the router over the in-memory store,
//! served on 127.0.0.1:0 inside the test. Ported from the binary's
//! `ws_protocol` tests (same assertions; the binary tests stay).

mod common;

use common::{Harness, READ_TOKEN, TOKEN, close_code, next_json, send_json};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn served() -> Harness {
    Harness::new().await.serve().await
}

/// The stored events of `user`, oldest first.
async fn user_events(h: &Harness, user: &str) -> Vec<Value> {
    let (_, body) = h.get(&format!("/api/users/{user}/events")).await;
    body["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn welcome_has_the_original_shape() {
    let h = served().await;
    let (_ws, welcome) = h.stream("42").await;
    assert_eq!(welcome["status"], "connected");
    assert_eq!(welcome["user_id"], 42);
    let session = welcome["session_id"].as_str().expect("session id");
    assert!(session.starts_with("session_42_"), "{session}");
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
async fn wrong_or_missing_tokens_close_with_1008() {
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
    let n = 300;
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
    let sources = ["text", "voice", "facial"];
    let (mut ws, _) = h.stream("11").await;
    for s in sources {
        send_json(
            &mut ws,
            &json!({"user_id": 11, "source": s, "emotion_label": "joy", "valence": 0.3, "arousal": 0.4}),
        )
        .await;
        assert_eq!(next_json(&mut ws).await["status"], "processed");
    }
    let url = h.ws_url(&format!("/ws/emotions/metrics?token={READ_TOKEN}"));
    let (mut m, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("metrics");
    for _ in 0..2 {
        let msg = next_json(&mut m).await;
        let metrics = &msg["metrics"];
        assert_eq!(metrics["total_events"], 3);
        assert_eq!(metrics["unique_users"], 1);
        assert_eq!(metrics["source_distribution"]["voice"], 1);
        assert_eq!(msg["active_connections"], 1, "the open event stream");
        assert_eq!(msg["active_users"], 1);
        assert!(msg["timestamp"].is_string());
    }
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
