//! From cues to arousal, valence, confidence and a label.
//!
//! **Arousal** is a weighted mean of the cues' z-scores against the
//! speaker's reference ([`crate::baseline`]), squashed by a logistic:
//!
//! ```text
//! s       = Σ w_c · limit(z_c) / Σ w_c         (over the cues present; limit:
//!           z up to ±2, then 2 + ln(|z| − 1), signed)
//! arousal = 1 / (1 + e^(−1.5·s))
//! ```
//!
//! with weights F0 level 0.25, loudness 0.25, F0 range 0.20, speech rate
//! 0.15, spectral balance 0.15: all raise arousal. The most
//! speaker-dependent cues count less while the speaker's baseline is cold
//! (F0 level at half weight, recorded level at 70 %; see [`cold_discount`]). These are the cues with
//! consistent arousal effects across the reviews of Scherer (2003) and
//! Juslin & Laukka (2003) and in Banse & Scherer (1996): high-arousal
//! emotions (anger, fear, joy) raise F0, F0 variability, intensity, rate and
//! high-frequency energy; low-arousal ones (sadness, tenderness, boredom)
//! lower them all.
//!
//! **Valence** is weakly coded in the voice (Scherer 2003 calls its vocal
//! differentiation poor), so it gets a small range, |valence| ≤ 0.35, and
//! only cues with a documented direction:
//!
//! * at raised arousal, high-frequency energy *beyond* what the arousal
//!   explains points to anger rather than joy, and F0 variability beyond it
//!   to joy rather than anger or fear (Juslin & Laukka 2003, table 7;
//!   Banse & Scherer 1996): `g·[0.5·h_r·(z_range − s) − 0.5·h_a·(z_alpha − s)]`
//!   with `g = clip(s, 0, 1)` and `h` the warmth of that cue's baseline
//!   (0 cold, 1 warm): "beyond what the arousal explains" is only meaningful
//!   against the speaker's own reference;
//! * voice regularity (high HNR, low jitter and shimmer) goes with the
//!   positive emotions, irregularity with sadness, anger and fear:
//!   `0.4·z_hnr − 0.3·z_jitter − 0.3·z_shimmer` (prosody input only: the PCM
//!   path does not measure cycle-to-cycle perturbation);
//!
//! `valence = 0.35·tanh(v / 2)`.
//!
//! **Confidence** stays within the voice source's range 0.70–0.90:
//! `0.70 + 0.20·q`, where `q` multiplies the input quality (PCM: duration,
//! voicing, clipping, noise; see [`audio_quality`]), the share of the
//! arousal weight that was measured, and a warm-up factor (0.85 with
//! population norms only, 1.0 with a warm speaker baseline).

use crate::baseline::{Cue, Reference, Speaker, W_MAX, reference};
use crate::features::Analysis;

/// Lowest and highest confidence this plugin gives.
pub const CONFIDENCE_MIN: f64 = 0.70;
pub const CONFIDENCE_MAX: f64 = 0.90;
/// Logistic gain from the arousal score to arousal.
pub const AROUSAL_GAIN: f64 = 1.5;
/// Largest |valence|.
pub const VALENCE_MAX: f64 = 0.35;
/// z-scores are unchanged up to ±this, then compressed logarithmically.
const Z_KNEE: f64 = 2.0;

/// Compress a z-score beyond ±[`Z_KNEE`] so that one extreme cue cannot
/// dominate the mean, without letting it stop counting: past the knee,
/// `knee + ln(1 + |z| − knee)` rises with slope 1 / (|z| − knee + 1), still
/// a third at z = 4 and a quarter at z = 5 (z = 6 gives 3.6, z = 10 gives
/// 4.2). A bounded limit (`2 + tanh(|z| − 2)`, towards 3, before) counted a
/// fast rate at 3.3–3.9 scales above the norm at a quarter to a twelfth, so
/// the slight narrowing of F0 range and level that comes with faster speech
/// outweighed a further rise in rate and arousal fell as speech got faster.
fn limit_z(z: f64) -> f64 {
    let a = z.abs();
    if a <= Z_KNEE {
        z
    } else {
        z.signum() * (Z_KNEE + (a - Z_KNEE).ln_1p())
    }
}

/// A cue's weight in the arousal score.
pub fn arousal_weight(cue: Cue) -> f64 {
    match cue {
        Cue::F0Level => 0.25,
        Cue::LoudnessDbfs | Cue::LoudnessSpl => 0.25,
        Cue::F0Range => 0.20,
        Cue::SpeechRate => 0.15,
        Cue::AlphaRatio => 0.15,
        Cue::Jitter | Cue::Shimmer | Cue::Hnr => 0.0,
    }
}

/// How much of a cue's arousal weight is withheld while the speaker's
/// baseline is cold (scaled down as it warms): F0 level depends most on who
/// speaks (sex, age), the recorded level on the device's gain.
pub fn cold_discount(cue: Cue) -> f64 {
    match cue {
        Cue::F0Level => 0.5,
        Cue::LoudnessDbfs => 0.3,
        _ => 0.0,
    }
}

/// Sum of the arousal weights of a complete set of cues (one loudness).
const FULL_WEIGHT: f64 = 1.0;

/// What the plugin concludes from one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub arousal: f64,
    pub valence: f64,
    pub confidence: f64,
    pub label: Option<&'static str>,
    /// The arousal score s (weighted mean z).
    pub score: f64,
    /// Each cue's z-score against its reference.
    pub z: Vec<(Cue, f64)>,
    /// Mean weight of the speaker's own baseline over the arousal cues.
    pub warmth: f64,
}

