//! Raw readings: what devices send before a plugin turns them into emotion
//! events, and their JSON wire form (WebSocket `/ws/readings`, MQTT, JSONL
//! test files).
//!
//! ```json
//! {"user_id": "u1", "session_id": "s1", "device_id": "cam-3",
//!  "timestamp": "2024-08-15T14:30:00Z", "source": "facial",
//!  "payload": {"action_units": {"AU6": 2.5, "AU12": 3.0, "AU25": true},
//!              "head_pose": {"pitch": 2, "yaw": -5, "roll": 0},
//!              "detection_quality": 0.9}}
//! ```
//!
//! `session_id`, `device_id` and `timestamp` are optional (the gateway fills in
//! the default session and its own clock). The payload's shape depends on the
//! source (see [`ReadingPayload`]); every source also accepts the generic
//! `{"json": …}` and `{"raw_base64": "…"}` forms. Unknown keys are errors, at
//! the top level and in the payload, so a misspelt field is reported instead
//! of silently dropped. Validation reports every problem at once, each naming
//! its field.
//!
//! Pure: no I/O, no clock (callers pass `now`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value, json};

use crate::event::{
    FieldError, ValidationError, check_identifier, default_session_id, parse_timestamp,
    parse_user_id,
};
use crate::source::Source;

/// Most entries in any list of a payload (samples, landmarks, intervals).
pub const MAX_LIST_LEN: usize = 1_000_000;
/// Longest accepted text payload, in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Largest decoded `raw_base64` / `pcm_base64` payload, in bytes.
pub const MAX_BINARY_BYTES: usize = 4 << 20;

/// One raw reading from one device about one user.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReading {
    pub user_id: String,
    pub session_id: Option<String>,
    pub device_id: Option<String>,
    /// When the reading was taken; `None`: when the gateway received it.
    pub timestamp: Option<DateTime<Utc>>,
    pub source: Source,
    pub payload: ReadingPayload,
}

