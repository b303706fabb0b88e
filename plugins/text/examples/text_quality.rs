//! Measure the text plugin on EmoBank (train and dev splits) and print the
//! figures, with the baselines it is compared against.
//!
//! ```sh
//! cargo run --release -p emotion-plugin-text --example text_quality
//! EMOBANK_CSV=/path/to/emobank_train_dev.csv cargo run --release -p emotion-plugin-text --example text_quality
//! ```
//!
//! Everything goes through the plugin's own entry point
//! (`normalize_reading` with default settings and the embedded model), so the
//! numbers are those of the shipped component. EmoBank's V and A (1..5) are
//! compared with the plugin's valence and arousal; Pearson r does not depend
//! on the linear calibration between the two.

// Numerical loops over parallel arrays read better with indices.
#![allow(clippy::needless_range_loop)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{Row, pearson, solve_spd};
use emotion_plugin_sdk::{Outcome, Payload, Reading, Source, Text};
use emotion_plugin_text::features::{self, DENSE};
use emotion_plugin_text::vader::{self, Mode};
use emotion_plugin_text::{Settings, normalize_reading, warm_up};

fn reading(text: &str) -> Reading {
    Reading {
        user_id: "emobank".into(),
        session_id: "quality".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Text,
        payload: Payload::Text(Text {
            content: text.into(),
            language: None,
        }),
    }
}

/// The plugin's answer for each row: (valence, arousal, confidence); no
/// emotion or an error counts as the neutral point (0, 0.5) at the lowest
/// confidence.
struct Answers {
    va: Vec<(f64, f64, f64)>,
    none: usize,
    errors: usize,
}

fn run_plugin(rows: &[&Row]) -> Answers {
    let settings = Settings::default();
    let mut out = Answers {
        va: Vec::with_capacity(rows.len()),
        none: 0,
        errors: 0,
    };
    for r in rows {
        match normalize_reading(&settings, reading(&r.text)) {
            Outcome::Emotion(e) => out.va.push((e.valence, e.arousal, e.confidence)),
            Outcome::None => {
                out.none += 1;
                out.va.push((0.0, 0.5, 0.6));
            }
            Outcome::Error(_) => {
                out.errors += 1;
                out.va.push((0.0, 0.5, 0.6));
            }
        }
    }
    out
}

fn col<T: Copy>(v: &[(T, T, T)], k: usize) -> Vec<T> {
    v.iter().map(|t| [t.0, t.1, t.2][k]).collect()
}

