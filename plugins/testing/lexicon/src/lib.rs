//! Benchmark plugin: a small lexicon-based text normalizer.
//!
//! It does the kind of work a real text plugin does (tokenize, case-fold,
//! look words up, handle negation, intensifiers, capitals and exclamation
//! marks, aggregate) so that the host's per-reading cost can be compared with
//! the same code compiled natively and called in-process. Its hand-made
//! lexicon is tiny and untuned: this is not the gateway's text plugin (that
//! one is measured against EmoBank; see the plugins issue).

use std::collections::HashMap;
use std::sync::OnceLock;

use emotion_plugin_sdk::{Emotion, Info, Outcome, Payload, Plugin, Reading, Source};

pub struct Lexicon;

impl Plugin for Lexicon {
    fn info() -> Info {
        Info::new("lexicon", env!("CARGO_PKG_VERSION"), [Source::Text])
    }

    fn normalize_one(reading: Reading) -> Outcome {
        match reading.payload {
            Payload::Text(t) => score(&t.content),
            _ => Outcome::error("lexicon reads text payloads only"),
        }
    }
}

emotion_plugin_sdk::export_plugin!(Lexicon);

/// (word, valence in [-1, 1], arousal in [0, 1]).
const WORDS: &[(&str, f64, f64)] = &[
    ("happy", 0.8, 0.6),
    ("joy", 0.9, 0.7),
    ("joyful", 0.9, 0.7),
    ("love", 0.9, 0.6),
    ("loved", 0.85, 0.6),
    ("lovely", 0.75, 0.5),
    ("great", 0.7, 0.6),
    ("good", 0.5, 0.45),
    ("nice", 0.5, 0.4),
    ("excellent", 0.85, 0.65),
    ("wonderful", 0.85, 0.65),
    ("amazing", 0.85, 0.8),
    ("awesome", 0.8, 0.75),
    ("fantastic", 0.85, 0.75),
    ("excited", 0.7, 0.9),
    ("exciting", 0.7, 0.85),
    ("thrilled", 0.8, 0.9),
    ("glad", 0.6, 0.45),
    ("pleased", 0.6, 0.4),
    ("proud", 0.65, 0.6),
    ("hope", 0.5, 0.5),
    ("hopeful", 0.55, 0.5),
    ("calm", 0.45, 0.1),
    ("relaxed", 0.55, 0.1),
    ("peaceful", 0.6, 0.1),
    ("content", 0.55, 0.25),
    ("satisfied", 0.55, 0.3),
    ("grateful", 0.7, 0.4),
    ("thankful", 0.7, 0.4),
    ("fun", 0.7, 0.7),
    ("funny", 0.6, 0.65),
    ("laugh", 0.7, 0.7),
    ("smile", 0.7, 0.5),
    ("beautiful", 0.75, 0.5),
    ("best", 0.8, 0.6),
    ("better", 0.45, 0.45),
    ("win", 0.7, 0.75),
    ("success", 0.7, 0.6),
    ("safe", 0.5, 0.2),
    ("comfortable", 0.55, 0.2),
    ("sad", -0.75, 0.3),
    ("unhappy", -0.7, 0.35),
    ("depressed", -0.85, 0.2),
    ("miserable", -0.85, 0.35),
    ("lonely", -0.65, 0.25),
    ("cry", -0.65, 0.55),
    ("crying", -0.65, 0.55),
    ("tired", -0.35, 0.1),
    ("bored", -0.4, 0.1),
    ("boring", -0.45, 0.15),
    ("angry", -0.75, 0.85),
    ("mad", -0.7, 0.8),
    ("furious", -0.85, 0.95),
    ("annoyed", -0.55, 0.65),
    ("irritated", -0.55, 0.65),
    ("hate", -0.85, 0.8),
    ("awful", -0.8, 0.6),
    ("terrible", -0.85, 0.65),
    ("horrible", -0.85, 0.7),
    ("bad", -0.6, 0.45),
    ("worse", -0.65, 0.5),
    ("worst", -0.85, 0.6),
    ("afraid", -0.7, 0.8),
    ("scared", -0.7, 0.85),
    ("fear", -0.75, 0.85),
    ("frightened", -0.75, 0.85),
    ("anxious", -0.6, 0.8),
    ("nervous", -0.5, 0.75),
    ("worried", -0.55, 0.7),
    ("stress", -0.6, 0.8),
    ("stressed", -0.65, 0.8),
    ("panic", -0.8, 0.95),
    ("upset", -0.6, 0.65),
    ("disappointed", -0.6, 0.35),
    ("disgusted", -0.75, 0.6),
    ("gross", -0.65, 0.55),
    ("pain", -0.7, 0.65),
    ("hurt", -0.65, 0.6),
    ("sick", -0.6, 0.4),
    ("fail", -0.65, 0.55),
    ("failed", -0.65, 0.55),
    ("lost", -0.5, 0.45),
    ("problem", -0.4, 0.5),
    ("wrong", -0.45, 0.5),
    ("surprised", 0.2, 0.85),
    ("shocked", -0.3, 0.9),
    ("ok", 0.15, 0.3),
    ("okay", 0.15, 0.3),
    ("fine", 0.2, 0.3),
];

