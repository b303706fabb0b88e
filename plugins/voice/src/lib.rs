//! Voice plugin: prosody features or raw speech → arousal (mainly), valence
//! (with low weight), confidence and the measured features.
//!
//! Input (source `voice`), any of:
//!
//! * prosody features from a front end — F0 mean and range, loudness, speech
//!   rate, jitter, shimmer, HNR, each optional;
//! * raw mono 16-bit PCM at any rate from 8 kHz (`{"pcm_base64": "…",
//!   "sample_rate": 16000}` on the wire), also as JSON text or as a WAV file
//!   in a raw payload.
//!
//! From PCM the plugin measures its own features ([`features`]): level, F0 by
//! YIN with a voicing decision, F0 range, voiced fraction, syllable rate and
//! spectral balance. Every cue is read against the speaker's own running
//! baseline, which starts at population norms ([`baseline`]), and mapped to
//! arousal and valence ([`affect`]). The method and its sources are in the
//! README.
//!
//! Settings (all optional):
//!
//! ```json
//! {"speaker_adaptation": true, "max_speakers": 4096, "max_seconds": 30,
//!  "labels": true, "silence": "error"}
//! ```

use std::sync::Mutex;

use emotion_plugin_sdk::{Emotion, Info, Label, Outcome, Plugin, Reading, Source};
use serde_json::{Map, Value};

pub mod affect;
pub mod baseline;
pub mod dsp;
pub mod features;
pub mod input;
pub mod resample;
pub mod synth;

#[cfg(test)]
mod tests;

pub use affect::{AudioQuality, Estimate};
pub use baseline::{Cue, Speakers};
pub use features::{Analysis, AnalysisError};
pub use input::{Features, VoiceInput};

/// The plugin, as exported to the gateway.
#[derive(Debug)]
pub struct VoicePlugin;

/// The JSON Schema of the settings, shown by `GET /api/plugins`.
pub const SETTINGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "speaker_adaptation": {"type": "boolean", "default": true,
      "description": "read each speaker against their own running baseline (false: population norms only)"},
    "max_speakers": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 4096,
      "description": "speakers whose baselines are kept per plugin instance (least recently heard evicted)"},
    "max_seconds": {"type": "number", "minimum": 1, "maximum": 60, "default": 30,
      "description": "longest audio analysed per reading (the most recent part); 60 s needs about 20 MiB of plugin memory"},
    "labels": {"type": "boolean", "default": true,
      "description": "label readings (calm, neutral, excitement, anger, sadness); false lets the gateway pick the nearest label"},
    "silence": {"enum": ["error", "none"], "default": "error",
      "description": "answer to audio without voiced speech: an error, or no emotion"}
  }
}"#;

/// Largest `max_seconds`: the analysis of 60 s of audio peaks at about
/// 20 MiB of linear memory, well inside the host's default 64 MiB limit.
pub const MAX_SECONDS_LIMIT: f64 = 60.0;

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub speaker_adaptation: bool,
    pub max_speakers: usize,
    pub max_seconds: f64,
    pub labels: bool,
    /// Audio without voiced speech: `Outcome::None` instead of an error.
    pub silence_as_none: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            speaker_adaptation: true,
            max_speakers: 4096,
            max_seconds: 30.0,
            labels: true,
            silence_as_none: false,
        }
    }
}

impl Settings {
    /// Settings from JSON text; unreadable or out-of-range entries keep
    /// their defaults and are reported in the second value.
    pub fn from_json(text: &str) -> (Settings, Vec<String>) {
        let mut s = Settings::default();
        let mut warnings = Vec::new();
        let m = match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(m) => m,
            Err(e) => {
                warnings.push(format!("ignoring unreadable settings: {e}"));
                return (s, warnings);
            }
        };
        for (k, v) in &m {
            let ok = match (k.as_str(), v) {
                ("speaker_adaptation", Value::Bool(b)) => {
                    s.speaker_adaptation = *b;
                    true
                }
                ("labels", Value::Bool(b)) => {
                    s.labels = *b;
                    true
                }
                ("max_speakers", v) => match v.as_u64() {
                    Some(n) if (1..=1_000_000).contains(&n) => {
                        s.max_speakers = n as usize;
                        true
                    }
                    _ => false,
                },
                ("max_seconds", v) => match v.as_f64() {
                    Some(x) if (1.0..=MAX_SECONDS_LIMIT).contains(&x) => {
                        s.max_seconds = x;
                        true
                    }
                    _ => false,
                },
                ("silence", Value::String(x)) if x == "error" || x == "none" => {
                    s.silence_as_none = x == "none";
                    true
                }
                _ => false,
            };
            if !ok {
                warnings.push(format!("ignoring setting `{k}` = {v}"));
            }
        }
        (s, warnings)
    }

    fn load() -> Settings {
        let (s, warnings) = Settings::from_json(&emotion_plugin_sdk::settings());
        for w in warnings {
            emotion_plugin_sdk::warn(&w);
        }
        s
    }
}

