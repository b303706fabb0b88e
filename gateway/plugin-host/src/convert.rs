//! Between the gateway's types and the plugin ABI: a raw reading (JSON wire
//! form) into a WIT reading, and a plugin's emotion into an emotion event.

use chrono::{DateTime, TimeZone, Utc};
use emotion_core::reading::{AuValue, RawReading, ReadingPayload, VoicePayload};
use emotion_core::{EmotionEvent, EmotionLabel, Json};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::wit;

/// Most extra fields one emotion may carry (both ABIs); beyond it a plugin's
/// output is garbage, not context.
pub(crate) const MAX_EXTRA_FIELDS: usize = 64;

/// The WIT reading for a raw reading; a missing session or timestamp is
/// filled in from `now` (the gateway's clock at reception).
pub fn to_wit(r: &RawReading, now: DateTime<Utc>) -> wit::Reading {
    wit::Reading {
        user_id: r.user_id.clone(),
        session_id: r.session_or_default(now),
        device_id: r.device_id.clone(),
        timestamp_ms: r.timestamp.unwrap_or(now).timestamp_millis(),
        source: wit::source_from_core(r.source),
        payload: payload_to_wit(&r.payload),
    }
}

fn payload_to_wit(p: &ReadingPayload) -> wit::Payload {
    match p {
        ReadingPayload::Text(t) => wit::Payload::Text(wit::Text {
            content: t.text.clone(),
            language: t.language.clone(),
        }),
        ReadingPayload::Facial(f) => wit::Payload::Facial(wit::Facial {
            action_units: f
                .action_units
                .iter()
                .map(|(number, v)| wit::ActionUnit {
                    number: *number,
                    value: match v {
                        AuValue::Intensity(x) => wit::AuValue::Intensity(*x),
                        AuValue::Presence(b) => wit::AuValue::Presence(*b),
                    },
                })
                .collect(),
            landmarks: f
                .landmarks
                .iter()
                .map(|(x, y)| wit::Point { x: *x, y: *y })
                .collect(),
            head_pose: f.head_pose.map(|h| wit::HeadPose {
                pitch: h.pitch,
                yaw: h.yaw,
                roll: h.roll,
            }),
            detection_quality: f.detection_quality,
        }),
        ReadingPayload::Voice(VoicePayload::Prosody(p)) => {
            wit::Payload::Voice(wit::Voice::Prosody(wit::Prosody {
                f0_mean_hz: p.f0_mean_hz,
                f0_range_hz: p.f0_range_hz,
                loudness_db: p.loudness_db,
                speech_rate: p.speech_rate,
                jitter: p.jitter,
                shimmer: p.shimmer,
                hnr_db: p.hnr_db,
            }))
        }
        ReadingPayload::Voice(VoicePayload::Pcm {
            samples,
            sample_rate_hz,
        }) => wit::Payload::Voice(wit::Voice::Pcm(wit::Pcm {
            samples: samples.clone(),
            sample_rate_hz: *sample_rate_hz,
        })),
        ReadingPayload::Physiological(p) => wit::Payload::Physiological(wit::Physiological {
            heart_rate_bpm: p.heart_rate,
            rr_intervals_ms: p.rr_intervals_ms.clone(),
            skin_conductance_us: p.skin_conductance.clone(),
            eda_sample_rate_hz: p.eda_sample_rate_hz,
            breathing_rate_bpm: p.breathing_rate,
            skin_temperature_c: p.skin_temperature,
        }),
        ReadingPayload::Json(v) => wit::Payload::Json(v.to_string()),
        ReadingPayload::Raw(b) => wit::Payload::Raw(b.clone()),
    }
}

/// Event ids for the events of one batch: UUIDv7 with the batch's
/// millisecond and random bits drawn for the whole batch at once.
///
/// `Uuid::now_v7` asks the kernel for random bits on every id (a `getrandom`
/// system call, and a process-wide lock): for a BLE notification that was a
/// fifth of the host's time per reading. One draw per batch keeps the ids as
/// unpredictable (74 random bits each) and time-ordered to the millisecond.
#[derive(Debug)]
pub(crate) struct EventIds {
    millis: u64,
    random: Vec<[u8; 10]>,
    next: usize,
}