/// Words that flip the sign of the next few sentiment words (VADER's
/// negation scalar is -0.74).
const NEGATORS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "neither",
    "nor",
    "without",
    "cannot",
    "dont",
    "don't",
    "isn't",
    "isnt",
    "wasn't",
    "wasnt",
    "aren't",
    "arent",
    "won't",
    "wont",
    "didn't",
    "didnt",
    "can't",
    "cant",
    "couldn't",
    "shouldn't",
    "hardly",
];
const NEGATION_SCALAR: f64 = -0.74;
/// How many following tokens a negator reaches.
const NEGATION_REACH: usize = 3;

/// Degree modifiers and their boost (VADER uses ±0.293).
const BOOSTERS: &[(&str, f64)] = &[
    ("very", 0.293),
    ("really", 0.293),
    ("extremely", 0.293),
    ("so", 0.293),
    ("incredibly", 0.293),
    ("totally", 0.293),
    ("absolutely", 0.293),
    ("super", 0.293),
    ("quite", 0.15),
    ("slightly", -0.293),
    ("somewhat", -0.293),
    ("barely", -0.293),
    ("little", -0.2),
];

#[derive(Debug, Clone, Copy)]
enum Entry {
    Word { valence: f64, arousal: f64 },
    Negator,
    Booster(f64),
}

fn table() -> &'static HashMap<&'static str, Entry> {
    static TABLE: OnceLock<HashMap<&'static str, Entry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m = HashMap::with_capacity(WORDS.len() + NEGATORS.len() + BOOSTERS.len());
        for &(w, valence, arousal) in WORDS {
            m.insert(w, Entry::Word { valence, arousal });
        }
        for &w in NEGATORS {
            m.insert(w, Entry::Negator);
        }
        for &(w, b) in BOOSTERS {
            m.insert(w, Entry::Booster(b));
        }
        m
    })
}

/// Score one text. Public so the benchmark can call it natively.
pub fn score(text: &str) -> Outcome {
    let table = table();
    let mut lower = String::with_capacity(32);
    let (mut v_sum, mut a_sum, mut weight) = (0.0f64, 0.0f64, 0.0f64);
    let (mut tokens, mut hits) = (0usize, 0usize);
    let mut negate_left = 0usize;
    let mut boost = 0.0f64;
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        if raw.is_empty() {
            continue;
        }
        tokens += 1;
        lower.clear();
        lower.extend(raw.chars().flat_map(char::to_lowercase));
        let shouted = raw.len() > 1 && raw.chars().all(|c| !c.is_lowercase());
        match table.get(lower.as_str()) {
            Some(Entry::Negator) => {
                negate_left = NEGATION_REACH;
                continue;
            }
            Some(Entry::Booster(b)) => {
                boost += b;
                negate_left = negate_left.saturating_sub(1);
                continue;
            }
            Some(Entry::Word { valence, arousal }) => {
                let mut intensity = 1.0 + boost;
                if shouted {
                    intensity += 0.733; // VADER's all-caps increment
                }
                let mut v = valence * intensity;
                if negate_left > 0 {
                    v *= NEGATION_SCALAR;
                }
                let w = intensity.abs().max(0.1);
                v_sum += v.clamp(-1.0, 1.0) * w;
                a_sum += (arousal * intensity).clamp(0.0, 1.0) * w;
                weight += w;
                hits += 1;
            }
            None => {}
        }
        boost = 0.0;
        negate_left = negate_left.saturating_sub(1);
    }
    if hits == 0 {
        return Outcome::None;
    }
    let exclamations = text.bytes().filter(|&b| b == b'!').count().min(4) as f64;
    let valence = (v_sum / weight).clamp(-1.0, 1.0);
    let arousal = (a_sum / weight + 0.05 * exclamations).clamp(0.0, 1.0);
    // Text confidence stays in the source's range (0.60–0.80), growing with
    // the share of tokens the lexicon knows.
    let coverage = hits as f64 / tokens as f64;
    let confidence = 0.6 + 0.2 * coverage.min(1.0);
    Outcome::Emotion(Emotion::new(valence, arousal, confidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emotion(text: &str) -> Emotion {
        match score(text) {
            Outcome::Emotion(e) => e,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn polarity_negation_and_boost() {
        assert!(emotion("I am happy").valence > 0.5);
        assert!(emotion("I am not happy").valence < 0.0);
        assert!(emotion("I am very happy").valence > emotion("I am happy").valence);
        assert!(emotion("so ANGRY!!").arousal > emotion("angry").arousal);
        assert!(matches!(score("the table is brown"), Outcome::None));
    }
}
