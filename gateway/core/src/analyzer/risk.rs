//! The risk score of a user's recent history (the original `calculate_risk_score`).

use serde::Serialize;

use super::state::regions;
use super::window::Window;
use crate::num::round3;

/// A score at or above this flags the user (original: 0.7).
pub const FLAG_THRESHOLD: f64 = 0.7;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskScore {
    /// In [0, 1].
    pub score: f64,
    /// `low` (< 0.3), `medium` (< 0.7) or `high`.
    pub level: &'static str,
    pub flagged: bool,
    /// Why, in words; empty when the score is 0.
    pub factors: Vec<&'static str>,
}

/// What the risk score is computed from: the aggregates of a set of events.
///
/// The analyzer fills it from a user's recent window; the credit summaries
/// (`crate::credit`) fill it from a window of days, so both use one formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskInputs {
    /// Number of events the aggregates cover.
    pub count: usize,
    pub mean_valence: f64,
    pub mean_arousal: f64,
    /// Population standard deviations.
    pub std_valence: f64,
    pub std_arousal: f64,
    /// Stability score in [0, 1] (see [`super::stability`]).
    pub stability: f64,
    /// High-severity anomalies among the events considered.
    pub high_anomalies: usize,
}

/// Score the recent `window`, given the stability of the latest trajectory and
/// the number of high-severity anomalies among the latest events.
///
/// Components (capped at 1.0 in total): stress (mean valence < −0.4 and mean
/// arousal > 0.6) +0.4, or else a depressive pattern (mean valence < −0.5 and
/// mean arousal < 0.3) +0.5; volatility (more than 3 events and σ valence > 0.6
/// or σ arousal > 0.5) +0.3; stability < 0.3 +0.2; +0.1 per high-severity
/// anomaly, at most +0.3.
pub fn risk_score(window: &Window, stability: f64, high_anomalies: usize) -> RiskScore {
    risk_from_aggregates(&RiskInputs {
        count: window.len(),
        mean_valence: window.mean_valence(),
        mean_arousal: window.mean_arousal(),
        std_valence: window.std_valence(),
        std_arousal: window.std_arousal(),
        stability,
        high_anomalies,
    })
}

/// The risk score of [`risk_score`], from aggregates instead of a window.
pub fn risk_from_aggregates(x: &RiskInputs) -> RiskScore {
    let (mv, ma) = (x.mean_valence, x.mean_arousal);
    let (sv, sa) = (x.std_valence, x.std_arousal);
    let mut score = 0.0;
    let mut factors = Vec::new();
    if x.count == 0 {
        return RiskScore {
            score: 0.0,
            level: "low",
            flagged: false,
            factors,
        };
    }
    if mv < -0.4 && ma > 0.6 {
        score += 0.4;
        factors.push("chronic stress: persistently negative mood with high arousal");
    } else if mv < -0.5 && ma < 0.3 {
        score += 0.5;
        factors.push("persistently negative mood with low energy (depression indicators)");
    } else if mv < -0.4 {
        factors.push("persistently negative mood");
    }
    if x.count > 3 && regions::volatile(sv, sa) {
        score += 0.3;
        factors.push("high emotional volatility");
    }
    if x.stability < 0.3 {
        score += 0.2;
        factors.push("unstable emotional patterns");
    }
    if x.high_anomalies > 0 {
        score += (0.1 * x.high_anomalies as f64).min(0.3);
        factors.push("significant emotional anomalies");
    }
    let score = round3(score.min(1.0));
    RiskScore {
        score,
        level: if score < 0.3 {
            "low"
        } else if score < FLAG_THRESHOLD {
            "medium"
        } else {
            "high"
        },
        flagged: score >= FLAG_THRESHOLD,
        factors,
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::Point;
    use super::*;
    use crate::label::EmotionLabel;

    fn window(points: &[(f64, f64)]) -> Window {
        let mut w = Window::new(50);
        for (v, a) in points {
            w.push(Point {
                valence: *v,
                arousal: *a,
                t: 0.0,
                label: EmotionLabel::Neutral,
            });
        }
        w
    }

    #[test]
    fn calm_history_scores_zero() {
        let r = risk_score(&window(&[(0.5, 0.3); 10]), 1.0, 0);
        assert_eq!((r.score, r.level, r.flagged), (0.0, "low", false));
    }

    #[test]
    fn each_component_adds_its_weight_and_the_total_is_capped() {
        assert_eq!(risk_score(&window(&[(-0.7, 0.85); 10]), 0.9, 0).score, 0.4);
        assert_eq!(risk_score(&window(&[(-0.7, 0.1); 10]), 0.9, 0).score, 0.5);
        let swing = [
            (0.9, 0.1),
            (-0.9, 0.9),
            (0.9, 0.1),
            (-0.9, 0.9),
            (0.9, 0.1),
            (-0.9, 0.9),
        ];
        let r = risk_score(&window(&swing), 0.2, 0);
        assert_eq!(r.score, 0.5, "{r:?}");
        assert_eq!(risk_score(&window(&[(0.5, 0.3); 10]), 0.9, 5).score, 0.3);
        let r = risk_score(&window(&[(-0.7, 0.85); 10]), 0.1, 9);
        assert_eq!(r.score, 0.9);
        assert!(r.flagged);
        assert_eq!(r.factors.len(), 3);
    }
}
