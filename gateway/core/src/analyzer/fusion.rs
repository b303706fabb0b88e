//! Multi-modal fusion: one estimate of a user's valence and arousal from the
//! latest event of each source (face, voice, body, words…) within a window.
//!
//! # The estimate
//!
//! For each source, only its latest event at most [`FusionConfig::window`] old
//! counts. Its weight on each dimension is
//!
//! ```text
//! w = reliability(source, dimension) × c / (1 − c) × (1 − age / window)
//! ```
//!
//! - `c / (1 − c)`: the event's confidence (the middle of its source's
//!   documented range when the event has none) read as odds of being right, so a
//!   0.95 reading weighs about twice a 0.9 one and six times a 0.75 one
//!   (precision weighting: a reading's error shrinks as its confidence grows);
//!   `c` is capped at 0.99.
//! - `reliability`: how well the source measures that dimension (defaults in
//!   [`FusionConfig::default`], with their reasons);
//! - the age factor: an old reading says less about now.
//!
//! The fused valence and arousal are the weighted means. **Agreement** is one
//! minus the weighted spread of the readings around them, each dimension
//! scaled to its half-range (valence 1, arousal 0.5), averaged, clamped to
//! [0, 1]. The fused **confidence** is the chance that at least one reading is
//! right, `1 − Π(1 − c·r̄·age)` with `r̄` the source's mean reliability,
//! times the agreement, and at most 0.99: more sources raise it, sources that
//! disagree lower it.
//!
//! An estimate is made only when at least two sources contribute: with one
//! source there is nothing to fuse, and the event itself is the estimate.
//!
//! Fused estimates are their own stream: they are never fed back into the
//! per-event analysis, the baselines or the credit history, which would count
//! the same readings twice.

use chrono::{DateTime, Duration, Utc};
use hashbrown::HashMap;
use serde::Serialize;

use crate::label::EmotionLabel;
use crate::num::round3;
use crate::source::Source;

/// Number of sources (slots per user).
const SOURCES: usize = Source::ALL.len();

/// Highest confidence read as odds (0.99 → 99).
const MAX_CONFIDENCE: f64 = 0.99;

/// How sources are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct FusionConfig {
    /// Off: no estimates are made.
    pub enabled: bool,
    /// Readings older than this (relative to the newest) are left out.
    pub window: Duration,
    /// Per source (by [`Source::index`]): reliability for valence and for
    /// arousal, each in (0, 1].
    pub reliability: [(f64, f64); SOURCES],
}

impl FusionConfig {
    /// The default reliability of `s` for (valence, arousal), and why.
    ///
    /// - text (1.0, 0.5): words say clearly how good or bad something feels,
    ///   much less how activated the writer is (on EmoBank our lexicon
    ///   reaches r = 0.63 on valence, 0.45 on arousal; human raters agree
    ///   less on arousal too).
    /// - voice (0.6, 1.0): prosody (pitch, energy, rate) carries arousal
    ///   well and valence poorly — the consistent finding of speech emotion
    ///   recognition.
    /// - facial (1.0, 0.6): expressions (AU12 smile, AU4 frown) separate
    ///   pleasant from unpleasant; arousal is only partly visible.
    /// - physiological (0.3, 1.0), biometric (0.3, 0.9): heart rate and skin
    ///   conductance track autonomic arousal; they barely tell good from bad
    ///   excitement.
    /// - survey (1.0, 1.0): self-report is the reference both are judged by.
    /// - behavioral (0.5, 0.5), contextual (0.3, 0.3): indirect signs.
    pub const fn default_reliability(s: Source) -> (f64, f64) {
        match s {
            Source::Text => (1.0, 0.5),
            Source::Voice => (0.6, 1.0),
            Source::Facial => (1.0, 0.6),
            Source::Physiological => (0.3, 1.0),
            Source::Survey => (1.0, 1.0),
            Source::Biometric => (0.3, 0.9),
            Source::Behavioral => (0.5, 0.5),
            Source::Contextual => (0.3, 0.3),
        }
    }
}

impl Default for FusionConfig {
    fn default() -> Self {
        let mut reliability = [(1.0, 1.0); SOURCES];
        for s in Source::ALL {
            reliability[s.index()] = Self::default_reliability(s);
        }
        FusionConfig {
            enabled: true,
            window: Duration::seconds(30),
            reliability,
        }
    }
}

