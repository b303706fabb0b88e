//! Valence and arousal from the units' own directions, and the confidence.
//!
//! # Valence and arousal
//!
//! Each unit pushes valence and arousal in a known direction, whatever label
//! wins. The signs follow PROTOTYPES.md and its sources: AU12 (lip corner
//! puller) raises valence and AU4 (brow lowerer) lowers it (Zhang, Sato et
//! al., *Sensing emotional valence and arousal dynamics through automated
//! facial action unit analysis*, Scientific Reports 14:19563, 2024); the
//! units of the negative prototypes (AU9/10 disgust, AU15 lip corner
//! depressor, AU20 lip stretcher, AU23/24 lip tightening and pressing, AU14
//! dimpler) lower it; AU6 adds to valence only together with AU12 (the
//! Duchenne smile; alone it is also part of sadness 6+15). Arousal rises with
//! AU5 (upper lid raiser), AU26/27 (jaw drop, mouth stretch) and AU1+2 (brow
//! raise), and with AU20 and the brow-lowering-and-lid-tightening of anger; it
//! falls with AU43 (eyes closed), with AU15 and with AU1 without AU2 (the
//! sad brow). The weights are this plugin's choice, set so that the
//! published prototypes land in their labels' quadrants of the gateway's
//! circumplex; the sums go through `tanh`, so strong and many units
//! saturate instead of leaving the range.
//!
//! When a prototype matched, the result is blended with the label's place on
//! the gateway's circumplex (65 % units, 35 % label, the label pulled to the
//! centre for weak expressions): the units decide the direction, the label
//! keeps events of one label close together.

use crate::facs::{Emotion, MAX_AU};

/// How strongly each unit is expressed for valence/arousal, 0–1: rising
/// from the noise floor (0.25) and saturating (A 0.34, B 0.62, C 0.78, E 0.93).
fn strength(intensity: f64) -> f64 {
    if intensity <= 0.25 {
        // Most units of a frame: no `exp` (a software routine in WebAssembly).
        return 0.0;
    }
    1.0 - (-(intensity - 0.25) / 1.8).exp()
}

/// Valence in [-1, 1] from the units alone.
pub fn units_valence(intensity: &[f64; MAX_AU]) -> f64 {
    let b = |u: usize| strength(intensity[u]);
    let sum = 1.0 * b(12) * (1.0 - 0.7 * b(14)) + 0.35 * b(6) * b(12)
        - 0.6 * b(4)
        - 0.55 * b(15)
        - 0.5 * b(9)
        - 0.4 * b(10)
        - 0.35 * b(14)
        - 0.35 * b(20)
        - 0.25 * b(1) * (1.0 - b(2))
        - 0.3 * b(23)
        - 0.3 * b(24)
        - 0.2 * b(17)
        - 0.2 * b(11)
        - 0.2 * b(16)
        - 0.2 * b(22)
        - 0.1 * b(7);
    (1.2 * sum).tanh()
}

/// Arousal in [0, 1] from the units alone; 0.5 for a still face.
pub fn units_arousal(intensity: &[f64; MAX_AU]) -> f64 {
    let b = |u: usize| strength(intensity[u]);
    let sum = 0.8 * b(5)
        + 0.6 * b(26).max(b(27))
        + 0.3 * b(27)
        + 0.5 * b(1).min(b(2))
        + 0.3 * b(20)
        + 0.2 * b(25)
        + 0.2 * b(4)
        + 0.25 * b(4) * b(7)
        + 0.2 * b(9)
        + 0.15 * b(10)
        + 0.2 * b(23)
        + 0.2 * b(12) * b(25)
        - 0.8 * b(43)
        - 0.3 * b(15)
        - 0.2 * b(1) * (1.0 - b(2))
        - 0.2 * b(41).max(b(42));
    0.5 + 0.5 * sum.tanh()
}

/// The share of the units in the final coordinates when a prototype matched.
const UNITS_SHARE: f64 = 0.65;

