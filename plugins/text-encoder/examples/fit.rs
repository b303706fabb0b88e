//! The plugin's head (`data/head.txt`): ridge regressions on the embedded
//! encoder's features, with their settings chosen on the train rows the
//! fine-tuning held out (`data/holdout.txt`, written by `tools/finetune.py`),
//! then refitted on all of EmoBank's train split:
//!
//!     scripts/fetch-text-model.sh
//!     cargo run --release -p emotion-plugin-text-encoder --example fit -- --out plugins/text-encoder/data/head.txt
//!
//! It prints each candidate's holdout r and the chosen head's dev r. Without
//! `--out` the head goes to the temporary directory
//! (`text-encoder-head.txt`); `--holdout FILE` reads the held-out rows from
//! another file than `data/holdout.txt`. With `-- --lexicon-out FILE` it writes only the
//! lexicon values of the train rows (cross-fitted, see below) that
//! `tools/finetune.py` trains with.
//!
//! Features: the embedded int8 encoder's 7 mean-pooled layers (2,688 values;
//! the encoder as shipped, LoRA adapters merged) and the lexicon's 2
//! (`src/lexicon.rs`: the `text` plugin's valence and arousal), all
//! standardized on the rows fitted. Per target, two ridges: one on all the
//! features, one on the embedding layer's 384 (which the fine-tuning left
//! unchanged) and the lexicon; for each, λ and the scale s of the lexicon
//! group (its penalty is λ / s²) come from fixed grids. The target's
//! prediction is w · (all features) + (1 − w) · (embeddings and lexicon),
//! w from 0 to 1 in steps of 0.05. Every choice is made by r on the holdout
//! with the ridges fitted on the other train rows; the chosen ridges are
//! then fitted again on every train row and combined into one linear head.
//! Dev is only measured. EmoBank's test split is not in the file and is never
//! read. Deterministic: the same encoder and data give the same file.
//!
//! The `text` plugin's word table was fitted on the same train split, so its
//! scores of train sentences are in-sample (train r 0.82 against 0.60 on
//! dev): a head fitted on them would trust them too much. The train rows get
//! cross-fitted scores instead (`FOLDS` word tables, each fitted as the
//! `text` plugin fits its own, with its settings, on the other folds); dev
//! rows, like messages in use, get the shipped table's.

// Numerical loops over parallel arrays read better with indices.
#![allow(clippy::needless_range_loop)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/features.rs"]
mod features;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use common::{load_emobank, pearson};
use emotion_plugin_text_encoder::encoder::{Encoder, HIDDEN};
use emotion_plugin_text_encoder::head::{ENCODER_FEATURES, FEATURES, Head};
use emotion_plugin_text_encoder::lexicon::features::{self as lex, DENSE, Features};
use emotion_plugin_text_encoder::lexicon::model::Model as WordTable;
use emotion_plugin_text_encoder::lexicon::{self, LEXICON_FEATURES};
use emotion_plugin_text_encoder::tokenizer::Tokenizer;
use emotion_plugin_text_encoder::{ENCODER_BLOB, Model, VOCAB};

const LAMBDAS: [f64; 10] = [
    30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0, 300000.0, 1000000.0,
];
/// Scales of the standardized lexicon features (penalty λ / s²); 0 leaves
/// the lexicon out.
const SCALES: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
/// Steps of the weight w between the two ridges of a target.
const BLEND_STEPS: usize = 20;
/// Folds of the cross-fitted word tables.
const FOLDS: usize = 5;
/// The `text` plugin's settings (its `data/model.tsv` header): dense penalty,
/// and word penalty × mean squared row norm for valence and arousal; every
/// train stem is in the table (min_df 1).
const TEXT_LAMBDA_DENSE: f64 = 10.0;
const TEXT_LAMBDA_WORDS: [f64; 2] = [2.0, 4.0];
const TARGETS: [&str; 2] = ["valence", "arousal"];

