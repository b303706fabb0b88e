//! A ridge head on the embedded encoder's frozen features, fitted on
//! EmoBank's train split: the plugin's head before the fine-tuning (the
//! shipped `data/head.txt` now comes from `tools/finetune.py`, trained with
//! the adapters). Writes the ridge head to the temporary directory
//! (`text-encoder-ridge-head.txt`; copy it to `data/head.txt` to use it) and
//! prints its dev r:
//!
//!     scripts/fetch-text-model.sh
//!     cargo run --release -p emotion-plugin-text-encoder --example fit
//!
//! With `-- --lexicon-out FILE` it writes only the lexicon values of the
//! train rows (cross-fitted, see below) that `tools/finetune.py` trains with.
//!
//! Features: the embedded int8 encoder's 7 mean-pooled layers (2,688 values)
//! and the lexicon's 2 (`src/lexicon.rs`: the `text` plugin's valence and
//! arousal), all standardized on train. Ridge regression for valence and
//! arousal separately; for each, λ and the scale s of the lexicon group (its
//! penalty is λ / s²) chosen on the dev split from fixed grids (the only use
//! of dev). EmoBank's test split is not in the file and is never read.
//! Deterministic: the same encoder and data give the same file.
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

use std::collections::{BTreeMap, HashMap};

use common::{load_emobank, pearson};
use emotion_plugin_text_encoder::encoder::Encoder;
use emotion_plugin_text_encoder::head::{ENCODER_FEATURES, FEATURES, Head};
use emotion_plugin_text_encoder::lexicon::features::{self as lex, DENSE, Features};
use emotion_plugin_text_encoder::lexicon::model::Model as WordTable;
use emotion_plugin_text_encoder::lexicon::{self, LEXICON_FEATURES};
use emotion_plugin_text_encoder::tokenizer::Tokenizer;
use emotion_plugin_text_encoder::{ENCODER_BLOB, Model, VOCAB};

const LAMBDAS: [f64; 8] = [
    30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0,
];
/// Scales of the standardized lexicon features (penalty λ / s²); 0 leaves
/// the lexicon out.
const SCALES: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
/// Folds of the cross-fitted word tables.
const FOLDS: usize = 5;
/// The `text` plugin's settings (its `data/model.tsv` header): dense penalty,
/// and word penalty × mean squared row norm for valence and arousal; every
/// train stem is in the table (min_df 1).
const TEXT_LAMBDA_DENSE: f64 = 10.0;
const TEXT_LAMBDA_WORDS: [f64; 2] = [2.0, 4.0];

fn main() {
    let (path, rows) = load_emobank();
    // `--lexicon-out FILE`: write the lexicon's values of the train rows
    // (cross-fitted) and stop; tools/finetune.py trains with them.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lexicon_out = match args.as_slice() {
        [] => None,
        [flag, file] if flag == "--lexicon-out" => Some(file.clone()),
        _ => common::fail("usage: fit [--lexicon-out FILE]"),
    };
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
                ["valence", "arousal"][k],
                pearson(&p, &y)
            );
        }
    }

    if let Some(out) = lexicon_out {
        write_lexicon(&out, &rows, &train, &x_lex);
        return;
    }

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
    let (fitted, mu, sd) = fit(&rows, &train, &dev, &x_enc, &x_lex);
    let [v, a] = fitted;
    // Fold the standardization into the weights.
    let weights: Vec<[f64; 2]> = (0..FEATURES)
        .map(|j| [v.w[j] / sd[j], a.w[j] / sd[j]])
        .collect();
    let ymean =
        [0, 1].map(|k| train.iter().map(|&i| target(i, k)).sum::<f64>() / train.len() as f64);
    let intercept =
        [0, 1].map(|k| ymean[k] - weights.iter().zip(&mu).map(|(w, m)| w[k] * m).sum::<f64>());
    let head = Head { intercept, weights };
    let comment = format!(
        "Ridge head of the text-encoder plugin, written by examples/fit.rs; do not edit.\n\
         Features: the int8 all-MiniLM-L6-v2's 7 mean-pooled layers (embeddings, layers 1-6), {ENCODER_FEATURES} values,\n\
         then the text plugin's valence and arousal (cross-fitted on train, {FOLDS} folds), {LEXICON_FEATURES} values.\n\
         Fitted on EmoBank train ({} sentences), standardization folded in; lambda and lexicon scale s (penalty lambda/s^2) chosen on dev ({} sentences).\n\
         valence: lambda {}, s {}, train r {:.3}, dev r {:.3}\n\
         arousal: lambda {}, s {}, train r {:.3}, dev r {:.3}",
        train.len(),
        dev.len(),
        v.lambda,
        v.scale,
        v.train_r,
        v.dev_r,
        a.lambda,
        a.scale,
        a.train_r,
        a.dev_r,
    );
    let out = std::env::temp_dir().join("text-encoder-ridge-head.txt");
    let out = out.display();
    std::fs::write(out.to_string(), head.write(&comment))
        .unwrap_or_else(|e| common::fail(&format!("{out}: {e}")));
    for (name, f) in [("valence", &v), ("arousal", &a)] {
        println!(
            "{name}: λ {}, lexicon scale {}, train r {:.3}, dev r {:.3}",
            f.lambda, f.scale, f.train_r, f.dev_r
        );
    }
    println!("wrote {out}");
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

struct Fitted {
    lambda: f64,
    scale: f64,
    dev_r: f64,
    train_r: f64,
    /// Weights on the standardized features (encoder, then lexicon).
    w: Vec<f64>,
}

