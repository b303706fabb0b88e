//! Fit the text plugin's model on EmoBank's train split and choose its
//! settings on the dev split; write `data/model.tsv`.
//!
//! ```sh
//! cargo run --release -p emotion-plugin-text --example fit
//! ```
//!
//! Deterministic: the same CSV gives the same file, byte for byte.
//!
//! Model, for each of valence and arousal (EmoBank's 1..5 scales):
//! ridge regression over
//! * the eleven dense features of `src/features.rs` (standardized on train,
//!   penalty `LAMBDA_DENSE`), and
//! * a bag of word stems: count · idf / √(words in the message), for stems
//!   in at least `min_df` train messages (centered, penalty λ · mean squared
//!   row norm).
//!
//! Chosen on dev (nothing else is tuned): `min_df` (shared by both scales,
//! best sum of the two dev correlations) and λ for each scale. Solved by
//! conjugate gradients on the normal equations.

// Numerical loops over parallel arrays read better with indices.
#![allow(clippy::needless_range_loop)]

mod common;

use std::collections::{BTreeMap, HashMap};

use common::pearson;
use emotion_plugin_text::features::{self, DENSE, DENSE_NAMES, Features};
use emotion_plugin_text::model::Model;

/// Ridge penalty of the standardized dense features (small next to the
/// 8062 train messages: they are few and not collinear enough to need more).
const LAMBDA_DENSE: f64 = 10.0;
/// Candidate word penalties (× mean squared row norm of the word features).
const LAMBDAS: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];
const MIN_DFS: [usize; 3] = [1, 2, 3];

struct Doc {
    f: Features,
    y: [f64; 2],
    train: bool,
}

/// The word features of one message: (vocabulary index, value), sorted.
type SparseRow = Vec<(usize, f64)>;

struct Design<'a> {
    docs: &'a [Doc],
    /// Standardized dense features, per doc.
    dense: Vec<[f64; DENSE]>,
    words: Vec<SparseRow>,
    /// Column means of the word features over train.
    word_mean: Vec<f64>,
    train: Vec<usize>,
}

impl Design<'_> {
    fn dims(&self) -> usize {
        DENSE + self.word_mean.len()
    }

    /// Z w over the train rows (Z: centered design).
    fn apply(&self, w: &[f64], out: &mut [f64]) {
        let shift: f64 = self
            .word_mean
            .iter()
            .zip(&w[DENSE..])
            .map(|(m, x)| m * x)
            .sum();
        for (o, &i) in out.iter_mut().zip(&self.train) {
            let mut s = -shift;
            for (x, wk) in self.dense[i].iter().zip(w) {
                s += x * wk;
            }
            for &(j, x) in &self.words[i] {
                s += x * w[DENSE + j];
            }
            *o = s;
        }
    }

    /// Zᵀ u over the train rows.
    fn apply_t(&self, u: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let mut total = 0.0;
        for (&ui, &i) in u.iter().zip(&self.train) {
            total += ui;
            for (k, x) in self.dense[i].iter().enumerate() {
                out[k] += x * ui;
            }
            for &(j, x) in &self.words[i] {
                out[DENSE + j] += x * ui;
            }
        }
        for (o, m) in out[DENSE..].iter_mut().zip(&self.word_mean) {
            *o -= m * total;
        }
    }

    /// Ridge by conjugate gradients: (ZᵀZ + Λ) w = Zᵀ y.
    fn ridge(&self, y: &[f64], lambda_words: f64) -> Vec<f64> {
        let p = self.dims();
        let n = self.train.len();
        let penalty = |k: usize| {
            if k < DENSE {
                LAMBDA_DENSE
            } else {
                lambda_words
            }
        };
        let mut zu = vec![0.0; n];
        let mut b = vec![0.0; p];
        self.apply_t(y, &mut b);
        let mut w = vec![0.0; p];
        let mut r = b.clone();
        let mut d = r.clone();
        let mut rr: f64 = r.iter().map(|x| x * x).sum();
        let target = 1e-20 * rr;
        let mut ad = vec![0.0; p];
        for _ in 0..10_000 {
            if rr <= target {
                break;
            }
            self.apply(&d, &mut zu);
            self.apply_t(&zu, &mut ad);
            for (k, a) in ad.iter_mut().enumerate() {
                *a += penalty(k) * d[k];
            }
            let alpha = rr / d.iter().zip(&ad).map(|(x, y)| x * y).sum::<f64>();
            for k in 0..p {
                w[k] += alpha * d[k];
                r[k] -= alpha * ad[k];
            }
            let rr_new: f64 = r.iter().map(|x| x * x).sum();
            let beta = rr_new / rr;
            rr = rr_new;
            for k in 0..p {
                d[k] = r[k] + beta * d[k];
            }
        }
        w
    }
}

/// The best settings found so far.
struct Choice {
    score: f64,
    min_df: usize,
    /// (λ, train r, dev r) for valence and arousal.
    picks: [(f64, f64, f64); 2],
    fitted: [Fitted; 2],
    names: Vec<String>,
}

