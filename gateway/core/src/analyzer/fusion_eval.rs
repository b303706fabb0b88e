//! The evaluation of [`super::fusion`]: a scripted multi-source session in
//! which each source reports the true state plus noise of its documented
//! confidence, scored against the truth. Deterministic for a seed.
//!
//! # The session (10 minutes)
//!
//! The true state goes calm (valence 0.5, arousal 0.3) → stress (−0.6, 0.85)
//! → recovery (0.3, 0.45), with one-minute transitions and a slow sway of
//! ±0.05. Four sources report it at their own pace:
//!
//! | source | every | confidence drawn from (its documented range) |
//! |---|---|---|
//! | facial | 1 s | 0.80–0.95 |
//! | voice | 3 s | 0.70–0.90 |
//! | physiological | 15 s | 0.85–0.98 |
//! | text | 20 s | 0.60–0.80 |
//!
//! Each reading is the truth plus Gaussian noise of standard deviation
//! `1 − c` on valence and `(1 − c) / 2` on arousal (arousal has half the
//! range), clamped to the ranges: a reading's confidence says how far off it
//! tends to be, and nothing else (the noise does not depend on the fusion's
//! reliabilities, so the evaluation is not built to flatter them).
//!
//! # The score
//!
//! At every reading after the first 30 s, the fused estimate and each
//! source's own latest reading (what a system with that source alone would
//! show) are compared with the truth at that moment: root mean square error
//! of valence, of arousal, and of both together (`√mean(Δv² + Δa²)`).

use chrono::{DateTime, Duration, Utc};
use emotion_common::SplitMix64;

use super::fusion::{FusionConfig, FusionSlots};
use crate::source::Source;

/// Length of the session, seconds.
const SESSION_S: i64 = 600;
/// Seconds before scoring starts (every source has reported by then but text).
const WARM_UP_S: i64 = 30;

/// Errors of one way of estimating the state.
#[derive(Debug, Clone, PartialEq)]
pub struct Errors {
    pub valence_rmse: f64,
    pub arousal_rmse: f64,
    /// `√mean(Δv² + Δa²)`.
    pub rmse: f64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub fused: Errors,
    /// Each source alone, in the order of the session's table.
    pub single: Vec<(Source, Errors)>,
    /// Moments scored.
    pub samples: usize,
}

impl Evaluation {
    /// The single source with the lowest combined error.
    pub fn best_single(&self) -> Option<&(Source, Errors)> {
        self.single
            .iter()
            .min_by(|a, b| a.1.rmse.total_cmp(&b.1.rmse))
    }
}

/// The true state at `t` seconds.
pub fn truth(t: f64) -> (f64, f64) {
    const CALM: (f64, f64) = (0.5, 0.3);
    const STRESS: (f64, f64) = (-0.6, 0.85);
    const RECOVERY: (f64, f64) = (0.3, 0.45);
    let lerp =
        |a: (f64, f64), b: (f64, f64), x: f64| (a.0 + (b.0 - a.0) * x, a.1 + (b.1 - a.1) * x);
    let (v, a) = match t {
        t if t < 180.0 => CALM,
        t if t < 240.0 => lerp(CALM, STRESS, (t - 180.0) / 60.0),
        t if t < 420.0 => STRESS,
        t if t < 480.0 => lerp(STRESS, RECOVERY, (t - 420.0) / 60.0),
        _ => RECOVERY,
    };
    let sway = 0.05 * (t / 20.0).sin();
    (
        (v + sway).clamp(-1.0, 1.0),
        (a + sway / 2.0).clamp(0.0, 1.0),
    )
}

/// Sum of squared errors, for RMSEs.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    v: f64,
    a: f64,
    n: usize,
}

impl Sums {
    fn add(&mut self, (v, a): (f64, f64), (tv, ta): (f64, f64)) {
        self.v += (v - tv).powi(2);
        self.a += (a - ta).powi(2);
        self.n += 1;
    }

    fn errors(&self) -> Errors {
        let n = self.n.max(1) as f64;
        Errors {
            valence_rmse: (self.v / n).sqrt(),
            arousal_rmse: (self.a / n).sqrt(),
            rmse: ((self.v + self.a) / n).sqrt(),
        }
    }
}

/// Run the session of the module docs with `seed` and score it.
pub fn evaluate(cfg: &FusionConfig, seed: u64) -> Evaluation {
    let sources: [(Source, i64); 4] = [
        (Source::Facial, 1),
        (Source::Voice, 3),
        (Source::Physiological, 15),
        (Source::Text, 20),
    ];
    let mut rng = SplitMix64::new(seed);
    let start: DateTime<Utc> = DateTime::UNIX_EPOCH + Duration::days(20_000);
    let mut fusion = FusionSlots::default();
    let mut latest: [Option<(f64, f64)>; 4] = [None; 4];
    let mut fused_sums = Sums::default();
    let mut single_sums = [Sums::default(); 4];
    for t in 0..SESSION_S {
        for (k, (source, every)) in sources.iter().enumerate() {
            if t % every != 0 {
                continue;
            }
            let (lo, hi) = source.confidence_range();
            let c = rng.range(lo, hi);
            let (tv, ta) = truth(t as f64);
            let v = (tv + rng.normal() * (1.0 - c)).clamp(-1.0, 1.0);
            let a = (ta + rng.normal() * (1.0 - c) / 2.0).clamp(0.0, 1.0);
            latest[k] = Some((v, a));
            let at = start + Duration::seconds(t);
            let estimate = fusion.update(cfg, *source, v, a, c, at);
            if t < WARM_UP_S {
                continue;
            }
            let Some(e) = estimate else {
                continue;
            };
            fused_sums.add((e.valence, e.arousal), (tv, ta));
            for (j, l) in latest.iter().enumerate() {
                if let Some(reading) = l {
                    single_sums[j].add(*reading, (tv, ta));
                }
            }
        }
    }
    Evaluation {
        fused: fused_sums.errors(),
        single: sources
            .iter()
            .zip(single_sums.iter())
            .map(|((s, _), sums)| (*s, sums.errors()))
            .collect(),
        samples: fused_sums.n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_error_is_lower_than_the_best_single_source_for_every_seed() {
        let cfg = FusionConfig::default();
        for seed in 1..=20 {
            let e = evaluate(&cfg, seed);
            let (best, errors) = e.best_single().expect("sources");
            assert!(e.samples > 500, "{e:?}");
            assert!(
                e.fused.rmse < errors.rmse,
                "seed {seed}: fused {:.4} against {best} {:.4}",
                e.fused.rmse,
                errors.rmse
            );
        }
    }

    #[test]
    fn the_truth_follows_the_journey() {
        assert!(truth(60.0).0 > 0.4 && truth(300.0).0 < -0.5 && truth(550.0).0 > 0.2);
        assert!(truth(300.0).1 > 0.8);
    }
}