/// What a reading carries.
///
/// | source | accepted payload forms |
/// |---|---|
/// | text | [`TextPayload`] `{"text": "…", "language": "en"}` |
/// | voice | [`Prosody`] `{"f0_mean_hz": 180, …}` or PCM `{"pcm_base64": "…", "sample_rate": 16000}` |
/// | facial | [`FacialPayload`] `{"action_units": {"AU6": 2.5}, "landmarks": [[x, y]], "head_pose": {…}, "detection_quality": 0.9}` |
/// | physiological, biometric | [`PhysiologicalPayload`] `{"heart_rate": 72, "rr_intervals_ms": […], …}` |
/// | every source | `{"json": ANY}` or `{"raw_base64": "…"}` |
#[derive(Debug, Clone, PartialEq)]
pub enum ReadingPayload {
    Facial(FacialPayload),
    Voice(VoicePayload),
    Text(TextPayload),
    Physiological(PhysiologicalPayload),
    /// Structured data (survey answers, behavioral or contextual metrics).
    Json(Value),
    /// Anything else, as the device sent it.
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextPayload {
    pub text: String,
    pub language: Option<String>,
}

/// A FACS action unit's strength: intensity 0–5, or presence only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AuValue {
    Intensity(f64),
    Presence(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadPose {
    pub pitch: f64,
    pub yaw: f64,
    pub roll: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FacialPayload {
    /// (FACS number, value), sorted by number.
    pub action_units: Vec<(u8, AuValue)>,
    /// (x, y) in the detector's image coordinates.
    pub landmarks: Vec<(f64, f64)>,
    pub head_pose: Option<HeadPose>,
    /// 0–1.
    pub detection_quality: Option<f64>,
}

/// The voice prosody schema, declared once in `emotion-common` (the voice
/// plugin reads the same one).
pub use emotion_common::Prosody;

#[derive(Debug, Clone, PartialEq)]
pub enum VoicePayload {
    Prosody(Prosody),
    /// Mono signed 16-bit samples (sent as little-endian bytes in base64).
    Pcm {
        samples: Vec<i16>,
        sample_rate_hz: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PhysiologicalPayload {
    pub heart_rate: Option<f64>,
    pub rr_intervals_ms: Vec<f64>,
    /// Skin conductance samples, µS.
    pub skin_conductance: Vec<f64>,
    pub eda_sample_rate_hz: Option<f64>,
    /// Breaths per minute.
    pub breathing_rate: Option<f64>,
    /// °C.
    pub skin_temperature: Option<f64>,
}

const TOP_LEVEL_KEYS: [&str; 6] = [
    "user_id",
    "session_id",
    "device_id",
    "timestamp",
    "source",
    "payload",
];

impl RawReading {
    /// Validate a JSON reading. `bound_user` is the user the transport's
    /// credentials belong to, if it binds one: the body may then omit
    /// `user_id` and may not contradict it.
    pub fn from_json(body: &Value, bound_user: Option<&str>) -> Result<Self, ValidationError> {
        let Value::Object(body) = body else {
            return Err(ValidationError::single(
                "reading",
                format!("must be a JSON object, got {}", type_name(body)),
            ));
        };
        let mut errs = Errors::default();

        for key in body.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                errs.push(
                    "reading",
                    format!(
                        "unknown field `{key}` (expected one of: {})",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
            }
        }

        let user_id = match (body.get("user_id"), bound_user) {
            (None | Some(Value::Null), Some(bound)) => Some(bound.to_owned()),
            (None | Some(Value::Null), None) => {
                errs.push("user_id", "is required");
                None
            }
            (Some(v), bound) => match parse_user_id(v) {
                Ok(id) if bound.is_some_and(|b| b != id) => {
                    errs.push(
                        "user_id",
                        format!(
                            "`{id}` does not match the connection's user `{}`",
                            bound.unwrap_or_default()
                        ),
                    );
                    None
                }
                Ok(id) => Some(id),
                Err(m) => {
                    errs.push("user_id", m);
                    None
                }
            },
        };
        let session_id = optional_identifier(body, "session_id", &mut errs);
        let device_id = optional_identifier(body, "device_id", &mut errs);
        let timestamp = match body.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(v) => match parse_timestamp(v) {
                Ok(t) => Some(t),
                Err(m) => {
                    errs.push("timestamp", m);
                    None
                }
            },
        };
        let source = match body.get("source") {
            None | Some(Value::Null) => {
                errs.push("source", "is required");
                None
            }
            Some(Value::String(s)) => match s.parse::<Source>() {
                Ok(s) => Some(s),
                Err(e) => {
                    errs.push("source", e.to_string());
                    None
                }
            },
            Some(other) => {
                errs.push(
                    "source",
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        };
        let payload = match (body.get("payload"), source) {
            (None | Some(Value::Null), _) => {
                errs.push("payload", "is required");
                None
            }
            (Some(Value::Object(p)), Some(source)) => parse_payload(source, p, &mut errs),
            // Without a valid source the payload's shape cannot be judged;
            // the source error is already reported.
            (Some(Value::Object(_)), None) => None,
            (Some(other), _) => {
                errs.push(
                    "payload",
                    format!("must be an object, got {}", type_name(other)),
                );
                None
            }
        };

        if !errs.0.is_empty() {
            return Err(ValidationError { errors: errs.0 });
        }
        // Every `None` below was reported above; this `else` keeps the
        // function free of panics.
        let (Some(user_id), Some(source), Some(payload)) = (user_id, source, payload) else {
            return Err(ValidationError::single("reading", "incomplete reading"));
        };
        Ok(RawReading {
            user_id,
            session_id,
            device_id,
            timestamp,
            source,
            payload,
        })
    }

    /// Parse one line of JSON text (a JSONL file, a WebSocket message).
    pub fn from_json_str(text: &str, bound_user: Option<&str>) -> Result<Self, ValidationError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ValidationError::single("reading", format!("invalid JSON: {e}")))?;
        Self::from_json(&value, bound_user)
    }

    /// The session this reading belongs to: its own, or the original clients'
    /// default `session_{user_id}_{unix_seconds}`.
    pub fn session_or_default(&self, now: DateTime<Utc>) -> String {
        self.session_id
            .clone()
            .unwrap_or_else(|| default_session_id(&self.user_id, now))
    }

    /// The canonical JSON wire form (what [`RawReading::from_json`] accepts).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("user_id".into(), Value::String(self.user_id.clone()));
        if let Some(s) = &self.session_id {
            m.insert("session_id".into(), Value::String(s.clone()));
        }
        if let Some(d) = &self.device_id {
            m.insert("device_id".into(), Value::String(d.clone()));
        }
        if let Some(t) = &self.timestamp {
            m.insert(
                "timestamp".into(),
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            );
        }
        m.insert("source".into(), Value::String(self.source.as_str().into()));
        m.insert("payload".into(), self.payload.to_json());
        Value::Object(m)
    }
}

impl ReadingPayload {
    /// The payload's JSON wire form.
    pub fn to_json(&self) -> Value {
        let num = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
        let mut m = Map::new();
        let opt = |m: &mut Map<String, Value>, k: &str, x: Option<f64>| {
            if let Some(x) = x {
                m.insert(k.into(), num(x));
            }
        };
        match self {
            ReadingPayload::Text(t) => {
                m.insert("text".into(), Value::String(t.text.clone()));
                if let Some(l) = &t.language {
                    m.insert("language".into(), Value::String(l.clone()));
                }
            }
            ReadingPayload::Facial(f) => {
                let aus: Map<String, Value> = f
                    .action_units
                    .iter()
                    .map(|(n, v)| {
                        let v = match v {
                            AuValue::Intensity(x) => num(*x),
                            AuValue::Presence(p) => Value::Bool(*p),
                        };
                        (format!("AU{n}"), v)
                    })
                    .collect();
                m.insert("action_units".into(), Value::Object(aus));
                if !f.landmarks.is_empty() {
                    m.insert(
                        "landmarks".into(),
                        f.landmarks.iter().map(|(x, y)| json!([x, y])).collect(),
                    );
                }
                if let Some(h) = f.head_pose {
                    m.insert(
                        "head_pose".into(),
                        json!({"pitch": h.pitch, "yaw": h.yaw, "roll": h.roll}),
                    );
                }
                opt(&mut m, "detection_quality", f.detection_quality);
            }
            ReadingPayload::Voice(VoicePayload::Prosody(p)) => {
                for (key, value) in p.fields() {
                    opt(&mut m, key, value);
                }
            }
            ReadingPayload::Voice(VoicePayload::Pcm {
                samples,
                sample_rate_hz,
            }) => {
                let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                m.insert("pcm_base64".into(), Value::String(base64_encode(&bytes)));
                m.insert("sample_rate".into(), Value::from(*sample_rate_hz));
            }
            ReadingPayload::Physiological(p) => {
                opt(&mut m, "heart_rate", p.heart_rate);
                if !p.rr_intervals_ms.is_empty() {
                    m.insert(
                        "rr_intervals_ms".into(),
                        p.rr_intervals_ms.iter().map(|x| num(*x)).collect(),
                    );
                }
                if !p.skin_conductance.is_empty() {
                    m.insert(
                        "skin_conductance".into(),
                        p.skin_conductance.iter().map(|x| num(*x)).collect(),
                    );
                }
                opt(&mut m, "eda_sample_rate_hz", p.eda_sample_rate_hz);
                opt(&mut m, "breathing_rate", p.breathing_rate);
                opt(&mut m, "skin_temperature", p.skin_temperature);
            }
            ReadingPayload::Json(v) => {
                m.insert("json".into(), v.clone());
            }
            ReadingPayload::Raw(bytes) => {
                m.insert("raw_base64".into(), Value::String(base64_encode(bytes)));
            }
        }
        Value::Object(m)
    }
}

/// Collects field errors.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(FieldError {
            field,
            message: message.into(),
        });
    }
}