/// One source's part in an estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    pub source: Source,
    pub valence: f64,
    pub arousal: f64,
    pub confidence: f64,
    /// Its share of the valence and arousal weight, in [0, 1].
    pub valence_share: f64,
    pub arousal_share: f64,
    /// How old the reading was at the estimate.
    pub age_ms: i64,
}

/// A fused estimate (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedEstimate {
    pub user_id: String,
    pub valence: f64,
    pub arousal: f64,
    /// The label nearest the fused point.
    pub emotion_label: EmotionLabel,
    pub confidence: f64,
    /// In [0, 1]: 1 when every source says the same.
    pub agreement: f64,
    pub sources: Vec<Contribution>,
    /// The time of the newest reading.
    pub timestamp: DateTime<Utc>,
}

/// A source's latest reading.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    valence: f64,
    arousal: f64,
    confidence: f64,
    at: DateTime<Utc>,
}

/// One user's latest reading per source and latest estimate.
#[derive(Debug, Clone, Default, PartialEq)]
struct UserFusion {
    latest: [Option<Reading>; SOURCES],
    estimate: Option<FusedEstimate>,
}

/// Every user's fusion state. Short-lived by nature (a window of seconds), so
/// it is not checkpointed: after a restart estimates resume with the next
/// readings.
#[derive(Debug, Clone, Default)]
pub struct Fusion {
    users: HashMap<String, UserFusion>,
}

impl Fusion {
    /// Take one event's reading (at `at`, the event's time) and return the new
    /// estimate, if two or more sources contribute.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        cfg: &FusionConfig,
        user_id: &str,
        source: Source,
        valence: f64,
        arousal: f64,
        confidence: f64,
        at: DateTime<Utc>,
    ) -> Option<FusedEstimate> {
        if !cfg.enabled {
            return None;
        }
        let u = self.users.entry_ref(user_id).or_default();
        let slot = &mut u.latest[source.index()];
        // A late reading does not replace a newer one of the same source.
        if slot.is_none_or(|r| r.at <= at) {
            *slot = Some(Reading {
                valence,
                arousal,
                confidence,
                at,
            });
        }
        let estimate = estimate(cfg, user_id, &u.latest)?;
        u.estimate = Some(estimate.clone());
        Some(estimate)
    }

    /// A user's latest estimate.
    pub fn latest(&self, user_id: &str) -> Option<&FusedEstimate> {
        self.users.get(user_id)?.estimate.as_ref()
    }

    /// Forget a user (evicted or erased).
    pub fn forget(&mut self, user_id: &str) {
        self.users.remove(user_id);
    }

    /// Users with state.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The estimate from each source's latest reading, newest reading's time as
