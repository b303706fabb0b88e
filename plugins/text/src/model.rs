//! The fitted model: an intercept, one weight per dense feature and a word
//! table (per stem, its weight for valence and for arousal), for each of
//! EmoBank's two scales (1..5, 3 neutral).
//!
//! ```text
//! score = intercept + Σ dense_weight · feature + Σ_words table[stem] / √(words)
//! ```
//!
//! `data/model.tsv` is written by `examples/fit.rs` from EmoBank's train split
//! (so it is CC-BY-SA 4.0; see NOTICE.md) and embedded in the component.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::features::{DENSE, DENSE_NAMES, Features};
use crate::fxhash::FxBuildHasher;

static SHIPPED: &str = include_str!("../data/model.tsv");

/// Valence and arousal on EmoBank's scales.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    pub valence: f64,
    pub arousal: f64,
}

/// The model's parameters.
#[derive(Debug, Clone)]
pub struct Model {
    pub intercept: [f64; 2],
    /// `dense[i] = [valence weight, arousal weight]` of feature `DENSE_NAMES[i]`.
    pub dense: [[f64; 2]; DENSE],
    /// Stem → [valence weight, arousal weight].
    pub words: HashMap<Box<str>, [f64; 2], FxBuildHasher>,
}

/// What the model made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    pub scores: Scores,
    /// Words whose stem is in the word table or that the VADER lexicon knows.
    pub known_words: usize,
}

impl Model {
    /// The model embedded in the plugin.
    pub fn shipped() -> Result<&'static Model, &'static str> {
        static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();
        MODEL
            .get_or_init(|| Model::parse(SHIPPED))
            .as_ref()
            .map_err(String::as_str)
    }

    /// A model that only knows EmoBank's neutral point.
    pub fn neutral() -> Model {
        Model {
            intercept: [3.0, 3.0],
            dense: [[0.0; 2]; DENSE],
            words: HashMap::with_hasher(FxBuildHasher),
        }
    }

    /// Read the tab-separated model format (see [`Model::to_tsv`]).
    pub fn parse(text: &str) -> Result<Model, String> {
        let mut model = Model::neutral();
        let mut seen = [false; DENSE];
        let mut has_intercept = false;
        for (no, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let bad = || format!("model line {}: cannot read {line:?}", no + 1);
            let num = |s: &str| s.parse::<f64>().ok().filter(|x| x.is_finite());
            match f.as_slice() {
                ["intercept", v, a] => {
                    model.intercept = [num(v).ok_or_else(bad)?, num(a).ok_or_else(bad)?];
                    has_intercept = true;
                }
                ["dense", name, v, a] => {
                    let i = DENSE_NAMES.iter().position(|n| n == name).ok_or_else(|| {
                        format!("model line {}: unknown feature {name:?}", no + 1)
                    })?;
                    model.dense[i] = [num(v).ok_or_else(bad)?, num(a).ok_or_else(bad)?];
                    seen[i] = true;
                }
                ["word", stem, v, a] => {
                    model.words.insert(
                        (*stem).into(),
                        [num(v).ok_or_else(bad)?, num(a).ok_or_else(bad)?],
                    );
                }
                _ => return Err(bad()),
            }
        }
        if !has_intercept {
            return Err("model has no intercept line".into());
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(format!(
                "model lacks the weights of feature {:?}",
                DENSE_NAMES[i]
            ));
        }
        Ok(model)
    }

    /// Write the model: a header of `#` comment lines, then `intercept`,
    /// `dense` and `word` lines (words sorted), numbers with six decimals.
    pub fn to_tsv(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(
            out,
            "intercept\t{:.6}\t{:.6}",
            self.intercept[0], self.intercept[1]
        );
        for (name, w) in DENSE_NAMES.iter().zip(&self.dense) {
            let _ = writeln!(out, "dense\t{name}\t{:.6}\t{:.6}", w[0], w[1]);
        }
        let mut words: Vec<_> = self.words.iter().collect();
        words.sort_by(|a, b| a.0.cmp(b.0));
        for (stem, w) in words {
            let _ = writeln!(out, "word\t{stem}\t{:.6}\t{:.6}", w[0], w[1]);
        }
        out
    }

    /// Valence and arousal of a message on EmoBank's scales.
    pub fn predict(&self, f: &Features) -> Prediction {
        let mut s = self.intercept;
        for (x, w) in f.dense.iter().zip(&self.dense) {
            s[0] += w[0] * x;
            s[1] += w[1] * x;
        }
        let mut known_words = 0;
        if !f.stems.is_empty() {
            let (mut v, mut a) = (0.0, 0.0);
            for (stem, &lex) in f.stems.iter().zip(&f.in_lexicon) {
                if let Some(w) = self.words.get(&**stem) {
                    v += w[0];
                    a += w[1];
                    known_words += 1;
                } else if lex {
                    known_words += 1;
                }
            }
            let norm = (f.stems.len() as f64).sqrt();
            s[0] += v / norm;
            s[1] += a / norm;
        }
        Prediction {
            scores: Scores {
                valence: s[0],
                arousal: s[1],
            },
            known_words,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_model_loads() {
        Model::shipped().expect("the embedded model parses");
    }

    #[test]
    fn round_trip() {
        let mut m = Model::neutral();
        m.intercept = [2.9, 3.1];
        m.dense[3] = [0.25, -0.125];
        m.words.insert("happi".into(), [0.5, 0.25]);
        let text = m.to_tsv("test model\nsecond line");
        let back = Model::parse(&text).expect("parses");
        assert_eq!(back.intercept, m.intercept);
        assert_eq!(back.dense, m.dense);
        assert_eq!(back.words.get("happi"), Some(&[0.5, 0.25]));
    }

    #[test]
    fn refuses_bad_lines() {
        assert!(Model::parse("intercept\t3\n").is_err());
        assert!(
            Model::parse("intercept\t3\t3\n").is_err(),
            "dense weights missing"
        );
        assert!(Model::parse("intercept\t3\tNaN\n").is_err());
    }
}
