//! A fleet of gateways into one PostgreSQL (issue 15, items 3 and 5):
//! aggregate central rows/s of N gateway processes ingesting and syncing at
//! once, against one gateway measured in the same run on the same server,
//! and the central cost of an event on disk.
//!
//! ```text
//! cargo build --release -p emotion-gateway
//! cargo bench -p emotion-tests --bench fleet
//! ```
//!
//! A private PostgreSQL instance (initdb into a temporary directory) holds
//! two databases. Reference: one gateway takes `EMOTION_FLEET_BENCH_EVENTS`
//! events (default 400,000) over WebSocket as fast as it acknowledges them
//! while syncing; its rate is the events over the time from the first send
//! until the central database has them all. Fleet: `EMOTION_FLEET_GATEWAYS`
//! gateways (default 20; each its own buffer, gateway id, port, the lean
//! settings of `emotion_tests::fleet::member_options`) take the same number
//! of events between them, all at once, into the other database; the users
//! are the same at every gateway, so every one of them moves between sites.
//! Printed: both rates and their ratio, exactly-once checks, conflicts in
//! the logs (SQLSTATE 40001/40P01), the fleet's memory, and the bytes per
//! event of `emotional_events` (every partition with its indexes and TOAST)
//! with the growth per million events.

use std::time::{Duration, Instant};

use emotion_sync::testing::TempCluster;
use emotion_tests::fleet::{
    fleet_size, log_findings, member_options, start_fleet, wait_all_synced,
};
use emotion_tests::{Gateway, blast};

/// Users per gateway (one WebSocket connection each).
const USERS: usize = 4;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(run());
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    c
}