impl EventIds {
    /// Ids for up to `n` events stamped at `now`.
    pub(crate) fn new(n: usize, now: DateTime<Utc>) -> Self {
        let mut random = vec![[0u8; 10]; n];
        let filled = getrandom::fill(random.as_flattened_mut()).is_ok();
        EventIds {
            millis: u64::try_from(now.timestamp_millis()).unwrap_or(0),
            // Without the kernel's randomness (it does not fail on Linux),
            // each id falls back to `now_v7`'s own.
            random: if filled { random } else { Vec::new() },
            next: 0,
        }
    }

    /// The next id.
    pub(crate) fn next_id(&mut self) -> Uuid {
        match self.random.get(self.next) {
            Some(bytes) => {
                self.next += 1;
                uuid::Builder::from_unix_timestamp_millis(self.millis, bytes).into_uuid()
            }
            None => Uuid::now_v7(),
        }
    }
}

/// The event for one emotion. The numbers were checked when the batch came
/// back (see `runtime::check_results`); here the extra fields are judged,
/// which are per-reading answers.
pub fn to_event(
    reading: &wit::Reading,
    emotion: wit::Emotion,
    producer: &str,
    gateway_id: &str,
    now: DateTime<Utc>,
) -> Result<EmotionEvent, String> {
    to_event_with_id(reading, emotion, producer, gateway_id, now, Uuid::now_v7())
}

/// [`to_event`] with the event id given (see [`EventIds`]).
///
/// ABI 2: the label is already one of the gateway's, and the extra fields
/// are one JSON object text, parsed once straight into the context map.
pub(crate) fn to_event_with_id(
    reading: &wit::Reading,
    emotion: wit::Emotion,
    producer: &str,
    gateway_id: &str,
    now: DateTime<Utc>,
    event_id: Uuid,
) -> Result<EmotionEvent, String> {
    let label = match emotion.label {
        // A label keeps the plugin's coordinates.
        Some(l) => wit::label_to_core(l),
        None => EmotionLabel::nearest(emotion.valence, emotion.arousal),
    };
    let coordinates = Coordinates::new(label, emotion.valence, emotion.arousal, emotion.confidence);
    let context = extra_context(emotion.extra)?;
    event(
        reading,
        coordinates,
        context,
        (producer, gateway_id, now, event_id),
    )
}

/// An ABI 2 emotion's extra fields as the event's context: checked to be one
/// JSON object of at most [`MAX_EXTRA_FIELDS`] fields in one pass, and kept
/// as the text it is (parsing it into a map, only for the buffer to write
/// it back as text, was a fifth of the host's time per facial frame). No
/// fields: no context.
fn extra_context(text: String) -> Result<Option<Json>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let (context, fields) = Json::object_from_text(text).map_err(|e| {
        format!(
            "the extra fields are not a JSON object ({}): {}",
            e.error,
            excerpt(&e.text)
        )
    })?;
    if fields > MAX_EXTRA_FIELDS {
        return Err(format!(
            "{fields} extra fields (at most {MAX_EXTRA_FIELDS})"
        ));
    }
    Ok((fields > 0).then_some(context))
}

/// The start of a long text, for an error message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return format!("{text:?}");
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &text[..end])
}

/// [`to_event_with_id`] for an ABI 1 emotion: the label is a string to
/// parse, each extra field a `(key, JSON text)` pair.
pub(crate) fn abi1_to_event_with_id(
    reading: &wit::Reading,
    emotion: wit::abi1::Emotion,
    producer: &str,
    gateway_id: &str,
    now: DateTime<Utc>,
    event_id: Uuid,
) -> Result<EmotionEvent, String> {
    let label = match &emotion.label {
        // A label without coordinates is not possible here (the ABI requires
        // both); a label with coordinates keeps the plugin's coordinates.
        Some(l) => l
            .parse::<EmotionLabel>()
            .map_err(|e| format!("label: {e}"))?,
        None => EmotionLabel::nearest(emotion.valence, emotion.arousal),
    };
    let coordinates = Coordinates::new(label, emotion.valence, emotion.arousal, emotion.confidence);
    let context = extra_context(abi1_extra_text(emotion.extra)?)?;
    event(
        reading,
        coordinates,
        context,
        (producer, gateway_id, now, event_id),
    )
}

