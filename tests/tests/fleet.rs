//! A fleet of gateways into one PostgreSQL (issue 15, item 3): N gateway
//! processes (`EMOTION_FLEET_GATEWAYS`, default 6 for CI; the README's full
//! run uses 20), each with its own buffer, gateway id and port, ingest over
//! WebSocket and sync into one fresh database at the same time. Then:
//!
//! - every acknowledged event is in the central database exactly once, with
//!   the gateway that acknowledged it, and each gateway's central counter
//!   agrees;
//! - no gateway logged a serialization failure or deadlock (SQLSTATE 40001,
//!   40P01), nor any error;
//! - users who move between two sites get one combined summary per window
//!   (migration 4): all their events counted once, their mean valence over
//!   both sites, the sites' adjustments weighted by their events, and the
//!   credit function answering with it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use emotion_sync::testing::TestDatabase;
use emotion_tests::fleet::{
    CI_GATEWAYS, fleet_size, gateway_id, log_findings, start_fleet, wait_all_synced,
};
use emotion_tests::{Gateway, TOKEN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Local users per gateway and their events (the bulk of the load).
const LOCAL_USERS: usize = 4;
const LOCAL_EVENTS: usize = 300;
/// A mover's days and events per day at each of their two sites.
const HOME_DAYS: i64 = 6;
const WORK_DAYS: i64 = 3;
const PER_DAY: i64 = 5;
/// Stressed at home, calm at work.
const HOME_VA: (f64, f64) = (-0.6, 0.85);
const WORK_VA: (f64, f64) = (0.5, 0.35);

/// Send `events` on one pipelined connection of `user` and return the ids
/// the gateway acknowledged; any other answer fails the test.
async fn drive(gw: &Gateway, user: &str, events: Vec<Value>) -> Vec<String> {
    let url = gw.ws_url(&format!("/ws/emotions/stream?user_id={user}&token={TOKEN}"));
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    let _welcome = rx.next().await;
    let n = events.len();
    let writer = tokio::spawn(async move {
        for e in events {
            tx.feed(Message::Text(e.to_string().into()))
                .await
                .expect("send");
        }
        tx.flush().await.expect("flush");
        tx
    });
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(60), rx.next())
            .await
            .expect("a reply within 60 s")
            .expect("connection open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let r: Value = serde_json::from_str(&t).expect("json reply");
            assert_eq!(r["status"], "processed", "{user}: {r}");
            ids.push(r["event_id"].as_str().expect("event_id").to_owned());
        }
    }
    let _tx = writer.await.expect("writer");
    ids
}

/// Events of one user at one site: `per_day` a day over `days` days before
/// now, at `va`.
fn scripted(user: &str, days: i64, per_day: i64, va: (f64, f64)) -> Vec<Value> {
    let now = chrono::Utc::now();
    (0..days)
        .flat_map(|d| (0..per_day).map(move |k| (d, k)))
        .map(|(d, k)| {
            let at = now - chrono::Duration::days(d) - chrono::Duration::minutes(5 * (k + 1));
            json!({"user_id": user, "source": "survey", "valence": va.0, "arousal": va.1, "timestamp": at.to_rfc3339()})
        })
        .collect()
}

