//! Emotional journeys: affect (valence, arousal) as a function of progress
//! through a run (0 = start, 1 = end), and [`Script`], a journey laid over a
//! simulated duration.
//!
//! Shared by firmware-sim (serial wearables, WebSocket and MQTT clients) and
//! the gateway's simulated BLE adapter, so a strap plays the same calm →
//! stress → recovery wherever it is simulated.

use std::f64::consts::TAU;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::physio::Affect;

/// A scripted emotional journey. Named in kebab case (`calm-stress-recovery`)
/// on command lines and, with the `serde` feature, in configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
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

/// The name that was not one of the journeys. Display and Error are written
/// out (not derived with thiserror) to keep this crate free of dependencies,
/// as the wasm plugins link it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownJourney(pub String);

impl fmt::Display for UnknownJourney {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown journey `{}` (expected one of: calm-stress-recovery, recovery, crisis, volatile, stable)",
            self.0
        )
    }
}

impl std::error::Error for UnknownJourney {}

impl FromStr for Journey {
    type Err = UnknownJourney;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Journey::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| UnknownJourney(s.to_owned()))
    }
}

/// A journey laid over a duration: the affect at a simulated time. A looping
/// script starts the journey over at the end of each pass (a demo that runs
/// for hours); otherwise the affect stays at the journey's end state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Script {
    pub journey: Journey,
    /// Simulated length of one pass, s (at least 1).
    pub duration_s: f64,
    pub looping: bool,
}

impl Script {
    /// One pass of `journey` over `duration` (at least a second).
    pub fn new(journey: Journey, duration: Duration) -> Self {
        Self {
            journey,
            duration_s: duration.as_secs_f64().max(1.0),
            looping: false,
        }
    }

    /// The same journey, started over after every pass.
    pub fn looping(self) -> Self {
        Self {
            looping: true,
            ..self
        }
    }

    /// Progress through the current pass at simulated time `t_s`, 0–1.
    pub fn progress_at(&self, t_s: f64) -> f64 {
        if !t_s.is_finite() || t_s <= 0.0 {
            return 0.0;
        }
        // A hand-built script may hold any duration; never divide by zero.
        let d = if self.duration_s.is_finite() && self.duration_s >= 1.0 {
            self.duration_s
        } else {
            1.0
        };
        if self.looping {
            (t_s % d) / d
        } else {
            (t_s / d).min(1.0)
        }
    }

    pub fn affect_at(&self, t_s: f64) -> Affect {
        self.journey.affect(self.progress_at(t_s))
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

    #[test]
    fn a_looping_script_starts_over_and_a_plain_one_stays_at_the_end() {
        let once = Script::new(Journey::CalmStressRecovery, Duration::from_secs(100));
        let looping = once.looping();
        assert_eq!(once.progress_at(50.0), 0.5);
        assert_eq!(looping.progress_at(50.0), 0.5);
        assert_eq!(once.progress_at(150.0), 1.0);
        assert_eq!(looping.progress_at(150.0), 0.5);
        // The second pass is stressed in the middle, like the first.
        assert!(looping.affect_at(150.0).arousal > looping.affect_at(110.0).arousal);
        for t in [f64::NAN, -1.0, f64::INFINITY] {
            assert_eq!(looping.progress_at(t), 0.0);
        }
        let broken = Script {
            duration_s: 0.0,
            ..looping
        };
        assert!(broken.progress_at(2.5).is_finite());
    }
}
