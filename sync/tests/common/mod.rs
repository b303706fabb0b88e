//! Shared helpers of the integration tests: every test gets its own database
//! on the real server (created here, dropped when the guard goes).

#![allow(dead_code)] // each test binary uses a different subset

use chrono::{DateTime, Duration, TimeZone, Utc};
use emotion_core::{EmotionEvent, EmotionLabel, Json, Source};
use emotion_sync::SyncClient;
use emotion_sync::testing::TestDatabase;
use serde_json::json;
use uuid::Uuid;

/// A migrated, empty database and a client on it.
pub async fn fresh() -> (TestDatabase, SyncClient) {
    let db = TestDatabase::create().await;
    let mut client = SyncClient::connect(db.url()).await.expect("connect");
    client.migrate().await.expect("migrate");
    (db, client)
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 5, 20, 12, 0, 0)
        .single()
        .expect("valid")
}

/// Event `n` of `user`, ingested `n` milliseconds after `at`, with every
/// optional object filled so that each column is exercised.
pub fn event_at(user: &str, n: u64, at: DateTime<Utc>) -> EmotionEvent {
    let ingested = at + Duration::milliseconds(n as i64);
    let v = ((n * 37) % 200) as f64 / 100.0 - 1.0;
    let a = ((n * 53) % 100) as f64 / 100.0;
    EmotionEvent {
        event_id: Uuid::now_v7(),
        user_id: user.to_owned(),
        session_id: format!("session_{user}_{}", n / 100),
        source: Source::ALL[(n % 8) as usize],
        emotion_label: EmotionLabel::nearest(v, a),
        valence: v,
        arousal: a,
        confidence: if n.is_multiple_of(5) { None } else { Some(0.9) },
        timestamp: ingested - Duration::seconds(2),
        ingested_at: ingested,
        gateway_id: "gw-test".to_owned(),
        producer: "client".to_owned(),
        context: Some(Json::new(json!({"time_period": "afternoon", "n": n}))),
        biometrics: Some(Json::new(json!({"heart_rate": 72.5}))),
        location: if n.is_multiple_of(2) {
            Some(Json::new(json!({"type": "home"})))
        } else {
            None
        },
        device_info: Some(Json::new(json!({"platform": "iOS"}))),
        raw_data: Some(Json::new(json!({"action_units": {"AU6": 2.0}}))),
    }
}

pub fn events(user: &str, range: std::ops::Range<u64>) -> Vec<EmotionEvent> {
    range.map(|n| event_at(user, n, t0())).collect()
}

/// A single number from a query.
pub async fn scalar(client: &mut SyncClient, sql: &str) -> i64 {
    client
        .client()
        .await
        .expect("connection")
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}
