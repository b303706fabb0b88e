//! A client event read off the wire two ways, in the same run: the text path
//! (`Body::parse_str` + `validate_body`, `context`/`location`/`raw_data`
//! kept as text) against parsing the whole message into a `Value`
//! (`validate_owned`, what the WebSocket and MQTT paths did before).
//!
//! ```text
//! cargo run --release -p emotion-core --example body_parse [-- ROUNDS]
//! ```

use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use emotion_core::event::{Body, IngestContext, validate_body, validate_owned};
use serde_json::Value;

/// Two of the load tool's event shapes (facial and text), as it sends them.
const MESSAGES: [&str; 2] = [
    r#"{"user_id":"load-1","source":"facial","emotion_label":"joy","valence":0.512,"arousal":0.633,"confidence":0.871,"timestamp":"2026-12-07T00:00:00.123456Z","context":{"detection_quality":0.912,"lighting_conditions":"good","face_angle":"frontal"},"raw_data":{"action_units":{"AU4":0.0,"AU6":1.536,"AU12":1.792,"AU5":1.266},"head_pose":{"pitch":2.0,"yaw":-5.5,"roll":1.0}},"device_info":{"device_type":"smartwatch","platform":"iOS","app_version":"2.3.1"}}"#,
    r#"{"user_id":"load-1","source":"text","emotion_label":"calm","valence":0.2,"arousal":0.3,"confidence":0.7,"timestamp":"2026-12-07T00:00:00.123456Z","context":{"message_type":"chat","message_length":120,"contains_emojis":false},"raw_data":{"text_sample":"Sample text showing calm emotion...","word_count":17,"sentiment_scores":{"positive":0.2,"negative":0.0,"neutral":0.8}},"location":{"type":"office","latitude":-23.561414,"longitude":-46.655881,"accuracy":12.5}}"#,
];

const PER_ROUND: usize = 100_000;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let ctx = IngestContext {
        user_id: None,
        session_id: None,
        gateway_id: "gw",
        producer: "client",
        now: Utc::now(),
        event_id: uuid::Uuid::now_v7(),
        confidence_in_source_range: false,
    };
    let text_path = |m: &str| {
        let body = Body::parse_str(m).expect("a valid message");
        validate_body(body, &ctx).expect("a valid event")
    };
    let value_path = |m: &str| {
        let Ok(Value::Object(body)) = serde_json::from_str::<Value>(m) else {
            panic!("a JSON object")
        };
        validate_owned(body, &ctx).expect("a valid event")
    };
    // Both paths must build the same events before they are timed.
    for m in MESSAGES {
        assert_eq!(text_path(m), value_path(m));
    }
    let (mut text_ns, mut value_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (path, out) in [
            (&text_path as &dyn Fn(&str) -> _, &mut text_ns),
            (&value_path, &mut value_ns),
        ] {
            let started = Instant::now();
            for i in 0..PER_ROUND {
                black_box(path(black_box(MESSAGES[i % 2])));
            }
            out.push(started.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t, v) = (median(&mut text_ns), median(&mut value_ns));
    println!(
        "read and validate one event, median of {rounds} rounds of {PER_ROUND}: \
         text path {t:.0} ns, whole message as a Value {v:.0} ns, ratio {:.2}",
        t / v
    );
}
