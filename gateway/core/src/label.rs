//! Emotion labels and their place on the valence–arousal circumplex.
//!
//! # The coordinate table
//!
//! Valence is in [-1, 1] (unpleasant … pleasant) and arousal in [0, 1] (deactivated
//! … activated), the scales of the original system. Each label is placed on the
//! circumplex by an angle θ (degrees, counter-clockwise from "pleasure") and a
//! radius r (how intense a prototypical instance is):
//!
//! ```text
//! valence = r · cos θ          arousal = 0.5 + 0.5 · r · sin θ
//! ```
//!
//! so that the circle of Russell's model maps onto the original scales, with the
//! neutral centre at (0, 0.5).
//!
//! Angles come from Russell, J. A. (1980), *A circumplex model of affect*,
//! Journal of Personality and Social Psychology 39(6), 1161–1178: the eight
//! anchor directions (pleasure 0°, excitement 45°, arousal 90°, distress 135°,
//! displeasure 180°, depression 225°, sleepiness 270°, relaxation 315°) and the
//! positions of his 28 scaled adjectives as commonly tabulated from that paper
//! (happy 7.8°, delighted 24.9°, excited 48.6°, astonished 69.8°, aroused 73.8°,
//! tense 92.8°, angry 99.8°, afraid 116.6°, annoyed 123.0°, distressed 137.6°,
//! frustrated 141.0°, miserable 188.7°, sad 207.5°, depressed 211.0°, bored
//! 241.0°, calm 316.2°, at ease 321.0°, content 323.1°). Labels that are not
//! among Russell's adjectives (Plutchik's trust, disgust, anticipation, optimism,
//! love, remorse, awe, contempt, aggressiveness, disappointment; Plutchik 1980,
//! *Emotion: A psychoevolutionary synthesis*) are placed on the nearest Russell
//! adjective named in the table below, or between two of them, and given a
//! smaller radius where the emotion is milder. Radii are this project's choice:
//! 0.8 for a prototypical basic emotion, more for intense forms (sadness 0.9,
//! aggressiveness 1.0), less for mild ones. Sadness at r = 0.9 lands inside the
//! "depression indicators" region of the analyzer (v < −0.4, a < 0.3); fear and
//! stress land inside "high stress" (v < −0.3, a > 0.7).
//!
//! | label | placed on | θ | r |
//! |---|---|---|---|
//! | joy | delighted | 24.9 | 0.85 |
//! | excitement | excited | 48.6 | 0.85 |
//! | awe | between excited and astonished | 59.2 | 0.60 |
//! | surprise | astonished | 69.8 | 0.80 |
//! | anticipation | aroused | 73.8 | 0.55 |
//! | anxiety | tense | 92.8 | 0.80 |
//! | anger | angry | 99.8 | 0.80 |
//! | aggressiveness | angry, at full intensity | 99.8 | 1.00 |
//! | fear | afraid | 116.6 | 0.85 |
//! | disgust | annoyed | 123.0 | 0.70 |
//! | stress | distressed | 137.6 | 0.85 |
//! | contempt | frustrated | 141.0 | 0.55 |
//! | disappointment | miserable | 188.7 | 0.60 |
//! | sadness | sad | 207.5 | 0.90 |
//! | remorse | depressed | 211.0 | 0.60 |
//! | boredom | bored | 241.0 | 0.70 |
//! | calm | calm | 316.2 | 0.75 |
//! | trust | at ease | 321.0 | 0.60 |
//! | contentment | content | 323.1 | 0.80 |
//! | love | happy, strongly | 7.8 | 0.90 |
//! | optimism | between happy and delighted | 16.4 | 0.60 |
//! | neutral | the centre | – | 0 |
//!
//! `unknown` has no coordinates: an event labelled `unknown` must carry its own.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// A named emotion. The set is the original system's plus calm, excitement,
/// boredom, contentment and stress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmotionLabel {
    Joy,
    Sadness,
    Anger,
    Fear,
    Trust,
    Disgust,
    Surprise,
    Anticipation,
    Optimism,
    Disappointment,
    Contempt,
    Anxiety,
    Love,
    Remorse,
    Awe,
    Aggressiveness,
    Neutral,
    Unknown,
    Calm,
    Excitement,
    Boredom,
    Contentment,
    Stress,
}

/// A point on the circumplex: valence in [-1, 1], arousal in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    pub valence: f64,
    pub arousal: f64,
}

