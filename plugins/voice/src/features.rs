//! From raw PCM to prosodic features.
//!
//! 1. The signal is resampled to 8 kHz ([`crate::resample`]), high-passed at
//!    50 Hz (DC, hum, handling noise) and split at 1 kHz into a low and a
//!    high band (two cascaded Butterworth sections each), and into the vowel
//!    band 300–2500 Hz, all in one pass.
//! 2. Frames: 20 ms windows every 10 ms. Frame power gives the level contour;
//!    frames within 30 dB of the loudest (the 99th percentile) and clear of
//!    the noise floor (10th percentile + 6 dB, when there are pauses to
//!    measure it on) are *active* speech.
//! 3. Pitch: YIN (de Cheveigné & Kawahara 2002) on the low band, searched
//!    coarsely at 4 kHz (25 ms integration window, lags for 50–500 Hz,
//!    absolute threshold 0.15 on the cumulative-mean-normalised difference)
//!    and refined at 8 kHz around the coarse lag with parabolic
//!    interpolation. A frame is voiced when it is active, its aperiodicity
//!    d′ is below 0.35 and its F0 is within 50–500 Hz, or when its d′ is
//!    below 0.5 and it continues a voiced run within 1.5 semitones
//!    (hysteresis). Voiced runs shorter than 30 ms are dropped, the contour
//!    is median-filtered over five frames, which removes isolated octave
//!    jumps, and runs or frames more than an octave above the utterance's
//!    median F0 are dropped.
//! 4. Syllable nuclei (after de Jong & Wempe 2009): peaks of the smoothed
//!    level contour in the vowel band (300–2500 Hz) at most 25 dB below its
//!    99th percentile, each more than 2 dB above the dip that separates it
//!    from the next peak, and voiced (or periodic and low-band dominated).
//!    Speech rate = nuclei per second of speaking time (pauses of 0.3 s and
//!    more excluded: an articulation rate).
//! 5. Spectral balance: energy above 1 kHz over energy below it in voiced
//!    frames, in dB — the alpha ratio of eGeMAPS (Eyben et al. 2016) limited
//!    to the telephone band.
//! 6. Quality: clipped samples, a signal-to-noise estimate (active level over
//!    the pause floor, or the periodicity of voiced frames when there are no
//!    pauses), the duration of speech and the voiced fraction.

use crate::dsp::{self, Biquad};
use crate::resample::{self, ANALYSIS_RATE};

/// Lowest accepted input rate, Hz.
pub const MIN_RATE: u32 = 8000;
/// Highest accepted input rate, Hz.
pub const MAX_RATE: u32 = 384_000;
/// Shortest accepted audio, seconds.
pub const MIN_SECONDS: f64 = 0.1;

/// Lowest and highest F0 searched, Hz.
pub const F0_MIN_HZ: f64 = 50.0;
pub const F0_MAX_HZ: f64 = 500.0;

/// Frame hop (10 ms) and energy window (20 ms) at 8 kHz.
const HOP: usize = 80;
const WIN: usize = 160;
/// Seconds per frame hop.
pub const FRAME_S: f64 = HOP as f64 / ANALYSIS_RATE as f64;

/// YIN at 4 kHz: 25 ms integration window, lags 7..=80 (about 570–50 Hz).
const W4: usize = 100;
const TAU_MIN4: usize = 7;
const TAU_MAX4: usize = 80;
/// Refinement at 8 kHz: 25 ms integration window.
const W8: usize = 200;
/// YIN's absolute threshold (step 4).
const YIN_THRESHOLD: f64 = 0.15;
/// Highest aperiodicity d′ of a voiced frame.
const VOICED_MAX_APERIODICITY: f64 = 0.35;
/// Shortest voiced run kept, frames.
const MIN_VOICED_RUN: usize = 3;
/// Fewest voiced frames for an F0 estimate.
pub const MIN_VOICED_FRAMES: usize = MIN_VOICED_RUN;

/// Frames quieter than this (dBFS) are never speech.
const ABSOLUTE_FLOOR_DB: f64 = -70.0;
/// Active speech: within this many dB of the loudest frames...
const ACTIVE_RANGE_DB: f64 = 30.0;
/// ...and this far above the noise floor.
const ABOVE_NOISE_DB: f64 = 6.0;
/// Syllable nuclei: peaks within this many dB of the loudest, and standing
/// more than this many dB above their surroundings (de Jong & Wempe 2009;
/// the middle of the soft count's ramp).
const NUCLEUS_RANGE_DB: f64 = 25.0;
const NUCLEUS_MIN_DIP_DB: f64 = 2.0;
/// A peak counts in proportion to its prominence from this far below
/// [`NUCLEUS_MIN_DIP_DB`] to this far above it (from 1 dB, in full at 3 dB).
const NUCLEUS_DIP_RAMP_DB: f64 = 1.0;
/// Shortest pause, frames (0.3 s).
const MIN_PAUSE_FRAMES: usize = 30;
/// The F0 range is read between these percentiles of the voiced frames ...
const RANGE_LOW_Q: f64 = 0.15;
/// ... and scaled to the 10th–90th percentile range that a normal spread with
/// those percentiles has (z(0.90) / z(0.85)), which the norms and the
/// `prosody` input's `f0_range_hz` are stated in. Read at the 10th and 90th
/// percentiles directly, a creaky phrase end voiced in one rendering and not
/// in the next moved the range by several semitones (README, *One factor at
/// a time*).
const RANGE_TO_P10_P90: f64 = 1.281_551_6 / 1.036_433_4;

