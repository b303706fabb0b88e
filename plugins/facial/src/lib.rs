//! Facial plugin: FACS action units (and landmarks, head pose, detection
//! quality) to an emotion label, valence, arousal and confidence.
//!
//! * [`facs`]: prototype matching (EMFACS-7, FACS 2002 Investigator's Guide,
//!   Du, Tao and Martinez 2014) by a weighted F-score that tolerates missing
//!   and extra units;
//! * [`affect`]: valence and arousal from the units' own directions, and the
//!   confidence factors (detection quality, head pose, ambiguity);
//! * [`landmarks`]: a rough geometric reading of 68-point landmarks when a
//!   frame has no action units;
//! * [`reference`]: the configurations of PROTOTYPES.md, for tests and the
//!   quality report (`cargo run --release -p emotion-plugin-facial --example facial_quality`).
//!
//! Inputs: the `facial` payload of the wire form, or an OpenFace 2 output row
//! sent as `{"json": {...}}` (`AU06_r`, `AU12_c`, `confidence`, `success`,
//! `pose_Rx/Ry/Rz` in radians, `x_0…x_67`, `y_0…y_67`). See README.md.

pub mod affect;
pub mod facs;
pub mod landmarks;
pub mod reference;

#[cfg(target_family = "wasm")]
use std::sync::Mutex;

use emotion_plugin_sdk::{
    ActionUnit, AuValue, Emotion, Facial, HeadPose, Info, Label, Outcome, Payload, Plugin, Point,
    Reading, Source, json,
};
use serde_json::{Map, Value};
use std::f64::consts::PI;

use facs::{MAX_AU, Match, Units};

/// The plugin, as exported to the gateway.
#[derive(Debug)]
pub struct FacialPlugin;

/// JSON Schema of the settings.
pub const SETTINGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "min_detection_quality": {
      "type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
      "description": "Frames whose detection quality is below this carry no face: the plugin answers `none`."
    },
    "intensity_max": {
      "type": "number", "minimum": 1, "maximum": 5, "default": 5,
      "description": "Top of the front end's intensity scale: 5 for OpenFace (FACS A-E), 1 for detectors that report 0-1 (intensities are rescaled to 0-5)."
    }
  }
}"#;

impl Plugin for FacialPlugin {
    fn info() -> Info {
        Info::new("facial", env!("CARGO_PKG_VERSION"), [Source::Facial])
            .with_settings_schema(SETTINGS_SCHEMA)
    }

    fn normalize_one(reading: Reading) -> Outcome {
        normalize_with(&Settings::default(), reading)
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        // One settings lookup per batch.
        let settings = Settings::load();
        readings
            .into_iter()
            .map(|r| normalize_with(&settings, r))
            .collect()
    }
}

emotion_plugin_sdk::export_plugin!(FacialPlugin);

/// The plugin's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Below this detection quality a frame has no face (answer: `none`).
    pub min_detection_quality: f64,
    /// Top of the front end's intensity scale (5: OpenFace; 1: 0–1 detectors).
    pub intensity_max: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_detection_quality: 0.1,
            intensity_max: 5.0,
        }
    }
}

impl Settings {
    /// Parse settings JSON; unknown or invalid values are reported and the
    /// defaults kept.
    pub fn parse(text: &str) -> (Settings, Vec<String>) {
        let mut s = Settings::default();
        let mut problems = Vec::new();
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(m) => {
                for (k, v) in &m {
                    match (k.as_str(), v.as_f64()) {
                        ("min_detection_quality", Some(x)) if (0.0..=1.0).contains(&x) => {
                            s.min_detection_quality = x;
                        }
                        ("intensity_max", Some(x)) if (1.0..=5.0).contains(&x) => {
                            s.intensity_max = x;
                        }
                        _ => problems.push(format!("ignoring setting `{k}`: {v}")),
                    }
                }
            }
            Err(e) => problems.push(format!("ignoring unreadable settings: {e}")),
        }
        (s, problems)
    }

    /// The settings from the host, parsed again (and problems logged) only
    /// when their text changes.
    #[cfg(target_family = "wasm")]
    fn load() -> Self {
        static LAST: Mutex<Option<(String, Settings)>> = Mutex::new(None);
        let text = emotion_plugin_sdk::settings();
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, s)) = last.as_ref()
            && *t == text
        {
            return *s;
        }
        let (s, problems) = Settings::parse(&text);
        for p in problems {
            emotion_plugin_sdk::warn(&p);
        }
        *last = Some((text, s));
        s
    }

    #[cfg(not(target_family = "wasm"))]
    fn load() -> Self {
        Settings::default()
    }
}

