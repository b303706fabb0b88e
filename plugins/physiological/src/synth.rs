//! Synthetic signals with known ground truth, for the tests and the quality
//! report (deterministic: a seeded SplitMix64, no external randomness).
//!
//! * Skin-conductance responses are Bateman functions (a difference of two
//!   exponentials, rise τ 0.75 s, recovery τ 3–6 s; Benedek and Kaernbach,
//!   *Decomposition of skin conductance data by means of nonnegative
//!   deconvolution*, Psychophysiology 47:647–658, 2010) on a tonic level with
//!   a slow drift and Gaussian sensor noise.
//! * RR intervals carry respiratory sinus arrhythmia (a sinusoid at the
//!   breathing rate) plus Gaussian beat-to-beat noise.

use emotion_plugin_sdk::Physiological;

/// SplitMix64 (Steele, Lea and Flood 2014), shared with firmware-sim.
pub use emotion_plugin_sdk::common::SplitMix64 as Rng;

/// Rise time constant of a synthetic SCR, s.
const TAU_RISE: f64 = 0.75;

/// Bateman response with recovery `tau_decay`, scaled to peak 1; and the
/// time of its peak after onset.
fn bateman(t: f64, tau_decay: f64) -> (f64, f64) {
    let t_peak = (tau_decay / TAU_RISE).ln() * TAU_RISE * tau_decay / (tau_decay - TAU_RISE);
    let shape = |t: f64| (-t / tau_decay).exp() - (-t / TAU_RISE).exp();
    let v = if t <= 0.0 {
        0.0
    } else {
        shape(t) / shape(t_peak)
    };
    (v, t_peak)
}

/// A skin-conductance window with known responses.
#[derive(Debug, Clone)]
pub struct Trace {
    pub samples: Vec<f64>,
    /// Peak time of each response above the threshold, s.
    pub peaks_s: Vec<f64>,
}

/// Responses at `onsets_s` with `amplitudes` (µS) on a constant tonic level,
/// with Gaussian noise of `noise_sd` µS. `peaks_s` lists every response.
pub fn scr_trace(
    seed: u64,
    rate_hz: f64,
    duration_s: f64,
    tonic_us: f64,
    onsets_s: &[f64],
    amplitudes: &[f64],
    noise_sd: f64,
) -> Trace {
    let mut rng = Rng::new(seed);
    let decays: Vec<f64> = onsets_s.iter().map(|_| rng.range(3.0, 6.0)).collect();
    let n = (duration_s * rate_hz) as usize;
    let samples = (0..n)
        .map(|i| {
            let t = i as f64 / rate_hz;
            let phasic: f64 = onsets_s
                .iter()
                .zip(amplitudes)
                .zip(&decays)
                .map(|((&o, &a), &d)| a * bateman(t - o, d).0)
                .sum();
            (tonic_us + phasic + noise_sd * rng.normal()).max(0.0)
        })
        .collect();
    let peaks_s = onsets_s
        .iter()
        .zip(&decays)
        .map(|(&o, &d)| o + bateman(1.0, d).1)
        .collect();
    Trace { samples, peaks_s }
}

/// A random window for the detection benchmark: 0–8 responses (amplitude
/// log-uniform 0.04–1.0 µS, at least 6 s apart), 0–2 sub-threshold
/// ripples (0.002–0.008 µS, not to be counted), a tonic level of 0.5–15 µS
/// drifting by up to ±0.3 µS/min, Gaussian noise with an SD drawn from
/// `noise_us` (0.001–0.004 µS for a good contact). `peaks_s` lists the
/// responses to be found.
pub fn random_scr_trace(seed: u64, rate_hz: f64, duration_s: f64, noise_us: (f64, f64)) -> Trace {
    let mut rng = Rng::new(seed);
    let count = (rng.uniform() * 9.0) as usize;
    let mut onsets: Vec<f64> = Vec::new();
    let mut amps = Vec::new();
    let mut real = Vec::new();
    let mut tries = 0;
    while onsets.len() < count && tries < 1000 {
        tries += 1;
        let t = rng.range(2.0, duration_s - 10.0);
        if onsets.iter().all(|o: &f64| (o - t).abs() >= 6.0) {
            onsets.push(t);
            amps.push((rng.range(0.04f64.ln(), 1.0f64.ln())).exp());
            real.push(true);
        }
    }
    let ripples = (rng.uniform() * 3.0) as usize;
    for _ in 0..ripples {
        let t = rng.range(2.0, duration_s - 10.0);
        if onsets.iter().all(|o: &f64| (o - t).abs() >= 6.0) {
            onsets.push(t);
            amps.push(rng.range(0.002, 0.008));
            real.push(false);
        }
    }
    let tonic = (rng.range(0.5f64.ln(), 15.0f64.ln())).exp();
    let drift_per_s = rng.range(-0.3, 0.3) / 60.0;
    let noise = rng.range(noise_us.0, noise_us.1);
    let base = scr_trace(
        rng.next_u64(),
        rate_hz,
        duration_s,
        tonic,
        &onsets,
        &amps,
        noise,
    );
    let samples = base
        .samples
        .iter()
        .enumerate()
        .map(|(i, v)| (v + drift_per_s * i as f64 / rate_hz).max(0.0))
        .collect();
    let mut peaks_s: Vec<f64> = base
        .peaks_s
        .iter()
        .zip(&real)
        .filter(|(_, r)| **r)
        .map(|(p, _)| *p)
        .collect();
    peaks_s.sort_by(f64::total_cmp);
    Trace { samples, peaks_s }
}

