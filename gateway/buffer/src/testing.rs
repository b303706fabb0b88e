//! Sample events for the tests of this crate and of the layers above.

use chrono::{Duration, TimeZone, Utc};
use emotion_core::{EmotionEvent, EmotionLabel, Json, Source};
use uuid::Uuid;

/// `n` events of `user` in session `s-{user}`, one second apart.
pub fn sample_events(n: usize, user: &str) -> Vec<EmotionEvent> {
    let t0 = Utc
        .with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    (0..n)
        .map(|i| EmotionEvent {
            event_id: Uuid::now_v7(),
            user_id: user.into(),
            session_id: format!("s-{user}"),
            source: Source::ALL[i % 8],
            emotion_label: EmotionLabel::Joy,
            valence: 0.5,
            arousal: 0.6,
            confidence: Some(0.9),
            timestamp: t0 + Duration::seconds(i as i64),
            ingested_at: t0 + Duration::seconds(i as i64),
            gateway_id: "gw".into(),
            producer: "client".into(),
            context: Some(Json::new(serde_json::json!({"i": i}))),
            biometrics: None,
            location: None,
            device_info: None,
            raw_data: None,
        })
        .collect()
}
