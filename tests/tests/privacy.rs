//! Consent and erasure through the real binary.

use emotion_tests::{Gateway, GatewayOptions, READ_TOKEN, TOKEN, data_dir, next_json, send_json};
use serde_json::{Value, json};

#[tokio::test]
async fn consent_is_recorded_and_needs_admin() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let c = reqwest::Client::new();
    let none = gw.get_json("/api/users/61/consent").await.expect("get");
    assert_eq!(none["consent"]["analytics"], false);

    let r = c
        .put(gw.http("/api/users/61/consent"))
        .bearer_auth(READ_TOKEN)
        .json(&json!({"analytics": true, "credit": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 403, "read scope cannot record consent");
    let r = c
        .put(gw.http("/api/users/61/consent"))
        .bearer_auth(TOKEN)
        .json(&json!({"analytics": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 400, "both purposes must be stated");
    let r = c
        .put(gw.http("/api/users/61/consent"))
        .bearer_auth(TOKEN)
        .json(&json!({"analytics": true, "credit": false}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let dir_path = dir.path().to_owned();
    gw.terminate().expect("stop");
    let gw = Gateway::start(&dir_path, &GatewayOptions::default()).expect("restart");
    let got = gw.get_json("/api/users/61/consent").await.expect("get");
    assert_eq!(
        (
            got["consent"]["analytics"].as_bool(),
            got["consent"]["credit"].as_bool()
        ),
        (Some(true), Some(false))
    );
}

#[tokio::test]
async fn erasure_removes_the_user_everywhere_and_late_events_stay_out() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let (mut ws, _) = gw.stream("62").await.expect("connect");
    let (mut other, _) = gw.stream("63").await.expect("connect");
    for i in 0..10 {
        let e = json!({"user_id": 62, "source": "text", "emotion_label": "joy", "timestamp": "2024-08-15T10:00:00Z", "context": {"i": i}});
        send_json(&mut ws, &e).await.expect("send");
        assert_eq!(
            next_json(&mut ws).await.expect("reply")["status"],
            "processed"
        );
    }
    send_json(
        &mut other,
        &json!({"user_id": 63, "source": "text", "emotion_label": "calm"}),
    )
    .await
    .expect("send");
    next_json(&mut other).await.expect("reply");

    let r = reqwest::Client::new()
        .delete(gw.http("/api/users/62/data"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["erasure"]["erased_locally"], 10);

    assert!(gw.user_events("62").await.expect("events").is_empty());
    let r = reqwest::Client::new()
        .get(gw.http("/api/users/62/summary"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404, "the analyzer forgot the user");
    let metrics = gw.get_json("/health").await.expect("health");
    assert_eq!(
        metrics["buffer"]["events"], 1,
        "only the other user's event remains"
    );

    // A late event that happened before the erasure is refused...
    send_json(&mut ws, &json!({"user_id": 62, "source": "text", "emotion_label": "joy", "timestamp": "2024-08-15T10:05:00Z"}))
        .await
        .expect("send");
    let r = next_json(&mut ws).await.expect("reply");
    assert_eq!(
        (r["status"].as_str(), r["error"].as_str()),
        (Some("error"), Some("erased_user")),
        "{r}"
    );
    // ...a new one is the user's new life.
    send_json(
        &mut ws,
        &json!({"user_id": 62, "source": "text", "emotion_label": "calm"}),
    )
    .await
    .expect("send");
    assert_eq!(
        next_json(&mut ws).await.expect("reply")["status"],
        "processed"
    );

    let dir_path = dir.path().to_owned();
    gw.kill9().expect("kill");
    let gw = Gateway::start(&dir_path, &GatewayOptions::default()).expect("restart");
    let events = gw.user_events("62").await.expect("events");
    assert_eq!(events.len(), 1, "erased events stay erased after a restart");
    let summary = gw.get_json("/api/users/62/summary").await.expect("summary");
    assert_eq!(summary["event_count"], 1);
}