/// ABI 1's `(key, JSON text)` pairs as one JSON object text, so both ABIs'
/// extra fields become the context the same way ([`extra_context`]). Each
/// value must be one JSON value on its own (`1,"x":2` must not smuggle in
/// a field); no pairs: empty text.
fn abi1_extra_text(pairs: Vec<(String, String)>) -> Result<String, String> {
    let mut out = String::new();
    for (key, text) in pairs {
        serde_json::from_str::<IgnoredAny>(&text)
            .map_err(|e| format!("extra field `{key}` is not valid JSON ({e}): {text:?}"))?;
        out.push(if out.is_empty() { '{' } else { ',' });
        // A key is any string: serde_json escapes it (a NUL becomes
        // `\u0000`, which the storability check then finds).
        out.push_str(&Value::String(key).to_string());
        out.push(':');
        out.push_str(&text);
    }
    if !out.is_empty() {
        out.push('}');
    }
    Ok(out)
}

/// An emotion's label and numbers, whichever ABI carried them.
struct Coordinates {
    label: EmotionLabel,
    valence: f64,
    arousal: f64,
    confidence: f64,
}

impl Coordinates {
    fn new(label: EmotionLabel, valence: f64, arousal: f64, confidence: f64) -> Self {
        Self {
            label,
            valence,
            arousal,
            confidence,
        }
    }
}

