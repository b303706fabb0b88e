//! FACS prototype matching: which emotion's action-unit configuration a frame
//! resembles, tolerating missing and extra units.
//!
//! # The prototype table
//!
//! Every emotion has one or more *variants*, each a set of **required** units
//! (the configuration as published) and **optional** units (units that often
//! accompany it; present, they count for the variant, absent, they cost
//! nothing). Sources:
//!
//! * EMFACS-7 (Friesen and Ekman 1983), as tabulated in PROTOTYPES.md;
//! * the FACS 2002 Investigator's Guide (Ekman, Friesen and Hager 2002):
//!   prototypes and major variants per emotion;
//! * Du, Tao and Martinez (2014), *Compound facial expressions of emotion*,
//!   PNAS 111(15) E1454–E1462, Table 1: the units seen in more than 70 % of
//!   subjects (required here) and the inter-subject variations (optional).
//!
//! # The score
//!
//! Each unit `u` has a diagnostic weight `w(u)` ([`weight`]): AU12, AU9, AU20,
//! AU14 and AU15 say much about which emotion it is, AU25 (lips part) little,
//! AU45 (blink) almost nothing. A frame's units are first made *relative*
//! (`r(u) = e(u) / max e`, with `e` the intensity above a 0.25 noise floor), so
//! the configuration is judged apart from how strong it is. Then, per variant:
//!
//! ```text
//! recall    = (Σ_req w·r + Σ_opt w·r) / (Σ_req w + Σ_opt w·r)
//! precision = (Σ_req w·r + Σ_opt w·r) / Σ_all observed w·r
//! F1        = 2·precision·recall / (precision + recall)
//! ```
//!
//! A missing required unit lowers recall by its weight, an extra unit lowers
//! precision by its weight and intensity; an emotion's score is its best
//! variant's F1. How strong the expression is overall (*expressiveness*, the
//! strongest diagnostic unit, saturating at FACS level B) gates the emotions
//! against `neutral`.

use emotion_plugin_sdk::num::larger;

/// Action units are numbered 1–99 (the host validates that range).
pub const MAX_AU: usize = 100;

/// The seven emotions with FACS prototypes, in the gateway's label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Emotion {
    Joy,
    Sadness,
    Surprise,
    Fear,
    Anger,
    Disgust,
    Contempt,
}

impl Emotion {
    pub const ALL: [Emotion; 7] = [
        Emotion::Joy,
        Emotion::Sadness,
        Emotion::Surprise,
        Emotion::Fear,
        Emotion::Anger,
        Emotion::Disgust,
        Emotion::Contempt,
    ];

    /// The gateway's label (`happiness` is `joy` there).
    pub const fn label(self) -> &'static str {
        match self {
            Emotion::Joy => "joy",
            Emotion::Sadness => "sadness",
            Emotion::Surprise => "surprise",
            Emotion::Fear => "fear",
            Emotion::Anger => "anger",
            Emotion::Disgust => "disgust",
            Emotion::Contempt => "contempt",
        }
    }

    pub fn from_label(label: &str) -> Option<Emotion> {
        Emotion::ALL.into_iter().find(|e| e.label() == label)
    }

    /// The label's place on the gateway's circumplex (gateway/core/src/label.rs:
    /// valence = r·cos θ, arousal = 0.5 + 0.5·r·sin θ, θ and r from its table).
    pub fn coordinates(self) -> (f64, f64) {
        let (deg, r): (f64, f64) = match self {
            Emotion::Joy => (24.9, 0.85),
            Emotion::Sadness => (207.5, 0.90),
            Emotion::Surprise => (69.8, 0.80),
            Emotion::Fear => (116.6, 0.85),
            Emotion::Anger => (99.8, 0.80),
            Emotion::Disgust => (123.0, 0.70),
            Emotion::Contempt => (141.0, 0.55),
        };
        let t = deg.to_radians();
        (r * t.cos(), 0.5 + 0.5 * r * t.sin())
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One published configuration of an emotion.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub emotion: Emotion,
    /// Short name, e.g. `"6+12"`.
    pub name: &'static str,
    /// Where it comes from.
    pub source: &'static str,
    pub required: &'static [u8],
    pub optional: &'static [u8],
}

