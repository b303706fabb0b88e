//! Sync throughput: `cargo bench -p emotion-sync` (needs the PostgreSQL server
//! of the tests; creates and drops its own database).
//!
//! One million events per measurement (`EMOTION_SYNC_BENCH_EVENTS`), shipped
//! in batches as the daemon sends them (`batch_max_events`, default 5000;
//! `EMOTION_SYNC_BENCH_BATCH`), each batch its own transaction. Each round
//! takes two sets of rows and measures, on the same server:
//!
//! - the reference: a raw binary COPY of the rows, in the same batches, into
//!   `bench_events`, a table defined like `emotional_events` (partitioned by
//!   month, same key, indexes and constraints; the COPY goes straight into the
//!   month's partition, as the writer's INSERT does);
//! - `write_events` (set 1) and `write_event_batches` (set 2, two connections,
//!   what the daemon uses for a backlog): COPY into the staging table,
//!   INSERT … ON CONFLICT into `emotional_events`, cursor, commit. Rows/s over
//!   the reference's rows/s for the same set is the ratio (target ≥ 0.6); the
//!   wall time is the drain time of a million events (target ≤ 10 s);
//! - for context, a raw binary COPY of set 1 into a plain table (no
//!   partitions, indexes or constraints): what the schema's indexes cost.
//!
//! Both tables receive the same rows, so they grow alike; the order of the
//! reference and the writer alternates between rounds, and a checkpoint
//! precedes every measurement, so neither side inherits the other's cache
//! or checkpoint.

use std::pin::pin;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use emotion_core::{EmotionEvent, EmotionLabel, Json, Source};
use emotion_sync::testing::{TempCluster, TestDatabase};
use emotion_sync::{Cursor, SyncClient, SyncConfig};
use serde_json::json;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// Server settings for bulk writes (EMOTION_SYNC_BENCH_TUNED=1).
const TUNED: [(&str, &str); 6] = [
    ("shared_buffers", "1GB"),
    ("wal_buffers", "64MB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
    ("wal_compression", "lz4"),
    ("bgwriter_lru_maxpages", "1000"),
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// When the bench's events start. Every run's events (a few million, 250 µs
/// apart) fall within March 2025: one partition, named in `main`.
fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// Events as a busy gateway buffers them: 1000 users, time-ordered, every
/// event with a context object, half with biometrics, some with device info.
fn make_events(n: usize, offset: u64) -> Vec<EmotionEvent> {
    let t0 = t0();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ offset;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n as u64)
        .map(|i| {
            let i = i + offset;
            let (v, a) = (rnd() * 2.0 - 1.0, rnd());
            let at = t0 + Duration::microseconds(i as i64 * 250);
            let u = i % 1000;
            EmotionEvent {
                event_id: Uuid::from_u128(u128::from(i) << 64 | 0x7000),
                user_id: format!("user-{u}"),
                session_id: format!("session_{u}_{}", i / 200_000),
                source: Source::ALL[(i % 8) as usize],
                emotion_label: EmotionLabel::nearest(v, a),
                valence: v,
                arousal: a,
                confidence: Some(0.5 + rnd() / 2.0),
                timestamp: at - Duration::milliseconds(40),
                ingested_at: at,
                gateway_id: "bench-gw".into(),
                producer: "client".into(),
                context: Some(Json::new(
                    json!({"time_period": "morning", "activity": "work"}),
                )),
                biometrics: i
                    .is_multiple_of(2)
                    .then(|| Json::new(json!({"heart_rate": 60.0 + 40.0 * a}))),
                location: None,
                device_info: i
                    .is_multiple_of(4)
                    .then(|| Json::new(json!({"platform": "Android"}))),
                raw_data: None,
            }
        })
        .collect()
}

const RAW_COLUMNS: &str = "user_id, event_id, session_id, source, emotion_label, valence, \
    arousal, confidence, context, raw_payload, biometrics, location, device_info, \"timestamp\", \
    ingested_at, gateway_id, producer";

const RAW_TYPES: [Type; 17] = [
    Type::TEXT,
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
];

/// The bench's events hold parsed values, so this borrows (no parse).
fn j(o: &Option<Json>) -> Option<std::borrow::Cow<'_, serde_json::Value>> {
    o.as_ref().map(Json::value)
}