/// Offset from a frame's centre to the start of its YIN window at 8 kHz:
/// half the span of integration window plus largest lag (even, so that the
/// 4 kHz window starts on a sample of its own).
const YIN_HALF_SPAN8: usize = (W8 + 2 * TAU_MAX4) / 2 / 2 * 2;
/// Zero padding around the low-band signals, 8 kHz samples (even).
const PAD8: usize = YIN_HALF_SPAN8 + 16;

/// Why a PCM reading could not be analysed.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisError {
    /// The audio itself is unusable (empty, bad rate, too short).
    Invalid(String),
    /// Readable audio without speech in it (silence, noise, no voicing).
    NoSpeech(String),
}

impl std::fmt::Display for AnalysisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnalysisError::Invalid(m) | AnalysisError::NoSpeech(m) => f.write_str(m),
        }
    }
}

/// Everything measured on one PCM reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Input rate, Hz.
    pub sample_rate: u32,
    /// Length of the input, seconds.
    pub duration_s: f64,
    /// Length analysed (the most recent `max_seconds`), seconds.
    pub analysed_s: f64,
    /// Frames (10 ms), active frames, voiced frames.
    pub frames: usize,
    pub active_frames: usize,
    pub voiced_frames: usize,
    /// Voiced frames over active frames.
    pub voiced_fraction: f64,
    /// Time between the first and last active frame without pauses ≥ 0.3 s.
    pub speaking_s: f64,
    /// F0 statistics over voiced frames, Hz.
    pub f0_mean_hz: f64,
    pub f0_median_hz: f64,
    pub f0_p10_hz: f64,
    pub f0_p90_hz: f64,
    /// The 10th–90th percentile range, semitones, estimated from the 15th
    /// and 85th percentiles ([`RANGE_TO_P10_P90`]).
    pub f0_range_st: f64,
    /// Standard deviation of F0, semitones.
    pub f0_sd_st: f64,
    /// Active speech level, dBFS (RMS re a full-scale square wave).
    pub loudness_dbfs: f64,
    /// Energy above 1 kHz over energy below, voiced frames, dB.
    pub alpha_ratio_db: f64,
    /// Harmonics-to-noise ratio of voiced frames below 1 kHz, dB (median).
    pub hnr_low_band_db: f64,
    /// Syllable nuclei found (soft count, see `syllable_nuclei`), and nuclei
    /// per second of speaking time
    /// (`None` with less than 0.3 s of speaking time).
    pub nuclei: f64,
    pub speech_rate: Option<f64>,
    /// Signal-to-noise estimate, dB.
    pub snr_db: f64,
    /// Fraction of input samples at full scale.
    pub clipped_fraction: f64,
    /// Per-frame F0 (Hz; 0 = unvoiced), for diagnostics and tests.
    pub f0_track: Vec<f32>,
}