/// What one reading produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub estimate: Estimate,
    /// The PCM analysis (PCM input only).
    pub analysis: Option<Analysis>,
    pub quality: Option<AudioQuality>,
    /// The prosody features (prosody input only).
    pub features: Option<Features>,
    /// The speaker's readings in the baseline before this one.
    pub baseline_readings: u64,
}

/// The plugin's state: settings and speaker baselines. The exported plugin
/// keeps one per instance; tests and benchmarks make their own.
#[derive(Debug, Default)]
pub struct Voice {
    settings: Settings,
    speakers: Speakers,
}

impl Voice {
    pub fn new(settings: Settings) -> Self {
        Voice {
            settings,
            speakers: Speakers::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn set_settings(&mut self, settings: Settings) {
        self.speakers.shrink_to(settings.max_speakers.max(1));
        self.settings = settings;
    }

    pub fn speakers(&self) -> &Speakers {
        &self.speakers
    }

    /// Answer one reading.
    pub fn normalize(&mut self, reading: Reading) -> Outcome {
        if reading.source != Source::Voice {
            return Outcome::error(format!(
                "source `{}` is not handled (voice only)",
                reading.source.as_str()
            ));
        }
        let decoded = match input::decode(reading.payload) {
            Ok(d) => d,
            Err(e) => return Outcome::Error(e),
        };
        match self.process(&reading.user_id, decoded) {
            Ok(Some(out)) => out.into_outcome(),
            Ok(None) => Outcome::None,
            Err(e) => Outcome::Error(e),
        }
    }

    /// Analyse decoded input for `user`; `Ok(None)` for audio without
    /// speech when the settings ask for that.
    pub fn process(&mut self, user: &str, input: VoiceInput) -> Result<Option<Output>, String> {
        let (cues, quality, analysis, features) = match input {
            VoiceInput::Pcm { samples, rate } => {
                match features::analyze(&samples, rate, self.settings.max_seconds) {
                    Ok(a) => {
                        let q = affect::audio_quality(&a);
                        (affect::pcm_cues(&a), Some(q), Some(a), None)
                    }
                    Err(AnalysisError::NoSpeech(_)) if self.settings.silence_as_none => {
                        return Ok(None);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            VoiceInput::Prosody(f) => {
                let cues = prosody_cues(&f);
                if !cues.iter().any(|(c, _)| affect::arousal_weight(*c) > 0.0) {
                    return Err("prosody needs at least one arousal cue: f0_mean_hz, f0_range_hz, loudness_db or speech_rate".into());
                }
                (cues, None, None, Some(f))
            }
        };
        let adapt = self.settings.speaker_adaptation;
        let speaker = if adapt { self.speakers.get(user) } else { None };
        let baseline_readings = speaker.map_or(0, |s| s.readings);
        let estimate = affect::estimate(
            &cues,
            speaker,
            quality.map_or(1.0, |q| q.product()),
            self.settings.labels,
        );
        // Learn only from readings good enough to describe the speaker.
        if adapt && quality.is_none_or(|q| q.product() >= 0.2) {
            self.speakers
                .update(user, &cues, self.settings.max_speakers);
        }
        Ok(Some(Output {
            estimate,
            analysis,
            quality,
            features,
            baseline_readings,
        }))
    }
}

/// The cues of prosody features. The F0 range is taken as a 10th–90th
/// percentile range in Hz around the mean, log-symmetric; loudness above
/// 0 dB is read as dB SPL, at or below 0 as dBFS.
pub fn prosody_cues(f: &Features) -> Vec<(Cue, f64)> {
    let mut cues = Vec::new();
    if let Some(m) = f.f0_mean_hz {
        cues.push((Cue::F0Level, features::semitones(m)));
    }
    if let Some(r) = f.f0_range_hz {
        let m = f.f0_mean_hz.unwrap_or(150.0);
        // p90 − p10 = 2m·sinh(st·ln2/24) for a log-symmetric spread.
        let st = 24.0 / std::f64::consts::LN_2 * (r / (2.0 * m)).asinh();
        cues.push((Cue::F0Range, st));
    }
    if let Some(l) = f.loudness_db {
        let cue = if l > 0.0 {
            Cue::LoudnessSpl
        } else {
            Cue::LoudnessDbfs
        };
        cues.push((cue, l));
    }
    if let Some(r) = f.speech_rate {
        cues.push((Cue::SpeechRate, r));
    }
    if let Some(j) = f.jitter {
        cues.push((Cue::Jitter, j));
    }
    if let Some(s) = f.shimmer {
        cues.push((Cue::Shimmer, s));
    }
    if let Some(h) = f.hnr_db {
        cues.push((Cue::Hnr, h));
    }
    cues
}

/// A finite number as JSON text with `decimals` places.
fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        let s = format!("{x:.decimals$}");
        if s.starts_with("-0") && s.trim_start_matches(['-', '0', '.']).is_empty() {
            s[1..].to_owned()
        } else {
            s
        }
    } else {
        "null".to_owned()
    }
}

impl Output {
    /// The extra fields: the measured features, the cue z-scores and the
    /// quality factors.
    pub fn extra(&self) -> Vec<(String, String)> {
        let mut x: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| x.push((k.to_owned(), v));
        let e = &self.estimate;
        if let Some(a) = &self.analysis {
            put("input", "\"pcm\"".into());
            put("sample_rate", a.sample_rate.to_string());
            put("duration_s", num(a.duration_s, 3));
            if a.analysed_s < a.duration_s {
                put("analysed_s", num(a.analysed_s, 3));
            }
            put("speaking_s", num(a.speaking_s, 2));
            put("f0_mean_hz", num(a.f0_mean_hz, 1));
            put("f0_median_hz", num(a.f0_median_hz, 1));
            put("f0_p10_hz", num(a.f0_p10_hz, 1));
            put("f0_p90_hz", num(a.f0_p90_hz, 1));
            // The range in Hz as the prosody input reads it (log-symmetric
            // around the mean), so a replayed event gives the same cue.
            let range_hz =
                2.0 * a.f0_mean_hz * (a.f0_range_st * std::f64::consts::LN_2 / 24.0).sinh();
            put("f0_range_hz", num(range_hz, 1));
            put("f0_range_st", num(a.f0_range_st, 2));
            put("f0_sd_st", num(a.f0_sd_st, 2));
            put("loudness_db", num(a.loudness_dbfs, 1));
            put("loudness_unit", "\"dBFS\"".into());
            put("voiced_fraction", num(a.voiced_fraction, 3));
            put("syllable_nuclei", num(a.nuclei, 1));
            if let Some(r) = a.speech_rate {
                put("speech_rate", num(r, 2));
            }
            put("alpha_ratio_db", num(a.alpha_ratio_db, 1));
            put("hnr_low_band_db", num(a.hnr_low_band_db, 1));
            put("snr_db", num(a.snr_db, 1));
            put("clipped_fraction", num(a.clipped_fraction, 5));
        }
        if let Some(q) = &self.quality {
            put(
                "quality",
                format!(
                    "{{\"duration\":{},\"voicing\":{},\"clipping\":{},\"noise\":{}}}",
                    num(q.duration, 3),
                    num(q.voicing, 3),
                    num(q.clipping, 3),
                    num(q.noise, 3)
                ),
            );
        }
        if let Some(f) = &self.features {
            put("input", "\"prosody\"".into());
            let fields = [
                ("f0_mean_hz", f.f0_mean_hz),
                ("f0_range_hz", f.f0_range_hz),
                ("loudness_db", f.loudness_db),
                ("speech_rate", f.speech_rate),
                ("jitter", f.jitter),
                ("shimmer", f.shimmer),
                ("hnr_db", f.hnr_db),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    put(k, num(v, 4));
                }
            }
        }
        let cues: Vec<String> =
            e.z.iter()
                .map(|(c, z)| format!("\"{}\":{}", c.name(), num(*z, 3)))
                .collect();
        put("cue_z", format!("{{{}}}", cues.join(",")));
        put("arousal_score", num(e.score, 3));
        put("baseline_readings", self.baseline_readings.to_string());
        put("baseline_warmth", num(e.warmth, 3));
        x
    }

    /// The emotion for the gateway (an error if anything is not finite —
    /// never garbage for the host).
    pub fn into_outcome(self) -> Outcome {
        let e = &self.estimate;
        if !(e.arousal.is_finite() && e.valence.is_finite() && e.confidence.is_finite()) {
            return Outcome::error("internal error: the estimate is not finite");
        }
        let mut emotion = Emotion::new(
            e.valence.clamp(-1.0, 1.0),
            e.arousal.clamp(0.0, 1.0),
            e.confidence
                .clamp(affect::CONFIDENCE_MIN, affect::CONFIDENCE_MAX),
        );
        // The estimate's labels are the gateway's (a test checks them).
        emotion.label = e.label.and_then(Label::from_name);
        for (k, v) in self.extra() {
            emotion.push_extra(&k, &v);
        }
        Outcome::Emotion(emotion)
    }
}

/// The instance's state: one `Voice` per WebAssembly instance (a cache: the
/// host may replace the instance, and the baselines restart).
static STATE: Mutex<Option<Voice>> = Mutex::new(None);

impl Plugin for VoicePlugin {
    fn info() -> Info {
        Info::new("voice", env!("CARGO_PKG_VERSION"), [Source::Voice])
            .with_settings_schema(SETTINGS_SCHEMA)
    }

    fn normalize_one(reading: Reading) -> Outcome {
        Self::normalize(vec![reading])
            .pop()
            .unwrap_or_else(|| Outcome::error("no result"))
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        // Settings once per batch: crossing into the host costs more than
        // reading a few keys.
        let settings = Settings::load();
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let voice = state.get_or_insert_with(Voice::default);
        voice.set_settings(settings);
        readings.into_iter().map(|r| voice.normalize(r)).collect()
    }
}

emotion_plugin_sdk::export_plugin!(VoicePlugin);