/// "now"; `None` with fewer than two sources within the window.
fn estimate(
    cfg: &FusionConfig,
    user_id: &str,
    latest: &[Option<Reading>; SOURCES],
) -> Option<FusedEstimate> {
    let now = latest.iter().flatten().map(|r| r.at).max()?;
    let window_ms = cfg.window.num_milliseconds().max(1) as f64;
    struct Part {
        source: Source,
        r: Reading,
        wv: f64,
        wa: f64,
        right: f64,
        age_ms: i64,
    }
    let parts: Vec<Part> = Source::ALL
        .iter()
        .filter_map(|s| {
            let r = latest[s.index()]?;
            let age_ms = (now - r.at).num_milliseconds();
            let fresh = 1.0 - age_ms as f64 / window_ms;
            if fresh <= 0.0 {
                return None;
            }
            let c = r.confidence.clamp(0.0, MAX_CONFIDENCE);
            let odds = c / (1.0 - c);
            let (rv, ra) = cfg.reliability[s.index()];
            Some(Part {
                source: *s,
                r,
                wv: rv * odds * fresh,
                wa: ra * odds * fresh,
                right: c * (rv + ra) / 2.0 * fresh,
                age_ms,
            })
        })
        .collect();
    if parts.len() < 2 {
        return None;
    }
    let (sv, sa): (f64, f64) = parts
        .iter()
        .fold((0.0, 0.0), |(v, a), p| (v + p.wv, a + p.wa));
    if sv <= 0.0 || sa <= 0.0 {
        return None;
    }
    let valence = parts.iter().map(|p| p.wv * p.r.valence).sum::<f64>() / sv;
    let arousal = parts.iter().map(|p| p.wa * p.r.arousal).sum::<f64>() / sa;
    let spread_v = (parts
        .iter()
        .map(|p| p.wv * (p.r.valence - valence).powi(2))
        .sum::<f64>()
        / sv)
        .sqrt();
    let spread_a = (parts
        .iter()
        .map(|p| p.wa * (p.r.arousal - arousal).powi(2))
        .sum::<f64>()
        / sa)
        .sqrt();
    let agreement = (1.0 - (spread_v / 1.0 + spread_a / 0.5) / 2.0).clamp(0.0, 1.0);
    let all_wrong: f64 = parts.iter().map(|p| 1.0 - p.right).product();
    let confidence = ((1.0 - all_wrong) * agreement).min(MAX_CONFIDENCE);
    Some(FusedEstimate {
        user_id: user_id.to_owned(),
        valence: round3(valence.clamp(-1.0, 1.0)),
        arousal: round3(arousal.clamp(0.0, 1.0)),
        emotion_label: EmotionLabel::nearest(valence, arousal),
        confidence: round3(confidence),
        agreement: round3(agreement),
        sources: parts
            .iter()
            .map(|p| Contribution {
                source: p.source,
                valence: p.r.valence,
                arousal: p.r.arousal,
                confidence: p.r.confidence,
                valence_share: round3(p.wv / sv),
                arousal_share: round3(p.wa / sa),
                age_ms: p.age_ms,
            })
            .collect(),
        timestamp: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("time")
    }

    #[test]
    fn one_source_is_not_fused_and_two_agreeing_sources_are() {
        let cfg = FusionConfig::default();
        let mut f = Fusion::default();
        assert!(
            f.update(&cfg, "u", Source::Facial, 0.6, 0.4, 0.9, t(0))
                .is_none()
        );
        assert!(
            f.update(&cfg, "u", Source::Facial, 0.6, 0.4, 0.9, t(1))
                .is_none(),
            "still one source"
        );
        let e = f
            .update(&cfg, "u", Source::Voice, 0.6, 0.4, 0.9, t(2))
            .expect("two sources");
        assert_eq!((e.valence, e.arousal), (0.6, 0.4));
        assert_eq!(e.agreement, 1.0);
        assert_eq!(e.sources.len(), 2);
        // At equal confidence, face weighs more on valence, voice on arousal.
        let share = |s: Source| {
            e.sources
                .iter()
                .find(|c| c.source == s)
                .expect("part")
                .clone()
        };
        assert!(share(Source::Facial).valence_share > share(Source::Voice).valence_share);
        assert!(share(Source::Voice).arousal_share > share(Source::Facial).arousal_share);
        assert!(
            e.confidence > 0.9,
            "two agreeing sources beat either: {e:?}"
        );
        assert_eq!(f.latest("u"), Some(&e));
    }

    #[test]
    fn disagreement_lowers_confidence_and_old_readings_drop_out() {
        let cfg = FusionConfig::default();
        let mut f = Fusion::default();
        f.update(&cfg, "u", Source::Facial, 0.8, 0.3, 0.9, t(0));
        let agree = f
            .update(&cfg, "u", Source::Survey, 0.7, 0.3, 0.9, t(1))
            .expect("fused");
        let mut g = Fusion::default();
        g.update(&cfg, "u", Source::Facial, 0.8, 0.3, 0.9, t(0));
        let clash = g
            .update(&cfg, "u", Source::Survey, -0.8, 0.9, 0.9, t(1))
            .expect("fused");
        assert!(clash.agreement < agree.agreement, "{clash:?} {agree:?}");
        assert!(clash.confidence < agree.confidence);
        // 40 s later the face reading is outside the 30 s window.
        assert!(
            f.update(&cfg, "u", Source::Survey, 0.7, 0.3, 0.9, t(41))
                .is_none()
        );
        // Late readings do not replace newer ones.
        f.update(&cfg, "u", Source::Facial, 0.1, 0.1, 0.9, t(40));
        let e = f
            .update(&cfg, "u", Source::Facial, -0.9, 0.9, 0.9, t(5))
            .expect("fused");
        let face = e
            .sources
            .iter()
            .find(|c| c.source == Source::Facial)
            .expect("face");
        assert_eq!(face.valence, 0.1);
        f.forget("u");
        assert!(f.latest("u").is_none());
    }

    #[test]
    fn disabled_fusion_makes_nothing() {
        let cfg = FusionConfig {
            enabled: false,
            ..FusionConfig::default()
        };
        let mut f = Fusion::default();
        f.update(&cfg, "u", Source::Facial, 0.6, 0.4, 0.9, t(0));
        assert!(
            f.update(&cfg, "u", Source::Voice, 0.6, 0.4, 0.9, t(0))
                .is_none()
        );
        assert!(f.is_empty());
    }
}