/// What the frame was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Action-unit intensities (0–5).
    Intensities,
    /// Action units with presence only.
    Presence,
    /// No action units: estimated from 68 landmarks.
    Landmarks,
}

impl InputKind {
    fn as_str(self) -> &'static str {
        match self {
            InputKind::Intensities => "au_intensity",
            InputKind::Presence => "au_presence",
            InputKind::Landmarks => "landmarks",
        }
    }

    /// Presence-only units say less than intensities; rough landmark
    /// estimates much less.
    fn factor(self) -> f64 {
        match self {
            InputKind::Intensities => 1.0,
            InputKind::Presence => 0.9,
            InputKind::Landmarks => 0.45,
        }
    }
}

/// The confidence factors, each 0–1; confidence = 0.80 + 0.15 × their product.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    pub detection: f64,
    pub pose: f64,
    /// Clarity of the expression: match, margin over the runner-up, strength.
    pub expression: f64,
    pub input: f64,
}

impl Factors {
    pub fn product(&self) -> f64 {
        self.detection * self.pose * self.expression * self.input
    }
}

/// Everything the plugin concluded about one frame.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// A gateway label; `None` when no prototype matches well (score < 0.5):
    /// the gateway then takes the label nearest to (valence, arousal).
    pub label: Option<&'static str>,
    pub valence: f64,
    pub arousal: f64,
    pub confidence: f64,
    /// The best-matching prototype (also when it was too weak to label).
    pub best: Match,
    /// Score of the winner (gated F1, or the neutral score).
    pub score: f64,
    /// The runner-up (label, score).
    pub runner_up: (&'static str, f64),
    /// Expressiveness, 0–1.
    pub expressiveness: f64,
    pub factors: Factors,
    pub input: InputKind,
    /// Units above the noise floor.
    pub active: Vec<u8>,
}

/// A prototype must match at least this well (F1) to name the label.
pub const MIN_MATCH: f64 = 0.5;

