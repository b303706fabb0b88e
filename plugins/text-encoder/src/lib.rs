//! The gateway's `text-encoder` plugin: English message text → valence,
//! arousal and confidence on the circumplex, with a sentence encoder — the
//! accurate companion of the fast `text` (lexicon) plugin. The gateway's
//! configuration chooses which of the two reads a source.
//!
//! Method (details and measured quality in README.md):
//!
//! 1. BERT's uncased WordPiece tokenization (`tokenizer`), at most 256 pieces.
//! 2. all-MiniLM-L6-v2 (Wang et al. 2020; sentence-transformers, Apache-2.0),
//!    a 6-layer, 384-wide BERT, run inside the component (`encoder`): weights
//!    int8 per output row, integer matrix products with WebAssembly SIMD
//!    (`kernel`), everything else f32. Each layer's hidden states are
//!    mean-pooled over the tokens.
//!    The encoder is fine-tuned on EmoBank's train split (Buechel & Hahn
//!    2017): build.rs merges low-rank adapters (`data/adapter.safetensors`,
//!    from `tools/finetune.py`) into its matrices.
//! 3. A linear head on the 7 pooled layers and the `text` plugin's 2 scores
//!    (`head`): ridge regressions on EmoBank's train split, on its 1..5
//!    scales, the settings chosen on the train rows the fine-tuning held
//!    out.
//! 4. Calibration to the circumplex as the `text` plugin does: valence =
//!    (V − 3) / 2, arousal = (A − 1) / 4, clamped.
//! 5. Confidence in the text source's range 0.60–0.80 from the number of
//!    words, the share the vocabulary knows, the script and the language.
//!
//! Bad input is a per-reading error, never a trap: a payload that is not
//! text, empty or whitespace-only text, text over the size limit. Text with
//! no letters or digits is "no emotion".

use std::sync::OnceLock;

use emotion_plugin_sdk::{Emotion, Info, Outcome, Payload, Plugin, Reading, Source};
use serde_json::{Map, Value};

pub mod encoder;
pub mod head;
pub mod kernel;
pub mod lexicon;
pub mod tokenizer;

// The `text` plugin's files refer to each other from the crate root.
use lexicon::{emoji, features, fxhash, vader};

use encoder::{Encoder, MAX_TOKENS};
use head::{Head, Scores};
use lexicon::LEXICON_FEATURES;

/// What the head reads from the lexicon for one text.
pub type LexiconInputs = [f32; LEXICON_FEATURES];
use tokenizer::{Encoded, Tokenizer};

/// The int8 encoder built by build.rs from all-MiniLM-L6-v2.
pub static ENCODER_BLOB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/encoder-i8.bin"));
/// The WordPiece vocabulary, one token per line in id order.
pub static VOCAB: &str = include_str!(concat!(env!("OUT_DIR"), "/vocab.txt"));
/// The unquantized encoder (same layout, f32), for the native tests that
/// check the int8 one against it; not embedded.
pub const ENCODER_F32_PATH: &str = concat!(env!("OUT_DIR"), "/encoder-f32.bin");
/// The fitted head (`examples/fit.rs`).
pub static HEAD: &str = include_str!("../data/head.txt");

#[derive(Debug)]
pub struct TextEncoderPlugin;

/// The lowest and highest confidence this plugin reports (the gateway's range
/// for the text source).
pub const CONFIDENCE_RANGE: (f64, f64) = (0.60, 0.80);

/// Default and largest accepted `max_bytes`.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;
pub const MAX_MAX_BYTES: usize = 1024 * 1024;

/// Most tokens in one pass of the encoder: bounds the scratch memory (the
/// 1536-wide intermediate activations of 512 tokens are 3 MiB) while still
/// sharing each pass over the weights among many short messages.
const TOKENS_PER_PASS: usize = 512;

/// The JSON Schema of this plugin's settings, shown by `GET /api/plugins`.
const SETTINGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "max_bytes": {"type": "integer", "minimum": 1, "maximum": 1048576, "default": 16384,
                  "description": "Longer texts (UTF-8 bytes) are refused with an error. The encoder reads the first 254 word pieces of a text."}
  }
}"#;

impl Plugin for TextEncoderPlugin {
    fn info() -> Info {
        Info::new("text-encoder", env!("CARGO_PKG_VERSION"), [Source::Text])
            .with_settings_schema(SETTINGS_SCHEMA)
    }

    fn normalize_one(reading: Reading) -> Outcome {
        normalize_batch(&Settings::default(), vec![reading])
            .pop()
            .unwrap_or_else(|| Outcome::error("internal error: no result"))
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        // One settings call per batch, not per reading.
        let settings = if readings.is_empty() {
            Settings::default()
        } else {
            Settings::load()
        };
        normalize_batch(&settings, readings)
    }
}

