//! Statistical outliers: how far an event lies from the user's own baseline.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::window::{Point, Window};
use crate::num::round3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Medium,
    High,
}

/// The `type` of the anomalies [`detect`] reports.
pub const STATISTICAL_OUTLIER: &str = "statistical_outlier";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    pub event_id: Uuid,
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub valence_zscore: f64,
    pub arousal_zscore: f64,
    pub severity: Severity,
}

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyRule {
    /// Events needed in the baseline before anything is judged.
    pub min_baseline: usize,
    /// |z| above this is an anomaly (original: 2.5).
    pub z_threshold: f64,
    /// |z| above this is a high-severity anomaly (original: 3.0).
    pub high_z: f64,
    /// The baseline spread is floored at this, so that a tiny move away from a
    /// perfectly constant history is not reported as a huge z-score.
    pub min_std: f64,
}

impl Default for AnomalyRule {
    fn default() -> Self {
        AnomalyRule {
            min_baseline: 20,
            z_threshold: 2.5,
            high_z: 3.0,
            min_std: 0.05,
        }
    }
}

/// z-scores of `p` against `baseline` (which must not yet contain `p`).
pub fn zscores(baseline: &Window, p: &Point, rule: &AnomalyRule) -> Option<(f64, f64)> {
    if baseline.len() < rule.min_baseline {
        return None;
    }
    let zv = (p.valence - baseline.mean_valence()).abs() / baseline.std_valence().max(rule.min_std);
    let za = (p.arousal - baseline.mean_arousal()).abs() / baseline.std_arousal().max(rule.min_std);
    Some((zv, za))
}

/// The anomaly `p` is, if any.
pub fn detect(
    baseline: &Window,
    p: &Point,
    event_id: Uuid,
    timestamp: DateTime<Utc>,
    rule: &AnomalyRule,
) -> Option<Anomaly> {
    let (zv, za) = zscores(baseline, p, rule)?;
    let z = zv.max(za);
    (z > rule.z_threshold).then(|| Anomaly {
        event_id,
        timestamp,
        kind: STATISTICAL_OUTLIER,
        valence_zscore: round3(zv),
        arousal_zscore: round3(za),
        severity: if z > rule.high_z {
            Severity::High
        } else {
            Severity::Medium
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::EmotionLabel;

    fn pt(v: f64, a: f64) -> Point {
        Point {
            valence: v,
            arousal: a,
            t: 0.0,
            label: EmotionLabel::Neutral,
        }
    }

    #[test]
    fn outliers_against_a_noisy_baseline() {
        let rule = AnomalyRule::default();
        let mut w = Window::new(50);
        for i in 0..50 {
            let jitter = if i % 2 == 0 { 0.1 } else { -0.1 };
            w.push(pt(0.3 + jitter, 0.4 - jitter));
        }
        assert!(
            detect(
                &w,
                &pt(0.35, 0.45),
                Uuid::nil(),
                DateTime::UNIX_EPOCH,
                &rule
            )
            .is_none()
        );
        let a = detect(
            &w,
            &pt(-0.9, 0.95),
            Uuid::nil(),
            DateTime::UNIX_EPOCH,
            &rule,
        )
        .expect("outlier");
        assert_eq!(a.severity, Severity::High);
        assert!(a.valence_zscore > 10.0);
        let m =
            detect(&w, &pt(0.58, 0.4), Uuid::nil(), DateTime::UNIX_EPOCH, &rule).expect("outlier");
        assert_eq!(m.severity, Severity::Medium, "{m:?}");
    }

    #[test]
    fn nothing_is_judged_before_the_baseline_fills() {
        let mut w = Window::new(50);
        for _ in 0..19 {
            w.push(pt(0.0, 0.5));
        }
        assert!(zscores(&w, &pt(1.0, 1.0), &AnomalyRule::default()).is_none());
    }
}
