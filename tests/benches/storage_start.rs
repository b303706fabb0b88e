//! Memory and start-up against the size of the buffer, and bytes on disk per
//! event.
//!
//! ```text
//! cargo build --release -p emotion-gateway
//! cargo bench -p emotion-tests --bench storage_start            # 0, 1 M, 10 M
//! EMOTION_BENCH_SIZES=0,100000 cargo bench -p emotion-tests --bench storage_start
//! # only fill <dir>/buffer-<n>, e.g. to profile a start with heaptrack:
//! EMOTION_BENCH_FILL_ONLY=/var/tmp/fill EMOTION_BENCH_SIZES=1000000 cargo bench -p emotion-tests --bench storage_start
//! ```
//!
//! For each size, a filler writes the events straight into a buffer (batches
//! of 4,096, as the gateway's group commit does at full load, with an analyzer
//! checkpoint as a running gateway leaves one), then the release gateway is
//! started on it. Printed: time from spawn to "listening", RSS at that moment
//! and after the start-up scrub has read every batch (VmHWM: the peak), and
//! bytes on disk per event against the event's postcard size. Targets: RSS
//! ≤ 64 MB at 10 M and within 10 % of the 1 M figure, ≤ 1 s to listening at
//! 10 M, ≤ 2× the postcard size on disk.
//!
//! Then `EMOTION_BENCH_LOW_RATE_EVENTS` events (default 20,000; 0: skip) are
//! written once in single-event commits (a gateway at a low rate) and once in
//! commits of 4,096, and the values stored per 1,000 events are compared:
//! sled's memory follows that number.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::Utc;
use emotion_buffer::{EventStore, SledStore, StoreOptions};
use emotion_core::{Analyzer, EmotionEvent, EmotionLabel, Json, Source};
use emotion_tests::{Gateway, GatewayOptions};
use parking_lot::Mutex;
use serde_json::json;

const BATCH: usize = 4096;
const USERS: u64 = 1000;

/// Event `i` of `n`, shaped like the original producer's, 10 ms apart and
/// ending now (so the gateway's retention and idle eviction leave them be).
fn event(i: u64, n: u64) -> EmotionEvent {
    let at = Utc::now() - chrono::Duration::milliseconds((n - i) as i64 * 10);
    let user = i % USERS + 1;
    EmotionEvent {
        event_id: uuid::Uuid::now_v7(),
        user_id: user.to_string(),
        // A session per user lasts about five hours (2 M events 10 ms apart).
        session_id: format!("session_{user}_{}", i / 2_000_000),
        source: [
            Source::Text,
            Source::Voice,
            Source::Facial,
            Source::Physiological,
        ][i as usize % 4],
        emotion_label: [
            EmotionLabel::Joy,
            EmotionLabel::Calm,
            EmotionLabel::Anxiety,
            EmotionLabel::Stress,
        ][i as usize % 4],
        valence: ((i % 200) as f64 / 100.0) - 1.0,
        arousal: 0.55,
        confidence: Some(0.8),
        timestamp: at,
        ingested_at: at,
        gateway_id: "gw-bench".into(),
        producer: "client".into(),
        context: Some(Json::new(
            json!({"time_period": "afternoon", "day_of_week": "friday", "weather": "sunny", "seq": i}),
        )),
        biometrics: None,
        location: None,
        device_info: Some(Json::new(
            json!({"device_type": "smartwatch", "platform": "iOS", "app_version": "2.3.1"}),
        )),
        raw_data: None,
    }
}

