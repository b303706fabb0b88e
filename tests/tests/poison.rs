//! Events the central database cannot take: a U+0000 is refused at the door
//! with a `validation_error`, and an event the server refuses for its
//! content anyway (here: a CHECK constraint added centrally) is
//! dead-lettered while every other event arrives exactly once and sync goes
//! on. Real gateway binary, real PostgreSQL, a database per test.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use emotion_sync::SyncClient;
use emotion_sync::testing::TestDatabase;
use emotion_tests::{Gateway, GatewayOptions, TOKEN, data_dir, next_json, send_json};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn sync_options(url: &str, batch: u32) -> GatewayOptions {
    let env = [
        ("SYNC__ENABLED", "true".to_owned()),
        ("SYNC__DATABASE_URL", url.to_owned()),
        ("SYNC__BATCH_MAX_AGE", "50ms".to_owned()),
        ("SYNC__BATCH_MAX_EVENTS", batch.to_string()),
        ("SYNC__RETRY__INITIAL", "50ms".to_owned()),
        ("SYNC__RETRY__MAX", "500ms".to_owned()),
    ];
    GatewayOptions {
        env: env
            .into_iter()
            .map(|(k, v)| (format!("EMOTION_GATEWAY__{k}"), v))
            .collect(),
        config: None,
    }
}

async fn central(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect central");
    tokio::spawn(conn);
    client
}

