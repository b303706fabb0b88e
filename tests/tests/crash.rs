//! Durability under SIGKILL: every acknowledged event survives, exactly once,
//! and the analyzer's view of each user is rebuilt from the buffer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emotion_tests::{Gateway, GatewayOptions, TOKEN, data_dir};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const USERS: [&str; 3] = ["501", "502", "503"];
/// Kill cycles: `EMOTION_CRASH_CYCLES` (the README's full run uses 100).
fn kills() -> usize {
    std::env::var("EMOTION_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(22)
}

/// Send events on one connection as fast as replies allow (64 in flight),
/// recording every acknowledged event id, until the connection dies.
async fn pump(
    gw_ws: String,
    user: &'static str,
    acked: Arc<Mutex<HashMap<&'static str, Vec<String>>>>,
) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(&gw_ws).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    if rx.next().await.is_none() {
        return; // no welcome: the gateway died already
    }
    let mut seq = 0u64;
    let mut in_flight = 0usize;
    loop {
        while in_flight < 64 {
            let v = ((seq % 40) as f64 / 20.0) - 1.0;
            let body = json!({"user_id": user, "source": "survey", "valence": v, "arousal": 0.5, "context": {"seq": seq}});
            if tx
                .send(Message::Text(body.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            seq += 1;
            in_flight += 1;
        }
        match rx.next().await {
            Some(Ok(Message::Text(t))) => {
                in_flight -= 1;
                let r: Value = match serde_json::from_str(&t) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                if r["status"] == "processed"
                    && let Some(id) = r["event_id"].as_str()
                    && let Ok(mut a) = acked.lock()
                {
                    a.entry(user).or_default().push(id.to_owned());
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_repeated_sigkill_exactly_once() {
    let dir = data_dir().expect("tmp");
    let acked: Arc<Mutex<HashMap<&'static str, Vec<String>>>> = Arc::default();
    let mut rng = rand::rng();

    for round in 0..kills() {
        let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("gateway starts");
        // Everything acknowledged in earlier rounds must already be back.
        for user in USERS {
            let stored: HashSet<String> = gw
                .user_events(user)
                .await
                .expect("events")
                .iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect();
            let a = acked
                .lock()
                .expect("lock")
                .get(user)
                .cloned()
                .unwrap_or_default();
            let missing: Vec<_> = a.iter().filter(|id| !stored.contains(*id)).collect();
            assert!(
                missing.is_empty(),
                "round {round}: {} acknowledged events of {user} lost",
                missing.len()
            );
        }
        let pumps: Vec<_> = USERS
            .iter()
            .map(|u| {
                let url = gw.ws_url(&format!("/ws/emotions/stream?user_id={u}&token={TOKEN}"));
                tokio::spawn(pump(url, u, acked.clone()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        gw.kill9().expect("kill -9");
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
    }

    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("gateway starts");
    let mut total_acked = 0;
    for user in USERS {
        let stored = gw.user_events(user).await.expect("events");
        let ids: Vec<String> = stored
            .iter()
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{user}: an event is stored twice");
        let a = acked
            .lock()
            .expect("lock")
            .get(user)
            .cloned()
            .unwrap_or_default();
        total_acked += a.len();
        for id in &a {
            assert!(unique.contains(id), "{user}: acknowledged event {id} lost");
        }
        // The analyzer's history was rebuilt from everything stored.
        let summary = gw
            .get_json(&format!("/api/users/{user}/summary"))
            .await
            .expect("summary");
        assert_eq!(
            summary["event_count"],
            ids.len(),
            "{user}: summary forgets history"
        );
    }
    assert!(
        total_acked > kills() * 50,
        "too few events acknowledged ({total_acked}) for the test to mean much"
    );
    let metrics = gw.get_json("/health").await.expect("health");
    assert_eq!(metrics["buffer"]["corrupt_batches_skipped"], 0);
    eprintln!(
        "{} SIGKILLs, {total_acked} acknowledged events, none lost or doubled",
        kills()
    );
}