fn du(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Fill `dir` with `n` events; returns their mean postcard size.
fn fill(dir: &Path, n: u64) -> f64 {
    let config =
        emotion_gateway::config::Config::load(None, std::iter::empty()).expect("embedded config");
    let opts = StoreOptions {
        cache_bytes: config.storage.cache_mb << 20,
        dedup_window: config.storage.dedup_window,
        ..StoreOptions::default()
    };
    let (store, _) = SledStore::open(dir, opts).expect("open");
    let mut analyzer = Analyzer::new(config.analyzer_config());
    let mut postcard_bytes = 0u64;
    let began = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<EmotionEvent> = (i..(i + BATCH as u64).min(n))
            .map(|k| event(k, n))
            .collect();
        for e in &batch {
            postcard_bytes += postcard::to_allocvec(e).map_or(0, |v| v.len() as u64);
            analyzer.ingest(e);
        }
        store.append(&batch).expect("append");
        i += batch.len() as u64;
        // As the running gateway does hourly (events are 10 ms apart here).
        if i % 360_448 < BATCH as u64 {
            store.compact_log().expect("reopen");
        }
        // As the running gateway does: live state of sessions idle for
        // analyzer.session_idle is dropped (measured on the events' clock).
        if i % 65_536 < BATCH as u64
            && let (Some(last), Ok(idle)) = (
                batch.last(),
                chrono::Duration::from_std(config.analyzer.session_idle.0),
            )
        {
            analyzer.evict_sessions_idle_since(last.ingested_at - idle);
        }
        if i % 1_000_000 < BATCH as u64 {
            eprintln!(
                "  filled {i} events in {:.0} s",
                began.elapsed().as_secs_f64()
            );
        }
    }
    // What a running gateway leaves: its analyzer checkpoint.
    let through = AtomicU64::new(store.durable_batches());
    emotion_gateway::checkpoint::save(&store, &Mutex::new(analyzer), &through).expect("checkpoint");
    store.flush().expect("flush");
    if n == 0 {
        0.0
    } else {
        postcard_bytes as f64 / n as f64
    }
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Figures {
    n: u64,
    listen: Duration,
    scrub: Option<Duration>,
    rss_listen_mb: f64,
    peak_mb: f64,
    disk_per_event: f64,
    postcard: f64,
}

async fn measure(root: &Path, n: u64) -> Figures {
    let dir = root.join(format!("buffer-{n}"));
    eprintln!("filling {n} events…");
    let postcard = fill(&dir, n);
    let disk = du(&dir);
    let began = Instant::now();
    let gw = Gateway::start(
        &dir,
        &GatewayOptions {
            env: vec![(
                "EMOTION_GATEWAY__STORAGE__SCRUB_FIRST_AFTER".into(),
                "3s".into(),
            )],
            config: None,
        },
    )
    .expect("start");
    let listen = began.elapsed();
    let pid = gw.pid();
    // Settled, before the first scrub begins.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_listen = status_kb(pid, "VmRSS:");
    // Wait for the start-up scrub (it reads every batch) to finish.
    let scrub_began = Instant::now();
    let deadline = scrub_began + Duration::from_secs(900);
    let scrub = loop {
        let h = gw.get_json("/health").await.expect("health");
        if !h["buffer_damage"]["last_scrub"].is_null() {
            break Some(scrub_began.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let peak = status_kb(pid, "VmHWM:");
    gw.terminate().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
    Figures {
        n,
        listen,
        scrub,
        rss_listen_mb: rss_listen as f64 / 1024.0,
        peak_mb: peak as f64 / 1024.0,
        disk_per_event: if n == 0 { 0.0 } else { disk as f64 / n as f64 },
        postcard,
    }
}

/// sled's memory follows the number of values it holds. At a low rate every
/// group commit holds an event or two; compaction should keep the number of
/// values close to that of full-load commits. Prints both, per 1,000 events.
fn values_per_thousand(root: &Path, n: u64) {
    let mut figures = Vec::new();
    for commit in [1usize, BATCH] {
        let dir = root.join(format!("values-{commit}"));
        let (store, _) = SledStore::open(&dir, StoreOptions::default()).expect("open");
        let events: Vec<EmotionEvent> = (0..n).map(|i| event(i, n)).collect();
        let began = Instant::now();
        for chunk in events.chunks(commit) {
            store.append(chunk).expect("append");
        }
        let took = began.elapsed();
        let values = store.stored_values().expect("values");
        figures.push(values as f64 * 1000.0 / n as f64);
        println!(
            "{n} events in commits of {commit:>4}: {values} stored values ({:.2} per 1,000 events), {:.0} commits/s",
            figures[figures.len() - 1],
            (n as f64 / commit as f64) / took.as_secs_f64()
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let [single, full] = figures[..] {
        println!(
            "stored values, single-event commits against commits of {BATCH}: {:.2}×",
            single / full
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("EMOTION_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 1_000_000, 10_000_000]);
    let root = tempfile::Builder::new()
        .prefix("emotion-start-bench-")
        .tempdir_in(
            std::env::var_os("EMOTION_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
        )
        .expect("tmp");
    if let Some(dir) = std::env::var_os("EMOTION_BENCH_FILL_ONLY") {
        for n in sizes {
            let postcard = fill(&Path::new(&dir).join(format!("buffer-{n}")), n);
            println!("filled {n}: {postcard:.1} postcard bytes per event");
        }
        return;
    }
    let mut all = Vec::new();
    for n in sizes {
        let f = measure(root.path(), n).await;
        println!(
            "{:>10} events: listening after {:>6.0} ms, RSS {:>5.1} MB at listening, peak {:>5.1} MB {}; {:>6.1} bytes on disk per event = {:.2}× its postcard size ({:.1} bytes)",
            f.n,
            f.listen.as_secs_f64() * 1000.0,
            f.rss_listen_mb,
            f.peak_mb,
            f.scrub
                .map_or("(scrub not finished in 900 s)".to_owned(), |d| format!(
                    "through the start-up scrub ({:.0} s)",
                    d.as_secs_f64()
                )),
            f.disk_per_event,
            if f.postcard > 0.0 {
                f.disk_per_event / f.postcard
            } else {
                0.0
            },
            f.postcard
        );
        all.push(f);
    }
    let low_rate: u64 = std::env::var("EMOTION_BENCH_LOW_RATE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    if low_rate > 0 {
        values_per_thousand(root.path(), low_rate);
    }
    if let (Some(small), Some(big)) = (
        all.iter().find(|f| f.n == 1_000_000),
        all.iter().find(|f| f.n == 10_000_000),
    ) {
        println!(
            "10 M against 1 M: RSS at listening {:.2}×, peak {:.2}×, time to listening {:.2}×",
            big.rss_listen_mb / small.rss_listen_mb,
            big.peak_mb / small.peak_mb,
            big.listen.as_secs_f64() / small.listen.as_secs_f64()
        );
    }
}