// Measured peak linear memory (gateway/plugin-host/examples/peak_memory.rs):
// 39.1 MiB on batches of 100 short texts and on 100 texts at the 254-piece
// cap, since the int8 weights are read in place (60.5 / 62.6 MiB when they
// were widened to i16). 96 MiB leaves room for changes of the model.
emotion_plugin_sdk::export_plugin!(TextEncoderPlugin, memory = "96MiB");

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
    /// The settings from the host. Native builds (tests, examples) have no
    /// host to ask and use the defaults.
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

/// The embedded model: tokenizer, encoder and head, loaded once per instance.
#[derive(Debug)]
pub struct Model {
    pub tokenizer: Tokenizer,
    pub encoder: Encoder<'static>,
    pub head: Head,
}

impl Model {
    /// The model built into the plugin. The int8 matrices are read in place
    /// from the embedded blob; loading copies only the f32 parts (biases,
    /// norms, scales, position embeddings).
    pub fn shipped() -> Result<&'static Model, String> {
        static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();
        MODEL
            .get_or_init(|| {
                Ok(Model {
                    tokenizer: Tokenizer::new(VOCAB),
                    encoder: Encoder::new(ENCODER_BLOB).map_err(|e| e.to_string())?,
                    head: Head::parse(HEAD).map_err(|e| e.to_string())?,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Token ids and counts of a text.
    pub fn tokenize(&self, text: &str) -> Encoded {
        self.tokenizer.encode_counted(text, MAX_TOKENS)
    }

    /// Scores of many texts (their token ids and [`lexicon::read`] values,
    /// one of each per text), sharing the encoder's passes.
    pub fn scores(&self, texts: &[Vec<u32>], lexicon: &[LexiconInputs]) -> Vec<Scores> {
        let mut out = Vec::with_capacity(texts.len());
        for pass in passes(texts) {
            let lex = lexicon.get(out.len()..).unwrap_or_default();
            for (f, l) in self.encoder.pooled(pass).iter().zip(lex) {
                out.push(self.head.predict(f, l));
            }
        }
        out
    }
}

/// Consecutive groups of texts of at most [`TOKENS_PER_PASS`] tokens (or one
/// longer text).
fn passes(texts: &[Vec<u32>]) -> impl Iterator<Item = &[Vec<u32>]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= texts.len() {
            return None;
        }
        let mut end = start;
        let mut tokens = 0;
        while end < texts.len() && (end == start || tokens + texts[end].len() <= TOKENS_PER_PASS) {
            tokens += texts[end].len();
            end += 1;
        }
        let group = &texts[start..end];
        start = end;
        Some(group)
    })
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
    /// The head's estimate on EmoBank's 1..5 scales (before clamping).
    pub emobank: Scores,
    /// Word pieces the encoder read, `[CLS]` and `[SEP]` included.
    pub tokens: usize,
    /// Words (with a letter or digit) in the text the encoder read.
    pub words: usize,
    /// Share of those words the vocabulary can spell.
    pub known: f64,
    /// The text was longer than the encoder reads.
    pub truncated: bool,
}

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// The payload is not text (its kind).
    NotText(&'static str),
    Empty,
    TooLong {
        bytes: usize,
        max_bytes: usize,
    },
    /// The embedded model did not load (a build problem, not input).
    Model(String),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::NotText(kind) => write!(
                f,
                "the text-encoder plugin reads text payloads ({{\"text\": \"...\"}}), got a {kind} payload"
            ),
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

/// Normalize a batch: the plugin's whole behaviour. One result per reading,
/// in order; the readable texts share the encoder's passes.
pub fn normalize_batch(settings: &Settings, readings: Vec<Reading>) -> Vec<Outcome> {
    let texts: Vec<Result<(String, Option<String>), TextError>> = readings
        .into_iter()
        .map(|r| match r.payload {
            Payload::Text(t) => Ok((t.content, t.language)),
            other => Err(TextError::NotText(payload_kind(&other))),
        })
        .collect();
    let refs: Vec<Result<(&str, Option<&str>), TextError>> = texts
        .iter()
        .map(|t| match t {
            Ok((c, l)) => Ok((c.as_str(), l.as_deref())),
            Err(e) => Err(e.clone()),
        })
        .collect();
    analyze_many(&refs, settings)
        .into_iter()
        .map(|r| match r {
            Ok(Some(a)) => outcome(&a),
            Ok(None) => Outcome::None,
            Err(e) => Outcome::error(e.to_string()),
        })
        .collect()
}

fn payload_kind(p: &Payload) -> &'static str {
    match p {
        Payload::Facial(_) => "facial",
        Payload::Voice(_) => "voice",
        Payload::Physiological(_) => "physiological",
        Payload::Json(_) => "json",
        Payload::Raw(_) => "raw",
        Payload::Text(_) => "text",
    }
}

fn outcome(a: &Analysis) -> Outcome {
    if !(a.valence.is_finite() && a.arousal.is_finite() && a.confidence.is_finite()) {
        return Outcome::error("internal error: non-finite score");
    }
    let extra = format!(
        "{{\"model\":\"all-MiniLM-L6-v2-emobank-lora-int8\",\"tokens\":{},\"words\":{},\"known\":{:.3},\"truncated\":{}}}",
        a.tokens, a.words, a.known, a.truncated
    );
    Outcome::Emotion(Emotion::new(a.valence, a.arousal, a.confidence).with_extra("text", extra))
}

/// Analyze one message. `Ok(None)`: nothing to read (no letters or digits).
pub fn analyze(
    text: &str,
    language: Option<&str>,
    settings: &Settings,
) -> Result<Option<Analysis>, TextError> {
    analyze_many(&[Ok((text, language))], settings)
        .pop()
        .unwrap_or(Ok(None))
}

/// Analyze many messages (an `Err` input, e.g. a non-text payload, is passed
/// through), sharing the encoder's passes.
pub fn analyze_many(
    texts: &[Result<(&str, Option<&str>), TextError>],
    settings: &Settings,
) -> Vec<Result<Option<Analysis>, TextError>> {
    let mut out: Vec<Result<Option<Analysis>, TextError>> = Vec::with_capacity(texts.len());
    let mut todo: Vec<(usize, Encoded, f64, f64)> = Vec::new();
    let mut lexicon: Vec<LexiconInputs> = Vec::new();
    // Loaded on the first text to read, not for an empty batch.
    let mut model: Option<Result<&Model, String>> = None;
    for (i, t) in texts.iter().enumerate() {
        let (text, language) = match t {
            Ok(t) => *t,
            Err(e) => {
                out.push(Err(e.clone()));
                continue;
            }
        };
        if text.len() > settings.max_bytes {
            out.push(Err(TextError::TooLong {
                bytes: text.len(),
                max_bytes: settings.max_bytes,
            }));
            continue;
        }
        if text.trim().is_empty() {
            out.push(Err(TextError::Empty));
            continue;
        }
        let model = match model.get_or_insert_with(Model::shipped) {
            Ok(m) => *m,
            Err(e) => {
                out.push(Err(TextError::Model(e.clone())));
                continue;
            }
        };
        let encoded = model.tokenize(text);
        if encoded.words == 0 {
            out.push(Ok(None));
            continue;
        }
        match lexicon::read(text) {
            Ok(l) => lexicon.push(l),
            Err(e) => {
                out.push(Err(TextError::Model(e.to_owned())));
                continue;
            }
        }
        out.push(Ok(None));
        todo.push((i, encoded, latin_share(text), language_factor(language)));
    }
    if let (Some(Ok(model)), false) = (model, todo.is_empty()) {
        let ids: Vec<Vec<u32>> = todo
            .iter_mut()
            .map(|t| std::mem::take(&mut t.1.ids))
            .collect();
        let scores = model.scores(&ids, &lexicon);
        for ((i, e, script, lang), (s, ids)) in todo.into_iter().zip(scores.into_iter().zip(&ids)) {
            let known = 1.0 - e.unknown as f64 / e.words.max(1) as f64;
            out[i] = Ok(Some(Analysis {
                valence: ((s.valence - 3.0) / 2.0).clamp(-1.0, 1.0),
                arousal: ((s.arousal - 1.0) / 4.0).clamp(0.0, 1.0),
                confidence: confidence(e.words, known, script, lang),
                emobank: s,
                tokens: ids.len(),
                words: e.words,
                known,
                truncated: e.truncated,
            }));
        }
    }
    out
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

fn language_factor(language: Option<&str>) -> f64 {
    if is_english(language) { 1.0 } else { 0.25 }
}

/// Share of the letters in Latin script (1 when there are none).
fn latin_share(text: &str) -> f64 {
    let (mut letters, mut latin) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        // Basic Latin through Latin Extended Additional.
        latin += usize::from(
            c.is_ascii_alphabetic()
                || ('\u{c0}'..='\u{24f}').contains(&c)
                || ('\u{1e00}'..='\u{1eff}').contains(&c),
        );
    }
    if letters == 0 {
        1.0
    } else {
        latin as f64 / letters as f64
    }
}

/// Confidence, as the `text` plugin computes it:
///
/// ```text
/// q = (1 − e^(−words/4)) · known · script · language        (each 0..1)
/// confidence = 0.60 + 0.20 · q
/// ```
///
/// `known` is the share of words the vocabulary can spell, `script` the
/// share of letters in Latin script, `language` 1 for English or an
/// undeclared language and 0.25 for another (the model read English).
fn confidence(words: usize, known: f64, script: f64, language: f64) -> f64 {
    let amount = 1.0 - (-(words as f64) / 4.0).exp();
    let q = (amount * known * script * language).clamp(0.0, 1.0);
    let (lo, hi) = CONFIDENCE_RANGE;
    lo + (hi - lo) * q
}

#[cfg(test)]
mod tests;