fn optional_identifier(
    body: &Map<String, Value>,
    field: &'static str,
    errs: &mut Errors,
) -> Option<String> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match check_identifier(s) {
            Ok(()) => Some(s.clone()),
            Err(m) => {
                errs.push(field, m);
                None
            }
        },
        Some(other) => {
            errs.push(field, format!("must be a string, got {}", type_name(other)));
            None
        }
    }
}

fn parse_payload(
    source: Source,
    p: &Map<String, Value>,
    errs: &mut Errors,
) -> Option<ReadingPayload> {
    // The generic forms, accepted for every source.
    if p.contains_key("json") || p.contains_key("raw_base64") {
        if p.len() != 1 {
            errs.push(
                "payload",
                "`json` and `raw_base64` must be the payload's only key",
            );
            return None;
        }
        if let Some(v) = p.get("json") {
            return Some(ReadingPayload::Json(v.clone()));
        }
        return match p.get("raw_base64") {
            Some(Value::String(s)) => match base64_decode(s, MAX_BINARY_BYTES) {
                Ok(bytes) => Some(ReadingPayload::Raw(bytes)),
                Err(m) => {
                    errs.push("payload.raw_base64", m);
                    None
                }
            },
            other => {
                errs.push(
                    "payload.raw_base64",
                    format!(
                        "must be a base64 string, got {}",
                        other.map_or("nothing", type_name)
                    ),
                );
                None
            }
        };
    }
    let before = errs.0.len();
    let payload = match source {
        Source::Text => text_payload(p, errs).map(ReadingPayload::Text),
        Source::Voice => voice_payload(p, errs).map(ReadingPayload::Voice),
        Source::Facial => Some(ReadingPayload::Facial(facial_payload(p, errs))),
        Source::Physiological | Source::Biometric => Some(ReadingPayload::Physiological(
            physiological_payload(p, errs),
        )),
        Source::Survey | Source::Behavioral | Source::Contextual => {
            errs.push(
                "payload",
                format!(
                    "a `{source}` reading carries `{{\"json\": …}}` or `{{\"raw_base64\": \"…\"}}`"
                ),
            );
            None
        }
    };
    (errs.0.len() == before).then_some(payload).flatten()
}

