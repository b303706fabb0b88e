//! Template plugin: self-reported surveys and simple behavioral metrics.
//!
//! It is small on purpose, but it is a real plugin: it reads its settings,
//! logs through the host, validates its input and answers every reading.
//!
//! * `survey` readings carry JSON with Self-Assessment Manikin ratings
//!   (Bradley & Lang 1994), both on the usual 1–9 scale:
//!   `{"sam_valence": 7, "sam_arousal": 3}`, optionally with a label the
//!   respondent picked, one of the gateway's labels (another is an error answer):
//!   `{"sam_valence": 7, "sam_arousal": 3, "label": "calm"}`.
//! * `behavioral` readings carry interaction counts and an activity level:
//!   `{"positive": 4, "negative": 1, "activity": 0.7}`.
//!
//! Settings (all optional): `{"survey_confidence": 0.95, "behavioral_confidence": 0.6}`.

use emotion_plugin_sdk::{Emotion, Info, Label, Outcome, Payload, Plugin, Reading, Source};
use serde_json::{Map, Value};

pub struct Template;

/// The JSON Schema of this plugin's settings, shown by `GET /api/plugins`.
const SETTINGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "survey_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.95},
    "behavioral_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.6}
  }
}"#;

impl Plugin for Template {
    fn info() -> Info {
        Info::new(
            "template",
            env!("CARGO_PKG_VERSION"),
            [Source::Survey, Source::Behavioral],
        )
        .with_settings_schema(SETTINGS_SCHEMA)
    }

    fn normalize_one(reading: Reading) -> Outcome {
        // Settings are read per batch in `normalize` below; this path is the
        // one-reading fallback with defaults.
        normalize_with(&Settings::default(), reading)
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        // One settings lookup per batch, not per reading: crossing into the
        // host costs more than the arithmetic below.
        let settings = Settings::load();
        readings
            .into_iter()
            .map(|r| normalize_with(&settings, r))
            .collect()
    }
}

emotion_plugin_sdk::export_plugin!(Template);

#[derive(Debug, Clone, Copy)]
struct Settings {
    survey_confidence: f64,
    behavioral_confidence: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            survey_confidence: 0.95,
            behavioral_confidence: 0.6,
        }
    }
}

impl Settings {
    fn load() -> Self {
        let mut s = Settings::default();
        let text = emotion_plugin_sdk::settings();
        match serde_json::from_str::<Map<String, Value>>(&text) {
            Ok(m) => {
                if let Some(c) = unit_number(&m, "survey_confidence") {
                    s.survey_confidence = c;
                }
                if let Some(c) = unit_number(&m, "behavioral_confidence") {
                    s.behavioral_confidence = c;
                }
            }
            Err(e) => emotion_plugin_sdk::warn(&format!("ignoring unreadable settings: {e}")),
        }
        s
    }
}

fn unit_number(m: &Map<String, Value>, key: &str) -> Option<f64> {
    m.get(key)
        .and_then(Value::as_f64)
        .filter(|x| (0.0..=1.0).contains(x))
}

fn normalize_with(settings: &Settings, reading: Reading) -> Outcome {
    let Payload::Json(text) = reading.payload else {
        return Outcome::error("expected a JSON payload ({\"json\": {...}})");
    };
    let fields = match serde_json::from_str::<Map<String, Value>>(&text) {
        Ok(m) => m,
        Err(e) => return Outcome::error(format!("payload is not a JSON object: {e}")),
    };
    let result = match reading.source {
        Source::Survey => survey(settings, &fields),
        Source::Behavioral => behavioral(settings, &fields),
        other => Err(format!("source `{}` is not handled", other.as_str())),
    };
    result.unwrap_or_else(Outcome::Error)
}

/// A Self-Assessment Manikin rating on the 1–9 scale.
fn sam(fields: &Map<String, Value>, key: &str) -> Result<f64, String> {
    match fields.get(key).and_then(Value::as_f64) {
        Some(x) if (1.0..=9.0).contains(&x) => Ok(x),
        Some(x) => Err(format!("`{key}` must be between 1 and 9, got {x}")),
        None => Err(format!("`{key}` is required (a number from 1 to 9)")),
    }
}

fn survey(settings: &Settings, fields: &Map<String, Value>) -> Result<Outcome, String> {
    let v = sam(fields, "sam_valence")?;
    let a = sam(fields, "sam_arousal")?;
    // 1..9 onto the gateway's scales: valence [-1, 1], arousal [0, 1].
    let mut emotion = Emotion::new((v - 5.0) / 4.0, (a - 1.0) / 8.0, settings.survey_confidence);
    match fields.get("label") {
        None | Some(Value::Null) => {}
        // One of the gateway's labels, spelled as the gateway reads them.
        Some(Value::String(label)) => match Label::from_name(label) {
            Some(l) => emotion.label = Some(l),
            None => {
                return Err(format!(
                    "`label` {label:?} is not one of the gateway's labels"
                ));
            }
        },
        Some(_) => return Err("`label` must be a string".into()),
    }
    Ok(Outcome::Emotion(
        emotion.with_extra("instrument", "\"SAM\""),
    ))
}

fn behavioral(settings: &Settings, fields: &Map<String, Value>) -> Result<Outcome, String> {
    let count = |key: &str| -> Result<f64, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(0.0),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("`{key}` must be a non-negative number")),
        }
    };
    let positive = count("positive")?;
    let negative = count("negative")?;
    let activity = match fields.get("activity").and_then(Value::as_f64) {
        Some(x) if (0.0..=1.0).contains(&x) => x,
        Some(x) => return Err(format!("`activity` must be between 0 and 1, got {x}")),
        None => return Err("`activity` is required (0 to 1)".into()),
    };
    if positive + negative == 0.0 && activity == 0.0 {
        // Nothing happened: no emotion to report, and that is not an error.
        return Ok(Outcome::None);
    }
    let valence = if positive + negative > 0.0 {
        (positive - negative) / (positive + negative)
    } else {
        0.0
    };
    Ok(Outcome::Emotion(Emotion::new(
        valence,
        activity,
        settings.behavioral_confidence,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(source: Source, json: &str) -> Reading {
        Reading {
            user_id: "u1".into(),
            session_id: "s1".into(),
            device_id: None,
            timestamp_ms: 0,
            source,
            payload: Payload::Json(json.into()),
        }
    }

    #[test]
    fn survey_maps_sam_scales() {
        let out = normalize_with(
            &Settings::default(),
            reading(
                Source::Survey,
                r#"{"sam_valence": 9, "sam_arousal": 1, "label": "calm"}"#,
            ),
        );
        let Outcome::Emotion(e) = out else {
            panic!("expected an emotion, got {out:?}");
        };
        assert_eq!((e.valence, e.arousal), (1.0, 0.0));
        assert_eq!(e.label, Some(Label::Calm));
    }

    #[test]
    fn bad_input_is_an_error_answer() {
        for json in [
            r#"{"sam_valence": 12, "sam_arousal": 1}"#,
            "[1]",
            r#"{"sam_arousal": 1}"#,
            r#"{"sam_valence": 5, "sam_arousal": 5, "label": "elation"}"#,
        ] {
            let out = normalize_with(&Settings::default(), reading(Source::Survey, json));
            assert!(matches!(out, Outcome::Error(_)), "{json}: {out:?}");
        }
    }

    #[test]
    fn idle_behavior_is_no_emotion() {
        let out = normalize_with(
            &Settings::default(),
            reading(Source::Behavioral, r#"{"activity": 0}"#),
        );
        assert!(matches!(out, Outcome::None));
    }
}