struct Fitted {
    intercept: f64,
    dense: [f64; DENSE],
    /// Weight per vocabulary entry on the idf-scaled features.
    raw: Vec<f64>,
    /// The same × idf: the word table's entries.
    words: Vec<f64>,
}

fn main() {
    let (path, rows) = common::load_emobank();
    eprintln!("fit: reading {}", path.display());
    let docs: Vec<Doc> = rows
        .iter()
        .filter(|r| r.split == "train" || r.split == "dev")
        .map(|r| Doc {
            f: features::extract(&r.text),
            y: [r.v, r.a],
            train: r.split == "train",
        })
        .collect();
    let train: Vec<usize> = (0..docs.len()).filter(|&i| docs[i].train).collect();
    let dev: Vec<usize> = (0..docs.len()).filter(|&i| !docs[i].train).collect();
    let n = train.len() as f64;
    println!("EmoBank: {} train, {} dev messages", train.len(), dev.len());

    // Dense features, standardized on train.
    let mut mean = [0.0; DENSE];
    let mut sd = [0.0; DENSE];
    for &i in &train {
        for k in 0..DENSE {
            mean[k] += docs[i].f.dense[k] / n;
        }
    }
    for &i in &train {
        for k in 0..DENSE {
            sd[k] += (docs[i].f.dense[k] - mean[k]).powi(2) / n;
        }
    }
    for s in &mut sd {
        *s = s.sqrt().max(1e-12);
    }
    let dense: Vec<[f64; DENSE]> = docs
        .iter()
        .map(|d| std::array::from_fn(|k| (d.f.dense[k] - mean[k]) / sd[k]))
        .collect();

    // Document frequencies of stems over train.
    let mut df: HashMap<&str, usize> = HashMap::new();
    for &i in &train {
        let mut seen: Vec<&str> = docs[i].f.stems.iter().map(|s| &**s).collect();
        seen.sort_unstable();
        seen.dedup();
        for s in seen {
            *df.entry(s).or_default() += 1;
        }
    }

    let mut best: Option<Choice> = None;
    println!("\nridge grid (Pearson r; λ_words × mean squared row norm; λ_dense = {LAMBDA_DENSE})");
    println!(
        "{:>6} {:>6} {:>8} | {:>9} {:>9} | {:>9} {:>9}",
        "min_df", "stems", "λ", "V train", "V dev", "A train", "A dev"
    );
    for min_df in MIN_DFS {
        let vocab: BTreeMap<&str, usize> = {
            let mut v: Vec<&str> = df
                .iter()
                .filter(|(_, c)| **c >= min_df)
                .map(|(s, _)| *s)
                .collect();
            v.sort_unstable();
            v.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
        };
        let names: Vec<String> = vocab.keys().map(|s| s.to_string()).collect();
        let idf: Vec<f64> = names
            .iter()
            .map(|s| (n / df[s.as_str()] as f64).ln())
            .collect();
        let words: Vec<SparseRow> = docs
            .iter()
            .map(|d| {
                let mut counts: BTreeMap<usize, f64> = BTreeMap::new();
                for s in &d.f.stems {
                    if let Some(&j) = vocab.get(&**s) {
                        *counts.entry(j).or_default() += 1.0;
                    }
                }
                let norm = (d.f.stems.len().max(1) as f64).sqrt();
                counts
                    .into_iter()
                    .map(|(j, c)| (j, c * idf[j] / norm))
                    .collect()
            })
            .collect();
        let mut word_mean = vec![0.0; names.len()];
        let mut sq = 0.0;
        for &i in &train {
            for &(j, x) in &words[i] {
                word_mean[j] += x / n;
                sq += x * x / n;
            }
        }
        let row_norm = sq - word_mean.iter().map(|m| m * m).sum::<f64>();
        let design = Design {
            docs: &docs,
            dense: dense.clone(),
            words,
            word_mean,
            train: train.clone(),
        };

        let mut chosen: Vec<(f64, f64, f64, Fitted)> = Vec::new();
        for t in 0..2 {
            let ybar = train.iter().map(|&i| docs[i].y[t]).sum::<f64>() / n;
            let yc: Vec<f64> = train.iter().map(|&i| docs[i].y[t] - ybar).collect();
            let mut best_t: Option<(f64, f64, f64, Fitted)> = None;
            for lam in LAMBDAS {
                let w = design.ridge(&yc, lam * row_norm);
                let fitted = unscale(&design, &w, ybar, &mean, &sd, &idf);
                let r_train = correlation(&design, &fitted, &train, t);
                let r_dev = correlation(&design, &fitted, &dev, t);
                let label = ["V", "A"][t];
                println!(
                    "{min_df:>6} {:>6} {lam:>8} | {label} {r_train:>7.3} {r_dev:>9.3}",
                    names.len()
                );
                if best_t.as_ref().is_none_or(|b| r_dev > b.2) {
                    best_t = Some((lam, r_train, r_dev, fitted));
                }
            }
            chosen.extend(best_t);
        }
        let score = chosen[0].2 + chosen[1].2;
        if best.as_ref().is_none_or(|b| score > b.score) {
            let mut it = chosen.into_iter();
            let (Some(v), Some(a)) = (it.next(), it.next()) else {
                unreachable!("two scales fitted");
            };
            best = Some(Choice {
                score,
                min_df,
                picks: [(v.0, v.1, v.2), (a.0, a.1, a.2)],
                fitted: [v.3, a.3],
                names,
            });
        }
    }
    let Some(Choice {
        min_df,
        picks,
        fitted: [fv, fa],
        names,
        ..
    }) = best
    else {
        common::fail("nothing fitted");
    };

    let mut model = Model::neutral();
    model.intercept = [fv.intercept, fa.intercept];
    for k in 0..DENSE {
        model.dense[k] = [fv.dense[k], fa.dense[k]];
    }
    for (j, s) in names.iter().enumerate() {
        let w = [round6(fv.words[j]), round6(fa.words[j])];
        if w != [0.0, 0.0] {
            model.words.insert(s.as_str().into(), w);
        }
    }
    let header = format!(
        "emotion-plugin-text model, written by `cargo run --release -p emotion-plugin-text --example fit`.\n\
         Fitted on EmoBank's train split ({} messages); settings chosen on its dev split ({} messages):\n\
         min_df = {min_df}, lambda_words = {} (valence) and {} (arousal) x mean squared row norm, lambda_dense = {LAMBDA_DENSE}.\n\
         Scales: EmoBank's 1..5 (3 neutral). Dense features: {}.\n\
         Derived from EmoBank (Buechel & Hahn 2017), CC-BY-SA 4.0, and the VADER lexicon (Hutto & Gilbert 2014), MIT:\n\
         this file is licensed CC-BY-SA 4.0; see NOTICE.md beside the data folder.",
        train.len(),
        dev.len(),
        picks[0].0,
        picks[1].0,
        DENSE_NAMES.join(", "),
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/model.tsv");
    let text = model.to_tsv(&header);
    if let Err(e) = std::fs::write(&out, &text) {
        common::fail(&format!("cannot write {}: {e}", out.display()));
    }

    // Check the written file gives what the grid said.
    let reread = Model::parse(&text).unwrap_or_else(|e| common::fail(&e));
    let eval = |idx: &[usize], t: usize| {
        let pred: Vec<f64> = idx
            .iter()
            .map(|&i| {
                let s = reread.predict(&docs[i].f).scores;
                [s.valence, s.arousal][t]
            })
            .collect();
        let gold: Vec<f64> = idx.iter().map(|&i| docs[i].y[t]).collect();
        pearson(&pred, &gold)
    };
    println!(
        "\nchosen on dev: min_df = {min_df}, λ_V = {}, λ_A = {}",
        picks[0].0, picks[1].0
    );
    println!(
        "written model ({} stems, {} bytes): valence r train {:.3} dev {:.3}; arousal r train {:.3} dev {:.3}",
        reread.words.len(),
        text.len(),
        eval(&train, 0),
        eval(&dev, 0),
        eval(&train, 1),
        eval(&dev, 1)
    );
    println!("wrote {}", out.display());
}

/// Six decimals, as the model file stores them.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Weights on the raw features, and the intercept.
fn unscale(
    design: &Design<'_>,
    w: &[f64],
    ybar: f64,
    mean: &[f64; DENSE],
    sd: &[f64; DENSE],
    idf: &[f64],
) -> Fitted {
    let dense: [f64; DENSE] = std::array::from_fn(|k| w[k] / sd[k]);
    let mut intercept = ybar;
    for k in 0..DENSE {
        intercept -= dense[k] * mean[k];
    }
    for (m, x) in design.word_mean.iter().zip(&w[DENSE..]) {
        intercept -= m * x;
    }
    let words = w[DENSE..].iter().zip(idf).map(|(x, i)| x * i).collect();
    Fitted {
        intercept,
        dense,
        raw: w[DENSE..].to_vec(),
        words,
    }
}

/// Pearson r of a fitted scale over some docs, computed like `Model::predict`.
fn correlation(design: &Design<'_>, f: &Fitted, idx: &[usize], t: usize) -> f64 {
    let pred: Vec<f64> = idx
        .iter()
        .map(|&i| {
            let d = &design.docs[i];
            let mut s = f.intercept;
            for k in 0..DENSE {
                s += f.dense[k] * d.f.dense[k];
            }
            s + design.words[i]
                .iter()
                .map(|&(j, x)| x * f.raw[j])
                .sum::<f64>()
        })
        .collect();
    let gold: Vec<f64> = idx.iter().map(|&i| design.docs[i].y[t]).collect();
    pearson(&pred, &gold)
}
