//! Physiologically plausible signal generators, driven by an affect
//! (valence, arousal) that changes over time, and the metrics that check them.
//!
//! Heart: each RR interval is the mean interval for the current heart rate,
//! plus respiratory sinus arrhythmia (a sine at the breathing rate), plus
//! beat-to-beat noise. At rest (low arousal) the heart is slow, RSA is large
//! and breathing slow, so RMSSD is high (≈ 45–60 ms); under stress the heart
//! is fast, vagal RSA nearly vanishes and RMSSD falls to ≈ 8–15 ms (Task
//! Force of the ESC/NASPE 1996 ranges; Thayer et al. 2012 for stress).
//!
//! Skin conductance: a tonic level (SCL) that follows arousal slowly, plus
//! phasic skin-conductance responses (SCRs): a Poisson process whose rate
//! (≈ 1–3/min at rest, ≈ 15–20/min under stress) and amplitude rise with
//! arousal, each shaped as a bi-exponential (rise ≈ 0.75 s, decay ≈ 2 s)
//! (Boucsein 2012; Benedek & Kaernbach 2010).
//!
//! Skin temperature: peripheral vasoconstriction cools the skin a little
//! under stress; it follows arousal with a time constant of a minute.
//!
//! Everything is deterministic for a given seed. Shared by firmware-sim and
//! the gateway's simulated BLE adapter (through [`crate::journey`]).

use std::f64::consts::TAU;

/// A small deterministic PRNG (splitmix64, shared with the physiological
/// plugin's synthetic data): simulations must replay exactly.
pub use crate::rng::SplitMix64 as Rng;

/// Salt of firmware-sim's seeds (a seed `s` starts the generator at state
/// `s ^ SEED_SALT`), so the same seed gives the same run as always.
pub const SEED_SALT: u64 = 0x5DEE_CE66_D1CE_4E5B;

/// The generator of a simulation seeded with `seed`.
pub fn rng(seed: u64) -> Rng {
    Rng::from_state(seed ^ SEED_SALT)
}

/// Where a person is on the circumplex: valence −1…1, arousal 0…1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affect {
    pub valence: f64,
    pub arousal: f64,
}

impl Affect {
    pub fn new(valence: f64, arousal: f64) -> Self {
        Self {
            valence: valence.clamp(-1.0, 1.0),
            arousal: arousal.clamp(0.0, 1.0),
        }
    }
}

/// Cardiac parameters for an arousal level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartParams {
    pub mean_hr_bpm: f64,
    /// Peak RSA modulation of the RR interval, ms.
    pub rsa_amplitude_ms: f64,
    pub breathing_rate_bpm: f64,
    /// Beat-to-beat white noise, ms (sd).
    pub noise_sd_ms: f64,
}

impl HeartParams {
    pub fn for_arousal(arousal: f64) -> Self {
        let a = arousal.clamp(0.0, 1.0);
        Self {
            mean_hr_bpm: 60.0 + 50.0 * a,
            rsa_amplitude_ms: 5.0 + 60.0 * (1.0 - a).powf(1.5),
            breathing_rate_bpm: 11.0 + 10.0 * a,
            noise_sd_ms: 3.0 + 12.0 * (1.0 - a),
        }
    }
}

/// Generates heart beats (RR intervals).
#[derive(Debug, Clone)]
pub struct HeartModel {
    rng: Rng,
    /// Simulated time of the last beat, s.
    last_beat_s: f64,
    /// Simulated time generated up to, s.
    now_s: f64,
    /// The interval that ends the next beat, ms.
    pending_rr_ms: f64,
    /// Respiration phase, radians.
    resp_phase: f64,
    /// Slow (very-low-frequency) drift of the mean, ms.
    drift_ms: f64,
}

impl HeartModel {
    pub fn new(seed: u64, initial: Affect) -> Self {
        let mut rng = rng(seed);
        let resp_phase = rng.uniform() * TAU;
        let mut m = Self {
            rng,
            last_beat_s: 0.0,
            now_s: 0.0,
            pending_rr_ms: 0.0,
            resp_phase,
            drift_ms: 0.0,
        };
        m.pending_rr_ms = m.next_rr(initial);
        m
    }

