//! The buffer in the field, through the real binary: a kill between a batch's
//! insert and its flush, damage to the store's files, private permissions.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use emotion_sync::testing::TestDatabase;
use emotion_tests::{Gateway, GatewayOptions, TOKEN, data_dir, next_json, send_json};
use serde_json::{Value, json};

fn sync_env(url: &str) -> Vec<(String, String)> {
    vec![
        ("EMOTION_GATEWAY__SYNC__ENABLED".into(), "true".into()),
        ("EMOTION_GATEWAY__SYNC__DATABASE_URL".into(), url.into()),
        ("EMOTION_GATEWAY__SYNC__BATCH_MAX_AGE".into(), "20ms".into()),
        (
            "EMOTION_GATEWAY__SYNC__RETRY__INITIAL".into(),
            "50ms".into(),
        ),
        ("EMOTION_GATEWAY__SYNC__RETRY__MAX".into(), "200ms".into()),
    ]
}

async fn central_ids(url: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect central");
    tokio::spawn(conn);
    client
        .query("SELECT event_id::text FROM emotional_events", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default()
}

/// Send one event and wait for its reply.
async fn send_one(ws: &mut emotion_tests::Ws, id: &str, user: &str) -> Value {
    let body = json!({"event_id": id, "user_id": user, "source": "survey", "valence": 0.2, "arousal": 0.4});
    send_json(ws, &body).await.expect("send");
    next_json(ws).await.expect("reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_insert_and_flush_never_ships_the_batch_and_loses_nothing() {
    let db = TestDatabase::create().await;
    let dir = data_dir().expect("tmp");
    let marker = dir.path().join("stalled");
    let user = "801";
    // Consent is stored before the fault is armed (metadata writes do not
    // count as batches, but keep the numbering simple).
    let mut env = sync_env(db.url());
    let gw = Gateway::start(
        dir.path(),
        &GatewayOptions {
            env: env.clone(),
            config: None,
        },
    )
    .expect("start");
    gw.consent(user, true, false).await.expect("consent");
    gw.terminate().expect("stop");

    // The fourth batch written after this start stalls between insert and flush.
    env.push((
        "EMOTION_GATEWAY_TEST_STALL_BEFORE_FLUSH".into(),
        format!("3:{}", marker.display()),
    ));
    let gw = Gateway::start(dir.path(), &GatewayOptions { env, config: None }).expect("start");
    let (mut ws, _) = gw.stream(user).await.expect("stream");
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &ids[..3] {
        let r = send_one(&mut ws, id, user).await;
        assert_eq!(r["status"], "processed", "{r}");
    }
    // The fourth: inserted, never flushed, never acknowledged.
    let body = json!({"event_id": ids[3], "user_id": user, "source": "survey", "valence": 0.2, "arousal": 0.4});
    send_json(&mut ws, &body).await.expect("send");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the writer never stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The three durable events reach the central database; the stalled one
    // must not, however many rounds the sync makes meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let central: HashSet<String> = central_ids(db.url()).await.into_iter().collect();
        assert!(
            !central.contains(&ids[3]),
            "the non-durable batch was shipped"
        );
        if ids[..3].iter().all(|id| central.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "durable events were not shipped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two whole sync rounds after the stall began must still leave it out:
    // each round reads everything past its cursor.
    let stalled_at = chrono::Utc::now();
    let mut rounds = 0;
    let mut seen = stalled_at;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rounds < 2 {
        let s = gw.get_json("/api/sync").await.expect("sync status");
        if let Some(t) = s["last_success_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            && t > seen
        {
            seen = t;
            rounds += 1;
        }
        assert!(Instant::now() < deadline, "the sync made no rounds: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let central = central_ids(db.url()).await;
    assert!(
        !central.contains(&ids[3]),
        "the non-durable batch was shipped"
    );
    gw.kill9().expect("kill -9");

    // The client never got an acknowledgement, so it sends the event again.
    let gw = Gateway::start(
        dir.path(),
        &GatewayOptions {
            env: sync_env(db.url()),
            config: None,
        },
    )
    .expect("restart");
    let (mut ws, _) = gw.stream(user).await.expect("stream");
    let r = send_one(&mut ws, &ids[3], user).await;
    assert_eq!(r["status"], "processed", "{r}");
    let more: Vec<String> = (0..5).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &more {
        assert_eq!(send_one(&mut ws, id, user).await["status"], "processed");
    }
    let want: Vec<&String> = ids.iter().chain(&more).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let central = central_ids(db.url()).await;
        let unique: HashSet<&String> = central.iter().collect();
        assert_eq!(unique.len(), central.len(), "an event is twice centrally");
        if want.iter().all(|id| unique.contains(id)) {
            assert_eq!(central.len(), want.len(), "rows nobody acknowledged");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged events missing centrally: {:?}",
            want.iter()
                .filter(|id| !unique.contains(*id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pump `n` events of `user` and return the acknowledged ids.
async fn pump(gw: &Gateway, user: &str, n: usize) -> Vec<String> {
    let (mut ws, _) = gw.stream(user).await.expect("stream");
    let mut acked = Vec::new();
    for chunk in 0..n / 50 {
        for i in 0..50 {
            let body = json!({"user_id": user, "source": "survey", "valence": 0.1, "arousal": 0.5, "context": {"i": chunk * 50 + i}});
            send_json(&mut ws, &body).await.expect("send");
        }
        for _ in 0..50 {
            let r = next_json(&mut ws).await.expect("reply");
            if r["status"] == "processed" {
                acked.push(r["event_id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_the_store_is_repaired_counted_and_shown() {
    let dir = data_dir().expect("tmp");
    let opts = GatewayOptions {
        env: vec![(
            "EMOTION_GATEWAY__STORAGE__SCRUB_FIRST_AFTER".into(),
            "0s".into(),
        )],
        config: None,
    };
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let mut acked = Vec::new();
    for u in ["901", "902"] {
        acked.extend(pump(&gw, u, 2000).await);
    }
    gw.terminate().expect("stop");
    // Flip 32 bytes in the middle of the engine's data file.
    let db = dir.path().join("sled").join("db");
    let mut bytes = std::fs::read(&db).expect("read");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 32] {
        *b ^= 0xA5;
    }
    std::fs::write(&db, bytes).expect("write");

    // It starts (no crash loop), and after its scrub the books balance.
    let gw = Gateway::start(dir.path(), &opts).expect("start after damage");
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let h = gw.get_json("/health").await.expect("health");
        if !h["buffer_damage"]["last_scrub"].is_null() {
            break h;
        }
        assert!(Instant::now() < deadline, "no scrub ran: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut served = 0;
    for u in ["901", "902"] {
        served += gw.user_events(u).await.expect("events").len();
    }
    let lost = health["buffer_damage"]["acknowledged_lost"]
        .as_u64()
        .expect("lost");
    assert_eq!(
        lost as usize,
        acked.len() - served,
        "reported loss must equal acknowledged − served: {health}"
    );
    if lost > 0 {
        assert!(
            health["warnings"][0]
                .as_str()
                .is_some_and(|w| w.contains(&lost.to_string())),
            "{health}"
        );
    }
    let metrics = reqwest::Client::new()
        .get(gw.http("/metrics"))
        .header("x-auth-token", TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "emotion_gateway_buffer_acknowledged_lost_events {lost}"
        )),
        "{metrics}"
    );
    // New events are still taken.
    assert_eq!(pump(&gw, "903", 50).await.len(), 50);
    eprintln!("acknowledged {}, served {served}, lost {lost}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_to_the_gateway_user() {
    let dir = data_dir().expect("tmp");
    let root = dir.path().join("data");
    let gw = Gateway::start(&root, &GatewayOptions::default()).expect("start");
    pump(&gw, "951", 50).await;
    gw.terminate().expect("stop");
    fn check(p: &std::path::Path) {
        let m = std::fs::metadata(p).expect("meta");
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            for e in std::fs::read_dir(p).expect("dir") {
                check(&e.expect("entry").path());
            }
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        }
    }
    check(&root);
}
