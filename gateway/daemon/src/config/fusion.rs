//! `[fusion]`: multi-modal fusion of a user's latest readings per source
//! (see `emotion_core::analyzer::fusion`).

use emotion_core::Source;
use emotion_core::analyzer::FusionConfig;
use serde::Deserialize;

use super::Dur;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionSettings {
    pub enabled: bool,
    /// Readings older than this (relative to the user's newest) are left out.
    pub window: Dur,
    /// Per source: `[valence, arousal]` reliability, each in (0, 1].
    pub reliability: Reliability,
}

/// `[fusion.reliability]`: one `[valence, arousal]` pair per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reliability {
    pub text: [f64; 2],
    pub voice: [f64; 2],
    pub facial: [f64; 2],
    pub physiological: [f64; 2],
    pub survey: [f64; 2],
    pub biometric: [f64; 2],
    pub behavioral: [f64; 2],
    pub contextual: [f64; 2],
}

impl Reliability {
    fn of(&self, s: Source) -> [f64; 2] {
        match s {
            Source::Text => self.text,
            Source::Voice => self.voice,
            Source::Facial => self.facial,
            Source::Physiological => self.physiological,
            Source::Survey => self.survey,
            Source::Biometric => self.biometric,
            Source::Behavioral => self.behavioral,
            Source::Contextual => self.contextual,
        }
    }
}

impl FusionSettings {
    /// The analyzer's fusion configuration.
    pub fn config(&self) -> FusionConfig {
        let mut cfg = FusionConfig {
            enabled: self.enabled,
            window: chrono::Duration::from_std(self.window.0)
                .unwrap_or_else(|_| chrono::Duration::seconds(30)),
            ..FusionConfig::default()
        };
        for s in Source::ALL {
            let [v, a] = self.reliability.of(s);
            cfg.reliability[s.index()] = (v, a);
        }
        cfg
    }

    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let w = self.window.0;
        if w < std::time::Duration::from_millis(100) || w > std::time::Duration::from_secs(3600) {
            p.push(format!(
                "fusion.window must be between 100ms and 1h, got {}",
                self.window
            ));
        }
        for s in Source::ALL {
            for (dim, r) in ["valence", "arousal"].iter().zip(self.reliability.of(s)) {
                if !(r > 0.0 && r <= 1.0) {
                    p.push(format!(
                        "fusion.reliability.{s} {dim} must be in (0, 1], got {r}"
                    ));
                }
            }
        }
        p
    }
}
