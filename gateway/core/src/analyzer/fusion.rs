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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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

/// A fused estimate (see the module docs). Small, `Copy` and allocation-free:
/// one is made for most events and travels with the event's outcome, so the
/// analyzer's throughput must not pay for it. Each source's part:
/// [`FusionSlots::contributions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedEstimate {
    pub valence: f64,
    pub arousal: f64,
    pub confidence: f64,
    /// In [0, 1]: 1 when every source says the same.
    pub agreement: f64,
    /// Bit [`Source::index`] set for each contributing source.
    sources: u8,
    /// The time of the newest reading.
    pub timestamp: DateTime<Utc>,
}

impl FusedEstimate {
    /// The label nearest the fused point (computed when asked: it costs more
    /// than the estimate itself).
    pub fn emotion_label(&self) -> EmotionLabel {
        EmotionLabel::nearest(self.valence, self.arousal)
    }

    /// The contributing sources, in source order.
    pub fn sources(&self) -> impl Iterator<Item = Source> + '_ {
        Source::ALL
            .into_iter()
            .filter(|s| self.sources & (1 << s.index()) != 0)
    }
}

impl Serialize for FusedEstimate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Parts<'a>(&'a FusedEstimate);
        impl Serialize for Parts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.sources().map(Source::as_str))
            }
        }
        let mut st = s.serialize_struct("FusedEstimate", 7)?;
        st.serialize_field("valence", &self.valence)?;
        st.serialize_field("arousal", &self.arousal)?;
        st.serialize_field("emotion_label", &self.emotion_label())?;
        st.serialize_field("confidence", &self.confidence)?;
        st.serialize_field("agreement", &self.agreement)?;
        st.serialize_field("sources", &Parts(self))?;
        st.serialize_field("timestamp", &self.timestamp)?;
        st.end()
    }
}

/// A reading's part in an estimate being made: the reading, its valence and
/// arousal weights, its chance of being right, its age in milliseconds.
type Part = (Reading, f64, f64, f64, i64);

/// A source's latest reading.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    valence: f64,
    arousal: f64,
    confidence: f64,
    /// Microseconds since the epoch: integer arithmetic, where chrono's date
    /// arithmetic cost more than the rest of the estimate.
    at_us: i64,
}

/// One user's latest reading per source. Short-lived by nature (a window of
/// seconds), so it is not checkpointed nor kept for evicted users: estimates
/// resume with the next readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FusionSlots {
    latest: [Option<Reading>; SOURCES],
}

impl FusionSlots {
    /// Take one event's reading (at `at`, the event's time) and return the new
    /// estimate, if two or more sources contribute.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        cfg: &FusionConfig,
        source: Source,
        valence: f64,
        arousal: f64,
        confidence: f64,
        at: DateTime<Utc>,
    ) -> Option<FusedEstimate> {
        if !cfg.enabled {
            return None;
        }
        let slot = &mut self.latest[source.index()];
        let at_us = at.timestamp_micros();
        // A late reading does not replace a newer one of the same source.
        if slot.is_none_or(|r| r.at_us <= at_us) {
            *slot = Some(Reading {
                valence,
                arousal,
                confidence,
                at_us,
            });
        }
        // A single-source user (a strap alone, say) is the common case: skip
        // the weighing.
        self.latest.iter().flatten().nth(1)?;
        self.estimate(cfg)
    }

    /// Each fresh source's part, and the weight sums; `None` with fewer than
    /// two sources within the window.
    fn weigh(&self, cfg: &FusionConfig) -> Option<Weighed> {
        if !cfg.enabled {
            return None;
        }
        let now_us = self.latest.iter().flatten().map(|r| r.at_us).max()?;
        let window_ms = cfg.window.num_milliseconds().max(1) as f64;
        let mut w = Weighed {
            now_us,
            parts: [None; SOURCES],
            n: 0,
            sv: 0.0,
            sa: 0.0,
        };
        for s in Source::ALL {
            let Some(r) = self.latest[s.index()] else {
                continue;
            };
            let age_ms = (now_us - r.at_us) / 1000;
            let fresh = 1.0 - age_ms as f64 / window_ms;
            if fresh <= 0.0 {
                continue;
            }
            let c = r.confidence.clamp(0.0, MAX_CONFIDENCE);
            let odds = c / (1.0 - c);
            let (rv, ra) = cfg.reliability[s.index()];
            let (wv, wa) = (rv * odds * fresh, ra * odds * fresh);
            w.parts[s.index()] = Some((r, wv, wa, c * (rv + ra) / 2.0 * fresh, age_ms));
            w.n += 1;
            w.sv += wv;
            w.sa += wa;
        }
        (w.n >= 2 && w.sv > 0.0 && w.sa > 0.0).then_some(w)
    }

    /// The estimate from each source's latest reading, the newest reading's
    /// time as "now"; `None` with fewer than two sources within the window.
    pub fn estimate(&self, cfg: &FusionConfig) -> Option<FusedEstimate> {
        let w = self.weigh(cfg)?;
        let (sv, sa) = (w.sv, w.sa);
        // One pass: weighted sums of values and squares (the spread is
        // E[x²] − E[x]²), and the chance that every reading is wrong.
        let (mut v1, mut v2, mut a1, mut a2, mut all_wrong) = (0.0, 0.0, 0.0, 0.0, 1.0);
        for (r, wv, wa, right, _) in w.parts.iter().flatten() {
            v1 += wv * r.valence;
            v2 += wv * r.valence * r.valence;
            a1 += wa * r.arousal;
            a2 += wa * r.arousal * r.arousal;
            all_wrong *= 1.0 - right;
        }
        let (valence, arousal) = (v1 / sv, a1 / sa);
        let spread_v = (v2 / sv - valence * valence).max(0.0).sqrt();
        let spread_a = (a2 / sa - arousal * arousal).max(0.0).sqrt();
        let agreement = (1.0 - (spread_v / 1.0 + spread_a / 0.5) / 2.0).clamp(0.0, 1.0);
        let confidence = ((1.0 - all_wrong) * agreement).min(MAX_CONFIDENCE);
        let sources = Source::ALL
            .iter()
            .filter(|s| w.parts[s.index()].is_some())
            .fold(0u8, |m, s| m | (1 << s.index()));
        Some(FusedEstimate {
            valence: round3(valence.clamp(-1.0, 1.0)),
            arousal: round3(arousal.clamp(0.0, 1.0)),
            confidence: round3(confidence),
            agreement: round3(agreement),
            sources,
            timestamp: DateTime::from_timestamp_micros(w.now_us).unwrap_or_default(),
        })
    }

    /// Each contributing source's part in [`FusionSlots::estimate`], in
    /// source order (empty when there is no estimate).
    pub fn contributions(&self, cfg: &FusionConfig) -> Vec<Contribution> {
        let Some(w) = self.weigh(cfg) else {
            return Vec::new();
        };
        Source::ALL
            .iter()
            .filter_map(|s| {
                let (r, wv, wa, _, age_ms) = w.parts[s.index()]?;
                Some(Contribution {
                    source: *s,
                    valence: r.valence,
                    arousal: r.arousal,
                    confidence: r.confidence,
                    valence_share: round3(wv / w.sv),
                    arousal_share: round3(wa / w.sa),
                    age_ms,
                })
            })
            .collect()
    }
}

