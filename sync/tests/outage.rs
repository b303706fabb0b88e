//! Outages at the library level, on a private PostgreSQL instance that the
//! test stops and starts: the writer sees errors, retries with back-off, and
//! when the server is back everything drains exactly once.
//!
//! 1. The server crashes (immediate stop) between transactions of a running
//!    sync; the backlog drains after the restart.
//! 2. The server crashes while a write transaction is open (held at a lock,
//!    so the timing is certain); the batch is retried and stored once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::events;
use emotion_core::EmotionEvent;
use emotion_sync::testing::TempCluster;
use emotion_sync::{Backoff, ClientOptions, Cursor, RetryConfig, SyncClient};
use tokio_postgres::NoTls;

const GW: &str = "gw-outage";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn stop(cluster: &Arc<TempCluster>) {
    let c = cluster.clone();
    blocking(move || c.stop(false))
        .await
        .expect("stop the server (immediate)");
}

async fn start(cluster: &Arc<TempCluster>) {
    let c = cluster.clone();
    blocking(move || c.start()).await.expect("start the server");
}

#[derive(Default)]
struct Stats {
    committed: AtomicUsize,
    failures: AtomicUsize,
    transient: AtomicUsize,
}

/// The sync driver as the daemon runs it: resume from the central cursor,
/// ship every remaining batch, retry each forever with back-off. The client is
/// borrowed by each call, so the back-off is driven by hand.
async fn drive(
    mut client: SyncClient,
    buffer: Arc<Vec<Vec<EmotionEvent>>>,
    stats: Arc<Stats>,
    pace: Duration,
) -> SyncClient {
    let cfg = RetryConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        ..Default::default()
    };
    let mut backoff = Backoff::new(&cfg);
    let from = loop {
        match client.read_cursor(GW).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(backoff.next_delay().expect("forever")).await,
        }
    };
    backoff.reset();
    let start = from.map_or(0, |c| c.batch as usize);
    for (b, batch) in buffer.iter().enumerate().skip(start) {
        let cursor = Cursor::new(b as u64 + 1, 0);
        loop {
            match client.write_events(GW, batch, cursor).await {
                Ok(_) => break,
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::SeqCst);
                    if e.is_transient() {
                        stats.transient.fetch_add(1, Ordering::SeqCst);
                    }
                    let delay = backoff.next_delay().expect("retries forever");
                    if backoff.failures() <= 2 {
                        eprintln!(
                            "batch {b}: attempt {} failed ({e}); retrying in {delay:?}",
                            backoff.failures()
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        backoff.reset();
        stats.committed.store(b + 1, Ordering::SeqCst);
        tokio::time::sleep(pace).await;
    }
    client
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin(cluster: &TempCluster, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&cluster.url(db), NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client
}

async fn check_exactly_once(client: &mut SyncClient, total: usize, batches: u64) {
    let db = client.client().await.expect("connection");
    let count = async |sql: &str| db.query_one(sql, &[]).await.expect(sql).get::<_, i64>(0);
    assert_eq!(
        count("SELECT count(*) FROM emotional_events").await,
        total as i64
    );
    assert_eq!(
        count("SELECT count(DISTINCT event_id) FROM emotional_events").await,
        total as i64
    );
    assert_eq!(
        count("SELECT events_synced FROM gateway_sync_state").await,
        total as i64,
        "every event counted once"
    );
    assert_eq!(
        client.read_cursor(GW).await.expect("cursor"),
        Some(Cursor::new(batches, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_server_outages_and_drain_exactly_once() {
    let cluster = Arc::new(
        blocking(TempCluster::init)
            .await
            .expect("initdb a private instance"),
    );
    start(&cluster).await;
    admin(&cluster, "postgres")
        .await
        .batch_execute("CREATE DATABASE emotion")
        .await
        .expect("create db");
    let url = cluster.url("emotion");
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let mut client = SyncClient::connect_with(&url, options.clone())
        .await
        .expect("connect");
    client.migrate().await.expect("migrate");

    // The gateway's buffer: 40 batches of 250 events, three users.
    let make = |n: u64| -> Arc<Vec<Vec<EmotionEvent>>> {
        Arc::new(
            (0..n)
                .map(|b| events(&format!("user-{}", b % 3), b * 250..b * 250 + 250))
                .collect(),
        )
    };

    // 1. Crash between transactions of a running sync.
    let buffer = make(40);
    let stats = Arc::new(Stats::default());
    let driver = tokio::spawn(drive(
        client,
        buffer.clone(),
        stats.clone(),
        Duration::from_millis(20),
    ));
    wait_for("8 batches", || stats.committed.load(Ordering::SeqCst) >= 8).await;
    stop(&cluster).await;
    let down_at = stats.committed.load(Ordering::SeqCst);
    wait_for("failures during the outage", || {
        stats.failures.load(Ordering::SeqCst) >= 5
    })
    .await;
    // Two more failed attempts, each a chance to commit that did not.
    let failed = stats.failures.load(Ordering::SeqCst);
    wait_for("more failures during the outage", || {
        stats.failures.load(Ordering::SeqCst) >= failed + 2
    })
    .await;
    assert!(
        stats.committed.load(Ordering::SeqCst) <= down_at + 1,
        "nothing commits while the server is down"
    );
    start(&cluster).await;
    let mut client = tokio::time::timeout(Duration::from_secs(60), driver)
        .await
        .expect("the backlog drains after the outage")
        .expect("driver");
    let failed = stats.failures.load(Ordering::SeqCst);
    assert_eq!(
        stats.transient.load(Ordering::SeqCst),
        failed,
        "outage errors are transient"
    );
    check_exactly_once(&mut client, 10_000, 40).await;
    eprintln!("outage 1: {failed} failed attempts, then 10000 events stored exactly once");

    // 2. Crash with a write transaction open. Another session holds the
    //    erasure lock, so the writer stops inside its transaction (after BEGIN,
    //    before COPY); the server dies under it.
    let blocker = admin(&cluster, "emotion").await;
    blocker
        .execute("SELECT pg_advisory_lock(7236003)", &[])
        .await
        .expect("hold the erasure lock");
    let buffer = make(44);
    let stats = Arc::new(Stats::default());
    let driver = tokio::spawn(drive(client, buffer.clone(), stats.clone(), Duration::ZERO));
    wait_for_writer_blocked(&blocker).await;
    stop(&cluster).await;
    wait_for("failures after the crash", || {
        stats.failures.load(Ordering::SeqCst) >= 3
    })
    .await;
    start(&cluster).await;
    let mut client = tokio::time::timeout(Duration::from_secs(60), driver)
        .await
        .expect("drains after the second outage")
        .expect("driver");
    check_exactly_once(&mut client, 11_000, 44).await;
    eprintln!(
        "outage 2: {} failed attempts, 11000 events stored exactly once",
        stats.failures.load(Ordering::SeqCst)
    );
}

/// Until the writer's session waits on the advisory lock inside its transaction.
async fn wait_for_writer_blocked(blocker: &tokio_postgres::Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = blocker
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'emotion-sync' AND wait_event_type = 'Lock'
                   AND state = 'active' AND backend_xid IS NULL AND xact_start IS NOT NULL",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writer never blocked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
