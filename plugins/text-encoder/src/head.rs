//! The regression head: valence and arousal on EmoBank's 1..5 scales as
//! linear functions of the encoder's pooled layers (7 × 384 values, see
//! [`crate::encoder::Encoder::pooled`]) followed by the lexicon's values
//! ([`crate::lexicon::read`]). Fitted by `examples/fit.rs` (which writes
//! `data/head.txt`) on the fine-tuned encoder's features of EmoBank's train
//! split: per target a ridge on all features, for arousal blended with a
//! ridge on the embedding layer and the lexicon, every setting chosen on the
//! train rows the fine-tuning held out (`data/holdout.txt`); the blend and
//! the standardization of the features are folded into the weights.
//!
//! `data/head.txt`: comment lines (`#`), then `intercept <valence> <arousal>`,
//! then one line `<valence weight> <arousal weight>` per feature.

use std::fmt;

use crate::encoder::{HIDDEN, LAYERS};
use crate::lexicon::LEXICON_FEATURES;

/// Values from the encoder: its 7 mean-pooled layers.
pub const ENCODER_FEATURES: usize = (LAYERS + 1) * HIDDEN;
/// Features the head reads: the encoder's, then the lexicon's.
pub const FEATURES: usize = ENCODER_FEATURES + LEXICON_FEATURES;

/// Valence and arousal on EmoBank's 1..5 scales (3 neutral).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub valence: f64,
    pub arousal: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub intercept: [f64; 2],
    /// Per feature, (valence weight, arousal weight).
    pub weights: Vec<[f64; 2]>,
}

/// `data/head.txt` is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError(pub String);

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "regression head: {}", self.0)
    }
}

impl std::error::Error for HeadError {}

impl Head {
    pub fn parse(text: &str) -> Result<Head, HeadError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
        let pair = |i: usize, l: &str, skip: usize| -> Result<[f64; 2], HeadError> {
            let v: Vec<f64> = l
                .split_whitespace()
                .skip(skip)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| HeadError(format!("line {}: {e}", i + 1)))?;
            match v.as_slice() {
                [a, b] if a.is_finite() && b.is_finite() => Ok([*a, *b]),
                _ => Err(HeadError(format!("line {}: expected two numbers", i + 1))),
            }
        };
        let intercept = match lines.next() {
            Some((i, l)) if l.starts_with("intercept ") => pair(i, l, 1)?,
            _ => return Err(HeadError("no intercept line".into())),
        };
        let weights = lines
            .map(|(i, l)| pair(i, l, 0))
            .collect::<Result<Vec<_>, _>>()?;
        if weights.len() != FEATURES {
            return Err(HeadError(format!(
                "{} weights, expected {FEATURES}",
                weights.len()
            )));
        }
        Ok(Head { intercept, weights })
    }

    /// Scores from the encoder's pooled layers and the lexicon's values.
    pub fn predict(&self, encoder: &[f32], lexicon: &[f32]) -> Scores {
        let [mut v, mut a] = self.intercept;
        let features = encoder.iter().take(ENCODER_FEATURES).chain(lexicon);
        for (x, [wv, wa]) in features.zip(&self.weights) {
            let x = f64::from(*x);
            v += x * wv;
            a += x * wa;
        }
        Scores {
            valence: v,
            arousal: a,
        }
    }

    /// Write in the format [`Head::parse`] reads, after `comment` lines.
    pub fn write(&self, comment: &str) -> String {
        let mut s = String::new();
        for line in comment.lines() {
            s.push_str("# ");
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&format!(
            "intercept {:e} {:e}\n",
            self.intercept[0], self.intercept[1]
        ));
        for [v, a] in &self.weights {
            s.push_str(&format!("{v:e} {a:e}\n"));
        }
        s
    }
}