fn check_keys(p: &Map<String, Value>, allowed: &[&str], what: &str, errs: &mut Errors) {
    for key in p.keys() {
        if !allowed.contains(&key.as_str()) {
            errs.push(
                "payload",
                format!(
                    "unknown field `{key}` in a {what} payload (expected: {}, or the generic json / raw_base64)",
                    allowed.join(", ")
                ),
            );
        }
    }
}

fn text_payload(p: &Map<String, Value>, errs: &mut Errors) -> Option<TextPayload> {
    check_keys(p, &["text", "language"], "text", errs);
    let text = match p.get("text") {
        Some(Value::String(s)) if s.len() <= MAX_TEXT_BYTES => Some(s.clone()),
        Some(Value::String(s)) => {
            errs.push(
                "payload.text",
                format!("must be at most {MAX_TEXT_BYTES} bytes, got {}", s.len()),
            );
            None
        }
        None | Some(Value::Null) => {
            errs.push("payload.text", "is required");
            None
        }
        Some(other) => {
            errs.push(
                "payload.text",
                format!("must be a string, got {}", type_name(other)),
            );
            None
        }
    };
    let language = match p.get("language") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 35
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            Some(s.clone())
        }
        Some(other) => {
            errs.push(
                "payload.language",
                format!("must be a BCP 47 language tag like \"en\" or \"de-CH\", got {other}"),
            );
            None
        }
    };
    text.map(|text| TextPayload { text, language })
}

/// Wire bounds of each prosody feature (inclusive), in [`Prosody::FIELDS`]
/// order. Wide on purpose: plausibility is the voice plugin's business.
const PROSODY_BOUNDS: [(f64, f64); 7] = [
    (0.0, 2000.0),
    (0.0, 2000.0),
    (-200.0, 200.0),
    (0.0, 50.0),
    (0.0, 1.0),
    (0.0, 1.0),
    (-100.0, 100.0),
];

fn voice_payload(p: &Map<String, Value>, errs: &mut Errors) -> Option<VoicePayload> {
    let pcm = p.contains_key("pcm_base64") || p.contains_key("sample_rate");
    if pcm {
        check_keys(p, &["pcm_base64", "sample_rate"], "PCM voice", errs);
        let sample_rate = match p.get("sample_rate").map(Value::as_u64) {
            Some(Some(r)) if (1..=384_000).contains(&r) => u32::try_from(r).ok(),
            Some(_) => {
                errs.push(
                    "payload.sample_rate",
                    "must be an integer number of Hz between 1 and 384000",
                );
                None
            }
            None => {
                errs.push("payload.sample_rate", "is required with pcm_base64");
                None
            }
        };
        let samples = match p.get("pcm_base64") {
            Some(Value::String(s)) => match base64_decode(s, MAX_BINARY_BYTES) {
                Ok(bytes) if bytes.len() % 2 == 0 => Some(
                    bytes
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect::<Vec<_>>(),
                ),
                Ok(bytes) => {
                    errs.push(
                        "payload.pcm_base64",
                        format!(
                            "must hold 16-bit samples (an even number of bytes), got {} bytes",
                            bytes.len()
                        ),
                    );
                    None
                }
                Err(m) => {
                    errs.push("payload.pcm_base64", m);
                    None
                }
            },
            None => {
                errs.push("payload.pcm_base64", "is required with sample_rate");
                None
            }
            Some(other) => {
                errs.push(
                    "payload.pcm_base64",
                    format!(
                        "must be a base64 string of little-endian 16-bit samples, got {}",
                        type_name(other)
                    ),
                );
                None
            }
        };
        return samples
            .zip(sample_rate)
            .map(|(samples, sample_rate_hz)| VoicePayload::Pcm {
                samples,
                sample_rate_hz,
            });
    }
    check_keys(p, &Prosody::FIELDS, "voice prosody", errs);
    let mut prosody = Prosody::default();
    for (key, (lo, hi)) in Prosody::FIELDS.into_iter().zip(PROSODY_BOUNDS) {
        let value = number_in(p, key, lo, hi, errs);
        if let Some(slot) = prosody.field_mut(key) {
            *slot = value;
        }
    }
    if prosody == Prosody::default() && p.is_empty() {
        errs.push(
            "payload",
            "a voice payload needs prosody features (f0_mean_hz, …) or pcm_base64 + sample_rate",
        );
        return None;
    }
    Some(VoicePayload::Prosody(prosody))
}

