//! Electrodermal activity: tonic skin-conductance level (SCL) and phasic
//! skin-conductance responses (SCRs).
//!
//! Method (trough-to-peak scoring, as in Boucsein, *Electrodermal Activity*,
//! 2nd ed., Springer 2012, and Dawson, Schell and Filion, *The electrodermal
//! system*, Handbook of Psychophysiology, 2007):
//!
//! 1. smooth with a centred moving average of about 0.75 s (SCRs are slower
//!    than 1 Hz; sensor noise is not);
//! 2. find peaks with hysteresis: a peak is confirmed once the signal has
//!    fallen from it by half the amplitude threshold (a response still
//!    rising when the window ends is not counted);
//! 3. the onset of each peak is found by walking back from the steepest
//!    point of its rise (within 8 s, and after the previous peak) to the
//!    first step that climbs less than a tenth as steeply — so a response
//!    riding on a rising tonic level still gets its own onset; when the
//!    signal is still climbing steadily 8 s before the peak, the rise is too
//!    slow for an SCR (rise times are 1–3 s): it is a tonic drift and does
//!    not count. Otherwise the response counts when peak − onset reaches
//!    the amplitude threshold
//!    (default 0.02 µS; 0.01 µS is the classic laboratory criterion,
//!    wrist-worn sensors are noisier);
//! 4. the tonic level is the median of the smoothed signal outside the
//!    responses (each from its onset to its peak plus twice its rise time
//!    plus 1 s of recovery); if responses cover everything, the mean of
//!    their onsets.

/// Default SCR amplitude threshold, µS.
pub const DEFAULT_MIN_AMPLITUDE_US: f64 = 0.02;
/// How far back from a peak its onset is looked for, s. Typical rise times
/// are 1–3 s; the window is wider so that slow, rounded responses are still
/// measured from their foot, while a rise that is still climbing steadily
/// this far back is a tonic drift.
pub const MAX_RISE_S: f64 = 8.0;
/// Smoothing window, s.
pub const SMOOTHING_S: f64 = 0.75;
/// Largest accepted skin conductance, µS (the gateway accepts up to 200;
/// anything above 100 is a sensor fault).
pub const MAX_SCL_US: f64 = 100.0;

/// One skin-conductance response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scr {
    /// Sample index of the onset and the peak.
    pub onset: usize,
    pub peak: usize,
    /// Peak minus onset, µS (smoothed signal).
    pub amplitude_us: f64,
}

/// Features of one window of skin conductance.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub duration_s: f64,
    /// Tonic level, µS.
    pub scl_us: f64,
    pub scrs: Vec<Scr>,
}

impl Features {
    /// Responses per minute.
    pub fn scr_rate_per_min(&self) -> f64 {
        if self.duration_s <= 0.0 {
            0.0
        } else {
            self.scrs.len() as f64 * 60.0 / self.duration_s
        }
    }

    pub fn mean_amplitude_us(&self) -> Option<f64> {
        (!self.scrs.is_empty())
            .then(|| self.scrs.iter().map(|s| s.amplitude_us).sum::<f64>() / self.scrs.len() as f64)
    }
}

/// Check the samples and rate; `Err` names the problem.
pub fn validate(samples: &[f64], rate_hz: Option<f64>) -> Result<f64, String> {
    let rate = match rate_hz {
        Some(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => r,
        Some(r) => {
            return Err(format!(
                "eda_sample_rate_hz must be a positive number of Hz, got {r}"
            ));
        }
        None => return Err("eda_sample_rate_hz is required with skin_conductance".into()),
    };
    if let Some((i, x)) = samples
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && (0.0..=MAX_SCL_US).contains(*x)))
    {
        return Err(format!(
            "skin_conductance sample {i} must be a finite number of µS between 0 and {MAX_SCL_US}, got {x}"
        ));
    }
    Ok(rate)
}

