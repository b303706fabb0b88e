//! The gateway's `text` plugin: English message text → valence, arousal and
//! confidence on the circumplex (the gateway names the nearest label).
//!
//! Method (details and measured quality in README.md):
//!
//! 1. Emoji become their English glosses; curly apostrophes are straightened.
//! 2. VADER (Hutto & Gilbert 2014), ported rule for rule: lexicon look-up,
//!    negation, degree adverbs (intensifiers, dampeners), `but`, ALL-CAPS and
//!    exclamation/question-mark emphasis, emoticons; plus elongated words
//!    ("sooo goood") read as emphasis.
//! 3. Eleven dense features from VADER's per-word sentiments and the message's
//!    shape, and a table of word-stem weights, combined linearly with weights
//!    fitted by ridge regression on EmoBank's train split (Buechel & Hahn
//!    2017) and regularization chosen on its dev split — separately for
//!    valence and arousal, on EmoBank's 1..5 scales.
//! 4. Calibration to the circumplex: valence = (V − 3) / 2, arousal =
//!    (A − 1) / 4, clamped to [-1, 1] and [0, 1].
//! 5. Confidence in the text source's range 0.60–0.80: higher for longer
//!    messages whose words the model knows, lower for very short ones, unknown
//!    words and languages other than English.
//!
//! Bad input is a per-reading error, never a trap: a payload that is not
//! text, empty or whitespace-only text, text over the size limit. Text with
//! nothing to read (only punctuation or symbols) is "no emotion".

use emotion_plugin_sdk::{Emotion, Info, Outcome, Payload, Plugin, Reading, Source, json};
use serde_json::{Map, Value};

pub mod emoji;
pub mod features;
mod fxhash;
pub mod model;
pub mod vader;

use features::Features;
use model::{Model, Scores};

#[derive(Debug)]
pub struct TextPlugin;

/// The lowest and highest confidence this plugin reports (the gateway's range
/// for the text source).
pub const CONFIDENCE_RANGE: (f64, f64) = (0.60, 0.80);

/// Default and largest accepted `max_bytes`.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;
pub const MAX_MAX_BYTES: usize = 1024 * 1024;

/// The JSON Schema of this plugin's settings, shown by `GET /api/plugins`.
const SETTINGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "max_bytes": {"type": "integer", "minimum": 1, "maximum": 1048576, "default": 16384,
                  "description": "Longer texts (UTF-8 bytes) are refused with an error."}
  }
}"#;

impl Plugin for TextPlugin {
    fn info() -> Info {
        Info::new("text", env!("CARGO_PKG_VERSION"), [Source::Text])
            .with_settings_schema(SETTINGS_SCHEMA)
    }

    fn normalize_one(reading: Reading) -> Outcome {
        normalize_reading(&Settings::default(), reading)
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        // One settings call per batch, not per reading.
        let settings = if readings.is_empty() {
            Settings::default()
        } else {
            Settings::load()
        };
        readings
            .into_iter()
            .map(|r| normalize_reading(&settings, r))
            .collect()
    }
}

emotion_plugin_sdk::export_plugin!(TextPlugin);

/// The plugin's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Texts longer than this (UTF-8 bytes) are refused.
    pub max_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl Settings {
    /// The settings from the host. Native builds (tests, examples, the host
    /// benchmark's native path) have no host to ask and use the defaults.
    #[cfg(target_family = "wasm")]
    fn load() -> Self {
        let text = emotion_plugin_sdk::settings();
        let (settings, warning) = Settings::parse(&text);
        if let Some(w) = warning {
            emotion_plugin_sdk::warn(&w);
        }
        settings
    }

    #[cfg(not(target_family = "wasm"))]
    fn load() -> Self {
        Settings::default()
    }

    /// Read settings JSON; unreadable or out-of-range values fall back to the
    /// defaults, with a warning for the log.
    pub fn parse(text: &str) -> (Settings, Option<String>) {
        let mut s = Settings::default();
        let m = match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(m) => m,
            Err(e) => return (s, Some(format!("ignoring unreadable settings: {e}"))),
        };
        let mut warnings = Vec::new();
        for (key, value) in &m {
            match key.as_str() {
                "max_bytes" => match value.as_u64() {
                    Some(n) if (1..=MAX_MAX_BYTES as u64).contains(&n) => s.max_bytes = n as usize,
                    _ => warnings.push(format!(
                        "ignoring max_bytes {value}: expected an integer from 1 to {MAX_MAX_BYTES}"
                    )),
                },
                other => warnings.push(format!("ignoring unknown setting `{other}`")),
            }
        }
        let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        (s, warning)
    }
}

/// The plugin's reading of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Circumplex valence, [-1, 1].
    pub valence: f64,
    /// Circumplex arousal, [0, 1].
    pub arousal: f64,
    /// In [`CONFIDENCE_RANGE`].
    pub confidence: f64,
    /// The model's estimate on EmoBank's 1..5 scales (before clamping).
    pub emobank: Scores,
    /// VADER's compound score, −1..1.
    pub compound: f64,
    /// Words in the message.
    pub words: usize,
    /// Share of the message's tokens that the lexicon or the word table knows.
    pub known: f64,
}

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong {
        bytes: usize,
        max_bytes: usize,
    },
    /// The embedded model data did not load (a build problem, not input).
    Model(String),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::Empty => f.write_str("text is empty or only whitespace"),
            TextError::TooLong { bytes, max_bytes } => write!(
                f,
                "text is {bytes} bytes long; this plugin reads at most {max_bytes} (setting max_bytes)"
            ),
            TextError::Model(e) => write!(f, "the text model did not load: {e}"),
        }
    }
}

