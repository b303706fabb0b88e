//! Every input rate onto one analysis rate: 8 kHz, the telephone band.
//!
//! The plugin accepts PCM at any rate from 8 kHz up. Analysing everything at
//! the lowest accepted rate makes 8 kHz input first-class and the features
//! independent of the rate the device happened to record at: a 44.1 kHz and
//! an 8 kHz recording of the same voice go through the same band (below
//! [`CUTOFF_HZ`]) and the same filters from here on.
//!
//! The resampler is a Kaiser-windowed sinc low-pass evaluated at the output
//! instants (Smith, *Digital Audio Resampling*, CCRMA; the Kaiser window as in
//! Oppenheim & Schafer, *Discrete-Time Signal Processing*, §7.5.3). Its
//! coefficients are tabulated for [`PHASES`] fractional positions per input
//! sample (position error at most 1/(2·PHASES) of an input sample), each phase
//! normalised to unit DC gain. The same filter is applied at 8 kHz input, so
//! every rate sees the same pass band. Tables are cached per input rate.

use std::sync::{Arc, Mutex};

/// The rate every signal is analysed at, Hz.
pub const ANALYSIS_RATE: u32 = 8000;
/// Low-pass cut-off (the −6 dB point), Hz.
pub const CUTOFF_HZ: f64 = 3600.0;
/// Half the filter's length, seconds (the filter spans ±2 ms).
const HALF_WIDTH_S: f64 = 0.002;
/// Kaiser β: about 70 dB stop-band attenuation.
const BETA: f64 = 7.0;
/// Tabulated fractional positions per input sample.
pub const PHASES: usize = 128;
/// Cached tables (one per input rate).
const CACHE: usize = 4;

/// A tabulated polyphase low-pass for one input rate.
#[derive(Debug)]
pub struct Resampler {
    rate: u32,
    /// Taps per phase: input samples `i0 - half + 1 ..= i0 + half`.
    half: usize,
    /// `(PHASES + 1) * 2 * half` coefficients, phase-major.
    table: Vec<f32>,
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut sum, mut term) = (1.0, 1.0);
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// The filter for `rate` Hz input (at least [`ANALYSIS_RATE`]).
    pub fn new(rate: u32) -> Self {
        let fs = f64::from(rate);
        let half = (HALF_WIDTH_S * fs).ceil().max(1.0) as usize;
        let taps = 2 * half;
        let span = HALF_WIDTH_S * fs; // in input samples
        let norm = bessel_i0(BETA);
        let fc = 2.0 * CUTOFF_HZ / fs; // cut-off as a fraction of the input rate
        let mut table = Vec::with_capacity((PHASES + 1) * taps);
        for phase in 0..=PHASES {
            let frac = phase as f64 / PHASES as f64;
            let start = table.len();
            for j in 0..taps {
                // Offset of tap j from the output instant, in input samples.
                let t = j as f64 - (half as f64 - 1.0) - frac;
                let r = t / span;
                let w = if r.abs() >= 1.0 {
                    0.0
                } else {
                    bessel_i0(BETA * (1.0 - r * r).sqrt()) / norm
                };
                let arg = std::f64::consts::PI * fc * t;
                let sinc = if arg.abs() < 1e-12 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                table.push((fc * sinc * w) as f32);
            }
            let sum: f32 = table[start..].iter().sum();
            if sum.abs() > f32::EPSILON {
                for c in &mut table[start..] {
                    *c /= sum;
                }
            }
        }
        Resampler { rate, half, table }
    }

    /// The (cached) filter for `rate` Hz input.
    pub fn cached(rate: u32) -> Arc<Resampler> {
        static CACHED: Mutex<Vec<Arc<Resampler>>> = Mutex::new(Vec::new());
        let mut cache = CACHED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = cache.iter().position(|r| r.rate == rate) {
            let r = cache.remove(pos);
            cache.push(Arc::clone(&r));
            return r;
        }
        let r = Arc::new(Resampler::new(rate));
        if cache.len() >= CACHE {
            cache.remove(0);
        }
        cache.push(Arc::clone(&r));
        r
    }

    /// Resample 16-bit samples to [`ANALYSIS_RATE`], scaled to ±1.0 full scale.
    pub fn run(&self, samples: &[i16]) -> Vec<f32> {
        if samples.is_empty() {
            return Vec::new();
        }
        let half = self.half;
        let taps = 2 * half;
        // Zero padding on both sides: every output reads a full window (one
        // spare sample at the end for a phase rounded up to the next sample).
        let mut x = vec![0.0f32; samples.len() + 2 * half + 1];
        for (d, &s) in x[half..].iter_mut().zip(samples) {
            *d = f32::from(s) / 32768.0;
        }
        let rate = u64::from(self.rate);
        let out_rate = u64::from(ANALYSIS_RATE);
        let n_out = ((samples.len() as u64 - 1) * out_rate / rate + 1) as usize;
        let mut out = Vec::with_capacity(n_out);
        for n in 0..n_out as u64 {
            // Output instant n/8000 s is input position n·rate/8000.
            let num = n * rate;
            let mut i0 = (num / out_rate) as usize;
            let mut phase =
                ((num % out_rate) * PHASES as u64 + out_rate / 2) as usize / out_rate as usize;
            if phase >= PHASES {
                phase -= PHASES;
                i0 += 1;
            }
            // Taps cover input samples i0 - half + 1 ..= i0 + half, i.e. padded
            // indices i0 + 1 .. i0 + 2·half + 1.
            let window = &x[i0 + 1..i0 + 1 + taps];
            let coefs = &self.table[phase * taps..(phase + 1) * taps];
            out.push(crate::dsp::dot(window, coefs));
        }
        out
    }
}

/// Resample to the analysis rate with the cached filter for `rate`.
pub fn to_analysis_rate(samples: &[i16], rate: u32) -> Vec<f32> {
    Resampler::cached(rate).run(samples)
}