/// Analyse one frame. `Ok(None)`: no face in it (the detector's quality is
/// below `min_detection_quality`). `Err`: the frame cannot be read (the
/// message says why), e.g. it has neither action units nor landmarks.
pub fn analyze(frame: &Facial, settings: &Settings) -> Result<Option<Analysis>, String> {
    if let Some(q) = frame.detection_quality
        && !(q.is_finite() && (0.0..=1.0).contains(&q))
    {
        return Err(format!(
            "detection_quality must be between 0 and 1, got {q}"
        ));
    }
    let pose = match frame.head_pose {
        None => None,
        Some(HeadPose { pitch, yaw, roll }) => {
            for (name, x) in [("pitch", pitch), ("yaw", yaw), ("roll", roll)] {
                if !(x.is_finite() && (-180.0..=180.0).contains(&x)) {
                    return Err(format!(
                        "head_pose.{name} must be an angle between -180 and 180 degrees, got {x}"
                    ));
                }
            }
            Some((pitch, yaw, roll))
        }
    };
    if let Some(i) = frame
        .landmarks
        .iter()
        .position(|p| !(p.x.is_finite() && p.y.is_finite()))
    {
        return Err(format!("landmarks: point {i} is not finite"));
    }
    let mut intensity = [0.0f64; MAX_AU];
    let mut seen = [false; MAX_AU];
    let mut any_intensity = false;
    for ActionUnit { number, value } in &frame.action_units {
        let n = usize::from(*number);
        if !(1..MAX_AU).contains(&n) {
            return Err(format!("AU{number} is not a FACS action unit (1–99)"));
        }
        if seen[n] {
            return Err(format!("AU{number} is given twice"));
        }
        seen[n] = true;
        intensity[n] = match *value {
            AuValue::Intensity(x)
                if x.is_finite() && (0.0..=settings.intensity_max).contains(&x) =>
            {
                any_intensity = true;
                x * 5.0 / settings.intensity_max
            }
            AuValue::Intensity(x) => {
                return Err(format!(
                    "AU{number} intensity must be between 0 and {}, got {}",
                    show(settings.intensity_max),
                    show(x)
                ));
            }
            AuValue::Presence(true) => facs::PRESENCE_INTENSITY,
            AuValue::Presence(false) => 0.0,
        };
    }

    // No face: the detector says so.
    if frame
        .detection_quality
        .is_some_and(|q| q <= 0.0 || q < settings.min_detection_quality)
    {
        return Ok(None);
    }
    if frame.action_units.is_empty() && frame.landmarks.is_empty() {
        return Err(
            "a facial frame needs action_units or landmarks (or a detection_quality below the no-face threshold)"
                .into(),
        );
    }

    let input = if !frame.action_units.is_empty() {
        if any_intensity {
            InputKind::Intensities
        } else {
            InputKind::Presence
        }
    } else {
        let g = landmarks::measure(&frame.landmarks)?;
        intensity = landmarks::estimate_units(&g);
        InputKind::Landmarks
    };

    let units = Units::new(intensity);
    let expressiveness = units.expressiveness();
    let gate = ((expressiveness - 0.05) / 0.3).clamp(0.0, 1.0);
    let neutral_score = 1.0 - gate;
    let scores = facs::score(&units);
    let best = scores[0];
    let best_score = best.f1 * gate;
    let second_emotion = scores[1].f1 * gate;

    let strength = 0.6 + 0.4 * ((expressiveness - 0.1) / 0.5).clamp(0.0, 1.0);
    let (label, emotion, score, runner_up, expression) = if neutral_score >= best_score {
        let margin = affect::margin_factor(neutral_score, best_score);
        (
            Some("neutral"),
            None,
            neutral_score,
            (best.emotion.label(), best_score),
            0.15 + 0.85 * margin,
        )
    } else {
        let (second_label, second) = if neutral_score > second_emotion {
            ("neutral", neutral_score)
        } else {
            (scores[1].emotion.label(), second_emotion)
        };
        if best.f1 < MIN_MATCH {
            (
                None,
                None,
                best_score,
                (second_label, second),
                0.1 * strength,
            )
        } else {
            let margin = affect::margin_factor(best_score, second);
            let matched = ((best.f1 - 0.4) / 0.5).clamp(0.0, 1.0);
            (
                Some(best.emotion.label()),
                Some(best.emotion),
                best_score,
                (second_label, second),
                (0.15 + 0.85 * margin) * (0.3 + 0.7 * matched) * strength,
            )
        }
    };
    let (valence, arousal) = affect::coordinates(&units.intensity, emotion, gate);
    let factors = Factors {
        detection: affect::detection_factor(
            frame.detection_quality,
            settings.min_detection_quality,
        ),
        pose: affect::pose_factor(pose),
        expression,
        input: input.factor(),
    };
    Ok(Some(Analysis {
        label,
        valence: valence.clamp(-1.0, 1.0),
        arousal: arousal.clamp(0.0, 1.0),
        confidence: affect::confidence(factors.product()),
        best,
        score,
        runner_up,
        expressiveness,
        factors,
        input,
        active: units.active,
    }))
}