fn main() {
    let (path, rows) = load_emobank();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut lexicon_out = None;
    let mut out = std::env::temp_dir().join("text-encoder-head.txt");
    let mut holdout_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/holdout.txt");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            common::fail("usage: fit [--out FILE] [--holdout FILE] | fit --lexicon-out FILE");
        };
        match flag.as_str() {
            // Write the lexicon's values of the train rows (cross-fitted)
            // and stop; tools/finetune.py trains with them.
            "--lexicon-out" => lexicon_out = Some(value.clone()),
            "--out" => out = PathBuf::from(value),
            "--holdout" => holdout_path = PathBuf::from(value),
            _ => common::fail("usage: fit [--out FILE] [--holdout FILE] | fit --lexicon-out FILE"),
        }
    }
    let train: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].split == "train")
        .collect();
    let dev: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].split == "dev")
        .collect();
    eprintln!(
        "{}: {} train, {} dev",
        path.display(),
        train.len(),
        dev.len()
    );
    let target = |i: usize, k: usize| if k == 0 { rows[i].v } else { rows[i].a };

    // Lexicon values: cross-fitted word tables for train, the shipped one for dev.
    let start = std::time::Instant::now();
    let lex_features: Vec<Features> = rows.iter().map(|r| lex::extract(&r.text)).collect();
    let mut x_lex = vec![[0f32; LEXICON_FEATURES]; rows.len()];
    for fold in 0..FOLDS {
        let (fit_on, held): (Vec<usize>, Vec<usize>) = train
            .iter()
            .enumerate()
            .map(|(j, &i)| (j % FOLDS == fold, i))
            .fold((Vec::new(), Vec::new()), |(mut a, mut b), (h, i)| {
                if h {
                    b.push(i)
                } else {
                    a.push(i)
                }
                (a, b)
            });
        let table = fit_word_table(&lex_features, &fit_on, &|i, k| target(i, k));
        for &i in &held {
            x_lex[i] = lexicon::read_with(&table, &rows[i].text);
        }
    }
    let shipped = WordTable::shipped().unwrap_or_else(|e| common::fail(e));
    for &i in &dev {
        x_lex[i] = lexicon::read_with(shipped, &rows[i].text);
    }
    eprintln!(
        "lexicon: cross-fitted in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    for (split, idx) in [("train (cross-fitted)", &train), ("dev", &dev)] {
        for k in 0..2 {
            let p: Vec<f64> = idx.iter().map(|&i| f64::from(x_lex[i][k])).collect();
            let y: Vec<f64> = idx.iter().map(|&i| target(i, k)).collect();
            eprintln!(
                "lexicon alone, {split} r {}: {:.3}",
                TARGETS[k],
                pearson(&p, &y)
            );
        }
    }

    if let Some(out) = lexicon_out {
        write_lexicon(&out, &rows, &train, &x_lex);
        return;
    }

    let holdout = read_holdout(&holdout_path, &rows);
    let fit_rows: Vec<usize> = train
        .iter()
        .copied()
        .filter(|i| !holdout.contains(i))
        .collect();
    let holdout: Vec<usize> = holdout.into_iter().collect();
    eprintln!(
        "{}: {} train rows held out, fitting on the other {}",
        holdout_path.display(),
        holdout.len(),
        fit_rows.len()
    );

    let encoder = Encoder::new(ENCODER_BLOB).unwrap_or_else(|e| common::fail(&e.to_string()));
    // The shipped head may not fit the feature layout being fitted: only the
    // tokenizer and the encoder are used here.
    let model = Model {
        tokenizer: Tokenizer::new(VOCAB),
        encoder,
        head: Head {
            intercept: [3.0, 3.0],
            weights: vec![[0.0; 2]; FEATURES],
        },
    };
    let x_enc = features::features(&model, &rows);
    let data = Data {
        x_enc: &x_enc,
        x_lex: &x_lex,
        y: rows.iter().map(|r| [r.v, r.a]).collect(),
    };
    let r_on = |p: &dyn Fn(usize) -> f64, idx: &[usize], k: usize| {
        let p: Vec<f64> = idx.iter().map(|&i| p(i)).collect();
        let y: Vec<f64> = idx.iter().map(|&i| data.y[i][k]).collect();
        pearson(&p, &y)
    };

    // Choose on the holdout, fitted on the other train rows.
    let groups = [
        ("all features", ENCODER_FEATURES),
        ("embeddings and lexicon", HIDDEN),
    ];
    let mut chosen: Vec<[Choice; 2]> = Vec::new();
    for (name, enc_cols) in groups {
        let normal = Normal::new(&data, &fit_rows, enc_cols);
        let mut best: [Option<Choice>; 2] = [None, None];
        for lambda in LAMBDAS {
            let fits = normal.weights(lambda, &SCALES);
            for k in 0..2 {
                let mut line = format!("{name}, λ {lambda:>7} {} holdout r:", TARGETS[k]);
                for (s, w) in SCALES.iter().zip(&fits) {
                    let lin = normal.linear(&w[k], k);
                    let r = r_on(&|i| lin.predict(&data, i), &holdout, k);
                    line.push_str(&format!("  s {s}: {r:.4}"));
                    // (A constant prediction has no r: never chosen.)
                    if !r.is_nan() && best[k].as_ref().is_none_or(|b| r > b.holdout_r) {
                        best[k] = Some(Choice {
                            lambda,
                            scale: *s,
                            holdout_r: r,
                            linear: lin,
                        });
                    }
                }
                eprintln!("{line}");
            }
        }
        let [Some(v), Some(a)] = best else {
            common::fail("no λ fitted");
        };
        chosen.push([v, a]);
    }
    let blend: [f64; 2] = [0, 1].map(|k| {
        let (all, emb) = (&chosen[0][k].linear, &chosen[1][k].linear);
        let mut best = (f64::NEG_INFINITY, 1.0);
        for step in (0..=BLEND_STEPS).rev() {
            let w = step as f64 / BLEND_STEPS as f64;
            let r = r_on(
                &|i| w * all.predict(&data, i) + (1.0 - w) * emb.predict(&data, i),
                &holdout,
                k,
            );
            if r > best.0 {
                best = (r, w);
            }
        }
        eprintln!(
            "{}: w {:.2} on all features, holdout r {:.4}",
            TARGETS[k], best.1, best.0
        );
        best.1
    });

    // Fit the chosen ridges again on every train row and combine them.
    let mut refit: Vec<[Linear; 2]> = Vec::new();
    for (g, (_, enc_cols)) in groups.iter().enumerate() {
        let normal = Normal::new(&data, &train, *enc_cols);
        refit.push([0, 1].map(|k| {
            let c = &chosen[g][k];
            let w = normal.weights(c.lambda, &[c.scale]);
            normal.linear(&w[0][k], k)
        }));
    }
    let combined: [Linear; 2] = [0, 1].map(|k| refit[0][k].mix(&refit[1][k], blend[k]));
    let head = Head {
        intercept: [combined[0].intercept, combined[1].intercept],
        weights: (0..FEATURES)
            .map(|j| [combined[0].w[j], combined[1].w[j]])
            .collect(),
    };
    let dev_r = [0, 1].map(|k| r_on(&|i| combined[k].predict(&data, i), &dev, k));
    let train_r = [0, 1].map(|k| r_on(&|i| combined[k].predict(&data, i), &train, k));
    let setting = |k: usize| {
        let (a, e) = (&chosen[0][k], &chosen[1][k]);
        format!(
            "{}: w {:.2}; all features lambda {} s {} (holdout r {:.3}); embeddings and lexicon lambda {} s {} (holdout r {:.3}); train r {:.3}, dev r {:.3}",
            TARGETS[k],
            blend[k],
            a.lambda,
            a.scale,
            a.holdout_r,
            e.lambda,
            e.scale,
            e.holdout_r,
            train_r[k],
            dev_r[k]
        )
    };
    // The default file by its name in the crate, another as given.
    let holdout_name = holdout_path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .map_or_else(
            |_| holdout_path.display().to_string(),
            |p| p.display().to_string(),
        );
    let comment = format!(
        "Head of the text-encoder plugin, written by examples/fit.rs; do not edit.\n\
         Features: the int8 all-MiniLM-L6-v2's 7 mean-pooled layers (embeddings, layers 1-6; LoRA adapters of data/adapter.safetensors merged), {ENCODER_FEATURES} values,\n\
         then the text plugin's valence and arousal (cross-fitted on train, {FOLDS} folds), {LEXICON_FEATURES} values.\n\
         Per target w * (ridge on all features) + (1 - w) * (ridge on the embedding layer's {HIDDEN} and the lexicon), standardization folded in;\n\
         lambda, lexicon scale s (penalty lambda/s^2) and w chosen on the {} train rows of {}, then fitted on all {} train rows.\n\
         {}\n{}",
        holdout.len(),
        holdout_name,
        train.len(),
        setting(0),
        setting(1),
    );
    std::fs::write(&out, head.write(&comment))
        .unwrap_or_else(|e| common::fail(&format!("{}: {e}", out.display())));
    for k in 0..2 {
        println!("{}", setting(k));
    }
    println!("wrote {}", out.display());
}