/// Input quality of a PCM analysis, each factor in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioQuality {
    /// Seconds of speaking time: 0 at 0.3 s, 1 from 2 s.
    pub duration: f64,
    /// Voiced share of active frames: 0 at 10 %, 1 from 40 %.
    pub voicing: f64,
    /// Clipped samples: 1 up to 0.05 %, 0 from 2 %.
    pub clipping: f64,
    /// Signal-to-noise: 0 at 5 dB, 1 from 25 dB.
    pub noise: f64,
}

impl AudioQuality {
    pub fn product(&self) -> f64 {
        self.duration * self.voicing * self.clipping * self.noise
    }
}

fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// How much to trust a PCM analysis.
pub fn audio_quality(a: &Analysis) -> AudioQuality {
    AudioQuality {
        duration: ramp(a.speaking_s, 0.3, 2.0),
        voicing: ramp(a.voiced_fraction, 0.1, 0.4),
        clipping: 1.0 - ramp(a.clipped_fraction, 0.0005, 0.02),
        noise: ramp(a.snr_db, 5.0, 25.0),
    }
}

/// The cues of a PCM analysis.
pub fn pcm_cues(a: &Analysis) -> Vec<(Cue, f64)> {
    let mut cues = vec![
        (Cue::F0Level, crate::features::semitones(a.f0_median_hz)),
        (Cue::F0Range, a.f0_range_st),
        (Cue::LoudnessDbfs, a.loudness_dbfs),
        (Cue::AlphaRatio, a.alpha_ratio_db),
    ];
    if let Some(rate) = a.speech_rate {
        cues.push((Cue::SpeechRate, rate));
    }
    cues
}

/// Arousal, valence, confidence and label from cues, against the speaker's
/// baselines (`None`: population norms). `quality` (0..=1) is the input's
/// own quality (1 for prosody features).
pub fn estimate(
    cues: &[(Cue, f64)],
    speaker: Option<&Speaker>,
    quality: f64,
    labels: bool,
) -> Estimate {
    let refer = |cue: Cue| -> Reference {
        match speaker {
            Some(s) => s.reference(cue),
            None => reference(None, cue),
        }
    };
    let z: Vec<(Cue, f64)> = cues
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|&(c, v)| (c, limit_z(refer(c).z(v))))
        .collect();
    let get = |cue: Cue| z.iter().find(|(c, _)| *c == cue).map(|&(_, v)| v);

    let warmth_of = |cue: Cue| (refer(cue).warmth / W_MAX).clamp(0.0, 1.0);
    let (mut num, mut den, mut full, mut warm) = (0.0, 0.0, 0.0, 0.0);
    for &(c, zc) in &z {
        let w = arousal_weight(c);
        // Speaker-dependent cues count less until the speaker is known.
        let w_eff = w * (1.0 - cold_discount(c) * (1.0 - warmth_of(c)));
        num += w_eff * zc;
        den += w_eff;
        full += w;
        warm += w * refer(c).warmth;
    }
    let score = if den > 0.0 { num / den } else { 0.0 };
    let warmth = if full > 0.0 { warm / full } else { 0.0 };
    let arousal = 1.0 / (1.0 + (-AROUSAL_GAIN * score).exp());

    // Relative cues (a cue beyond what the arousal explains) need the
    // speaker's own reference: they are off until it warms up.
    let mut v = 0.0;
    let g = score.clamp(0.0, 1.0);
    if let Some(zr) = get(Cue::F0Range) {
        v += g * warmth_of(Cue::F0Range) * 0.5 * (zr - score);
    }
    if let Some(za) = get(Cue::AlphaRatio) {
        v -= g * warmth_of(Cue::AlphaRatio) * 0.5 * (za - score);
    }
    if let Some(zh) = get(Cue::Hnr) {
        v += 0.4 * zh;
    }
    if let Some(zj) = get(Cue::Jitter) {
        v -= 0.3 * zj;
    }
    if let Some(zs) = get(Cue::Shimmer) {
        v -= 0.3 * zs;
    }
    let valence = VALENCE_MAX * (v / 2.0).tanh();

    let measured = (full / FULL_WEIGHT).clamp(0.0, 1.0);
    let warm_factor = 0.85 + 0.15 * (warmth / W_MAX).clamp(0.0, 1.0);
    let q = quality.clamp(0.0, 1.0) * measured * warm_factor;
    let confidence = CONFIDENCE_MIN + (CONFIDENCE_MAX - CONFIDENCE_MIN) * q;

    Estimate {
        arousal,
        valence,
        confidence,
        label: labels.then(|| label(arousal, valence)),
        score,
        z,
        warmth,
    }
}

/// The label for a point: arousal decides, valence only splits the ends.
///
/// | arousal | valence ≤ −0.1 | otherwise |
/// |---|---|---|
/// | ≥ 0.65 | anger | excitement |
/// | ≤ 0.35 | sadness | calm |
/// | between | neutral | neutral |
pub fn label(arousal: f64, valence: f64) -> &'static str {
    if arousal >= 0.65 {
        if valence <= -0.1 {
            "anger"
        } else {
            "excitement"
        }
    } else if arousal <= 0.35 {
        if valence <= -0.1 { "sadness" } else { "calm" }
    } else {
        "neutral"
    }
}