const fn v(
    emotion: Emotion,
    name: &'static str,
    source: &'static str,
    required: &'static [u8],
    optional: &'static [u8],
) -> Variant {
    Variant {
        emotion,
        name,
        source,
        required,
        optional,
    }
}

use Emotion::*;

const EMFACS: &str = "EMFACS-7";
const IG: &str = "FACS 2002 Investigator's Guide";
const DU: &str = "Du, Tao & Martinez 2014";
const CKPLUS: &str = "CK+ criteria (Lucey et al. 2010)";

/// The prototype table. Where EMFACS and the Investigator's Guide give the
/// same configuration it appears once.
pub const VARIANTS: &[Variant] = &[
    // Happiness.
    v(Joy, "6+12", "EMFACS-7; FACS 2002 IG", &[6, 12], &[25, 26]),
    v(Joy, "12+25", DU, &[12, 25], &[6, 26]),
    // Sadness.
    v(
        Sadness,
        "1+4+15",
        "EMFACS-7; FACS 2002 IG",
        &[1, 4, 15],
        &[17],
    ),
    v(Sadness, "1+4+11+15", IG, &[1, 4, 11, 15], &[17]),
    v(Sadness, "6+15", IG, &[6, 15], &[1, 4, 17]),
    v(Sadness, "4+15", DU, &[4, 15], &[1, 6, 11, 17]),
    // Surprise (5B: a slight upper-lid raise; intensities do not enter the
    // configuration).
    v(
        Surprise,
        "1+2+5+26",
        "EMFACS-7; FACS 2002 IG",
        &[1, 2, 5, 26],
        &[25],
    ),
    v(Surprise, "1+2+5+27", IG, &[1, 2, 5, 27], &[25]),
    v(Surprise, "1+2+25+26", DU, &[1, 2, 25, 26], &[5]),
    // Fear.
    v(
        Fear,
        "1+2+4+5+7+20+26",
        EMFACS,
        &[1, 2, 4, 5, 7, 20, 26],
        &[25],
    ),
    v(Fear, "1+2+4+5+20+25", IG, &[1, 2, 4, 5, 20, 25], &[7, 26]),
    v(Fear, "1+2+4+5+20+26", IG, &[1, 2, 4, 5, 20, 26], &[7, 25]),
    v(Fear, "1+2+4+5+20+27", IG, &[1, 2, 4, 5, 20, 27], &[7, 25]),
    v(Fear, "1+4+20+25", DU, &[1, 4, 20, 25], &[2, 5, 26]),
    // Anger.
    v(
        Anger,
        "4+5+7+23",
        "EMFACS-7; FACS 2002 IG",
        &[4, 5, 7, 23],
        &[17, 24],
    ),
    v(
        Anger,
        "4+5+7+10+22+23+25/26",
        IG,
        &[4, 5, 7, 10, 22, 23],
        &[25, 26],
    ),
    v(Anger, "4+5+7+17+23", IG, &[4, 5, 7, 17, 23], &[]),
    v(Anger, "4+5+7+17+24", IG, &[4, 5, 7, 17, 24], &[]),
    v(Anger, "4+7+24", DU, &[4, 7, 24], &[10, 17, 23]),
    // Disgust.
    v(Disgust, "9+15+16", EMFACS, &[9, 15, 16], &[25, 26]),
    v(Disgust, "9(+16/17)", IG, &[9], &[16, 17, 25]),
    v(Disgust, "10(+16/17)", IG, &[10], &[16, 17, 25]),
    v(Disgust, "9+10+17", DU, &[9, 10, 17], &[4, 24]),
    // AU9 itself lowers the inner brows and narrows the eyes from below
    // (FACS 2002 Manual, AU9's appearance changes), so coders and detectors
    // often add AU4 and AU7 to a nose wrinkle; with AU9 and without AU23/24
    // it is disgust, not anger (the CK+ criteria, Lucey et al. 2010: disgust
    // needs AU9 or AU10, anger needs AU23 and AU24).
    v(Disgust, "4+7+9", CKPLUS, &[4, 7, 9], &[10, 16, 17, 25]),
    // Contempt: R12A+R14A, unilateral. Laterality is not in the wire form, so
    // the dimpler (AU14) carries it, with a slight lip-corner pull.
    v(Contempt, "12A+14A", EMFACS, &[12, 14], &[]),
    v(Contempt, "14", EMFACS, &[14], &[12]),
    // AU14 belongs to contempt alone; with the lower-face units often seen
    // with it (AU15, AU17) it stays contempt, as in the CK+ criteria (Lucey
    // et al. 2010: contempt needs AU14, unilateral or bilateral; sadness
    // needs 1+4+15, 11 or 6+15), not the sadness of AU15. A variant of its
    // own (rather than 15 and 17 optional to "14") keeps sadness with an
    // extra AU14 (6+15+14) sadness.
    v(Contempt, "14+15+17", CKPLUS, &[14, 15, 17], &[12, 24]),
];