async fn central_ids(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("SELECT event_id::text FROM emotional_events", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Poll `/api/sync` until `done` holds for it, or fail at the deadline.
async fn sync_until(gw: &Gateway, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = gw.get_json("/api/sync").await.expect("sync status");
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "sync never got there: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Send `bodies` on one stream without waiting, then read the replies (in
/// order) and return the acknowledged event ids, one per body.
async fn send_all(gw: &Gateway, user: &str, bodies: &[Value]) -> Vec<String> {
    let (mut ws, _) = gw.stream(user).await.expect("connect");
    for b in bodies {
        ws.feed(Message::Text(b.to_string().into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
    let mut ids = Vec::with_capacity(bodies.len());
    for b in bodies {
        let r = next_json(&mut ws).await.expect("reply");
        assert_eq!(r["status"], "processed", "{b}: {r}");
        ids.push(r["event_id"].as_str().expect("event_id").to_owned());
    }
    ids
}

fn body(user: &str, seq: usize, poison: bool) -> Value {
    let mut context = json!({"seq": seq});
    if poison {
        context["poison"] = json!("yes");
    }
    json!({"user_id": user, "source": "survey", "valence": 0.2, "arousal": 0.4, "context": context})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_with_a_validation_error_naming_the_field() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let (mut ws, _) = gw.stream("31").await.expect("connect");
    // As a hostile client sends it: the JSON escape \u0000 on the wire.
    let cases = [
        (
            r#"{"user_id": 31, "source": "text", "emotion_label": "joy", "context": {"notes": ["a", "b", "c\u0000"]}}"#,
            "context",
            "context.notes[2]",
        ),
        (
            r#"{"user_id": 31, "source": "text", "emotion_label": "joy", "raw_data": {"k\u0000": 1}}"#,
            "raw_data",
            "raw_data",
        ),
        (
            r#"{"user_id": 31, "source": "text", "emotion_label": "joy", "location": {"a": {"b": [{"c": "\u0000"}]}}}"#,
            "location",
            "location.a.b[0].c",
        ),
        (
            r#"{"user_id": 31, "source": "text", "emotion_label": "joy", "session_id": "s\u0000"}"#,
            "session_id",
            "session_id",
        ),
    ];
    for (text, field, path) in cases {
        ws.send(Message::Text(text.into())).await.expect("send");
        let r = next_json(&mut ws).await.expect("reply");
        assert_eq!(r["status"], "error", "{text}: {r}");
        assert_eq!(r["error"], "validation_error", "{text}: {r}");
        assert_eq!(r["fields"][0]["field"], field, "{text}: {r}");
        let msg = r["message"].as_str().expect("message");
        assert!(msg.contains(path), "{text}: {msg}");
    }
    // Nothing was stored.
    assert!(gw.user_events("31").await.expect("events").is_empty());

    // A session bound by the transport (percent-encoded in the URL) meets
    // the same rule: every event on such a stream is refused.
    let url = gw.ws_url(&format!(
        "/ws/emotions/stream?user_id=32&session_id=a%00b&token={TOKEN}"
    ));
    let (mut bound, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    next_json(&mut bound).await.expect("welcome");
    send_json(
        &mut bound,
        &json!({"source": "text", "emotion_label": "joy"}),
    )
    .await
    .expect("send");
    let r = next_json(&mut bound).await.expect("reply");
    assert_eq!(r["error"], "validation_error", "{r}");
    assert_eq!(r["fields"][0]["field"], "session_id", "{r}");
    assert!(gw.user_events("32").await.expect("events").is_empty());

    // The first connection still works.
    send_json(
        &mut ws,
        &json!({"user_id": 31, "source": "text", "emotion_label": "joy"}),
    )
    .await
    .expect("send");
    assert_eq!(
        next_json(&mut ws).await.expect("reply")["status"],
        "processed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_event_is_dead_lettered_and_everything_else_syncs_exactly_once() {
    // The central schema, migrated, with a constraint that one event will
    // break (the gateway's own migration then finds nothing to do).
    let db = TestDatabase::create().await;
    let mut setup = SyncClient::connect(db.url()).await.expect("connect");
    setup.migrate().await.expect("migrate");
    let pg = central(db.url()).await;
    pg.batch_execute(
        "ALTER TABLE emotional_events ADD CONSTRAINT no_poison CHECK (context->>'poison' IS NULL)",
    )
    .await
    .expect("constraint");

    let dir = data_dir().expect("tmp");
    // Small batches, so that the burst below becomes a backlog shipped two
    // batches at a time as well as single batches.
    let gw = Gateway::start(dir.path(), &sync_options(db.url(), 50)).expect("start");
    let users = ["901", "902", "903", "904"];
    for u in users {
        gw.consent(u, true, false).await.expect("consent");
    }

    // A burst from four users at once; the poisoned event sits in the
    // middle of user 902's stream.
    let per_user = 300;
    let poison_at = 137;
    let sends = users.map(|u| {
        let bodies: Vec<Value> = (0..per_user)
            .map(|i| body(u, i, u == "902" && i == poison_at))
            .collect();
        let gw = &gw;
        async move { (u, send_all(gw, u, &bodies).await) }
    });
    let sent = futures_util::future::join_all(sends).await;
    let poisoned = sent
        .iter()
        .find(|(u, _)| *u == "902")
        .map(|(_, ids)| ids[poison_at].clone())
        .expect("user 902");
    let mut expected: HashSet<String> = sent.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert!(expected.remove(&poisoned));

    let s = sync_until(&gw, Duration::from_secs(60), |s| {
        s["connected"] == true && s["lag_events"] == 0 && s["dead_letters"] == 1
    })
    .await;
    let recent = s["dead_letters_recent"].as_array().expect("recent");
    assert_eq!(recent.len(), 1, "{s}");
    assert_eq!(recent[0]["event_id"], poisoned.as_str(), "{s}");
    assert_eq!(recent[0]["user_id"], "902", "{s}");
    assert_eq!(recent[0]["sqlstate"], "23514", "{s}");
    assert!(
        recent[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_poison")),
        "the server's message: {s}"
    );

    // Every other event exactly once, the poisoned one not at all.
    let ids = central_ids(&pg).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an event appears twice centrally");
    assert_eq!(
        unique, expected,
        "central rows differ from the acknowledged events"
    );

    // Sync goes on: later events of every user arrive, a second poisoned
    // event alone is dead-lettered too.
    let mut later = HashSet::new();
    for u in users {
        let bodies: Vec<Value> = (per_user..per_user + 20)
            .map(|i| body(u, i, false))
            .collect();
        later.extend(send_all(&gw, u, &bodies).await);
    }
    let second = send_all(&gw, "903", &[body("903", 999, true)]).await;
    let s = sync_until(&gw, Duration::from_secs(60), |s| {
        s["lag_events"] == 0 && s["dead_letters"] == 2
    })
    .await;
    assert_eq!(
        s["dead_letters_recent"][1]["event_id"],
        second[0].as_str(),
        "{s}"
    );
    let ids = central_ids(&pg).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an event appears twice centrally");
    expected.extend(later);
    assert_eq!(unique, expected);

    // Visible in /metrics too.
    let text = reqwest::Client::new()
        .get(gw.http("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        text.lines()
            .any(|l| l == "emotion_gateway_sync_dead_letter_events 2"),
        "{text}"
    );

    // The dead letters are durable: a restarted gateway still shows them.
    drop(gw);
    let gw = Gateway::start(dir.path(), &sync_options(db.url(), 50)).expect("restart");
    let s = sync_until(&gw, Duration::from_secs(30), |s| s["connected"] == true).await;
    assert_eq!(s["dead_letters"], 2, "{s}");
    assert_eq!(
        s["dead_letters_recent"][0]["event_id"],
        poisoned.as_str(),
        "{s}"
    );
    assert_eq!(central_ids(&pg).await.len(), expected.len());
}