fn facial_payload(p: &Map<String, Value>, errs: &mut Errors) -> FacialPayload {
    check_keys(
        p,
        &[
            "action_units",
            "landmarks",
            "head_pose",
            "detection_quality",
        ],
        "facial",
        errs,
    );
    let mut out = FacialPayload::default();
    match p.get("action_units") {
        None | Some(Value::Null) => {}
        Some(Value::Object(aus)) => {
            for (k, v) in aus {
                let digits = k
                    .strip_prefix("AU")
                    .or_else(|| k.strip_prefix("au"))
                    .unwrap_or(k);
                let Some(number) = digits.parse::<u8>().ok().filter(|n| (1..=99).contains(n))
                else {
                    errs.push(
                        "payload.action_units",
                        format!("`{k}` is not an action unit (write AU1 … AU99)"),
                    );
                    continue;
                };
                let value = match v {
                    Value::Bool(b) => AuValue::Presence(*b),
                    Value::Number(x) => match x.as_f64() {
                        Some(x) if (0.0..=5.0).contains(&x) => AuValue::Intensity(x),
                        _ => {
                            errs.push(
                                "payload.action_units",
                                format!("`{k}` intensity must be between 0 and 5, got {x}"),
                            );
                            continue;
                        }
                    },
                    other => {
                        errs.push(
                            "payload.action_units",
                            format!(
                                "`{k}` must be an intensity (0–5) or a presence (true/false), got {}",
                                type_name(other)
                            ),
                        );
                        continue;
                    }
                };
                if out.action_units.iter().any(|(n, _)| *n == number) {
                    errs.push("payload.action_units", format!("AU{number} is given twice"));
                    continue;
                }
                out.action_units.push((number, value));
            }
            out.action_units.sort_by_key(|(n, _)| *n);
        }
        Some(other) => errs.push(
            "payload.action_units",
            format!(
                "must be an object like {{\"AU6\": 2.5, \"AU12\": true}}, got {}",
                type_name(other)
            ),
        ),
    }
    match p.get("landmarks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(points)) if points.len() <= MAX_LIST_LEN => {
            for (i, pt) in points.iter().enumerate() {
                let xy = match pt {
                    Value::Array(xy) if xy.len() == 2 => xy[0]
                        .as_f64()
                        .zip(xy[1].as_f64())
                        .filter(|(x, y)| x.is_finite() && y.is_finite()),
                    Value::Object(o) => o
                        .get("x")
                        .and_then(Value::as_f64)
                        .zip(o.get("y").and_then(Value::as_f64))
                        .filter(|(x, y)| x.is_finite() && y.is_finite()),
                    _ => None,
                };
                match xy {
                    Some(xy) => out.landmarks.push(xy),
                    None => {
                        errs.push(
                            "payload.landmarks",
                            format!("point {i} must be [x, y] or {{\"x\": …, \"y\": …}} with finite numbers"),
                        );
                        break;
                    }
                }
            }
        }
        Some(Value::Array(_)) => errs.push(
            "payload.landmarks",
            format!("must have at most {MAX_LIST_LEN} points"),
        ),
        Some(other) => errs.push(
            "payload.landmarks",
            format!(
                "must be an array of [x, y] points, got {}",
                type_name(other)
            ),
        ),
    }
    match p.get("head_pose") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            let mut angle = |k: &str| -> Option<f64> {
                match h.get(k).and_then(Value::as_f64) {
                    Some(x) if (-180.0..=180.0).contains(&x) => Some(x),
                    _ => {
                        errs.push(
                            "payload.head_pose",
                            format!("`{k}` must be an angle in degrees between -180 and 180"),
                        );
                        None
                    }
                }
            };
            let (pitch, yaw, roll) = (angle("pitch"), angle("yaw"), angle("roll"));
            if let (Some(pitch), Some(yaw), Some(roll)) = (pitch, yaw, roll) {
                out.head_pose = Some(HeadPose { pitch, yaw, roll });
            }
            if let Some(k) = h
                .keys()
                .find(|k| !["pitch", "yaw", "roll"].contains(&k.as_str()))
            {
                errs.push(
                    "payload.head_pose",
                    format!("unknown field `{k}` (expected pitch, yaw, roll)"),
                );
            }
        }
        Some(other) => errs.push(
            "payload.head_pose",
            format!(
                "must be an object {{\"pitch\", \"yaw\", \"roll\"}}, got {}",
                type_name(other)
            ),
        ),
    }
    out.detection_quality = number_in(p, "detection_quality", 0.0, 1.0, errs);
    if out.action_units.is_empty() && out.landmarks.is_empty() && p.is_empty() {
        errs.push(
            "payload",
            "a facial payload needs action_units or landmarks",
        );
    }
    out
}

