//! The emotional state of one moment: quadrant, cluster, intensity, risk
//! assessment and recommendations (the original `EmotionAnalyzer` state analysis).

use serde::Serialize;

use crate::num::round3;

/// Thresholds of the risk regions of the circumplex, from the original system.
pub mod regions {
    /// High stress: valence < −0.3 and arousal > 0.7 (inclusive in the original).
    pub fn high_stress(v: f64, a: f64) -> bool {
        v <= -0.3 && a >= 0.7
    }
    /// Depression indicators: valence < −0.4 and arousal < 0.3.
    pub fn depression(v: f64, a: f64) -> bool {
        v <= -0.4 && a <= 0.3
    }
    /// Anxiety: valence in [−0.6, 0.2] and arousal > 0.6.
    pub fn anxiety(v: f64, a: f64) -> bool {
        (-0.6..=0.2).contains(&v) && a >= 0.6
    }
    /// Volatility: population σ of valence above 0.6 or of arousal above 0.5.
    pub fn volatile(std_v: f64, std_a: f64) -> bool {
        std_v > 0.6 || std_a > 0.5
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecificRisk {
    pub pattern: &'static str,
    pub risk_level: RiskLevel,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskAssessment {
    pub overall_risk: RiskLevel,
    pub specific_risks: Vec<SpecificRisk>,
    pub recommendation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateAnalysis {
    pub valence: f64,
    pub arousal: f64,
    /// `high_positive`, `low_positive`, `high_negative`, `low_negative`.
    pub quadrant: &'static str,
    /// `positive_high_arousal`, `positive_low_arousal`, `negative_high_arousal`,
    /// `negative_low_arousal` or `neutral` (|valence| ≤ 0.3).
    pub cluster: &'static str,
    /// √(v² + a²) on the original's scales, rounded to 3 places.
    pub intensity: f64,
    pub risk_assessment: RiskAssessment,
    pub recommendations: &'static [&'static str],
}

/// Analyze one point. `spread` is the user's recent (σ valence, σ arousal), used
/// for the volatility risk, which a single point cannot show.
pub fn analyze_state(valence: f64, arousal: f64, spread: Option<(f64, f64)>) -> StateAnalysis {
    let quadrant = match (valence >= 0.0, arousal >= 0.5) {
        (true, true) => "high_positive",
        (true, false) => "low_positive",
        (false, true) => "high_negative",
        (false, false) => "low_negative",
    };
    let cluster = if valence > 0.3 {
        if arousal > 0.5 {
            "positive_high_arousal"
        } else {
            "positive_low_arousal"
        }
    } else if valence < -0.3 {
        if arousal > 0.5 {
            "negative_high_arousal"
        } else {
            "negative_low_arousal"
        }
    } else {
        "neutral"
    };

    let mut specific_risks = Vec::new();
    if regions::high_stress(valence, arousal) {
        specific_risks.push(SpecificRisk {
            pattern: "high_stress",
            risk_level: RiskLevel::High,
        });
    }
    if regions::depression(valence, arousal) {
        specific_risks.push(SpecificRisk {
            pattern: "depression_indicators",
            risk_level: RiskLevel::High,
        });
    }
    if regions::anxiety(valence, arousal) {
        specific_risks.push(SpecificRisk {
            pattern: "anxiety_pattern",
            risk_level: RiskLevel::Medium,
        });
    }
    if let Some((sv, sa)) = spread
        && regions::volatile(sv, sa)
    {
        specific_risks.push(SpecificRisk {
            pattern: "emotional_volatility",
            risk_level: RiskLevel::Medium,
        });
    }
    let overall_risk = specific_risks
        .iter()
        .map(|r| r.risk_level)
        .max()
        .unwrap_or(RiskLevel::Low);
    let recommendation = match overall_risk {
        RiskLevel::Low => "Continue monitoring emotional wellbeing",
        RiskLevel::Medium => "Consider stress management techniques and self-care",
        RiskLevel::High => {
            "Strongly recommend seeking professional support or immediate intervention"
        }
    };
    let recommendations: &'static [&'static str] = match cluster {
        "negative_high_arousal" => &[
            "Consider relaxation techniques",
            "Take deep breaths",
            "Step away from stressful situation if possible",
        ],
        "negative_low_arousal" => &[
            "Engage in light physical activity",
            "Connect with supportive friends",
            "Consider professional support if persistent",
        ],
        "positive_low_arousal" => &[
            "Enjoy this peaceful moment",
            "Practice mindfulness",
            "Maintain current activities",
        ],
        "positive_high_arousal" => &[
            "Channel energy into productive activities",
            "Share positive feelings with others",
            "Maintain balance to avoid burnout",
        ],
        _ => &[],
    };

    StateAnalysis {
        valence: round3(valence),
        arousal: round3(arousal),
        quadrant,
        cluster,
        intensity: round3((valence * valence + arousal * arousal).sqrt()),
        risk_assessment: RiskAssessment {
            overall_risk,
            specific_risks,
            recommendation,
        },
        recommendations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_documented_example() {
        let s = analyze_state(0.7, 0.6, None);
        assert_eq!(s.quadrant, "high_positive");
        assert_eq!(s.cluster, "positive_high_arousal");
        assert_eq!(s.intensity, 0.922);
        assert_eq!(s.risk_assessment.overall_risk, RiskLevel::Low);
        assert!(s.risk_assessment.specific_risks.is_empty());
    }

    #[test]
    fn risk_regions() {
        let s = analyze_state(-0.6, 0.85, None);
        assert_eq!(s.quadrant, "high_negative");
        assert_eq!(s.risk_assessment.overall_risk, RiskLevel::High);
        let names: Vec<_> = s
            .risk_assessment
            .specific_risks
            .iter()
            .map(|r| r.pattern)
            .collect();
        assert_eq!(names, ["high_stress", "anxiety_pattern"]);

        let s = analyze_state(-0.7, 0.2, None);
        assert_eq!(
            (s.quadrant, s.cluster),
            ("low_negative", "negative_low_arousal")
        );
        assert_eq!(
            s.risk_assessment.specific_risks[0].pattern,
            "depression_indicators"
        );

        let s = analyze_state(0.1, 0.65, None);
        assert_eq!(s.risk_assessment.overall_risk, RiskLevel::Medium);
        assert_eq!(s.cluster, "neutral");

        let s = analyze_state(0.5, 0.4, Some((0.7, 0.1)));
        assert_eq!(
            s.risk_assessment.specific_risks[0].pattern,
            "emotional_volatility"
        );
        assert_eq!(s.recommendations[0], "Enjoy this peaceful moment");
    }
}
