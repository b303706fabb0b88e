//! Fit the regression head (`data/head.txt`) on EmoBank's train split:
//!
//!     scripts/fetch-text-model.sh
//!     cargo run --release -p emotion-plugin-text-encoder --example fit
//!
//! Features: the embedded int8 encoder's 7 mean-pooled layers (2,688 values),
//! standardized on train. Ridge regression for valence and arousal
//! separately; λ for each chosen on the dev split from a fixed grid (the only
//! use of dev). EmoBank's test split is not in the file and is never read.
//! Deterministic: the same encoder and data give the same file.

#[path = "common/mod.rs"]
mod common;
#[path = "common/features.rs"]
mod features;

use common::{load_emobank, pearson};
use emotion_plugin_text_encoder::Model;
use emotion_plugin_text_encoder::head::{FEATURES, Head};

const LAMBDAS: [f64; 8] = [
    30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0,
];

fn main() {
    let (path, rows) = load_emobank();
    let model = Model::shipped().unwrap_or_else(|e| common::fail(&e));
    let x = features::features(model, &rows);
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

    // Standardize on train.
    let n = train.len() as f64;
    let mut mu = vec![0f64; FEATURES];
    let mut sd = vec![0f64; FEATURES];
    for &i in &train {
        for (m, v) in mu.iter_mut().zip(&x[i]) {
            *m += f64::from(*v) / n;
        }
    }
    for &i in &train {
        for ((s, v), m) in sd.iter_mut().zip(&x[i]).zip(&mu) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-6));
    let z = |i: usize| -> Vec<f64> {
        x[i].iter()
            .zip(&mu)
            .zip(&sd)
            .map(|((v, m), s)| (f64::from(*v) - m) / s)
            .collect()
    };
    let ztrain: Vec<Vec<f64>> = train.iter().map(|&i| z(i)).collect();
    let zdev: Vec<Vec<f64>> = dev.iter().map(|&i| z(i)).collect();
    let target = |i: usize, k: usize| if k == 0 { rows[i].v } else { rows[i].a };
    let ymean = [0, 1].map(|k| train.iter().map(|&i| target(i, k)).sum::<f64>() / n);

    // Gram matrix (lower triangle) and right-hand sides.
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
    for (r, &i) in ztrain.iter().zip(&train) {
        for (k, ck) in c.iter_mut().enumerate() {
            let y = target(i, k) - ymean[k];
            for (cj, rj) in ck.iter_mut().zip(r) {
                *cj += y * rj;
            }
        }
    }
    eprintln!("gram: {:.0} s", start.elapsed().as_secs_f64());

    let r_of = |w: &[f64], zs: &[Vec<f64>], idx: &[usize], k: usize| {
        let p: Vec<f64> = zs.iter().map(|r| dot(r, w)).collect();
        let y: Vec<f64> = idx.iter().map(|&i| target(i, k)).collect();
        pearson(&p, &y)
    };
    let mut best: [Option<(f64, f64, Vec<f64>)>; 2] = [None, None];
    for lambda in LAMBDAS {
        let l = cholesky(&g, lambda);
        for k in 0..2 {
            let w = solve(&l, &c[k]);
            let r = r_of(&w, &zdev, &dev, k);
            eprintln!("λ {lambda:>6}: {} dev r {r:.4}", ["valence", "arousal"][k]);
            if best[k].as_ref().is_none_or(|b| r > b.1) {
                best[k] = Some((lambda, r, w));
            }
        }
    }
    let [Some((lv, rv, wv)), Some((la, ra, wa))] = best else {
        common::fail("no λ fitted");
    };
    let tv = r_of(&wv, &ztrain, &train, 0);
    let ta = r_of(&wa, &ztrain, &train, 1);

    // Fold the standardization into the weights.
    let weights: Vec<[f64; 2]> = (0..FEATURES)
        .map(|j| [wv[j] / sd[j], wa[j] / sd[j]])
        .collect();
    let intercept =
        [0, 1].map(|k| ymean[k] - weights.iter().zip(&mu).map(|(w, m)| w[k] * m).sum::<f64>());
    let head = Head { intercept, weights };
    let comment = format!(
        "Ridge head of the text-encoder plugin, written by examples/fit.rs; do not edit.\n\
         Features: the int8 all-MiniLM-L6-v2's 7 mean-pooled layers (embeddings, layers 1-6), {FEATURES} values.\n\
         Fitted on EmoBank train ({} sentences), standardization folded in; lambda chosen on dev ({} sentences).\n\
         valence: lambda {lv}, train r {tv:.3}, dev r {rv:.3}\n\
         arousal: lambda {la}, train r {ta:.3}, dev r {ra:.3}",
        train.len(),
        dev.len()
    );
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/data/head.txt");
    std::fs::write(out, head.write(&comment))
        .unwrap_or_else(|e| common::fail(&format!("{out}: {e}")));
    println!("valence: λ {lv}, train r {tv:.3}, dev r {rv:.3}");
    println!("arousal: λ {la}, train r {ta:.3}, dev r {ra:.3}");
    println!("wrote {out}");
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