/// Diagnostic weight of an action unit: how much its presence or absence
/// tells which emotion it is. Units in no prototype get 0.3 (they are
/// expressions, and an unexplained one should cost a little precision);
/// eye closure and blinks almost nothing; head and eye position codes
/// (50 and above) nothing.
pub fn weight(au: usize) -> f64 {
    match au {
        12 => 1.5,
        9 | 20 => 1.3,
        4 | 14 | 15 => 1.2,
        10 => 1.1,
        1 | 2 | 5 | 23 | 24 => 1.0,
        6 => 0.9,
        27 => 0.9,
        7 | 16 | 17 => 0.8,
        22 | 26 => 0.7,
        11 => 0.6,
        25 => 0.4,
        43 => 0.2,
        45 | 46 => 0.1,
        50.. => 0.0,
        _ => 0.3,
    }
}

/// Units that express something (used for expressiveness): not eye closure,
/// blinks or position codes.
fn expressive(au: usize) -> bool {
    weight(au) >= 0.3
}

/// Intensity (0–5) above which a unit counts at all: OpenFace's regressors
/// leave small non-zero values on a neutral face.
pub const NOISE_FLOOR: f64 = 0.25;
/// Evidence (intensity minus floor) at FACS level B, where a unit is clearly on.
const LEVEL_B: f64 = 2.0 - NOISE_FLOOR;
/// A presence-only unit counts as if coded at intensity 2.5 (between B and C).
pub const PRESENCE_INTENSITY: f64 = 2.5;

/// A frame's units as evidence per AU number.
#[derive(Debug, Clone)]
pub struct Units {
    /// Intensity 0–5 per AU (presence mapped to [`PRESENCE_INTENSITY`]).
    pub intensity: [f64; MAX_AU],
    /// AU numbers with intensity above the noise floor, ascending.
    pub active: Vec<u8>,
}

impl Units {
    pub fn new(intensity: [f64; MAX_AU]) -> Self {
        let active = (1..MAX_AU)
            .filter(|&u| intensity[u] > NOISE_FLOOR)
            .map(|u| u as u8)
            .collect();
        Units { intensity, active }
    }

    /// Intensity above the noise floor.
    fn evidence(&self, au: usize) -> f64 {
        // 0 for NaN, as `f64::max`.
        larger(0.0, self.intensity[au] - NOISE_FLOOR)
    }