/// The rows of the holdout file: one index among all rows of the CSV per
/// line, each a train row.
fn read_holdout(path: &PathBuf, rows: &[common::Row]) -> BTreeSet<usize> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| common::fail(&format!("{}: {e}", path.display())));
    let mut out = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<usize>() {
            Ok(i) if rows.get(i).is_some_and(|r| r.split == "train") => {
                out.insert(i);
            }
            _ => common::fail(&format!(
                "{} line {}: {line:?} is not the index of a train row",
                path.display(),
                n + 1
            )),
        }
    }
    if out.is_empty() {
        common::fail(&format!("{}: no rows", path.display()));
    }
    out
}

/// Tab-separated: the row's index among all rows of the CSV, its
/// cross-fitted lexicon valence and arousal; train rows only (dev stays out
/// of the fine-tuning).
fn write_lexicon(
    out: &str,
    rows: &[common::Row],
    train: &[usize],
    x_lex: &[[f32; LEXICON_FEATURES]],
) {
    let mut s = String::from(
        "# row\tlexicon_valence\tlexicon_arousal (cross-fitted, 5 folds; EmoBank train rows, written by examples/fit.rs)\n",
    );
    for &i in train {
        let [v, a] = x_lex[i];
        s.push_str(&format!("{i}\t{v}\t{a}\n"));
    }
    std::fs::write(out, s).unwrap_or_else(|e| common::fail(&format!("{out}: {e}")));
    eprintln!(
        "wrote {} train rows of {} to {out}",
        train.len(),
        rows.len()
    );
}

