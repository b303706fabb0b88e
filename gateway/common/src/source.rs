//! The eight kinds of source an emotion event can come from.

use std::fmt;
use std::str::FromStr;

/// Where an emotion reading came from. The set is closed: the original system's
/// clients send exactly these names, and the central schema stores them as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Source {
    Text,
    Voice,
    Facial,
    Physiological,
    Survey,
    Biometric,
    Behavioral,
    Contextual,
}

impl Source {
    /// Every source, in the order the original system lists them.
    pub const ALL: [Source; 8] = [
        Source::Text,
        Source::Voice,
        Source::Facial,
        Source::Physiological,
        Source::Survey,
        Source::Biometric,
        Source::Behavioral,
        Source::Contextual,
    ];

    /// The source's name as the gateway spells it (`"text"`, `"facial"`, …):
    /// on the wire, in topics, in the central schema.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Text => "text",
            Source::Voice => "voice",
            Source::Facial => "facial",
            Source::Physiological => "physiological",
            Source::Survey => "survey",
            Source::Biometric => "biometric",
            Source::Behavioral => "behavioral",
            Source::Contextual => "contextual",
        }
    }

    /// The confidence a well-working producer of this kind reports, from the
    /// original system. Plugins keep their confidence inside this range, and
    /// so must events sent by clients unless the gateway's
    /// `validation.confidence = "any"` (then anywhere in [0, 1]).
    pub const fn confidence_range(self) -> (f64, f64) {
        match self {
            Source::Text => (0.60, 0.80),
            Source::Voice => (0.70, 0.90),
            Source::Facial => (0.80, 0.95),
            Source::Physiological => (0.85, 0.98),
            Source::Survey => (0.90, 0.99),
            Source::Biometric => (0.90, 0.99),
            Source::Behavioral => (0.50, 0.70),
            Source::Contextual => (0.40, 0.60),
        }
    }

    /// Dense index, for per-source counters kept in arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name that was not one of the eight sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSource(pub String);

impl fmt::Display for UnknownSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown source `{}` (expected one of: text, voice, facial, physiological, survey, biometric, behavioral, contextual)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSource {}

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|src| src.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ranges_are_ordered() {
        for (i, s) in Source::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(s.as_str().parse::<Source>(), Ok(s));
            let (lo, hi) = s.confidence_range();
            assert!(0.0 < lo && lo < hi && hi < 1.0, "{s}");
        }
        assert!("telepathy".parse::<Source>().is_err());
        assert_eq!(" Voice ".parse::<Source>(), Ok(Source::Voice));
        assert_eq!(
            "x".parse::<Source>().map_err(|e| e.to_string()),
            Err("unknown source `x` (expected one of: text, voice, facial, physiological, survey, biometric, behavioral, contextual)".to_owned())
        );
    }
}
