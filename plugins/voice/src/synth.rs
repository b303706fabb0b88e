//! Synthetic test signals: pure tones, noise, and a band-limited vowel-like
//! source–filter signal whose pitch, intonation, syllable rate, level and
//! spectral tilt are set directly. Used by the unit tests, the quality
//! report and the benchmark; not by the plugin itself.
//!
//! The vowel is additive: every harmonic of the (time-varying) F0 below
//! [`VOWEL_TOP_HZ`] with the amplitude of a glottal source falling at
//! `tilt_db_per_octave` times three formant resonances (/a/: 700, 1220,
//! 2600 Hz; Peterson & Barney 1952). Because it is band-limited below every
//! accepted rate's Nyquist frequency, the same parameters describe the same
//! continuous signal at 8, 16 or 44.1 kHz.

use std::f64::consts::PI;

/// Highest harmonic frequency of the synthetic vowel, Hz.
pub const VOWEL_TOP_HZ: f64 = 3400.0;

/// A pure tone at `freq` Hz, `amplitude` of full scale.
pub fn tone(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (seconds * f64::from(rate)) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            to_i16(amplitude * (2.0 * PI * freq * t).sin())
        })
        .collect()
}

/// White noise (xorshift, deterministic per `seed`), RMS `rms` of full scale.
pub fn noise(rate: u32, seconds: f64, rms: f64, seed: u64) -> Vec<i16> {
    let n = (seconds * f64::from(rate)) as usize;
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Uniform in [-1, 1): RMS 1/√3.
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            to_i16(u * rms * 3f64.sqrt())
        })
        .collect()
}

/// Saturating conversion of a ±1.0 full-scale value.
pub fn to_i16(x: f64) -> i16 {
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Mix `b` into `a` (saturating), sample by sample.
pub fn mix(a: &[i16], b: &[i16]) -> Vec<i16> {
    a.iter()
        .zip(b.iter().chain(std::iter::repeat(&0)))
        .map(|(&x, &y)| (i32::from(x) + i32::from(y)).clamp(-32768, 32767) as i16)
        .collect()
}

/// Parameters of a synthetic vowel-like utterance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Utterance {
    /// Centre F0, Hz.
    pub f0_hz: f64,
    /// Peak-to-peak intonation swing, semitones (a slow sinusoid, 0.7 Hz).
    pub swing_st: f64,
    /// Syllables per second (amplitude modulation; 0 = a steady vowel).
    pub syllables_per_s: f64,
    /// Peak amplitude, fraction of full scale.
    pub peak: f64,
    /// Source spectral slope, dB per octave (−12 is a typical modal voice;
    /// closer to 0 is a pressed, louder voice).
    pub tilt_db_per_octave: f64,
    pub seconds: f64,
}

impl Default for Utterance {
    fn default() -> Self {
        Utterance {
            f0_hz: 120.0,
            swing_st: 4.0,
            syllables_per_s: 4.0,
            peak: 0.3,
            tilt_db_per_octave: -12.0,
            seconds: 2.0,
        }
    }
}

/// Magnitude of a resonance at `freq` Hz with bandwidth `bw` (normalised to 1
/// at DC).
fn resonance(f: f64, freq: f64, bw: f64) -> f64 {
    let num = freq * freq + (bw / 2.0) * (bw / 2.0);
    let a = (f - freq).powi(2) + (bw / 2.0).powi(2);
    let b = (f + freq).powi(2) + (bw / 2.0).powi(2);
    num / (a * b).sqrt()
}

/// Render an utterance at `rate` Hz.
pub fn utterance(u: &Utterance, rate: u32) -> Vec<i16> {
    let fs = f64::from(rate);
    let n = (u.seconds * fs) as usize;
    let max_h = ((VOWEL_TOP_HZ / (u.f0_hz * 2f64.powf(u.swing_st / 24.0))).floor() as usize).max(1);
    let mut phase = vec![0.0f64; max_h];
    let formants = [(700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0)];
    // Amplitude of harmonic h ∝ h^exponent: `tilt` dB per doubling.
    let exponent = u.tilt_db_per_octave / (20.0 * 2f64.log10());
    let mut out = Vec::with_capacity(n);
    let mut peak_seen = 0.0f64;
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / fs;
        let f0 = u.f0_hz * 2f64.powf(u.swing_st / 2.0 * (2.0 * PI * 0.7 * t).sin() / 12.0);
        let env = if u.syllables_per_s > 0.0 {
            // Raised sine per syllable: a peak mid-syllable, a dip between.
            (PI * u.syllables_per_s * t).sin().powi(2)
        } else {
            1.0
        };
        let mut s = 0.0;
        for (k, ph) in phase.iter_mut().enumerate() {
            let h = (k + 1) as f64;
            let f = h * f0;
            *ph += 2.0 * PI * f / fs;
            if f >= VOWEL_TOP_HZ {
                continue;
            }
            let amp = h.powf(exponent)
                * formants
                    .iter()
                    .map(|&(fr, bw)| resonance(f, fr, bw))
                    .product::<f64>();
            s += amp * ph.sin();
        }
        let v = env * s;
        peak_seen = peak_seen.max(v.abs());
        raw.push(v);
    }
    let gain = if peak_seen > 0.0 {
        u.peak / peak_seen
    } else {
        0.0
    };
    out.extend(raw.iter().map(|&v| to_i16(v * gain)));
    out
}