fn physiological_payload(p: &Map<String, Value>, errs: &mut Errors) -> PhysiologicalPayload {
    check_keys(
        p,
        &[
            "heart_rate",
            "rr_intervals_ms",
            "skin_conductance",
            "eda_sample_rate_hz",
            "breathing_rate",
            "skin_temperature",
        ],
        "physiological",
        errs,
    );
    let out = PhysiologicalPayload {
        heart_rate: number_in(p, "heart_rate", 1.0, 400.0, errs),
        rr_intervals_ms: number_list(p, "rr_intervals_ms", 1.0, 10_000.0, errs),
        skin_conductance: number_list(p, "skin_conductance", 0.0, 200.0, errs),
        eda_sample_rate_hz: number_in(p, "eda_sample_rate_hz", 0.001, 100_000.0, errs),
        breathing_rate: number_in(p, "breathing_rate", 0.0, 200.0, errs),
        skin_temperature: number_in(p, "skin_temperature", 0.0, 50.0, errs),
    };
    if !out.skin_conductance.is_empty() && out.eda_sample_rate_hz.is_none() {
        errs.push(
            "payload.eda_sample_rate_hz",
            "is required with skin_conductance",
        );
    }
    if p.is_empty() {
        errs.push(
            "payload",
            "a physiological payload needs at least one measurement",
        );
    }
    out
}

/// The full field name of a payload key, for error messages (`payload.<key>`).
fn payload_field(key: &'static str) -> &'static str {
    match key {
        "f0_mean_hz" => "payload.f0_mean_hz",
        "f0_range_hz" => "payload.f0_range_hz",
        "loudness_db" => "payload.loudness_db",
        "speech_rate" => "payload.speech_rate",
        "jitter" => "payload.jitter",
        "shimmer" => "payload.shimmer",
        "hnr_db" => "payload.hnr_db",
        "detection_quality" => "payload.detection_quality",
        "heart_rate" => "payload.heart_rate",
        "rr_intervals_ms" => "payload.rr_intervals_ms",
        "skin_conductance" => "payload.skin_conductance",
        "eda_sample_rate_hz" => "payload.eda_sample_rate_hz",
        "breathing_rate" => "payload.breathing_rate",
        "skin_temperature" => "payload.skin_temperature",
        _ => "payload",
    }
}

/// An optional number that, when present, must be finite and in [lo, hi].
fn number_in(
    p: &Map<String, Value>,
    key: &'static str,
    lo: f64,
    hi: f64,
    errs: &mut Errors,
) -> Option<f64> {
    match p.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Some(x),
            _ => {
                errs.push(
                    payload_field(key),
                    format!("must be between {lo} and {hi}, got {n}"),
                );
                None
            }
        },
        Some(other) => {
            errs.push(
                payload_field(key),
                format!("must be a number, got {}", type_name(other)),
            );
            None
        }
    }
}