/// Analyse mono 16-bit PCM at `rate` Hz; at most the last `max_seconds`.
pub fn analyze(samples: &[i16], rate: u32, max_seconds: f64) -> Result<Analysis, AnalysisError> {
    use AnalysisError::{Invalid, NoSpeech};
    if rate == 0 {
        return Err(Invalid("sample rate must not be 0".into()));
    }
    if rate < MIN_RATE {
        return Err(Invalid(format!(
            "sample rate {rate} Hz is below the {MIN_RATE} Hz minimum"
        )));
    }
    if rate > MAX_RATE {
        return Err(Invalid(format!(
            "sample rate {rate} Hz is above the {MAX_RATE} Hz maximum"
        )));
    }
    if samples.is_empty() {
        return Err(Invalid("empty audio: no samples".into()));
    }
    let duration_s = samples.len() as f64 / f64::from(rate);
    if duration_s < MIN_SECONDS {
        return Err(Invalid(format!(
            "audio too short: {:.0} ms, at least {:.0} ms needed",
            duration_s * 1e3,
            MIN_SECONDS * 1e3
        )));
    }
    let keep = ((max_seconds.max(MIN_SECONDS) * f64::from(rate)) as usize).max(1);
    let used = &samples[samples.len().saturating_sub(keep)..];
    let analysed_s = used.len() as f64 / f64::from(rate);
    let clipped = used
        .iter()
        .filter(|&&s| s == i16::MAX || s <= -i16::MAX)
        .count();
    let clipped_fraction = clipped as f64 / used.len() as f64;

    // 1. Analysis-rate signal and bands, 2. frames.
    let x = resample::to_analysis_rate(used, rate);
    if x.len() < WIN {
        return Err(Invalid("audio too short for one analysis frame".into()));
    }
    let frames = (x.len() - WIN) / HOP + 1;
    let Bands {
        low,
        p_full,
        p_low,
        p_high,
        p_vowel,
    } = bands(&x, frames);
    let level: Vec<f64> = p_full.iter().map(|&p| dsp::db(p)).collect();
    let sorted_level = dsp::sorted(level.clone());
    let loudest = dsp::quantile(&sorted_level, 0.99).unwrap_or(-120.0);
    let noise_floor = dsp::quantile(&sorted_level, 0.10).unwrap_or(-120.0);
    if loudest < ABSOLUTE_FLOOR_DB {
        return Err(NoSpeech(format!(
            "no speech: silence (loudest frames at {loudest:.0} dBFS)"
        )));
    }
    let threshold = (loudest - ACTIVE_RANGE_DB)
        .max((noise_floor + ABOVE_NOISE_DB).min(loudest - 10.0))
        .max(ABSOLUTE_FLOOR_DB);
    let active: Vec<bool> = level.iter().map(|&l| l >= threshold).collect();
    let active_frames = active.iter().filter(|&&a| a).count();

    // 3. Pitch on the active frames.
    let (pitch, aperiodicity) = track_pitch(&low, &active);
    let mut f0: Vec<f64> = pitch
        .iter()
        .zip(&aperiodicity)
        .map(|(p, &a)| match p {
            Some(p) if a <= VOICED_MAX_APERIODICITY => p.f0,
            _ => 0.0,
        })
        .collect();
    extend_runs(&mut f0, &pitch);
    clean_track(&mut f0);
    let voiced: Vec<usize> = (0..frames).filter(|&i| f0[i] > 0.0).collect();
    if voiced.len() < MIN_VOICED_FRAMES {
        return Err(NoSpeech(format!(
            "no voiced speech: {} voiced frames of 10 ms in {active_frames} active ones",
            voiced.len()
        )));
    }
    let hz = dsp::sorted(voiced.iter().map(|&i| f0[i]).collect());
    let st: Vec<f64> = hz.iter().map(|&f| semitones(f)).collect();
    let f0_mean_hz = hz.iter().sum::<f64>() / hz.len() as f64;
    let f0_median_hz = dsp::quantile(&hz, 0.5).unwrap_or(f0_mean_hz);
    let f0_p10_hz = dsp::quantile(&hz, 0.1).unwrap_or(f0_mean_hz);
    let f0_p90_hz = dsp::quantile(&hz, 0.9).unwrap_or(f0_mean_hz);
    let f0_range_st = RANGE_TO_P10_P90
        * (dsp::quantile(&st, 1.0 - RANGE_LOW_Q).unwrap_or(0.0)
            - dsp::quantile(&st, RANGE_LOW_Q).unwrap_or(0.0));
    let st_mean = st.iter().sum::<f64>() / st.len() as f64;
    let f0_sd_st = (st.iter().map(|s| (s - st_mean).powi(2)).sum::<f64>() / st.len() as f64).sqrt();

    // Levels and spectral balance.
    let active_power: f64 = (0..frames).filter(|&i| active[i]).map(|i| p_full[i]).sum();
    let loudness_dbfs = dsp::db(active_power / active_frames.max(1) as f64);
    let (vl, vh) = voiced
        .iter()
        .fold((0.0, 0.0), |(l, h), &i| (l + p_low[i], h + p_high[i]));
    let alpha_ratio_db = dsp::db(vh) - dsp::db(vl);
    let hnr: Vec<f64> = voiced
        .iter()
        .filter_map(|&i| pitch[i].map(|p| p.periodicity))
        .map(|r| {
            let r = r.clamp(1e-4, 1.0 - 1e-4);
            10.0 * (r / (1.0 - r)).log10()
        })
        .collect();
    let hnr_low_band_db = dsp::median(&hnr).unwrap_or(0.0);

    // 4. Syllable nuclei and speaking time.
    let nuclei = syllable_nuclei(
        &Contours {
            vowel: &p_vowel,
            low: &p_low,
            high: &p_high,
            f0: &f0,
            aperiodicity: &aperiodicity,
        },
        threshold,
    );
    let speaking = speaking_frames(&active);
    let speaking_s = speaking as f64 * FRAME_S;
    let speech_rate = (speaking >= MIN_PAUSE_FRAMES).then(|| nuclei / speaking_s);

    // 6. Signal-to-noise: the pause floor, or periodicity without pauses.
    let pause_snr = loudness_dbfs - noise_floor;
    let snr_db = pause_snr.max(hnr_low_band_db).clamp(-20.0, 60.0);

    Ok(Analysis {
        sample_rate: rate,
        duration_s,
        analysed_s,
        frames,
        active_frames,
        voiced_frames: voiced.len(),
        voiced_fraction: voiced.len() as f64 / active_frames.max(1) as f64,
        speaking_s,
        f0_mean_hz,
        f0_median_hz,
        f0_p10_hz,
        f0_p90_hz,
        f0_range_st,
        f0_sd_st,
        loudness_dbfs,
        alpha_ratio_db,
        hnr_low_band_db,
        nuclei,
        speech_rate,
        snr_db,
        clipped_fraction,
        f0_track: f0.iter().map(|&f| f as f32).collect(),
    })
}