/// The event, checked storable.
fn event(
    reading: &wit::Reading,
    c: Coordinates,
    context: Option<Json>,
    (producer, gateway_id, now, event_id): (&str, &str, DateTime<Utc>, Uuid),
) -> Result<EmotionEvent, String> {
    let timestamp = Utc
        .timestamp_millis_opt(reading.timestamp_ms)
        .single()
        .unwrap_or(now);
    let event = EmotionEvent {
        event_id,
        user_id: reading.user_id.clone(),
        session_id: reading.session_id.clone(),
        source: wit::source_to_core(reading.source),
        emotion_label: c.label,
        valence: c.valence,
        arousal: c.arousal,
        confidence: Some(c.confidence),
        timestamp,
        ingested_at: now,
        gateway_id: gateway_id.to_owned(),
        producer: producer.to_owned(),
        context,
        biometrics: None,
        location: None,
        device_info: reading.device_id.as_ref().map(|d| {
            let mut m = Map::new();
            m.insert("device_id".into(), Value::String(d.clone()));
            Json::new(Value::Object(m))
        }),
        raw_data: None,
    };
    // The rule every client event passes in `validate`: nothing the central
    // database cannot store (a U+0000 in `extra`, say), or the event would be
    // acknowledged and then refused by every sync attempt.
    // (`check_storable` walks a context kept as text only when the text has
    // the escape `\u0000`: see `Json::may_hold_nul`.)
    emotion_core::event::check_storable(&event).map_err(|e| e.to_string())?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 8, 15, 14, 30, 0)
            .single()
            .expect("valid")
    }

    fn reading() -> wit::Reading {
        let raw = RawReading::from_json(
            &json!({"user_id": "u1", "device_id": "cam-1", "source": "text",
                    "timestamp": "2024-08-15T14:00:00Z", "payload": {"text": "hi"}}),
            None,
        )
        .expect("valid");
        to_wit(&raw, now())
    }

    fn emotion(label: Option<wit::Label>, extra: &str) -> wit::Emotion {
        wit::Emotion {
            label,
            valence: 0.8,
            arousal: 0.7,
            confidence: 0.65,
            extra: extra.to_owned(),
        }
    }

    fn abi1_emotion(label: Option<&str>, extra: Vec<(&str, &str)>) -> wit::abi1::Emotion {
        wit::abi1::Emotion {
            label: label.map(str::to_owned),
            valence: 0.8,
            arousal: 0.7,
            confidence: 0.65,
            extra: extra
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn abi1_event(e: wit::abi1::Emotion) -> Result<EmotionEvent, String> {
        abi1_to_event_with_id(&reading(), e, "p@1", "gw", now(), Uuid::now_v7())
    }

    #[test]
    fn defaults_and_event_fields() {
        let r = reading();
        assert_eq!(r.session_id, format!("session_u1_{}", now().timestamp()));
        assert_eq!(r.timestamp_ms, now().timestamp_millis() - 30 * 60 * 1000);
        let e = to_event(
            &r,
            emotion(None, r#"{"n":3,"tags":["a"]}"#),
            "p@1.0.0",
            "gw",
            now(),
        )
        .expect("event");
        assert_eq!(e.emotion_label, EmotionLabel::nearest(0.8, 0.7));
        assert_eq!(e.producer, "p@1.0.0");
        assert_eq!(e.gateway_id, "gw");
        assert_eq!(e.confidence, Some(0.65));
        assert_eq!(e.timestamp.timestamp_millis(), r.timestamp_ms);
        assert_eq!(
            e.context.map(Json::into_value),
            Some(json!({"n": 3, "tags": ["a"]}))
        );
        assert_eq!(
            e.device_info.map(Json::into_value),
            Some(json!({"device_id": "cam-1"}))
        );
        // No extra fields, written either way: no context.
        for none in ["", "{}", " { } "] {
            let e = to_event(&r, emotion(None, none), "p@1", "gw", now()).expect("event");
            assert_eq!(e.context, None, "{none:?}");
        }
    }

    #[test]
    fn both_abis_make_the_same_event() {
        let r = reading();
        let v2 = to_event_with_id(
            &r,
            emotion(Some(wit::Label::Calm), r#"{"n":3,"tags":["a"]}"#),
            "p@1",
            "gw",
            now(),
            Uuid::nil(),
        )
        .expect("ABI 2 event");
        let v1 = abi1_to_event_with_id(
            &r,
            abi1_emotion(Some("calm"), vec![("n", "3"), ("tags", r#"["a"]"#)]),
            "p@1",
            "gw",
            now(),
            Uuid::nil(),
        )
        .expect("ABI 1 event");
        assert_eq!(v2.emotion_label, EmotionLabel::Calm);
        assert_eq!(
            serde_json::to_value(&v1).expect("json"),
            serde_json::to_value(&v2).expect("json")
        );
    }

    #[test]
    fn batch_event_ids_are_v7_distinct_and_stamped_now() {
        let mut ids = EventIds::new(3, now());
        let got: Vec<Uuid> = (0..4).map(|_| ids.next_id()).collect();
        for id in &got[..3] {
            assert_eq!(id.get_version_num(), 7);
            let (secs, _) = id.get_timestamp().expect("v7 has a time").to_unix();
            assert_eq!(secs, now().timestamp() as u64);
        }
        // Past the batch's size: `now_v7`, still a valid id.
        assert_eq!(got[3].get_version_num(), 7);
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
    }

    #[test]
    fn bad_extra_text_is_an_error() {
        let r = reading();
        let e = to_event(&r, emotion(Some(wit::Label::Joy), ""), "p@1", "gw", now()).expect("joy");
        assert_eq!(e.emotion_label, EmotionLabel::Joy);
        for bad in ["{oops", "[1,2]", "3", r#"{"k":1}{"#, r#"{"k":[1e400]}"#] {
            let err = to_event(&r, emotion(None, bad), "p@1", "gw", now()).expect_err(bad);
            assert!(err.contains("not a JSON object"), "{bad}: {err}");
        }
        // Valid JSON the central database cannot store: refused like a client's.
        let err = to_event(
            &r,
            emotion(None, r#"{"k":{"n":["\u0000"]}}"#),
            "p@1",
            "gw",
            now(),
        )
        .expect_err("NUL");
        assert!(err.contains("context.k.n[0]"), "{err}");
        // A NUL in a key is found too.
        let err = to_event(&r, emotion(None, r#"{"a\u0000b":1}"#), "p@1", "gw", now())
            .expect_err("NUL key");
        assert!(err.contains("context"), "{err}");
        // Too many fields.
        let many: Vec<String> = (0..=MAX_EXTRA_FIELDS)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect();
        let text = format!("{{{}}}", many.join(","));
        let err = to_event(&r, emotion(None, &text), "p@1", "gw", now()).expect_err("too many");
        assert!(err.contains("at most 64"), "{err}");
    }

    #[test]
    fn abi1_unknown_labels_and_bad_extra_are_errors() {
        let e = abi1_event(abi1_emotion(Some("joy"), vec![])).expect("joy");
        assert_eq!(e.emotion_label, EmotionLabel::Joy);
        let err = abi1_event(abi1_emotion(Some("elation"), vec![])).expect_err("unknown label");
        assert!(err.contains("elation"), "{err}");
        let err = abi1_event(abi1_emotion(None, vec![("k", "{oops")])).expect_err("bad json");
        assert!(err.contains("`k`"), "{err}");
        let err =
            abi1_event(abi1_emotion(None, vec![("k", r#"{"n": ["\u0000"]}"#)])).expect_err("NUL");
        assert!(err.contains("context.k.n[0]"), "{err}");
        let err = abi1_event(abi1_emotion(None, vec![("a\0b", "1")])).expect_err("NUL key");
        assert!(err.contains("context"), "{err}");
    }
}