    fn next_rr(&mut self, affect: Affect) -> f64 {
        let p = HeartParams::for_arousal(affect.arousal);
        let base = 60_000.0 / p.mean_hr_bpm;
        // Drift: AR(1) with a ~30-beat memory, sd ≈ 15 ms at rest.
        self.drift_ms =
            0.97 * self.drift_ms + 3.5 * (1.0 - 0.6 * affect.arousal) * self.rng.normal();
        let rr = base
            + p.rsa_amplitude_ms * self.resp_phase.sin()
            + p.noise_sd_ms * self.rng.normal()
            + self.drift_ms;
        let rr = rr.clamp(300.0, 2000.0);
        self.resp_phase =
            (self.resp_phase + TAU * (rr / 1000.0) * p.breathing_rate_bpm / 60.0) % TAU;
        rr
    }

    /// Advance simulated time by `dt_s`; the RR intervals (ms) of the beats
    /// that fall in it, oldest first.
    pub fn advance(&mut self, dt_s: f64, affect: Affect) -> Vec<f64> {
        self.now_s += dt_s.max(0.0);
        let mut out = Vec::new();
        while self.last_beat_s + self.pending_rr_ms / 1000.0 <= self.now_s {
            self.last_beat_s += self.pending_rr_ms / 1000.0;
            out.push(self.pending_rr_ms);
            self.pending_rr_ms = self.next_rr(affect);
        }
        out
    }
}

/// Skin-conductance parameters for an arousal level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdaParams {
    /// Tonic level the SCL drifts to, µS.
    pub scl_us: f64,
    /// Non-specific SCRs per minute.
    pub scr_per_min: f64,
    /// Mean SCR amplitude, µS.
    pub scr_amplitude_us: f64,
}

impl EdaParams {
    pub fn for_arousal(arousal: f64) -> Self {
        let a = arousal.clamp(0.0, 1.0);
        Self {
            scl_us: 1.5 + 9.0 * a,
            scr_per_min: 1.5 + 17.0 * a.powf(1.5),
            scr_amplitude_us: 0.08 + 0.7 * a,
        }
    }
}

const SCR_RISE_S: f64 = 0.75;
const SCR_DECAY_S: f64 = 2.0;

/// The bi-exponential SCR shape, peak 1.
fn scr_shape(t: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    // Peak of e^(-t/τd) − e^(-t/τr) is at t* = ln(τd/τr)·τr·τd/(τd − τr).
    let t_peak =
        (SCR_DECAY_S / SCR_RISE_S).ln() * SCR_RISE_S * SCR_DECAY_S / (SCR_DECAY_S - SCR_RISE_S);
    let peak = (-t_peak / SCR_DECAY_S).exp() - (-t_peak / SCR_RISE_S).exp();
    ((-t / SCR_DECAY_S).exp() - (-t / SCR_RISE_S).exp()) / peak
}

/// Generates skin-conductance samples at a fixed rate.
#[derive(Debug, Clone)]
pub struct EdaModel {
    rng: Rng,
    pub rate_hz: f64,
    /// Index of the next sample.
    sample: u64,
    now_s: f64,
    tonic_us: f64,
    /// Onset time and amplitude of recent SCRs.
    scrs: Vec<(f64, f64)>,
    next_scr_s: f64,
    /// SCR onsets generated so far (ground truth for tests).
    pub scr_count: u64,
}

impl EdaModel {
    pub fn new(seed: u64, rate_hz: f64, initial: Affect) -> Self {
        let mut rng = rng(seed);
        let p = EdaParams::for_arousal(initial.arousal);
        let next_scr_s = rng.exponential(60.0 / p.scr_per_min);
        Self {
            rng,
            rate_hz: rate_hz.max(0.1),
            sample: 0,
            now_s: 0.0,
            tonic_us: p.scl_us,
            scrs: Vec::new(),
            next_scr_s,
            scr_count: 0,
        }
    }

    /// Advance by `dt_s`; the samples (µS) taken in it.
    pub fn advance(&mut self, dt_s: f64, affect: Affect) -> Vec<f64> {
        self.now_s += dt_s.max(0.0);
        let p = EdaParams::for_arousal(affect.arousal);
        let period = 1.0 / self.rate_hz;
        let mut out = Vec::new();
        while (self.sample as f64 + 1.0) * period <= self.now_s + 1e-9 {
            self.sample += 1;
            let t = self.sample as f64 * period;
            // Tonic level: first-order approach to the target (τ = 20 s)
            // plus a slow random walk.
            self.tonic_us += (p.scl_us - self.tonic_us) * (period / 20.0)
                + 0.004 * self.rng.normal() * period.sqrt();
            self.tonic_us = self.tonic_us.max(0.05);
            while self.next_scr_s <= t {
                let amp = (p.scr_amplitude_us * (0.5 + self.rng.exponential(0.5))).min(3.0);
                self.scrs.push((self.next_scr_s, amp));
                self.scr_count += 1;
                self.next_scr_s += self.rng.exponential(60.0 / p.scr_per_min);
            }
            self.scrs.retain(|(onset, _)| t - onset < 20.0);
            let phasic: f64 = self
                .scrs
                .iter()
                .map(|(onset, amp)| amp * scr_shape(t - onset))
                .sum();
            let noise = 0.003 * self.rng.normal();
            out.push((self.tonic_us + phasic + noise).clamp(0.0, 60.0));
        }
        out
    }
}