/// Every row's features (encoder, then lexicon) and targets.
struct Data<'a> {
    x_enc: &'a [Vec<f32>],
    x_lex: &'a [[f32; LEXICON_FEATURES]],
    y: Vec<[f64; 2]>,
}

impl Data<'_> {
    fn value(&self, i: usize, j: usize) -> f64 {
        if j < ENCODER_FEATURES {
            f64::from(self.x_enc[i][j])
        } else {
            f64::from(self.x_lex[i][j - ENCODER_FEATURES])
        }
    }
}

/// One target's prediction on the raw features: intercept + w · x.
struct Linear {
    intercept: f64,
    /// Over all `FEATURES` (0 for columns the ridge did not use).
    w: Vec<f64>,
}

impl Linear {
    fn predict(&self, data: &Data, i: usize) -> f64 {
        self.intercept
            + self
                .w
                .iter()
                .enumerate()
                .filter(|(_, w)| **w != 0.0)
                .map(|(j, w)| w * data.value(i, j))
                .sum::<f64>()
    }

    /// a · self + (1 − a) · other: still one linear head.
    fn mix(&self, other: &Linear, a: f64) -> Linear {
        Linear {
            intercept: a * self.intercept + (1.0 - a) * other.intercept,
            w: self
                .w
                .iter()
                .zip(&other.w)
                .map(|(x, y)| a * x + (1.0 - a) * y)
                .collect(),
        }
    }
}

