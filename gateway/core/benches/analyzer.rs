//! Analyzer throughput on one core: `cargo bench -p emotion-core --bench analyzer`.
//!
//! Prints events analyzed per second (target ≥ 1M/s) and, as a reference taken
//! in the same run, the rate of the bare bookkeeping every per-user analyzer
//! pays (find user and session, push into a ring). Then the time to compute
//! the credit/risk summaries (7 and 30 days) of 100,000 users, against the
//! time it took to ingest their events in the same run.

use std::hint::black_box;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use emotion_core::{Analyzer, EmotionEvent, EmotionLabel, Source};
use uuid::Uuid;

fn events(n: usize, users: usize) -> Vec<EmotionEvent> {
    let t0 = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let u = i % users;
            let (v, a) = (rnd() * 2.0 - 1.0, rnd());
            let at = t0 + Duration::milliseconds(i as i64);
            EmotionEvent {
                event_id: Uuid::from_u128(i as u128),
                user_id: format!("user-{u}"),
                session_id: format!("session_{u}_{}", i / (users * 200)),
                source: Source::ALL[i % 8],
                emotion_label: EmotionLabel::nearest(v, a),
                valence: v,
                arousal: a,
                confidence: Some(0.8),
                timestamp: at,
                ingested_at: at,
                gateway_id: "bench".into(),
                producer: "client".into(),
                context: None,
                biometrics: None,
                location: None,
                device_info: None,
                raw_data: None,
            }
        })
        .collect()
}

/// The floor every per-user analyzer pays: find the user and the session in a
/// hash map and push the point into a bounded ring for each, nothing else.
fn bookkeeping_floor(evs: &[EmotionEvent]) -> f64 {
    use std::collections::{HashMap, VecDeque};
    let mut users: HashMap<&str, VecDeque<(f64, f64, f64)>> = HashMap::new();
    let mut sessions: HashMap<&str, VecDeque<(f64, f64, f64)>> = HashMap::new();
    let mut acc = 0.0;
    for e in evs {
        let p = (e.valence, e.arousal, e.timestamp.timestamp() as f64);
        for (map, key, cap) in [
            (&mut users, e.user_id.as_str(), 50),
            (&mut sessions, e.session_id.as_str(), 100),
        ] {
            let d = map.entry(key).or_default();
            if d.len() == cap {
                d.pop_front();
            }
            d.push_back(p);
            acc += d.len() as f64;
        }
    }
    acc
}

fn measure(users: usize) {
    let n = 2_000_000;
    let evs = events(n, users);
    let mut an = Analyzer::default();
    let start = Instant::now();
    for e in &evs {
        black_box(an.ingest(e));
    }
    let ours = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    black_box(bookkeeping_floor(&evs));
    let floor = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "analyzer, {users} users: {:.2} M events/s on one core (target >= 1.00 M/s); \
         reference (map lookups + ring pushes only): {:.2} M/s; ratio ours/reference = {:.2}",
        ours / 1e6,
        floor / 1e6,
        ours / floor
    );
}

/// The summaries of 100,000 users with 8 events each, against ingesting
/// those events.
fn summaries() {
    let users = 100_000;
    let evs = events(8 * users, users);
    let mut an = Analyzer::default();
    let start = Instant::now();
    for e in &evs {
        black_box(an.ingest(e));
    }
    let ingest = start.elapsed().as_secs_f64();
    let now = evs.last().map(|e| e.ingested_at).unwrap_or_else(Utc::now);
    let start = Instant::now();
    let all = black_box(an.all_credit_summaries(now, &[7, 30]));
    let took = start.elapsed().as_secs_f64();
    assert_eq!(all.len(), 2 * users, "one summary per user and window");
    println!(
        "credit/risk summaries of {users} users (7 and 30 days): {:.0} ms, {:.2} µs per user; \
         reference: ingesting their {} events took {:.0} ms; ratio summaries/ingest = {:.2}",
        took * 1e3,
        took * 1e6 / users as f64,
        evs.len(),
        ingest * 1e3,
        took / ingest
    );
}

fn main() {
    for users in [100, 1_000, 10_000] {
        measure(users);
    }
    summaries();
}