/// Semitones re 1 Hz.
pub fn semitones(hz: f64) -> f64 {
    12.0 * hz.max(1e-9).log2()
}

/// The analysis bands of the 8 kHz signal and their frame powers.
struct Bands {
    /// Below 1 kHz, for the pitch tracker.
    low: Vec<f32>,
    /// Mean power of each 20 ms frame (hop 10 ms): the whole band (above
    /// 50 Hz), below and above 1 kHz, and the vowel band (300–2500 Hz, F1
    /// and F2) the syllable nuclei are read on: nasals, laterals and voiced
    /// fricatives have little energy there, so the dips between fast
    /// syllables stay deep where the full-band level merges them.
    p_full: Vec<f64>,
    p_low: Vec<f64>,
    p_high: Vec<f64>,
    p_vowel: Vec<f64>,
}

/// One pass over the signal runs every filter section (a 50 Hz high-pass;
/// then two low-pass and two high-pass sections at 1 kHz, and two high-pass
/// at 300 Hz followed by two low-pass at 2500 Hz, all Butterworth) and sums
/// each band's energy per 10 ms hop. Each section's recursion is a chain of
/// dependent multiply-adds; run side by side the nine chains overlap, where
/// nine passes over the signal each waited on one chain (and four prefix
/// sums on another).
fn bands(x: &[f32], frames: usize) -> Bands {
    let fs = f64::from(ANALYSIS_RATE);
    let q = std::f64::consts::FRAC_1_SQRT_2;
    let dc = Biquad::highpass(fs, 50.0, q);
    let lp = Biquad::lowpass(fs, 1000.0, q);
    let hp = Biquad::highpass(fs, 1000.0, q);
    let v_lo = Biquad::highpass(fs, 300.0, q);
    let v_hi = Biquad::lowpass(fs, 2500.0, q);
    let mut z = [[0.0f32; 2]; 9];
    let mut low = vec![0.0f32; x.len()];
    // Hop energies: frame i spans hops i and i + 1.
    let hops = frames + 1;
    let mut e = vec![[0.0f64; 4]; hops];
    for (h, (chunk, out)) in x.chunks(HOP).zip(low.chunks_mut(HOP)).enumerate() {
        let mut acc = [0.0f32; 4];
        for (&v, o) in chunk.iter().zip(out.iter_mut()) {
            let s = dc.step(&mut z[0], v);
            let l = lp.step(&mut z[1], s);
            let l = lp.step(&mut z[2], l);
            let hi = hp.step(&mut z[3], s);
            let hi = hp.step(&mut z[4], hi);
            let vb = v_lo.step(&mut z[5], s);
            let vb = v_lo.step(&mut z[6], vb);
            let vb = v_hi.step(&mut z[7], vb);
            let vb = v_hi.step(&mut z[8], vb);
            *o = l;
            acc[0] += s * s;
            acc[1] += l * l;
            acc[2] += hi * hi;
            acc[3] += vb * vb;
        }
        if let Some(slot) = e.get_mut(h) {
            *slot = acc.map(f64::from);
        }
    }
    let power = |k: usize| -> Vec<f64> {
        (0..frames)
            .map(|i| (e[i][k] + e[i + 1][k]).max(0.0) / WIN as f64)
            .collect()
    };
    Bands {
        p_full: power(0),
        p_low: power(1),
        p_high: power(2),
        p_vowel: power(3),
        low,
    }
}

#[derive(Debug, Clone, Copy)]
struct Pitch {
    f0: f64,
    /// Normalised autocorrelation at the period (0..1).
    periodicity: f64,
}