/// A ridge chosen on the holdout.
struct Choice {
    lambda: f64,
    scale: f64,
    holdout_r: f64,
    /// Fitted on the train rows outside the holdout.
    linear: Linear,
}

/// The normal equations of a ridge on standardized columns (the first
/// `enc_cols` encoder features, then the lexicon's), both targets, over
/// some rows.
struct Normal {
    cols: Vec<usize>,
    enc_cols: usize,
    mu: Vec<f64>,
    sd: Vec<f64>,
    /// Lower triangle of ZᵀZ.
    g: Vec<Vec<f64>>,
    /// Zᵀ(y − ȳ) per target.
    c: [Vec<f64>; 2],
    ymean: [f64; 2],
}

impl Normal {
    fn new(data: &Data, rows: &[usize], enc_cols: usize) -> Normal {
        let cols: Vec<usize> = (0..enc_cols).chain(ENCODER_FEATURES..FEATURES).collect();
        let p = cols.len();
        let n = rows.len() as f64;
        let mut mu = vec![0f64; p];
        let mut sd = vec![0f64; p];
        for &i in rows {
            for (a, &j) in cols.iter().enumerate() {
                mu[a] += data.value(i, j) / n;
            }
        }
        for &i in rows {
            for (a, &j) in cols.iter().enumerate() {
                sd[a] += (data.value(i, j) - mu[a]).powi(2) / n;
            }
        }
        sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-6));
        let ymean = [0, 1].map(|k| rows.iter().map(|&i| data.y[i][k]).sum::<f64>() / n);
        let start = std::time::Instant::now();
        let mut g = vec![vec![0f64; p]; p];
        let mut c = [vec![0f64; p], vec![0f64; p]];
        let mut z = vec![0f64; p];
        for &i in rows {
            for (a, &j) in cols.iter().enumerate() {
                z[a] = (data.value(i, j) - mu[a]) / sd[a];
            }
            for (a, ga) in g.iter_mut().enumerate() {
                let za = z[a];
                for (gb, zb) in ga[..=a].iter_mut().zip(&z) {
                    *gb += za * zb;
                }
            }
            for k in 0..2 {
                let y = data.y[i][k] - ymean[k];
                for (ck, za) in c[k].iter_mut().zip(&z) {
                    *ck += y * za;
                }
            }
        }
        eprintln!(
            "gram of {p} columns over {} rows: {:.0} s",
            rows.len(),
            start.elapsed().as_secs_f64()
        );
        Normal {
            cols,
            enc_cols,
            mu,
            sd,
            g,
            c,
            ymean,
        }
    }

    /// The standardized weights at one λ for each lexicon scale, both
    /// targets: the encoder block factored once, the lexicon block by
    /// elimination (its Schur complement).
    fn weights(&self, lambda: f64, scales: &[f64]) -> Vec<[Vec<f64>; 2]> {
        let e = self.enc_cols;
        let p = self.cols.len();
        let lex: Vec<usize> = (e..p).collect();
        let m = lex.len();
        let gee: Vec<Vec<f64>> = self.g[..e].iter().map(|r| r[..].to_vec()).collect();
        // Encoder × lexicon block, column per lexicon feature.
        let gel: Vec<Vec<f64>> = lex.iter().map(|&l| self.g[l][..e].to_vec()).collect();
        let gll: Vec<Vec<f64>> = lex
            .iter()
            .map(|&a| lex.iter().map(|&b| self.g[a.max(b)][a.min(b)]).collect())
            .collect();
        let l = cholesky(&gee, lambda);
        let x: Vec<Vec<f64>> = gel.iter().map(|col| solve(&l, col)).collect();
        let u: [Vec<f64>; 2] = [0, 1].map(|k| solve(&l, &self.c[k][..e]));
        scales
            .iter()
            .map(|&scale| {
                [0, 1].map(|k| {
                    let mut s_mat = vec![vec![0f64; m]; m];
                    let mut rhs = vec![0f64; m];
                    for a in 0..m {
                        for b in 0..m {
                            s_mat[a][b] = scale * scale * (gll[a][b] - dot(&gel[a], &x[b]));
                        }
                        s_mat[a][a] += lambda;
                        rhs[a] = scale * (self.c[k][lex[a]] - dot(&gel[a], &u[k]));
                    }
                    let wl = if scale == 0.0 {
                        vec![0.0; m]
                    } else {
                        gauss(s_mat, rhs)
                    };
                    let mut w = vec![0f64; p];
                    for j in 0..e {
                        w[j] = u[k][j] - scale * (0..m).map(|a| x[a][j] * wl[a]).sum::<f64>();
                    }
                    for a in 0..m {
                        w[lex[a]] = scale * wl[a];
                    }
                    w
                })
            })
            .collect()
    }

    /// Standardized weights `w` of target `k` back on the raw features.
    fn linear(&self, w: &[f64], k: usize) -> Linear {
        let mut out = vec![0f64; FEATURES];
        let mut intercept = self.ymean[k];
        for (a, &j) in self.cols.iter().enumerate() {
            out[j] = w[a] / self.sd[a];
            intercept -= out[j] * self.mu[a];
        }
        Linear { intercept, w: out }
    }
}