    /// How strong the expression is, 0–1: the strongest expressive unit
    /// (scaled by its weight up to 0.8, so lips apart alone is not a strong
    /// expression), saturating at level B.
    pub fn expressiveness(&self) -> f64 {
        self.active
            .iter()
            .map(|&u| usize::from(u))
            .filter(|&u| expressive(u))
            .map(|u| (self.evidence(u) / LEVEL_B).min(1.0) * (weight(u) / 0.8).min(1.0))
            .fold(0.0, larger)
    }
}

/// The best variant of each emotion and its score.
#[derive(Debug, Clone, Copy)]
pub struct Match {
    pub emotion: Emotion,
    pub variant: &'static Variant,
    /// F1 of the configuration, 0–1.
    pub f1: f64,
}

/// Score every emotion against the frame's configuration; best first.
pub fn score(units: &Units) -> [Match; 7] {
    // Relative evidence: the configuration apart from its overall strength.
    let mut rel = [0.0f64; MAX_AU];
    let max_e = units
        .active
        .iter()
        .map(|&u| units.evidence(usize::from(u)))
        .fold(0.0, larger);
    let mut total = 0.0;
    if max_e > 0.0 {
        for &u in &units.active {
            let u = usize::from(u);
            rel[u] = units.evidence(u) / max_e;
            total += weight(u) * rel[u];
        }
    }
    let mut best: [Option<Match>; 7] = [None; 7];
    for variant in VARIANTS {
        let f1 = variant_f1(variant, &rel, total);
        let slot = &mut best[variant.emotion.index()];
        if slot.is_none_or(|m| f1 > m.f1) {
            *slot = Some(Match {
                emotion: variant.emotion,
                variant,
                f1,
            });
        }
    }
    let mut out = Emotion::ALL.map(|e| {
        best[e.index()].unwrap_or(Match {
            emotion: e,
            variant: &VARIANTS[0],
            f1: 0.0,
        })
    });
    out.sort_by(|a, b| b.f1.total_cmp(&a.f1));
    out
}

/// Share of an optional unit's weight in recall.
const OPTIONAL_RECALL: f64 = 0.5;

fn variant_f1(v: &Variant, rel: &[f64; MAX_AU], total: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    let mut required = 0.0;
    let mut covered = 0.0;
    let mut optional = 0.0;
    for &u in v.required {
        let w = weight(usize::from(u));
        required += w;
        covered += w * rel[usize::from(u)];
    }
    for &u in v.optional {
        optional += weight(usize::from(u)) * rel[usize::from(u)];
    }
    // Optional units are explained (precision), but say less than required
    // ones about how complete the configuration is (recall): half weight.
    let explained = covered + optional;
    let recall = (covered + OPTIONAL_RECALL * optional) / (required + OPTIONAL_RECALL * optional);
    let precision = explained / total;
    if recall + precision <= 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(list: &[(u8, f64)]) -> Units {
        let mut i = [0.0; MAX_AU];
        for &(u, x) in list {
            i[usize::from(u)] = x;
        }
        Units::new(i)
    }

    #[test]
    fn exact_prototype_scores_one() {
        let s = score(&units(&[(6, 3.0), (12, 3.0)]));
        assert_eq!(s[0].emotion, Emotion::Joy);
        assert!((s[0].f1 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn relative_intensity_weights_extra_units() {
        let weak_extra = score(&units(&[(6, 4.0), (12, 4.0), (4, 0.8)]));
        let strong_extra = score(&units(&[(6, 4.0), (12, 4.0), (4, 4.0)]));
        assert_eq!(weak_extra[0].emotion, Emotion::Joy);
        assert!(weak_extra[0].f1 > strong_extra[0].f1);
    }

    #[test]
    fn table_is_well_formed() {
        for v in VARIANTS {
            assert!(!v.required.is_empty(), "{}", v.name);
            for u in v.required.iter().chain(v.optional) {
                assert!((1..50).contains(u) && weight(usize::from(*u)) > 0.0);
                assert!(
                    !(v.required.contains(u) && v.optional.contains(u)),
                    "{}: AU{u} twice",
                    v.name
                );
            }
        }
    }
}
