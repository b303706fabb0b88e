//! Emotional journeys: affect (valence, arousal) as a function of progress
//! through a run (0 = start, 1 = end).

use std::f64::consts::TAU;
use std::fmt;
use std::str::FromStr;

use crate::physio::Affect;

/// A scripted emotional journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Journey {
    /// Calm (first 30 %), stress builds, stressed (40–65 %), recovers (80 % on).
    CalmStressRecovery,
    /// Starts stressed, recovers steadily to calm by 70 %, stays calm.
    Recovery,
    /// Starts uneasy, escalates to a crisis (high arousal, very negative
    /// valence) by 60 % and stays there.
    Crisis,
    /// Swings between highs and lows every few minutes.
    Volatile,
    /// Calm and content throughout.
    Stable,
}

impl Journey {
    pub const ALL: [Journey; 5] = [
        Journey::CalmStressRecovery,
        Journey::Recovery,
        Journey::Crisis,
        Journey::Volatile,
        Journey::Stable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Journey::CalmStressRecovery => "calm-stress-recovery",
            Journey::Recovery => "recovery",
            Journey::Crisis => "crisis",
            Journey::Volatile => "volatile",
            Journey::Stable => "stable",
        }
    }

    /// The affect at `progress` (clamped to 0–1).
    pub fn affect(self, progress: f64) -> Affect {
        let p = if progress.is_finite() {
            progress.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let calm = (0.45, 0.2);
        let stressed = (-0.6, 0.88);
        let recovered = (0.35, 0.3);
        let (v, a) = match self {
            Journey::CalmStressRecovery => {
                if p < 0.3 {
                    calm
                } else if p < 0.4 {
                    lerp2(calm, stressed, (p - 0.3) / 0.1)
                } else if p < 0.65 {
                    stressed
                } else if p < 0.8 {
                    lerp2(stressed, recovered, (p - 0.65) / 0.15)
                } else {
                    recovered
                }
            }
            Journey::Recovery => {
                let start = (-0.55, 0.82);
                if p < 0.7 {
                    lerp2(start, (0.5, 0.22), p / 0.7)
                } else {
                    (0.5, 0.22)
                }
            }
            Journey::Crisis => {
                let start = (-0.2, 0.5);
                let crisis = (-0.85, 0.95);
                if p < 0.6 {
                    lerp2(start, crisis, p / 0.6)
                } else {
                    crisis
                }
            }
            Journey::Volatile => (
                0.65 * (TAU * 3.3 * p + 1.0).sin(),
                0.5 + 0.42 * (TAU * 5.0 * p).sin(),
            ),
            Journey::Stable => (0.4, 0.25),
        };
        Affect::new(v, a)
    }
}

fn lerp2(a: (f64, f64), b: (f64, f64), t: f64) -> (f64, f64) {
    let t = t.clamp(0.0, 1.0);
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
}

impl fmt::Display for Journey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown journey `{0}` (expected one of: calm-stress-recovery, recovery, crisis, volatile, stable)"
)]
pub struct UnknownJourney(pub String);

impl FromStr for Journey {
    type Err = UnknownJourney;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Journey::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| UnknownJourney(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for j in Journey::ALL {
            assert_eq!(j.as_str().parse::<Journey>(), Ok(j));
        }
        assert!("panic".parse::<Journey>().is_err());
    }

    #[test]
    fn shapes() {
        let j = Journey::CalmStressRecovery;
        assert!(j.affect(0.1).arousal < j.affect(0.5).arousal);
        assert!(j.affect(0.9).arousal < j.affect(0.5).arousal);
        assert!(j.affect(0.5).valence < 0.0);
        assert!(Journey::Crisis.affect(1.0).valence < -0.8);
        assert!(Journey::Recovery.affect(1.0).arousal < Journey::Recovery.affect(0.0).arousal);
        assert_eq!(
            Journey::Stable.affect(f64::NAN),
            Journey::Stable.affect(0.0)
        );
    }
}