/// One message in the word table's design: the standardized dense features
/// and the sparse (stem index, count · idf / √words) values.
type DesignRow = ([f64; DENSE], Vec<(usize, f64)>);

/// The `text` plugin's model refitted on `fit_on` as its own `examples/fit.rs`
/// does (dense features standardized, λ 10; word stems count · idf / √words,
/// centered, λ × mean squared row norm), with its shipped settings.
fn fit_word_table(
    docs: &[Features],
    fit_on: &[usize],
    target: &dyn Fn(usize, usize) -> f64,
) -> WordTable {
    let n = fit_on.len() as f64;
    let mut mean = [0.0; DENSE];
    let mut sd = [0.0; DENSE];
    for &i in fit_on {
        for k in 0..DENSE {
            mean[k] += docs[i].dense[k] / n;
        }
    }
    for &i in fit_on {
        for k in 0..DENSE {
            sd[k] += (docs[i].dense[k] - mean[k]).powi(2) / n;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-12));
    let mut df: HashMap<&str, usize> = HashMap::new();
    for &i in fit_on {
        let mut seen: Vec<&str> = docs[i].stems.iter().map(|s| &**s).collect();
        seen.sort_unstable();
        seen.dedup();
        for s in seen {
            *df.entry(s).or_default() += 1;
        }
    }
    let vocab: BTreeMap<&str, usize> = {
        let mut v: Vec<&str> = df.keys().copied().collect();
        v.sort_unstable();
        v.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
    };
    let names: Vec<&str> = vocab.keys().copied().collect();
    let idf: Vec<f64> = names.iter().map(|s| (n / df[s] as f64).ln()).collect();
    let p = DENSE + names.len();
    // Rows of the centered design: dense standardized, then sparse words.
    let rows: Vec<DesignRow> = fit_on
        .iter()
        .map(|&i| {
            let d = &docs[i];
            let mut counts: BTreeMap<usize, f64> = BTreeMap::new();
            for s in &d.stems {
                if let Some(&j) = vocab.get(&**s) {
                    *counts.entry(j).or_default() += 1.0;
                }
            }
            let norm = (d.stems.len().max(1) as f64).sqrt();
            (
                std::array::from_fn(|k| (d.dense[k] - mean[k]) / sd[k]),
                counts
                    .into_iter()
                    .map(|(j, c)| (j, c * idf[j] / norm))
                    .collect(),
            )
        })
        .collect();
    let mut word_mean = vec![0.0; names.len()];
    let mut sq = 0.0;
    for (_, ws) in &rows {
        for &(j, x) in ws {
            word_mean[j] += x / n;
            sq += x * x / n;
        }
    }
    let row_norm = sq - word_mean.iter().map(|m| m * m).sum::<f64>();
    let apply = |w: &[f64], out: &mut [f64]| {
        let shift: f64 = word_mean.iter().zip(&w[DENSE..]).map(|(m, x)| m * x).sum();
        for (o, (d, ws)) in out.iter_mut().zip(&rows) {
            *o = dot(d, &w[..DENSE]) - shift
                + ws.iter().map(|&(j, x)| x * w[DENSE + j]).sum::<f64>();
        }
    };
    let apply_t = |u: &[f64], out: &mut [f64]| {
        out.iter_mut().for_each(|o| *o = 0.0);
        let total: f64 = u.iter().sum();
        for (&ui, (d, ws)) in u.iter().zip(&rows) {
            for k in 0..DENSE {
                out[k] += d[k] * ui;
            }
            for &(j, x) in ws {
                out[DENSE + j] += x * ui;
            }
        }
        for (o, m) in out[DENSE..].iter_mut().zip(&word_mean) {
            *o -= m * total;
        }
    };
    let mut table = WordTable::neutral();
    for t in 0..2 {
        let ybar = fit_on.iter().map(|&i| target(i, t)).sum::<f64>() / n;
        let y: Vec<f64> = fit_on.iter().map(|&i| target(i, t) - ybar).collect();
        let lambda_words = TEXT_LAMBDA_WORDS[t] * row_norm;
        let penalty = |k: usize| {
            if k < DENSE {
                TEXT_LAMBDA_DENSE
            } else {
                lambda_words
            }
        };
        // Conjugate gradients on (ZᵀZ + Λ) w = Zᵀ y.
        let mut b = vec![0.0; p];
        apply_t(&y, &mut b);
        let mut w = vec![0.0; p];
        let mut r = b.clone();
        let mut d = r.clone();
        let mut rr = dot(&r, &r);
        let stop = 1e-20 * rr;
        let mut zu = vec![0.0; rows.len()];
        let mut ad = vec![0.0; p];
        for _ in 0..10_000 {
            if rr <= stop {
                break;
            }
            apply(&d, &mut zu);
            apply_t(&zu, &mut ad);
            for k in 0..p {
                ad[k] += penalty(k) * d[k];
            }
            let alpha = rr / dot(&d, &ad);
            for k in 0..p {
                w[k] += alpha * d[k];
                r[k] -= alpha * ad[k];
            }
            let rr_new = dot(&r, &r);
            let beta = rr_new / rr;
            rr = rr_new;
            for k in 0..p {
                d[k] = r[k] + beta * d[k];
            }
        }
        // Back to the raw features, as the text plugin's model file holds them.
        let mut intercept = ybar;
        for k in 0..DENSE {
            table.dense[k][t] = w[k] / sd[k];
            intercept -= table.dense[k][t] * mean[k];
        }
        for (j, s) in names.iter().enumerate() {
            intercept -= word_mean[j] * w[DENSE + j];
            table.words.entry((*s).into()).or_insert([0.0; 2])[t] = w[DENSE + j] * idf[j];
        }
        table.intercept[t] = intercept;
    }
    table
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solve a small dense system by Gaussian elimination with partial pivoting.
fn gauss(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0f64; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    x
}

/// Lower Cholesky factor of G + λI (G given by its lower triangle).
fn cholesky(g: &[Vec<f64>], lambda: f64) -> Vec<Vec<f64>> {
    let n = g.len();
    let mut l: Vec<Vec<f64>> = vec![Vec::new(); n];
    for i in 0..n {
        let mut row = vec![0f64; i + 1];
        for j in 0..i {
            row[j] = (g[i][j] - dot(&row[..j], &l[j][..j])) / l[j][j];
        }
        row[i] = (g[i][i] + lambda - dot(&row[..i], &row[..i]))
            .max(1e-300)
            .sqrt();
        l[i] = row;
    }
    l
}

/// Solve (L Lᵀ) w = b.
fn solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut y = vec![0f64; n];
    for i in 0..n {
        y[i] = (b[i] - dot(&l[i][..i], &y[..i])) / l[i][i];
    }
    let mut w = vec![0f64; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k][i] * w[k]).sum();
        w[i] = (y[i] - s) / l[i][i];
    }
    w
}