/// RR intervals (ms) for `duration_s`: mean HR, respiratory sinus arrhythmia
/// of `rsa_ms` amplitude at `breathing_bpm`, Gaussian noise `noise_ms`.
pub fn rr_series(
    rng: &mut Rng,
    start_s: f64,
    duration_s: f64,
    hr_bpm: f64,
    rsa_ms: f64,
    noise_ms: f64,
    breathing_bpm: f64,
) -> Vec<f64> {
    let mean = 60_000.0 / hr_bpm;
    let mut t = start_s;
    let mut out = Vec::new();
    while t < start_s + duration_s {
        let rr = mean
            + rsa_ms * (std::f64::consts::TAU * breathing_bpm / 60.0 * t).sin()
            + noise_ms * rng.normal();
        out.push(rr);
        t += rr / 1000.0;
    }
    out
}

/// The state of a wearer during one phase of a scripted session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct State {
    pub hr_bpm: f64,
    /// Respiratory sinus arrhythmia amplitude, ms (vagal tone).
    pub rsa_ms: f64,
    pub noise_ms: f64,
    pub scl_us: f64,
    pub scr_per_min: f64,
    pub breathing_bpm: f64,
    pub skin_temp_c: f64,
}

impl State {
    /// At rest.
    pub const CALM: State = State {
        hr_bpm: 64.0,
        rsa_ms: 45.0,
        noise_ms: 18.0,
        scl_us: 3.0,
        scr_per_min: 1.5,
        breathing_bpm: 12.0,
        skin_temp_c: 33.4,
    };
    /// Under an acute stressor (e.g. the Trier Social Stress Test): HR up
    /// ~20 bpm, vagal withdrawal, SCL and NS-SCR frequency up, faster
    /// breathing, peripheral vasoconstriction.
    pub const STRESS: State = State {
        hr_bpm: 86.0,
        rsa_ms: 14.0,
        noise_ms: 8.0,
        scl_us: 5.5,
        scr_per_min: 7.0,
        breathing_bpm: 19.0,
        skin_temp_c: 32.6,
    };

    /// Linear mix: 0 = `self`, 1 = `other`.
    pub fn mix(&self, other: &State, k: f64) -> State {
        let m = |a: f64, b: f64| a + (b - a) * k;
        State {
            hr_bpm: m(self.hr_bpm, other.hr_bpm),
            rsa_ms: m(self.rsa_ms, other.rsa_ms),
            noise_ms: m(self.noise_ms, other.noise_ms),
            scl_us: m(self.scl_us, other.scl_us),
            scr_per_min: m(self.scr_per_min, other.scr_per_min),
            breathing_bpm: m(self.breathing_bpm, other.breathing_bpm),
            skin_temp_c: m(self.skin_temp_c, other.skin_temp_c),
        }
    }
}

/// One window of a wearer in `state`: RR intervals, 4 Hz skin conductance,
/// breathing rate and skin temperature, as a payload.
pub fn window(rng: &mut Rng, start_s: f64, duration_s: f64, state: &State) -> Physiological {
    let rr = rr_series(
        rng,
        start_s,
        duration_s,
        state.hr_bpm,
        state.rsa_ms,
        state.noise_ms,
        state.breathing_bpm,
    );
    let rate = 4.0;
    let expected = state.scr_per_min * duration_s / 60.0;
    let mut onsets = Vec::new();
    let mut amps = Vec::new();
    // Poisson-like: place `expected` responses (rounded stochastically).
    let count = expected.floor() as usize + usize::from(rng.uniform() < expected.fract());
    for k in 0..count {
        let slot = (duration_s - 8.0) / count.max(1) as f64;
        onsets.push(1.0 + slot * k as f64 + rng.range(0.0, slot * 0.5));
        amps.push((rng.range(0.05f64.ln(), 0.6f64.ln())).exp());
    }
    let eda = scr_trace(
        rng.next_u64(),
        rate,
        duration_s,
        state.scl_us,
        &onsets,
        &amps,
        0.002,
    );
    Physiological {
        heart_rate_bpm: Some(state.hr_bpm.round()),
        rr_intervals_ms: rr,
        skin_conductance_us: eda.samples,
        eda_sample_rate_hz: Some(rate),
        breathing_rate_bpm: Some(state.breathing_bpm + 0.5 * rng.normal()),
        skin_temperature_c: Some(state.skin_temp_c + 0.05 * rng.normal()),
    }
}

/// Phases of the scripted session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Calm,
    Stress,
    Recovery,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Calm => "calm",
            Phase::Stress => "stress",
            Phase::Recovery => "recovery",
        }
    }
}

/// Length of each window of the scripted session, s.
pub const SESSION_WINDOW_S: f64 = 15.0;

/// A scripted session of one wearer: 5 min calm, 5 min under an acute
/// stressor (reached within the first minute), 5 min of recovery (returning
/// towards calm with a 90-s time constant); one reading per 15-s window.
/// Returns (phase, timestamp ms, payload).
pub fn scripted_session(seed: u64, start_ms: i64) -> Vec<(Phase, i64, Physiological)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let windows = (900.0 / SESSION_WINDOW_S) as usize;
    for k in 0..windows {
        let t = k as f64 * SESSION_WINDOW_S;
        let (phase, state) = if t < 300.0 {
            (Phase::Calm, State::CALM)
        } else if t < 600.0 {
            let ramp = ((t - 300.0 + SESSION_WINDOW_S) / 60.0).min(1.0);
            (Phase::Stress, State::CALM.mix(&State::STRESS, ramp))
        } else {
            let left = (-(t - 600.0 + SESSION_WINDOW_S) / 90.0).exp();
            (Phase::Recovery, State::CALM.mix(&State::STRESS, left))
        };
        let payload = window(&mut rng, t, SESSION_WINDOW_S, &state);
        let end_ms = start_ms + ((t + SESSION_WINDOW_S) * 1000.0) as i64;
        out.push((phase, end_ms, payload));
    }
    out
}