/// One row of the documented table: Russell angle (degrees) and radius.
struct Placement {
    angle_deg: f64,
    radius: f64,
}

impl EmotionLabel {
    /// Every label, in a fixed order (used for dense per-label counters).
    pub const ALL: [EmotionLabel; 23] = [
        EmotionLabel::Joy,
        EmotionLabel::Sadness,
        EmotionLabel::Anger,
        EmotionLabel::Fear,
        EmotionLabel::Trust,
        EmotionLabel::Disgust,
        EmotionLabel::Surprise,
        EmotionLabel::Anticipation,
        EmotionLabel::Optimism,
        EmotionLabel::Disappointment,
        EmotionLabel::Contempt,
        EmotionLabel::Anxiety,
        EmotionLabel::Love,
        EmotionLabel::Remorse,
        EmotionLabel::Awe,
        EmotionLabel::Aggressiveness,
        EmotionLabel::Neutral,
        EmotionLabel::Unknown,
        EmotionLabel::Calm,
        EmotionLabel::Excitement,
        EmotionLabel::Boredom,
        EmotionLabel::Contentment,
        EmotionLabel::Stress,
    ];

    pub const COUNT: usize = Self::ALL.len();

    pub const fn as_str(self) -> &'static str {
        match self {
            EmotionLabel::Joy => "joy",
            EmotionLabel::Sadness => "sadness",
            EmotionLabel::Anger => "anger",
            EmotionLabel::Fear => "fear",
            EmotionLabel::Trust => "trust",
            EmotionLabel::Disgust => "disgust",
            EmotionLabel::Surprise => "surprise",
            EmotionLabel::Anticipation => "anticipation",
            EmotionLabel::Optimism => "optimism",
            EmotionLabel::Disappointment => "disappointment",
            EmotionLabel::Contempt => "contempt",
            EmotionLabel::Anxiety => "anxiety",
            EmotionLabel::Love => "love",
            EmotionLabel::Remorse => "remorse",
            EmotionLabel::Awe => "awe",
            EmotionLabel::Aggressiveness => "aggressiveness",
            EmotionLabel::Neutral => "neutral",
            EmotionLabel::Unknown => "unknown",
            EmotionLabel::Calm => "calm",
            EmotionLabel::Excitement => "excitement",
            EmotionLabel::Boredom => "boredom",
            EmotionLabel::Contentment => "contentment",
            EmotionLabel::Stress => "stress",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    fn placement(self) -> Option<Placement> {
        let (angle_deg, radius) = match self {
            EmotionLabel::Joy => (24.9, 0.85),
            EmotionLabel::Excitement => (48.6, 0.85),
            EmotionLabel::Awe => (59.2, 0.60),
            EmotionLabel::Surprise => (69.8, 0.80),
            EmotionLabel::Anticipation => (73.8, 0.55),
            EmotionLabel::Anxiety => (92.8, 0.80),
            EmotionLabel::Anger => (99.8, 0.80),
            EmotionLabel::Aggressiveness => (99.8, 1.00),
            EmotionLabel::Fear => (116.6, 0.85),
            EmotionLabel::Disgust => (123.0, 0.70),
            EmotionLabel::Stress => (137.6, 0.85),
            EmotionLabel::Contempt => (141.0, 0.55),
            EmotionLabel::Disappointment => (188.7, 0.60),
            EmotionLabel::Sadness => (207.5, 0.90),
            EmotionLabel::Remorse => (211.0, 0.60),
            EmotionLabel::Boredom => (241.0, 0.70),
            EmotionLabel::Calm => (316.2, 0.75),
            EmotionLabel::Trust => (321.0, 0.60),
            EmotionLabel::Contentment => (323.1, 0.80),
            EmotionLabel::Love => (7.8, 0.90),
            EmotionLabel::Optimism => (16.4, 0.60),
            EmotionLabel::Neutral => (0.0, 0.0),
            EmotionLabel::Unknown => return None,
        };
        Some(Placement { angle_deg, radius })
    }

    /// The label's coordinates from the table, or `None` for `unknown`.
    pub fn coordinates(self) -> Option<Coordinates> {
        self.placement().map(|p| {
            let theta = p.angle_deg.to_radians();
            Coordinates {
                valence: p.radius * theta.cos(),
                arousal: 0.5 + 0.5 * p.radius * theta.sin(),
            }
        })
    }

    /// The label whose table point is closest to `(valence, arousal)`.
    ///
    /// Distance is Euclidean on the circle (arousal rescaled to [-1, 1]) so both
    /// axes weigh the same. Never returns `unknown`.
    pub fn nearest(valence: f64, arousal: f64) -> EmotionLabel {
        // The table's points, computed once: two trigonometric calls per
        // label per question were most of the plugin host's conversion of an
        // emotion without a label.
        static POINTS: LazyLock<Vec<(EmotionLabel, f64, f64)>> = LazyLock::new(|| {
            EmotionLabel::ALL
                .into_iter()
                .filter_map(|l| {
                    l.coordinates()
                        .map(|c| (l, c.valence, 2.0 * c.arousal - 1.0))
                })
                .collect()
        });
        let y = 2.0 * arousal - 1.0;
        let mut best = EmotionLabel::Neutral;
        let mut best_d = f64::INFINITY;
        for &(label, v, a) in POINTS.iter() {
            let dv = v - valence;
            let da = a - y;
            let d = dv * dv + da * da;
            if d < best_d {
                best_d = d;
                best = label;
            }
        }
        best
    }
}

impl fmt::Display for EmotionLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name that is not a known label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown emotion label `{0}`")]
pub struct UnknownLabel(pub String);

impl FromStr for EmotionLabel {
    type Err = UnknownLabel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        EmotionLabel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownLabel(s.to_owned()))
    }
}

