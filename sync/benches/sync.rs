//! Sync throughput: `cargo bench -p emotion-sync` (needs the PostgreSQL server
//! of the tests; creates and drops its own database).
//!
//! One million events per measurement (`EMOTION_SYNC_BENCH_EVENTS`), shipped
//! in batches as the daemon sends them (`batch_max_events`, default 5000;
//! `EMOTION_SYNC_BENCH_BATCH`), each batch its own transaction. Measured in
//! the same round, on the same server:
//!
//! - the reference: a raw binary COPY of the same rows, same batches, into a
//!   plain table (no partitions, indexes or constraints);
//! - `write_events`: COPY into the staging table, INSERT … ON CONFLICT into
//!   the partitioned, indexed table, cursor, commit; its time is the drain
//!   time of a million buffered events (target ≤ 10 s) and its rows/s over the
//!   reference's is the ratio (target ≥ 0.6);
//! - `write_event_batches`: the same, two batches at a time on two connections;
//! - the floor the schema sets: a raw binary COPY into a table with the same
//!   indexes and constraints (what any writer into this schema must pay).
//!
//! Two rounds, so checkpoints and cache warm-up do not favour either side.

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

/// Events as a busy gateway buffers them: 1000 users, time-ordered, every
/// event with a context object, half with biometrics, some with device info.
fn make_events(n: usize, offset: u64) -> Vec<EmotionEvent> {
    let t0 = Utc
        .with_ymd_and_hms(2025, 3, 1, 0, 0, 0)
        .single()
        .expect("valid date");
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
                context: Some(Json(json!({"time_period": "morning", "activity": "work"}))),
                biometrics: i
                    .is_multiple_of(2)
                    .then(|| Json(json!({"heart_rate": 60.0 + 40.0 * a}))),
                location: None,
                device_info: i
                    .is_multiple_of(4)
                    .then(|| Json(json!({"platform": "Android"}))),
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

fn j(o: &Option<Json>) -> Option<&serde_json::Value> {
    o.as_ref().map(|j| &j.0)
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
            let (c, r, b, l, d) = (
                j(&e.context),
                j(&e.raw_data),
                j(&e.biometrics),
                j(&e.location),
                j(&e.device_info),
            );
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
    raw.batch_execute(
        "CREATE TABLE bench_raw (LIKE emotional_events); \
         ALTER TABLE bench_raw SET (autovacuum_enabled = false); \
         CREATE TABLE bench_indexed (LIKE emotional_events INCLUDING ALL); \
         ALTER TABLE bench_indexed SET (autovacuum_enabled = false)",
    )
    .await
    .expect("plain table");

    println!("sync bench: {n} events per run, batches of {batch}, same server, same run");
    let mut ratios = (Vec::new(), Vec::new());
    let mut drains = (Vec::new(), Vec::new());
    let mut next_batch = 0u64;
    for round in 0..2u64 {
        let evs = make_events(3 * n, round * 3 * n as u64);
        let (seq, rest) = evs.split_at(n);
        let (pipe, indexed) = rest.split_at(n);
        let seq: Vec<&[EmotionEvent]> = seq.chunks(batch).collect();
        let pipe: Vec<&[EmotionEvent]> = pipe.chunks(batch).collect();
        let indexed: Vec<&[EmotionEvent]> = indexed.chunks(batch).collect();
        // A checkpoint before each measurement, so that one does not land in
        // the next measurement by chance.
        raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
        let t_raw = raw_copy(&raw, "bench_raw", &seq).await;
        raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
        let t_floor = raw_copy(&raw, "bench_indexed", &indexed).await;
        raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
        let t_seq = ours(&mut client, &seq, next_batch).await;
        next_batch += seq.len() as u64;
        raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
        let t_pipe = ours_pipelined(&mut client, &pipe, next_batch).await;
        next_batch += pipe.len() as u64;
        let rate = |t: f64| n as f64 / t;
        println!(
            "  round {}: raw binary COPY into a plain table {:>7.0} rows/s ({t_raw:.2} s) | \
             write_events {:>7.0} rows/s ({t_seq:.2} s), ratio {:.2} | \
             write_event_batches (2 connections) {:>7.0} rows/s ({t_pipe:.2} s), ratio {:.2}\n    \
             floor set by the schema: raw binary COPY into a table with the same indexes \
             {:>7.0} rows/s ({t_floor:.2} s); write_events / floor = {:.2}",
            round + 1,
            rate(t_raw),
            rate(t_seq),
            t_raw / t_seq,
            rate(t_pipe),
            t_raw / t_pipe,
            rate(t_floor),
            t_floor / t_seq,
        );
        ratios.0.push(t_raw / t_seq);
        ratios.1.push(t_raw / t_pipe);
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
        "write_events:        throughput / raw binary COPY = {:.2} (target >= 0.60); \
         drain 1,000,000 events: {} (target <= 10 s)",
        mean(&ratios.0),
        range(&drains.0)
    );
    println!(
        "write_event_batches: throughput / raw binary COPY = {:.2} (target >= 0.60); \
         drain 1,000,000 events: {} (target <= 10 s)",
        mean(&ratios.1),
        range(&drains.1)
    );
    let total: i64 = raw
        .query_one("SELECT count(*) FROM emotional_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(total as usize, 4 * n, "every event stored exactly once");
    println!(
        "(ratios compare rows/s measured in the same round; drain = wall time of the 1,000,000 events through the writer, batches of {batch})"
    );
}