/// Skin temperature, °C.
#[derive(Debug, Clone)]
pub struct SkinTemperatureModel {
    rng: Rng,
    celsius: f64,
}

impl SkinTemperatureModel {
    pub fn new(seed: u64, initial: Affect) -> Self {
        Self {
            rng: rng(seed),
            celsius: Self::target(initial),
        }
    }

    fn target(affect: Affect) -> f64 {
        33.8 - 1.8 * affect.arousal
    }

    pub fn advance(&mut self, dt_s: f64, affect: Affect) -> f64 {
        let dt = dt_s.max(0.0);
        self.celsius += (Self::target(affect) - self.celsius) * (dt / 60.0).min(1.0)
            + 0.01 * self.rng.normal() * dt.sqrt();
        self.celsius
    }
}

/// Mean heart rate of RR intervals (ms), bpm.
pub fn mean_hr(rr_ms: &[f64]) -> Option<f64> {
    if rr_ms.is_empty() {
        return None;
    }
    let mean = rr_ms.iter().sum::<f64>() / rr_ms.len() as f64;
    Some(60_000.0 / mean)
}

/// Root mean square of successive differences, ms.
pub fn rmssd(rr_ms: &[f64]) -> Option<f64> {
    if rr_ms.len() < 2 {
        return None;
    }
    let sum: f64 = rr_ms.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum();
    Some((sum / (rr_ms.len() - 1) as f64).sqrt())
}

/// SCRs in a skin-conductance series: rises of at least `min_amplitude_us`
/// from a trough (the usual scoring threshold is 0.01–0.05 µS).
pub fn count_scrs(samples_us: &[f64], min_amplitude_us: f64) -> usize {
    let Some(&first) = samples_us.first() else {
        return 0;
    };
    let (mut trough, mut peak, mut rising, mut count) = (first, first, false, 0);
    for &x in samples_us {
        if rising {
            if x > peak {
                peak = x;
            } else if peak - x > min_amplitude_us / 4.0 {
                rising = false;
                trough = x;
            }
        } else if x < trough {
            trough = x;
        } else if x - trough >= min_amplitude_us {
            count += 1;
            rising = true;
            peak = x;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrv_example_from_the_shared_data() {
        // /work/shared/data/ble/hrm_0x2a37_vectors.json "hrv_example".
        let rr = [800.0, 810.0, 790.0, 860.0, 780.0, 800.0, 900.0, 820.0];
        assert!((rmssd(&rr).expect("rmssd") - 63.92).abs() < 0.01);
        assert!((mean_hr(&rr).expect("hr") - 60_000.0 / 820.0).abs() < 1e-9);
    }

    #[test]
    fn scr_shape_peaks_at_one() {
        let peak = (0..1000)
            .map(|i| scr_shape(f64::from(i) * 0.01))
            .fold(0.0, f64::max);
        assert!((peak - 1.0).abs() < 1e-3, "{peak}");
        assert_eq!(scr_shape(-1.0), 0.0);
    }

    #[test]
    fn heart_beats_cover_the_time() {
        let mut h = HeartModel::new(1, Affect::new(0.0, 0.3));
        let rr: Vec<f64> = (0..60)
            .flat_map(|_| h.advance(1.0, Affect::new(0.0, 0.3)))
            .collect();
        let total: f64 = rr.iter().sum::<f64>() / 1000.0;
        assert!((59.0..=60.0).contains(&total), "{total}");
    }

    #[test]
    fn same_seed_same_signal() {
        let a = Affect::new(0.0, 0.5);
        let mut x = EdaModel::new(9, 4.0, a);
        let mut y = EdaModel::new(9, 4.0, a);
        assert_eq!(x.advance(30.0, a), y.advance(30.0, a));
    }
}
