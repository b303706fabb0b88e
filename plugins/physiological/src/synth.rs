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
    /// Motion spikes added (not responses).
    pub spikes: usize,
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
    Trace {
        samples,
        peaks_s,
        spikes: 0,
    }
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
    Trace {
        samples,
        peaks_s,
        spikes: 0,
    }
}

/// Rise time constant of a Bateman response whose peak comes `rise_s`
/// after its onset, for a recovery time constant `tau_decay` (the time to
/// peak grows with the rise constant; bisection on it).
fn tau_rise_for(rise_s: f64, tau_decay: f64) -> f64 {
    let t_peak = |tr: f64| (tau_decay / tr).ln() * tr * tau_decay / (tau_decay - tr);
    let (mut lo, mut hi) = (1e-3, tau_decay * 0.999);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if t_peak(mid) < rise_s {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Bateman response of peak 1 with the given time constants.
fn bateman_with(t: f64, tau_rise: f64, tau_decay: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    let t_peak = (tau_decay / tau_rise).ln() * tau_rise * tau_decay / (tau_decay - tau_rise);
    let shape = |t: f64| (-t / tau_decay).exp() - (-t / tau_rise).exp();
    shape(t) / shape(t_peak)
}

/// How a wrist-worn sensor's skin conductance is simulated by
/// [`wrist_scr_trace`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrist {
    /// Response amplitudes, µS, log-uniform in this range (equal bounds: all
    /// responses of that amplitude).
    pub amplitude_us: (f64, f64),
    /// Mean responses per minute (placed at random, at least 5 s apart).
    pub responses_per_min: f64,
    /// White sensor noise, SD in µS, uniform in this range.
    pub noise_us: (f64, f64),
    /// Motion spikes per minute.
    pub spikes_per_min: f64,
    /// Tonic level, µS, log-uniform in this range.
    pub tonic_us: (f64, f64),
    /// Largest linear drift of the tonic level, µS per minute (uniform in
    /// ± this).
    pub drift_us_per_min: f64,
}

impl Wrist {
    /// Realistic wrist conditions: tonic 1–20 µS, white noise 0.005–0.01
    /// µS, a motion spike every 40 s on average, 3 responses per minute.
    pub const fn at(amplitude_us: f64) -> Wrist {
        Wrist {
            amplitude_us: (amplitude_us, amplitude_us),
            responses_per_min: 3.0,
            noise_us: (0.005, 0.01),
            spikes_per_min: 1.5,
            tonic_us: (1.0, 20.0),
            drift_us_per_min: 0.3,
        }
    }
}

/// Skin conductance as a wrist sensor records it, with known responses:
///
/// * responses: Bateman shapes with a rise (onset to peak) of 1–3 s and a
///   recovery time constant of 3–10 s (half recovery 2–7 s; Boucsein 2012),
///   placed as a Poisson process at `w.responses_per_min`, at least 5 s
///   apart, none peaking in the last 6 s (still rising at the end);
/// * tonic level from `w.tonic_us`, drifting linearly by up to
///   ±`w.drift_us_per_min` (0.3 µS/min in [`Wrist::at`])
///   plus a slow wander (period 60–180 s, up to 0.05 µS);
/// * white noise from `w.noise_us`, then quantization to a step of
///   0.001–0.01 µS (ADC resolution);
/// * motion spikes: fast symmetric excursions (triangles of 0.1–1 s, 0.05–1
///   µS, two in three upwards) that are not responses and must not count.
///
/// `peaks_s` lists the responses to be found.
pub fn wrist_scr_trace(seed: u64, rate_hz: f64, duration_s: f64, w: &Wrist) -> Trace {
    let mut rng = Rng::new(seed);
    wrist_render(&mut rng, rate_hz, duration_s, w, |_| w.responses_per_min)
}

/// [`wrist_scr_trace`] with a response rate that changes with time
/// (`per_min(t)`, responses per minute at `t` s).
pub fn wrist_render(
    rng: &mut Rng,
    rate_hz: f64,
    duration_s: f64,
    w: &Wrist,
    per_min: impl Fn(f64) -> f64,
) -> Trace {
    // Poisson process by thinning against the fastest rate.
    let max_rate = (0..=(duration_s as usize))
        .map(|t| per_min(t as f64))
        .fold(0.0f64, f64::max);
    let mut responses: Vec<(f64, f64, f64, f64)> = Vec::new(); // onset, amplitude, tau_rise, tau_decay
    if max_rate > 0.0 {
        let mut t = 0.0;
        loop {
            t += rng.exponential(60.0 / max_rate);
            if t > duration_s - 9.0 {
                break;
            }
            let last_ok = responses.last().is_none_or(|r| t - r.0 >= 5.0);
            if rng.uniform() * max_rate < per_min(t) && last_ok {
                let amplitude = rng
                    .range(w.amplitude_us.0.ln(), w.amplitude_us.1.ln())
                    .exp();
                let tau_decay = rng.range(3.0, 10.0);
                let tau_rise = tau_rise_for(rng.range(1.0, 3.0), tau_decay);
                responses.push((t, amplitude, tau_rise, tau_decay));
            }
        }
    }
    let spike_count = (rng.range(0.0, 2.0) * w.spikes_per_min * duration_s / 60.0) as usize;
    let spikes: Vec<(f64, f64, f64)> = (0..spike_count)
        .map(|_| {
            let sign = if rng.uniform() < 2.0 / 3.0 { 1.0 } else { -1.0 };
            (
                rng.range(0.0, duration_s),
                rng.range(0.1, 1.0),
                sign * rng.range(0.05f64.ln(), 1.0f64.ln()).exp(),
            )
        })
        .collect();
    let tonic = rng.range(w.tonic_us.0.ln(), w.tonic_us.1.ln()).exp();
    let drift_per_s = rng.range(-w.drift_us_per_min, w.drift_us_per_min) / 60.0;
    let wander = rng.range(0.0, 0.05);
    let wander_period = rng.range(60.0, 180.0);
    let wander_phase = rng.range(0.0, std::f64::consts::TAU);
    let noise = rng.range(w.noise_us.0, w.noise_us.1);
    let step = [0.001, 0.002, 0.005, 0.01][(rng.uniform() * 4.0) as usize];
    let n = (duration_s * rate_hz) as usize;
    let samples = (0..n)
        .map(|i| {
            let t = i as f64 / rate_hz;
            let phasic: f64 = responses
                .iter()
                .filter(|r| r.0 < t && t - r.0 < 20.0 * r.3)
                .map(|&(o, a, tr, td)| a * bateman_with(t - o, tr, td))
                .sum();
            let spike: f64 = spikes
                .iter()
                .map(|&(at, width, a)| a * (1.0 - 2.0 * (t - at).abs() / width).max(0.0))
                .sum();
            let drift = drift_per_s * t
                + wander * (std::f64::consts::TAU * t / wander_period + wander_phase).sin();
            let v = tonic + drift + phasic + spike + noise * rng.normal();
            ((v / step).round() * step).max(0.0)
        })
        .collect();
    let peaks_s = responses
        .iter()
        .map(|&(o, _, tr, td)| o + (td / tr).ln() * tr * td / (td - tr))
        .collect();
    Trace {
        samples,
        peaks_s,
        spikes: spike_count,
    }
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

/// A session of a wrist sensor that records skin conductance only (4 Hz,
/// [`Wrist`] noise, a slow drift and motion spikes), every response of
/// `amplitude_us`: 5 min calm (1.5 non-specific responses per minute), 5 min
/// of stress (7 per minute before the 5-s spacing thins them, reached
/// within a minute), 5 min of recovery (back towards calm with a 90-s time
/// constant). The tonic level does not follow the phases, so only the
/// response rate tells stress from calm. One reading per 15-s window of the
/// continuous trace: (phase, timestamp ms at the window's end, payload,
/// responses peaking in the window).
pub fn wrist_eda_session(
    seed: u64,
    start_ms: i64,
    amplitude_us: f64,
) -> Vec<(Phase, i64, Physiological, usize)> {
    let mut rng = Rng::new(seed);
    let rate = 4.0;
    let calm = State::CALM.scr_per_min;
    let stress = State::STRESS.scr_per_min;
    let per_min = |t: f64| {
        if t < 300.0 {
            calm
        } else if t < 600.0 {
            calm + (stress - calm) * ((t - 300.0) / 60.0).min(1.0)
        } else {
            calm + (stress - calm) * (-(t - 600.0) / 90.0).exp()
        }
    };
    // A tonic level that holds over the quarter hour (drift up to 0.05
    // µS/min): 0.3 µS/min for 15 min would move a low level severalfold and
    // rank the phases by drift, not by responses.
    let w = Wrist {
        drift_us_per_min: 0.05,
        ..Wrist::at(amplitude_us)
    };
    let trace = wrist_render(&mut rng, rate, 909.0, &w, per_min);
    let per_window = (SESSION_WINDOW_S * rate) as usize;
    (0..(900.0 / SESSION_WINDOW_S) as usize)
        .map(|k| {
            let t = k as f64 * SESSION_WINDOW_S;
            let phase = if t < 300.0 {
                Phase::Calm
            } else if t < 600.0 {
                Phase::Stress
            } else {
                Phase::Recovery
            };
            let samples = trace.samples[k * per_window..(k + 1) * per_window].to_vec();
            let truth = trace
                .peaks_s
                .iter()
                .filter(|p| (t..t + SESSION_WINDOW_S).contains(*p))
                .count();
            let payload = Physiological {
                heart_rate_bpm: None,
                rr_intervals_ms: Vec::new(),
                skin_conductance_us: samples,
                eda_sample_rate_hz: Some(rate),
                breathing_rate_bpm: None,
                skin_temperature_c: None,
            };
            let end_ms = start_ms + ((t + SESSION_WINDOW_S) * 1000.0) as i64;
            (phase, end_ms, payload, truth)
        })
        .collect()
}
