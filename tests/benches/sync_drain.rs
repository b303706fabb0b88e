//! Time to drain one million buffered events to PostgreSQL after an outage.
//!
//! ```text
//! cargo build --release -p emotion-gateway
//! cargo bench -p emotion-tests --bench sync_drain
//! ```
//!
//! A private PostgreSQL instance (initdb into a temporary directory) is
//! stopped; the gateway, syncing to it, keeps acknowledging while one million
//! events arrive over WebSocket; then the server comes back and the drain is
//! timed until `/api/sync` reports no lag (target ≤ 10 s). As a reference in
//! the same run, the same number of rows is written by one raw binary COPY
//! into a table of the same definition on the same server.
//!
//! `EMOTION_SYNC_BENCH_BATCH` sets the gateway's `sync.batch_max_events`
//! (default 5000).

use std::time::{Duration, Instant};

use emotion_sync::testing::TempCluster;
use emotion_tests::{Gateway, GatewayOptions, TOKEN, blast, data_dir};

const EVENTS: usize = 1_000_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(run());
}

async fn psql(url: &str, sql: &str) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn run() {
    let cluster = TempCluster::init().unwrap_or_else(|e| panic!("initdb: {e}"));
    cluster
        .start()
        .unwrap_or_else(|e| panic!("start postgres: {e}"));
    psql(&cluster.url("postgres"), "CREATE DATABASE emotion").await;
    let url = cluster.url("emotion");
    let dir = data_dir().unwrap_or_else(|e| panic!("tmp: {e}"));
    let mut env = vec![
        ("EMOTION_GATEWAY__SYNC__ENABLED".into(), "true".into()),
        ("EMOTION_GATEWAY__SYNC__DATABASE_URL".into(), url.clone()),
        ("EMOTION_GATEWAY__SYNC__RETRY__MAX".into(), "200ms".into()),
        ("EMOTION_GATEWAY__LOG__LEVEL".into(), "warn".into()),
    ];
    // EMOTION_SYNC_BENCH_BATCH: another `sync.batch_max_events` than the default.
    if let Ok(b) = std::env::var("EMOTION_SYNC_BENCH_BATCH") {
        println!("sync.batch_max_events = {b}");
        env.push(("EMOTION_GATEWAY__SYNC__BATCH_MAX_EVENTS".into(), b));
    }
    let opts = GatewayOptions { env, config: None };
    let gw = Gateway::start(dir.path(), &opts).unwrap_or_else(|e| panic!("gateway: {e}"));
    let c = reqwest::Client::new();
    for u in 1..=20 {
        c.put(gw.http(&format!("/api/users/{u}/consent")))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"analytics": true, "credit": false}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("consent: {e}"));
    }
    // Let the schema be created, then take the server away.
    wait_connected(&gw).await;
    cluster
        .stop(true)
        .unwrap_or_else(|e| panic!("stop postgres: {e}"));

    let started = Instant::now();
    let acked = blast(&gw, 20, 20, EVENTS)
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    let ingest_s = started.elapsed().as_secs_f64();
    let lag = gw.get_json("/api/sync").await.unwrap_or_default();
    println!(
        "outage: {acked} events acknowledged in {ingest_s:.1} s ({:.0}/s) while the database was down; lag {} events",
        acked as f64 / ingest_s,
        lag["lag_events"]
    );

    cluster
        .start()
        .unwrap_or_else(|e| panic!("restart postgres: {e}"));
    let back = Instant::now();
    loop {
        let s = gw.get_json("/api/sync").await.unwrap_or_default();
        if s["connected"] == true && s["lag_events"] == 0 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(600), "no drain: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = back.elapsed().as_secs_f64();

    // Reference: one raw binary COPY of as many rows into the same table
    // definition (same indexes), on the same server.
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    tokio::spawn(conn);
    let rows: i64 = db
        .query_one("SELECT count(*) FROM emotional_events", &[])
        .await
        .unwrap_or_else(|e| panic!("count: {e}"))
        .get(0);
    assert_eq!(
        rows as usize, acked,
        "every acknowledged event exactly once"
    );
    db.batch_execute(
        "CREATE TABLE copy_ref (LIKE emotional_events INCLUDING ALL); \
         CHECKPOINT; \
         COPY (SELECT * FROM emotional_events) TO '/dev/null'",
    )
    .await
    .unwrap_or_else(|e| panic!("reference table: {e}"));
    let t = Instant::now();
    db.batch_execute("INSERT INTO copy_ref SELECT * FROM emotional_events")
        .await
        .unwrap_or_else(|e| panic!("reference insert: {e}"));
    let ref_s = t.elapsed().as_secs_f64();
    println!(
        "drain after the outage: {acked} events in {drain_s:.1} s ({:.0} rows/s; target <= 10 s for 1,000,000)",
        acked as f64 / drain_s
    );
    println!(
        "reference (same run, same server): server-side bulk copy of the same rows into a table with the same indexes: {ref_s:.1} s ({:.0} rows/s); drain / reference = {:.2}",
        rows as f64 / ref_s,
        ref_s / drain_s
    );
}

async fn wait_connected(gw: &Gateway) {
    let t = Instant::now();
    loop {
        let s = gw.get_json("/api/sync").await.unwrap_or_default();
        if s["connected"] == true {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "sync never connected: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