impl std::error::Error for TextError {}

/// Normalize one reading: the plugin's whole behaviour for one message.
pub fn normalize_reading(settings: &Settings, reading: Reading) -> Outcome {
    let text = match reading.payload {
        Payload::Text(t) => t,
        other => {
            let kind = match other {
                Payload::Facial(_) => "facial",
                Payload::Voice(_) => "voice",
                Payload::Physiological(_) => "physiological",
                Payload::Json(_) => "json",
                Payload::Raw(_) => "raw",
                Payload::Text(_) => "text",
            };
            return Outcome::error(format!(
                "the text plugin reads text payloads ({{\"text\": \"...\"}}), got a {kind} payload"
            ));
        }
    };
    match analyze(&text.content, text.language.as_deref(), settings) {
        Ok(Some(a)) => {
            if !(a.valence.is_finite() && a.arousal.is_finite() && a.confidence.is_finite()) {
                return Outcome::error("internal error: non-finite score");
            }
            // Written in place with the SDK's number formatting (`format!`'s
            // exact float algorithm cost more than the rest of the extra).
            let mut e = Emotion::new(a.valence, a.arousal, a.confidence);
            e.push_extra_with("text", |o| {
                o.push_str("{\"vader_compound\":");
                json::push_fixed(o, a.compound, 4);
                o.push_str(",\"words\":");
                json::push_fixed(o, a.words as f64, 0);
                o.push_str(",\"known\":");
                json::push_fixed(o, a.known, 3);
                o.push('}');
            });
            Outcome::Emotion(e)
        }
        Ok(None) => Outcome::None,
        Err(e) => Outcome::error(e.to_string()),
    }
}

/// Analyze a message. `Ok(None)`: nothing to read (no words, no emoticons).
pub fn analyze(
    text: &str,
    language: Option<&str>,
    settings: &Settings,
) -> Result<Option<Analysis>, TextError> {
    if text.len() > settings.max_bytes {
        return Err(TextError::TooLong {
            bytes: text.len(),
            max_bytes: settings.max_bytes,
        });
    }
    if text.trim().is_empty() {
        return Err(TextError::Empty);
    }
    let model = Model::shipped().map_err(|e| TextError::Model(e.to_string()))?;
    Ok(analyze_with(model, text, language))
}

/// [`analyze`] with a given model and no input checks (the quality and fit
/// examples use it).
pub fn analyze_with(model: &Model, text: &str, language: Option<&str>) -> Option<Analysis> {
    let f = features::extract(text);
    if f.stems.is_empty() && f.emoticons == 0 {
        return None;
    }
    let p = model.predict(&f);
    let scores = p.scores;
    let known_lexicon = p.known_words;
    let units = f.stems.len() + f.emoticons;
    let known = (known_lexicon + f.emoticons) as f64 / units.max(1) as f64;
    Some(Analysis {
        valence: ((scores.valence - 3.0) / 2.0).clamp(-1.0, 1.0),
        arousal: ((scores.arousal - 1.0) / 4.0).clamp(0.0, 1.0),
        confidence: confidence(&f, units, known, language),
        emobank: scores,
        compound: f.compound,
        words: f.stems.len(),
        known,
    })
}

/// Whether a BCP 47 tag names English (or names no language).
pub fn is_english(language: Option<&str>) -> bool {
    match language.map(str::trim) {
        None | Some("") => true,
        Some(tag) => {
            let primary = tag.split(['-', '_']).next().unwrap_or(tag);
            primary.eq_ignore_ascii_case("en") || primary.eq_ignore_ascii_case("und")
        }
    }
}

/// Confidence from the amount and the familiarity of the evidence:
///
/// ```text
/// q = (1 − e^(−units/4)) · known · script · language        (each 0..1)
/// confidence = 0.60 + 0.20 · q
/// ```
///
/// `units` counts words and emoticons (one word: 0.22, five: 0.71, twelve:
/// 0.95); `known` is the share of them the lexicon or word table knows;
/// `script` the share of letters in Latin script; `language` is 1 for
/// English or an undeclared language and 0.25 for another declared language
/// (the model reads English only).
fn confidence(f: &Features, units: usize, known: f64, language: Option<&str>) -> f64 {
    let amount = 1.0 - (-(units as f64) / 4.0).exp();
    let script = if f.letters == 0 {
        1.0
    } else {
        f.latin_letters as f64 / f.letters as f64
    };
    let lang = if is_english(language) { 1.0 } else { 0.25 };
    let q = (amount * known * script * lang).clamp(0.0, 1.0);
    let (lo, hi) = CONFIDENCE_RANGE;
    lo + (hi - lo) * q
}

/// Warm the embedded tables (lexicon, stemmer, model) so that the first
/// reading does not pay for loading them.
pub fn warm_up() {
    features::warm_up();
    let _ = Model::shipped();
}

#[cfg(test)]
mod tests;