/// Final (valence, arousal): the units' estimate, blended with the matched
/// label's coordinates pulled towards the centre by `strength` (0–1).
pub fn coordinates(intensity: &[f64; MAX_AU], label: Option<Emotion>, strength: f64) -> (f64, f64) {
    let v = units_valence(intensity);
    let a = units_arousal(intensity);
    match label {
        None => (v, a),
        Some(e) => {
            let (lv, la) = e.coordinates();
            let k = strength.clamp(0.0, 1.0);
            (
                UNITS_SHARE * v + (1.0 - UNITS_SHARE) * k * lv,
                UNITS_SHARE * a + (1.0 - UNITS_SHARE) * (0.5 + k * (la - 0.5)),
            )
        }
    }
}

/// The facial source's confidence range in the gateway (`emotion_core::Source::confidence_range`).
pub const CONFIDENCE_MIN: f64 = 0.80;
pub const CONFIDENCE_MAX: f64 = 0.95;

fn smoothstep(lo: f64, hi: f64, x: f64) -> f64 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Detection factor, 0–1: 0 at the no-face threshold, 1 from 0.9 up; 0.85
/// when the detector did not say.
pub fn detection_factor(quality: Option<f64>, min_quality: f64) -> f64 {
    match quality {
        None => 0.85,
        Some(q) => ((q - min_quality) / (0.9 - min_quality).max(1e-6)).clamp(0.0, 1.0),
    }
}

/// Head-pose factor, 0.04–1: frontal faces (|yaw|, |pitch| ≤ 15°) are read
/// best; AU detectors degrade quickly out of plane (yaw to 60°, pitch to
/// 45°) and little with in-plane roll. 0.95 when no pose was given.
pub fn pose_factor(pose: Option<(f64, f64, f64)>) -> f64 {
    match pose {
        None => 0.95,
        Some((pitch, yaw, roll)) => {
            (1.0 - 0.8 * smoothstep(15.0, 60.0, yaw.abs()))
                * (1.0 - 0.8 * smoothstep(15.0, 45.0, pitch.abs()))
                * (1.0 - 0.4 * smoothstep(25.0, 70.0, roll.abs()))
        }
    }
}

/// Confidence from a quality product `q` in [0, 1].
pub fn confidence(q: f64) -> f64 {
    CONFIDENCE_MIN + (CONFIDENCE_MAX - CONFIDENCE_MIN) * q.clamp(0.0, 1.0)
}

/// How clearly one answer beats the next, 0–1: relative margin, full at 35 %.
pub fn margin_factor(best: f64, second: f64) -> f64 {
    if best <= 0.0 {
        return 0.0;
    }
    ((best - second) / best / 0.35).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(list: &[(usize, f64)]) -> [f64; MAX_AU] {
        let mut i = [0.0; MAX_AU];
        for &(u, x) in list {
            i[u] = x;
        }
        i
    }

    #[test]
    fn directions() {
        let still = frame(&[]);
        assert_eq!(units_valence(&still), 0.0);
        assert_eq!(units_arousal(&still), 0.5);
        // AU12 up, AU4 down, monotonically.
        let mut last = 0.0;
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            let v = units_valence(&frame(&[(12, x)]));
            assert!(v > last);
            last = v;
            assert!(units_valence(&frame(&[(4, x)])) < 0.0);
        }
        for u in [5, 26, 27] {
            assert!(units_arousal(&frame(&[(u, 3.0)])) > 0.6, "AU{u}");
        }
        assert!(units_arousal(&frame(&[(1, 3.0), (2, 3.0)])) > 0.6);
        assert!(units_arousal(&frame(&[(43, 3.0)])) < 0.3);
    }

    #[test]
    fn pose_and_detection_factors_fall() {
        assert_eq!(pose_factor(Some((0.0, 10.0, 0.0))), 1.0);
        assert!(pose_factor(Some((0.0, 40.0, 0.0))) < 0.6);
        assert!(pose_factor(Some((0.0, 70.0, 0.0))) <= 0.2 + 1e-12);
        assert!(detection_factor(Some(0.95), 0.1) == 1.0);
        assert!(detection_factor(Some(0.5), 0.1) < 0.6);
    }
}