/// Counts per label, for the dominant emotion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelCounts([u64; EmotionLabel::COUNT]);

impl Default for LabelCounts {
    fn default() -> Self {
        LabelCounts([0; EmotionLabel::COUNT])
    }
}

impl LabelCounts {
    pub fn add(&mut self, l: EmotionLabel) {
        self.0[l.index()] += 1;
    }

    /// How many events had `l`.
    pub fn get(&self, l: EmotionLabel) -> u64 {
        self.0[l.index()]
    }

    /// The most frequent label; ties go to the label listed first.
    pub fn dominant(&self) -> Option<EmotionLabel> {
        let mut best: Option<(EmotionLabel, u64)> = None;
        for l in EmotionLabel::ALL {
            let c = self.0[l.index()];
            if c > 0 && best.is_none_or(|(_, b)| c > b) {
                best = Some((l, c));
            }
        }
        best.map(|(l, _)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_but_unknown_has_in_range_coordinates_and_is_its_own_nearest() {
        for label in EmotionLabel::ALL {
            let Some(c) = label.coordinates() else {
                assert_eq!(label, EmotionLabel::Unknown);
                continue;
            };
            assert!((-1.0..=1.0).contains(&c.valence), "{label}");
            assert!((0.0..=1.0).contains(&c.arousal), "{label}");
            assert_eq!(EmotionLabel::nearest(c.valence, c.arousal), label);
            assert_eq!(label.as_str().parse::<EmotionLabel>(), Ok(label));
            assert_eq!(
                label.index(),
                EmotionLabel::ALL
                    .iter()
                    .position(|l| *l == label)
                    .unwrap_or(99)
            );
        }
    }

    #[test]
    fn table_agrees_with_the_analyzer_regions() {
        let sad = EmotionLabel::Sadness
            .coordinates()
            .expect("sadness is placed");
        assert!(
            sad.valence < -0.4 && sad.arousal < 0.3,
            "sadness: depression region"
        );
        for l in [EmotionLabel::Fear, EmotionLabel::Stress] {
            let c = l.coordinates().expect("placed");
            assert!(
                c.valence < -0.3 && c.arousal > 0.7,
                "{l}: high-stress region"
            );
        }
        let anx = EmotionLabel::Anxiety.coordinates().expect("placed");
        assert!((-0.6..=0.2).contains(&anx.valence) && anx.arousal > 0.6);
        let joy = EmotionLabel::Joy.coordinates().expect("placed");
        assert!(joy.valence > 0.5 && joy.arousal > 0.5);
        let calm = EmotionLabel::Calm.coordinates().expect("placed");
        assert!(calm.valence > 0.3 && calm.arousal < 0.4);
    }

    #[test]
    fn nearest_of_the_centre_is_neutral() {
        assert_eq!(EmotionLabel::nearest(0.0, 0.5), EmotionLabel::Neutral);
        assert_eq!(EmotionLabel::nearest(0.9, 0.7), EmotionLabel::Joy);
        assert_eq!(EmotionLabel::nearest(-0.8, 0.2), EmotionLabel::Sadness);
    }
}