/// Ridge on the standardized encoder and lexicon features, λ and the
/// lexicon scale chosen on dev, per target; also the features' train means
/// and standard deviations.
fn fit(
    rows: &[common::Row],
    train: &[usize],
    dev: &[usize],
    x_enc: &[Vec<f32>],
    x_lex: &[[f32; LEXICON_FEATURES]],
) -> ([Fitted; 2], Vec<f64>, Vec<f64>) {
    let n = train.len() as f64;
    let value = |i: usize, j: usize| -> f64 {
        if j < ENCODER_FEATURES {
            f64::from(x_enc[i][j])
        } else {
            f64::from(x_lex[i][j - ENCODER_FEATURES])
        }
    };
    let mut mu = vec![0f64; FEATURES];
    let mut sd = vec![0f64; FEATURES];
    for &i in train {
        for j in 0..FEATURES {
            mu[j] += value(i, j) / n;
        }
    }
    for &i in train {
        for j in 0..FEATURES {
            sd[j] += (value(i, j) - mu[j]).powi(2) / n;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-6));
    let z = |i: usize| -> Vec<f64> {
        (0..FEATURES)
            .map(|j| (value(i, j) - mu[j]) / sd[j])
            .collect()
    };
    let ztrain: Vec<Vec<f64>> = train.iter().map(|&i| z(i)).collect();
    let zdev: Vec<Vec<f64>> = dev.iter().map(|&i| z(i)).collect();
    let target = |i: usize, k: usize| if k == 0 { rows[i].v } else { rows[i].a };
    let ymean = [0, 1].map(|k| train.iter().map(|&i| target(i, k)).sum::<f64>() / n);

    // Gram matrix of all features (lower triangle) and right-hand sides.
    let start = std::time::Instant::now();
    let mut g = vec![vec![0f64; FEATURES]; FEATURES];
    for r in &ztrain {
        for (a, ga) in g.iter_mut().enumerate() {
            let ra = r[a];
            for (gb, rb) in ga[..=a].iter_mut().zip(r) {
                *gb += ra * rb;
            }
        }
    }
    let mut c = [vec![0f64; FEATURES], vec![0f64; FEATURES]];
    for (r, &i) in ztrain.iter().zip(train) {
        for (k, ck) in c.iter_mut().enumerate() {
            let y = target(i, k) - ymean[k];
            for (cj, rj) in ck.iter_mut().zip(r) {
                *cj += y * rj;
            }
        }
    }
    eprintln!("gram: {:.0} s", start.elapsed().as_secs_f64());
    let e = ENCODER_FEATURES;
    let lex: Vec<usize> = (e..FEATURES).collect();
    let m = lex.len();
    let gee: Vec<Vec<f64>> = g[..e].iter().map(|r| r[..].to_vec()).collect();
    // Encoder × lexicon block, column per lexicon feature.
    let gel: Vec<Vec<f64>> = lex.iter().map(|&l| g[l][..e].to_vec()).collect();
    let gll: Vec<Vec<f64>> = lex
        .iter()
        .map(|&a| lex.iter().map(|&b| g[a.max(b)][a.min(b)]).collect())
        .collect();

    let r_of = |w: &[f64], zs: &[Vec<f64>], idx: &[usize], k: usize| {
        let p: Vec<f64> = zs.iter().map(|r| dot(r, w)).collect();
        let y: Vec<f64> = idx.iter().map(|&i| target(i, k)).collect();
        pearson(&p, &y)
    };
    let mut best: [Option<Fitted>; 2] = [None, None];
    for lambda in LAMBDAS {
        let l = cholesky(&gee, lambda);
        let x: Vec<Vec<f64>> = gel.iter().map(|col| solve(&l, col)).collect();
        for k in 0..2 {
            let ce = &c[k][..e];
            let u = solve(&l, ce);
            let mut line = format!("λ {lambda:>6} {} dev r:", ["valence", "arousal"][k]);
            for scale in SCALES {
                // Block elimination: the lexicon block's Schur complement.
                let mut s_mat = vec![vec![0f64; m]; m];
                let mut rhs = vec![0f64; m];
                for a in 0..m {
                    for b in 0..m {
                        s_mat[a][b] = scale * scale * (gll[a][b] - dot(&gel[a], &x[b]));
                    }
                    s_mat[a][a] += lambda;
                    rhs[a] = scale * (c[k][lex[a]] - dot(&gel[a], &u));
                }
                let wl = if scale == 0.0 {
                    vec![0.0; m]
                } else {
                    gauss(s_mat, rhs)
                };
                let mut w = vec![0f64; FEATURES];
                for j in 0..e {
                    w[j] = u[j] - scale * (0..m).map(|a| x[a][j] * wl[a]).sum::<f64>();
                }
                for a in 0..m {
                    w[lex[a]] = scale * wl[a];
                }
                let r = r_of(&w, &zdev, dev, k);
                line.push_str(&format!("  s {scale}: {r:.4}"));
                if best[k].as_ref().is_none_or(|b| r > b.dev_r) {
                    best[k] = Some(Fitted {
                        lambda,
                        scale,
                        dev_r: r,
                        train_r: 0.0,
                        w,
                    });
                }
            }
            eprintln!("{line}");
        }
    }
    let [Some(mut v), Some(mut a)] = best else {
        common::fail("no λ fitted");
    };
    v.train_r = r_of(&v.w, &ztrain, train, 0);
    a.train_r = r_of(&a.w, &ztrain, train, 1);
    ([v, a], mu, sd)
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