/// Normalize one reading with the given settings.
pub fn normalize_with(settings: &Settings, reading: Reading) -> Outcome {
    // OpenFace rows are always on OpenFace's own 0–5 scale.
    let openface = Settings {
        intensity_max: 5.0,
        ..*settings
    };
    let (frame, settings) = match reading.payload {
        Payload::Facial(f) => (f, settings),
        Payload::Json(text) => match openface_row(&text) {
            Ok(Some(f)) => (f, &openface),
            Ok(None) => return Outcome::None,
            Err(e) => return Outcome::Error(e),
        },
        other => {
            return Outcome::error(format!(
                "expected a facial payload (action_units, landmarks, head_pose, detection_quality) or an OpenFace row as {{\"json\": …}}, got a {} payload",
                payload_kind(&other)
            ));
        }
    };
    match analyze(&frame, settings) {
        Ok(Some(a)) => Outcome::Emotion(to_emotion(&a)),
        Ok(None) => Outcome::None,
        Err(e) => Outcome::Error(e),
    }
}

fn payload_kind(p: &Payload) -> &'static str {
    match p {
        Payload::Facial(_) => "facial",
        Payload::Voice(_) => "voice",
        Payload::Text(_) => "text",
        Payload::Physiological(_) => "physiological",
        Payload::Json(_) => "json",
        Payload::Raw(_) => "raw",
    }
}