/// Centred moving average over `w` samples (odd), shrinking at the edges.
fn smooth(x: &[f64], w: usize) -> Vec<f64> {
    let n = x.len();
    let half = w / 2;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    let mut s = 0.0;
    for &v in x {
        s += v;
        prefix.push(s);
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// Analyse a window of skin conductance (µS) sampled at `rate_hz`; samples
/// must have passed [`validate`]. `min_amplitude_us` is the SCR threshold.
pub fn analyze(samples: &[f64], rate_hz: f64, min_amplitude_us: f64) -> Features {
    let n = samples.len();
    let duration_s = n as f64 / rate_hz;
    if n == 0 {
        return Features {
            duration_s,
            scl_us: 0.0,
            scrs: Vec::new(),
        };
    }
    let w = ((SMOOTHING_S * rate_hz).round() as usize).max(1) | 1;
    let y = if w > 1 {
        smooth(samples, w)
    } else {
        samples.to_vec()
    };
    let max_rise = ((MAX_RISE_S * rate_hz).round() as usize).max(1);
    let fall = min_amplitude_us / 2.0;

    let mut scrs: Vec<Scr> = Vec::new();
    // Earliest sample an onset may take: just after the previous peak.
    let mut floor = 0usize;
    let mut peak: Option<usize> = None;
    let mut low = y[0];
    let confirm = |p: usize, floor: &mut usize, scrs: &mut Vec<Scr>| {
        let window_start = p.saturating_sub(max_rise);
        let from = window_start.max(*floor);
        // The steepest step of the rise, then back to where the rise began:
        // the first step that climbs less than a tenth as steeply.
        let (mut steep_at, mut steep) = (p, 0.0);
        for j in from + 1..=p {
            let s = y[j] - y[j - 1];
            if s > steep {
                (steep_at, steep) = (j, s);
            }
        }
        let mut onset = steep_at.saturating_sub(1).max(from);
        while onset > from && y[onset] - y[onset - 1] > 0.1 * steep {
            onset -= 1;
        }
        let amplitude = if steep > 0.0 { y[p] - y[onset] } else { 0.0 };
        // Still climbing at the look-back limit: too slow for an SCR.
        let drift =
            onset == window_start && window_start > *floor && y[onset] - y[onset - 1] > 0.1 * steep;
        if amplitude >= min_amplitude_us && !drift {
            scrs.push(Scr {
                onset,
                peak: p,
                amplitude_us: amplitude,
            });
        }
        *floor = p + 1;
    };
    for i in 1..n {
        match peak {
            None => {
                // Looking for a rise of at least the threshold above the low.
                low = low.min(y[i]);
                if y[i] - low >= min_amplitude_us {
                    peak = Some(i);
                }
            }
            Some(p) => {
                if y[i] > y[p] {
                    peak = Some(i);
                } else if y[p] - y[i] >= fall {
                    confirm(p, &mut floor, &mut scrs);
                    peak = None;
                    low = y[i];
                }
            }
        }
    }

    // Tonic level: the signal outside the responses.
    let mut inside = vec![false; n];
    for s in &scrs {
        let rise = s.peak - s.onset;
        let end = (s.peak + 2 * rise + rate_hz.ceil() as usize).min(n - 1);
        inside[s.onset..=end].iter_mut().for_each(|b| *b = true);
    }
    let mut outside: Vec<f64> = y
        .iter()
        .zip(&inside)
        .filter(|(_, inside)| !**inside)
        .map(|(v, _)| *v)
        .collect();
    let scl_us = if outside.is_empty() {
        scrs.iter().map(|s| y[s.onset]).sum::<f64>() / scrs.len().max(1) as f64
    } else {
        let mid = outside.len() / 2;
        let (_, m, _) = outside.select_nth_unstable_by(mid, f64::total_cmp);
        *m
    };
    Features {
        duration_s,
        scl_us,
        scrs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn known_responses_are_found() {
        for (fs, seed) in [(4.0, 1), (8.0, 2), (16.0, 3), (32.0, 4), (4.0, 5)] {
            let trace = synth::scr_trace(
                seed,
                fs,
                120.0,
                2.0,
                &[10.0, 25.0, 41.0, 60.0, 72.0, 95.0],
                &[0.3, 0.08, 0.5, 0.05, 0.15, 0.9],
                0.003,
            );
            let f = analyze(&trace.samples, fs, DEFAULT_MIN_AMPLITUDE_US);
            assert_eq!(f.scrs.len(), 6, "fs {fs}: {:?}", f.scrs);
            for (s, t) in f.scrs.iter().zip(&trace.peaks_s) {
                let at = s.peak as f64 / fs;
                assert!((at - t).abs() < 1.5, "peak at {at} s, expected {t} s");
            }
            assert!((f.scl_us - 2.0).abs() < 0.15, "scl {}", f.scl_us);
        }
    }

    #[test]
    fn noise_and_small_responses_are_not_counted() {
        let trace = synth::scr_trace(7, 8.0, 60.0, 5.0, &[20.0, 40.0], &[0.005, 0.008], 0.004);
        let f = analyze(&trace.samples, 8.0, DEFAULT_MIN_AMPLITUDE_US);
        assert!(f.scrs.is_empty(), "{:?}", f.scrs);
        assert!((f.scl_us - 5.0).abs() < 0.05);
    }

    #[test]
    fn a_slow_tonic_drift_is_not_a_response() {
        // Up 1 µS/min for a minute, then down: a tonic wave, not an SCR.
        let samples: Vec<f64> = (0..480)
            .map(|i| {
                let t = i as f64 / 4.0;
                3.0 + if t < 60.0 { t / 60.0 } else { 2.0 - t / 60.0 }
            })
            .collect();
        let f = analyze(&samples, 4.0, DEFAULT_MIN_AMPLITUDE_US);
        assert!(f.scrs.is_empty(), "{:?}", f.scrs);
        // Still rising when the window ends: not counted.
        let rising: Vec<f64> = (0..40).map(|i| 3.0 + 0.05 * i as f64).collect();
        assert!(
            analyze(&rising, 4.0, DEFAULT_MIN_AMPLITUDE_US)
                .scrs
                .is_empty()
        );
    }

    #[test]
    fn rounded_responses_count_too() {
        // Gaussian bumps (sigma 1.5 s) of 0.1 µS every 15 s, no noise.
        let rate = 4.0;
        let samples: Vec<f64> = (0..(120.0 * rate) as usize)
            .map(|i| {
                let t = i as f64 / rate;
                2.0 + (1..8)
                    .map(|k| 0.1 * (-((t - 15.0 * k as f64) / 1.5).powi(2) / 2.0).exp())
                    .sum::<f64>()
            })
            .collect();
        let f = analyze(&samples, rate, DEFAULT_MIN_AMPLITUDE_US);
        assert_eq!(f.scrs.len(), 7, "{:?}", f.scrs);
        assert!(f.scrs.iter().all(|s| (s.amplitude_us - 0.1).abs() < 0.01));
    }

    #[test]
    fn validation() {
        assert!(validate(&[1.0, f64::NAN], Some(4.0)).is_err());
        assert!(validate(&[1.0, -0.1], Some(4.0)).is_err());
        assert!(validate(&[1.0], None).is_err());
        assert!(validate(&[1.0], Some(0.0)).is_err());
        assert!(validate(&[1.0], Some(f64::INFINITY)).is_err());
        assert_eq!(validate(&[1.0], Some(4.0)), Ok(4.0));
    }
}