/// The weighing of an estimate: each fresh source's part and the sums.
#[derive(Debug, Clone, Copy)]
struct Weighed {
    now_us: i64,
    parts: [Option<Part>; SOURCES],
    n: usize,
    sv: f64,
    sa: f64,
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
        let mut f = FusionSlots::default();
        assert!(
            f.update(&cfg, Source::Facial, 0.6, 0.4, 0.9, t(0))
                .is_none()
        );
        assert!(
            f.update(&cfg, Source::Facial, 0.6, 0.4, 0.9, t(1))
                .is_none(),
            "still one source"
        );
        let e = f
            .update(&cfg, Source::Voice, 0.6, 0.4, 0.9, t(2))
            .expect("two sources");
        assert_eq!((e.valence, e.arousal), (0.6, 0.4));
        assert_eq!(e.agreement, 1.0);
        assert_eq!(
            e.sources().collect::<Vec<_>>(),
            [Source::Voice, Source::Facial]
        );
        // At equal confidence, face weighs more on valence, voice on arousal.
        let parts = f.contributions(&cfg);
        let share = |s: Source| *parts.iter().find(|c| c.source == s).expect("part");
        assert!(share(Source::Facial).valence_share > share(Source::Voice).valence_share);
        assert!(share(Source::Voice).arousal_share > share(Source::Facial).arousal_share);
        assert!(
            e.confidence > 0.9,
            "two agreeing sources beat either: {e:?}"
        );
        assert_eq!(f.estimate(&cfg), Some(e));
        let json = serde_json::to_value(e).expect("json");
        assert_eq!(
            json["sources"],
            serde_json::json!(["voice", "facial"]),
            "{json}"
        );
        assert_eq!(json["sources"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn disagreement_lowers_confidence_and_old_readings_drop_out() {
        let cfg = FusionConfig::default();
        let mut f = FusionSlots::default();
        f.update(&cfg, Source::Facial, 0.8, 0.3, 0.9, t(0));
        let agree = f
            .update(&cfg, Source::Survey, 0.7, 0.3, 0.9, t(1))
            .expect("fused");
        let mut g = FusionSlots::default();
        g.update(&cfg, Source::Facial, 0.8, 0.3, 0.9, t(0));
        let clash = g
            .update(&cfg, Source::Survey, -0.8, 0.9, 0.9, t(1))
            .expect("fused");
        assert!(clash.agreement < agree.agreement, "{clash:?} {agree:?}");
        assert!(clash.confidence < agree.confidence);
        // 40 s later the face reading is outside the 30 s window.
        assert!(
            f.update(&cfg, Source::Survey, 0.7, 0.3, 0.9, t(41))
                .is_none()
        );
        // Late readings do not replace newer ones.
        f.update(&cfg, Source::Facial, 0.1, 0.1, 0.9, t(40));
        let e = f
            .update(&cfg, Source::Facial, -0.9, 0.9, 0.9, t(5))
            .expect("fused");
        assert!(e.sources().any(|s| s == Source::Facial));
        let parts = f.contributions(&cfg);
        let face = parts
            .iter()
            .find(|c| c.source == Source::Facial)
            .expect("face");
        assert_eq!(face.valence, 0.1);
    }

    #[test]
    fn disabled_fusion_makes_nothing() {
        let cfg = FusionConfig {
            enabled: false,
            ..FusionConfig::default()
        };
        let mut f = FusionSlots::default();
        f.update(&cfg, Source::Facial, 0.6, 0.4, 0.9, t(0));
        assert!(f.update(&cfg, Source::Voice, 0.6, 0.4, 0.9, t(0)).is_none());
        assert_eq!(f, FusionSlots::default(), "nothing kept");
    }
}