/// The emotion for an analysis, with its explanation in extra fields.
pub fn to_emotion(a: &Analysis) -> Emotion {
    let mut e = Emotion::new(a.valence, a.arousal, a.confidence);
    // The analysis' labels are the gateway's (`facs::Emotion::label`).
    e.label = a.label.and_then(Label::from_name);
    // The four fields are written straight into the one object text the
    // host parses; room for all of them at once.
    e.extra.reserve(256);
    e.push_extra_with("facs_match", |m| {
        m.push_str(r#"{"variant":""#);
        m.push_str(a.best.variant.name);
        m.push_str(r#"","source":""#);
        m.push_str(a.best.variant.source);
        m.push_str(r#"","score":"#);
        json::push_fixed(m, a.best.f1, 3);
        m.push('}');
    });
    e.push_extra_with("runner_up", |r| {
        r.push_str(r#"{"label":""#);
        r.push_str(a.runner_up.0);
        r.push_str(r#"","score":"#);
        json::push_fixed(r, a.runner_up.1, 3);
        r.push('}');
    });
    e.push_extra_with("active_units", |units| {
        units.push('[');
        for (i, u) in a.active.iter().enumerate() {
            if i > 0 {
                units.push(',');
            }
            json::push_fixed(units, f64::from(*u), 0);
        }
        units.push(']');
    });
    e.push_extra_with("quality", |q| {
        for (i, (k, x)) in [
            ("detection", a.factors.detection),
            ("pose", a.factors.pose),
            ("expression", a.factors.expression),
        ]
        .into_iter()
        .enumerate()
        {
            q.push_str(if i == 0 { "{\"" } else { ",\"" });
            q.push_str(k);
            q.push_str("\":");
            json::push_fixed(q, x, 3);
        }
        q.push_str(r#","input":""#);
        q.push_str(a.input.as_str());
        q.push_str("\"}");
    });
    e
}

/// Read an OpenFace 2 output row (FeatureExtraction CSV columns as a JSON
/// object, keys trimmed). `Ok(None)`: OpenFace reports no face (`success` 0).
pub fn openface_row(text: &str) -> Result<Option<Facial>, String> {
    let row: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| format!("a JSON facial payload must be an OpenFace row object: {e}"))?;
    let mut frame = Facial {
        action_units: Vec::new(),
        landmarks: Vec::new(),
        head_pose: None,
        detection_quality: None,
    };
    let mut intensities = [None::<f64>; MAX_AU];
    let mut presences = [None::<bool>; MAX_AU];
    let mut pose = [None::<f64>; 3];
    let mut xs = [None::<f64>; landmarks::POINTS];
    let mut ys = [None::<f64>; landmarks::POINTS];
    let mut success = None;
    let number = |k: &str, v: &Value| -> Result<f64, String> {
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("OpenFace `{k}` must be a finite number, got {v}"))
    };
    for (key, value) in &row {
        let k = key.trim();
        if let Some(rest) = k.strip_prefix("AU") {
            let (digits, kind) = rest.split_once('_').unwrap_or((rest, ""));
            let Some(n) = digits
                .parse::<usize>()
                .ok()
                .filter(|n| (1..MAX_AU).contains(n))
            else {
                continue;
            };
            // OpenFace writes intensities 0–5 and presences 0/1; anything
            // else is a broken front end, not a strong or absent unit.
            match kind {
                "r" => {
                    intensities[n] = Some(within(k, number(k, value)?, 0.0, 5.0, "an intensity")?)
                }
                "c" => {
                    presences[n] =
                        Some(within(k, number(k, value)?, 0.0, 1.0, "a presence")? >= 0.5);
                }
                _ => {}
            }
        } else if let Some(i) = k.strip_prefix("x_").and_then(|i| i.parse::<usize>().ok()) {
            if i < landmarks::POINTS {
                xs[i] = Some(number(k, value)?);
            }
        } else if let Some(i) = k.strip_prefix("y_").and_then(|i| i.parse::<usize>().ok()) {
            if i < landmarks::POINTS {
                ys[i] = Some(number(k, value)?);
            }
        } else {
            match k {
                "confidence" => {
                    frame.detection_quality =
                        Some(within(k, number(k, value)?, 0.0, 1.0, "a confidence")?);
                }
                "success" => {
                    success = Some(within(k, number(k, value)?, 0.0, 1.0, "a flag")? >= 0.5)
                }
                "pose_Rx" | "pose_Ry" | "pose_Rz" => {
                    let x = within(k, number(k, value)?, -PI, PI, "an angle in radians")?;
                    let axis = match k {
                        "pose_Rx" => 0,
                        "pose_Ry" => 1,
                        _ => 2,
                    };
                    pose[axis] = Some(x);
                }
                _ => {}
            }
        }
    }
    if success == Some(false) {
        return Ok(None);
    }
    for n in 1..MAX_AU {
        let value = match (intensities[n], presences[n]) {
            (Some(x), _) => AuValue::Intensity(x),
            (None, Some(p)) => AuValue::Presence(p),
            (None, None) => continue,
        };
        frame.action_units.push(ActionUnit {
            number: n as u8,
            value,
        });
    }
    if let [Some(pitch), Some(yaw), Some(roll)] = pose {
        frame.head_pose = Some(HeadPose {
            pitch: pitch.to_degrees(),
            yaw: yaw.to_degrees(),
            roll: roll.to_degrees(),
        });
    }
    if xs.iter().chain(&ys).all(Option::is_some) {
        frame.landmarks = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| Point {
                x: x.unwrap_or_default(),
                y: y.unwrap_or_default(),
            })
            .collect();
    }
    if frame.action_units.is_empty() && frame.landmarks.is_empty() {
        return Err(
            "the OpenFace row has no action units (AUxx_r / AUxx_c) and no 68 landmarks (x_0…y_67)"
                .into(),
        );
    }
    Ok(Some(frame))
}

/// `x` when it lies in `lo..=hi`, else an error naming the OpenFace column.
fn within(column: &str, x: f64, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    if (lo..=hi).contains(&x) {
        Ok(x)
    } else {
        Err(format!(
            "OpenFace `{column}` must be {what} between {} and {}, got {}",
            show(lo),
            show(hi),
            show(x)
        ))
    }
}

/// A number for an error message: plain when it reads well, in scientific
/// notation when it is huge or tiny (1e308 is not 309 digits long).
fn show(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e7).contains(&a) {
        format!("{x:e}")
    } else {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_owned()
    }
}

#[cfg(test)]
mod tests;
