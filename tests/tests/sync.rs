//! Central sync through the real gateway binary and a real PostgreSQL: exactly
//! once under SIGKILL, through an outage of the database, and the summaries,
//! consent and erasure rules. Each test creates its own database (or a
//! private server) and drops it after.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emotion_sync::testing::{TempCluster, TestDatabase};
use emotion_tests::{Gateway, GatewayOptions, TOKEN, data_dir, next_json, send_json};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn sync_options(url: &str) -> GatewayOptions {
    GatewayOptions {
        env: vec![
            ("EMOTION_GATEWAY__SYNC__ENABLED".into(), "true".into()),
            ("EMOTION_GATEWAY__SYNC__DATABASE_URL".into(), url.into()),
            ("EMOTION_GATEWAY__SYNC__BATCH_MAX_AGE".into(), "50ms".into()),
            (
                "EMOTION_GATEWAY__SYNC__BATCH_MAX_EVENTS".into(),
                "500".into(),
            ),
            (
                "EMOTION_GATEWAY__SYNC__SUMMARY_INTERVAL".into(),
                "1s".into(),
            ),
            (
                "EMOTION_GATEWAY__SYNC__RETRY__INITIAL".into(),
                "50ms".into(),
            ),
            ("EMOTION_GATEWAY__SYNC__RETRY__MAX".into(), "500ms".into()),
        ],
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

/// Wait until the gateway reports nothing left to ship.
async fn drained(gw: &Gateway, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = gw.get_json("/api/sync").await.expect("sync status");
        if s["connected"] == true && s["lag_events"] == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "sync did not drain: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn central_ids(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("SELECT event_id::text FROM emotional_events", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Stream events on one connection as fast as replies allow, recording the
/// acknowledged ids, until the connection dies.
async fn pump(url: String, user: &'static str, acked: Arc<Mutex<Vec<String>>>) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    if rx.next().await.is_none() {
        return;
    }
    let (mut seq, mut in_flight) = (0u64, 0usize);
    loop {
        while in_flight < 32 {
            let body = json!({"user_id": user, "source": "survey", "valence": 0.1, "arousal": 0.5, "context": {"seq": seq}});
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
                if let Ok(r) = serde_json::from_str::<Value>(&t)
                    && r["status"] == "processed"
                    && let Some(id) = r["event_id"].as_str()
                    && let Ok(mut a) = acked.lock()
                {
                    a.push(id.to_owned());
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_to_postgres_through_repeated_sigkill() {
    let db = TestDatabase::create().await;
    let dir = data_dir().expect("tmp");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rng = rand::rng();
    // `EMOTION_CRASH_CYCLES=100` for the README's full run; CI runs 21.
    let kills = std::env::var("EMOTION_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    for round in 0..=kills {
        let gw = Gateway::start(dir.path(), &sync_options(db.url())).expect("start");
        if round == 0 {
            for u in ["701", "702"] {
                gw.consent(u, true, false).await.expect("consent");
            }
        }
        if round == kills {
            // The last run: let everything drain, then compare.
            drained(&gw, Duration::from_secs(60)).await;
            break;
        }
        let pumps: Vec<_> = ["701", "702"]
            .into_iter()
            .map(|u| {
                tokio::spawn(pump(
                    gw.ws_url(&format!("/ws/emotions/stream?user_id={u}&token={TOKEN}")),
                    u,
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        gw.kill9().expect("kill -9");
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
    }
    let client = central(db.url()).await;
    let ids = central_ids(&client).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an event_id appears twice centrally"
    );
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 200,
        "too few events acknowledged ({}) to mean much",
        acked.len()
    );
    for id in &acked {
        assert!(
            unique.contains(id),
            "acknowledged event {id} never reached the central database"
        );
    }
    // Nothing central that the gateway does not hold either (acknowledged or
    // stored just before a kill).
    let gw = Gateway::start(dir.path(), &sync_options(db.url())).expect("start");
    let local: HashSet<String> = ["701", "702"]
        .iter()
        .flat_map(|_| Vec::<String>::new())
        .collect();
    let mut local = local;
    for u in ["701", "702"] {
        for e in gw.user_events(u).await.expect("events") {
            local.insert(e["event_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        local.len(),
        ids.len(),
        "central row count equals the stored events"
    );
    eprintln!(
        "{kills} SIGKILLs; {} acknowledged; {} rows centrally",
        acked.len(),
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_database_only_grows_the_buffer() {
    let cluster = TempCluster::init().expect("initdb");
    cluster.start().expect("start postgres");
    let admin = central(&cluster.url("postgres")).await;
    admin
        .batch_execute("CREATE DATABASE emotion")
        .await
        .expect("create db");
    let url = cluster.url("emotion");
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &sync_options(&url)).expect("start");
    gw.consent("801", true, false).await.expect("consent");
    let (mut ws, _) = gw.stream("801").await.expect("connect");
    let mut sent = Vec::new();
    let send = async |ws: &mut emotion_tests::Ws, n: usize, sent: &mut Vec<String>| {
        for i in 0..n {
            send_json(ws, &json!({"user_id": 801, "source": "text", "emotion_label": "calm", "context": {"i": i}}))
                .await
                .expect("send");
            let r = next_json(ws).await.expect("reply");
            assert_eq!(
                r["status"], "processed",
                "the gateway keeps acknowledging: {r}"
            );
            sent.push(r["event_id"].as_str().unwrap_or_default().to_owned());
        }
    };
    send(&mut ws, 200, &mut sent).await;
    drained(&gw, Duration::from_secs(30)).await;

    cluster
        .stop(false)
        .expect("stop postgres (immediate, like a crash)");
    // More than two batches (of 500), so the drain ships pairs of batches on
    // two connections.
    send(&mut ws, 1200, &mut sent).await;
    // Poll until the driver has noticed the outage and counts the backlog.
    let deadline = Instant::now() + Duration::from_secs(30);
    let during = loop {
        let s = gw.get_json("/api/sync").await.expect("status");
        if (s["connected"] == false && s["lag_events"].as_u64().unwrap_or(0) >= 1200)
            || Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(during["connected"], false, "{during}");
    assert!(
        during["lag_events"].as_u64().unwrap_or(0) >= 1200,
        "{during}"
    );
    assert!(during["last_error"].is_string());
    let health = gw.get_json("/health").await.expect("health");
    assert!(
        health["sync"]["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{health}"
    );

    cluster.start().expect("restart postgres");
    send(&mut ws, 100, &mut sent).await;
    drained(&gw, Duration::from_secs(60)).await;
    let client = central(&url).await;
    let ids = central_ids(&client).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), sent.len(), "nothing lost, nothing doubled");
    assert_eq!(unique.len(), ids.len());
    for id in &sent {
        assert!(unique.contains(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_follow_consent_and_erasure_removes_the_user_everywhere() {
    let db = TestDatabase::create().await;
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &sync_options(db.url())).expect("start");
    // Scripted users, three events a day over the last ten days (the day of
    // an event is when it happened, so timestamps spread them):
    // (user, credit consent, (valence, arousal) for day d of 0..10 and event k).
    type Script = fn(usize, usize) -> (f64, f64);
    let scripts: [(&str, bool, Script); 6] = [
        ("901", true, |_, k| (0.45 + 0.01 * k as f64, 0.35)), // stable
        ("902", true, |_, k| (-0.7 + 0.02 * k as f64, 0.85)), // chronically stressed
        ("903", true, |_, k| {
            if k % 2 == 0 { (0.8, 0.3) } else { (-0.6, 0.7) }
        }), // volatile
        (
            "905",
            true,
            |d, _| if d < 5 { (-0.5, 0.75) } else { (0.45, 0.4) },
        ), // recovering
        ("906", true, |d, k| {
            if d < 8 {
                (0.1, 0.5 + 0.02 * k as f64)
            } else {
                (-0.95, 0.95)
            }
        }), // in crisis
        ("904", false, |_, k| (0.45 + 0.01 * k as f64, 0.35)), // stable, no credit consent
    ];
    let now = chrono::Utc::now();
    for (u, credit, script) in scripts {
        gw.consent(u, true, credit).await.expect("consent");
        let (mut ws, _) = gw.stream(u).await.expect("connect");
        for d in 0..10usize {
            for k in 0..3usize {
                let (v, a) = script(d, k);
                let at = now
                    - chrono::Duration::days(9 - d as i64)
                    - chrono::Duration::minutes(10 * (3 - k as i64));
                let e = json!({"user_id": u, "source": "survey", "valence": v, "arousal": a, "timestamp": at.to_rfc3339()});
                send_json(&mut ws, &e).await.expect("send");
                assert_eq!(
                    next_json(&mut ws).await.expect("reply")["status"],
                    "processed"
                );
            }
        }
    }
    drained(&gw, Duration::from_secs(30)).await;
    let client = central(db.url()).await;
    // Summaries are shipped every second; wait for the five consented users.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = client
            .query(
                "SELECT user_id, window_days, risk_premium_adjustment_pct, action, reasons::text FROM credit_risk_summaries WHERE window_days = 30 ORDER BY user_id",
                &[],
            )
            .await
            .expect("summaries");
        if rows.len() >= 5 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "summaries did not arrive: {} rows",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_user: HashMap<String, (f64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (
                    r.get::<_, f64>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                ),
            )
        })
        .collect();
    assert!(
        !by_user.contains_key("904"),
        "no central summary without credit consent"
    );
    let expect = [
        ("901", -5.0, "discount", "stability"),
        ("902", 15.0, "premium", "stress"),
        ("903", 10.0, "premium", "volatility"),
        ("905", 0.0, "standard_rates", "recover"),
        ("906", 0.0, "delay_and_support", "crisis"),
    ];
    for (u, pct, action, word) in expect {
        let (got_pct, got_action, reasons) = &by_user[u];
        assert_eq!(
            (*got_pct, got_action.as_str()),
            (pct, action),
            "{u}: {reasons}"
        );
        assert!(
            reasons.to_lowercase().contains(word),
            "{u}: reasons name `{word}`: {reasons}"
        );
    }
    // The function for the credit system.
    let f = client
        .query_one(
            "SELECT risk_premium_adjustment_pct, action, reasons::text FROM credit_emotion_adjustment('902', 30)",
            &[],
        )
        .await
        .expect("credit function");
    assert_eq!(
        (f.get::<_, f64>(0), f.get::<_, String>(1)),
        (15.0, "premium".to_owned())
    );
    let none = client
        .query("SELECT * FROM credit_emotion_adjustment('904')", &[])
        .await
        .expect("credit function");
    assert!(none.is_empty(), "no consent, no adjustment");

    // Erasure: gone here and centrally; late events do not come back.
    let r = reqwest::Client::new()
        .delete(gw.http("/api/users/902/data"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("erase");
    assert_eq!(r.status(), 200);
    let (mut ws, _) = gw.stream("902").await.expect("connect");
    send_json(&mut ws, &json!({"user_id": 902, "source": "survey", "valence": -0.5, "arousal": 0.8, "timestamp": "2024-01-01T00:00:00Z"}))
        .await
        .expect("send");
    assert_eq!(
        next_json(&mut ws).await.expect("reply")["error"],
        "erased_user"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM emotional_events WHERE user_id = '902') + (SELECT count(*) FROM credit_risk_summaries WHERE user_id = '902') + (SELECT count(*) FROM consents WHERE user_id = '902')",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        let recorded: i64 = client
            .query_one(
                "SELECT count(*) FROM erasure_requests WHERE user_id = '902'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 && recorded == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "erasure not applied centrally ({left} rows left)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Summaries keep flowing for the others, never again for the erased user:
    // wait for two more rounds to ship (the second began after the first
    // ended, so after the erasure was applied here and centrally).
    let shipped = |s: &Value| s["summaries_shipped"].as_u64().unwrap_or(0);
    let mut seen = shipped(&gw.get_json("/api/sync").await.expect("sync status"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rounds = 0;
    while rounds < 2 {
        let s = gw.get_json("/api/sync").await.expect("sync status");
        if shipped(&s) > seen {
            seen = shipped(&s);
            rounds += 1;
        }
        assert!(Instant::now() < deadline, "no summaries shipped: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again: i64 = client
        .query_one(
            "SELECT count(*) FROM credit_risk_summaries WHERE user_id = '902'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(again, 0);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_reaches_the_central_audit_log() {
    let db = TestDatabase::create().await;
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &sync_options(db.url())).expect("start");
    let http = reqwest::Client::new();
    // A consent change, reads of the user's data, an export, a refused
    // administrative action, an erasure.
    gw.consent("77", true, true).await.expect("consent");
    let r = http
        .get(gw.http("/api/users/77/summary"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("summary");
    assert!(r.status().as_u16() < 500);
    let r = http
        .get(gw.http("/api/export?format=json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("export");
    assert!(r.status().as_u16() < 500);
    let r = http
        .put(gw.http("/api/users/77/consent"))
        .bearer_auth(emotion_tests::READ_TOKEN)
        .json(&json!({"analytics": false, "credit": false}))
        .send()
        .await
        .expect("refused consent change");
    assert_eq!(r.status(), 403);
    let r = http
        .delete(gw.http("/api/users/77/data"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("erase");
    assert_eq!(r.status(), 200);

    // Locally, in order, for the admin only.
    let local = gw
        .get_json("/api/audit?user_id=77")
        .await
        .expect("GET /api/audit");
    let actions: Vec<String> = local["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| format!("{} {} {}", e["principal"], e["action"], e["outcome"]))
        .collect();
    assert_eq!(actions.len(), 4, "{actions:?}");
    assert!(
        actions[0].contains("PUT /api/users/{id}/consent") && actions[0].ends_with("200\""),
        "{actions:?}"
    );
    assert!(
        actions[1].contains("GET /api/users/{id}/summary"),
        "{actions:?}"
    );
    assert!(
        actions[2].starts_with("\"-\"") && actions[2].contains("refused"),
        "{actions:?}"
    );
    assert!(
        actions[3].contains("DELETE /api/users/{id}/data"),
        "{actions:?}"
    );
    let r = http
        .get(gw.http("/api/audit"))
        .bearer_auth(emotion_tests::READ_TOKEN)
        .send()
        .await
        .expect("audit as reader");
    assert_eq!(r.status(), 403);

    // Centrally: every entry once, the erasure's included (an erasure keeps
    // the record that it happened).
    let client = central(db.url()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The table appears once the gateway's sync has migrated the database.
        let rows = client
            .query(
                "SELECT user_id, principal, action, outcome FROM audit_log ORDER BY audit_id",
                &[],
            )
            .await
            .unwrap_or_default();
        let got: Vec<(String, String, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let for_77 = got.iter().filter(|r| r.0 == "77").count();
        let export = got
            .iter()
            .any(|r| r.0.is_empty() && r.2 == "GET /api/export" && r.1 == "test");
        if for_77 == 4 && export {
            assert!(
                got.iter()
                    .any(|r| r.2 == "DELETE /api/users/{id}/data" && r.3 == "200"),
                "{got:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit rows did not arrive: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Re-sent pages are no-ops: the count stays.
    let n: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .expect("count")
        .get(0);
    assert!(n >= 6, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pseudonymized_sync_round_trip_keeps_consent_erasure_and_credit_working() {
    let db = TestDatabase::create().await;
    let dir = data_dir().expect("tmp");
    let mut opts = sync_options(db.url());
    opts.env
        .push(("EMOTION_GATEWAY__SYNC__PSEUDONYMIZE".into(), "true".into()));
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let user = "501";
    gw.consent(user, true, true).await.expect("consent");
    // Chronically stressed over ten days (as user 902 above): a premium.
    let (mut ws, _) = gw.stream(user).await.expect("connect");
    let now = chrono::Utc::now();
    for d in 0..10i64 {
        for k in 0..3i64 {
            let at = now - chrono::Duration::days(9 - d) - chrono::Duration::minutes(10 * (3 - k));
            let e = json!({"user_id": user, "source": "survey", "valence": -0.7 + 0.02 * k as f64,
                           "arousal": 0.85, "timestamp": at.to_rfc3339()});
            send_json(&mut ws, &e).await.expect("send");
            assert_eq!(
                next_json(&mut ws).await.expect("reply")["status"],
                "processed"
            );
        }
    }
    drained(&gw, Duration::from_secs(30)).await;
    let mapped = gw
        .get_json(&format!("/api/pseudonyms?user_ids={user}"))
        .await
        .expect("re-identification");
    let p = mapped["pseudonyms"][user]
        .as_str()
        .expect("pseudonym")
        .to_owned();
    assert!(p.starts_with("u-") && p.len() == 34, "{p}");

    let client = central(db.url()).await;
    let count = |sql: String| {
        let client = &client;
        async move {
            client
                .query_one(&sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    // No row anywhere carries the real id; events, sessions and consents
    // carry the pseudonym.
    let real = count(format!(
        "SELECT (SELECT count(*) FROM emotional_events WHERE user_id = '{user}' OR session_id NOT LIKE 's-%') \
         + (SELECT count(*) FROM consents WHERE user_id = '{user}') \
         + (SELECT count(*) FROM credit_risk_summaries WHERE user_id = '{user}') \
         + (SELECT count(*) FROM audit_log WHERE user_id = '{user}')"
    ))
    .await;
    assert_eq!(real, 0, "the real user id reached the central database");
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM emotional_events WHERE user_id = '{p}'"
        ))
        .await,
        30
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM consents WHERE user_id = '{p}' AND granted"
        ))
        .await,
        2
    );
    // Summaries arrive under the pseudonym, and the credit function works on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = client
            .query(
                "SELECT risk_premium_adjustment_pct, action FROM credit_emotion_adjustment($1, 30)",
                &[&p],
            )
            .await
            .expect("credit function");
        if let Some(r) = rows.first() {
            assert_eq!(
                (r.get::<_, f64>(0), r.get::<_, String>(1)),
                (15.0, "premium".to_owned())
            );
            break;
        }
        assert!(Instant::now() < deadline, "no summary under the pseudonym");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let by_real_id = client
        .query("SELECT * FROM credit_emotion_adjustment($1, 30)", &[&user])
        .await
        .expect("credit function");
    assert!(by_real_id.is_empty());

    // Erasure: applied centrally under the pseudonym.
    let r = reqwest::Client::new()
        .delete(gw.http(&format!("/api/users/{user}/data")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("erase");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = count(format!(
            "SELECT (SELECT count(*) FROM emotional_events WHERE user_id = '{p}') \
             + (SELECT count(*) FROM consents WHERE user_id = '{p}') \
             + (SELECT count(*) FROM credit_risk_summaries WHERE user_id = '{p}')"
        ))
        .await;
        let recorded = count(format!(
            "SELECT count(*) FROM erasure_requests WHERE user_id = '{p}'"
        ))
        .await;
        let audited = count(format!(
            "SELECT count(*) FROM audit_log WHERE user_id = '{p}' AND action = 'DELETE /api/users/{{id}}/data'"
        ))
        .await;
        if left == 0 && recorded == 1 && audited == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "erasure not applied under the pseudonym ({left} rows left, {recorded} requests, {audited} audit rows)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