/// Mover `m` lives near gateway `m` and works near gateway `m + 1`.
fn mover_sites(m: usize, n: usize) -> (usize, usize) {
    (m % n, (m + 1) % n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_syncs_into_one_database_exactly_once_and_movers_get_one_summary() {
    let n = fleet_size(CI_GATEWAYS);
    let db = TestDatabase::create().await;
    let root = tempfile::tempdir().expect("tmp");
    let started = Instant::now();
    let fleet = start_fleet(
        root.path(),
        n,
        db.url(),
        &[
            ("EMOTION_GATEWAY__SYNC__BATCH_MAX_EVENTS", "500"),
            ("EMOTION_GATEWAY__SYNC__BATCH_MAX_AGE", "50ms"),
            ("EMOTION_GATEWAY__SYNC__SUMMARY_INTERVAL", "1s"),
        ],
    )
    .expect("fleet");
    eprintln!(
        "{n} gateways started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let fleet = std::sync::Arc::new(fleet);

    // Consent: local users at their gateway, movers at both of theirs (the
    // shared consents table is written by two gateways per mover).
    let movers: Vec<String> = (0..n).map(|m| format!("mover-{m}")).collect();
    for (g, gw) in fleet.iter().enumerate() {
        for u in 0..LOCAL_USERS {
            gw.consent(&format!("{}-u{u}", gateway_id(g)), true, true)
                .await
                .expect("consent");
        }
    }
    for (m, mover) in movers.iter().enumerate() {
        let (home, work) = mover_sites(m, n);
        for g in [home, work] {
            fleet[g].consent(mover, true, true).await.expect("consent");
        }
    }

    // Everyone at once: every gateway ingests and syncs while the others do.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for g in 0..n {
        for u in 0..LOCAL_USERS {
            let fleet = fleet.clone();
            tasks.push(tokio::spawn(async move {
                let user = format!("{}-u{u}", gateway_id(g));
                let events = (0..LOCAL_EVENTS)
                    .map(|i| json!({"user_id": user, "source": "survey", "valence": ((i % 200) as f64 / 100.0) - 1.0, "arousal": 0.5, "context": {"i": i}}))
                    .collect();
                (g, user.clone(), drive(&fleet[g], &user, events).await)
            }));
        }
    }
    for (m, mover) in movers.iter().enumerate() {
        let (home, work) = mover_sites(m, n);
        for (g, days, va) in [(home, HOME_DAYS, HOME_VA), (work, WORK_DAYS, WORK_VA)] {
            let fleet = fleet.clone();
            let mover = mover.clone();
            tasks.push(tokio::spawn(async move {
                let events = scripted(&mover, days, PER_DAY, va);
                (g, mover.clone(), drive(&fleet[g], &mover, events).await)
            }));
        }
    }
    // Acknowledged ids by gateway, and the per-user count.
    let mut acked: HashMap<String, usize> = HashMap::new(); // event id → gateway
    let mut per_gateway = vec![0usize; n];
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let (g, user, ids) = task.await.expect("driver");
        per_gateway[g] += ids.len();
        *per_user.entry(user).or_default() += ids.len();
        for id in ids {
            assert!(
                acked.insert(id, g).is_none(),
                "an event id acknowledged twice"
            );
        }
    }
    let ingest_s = t.elapsed().as_secs_f64();
    let states = wait_all_synced(&fleet, Duration::from_secs(180))
        .await
        .expect("every gateway synced");
    eprintln!(
        "{} events acknowledged by {n} gateways in {ingest_s:.1} s; all synced {:.1} s after the start of the load",
        acked.len(),
        t.elapsed().as_secs_f64()
    );

    // Exactly once, centrally.
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect central");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT event_id::text, gateway_id FROM emotional_events",
            &[],
        )
        .await
        .expect("events");
    let mut seen = HashSet::with_capacity(rows.len());
    for r in &rows {
        let (id, gw): (String, String) = (r.get(0), r.get(1));
        assert!(
            seen.insert(id.clone()),
            "event {id} is twice in the central database"
        );
        let g = acked
            .get(&id)
            .unwrap_or_else(|| panic!("central event {id} was never acknowledged"));
        assert_eq!(
            gw,
            gateway_id(*g),
            "event {id} is attributed to the gateway that took it"
        );
    }
    assert_eq!(
        rows.len(),
        acked.len(),
        "every acknowledged event centrally, once"
    );
    for (g, s) in states.iter().enumerate() {
        let central: i64 = client
            .query_one(
                "SELECT events_synced FROM gateway_sync_state WHERE gateway_id = $1",
                &[&gateway_id(g)],
            )
            .await
            .expect("sync state")
            .get(0);
        assert_eq!(central as usize, per_gateway[g], "{}: {s}", gateway_id(g));
    }

    // Movers: wait until both sites' summaries cover all their events (each
    // gateway ships summaries every second), then check the combined rule.
    let deadline = Instant::now() + Duration::from_secs(60);
    for mover in &movers {
        let total = per_user[mover] as i64;
        assert_eq!(total, (HOME_DAYS + WORK_DAYS) * PER_DAY, "{mover}");
        loop {
            let ready = client
                .query(
                    "SELECT window_days FROM credit_risk_summaries_combined
                     WHERE user_id = $1 AND event_count = $2 AND cardinality(gateways) = 2",
                    &[mover, &total],
                )
                .await
                .expect("combined")
                .len();
            if ready == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mover}: summaries of both sites did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (m, mover) in movers.iter().enumerate() {
        let (home, work) = mover_sites(m, n);
        for window in [7i32, 30] {
            let sites = client
                .query(
                    "SELECT gateway_id, event_count, risk_premium_adjustment_pct, action
                     FROM credit_risk_summaries WHERE user_id = $1 AND window_days = $2
                     ORDER BY gateway_id",
                    &[mover, &window],
                )
                .await
                .expect("site rows");
            let site: HashMap<String, (i64, f64, String)> = sites
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
                .collect();
            let h = &site[&gateway_id(home)];
            let w = &site[&gateway_id(work)];
            assert_eq!(
                (h.0, h.2.as_str()),
                (HOME_DAYS * PER_DAY, "premium"),
                "{mover} at home: {h:?}"
            );
            assert_eq!(
                (w.0, w.2.as_str()),
                (WORK_DAYS * PER_DAY, "discount"),
                "{mover} at work: {w:?}"
            );

            // The credit system's function answers with the combined row.
            let c = client
                .query_one(
                    "SELECT f.event_count, v.avg_valence, f.risk_premium_adjustment_pct, f.action, f.gateways
                     FROM credit_emotion_adjustment($1, $2) f
                     JOIN credit_risk_summaries_combined v USING (user_id, window_days)",
                    &[mover, &window],
                )
                .await
                .expect("one combined row");
            let (count, avg_v, pct, action, gateways): (
                i64,
                Option<f64>,
                f64,
                String,
                Vec<String>,
            ) = (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4));
            assert_eq!(count, h.0 + w.0, "{mover}: each event once in the summary");
            let mut both = vec![gateway_id(home), gateway_id(work)];
            both.sort();
            assert_eq!(gateways, both);
            let mean = (h.0 as f64 * HOME_VA.0 + w.0 as f64 * WORK_VA.0) / count as f64;
            let v = avg_v.expect("mean valence");
            assert!(
                (v - mean).abs() < 1e-3,
                "{mover}: mean valence {v} over both sites, expected {mean}"
            );
            let expected =
                ((h.0 as f64 * h.1 + w.0 as f64 * w.1) / count as f64 * 1000.0).round() / 1000.0;
            assert_eq!(pct, expected, "{mover}: adjustments weighted by events");
            assert_eq!(
                action,
                if expected > 0.0 {
                    "premium"
                } else {
                    "discount"
                }
            );
            if m == 0 {
                eprintln!(
                    "{mover}, {window} days: {count} events, {pct} % {action} over {gateways:?} (home {} events {} %, work {} events {} %)",
                    h.0, h.1, w.0, w.1
                );
            }
        }
    }

    // No serialization failure or deadlock anywhere, handled or not, and no error.
    let mut report = Vec::new();
    for (g, gw) in fleet.iter().enumerate() {
        let f = log_findings(&gw.logs());
        if !f.conflicts.is_empty() || !f.errors.is_empty() {
            report.push(format!(
                "{}:\n  {}\n  {}",
                gateway_id(g),
                f.conflicts.join("\n  "),
                f.errors.join("\n  ")
            ));
        }
    }
    assert!(report.is_empty(), "gateway logs:\n{}", report.join("\n"));
    eprintln!(
        "{n} gateways, {} events, {} movers: exactly once, no conflicts",
        acked.len(),
        movers.len()
    );
}