fn number_list(
    p: &Map<String, Value>,
    key: &'static str,
    lo: f64,
    hi: f64,
    errs: &mut Errors,
) -> Vec<f64> {
    match p.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_LIST_LEN => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match v.as_f64() {
                    Some(x) if x.is_finite() && (lo..=hi).contains(&x) => out.push(x),
                    _ => {
                        errs.push(
                            payload_field(key),
                            format!("entry {i} must be a number between {lo} and {hi}, got {v}"),
                        );
                        return Vec::new();
                    }
                }
            }
            out
        }
        Some(Value::Array(_)) => {
            errs.push(
                payload_field(key),
                format!("must have at most {MAX_LIST_LEN} entries"),
            );
            Vec::new()
        }
        Some(other) => {
            errs.push(
                payload_field(key),
                format!("must be an array of numbers, got {}", type_name(other)),
            );
            Vec::new()
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4), with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (RFC 4648 §4); padding is optional, whitespace is not
/// allowed. Refuses input that would decode to more than `max` bytes.
pub fn base64_decode(s: &str, max: usize) -> Result<Vec<u8>, String> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return Err("is not valid base64 (too much padding)".into());
    }
    if body.len() % 4 == 1 {
        return Err("is not valid base64 (truncated)".into());
    }
    let decoded_len = body.len() / 4 * 3 + (body.len() % 4).saturating_sub(1);
    if decoded_len > max {
        return Err(format!(
            "decodes to {decoded_len} bytes, more than the {max} accepted"
        ));
    }
    let mut out = Vec::with_capacity(decoded_len);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in body.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!(
                    "is not valid base64 (unexpected {:?} at offset {i})",
                    char::from(c)
                ));
            }
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 8, 15, 14, 30, 0)
            .single()
            .expect("valid")
    }

    fn parse(v: Value) -> Result<RawReading, ValidationError> {
        RawReading::from_json(&v, None)
    }

    #[test]
    fn every_payload_form_parses_and_round_trips() {
        let samples: Vec<u8> = [1i16, -2, 300, i16::MIN]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let cases = [
            json!({"user_id": 1, "source": "text", "payload": {"text": "hi", "language": "en"}}),
            json!({"user_id": "u", "source": "facial", "session_id": "s", "device_id": "cam-1",
                   "timestamp": "2024-08-15T14:30:00Z",
                   "payload": {"action_units": {"AU12": 3.0, "AU6": 2.5, "au25": true},
                               "landmarks": [[1.0, 2.0], {"x": 3.0, "y": 4.0}],
                               "head_pose": {"pitch": 1, "yaw": -5, "roll": 0},
                               "detection_quality": 0.9}}),
            json!({"user_id": "u", "source": "voice", "payload": {"f0_mean_hz": 180, "jitter": 0.01}}),
            json!({"user_id": "u", "source": "voice",
                   "payload": {"pcm_base64": base64_encode(&samples), "sample_rate": 16000}}),
            json!({"user_id": "u", "source": "physiological",
                   "payload": {"heart_rate": 72, "rr_intervals_ms": [812, 790.5],
                               "skin_conductance": [2.1, 2.2], "eda_sample_rate_hz": 4,
                               "breathing_rate": 14, "skin_temperature": 33.1}}),
            json!({"user_id": "u", "source": "survey", "payload": {"json": {"sam_valence": 7}}}),
            json!({"user_id": "u", "source": "contextual", "payload": {"raw_base64": "AAEC"}}),
        ];
        for case in cases {
            let r = parse(case.clone()).unwrap_or_else(|e| panic!("{case}: {e}"));
            let again = parse(r.to_json()).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(r, again, "{case}");
        }
        let r = parse(json!({"user_id": "u", "source": "voice",
            "payload": {"pcm_base64": base64_encode(&samples), "sample_rate": 16000}}))
        .expect("valid");
        assert_eq!(
            r.payload,
            ReadingPayload::Voice(VoicePayload::Pcm {
                samples: vec![1, -2, 300, i16::MIN],
                sample_rate_hz: 16000
            })
        );
        let r = parse(json!({"user_id": "u", "source": "facial",
            "payload": {"action_units": {"AU12": 3.0, "AU6": 2.5, "au25": true}}}))
        .expect("valid");
        let ReadingPayload::Facial(f) = r.payload else {
            panic!("facial expected");
        };
        assert_eq!(
            f.action_units,
            vec![
                (6, AuValue::Intensity(2.5)),
                (12, AuValue::Intensity(3.0)),
                (25, AuValue::Presence(true))
            ]
        );
    }

    #[test]
    fn defaults_come_from_the_caller() {
        let r = parse(json!({"user_id": 7, "source": "text", "payload": {"text": "x"}}))
            .expect("valid");
        assert_eq!(r.session_or_default(now()), "session_7_1723732200");
        assert_eq!(r.timestamp, None);
        let bound = RawReading::from_json(
            &json!({"source": "text", "payload": {"text": "x"}}),
            Some("42"),
        )
        .expect("valid");
        assert_eq!(bound.user_id, "42");
        assert!(
            RawReading::from_json(
                &json!({"user_id": 7, "source": "text", "payload": {"text": "x"}}),
                Some("42")
            )
            .is_err()
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                json!({"source": "text", "payload": {"text": "x"}}),
                "user_id",
            ),
            (
                json!({"user_id": 1, "source": "smell", "payload": {"text": "x"}}),
                "source",
            ),
            (json!({"user_id": 1, "source": "text"}), "payload"),
            (
                json!({"user_id": 1, "source": "text", "payload": {"txt": "x"}}),
                "payload",
            ),
            (
                json!({"user_id": 1, "source": "text", "payload": {"text": 3}}),
                "payload.text",
            ),
            (
                json!({"user_id": 1, "source": "text", "payload": {"text": "x"}, "extra": 1}),
                "reading",
            ),
            (
                json!({"user_id": 1, "source": "text", "timestamp": "later", "payload": {"text": "x"}}),
                "timestamp",
            ),
            (
                json!({"user_id": 1, "source": "text", "session_id": "a b", "payload": {"text": "x"}}),
                "session_id",
            ),
            (
                json!({"user_id": 1, "source": "facial", "payload": {"action_units": {"AU6": 7}}}),
                "payload.action_units",
            ),
            (
                json!({"user_id": 1, "source": "facial", "payload": {"action_units": {"smile": 1}}}),
                "payload.action_units",
            ),
            (
                json!({"user_id": 1, "source": "facial", "payload": {"landmarks": [[1]]}}),
                "payload.landmarks",
            ),
            (
                json!({"user_id": 1, "source": "facial", "payload": {"action_units": {}, "head_pose": {"pitch": 400, "yaw": 0, "roll": 0}}}),
                "payload.head_pose",
            ),
            (
                json!({"user_id": 1, "source": "facial", "payload": {"action_units": {}, "detection_quality": 1.5}}),
                "payload.detection_quality",
            ),
            (
                json!({"user_id": 1, "source": "voice", "payload": {"pcm_base64": "AAAA", "sample_rate": 16000}}),
                "payload.pcm_base64",
            ),
            (
                json!({"user_id": 1, "source": "voice", "payload": {"pcm_base64": "AAEC"}}),
                "payload.sample_rate",
            ),
            (
                json!({"user_id": 1, "source": "voice", "payload": {"jitter": 2}}),
                "payload.jitter",
            ),
            (
                json!({"user_id": 1, "source": "physiological", "payload": {"heart_rate": -3}}),
                "payload.heart_rate",
            ),
            (
                json!({"user_id": 1, "source": "physiological", "payload": {"rr_intervals_ms": [800, "x"]}}),
                "payload.rr_intervals_ms",
            ),
            (
                json!({"user_id": 1, "source": "physiological", "payload": {"skin_conductance": [1.0]}}),
                "payload.eda_sample_rate_hz",
            ),
            (
                json!({"user_id": 1, "source": "survey", "payload": {"answers": [1]}}),
                "payload",
            ),
            (
                json!({"user_id": 1, "source": "survey", "payload": {"raw_base64": "@@"}}),
                "payload.raw_base64",
            ),
        ];
        for (body, field) in cases {
            let e = parse(body.clone()).expect_err(&body.to_string());
            assert!(
                e.errors.iter().any(|f| f.field == field),
                "{body}: expected `{field}` in {e}"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let e = parse(json!({"user_id": 0, "source": "physiological",
            "payload": {"heart_rate": 0, "breathing_rate": "fast"}}))
        .expect_err("invalid");
        let fields: Vec<_> = e.errors.iter().map(|f| f.field).collect();
        for f in ["user_id", "payload.heart_rate", "payload.breathing_rate"] {
            assert!(fields.contains(&f), "{fields:?}");
        }
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for len in 0..20u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text, 1 << 10), Ok(bytes.clone()));
            assert_eq!(
                base64_decode(text.trim_end_matches('='), 1 << 10),
                Ok(bytes)
            );
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert!(base64_decode("A", 10).is_err());
        assert!(base64_decode("AA==A", 10).is_err());
        assert!(base64_decode("AAAAAAAA", 3).is_err());
    }
}
