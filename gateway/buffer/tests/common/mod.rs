//! Helpers shared by the buffer's integration tests.
#![allow(dead_code)]

use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use emotion_buffer::{EventQuery, EventStore, OpenReport, SledStore, StoreOptions};
use emotion_core::{EmotionEvent, EmotionLabel, Json, Source};
use uuid::Uuid;

/// Small settings, so postings flush, the window wraps, group commits are cut
/// into several values and small values are compacted within a test.
pub fn opts() -> StoreOptions {
    StoreOptions {
        cache_bytes: 4 << 20,
        dedup_window: 10_000,
        postings_flush_events: 50,
        value_bytes: 2048,
        stall_before_flush: None,
    }
}

pub fn open(dir: &Path) -> (SledStore, OpenReport) {
    SledStore::open(dir, opts()).expect("open")
}

/// An event of `user` with ingestion time `t` seconds after a fixed start.
pub fn event(user: &str, t: i64) -> EmotionEvent {
    let t0 = Utc
        .with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("valid");
    EmotionEvent {
        event_id: Uuid::now_v7(),
        user_id: user.into(),
        session_id: format!("s-{user}"),
        source: Source::ALL[(t as usize) % 8],
        emotion_label: EmotionLabel::Joy,
        valence: 0.5,
        arousal: 0.6,
        confidence: Some(0.9),
        timestamp: t0 + Duration::seconds(t),
        ingested_at: t0 + Duration::seconds(t),
        gateway_id: "gw".into(),
        producer: "client".into(),
        context: Some(Json::new(
            serde_json::json!({"t": t, "note": "some text to make the event a realistic size"}),
        )),
        biometrics: None,
        location: None,
        device_info: None,
        raw_data: None,
    }
}

pub fn all(store: &dyn EventStore) -> Vec<EmotionEvent> {
    store
        .events_after(None, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

pub fn of_user(store: &dyn EventStore, user: &str) -> Vec<EmotionEvent> {
    store
        .user_events(
            user,
            &EventQuery {
                limit: usize::MAX,
                ..Default::default()
            },
        )
        .expect("query")
}

/// Copy a store's files as they are now: what a crash would leave.
pub fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            crash_image(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}