/// YIN on the active frames of the low band: the pitch (`None` for unvoiced
/// frames) and the aperiodicity of YIN's pick (∞ where it did not run).
fn track_pitch(low: &[f32], active: &[bool]) -> (Vec<Option<Pitch>>, Vec<f64>) {
    // Zero-padded low band at 8 kHz and its 2:1 decimation (the band is
    // below 1 kHz, so 4 kHz sampling aliases little).
    let tail = PAD8 + W8 + 2 * TAU_MAX4 + 16;
    let mut x8 = vec![0.0f32; PAD8 + low.len() + tail];
    x8[PAD8..PAD8 + low.len()].copy_from_slice(low);
    let x4: Vec<f32> = x8.iter().step_by(2).copied().collect();
    let pre8 = dsp::prefix_squares(&x8);
    let pre4 = dsp::prefix_squares(&x4);
    let mut d4 = [0.0f64; TAU_MAX4 + 1];
    let mut cmnd = [0.0f64; TAU_MAX4 + 1];
    let mut d8 = [f64::INFINITY; 2 * TAU_MAX4 + 8];
    let tau_max8 = d8.len() - 2;
    let mut out = vec![None; active.len()];
    let mut aper = vec![f64::INFINITY; active.len()];
    let mut segments = Segments::new();
    for (i, slot) in out.iter_mut().enumerate() {
        if !active[i] {
            continue;
        }
        // Windows centred on the energy frame's centre (i·HOP + WIN/2).
        let start8 = i * HOP + WIN / 2 + PAD8 - YIN_HALF_SPAN8;
        let start4 = start8 / 2;
        segments.difference(&x4, &pre4, start4, &mut d4);
        let Some(pick) = dsp::yin_pick(&d4, TAU_MIN4, TAU_MAX4, YIN_THRESHOLD, &mut cmnd) else {
            continue;
        };
        aper[i] = pick.aperiodicity;
        if pick.aperiodicity > WEAK_MAX_APERIODICITY {
            continue;
        }
        // Refine at 8 kHz around twice the coarse lag.
        d8.fill(f64::INFINITY);
        let centre = 2 * pick.lag;
        let (mut lo, mut hi) = (centre.saturating_sub(2).max(2), (centre + 2).min(tau_max8));
        dsp::difference(&x8, &pre8, start8, W8, lo..=hi, &mut d8);
        let mut best = argmin(&d8, lo, hi);
        for _ in 0..3 {
            if best == lo && lo > 2 {
                lo -= 1;
                dsp::difference(&x8, &pre8, start8, W8, lo..=lo, &mut d8);
            } else if best == hi && hi < tau_max8 {
                hi += 1;
                dsp::difference(&x8, &pre8, start8, W8, hi..=hi, &mut d8);
            } else {
                break;
            }
            best = argmin(&d8, lo, hi);
        }
        let mut lag = best as f64;
        if best > lo && best < hi {
            lag += dsp::parabolic_offset(d8[best - 1], d8[best], d8[best + 1]);
        } else {
            // Neighbours for the interpolation, computed on demand.
            dsp::difference(&x8, &pre8, start8, W8, best - 1..=best + 1, &mut d8);
            lag += dsp::parabolic_offset(d8[best - 1], d8[best], d8[best + 1]);
        }
        let f0 = f64::from(ANALYSIS_RATE) / lag;
        if !(F0_MIN_HZ..=F0_MAX_HZ).contains(&f0) {
            continue;
        }
        let e0 = dsp::energy(&pre8, start8, W8);
        let et = dsp::energy(&pre8, start8 + best, W8);
        let periodicity = if e0 + et > 0.0 {
            (1.0 - d8[best] / (e0 + et)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        *slot = Some(Pitch { f0, periodicity });
    }
    (out, aper)
}

/// Samples per segment of the coarse search (4 kHz): 5 ms, dividing both
/// the integration window and the hop.
const SEG4: usize = 20;
const _: () = assert!(W4.is_multiple_of(SEG4) && (HOP / 2).is_multiple_of(SEG4));
/// Segments kept: a window spans `W4 / SEG4` of them.
const SEG_SLOTS: usize = 8;
const _: () = assert!(SEG_SLOTS >= W4 / SEG4);

/// The coarse search's difference function from segment sums. Windows of
/// neighbouring frames overlap by 60 %, so the lag products of each 5 ms
/// segment, Σ x[p+j]·x[p+j+τ] over its 20 samples, are computed once and a
/// frame's correlation r(τ) is the sum of its window's five segments: 2
/// new segments per frame instead of a whole 25 ms window (2.5× fewer
/// multiply-adds; SIMD-less WebAssembly spends most of its time here).
struct Segments {
    /// (segment start in x4, its products for τ = 0..=TAU_MAX4).
    slots: Vec<(usize, [f32; TAU_MAX4 + 1])>,
}

impl Segments {
    fn new() -> Self {
        Segments {
            slots: vec![(usize::MAX, [0.0; TAU_MAX4 + 1]); SEG_SLOTS],
        }
    }

    /// d(τ) for τ = 1..=TAU_MAX4 of the window of `W4` samples at `start`
    /// (frames a hop apart share segments), as [`dsp::difference`] computes it.
    fn difference(&mut self, x: &[f32], prefix: &[f64], start: usize, out: &mut [f64]) {
        let mut r = [0.0f64; TAU_MAX4 + 1];
        for p in (start..start + W4).step_by(SEG4) {
            let slot = &mut self.slots[(p / SEG4) % SEG_SLOTS];
            if slot.0 != p {
                let head = &x[p..p + SEG4];
                for (tau, c) in slot.1.iter_mut().enumerate() {
                    *c = dsp::dot(head, &x[p + tau..p + tau + SEG4]);
                }
                slot.0 = p;
            }
            for (acc, &c) in r.iter_mut().zip(&slot.1) {
                *acc += f64::from(c);
            }
        }
        let e0 = dsp::energy(prefix, start, W4);
        for tau in 1..=TAU_MAX4 {
            let et = dsp::energy(prefix, start + tau, W4);
            out[tau] = dsp::non_negative(e0 + et - 2.0 * r[tau]);
        }
    }
}

fn argmin(d: &[f64], lo: usize, hi: usize) -> usize {
    let mut best = lo;
    for t in lo..=hi {
        if d[t] < d[best] {
            best = t;
        }
    }
    best
}

/// Aperiodicity up to which a frame may continue a voiced run (hysteresis).
const WEAK_MAX_APERIODICITY: f64 = 0.5;
/// Largest F0 step, semitones per frame, for a weakly periodic frame to
/// continue a run.
const WEAK_MAX_STEP_ST: f64 = 1.5;

/// Voicing with hysteresis: a weakly periodic frame (d′ up to 0.5) is voiced
/// when it continues a voiced run smoothly. The onsets and the falling, often
/// creaky, ends of phrases sit near the 0.35 limit, so without this how much
/// of them counts as voiced (and so the F0 range) flips with small changes of
/// speed, level or range.
fn extend_runs(f0: &mut [f64], pitch: &[Option<Pitch>]) {
    let continues = |prev: f64, p: Option<Pitch>| {
        p.filter(|p| prev > 0.0 && (semitones(p.f0) - semitones(prev)).abs() <= WEAK_MAX_STEP_ST)
            .map(|p| p.f0)
    };
    for i in 1..f0.len() {
        if f0[i] <= 0.0
            && let Some(f) = continues(f0[i - 1], pitch[i])
        {
            f0[i] = f;
        }
    }
    for i in (0..f0.len().saturating_sub(1)).rev() {
        if f0[i] <= 0.0
            && let Some(f) = continues(f0[i + 1], pitch[i])
        {
            f0[i] = f;
        }
    }
}

/// Drop voiced runs shorter than [`MIN_VOICED_RUN`] frames and median-filter
/// F0 (in semitones) over five frames within each run.
fn clean_track(f0: &mut [f64]) {
    for r in voiced_runs(f0) {
        let run = &mut f0[r];
        if run.len() < MIN_VOICED_RUN {
            run.fill(0.0);
            continue;
        }
        let st: Vec<f64> = run.iter().map(|&f| semitones(f)).collect();
        let mut window = Vec::with_capacity(5);
        for (k, v) in run.iter_mut().enumerate() {
            window.clear();
            window.extend_from_slice(&st[k.saturating_sub(2)..(k + 3).min(st.len())]);
            window.sort_by(|a, b| a.total_cmp(b));
            *v = 2f64.powf(window[window.len() / 2] / 12.0);
        }
    }
    drop_outlier_runs(f0);
    drop_subharmonic_runs(f0);
}

/// The index ranges of the voiced runs (F0 > 0) of a track, in order.
fn voiced_runs(f0: &[f64]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < f0.len() {
        if f0[i] <= 0.0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < f0.len() && f0[i] > 0.0 {
            i += 1;
        }
        runs.push(start..i);
    }
    runs
}

/// Voiced runs (and frames) more than this above the median of all voiced
/// frames are dropped, semitones.
const OUTLIER_RUN_ST: f64 = 12.0;

/// Drop voiced runs and frames more than an octave above the utterance's
/// median F0: YIN locks on a formant or on the period of a voiced fricative
/// for a few frames (a run at 395 Hz inside an 80 Hz voice), and such a run
/// moves the 90th percentile by an octave or more. Only upwards: YIN's
/// errors are mostly octave-up ones, while the fall at the end of a phrase
/// spoken with a wide range does reach an octave below the median, and
/// cutting it made the F0 range of x-high renderings smaller than of high
/// ones (the rarer octave-down runs: [`drop_subharmonic_runs`]).
fn drop_outlier_runs(f0: &mut [f64]) {
    let voiced = dsp::sorted(
        f0.iter()
            .filter(|&&f| f > 0.0)
            .map(|&f| semitones(f))
            .collect(),
    );
    let Some(centre) = dsp::quantile(&voiced, 0.5) else {
        return;
    };
    let mut run_st = Vec::new();
    for r in voiced_runs(f0) {
        let run = &mut f0[r];
        run_st.clear();
        run_st.extend(run.iter().map(|&f| semitones(f)));
        let median = dsp::median(&run_st).unwrap_or(centre);
        if median - centre > OUTLIER_RUN_ST {
            run.fill(0.0);
        }
        // And single frames as far off (an octave jump the median filter
        // kept at a run's edge).
        for (f, &st) in run.iter_mut().zip(&run_st) {
            if st - centre > OUTLIER_RUN_ST {
                *f = 0.0;
            }
        }
    }
}

/// A run this short (frames, 100 ms) lying [`SUBHARMONIC_DROP_ST`] below its
/// voiced neighbours within [`SUBHARMONIC_GAP`] frames (150 ms) is dropped.
const SUBHARMONIC_RUN: usize = 10;
const SUBHARMONIC_DROP_ST: f64 = 9.0;
const SUBHARMONIC_GAP: usize = 15;
/// Frames at a neighbour's near edge its F0 is read on.
const SUBHARMONIC_EDGE: usize = 3;

/// Drop short voiced runs about an octave *below* the voiced speech on both
/// sides of them: YIN picks twice the period on some voiced consonants (a
/// 5-frame run at 96 Hz between runs at 190–220 Hz in en-us+f3, then gone
/// at a faster speed, so the F0 range narrowed by 2.5 st as speech got
/// faster). A talker cannot fall three quarters of an octave and rise back
/// within a few hundred milliseconds (Xu & Sun 2002: even the fastest
/// excursions of several semitones take over 100 ms each way), so such a
/// run is a tracking error. It must have voiced speech on both sides: a
/// phrase-final fall glides down and has none after it (a creaky voice's
/// last halved periods, en+croak's "Yes.", stay too).
pub(crate) fn drop_subharmonic_runs(f0: &mut [f64]) {
    let runs = voiced_runs(f0);
    let median_st = |frames: &[f64]| {
        let st: Vec<f64> = frames.iter().map(|&f| semitones(f)).collect();
        dsp::median(&st)
    };
    let mut drop = Vec::new();
    for (k, r) in runs.iter().enumerate() {
        if r.len() > SUBHARMONIC_RUN {
            continue;
        }
        let Some(own) = median_st(&f0[r.clone()]) else {
            continue;
        };
        let before = k
            .checked_sub(1)
            .map(|j| &runs[j])
            .filter(|p| r.start - p.end <= SUBHARMONIC_GAP)
            .and_then(|p| {
                median_st(&f0[p.end.saturating_sub(SUBHARMONIC_EDGE).max(p.start)..p.end])
            });
        let after = runs
            .get(k + 1)
            .filter(|n| n.start - r.end <= SUBHARMONIC_GAP)
            .and_then(|n| median_st(&f0[n.start..(n.start + SUBHARMONIC_EDGE).min(n.end)]));
        if let (Some(b), Some(a)) = (before, after)
            && own < b - SUBHARMONIC_DROP_ST
            && own < a - SUBHARMONIC_DROP_ST
        {
            drop.push(r.clone());
        }
    }
    for r in drop {
        f0[r].fill(0.0);
    }
}

/// Per-frame contours the nucleus detector reads.
struct Contours<'a> {
    /// Power in the vowel band (300–2500 Hz).
    vowel: &'a [f64],
    /// Power below and above 1 kHz.
    low: &'a [f64],
    high: &'a [f64],
    /// Cleaned F0 track (0 = unvoiced).
    f0: &'a [f64],
    /// YIN's aperiodicity d′ at its pick, before the voicing decision
    /// (∞ where it did not run).
    aperiodicity: &'a [f64],
}

/// Aperiodicity up to which a level peak counts as voiced for the nucleus
/// test (looser than [`VOICED_MAX_APERIODICITY`]).
const NUCLEUS_MAX_APERIODICITY: f64 = 0.5;

/// Syllable nuclei after de Jong & Wempe (2009): peaks of the vowel-band
/// level contour (smoothed over ±20 ms), within 25 dB of its 99th percentile
/// and above the active-speech threshold, standing more than 2 dB above
/// their surroundings, and voiced.
///
/// "Above their surroundings" is the peak's topographic prominence: its
/// height over the higher of its two bases, each the lowest point between
/// it and the nearest higher peak on that side. de Jong & Wempe took the dip
/// to the next peak only, so a bump on the falling flank of a long vowel
/// (a diphthong's glide, a sonorant coda) counted as a syllable of its own
/// in slow speech, and a flat top split in two lost it when the second
/// half's dip was shallow: the count moved with the tempo and the level
/// (nearly 17 nuclei at 120 words/min and 14 at 300 in the same sentences).
/// Like Mermelstein's (1975) convex-hull segmentation, a dip counts only
/// against the lower of the levels on its two sides.
///
/// The count is soft: a peak counts in proportion to its prominence from
/// 1 dB to 3 dB (half at de Jong & Wempe's 2 dB). Prominences near the
/// threshold come and go with small changes of speed, range or level, and a
/// whole syllable gained or lost moves the rate of a 15-syllable sentence by
/// 7 %, enough to lower arousal when a step up in speed should raise it.
///
/// Voiced means: a voiced frame of the F0 track within ±1 frame, or — for
/// short vowels of fast speech, where the track's 30 ms minimum run and its
/// 0.35 aperiodicity limit lose many nuclei, above all in low voices — YIN
/// finding some periodicity (d′ ≤ 0.5) within ±2 frames while most of the
/// peak's energy lies below 1 kHz (a vowel or sonorant, not a fricative or
/// burst).
fn syllable_nuclei(c: &Contours<'_>, active_threshold: f64) -> f64 {
    let n = c.vowel.len();
    if n < 3 {
        return 0.0;
    }
    const KERNEL: [f64; 5] = [1.0, 2.0, 3.0, 2.0, 1.0];
    let smooth: Vec<f64> = (0..n)
        .map(|i| {
            let (mut s, mut w) = (0.0, 0.0);
            for (k, &k_w) in KERNEL.iter().enumerate() {
                if let Some(j) = (i + k).checked_sub(2).filter(|&j| j < n) {
                    s += k_w * c.vowel[j];
                    w += k_w;
                }
            }
            dsp::db(s / w)
        })
        .collect();
    let top = dsp::quantile(&dsp::sorted(smooth.clone()), 0.99).unwrap_or(-120.0);
    let threshold = (top - NUCLEUS_RANGE_DB).max(active_threshold);
    let peaks: Vec<usize> = (1..n - 1)
        .filter(|&i| smooth[i] > smooth[i - 1] && smooth[i] >= smooth[i + 1])
        .filter(|&i| smooth[i] >= threshold)
        .collect();
    let voiced_near = |i: usize| {
        (i.saturating_sub(1)..=(i + 1).min(n - 1)).any(|j| c.f0[j] > 0.0)
            || (c.low[i] > c.high[i]
                && (i.saturating_sub(2)..=(i + 2).min(n - 1))
                    .any(|j| c.aperiodicity[j] <= NUCLEUS_MAX_APERIODICITY))
    };
    let low = |a: usize, b: usize| smooth[a..=b].iter().copied().fold(f64::INFINITY, f64::min);
    let mut count = 0.0;
    for (k, &p) in peaks.iter().enumerate() {
        if !voiced_near(p) {
            continue;
        }
        // Each base: the lowest point between the peak and the nearest
        // higher peak on that side (on to the edge, and at most the
        // threshold, where there is none).
        let left = peaks[..k].iter().rev().find(|&&q| smooth[q] >= smooth[p]);
        let right = peaks[k + 1..].iter().find(|&&q| smooth[q] > smooth[p]);
        let left_base = left.map_or_else(|| low(0, p).min(threshold), |&q| low(q, p));
        let right_base = right.map_or_else(|| low(p, n - 1).min(threshold), |&q| low(p, q));
        let prominence = smooth[p] - left_base.max(right_base);
        count += ((prominence - NUCLEUS_MIN_DIP_DB + NUCLEUS_DIP_RAMP_DB)
            / (2.0 * NUCLEUS_DIP_RAMP_DB))
            .clamp(0.0, 1.0);
    }
    count
}

/// Frames from the first to the last active one, minus pauses (inactive
/// runs of at least 0.3 s).
fn speaking_frames(active: &[bool]) -> usize {
    let (Some(first), Some(last)) = (
        active.iter().position(|&a| a),
        active.iter().rposition(|&a| a),
    ) else {
        return 0;
    };
    let mut total = 0;
    let mut gap = 0;
    for &a in &active[first..=last] {
        if a {
            total += 1 + if gap < MIN_PAUSE_FRAMES { gap } else { 0 };
            gap = 0;
        } else {
            gap += 1;
        }
    }
    total
}