/// The reference: binary COPY of the same rows, same batches, into `table`.
async fn raw_copy(
    client: &tokio_postgres::Client,
    table: &str,
    batches: &[&[EmotionEvent]],
) -> f64 {
    let start = Instant::now();
    for batch in batches {
        let sink = client
            .copy_in(&format!(
                "COPY {table} ({RAW_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .expect("COPY");
        let mut w = pin!(BinaryCopyInWriter::new(sink, &RAW_TYPES));
        for e in *batch {
            let values = [
                j(&e.context),
                j(&e.raw_data),
                j(&e.biometrics),
                j(&e.location),
                j(&e.device_info),
            ];
            let [c, r, b, l, d] = [0, 1, 2, 3, 4].map(|i| values[i].as_deref());
            let row: [&(dyn ToSql + Sync); 17] = [
                &e.user_id,
                &e.event_id,
                &e.session_id,
                &e.source.as_str(),
                &e.emotion_label.as_str(),
                &e.valence,
                &e.arousal,
                &e.confidence,
                &c,
                &r,
                &b,
                &l,
                &d,
                &e.timestamp,
                &e.ingested_at,
                &e.gateway_id,
                &e.producer,
            ];
            w.as_mut().write(&row).await.expect("row");
        }
        w.as_mut().finish().await.expect("finish");
    }
    start.elapsed().as_secs_f64()
}

/// The batches paired for `write_event_batches` (two connections).
async fn ours_pipelined(
    client: &mut SyncClient,
    batches: &[&[EmotionEvent]],
    first_batch: u64,
) -> f64 {
    let start = Instant::now();
    let with_cursors: Vec<(&[EmotionEvent], Cursor)> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| (*b, Cursor::new(first_batch + i as u64 + 1, 0)))
        .collect();
    for pair in with_cursors.chunks(2) {
        let out = client
            .write_event_batches("bench-gw", pair)
            .await
            .expect("write_event_batches");
        assert_eq!(
            out.inserted as usize,
            pair.iter().map(|(b, _)| b.len()).sum::<usize>(),
            "every row is new"
        );
    }
    start.elapsed().as_secs_f64()
}

async fn ours(client: &mut SyncClient, batches: &[&[EmotionEvent]], first_batch: u64) -> f64 {
    let start = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        let out = client
            .write_events(
                "bench-gw",
                batch,
                Cursor::new(first_batch + i as u64 + 1, 0),
            )
            .await
            .expect("write_events");
        assert_eq!(out.inserted as usize, batch.len(), "every row is new");
    }
    start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n = env_usize("EMOTION_SYNC_BENCH_EVENTS", 1_000_000);
    let batch = env_usize(
        "EMOTION_SYNC_BENCH_BATCH",
        SyncConfig::default().batch_max_events,
    );
    // EMOTION_SYNC_BENCH_TUNED=1: run on a private instance configured for
    // bulk writes instead of the development server's defaults (128 MB of
    // shared buffers, 4 MB of WAL buffers, checkpoints every 1 GB of WAL).
    let tuned = std::env::var_os("EMOTION_SYNC_BENCH_TUNED").is_some();
    let _cluster;
    let db = if tuned {
        let c = TempCluster::init().expect("initdb a private instance");
        c.start_with(&TUNED).expect("start it");
        let db = TestDatabase::create_on(&c.url("postgres")).await;
        _cluster = Some(c);
        println!("private instance with {TUNED:?}");
        db
    } else {
        _cluster = None;
        TestDatabase::create().await
    };
    let mut client = SyncClient::connect(db.url()).await.expect("connect");
    client.migrate().await.expect("migrate");
    let (raw, conn) = tokio_postgres::connect(db.url(), NoTls)
        .await
        .expect("connect raw");
    tokio::spawn(conn);
    client
        .ensure_partitions(t0(), t0())
        .await
        .expect("partition");
    raw.batch_execute(
        "CREATE TABLE bench_plain (LIKE emotional_events); \
         ALTER TABLE bench_plain SET (autovacuum_enabled = false); \
         CREATE TABLE bench_events (LIKE emotional_events INCLUDING ALL) \
             PARTITION BY RANGE (ingested_at); \
         CREATE TABLE bench_events_p2025_03 PARTITION OF bench_events \
             FOR VALUES FROM ('2025-03-01 00:00:00+00') TO ('2025-04-01 00:00:00+00') \
             WITH (autovacuum_enabled = false); \
         CREATE TABLE bench_events_default PARTITION OF bench_events DEFAULT; \
         ALTER TABLE emotional_events_p2025_03 SET (autovacuum_enabled = false)",
    )
    .await
    .expect("reference tables");

    println!("sync bench: {n} events per run, batches of {batch}, same server, same run");
    let mut ratios = (Vec::new(), Vec::new(), Vec::new());
    let mut drains = (Vec::new(), Vec::new());
    let mut next_batch = 0u64;
    for round in 0..2u64 {
        let evs = make_events(2 * n, round * 2 * n as u64);
        let (set1, set2) = evs.split_at(n);
        let set1: Vec<&[EmotionEvent]> = set1.chunks(batch).collect();
        let set2: Vec<&[EmotionEvent]> = set2.chunks(batch).collect();
        let reference_first = round % 2 == 0;
        // A checkpoint before each measurement, so that one does not land in
        // the next measurement by chance.
        raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
        let t_plain = raw_copy(&raw, "bench_plain", &set1).await;

        // (reference, writer) times for set 1 (write_events) and set 2
        // (write_event_batches).
        let mut times = [(0.0, 0.0); 2];
        for (set, pipelined) in [(&set1, false), (&set2, true)] {
            let slot = &mut times[usize::from(pipelined)];
            for turn in 0..2 {
                raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
                if (turn == 0) == reference_first {
                    slot.0 = raw_copy(&raw, "bench_events_p2025_03", set).await;
                } else {
                    slot.1 = if pipelined {
                        ours_pipelined(&mut client, set, next_batch).await
                    } else {
                        ours(&mut client, set, next_batch).await
                    };
                    next_batch += set.len() as u64;
                }
            }
        }
        let [(t_ref1, t_seq), (t_ref2, t_pipe)] = times;
        let rate = |t: f64| n as f64 / t;
        println!(
            "  round {} ({} first):\n    \
             set 1: raw binary COPY into bench_events {:>7.0} rows/s ({t_ref1:.2} s) | \
             write_events {:>7.0} rows/s ({t_seq:.2} s), ratio {:.2}\n    \
             set 2: raw binary COPY into bench_events {:>7.0} rows/s ({t_ref2:.2} s) | \
             write_event_batches (2 connections) {:>7.0} rows/s ({t_pipe:.2} s), ratio {:.2}\n    \
             context: raw binary COPY of set 1 into a plain table without indexes \
             {:>7.0} rows/s ({t_plain:.2} s); write_events / that = {:.2}",
            round + 1,
            if reference_first {
                "reference"
            } else {
                "writer"
            },
            rate(t_ref1),
            rate(t_seq),
            t_ref1 / t_seq,
            rate(t_ref2),
            rate(t_pipe),
            t_ref2 / t_pipe,
            rate(t_plain),
            t_plain / t_seq,
        );
        ratios.0.push(t_ref1 / t_seq);
        ratios.1.push(t_ref2 / t_pipe);
        ratios.2.push(t_plain / t_seq);
        drains.0.push(t_seq);
        drains.1.push(t_pipe);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let scale = 1_000_000.0 / n as f64;
    let range = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min) * scale;
        let hi = v.iter().cloned().fold(0.0, f64::max) * scale;
        format!("{lo:.1}–{hi:.1} s")
    };
    println!(
        "write_events:        throughput / raw binary COPY of the same rows into the same table definition = {:.2} (target >= 0.60); \
         drain 1,000,000 events: {} (target <= 10 s)",
        mean(&ratios.0),
        range(&drains.0)
    );
    println!(
        "write_event_batches: throughput / raw binary COPY of the same rows into the same table definition = {:.2} (target >= 0.60); \
         drain 1,000,000 events: {} (target <= 10 s)",
        mean(&ratios.1),
        range(&drains.1)
    );
    println!(
        "context: write_events / raw binary COPY into a plain table without indexes = {:.2}",
        mean(&ratios.2)
    );
    let total: i64 = raw
        .query_one("SELECT count(*) FROM emotional_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(total as usize, 4 * n, "every event stored exactly once");
    let reference: i64 = raw
        .query_one("SELECT count(*) FROM bench_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(reference, total, "both tables hold the same rows");
    println!(
        "(ratios compare rows/s measured in the same round; drain = wall time of the 1,000,000 events through the writer, batches of {batch})"
    );
}