/// Ridge on the dense features only, fitted on train (λ = 10 on
/// standardized features, as in the fit): the lexicon-features baseline.
fn dense_ridge(train: &[&Row], eval: &[&[&Row]]) -> Vec<[f64; 2]> {
    let feats = |rows: &[&Row]| -> Vec<[f64; DENSE]> {
        rows.iter()
            .map(|r| features::extract(&r.text).dense)
            .collect()
    };
    let xt = feats(train);
    let n = xt.len() as f64;
    let mut mean = [0.0; DENSE];
    let mut sd = [0.0; DENSE];
    for x in &xt {
        for k in 0..DENSE {
            mean[k] += x[k] / n;
        }
    }
    for x in &xt {
        for k in 0..DENSE {
            sd[k] += (x[k] - mean[k]).powi(2) / n;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-12));
    let z =
        |x: &[f64; DENSE]| -> [f64; DENSE] { std::array::from_fn(|k| (x[k] - mean[k]) / sd[k]) };
    let zt: Vec<[f64; DENSE]> = xt.iter().map(z).collect();
    let mut a = vec![vec![0.0; DENSE]; DENSE];
    for x in &zt {
        for i in 0..DENSE {
            for j in 0..DENSE {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    for i in 0..DENSE {
        a[i][i] += 10.0;
    }
    let mut weights = Vec::new();
    for t in 0..2 {
        let y: Vec<f64> = train.iter().map(|r| [r.v, r.a][t]).collect();
        let ybar = y.iter().sum::<f64>() / n;
        let mut b = vec![0.0; DENSE];
        for (x, yi) in zt.iter().zip(&y) {
            for k in 0..DENSE {
                b[k] += x[k] * (yi - ybar);
            }
        }
        weights.push((ybar, solve_spd(a.clone(), &b)));
    }
    let mut r = Vec::new();
    for rows in eval {
        let x = feats(rows);
        let mut out = [0.0; 2];
        for t in 0..2 {
            let (ybar, w) = &weights[t];
            let pred: Vec<f64> = x
                .iter()
                .map(|x| ybar + z(x).iter().zip(w).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let gold: Vec<f64> = rows.iter().map(|r| [r.v, r.a][t]).collect();
            out[t] = pearson(&pred, &gold);
        }
        r.push(out);
    }
    r
}

fn main() {
    let (path, rows) = common::load_emobank();
    let train: Vec<&Row> = rows.iter().filter(|r| r.split == "train").collect();
    let dev: Vec<&Row> = rows.iter().filter(|r| r.split == "dev").collect();
    println!(
        "EmoBank: {} ({} train, {} dev sentences)",
        path.display(),
        train.len(),
        dev.len()
    );
    println!("Pearson r against EmoBank's mean ratings (V and A on 1..5).\n");

    warm_up();
    let gold =
        |rows: &[&Row], t: usize| -> Vec<f64> { rows.iter().map(|r| [r.v, r.a][t]).collect() };
    let mut results = Vec::new();
    for (name, split) in [("train", &train), ("dev", &dev)] {
        let ans = run_plugin(split);
        let rv = pearson(&col(&ans.va, 0), &gold(split, 0));
        let ra = pearson(&col(&ans.va, 1), &gold(split, 1));
        results.push((name, rv, ra, ans));
    }

    println!(
        "{:<52} {:>8} {:>8} {:>8} {:>8}",
        "", "V train", "V dev", "A train", "A dev"
    );
    println!(
        "{:<52} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        "text plugin (shipped model, normalize_reading)",
        results[0].1,
        results[1].1,
        results[0].2,
        results[1].2
    );
    // Baseline: VADER's compound as published (reference mode), and its
    // magnitude for arousal.
    let vader_r = |rows: &[&Row]| {
        let c: Vec<f64> = rows
            .iter()
            .map(|r| vader::score(&r.text, Mode::Reference).compound)
            .collect();
        let abs: Vec<f64> = c.iter().map(|x| x.abs()).collect();
        (pearson(&c, &gold(rows, 0)), pearson(&abs, &gold(rows, 1)))
    };
    let (vt, at) = vader_r(&train);
    let (vd, ad) = vader_r(&dev);
    println!(
        "{:<52} {vt:>8.3} {vd:>8.3} {at:>8.3} {ad:>8.3}",
        "baseline: VADER compound (|compound| for arousal)"
    );
    let dense = dense_ridge(&train, &[&train, &dev]);
    println!(
        "{:<52} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        "baseline: ridge on the 11 dense features only",
        dense[0][0],
        dense[1][0],
        dense[0][1],
        dense[1][1]
    );
    println!("\ntargets on dev: r(valence) >= 0.60, r(arousal) >= 0.35");
    let ok = results[1].1 >= 0.60 && results[1].2 >= 0.35;
    println!(
        "dev: r(valence) = {:.3}, r(arousal) = {:.3} -> {}",
        results[1].1,
        results[1].2,
        if ok { "met" } else { "NOT met" }
    );

    // Calibration and confidence on dev.
    let ans = &results[1].3;
    let v_gold: Vec<f64> = dev.iter().map(|r| (r.v - 3.0) / 2.0).collect();
    let a_gold: Vec<f64> = dev.iter().map(|r| (r.a - 1.0) / 4.0).collect();
    let mae = |pred: &[f64], gold: &[f64]| {
        pred.iter()
            .zip(gold)
            .map(|(p, g)| (p - g).abs())
            .sum::<f64>()
            / gold.len() as f64
    };
    let v = col(&ans.va, 0);
    let a = col(&ans.va, 1);
    let c = col(&ans.va, 2);
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let const_v = vec![mean(&v_gold); v_gold.len()];
    let const_a = vec![mean(&a_gold); a_gold.len()];
    println!(
        "\ndev on the circumplex scales (valence (V-3)/2, arousal (A-1)/4): MAE valence {:.4} (constant mean: {:.4}), arousal {:.4} (constant mean: {:.4})",
        mae(&v, &v_gold),
        mae(&const_v, &v_gold),
        mae(&a, &a_gold),
        mae(&const_a, &a_gold)
    );
    println!(
        "answers: train {} no-emotion, {} errors; dev {} no-emotion, {} errors (scored as neutral)",
        results[0].3.none, results[0].3.errors, ans.none, ans.errors
    );
    let (cmin, cmax) = c
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    println!(
        "confidence on dev: min {cmin:.3}, mean {:.3}, max {cmax:.3}",
        mean(&c)
    );
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&i, &j| c[i].total_cmp(&c[j]));
    let third = order.len() / 3;
    for (name, idx) in [
        ("lowest third", &order[..third]),
        ("middle third", &order[third..2 * third]),
        ("highest third", &order[2 * third..]),
    ] {
        let e = |p: &[f64], g: &[f64]| {
            idx.iter().map(|&i| (p[i] - g[i]).abs()).sum::<f64>() / idx.len() as f64
        };
        let words = idx
            .iter()
            .map(|&i| dev[i].text.split_whitespace().count())
            .sum::<usize>() as f64
            / idx.len() as f64;
        println!(
            "  {name:<13} confidence {:.3}..{:.3}: {words:>5.1} words, MAE valence {:.4}, arousal {:.4}",
            c[idx[0]],
            c[idx[idx.len() - 1]],
            e(&v, &v_gold),
            e(&a, &a_gold)
        );
    }

    // Native speed of the whole plugin path.
    let settings = Settings::default();
    let all: Vec<&Row> = rows.iter().collect();
    let passes = 3;
    let batches: Vec<Vec<Reading>> = (0..passes)
        .map(|_| all.iter().map(|r| reading(&r.text)).collect())
        .collect();
    let words: usize = all.iter().map(|r| r.text.split_whitespace().count()).sum();
    let start = Instant::now();
    for batch in batches {
        for r in batch {
            black_box(normalize_reading(&settings, black_box(r)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let per = secs / (passes * all.len()) as f64;
    println!(
        "\nnative speed: {:.2} µs per reading ({:.0} readings/s; EmoBank sentences average {:.1} words)",
        per * 1e6,
        1.0 / per,
        words as f64 / all.len() as f64
    );
}