async fn one(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Bytes of `emotional_events` on disk: every partition with its indexes
/// and TOAST.
async fn event_bytes(db: &tokio_postgres::Client) -> i64 {
    one(
        db,
        "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint
         FROM pg_inherits i WHERE i.inhparent = 'emotional_events'::regclass",
    )
    .await
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn consent_all(fleet: &[Gateway]) {
    for gw in fleet {
        for u in 1..=USERS {
            gw.consent(&u.to_string(), true, true)
                .await
                .unwrap_or_else(|e| panic!("consent: {e}"));
        }
    }
}

/// Load every member with `per_gateway` events at once; returns the
/// acknowledged count and the seconds until every member has synced.
async fn load(fleet: &std::sync::Arc<Vec<Gateway>>, per_gateway: usize) -> (usize, f64) {
    // Connected (schema migrated) before the clock starts.
    wait_all_synced(fleet, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let tasks: Vec<_> = (0..fleet.len())
        .map(|g| {
            let fleet = fleet.clone();
            tokio::spawn(async move { blast(&fleet[g], USERS, USERS, per_gateway).await })
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        acked += task
            .await
            .unwrap_or_else(|e| panic!("load task: {e}"))
            .unwrap_or_else(|e| panic!("load: {e}"));
    }
    let ingest_s = t.elapsed().as_secs_f64();
    wait_all_synced(fleet, Duration::from_secs(1200))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = t.elapsed().as_secs_f64();
    println!(
        "  {} gateway(s): {acked} events acknowledged in {ingest_s:.1} s ({:.0}/s), all in the central database after {s:.1} s",
        fleet.len(),
        acked as f64 / ingest_s
    );
    (acked, s)
}

/// Exactly once and the bytes per event of one database.
async fn check(url: &str, acked: usize, empty_bytes: i64) -> (i64, f64) {
    let db = connect(url).await;
    let rows = one(&db, "SELECT count(*) FROM emotional_events").await;
    let distinct = one(&db, "SELECT count(DISTINCT event_id) FROM emotional_events").await;
    assert_eq!(rows as usize, acked, "every acknowledged event centrally");
    assert_eq!(distinct, rows, "no event twice");
    let bytes = event_bytes(&db).await;
    (bytes, (bytes - empty_bytes) as f64 / rows.max(1) as f64)
}

async fn run() {
    let n = fleet_size(20);
    let events: usize = std::env::var("EMOTION_FLEET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let cluster = TempCluster::init().unwrap_or_else(|e| panic!("initdb: {e}"));
    // Two connections per gateway for a backlog, plus ours.
    let max_conn = (2 * n + 20).max(100).to_string();
    cluster
        .start_with(&[("max_connections", &max_conn)])
        .unwrap_or_else(|e| panic!("start postgres: {e}"));
    let admin = connect(&cluster.url("postgres")).await;
    // One statement each: CREATE DATABASE cannot run inside a transaction
    // block, which a multi-statement batch is.
    for name in ["single", "fleet"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e:?}"));
    }
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tmp: {e}"));
    let quiet = [("EMOTION_GATEWAY__LOG__LEVEL", "warn")];
    println!("fleet benchmark: {events} events, one gateway, then {n} gateways sharing them");

    // Reference: one gateway, same settings, same server.
    let single_url = cluster.url("single");
    let solo_dir = root.path().join("solo");
    std::fs::create_dir_all(&solo_dir).unwrap_or_else(|e| panic!("tmp: {e}"));
    let solo = Gateway::start(&solo_dir, &member_options(&single_url, "solo", &quiet))
        .unwrap_or_else(|e| panic!("gateway: {e}"));
    let solo = std::sync::Arc::new(vec![solo]);
    consent_all(&solo).await;
    wait_all_synced(&solo, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let empty_single = event_bytes(&connect(&single_url).await).await;
    let (solo_acked, solo_s) = load(&solo, events).await;
    let solo_rate = solo_acked as f64 / solo_s;
    let solo_rss = rss_kib(solo[0].pid());
    let solo_findings = log_findings(&solo[0].logs());
    drop(solo);

    // The fleet.
    let fleet_url = cluster.url("fleet");
    let started = Instant::now();
    let fleet =
        start_fleet(root.path(), n, &fleet_url, &quiet).unwrap_or_else(|e| panic!("fleet: {e}"));
    println!(
        "  {n} gateways started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let fleet = std::sync::Arc::new(fleet);
    consent_all(&fleet).await;
    wait_all_synced(&fleet, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let empty_fleet = event_bytes(&connect(&fleet_url).await).await;
    let (fleet_acked, fleet_s) = load(&fleet, events.div_ceil(n)).await;
    let fleet_rate = fleet_acked as f64 / fleet_s;
    let fleet_rss: u64 = fleet.iter().map(|g| rss_kib(g.pid())).sum();
    let (conflicts, errors) = fleet.iter().fold((0, 0), |(c, e), g| {
        let f = log_findings(&g.logs());
        (c + f.conflicts.len(), e + f.errors.len())
    });
    let sample: Vec<String> = fleet
        .iter()
        .flat_map(|g| {
            let f = log_findings(&g.logs());
            f.conflicts.into_iter().chain(f.errors).take(2)
        })
        .take(5)
        .collect();

    let (single_bytes, single_bpe) = check(&single_url, solo_acked, empty_single).await;
    let (fleet_bytes, fleet_bpe) = check(&fleet_url, fleet_acked, empty_fleet).await;
    let fleet_db = connect(&fleet_url).await;
    let gateways = one(
        &fleet_db,
        "SELECT count(*) FROM gateway_sync_state WHERE events_synced > 0",
    )
    .await;

    println!(
        "aggregate central rows/s, {n} gateways at once: {fleet_rate:.0} ({fleet_acked} events in {fleet_s:.1} s, {gateways} gateways with rows)"
    );
    println!(
        "one gateway, same server, same run: {solo_rate:.0} rows/s ({solo_acked} events in {solo_s:.1} s); fleet / one = {:.2}",
        fleet_rate / solo_rate
    );
    println!(
        "exactly once: {fleet_acked} acknowledged = {fleet_acked} rows, no event id twice (and {solo_acked} for the one gateway)"
    );
    println!(
        "serialization failures / deadlocks in the logs (SQLSTATE 40001/40P01): {conflicts} in the fleet, {} alone; ERROR lines: {errors} in the fleet, {} alone{}",
        solo_findings.conflicts.len(),
        solo_findings.errors.len(),
        if sample.is_empty() {
            String::new()
        } else {
            format!("\n  {}", sample.join("\n  "))
        }
    );
    println!(
        "memory: {:.1} MiB RSS for the {n} gateways ({:.1} MiB each), {:.1} MiB for the one",
        fleet_rss as f64 / 1024.0,
        fleet_rss as f64 / 1024.0 / n as f64,
        solo_rss as f64 / 1024.0
    );
    println!(
        "central bytes per event (emotional_events: partitions, indexes, TOAST): {fleet_bpe:.0} from the fleet, {single_bpe:.0} from one gateway; growth per million events: {:.0} MiB ({:.0} MiB); totals {:.1} / {:.1} MiB",
        fleet_bpe * 1e6 / 1048576.0,
        single_bpe * 1e6 / 1048576.0,
        fleet_bytes as f64 / 1048576.0,
        single_bytes as f64 / 1048576.0
    );
    assert_eq!(conflicts, 0, "conflicts in the gateways' logs");
}
