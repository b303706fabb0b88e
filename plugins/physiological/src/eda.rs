//! Electrodermal activity: tonic skin-conductance level (SCL) and phasic
//! skin-conductance responses (SCRs).
//!
//! Method (trough-to-peak scoring, as in Boucsein, *Electrodermal Activity*,
//! 2nd ed., Springer 2012, and Dawson, Schell and Filion, *The electrodermal
//! system*, Handbook of Psychophysiology, 2007):
//!
//! 1. the sensor's noise floor from the second differences; motion spikes
//!    removed by a Hampel-type filter; a centred 1.5-s moving average;
//! 2. candidates: a rise of [`CANDIDATE_FACTOR`] noise SDs of the smoothed
//!    signal (at least the amplitude floor) above the lowest point since the
//!    last peak, carried along the tonic level's fall; peaks with hysteresis
//!    or where the climb stalls; then a second look at the local maxima the
//!    first pass did not take;
//! 3. each candidate's onset, its amplitude against the tonic slope before
//!    it, tests against tonic climbs and symmetric artefacts, and a response
//!    template fitted to the raw samples (level, trend, the previous
//!    response's recovery, template; when that falls short, a few other
//!    onsets and recovery time constants): a rise of [`NOISE_FACTOR`] noise SDs counts at
//!    t ≥ [`TEMPLATE_T_STRONG`], a smaller one at t ≥ [`TEMPLATE_T`], and
//!    one the size and rise-time tests refused at t ≥
//!    [`TEMPLATE_T_RESCUE`];
//! 4. the tonic level is the median of the smoothed signal outside the
//!    responses (each from its onset to its peak plus twice its rise time
//!    plus 1 s of recovery).
//!
//! The plugin's README describes each step and its measured effect.

use emotion_plugin_sdk::num::{larger, smaller};

/// Default SCR amplitude threshold, µS.
pub const DEFAULT_MIN_AMPLITUDE_US: f64 = 0.01;
/// A rise of at least this many SDs of the smoothed signal's noise counts
/// on little evidence of a response's shape ([`TEMPLATE_T_STRONG`]) ...
pub const NOISE_FACTOR: f64 = 5.0;
/// ... one down to this many SDs only on clear evidence ([`TEMPLATE_T`]).
pub const CANDIDATE_FACTOR: f64 = 3.0;
/// t statistic of the response template (see [`TEMPLATE_PRE_S`]) that a
/// rise of [`CANDIDATE_FACTOR`]–[`NOISE_FACTOR`] noise SDs must reach ...
pub const TEMPLATE_T: f64 = 3.25;
/// ... and that a larger rise must reach (it has to look like a response
/// rather than a dip-and-return or a bend in the drift: at 2, three in four
/// of the false responses on the wrist traces passed with t 2–3).
pub const TEMPLATE_T_STRONG: f64 = 3.0;
/// A rise that the size test (under [`CANDIDATE_FACTOR`] SDs after the
/// drift is taken out) or the rise-time test ([`MAX_SCR_RISE_S`]) refused,
/// but that stopped climbing after its peak, still counts at this t at 4 Hz
/// (times √(rate / 4 Hz) above: the same response's t grows with the
/// samples behind it, and so does a misfit's). At 4 Hz the 1.5-s smoothing
/// averages 7 samples, so a 0.02-µS response's smoothed size and rise time
/// are noisy, while the template fit uses every raw sample.
pub const TEMPLATE_T_RESCUE: f64 = 4.5;
/// The template is fitted to the despiked raw signal from this long before
/// a rise's onset (not before the previous response's peak) ...
pub const TEMPLATE_PRE_S: f64 = 4.0;
/// ... to this long after its peak (or the foot of a larger next rise): the
/// slow recovery holds most of a small response's evidence ...
pub const TEMPLATE_POST_S: f64 = 10.0;
/// ... and recovers with one of these time constants, s (recoveries take
/// 3–10 s): the first, and the others when a fit with it falls short.
pub const TEMPLATE_TAUS_S: [f64; 3] = [6.0, 3.0, 10.0];
/// Besides the onset found, the template may start this many seconds before
/// the peak (rises take 1–3 s; a noisy foot is easily misplaced).
pub const TEMPLATE_RISES_S: [f64; 3] = [1.0, 2.0, 3.0];
/// A local maximum taken in the second look is at least this far from any
/// response counted, s.
pub const SECOND_APART_S: f64 = 2.5;
/// A sample this many noise SDs from its running median may be a spike.
pub const SPIKE_FACTOR: f64 = 5.0;
/// Half-width of the running median that removes motion spikes, s: spikes
/// up to about this long are removed.
pub const DESPIKE_HALF_S: f64 = 1.25;
/// How far back from a peak its onset is looked for, s. Typical rise times
/// are 1–3 s; the window is wider so that slow, rounded responses are still
/// measured from their foot, while a rise that is still climbing steadily
/// this far back is a tonic drift.
pub const MAX_RISE_S: f64 = 8.0;
/// How far before the steepest point of a rise its onset is looked for, s
/// (rise times are 1–3 s; the steepest point is within the rise).
pub const MAX_ONSET_S: f64 = 3.0;
/// A rise that slows to a fifth of its steepest pace for this long has
/// ended, s.
pub const STALL_S: f64 = 1.5;
/// Longest onset-to-peak time of a response, s: rise times are 1–3 s
/// (Boucsein 2012), lengthened here by the smoothing and the rounded top;
/// a slower climb is tonic unless the template's evidence is strong
/// ([`TEMPLATE_T_RESCUE`]).
pub const MAX_SCR_RISE_S: f64 = 5.0;
/// A slow climb (over [`MAX_SCR_RISE_S`]) that, from this long after its
/// peak, has fallen by less than 1 − [`STEP_HOLD`] of itself (plus
/// [`STEP_NOISE`]) is a step of the tonic level, not a response (whose
/// recovery time constant is 3–10 s).
pub const STEP_AFTER_S: f64 = 4.0;
/// Least time after [`STEP_AFTER_S`] (before the window's end or a next
/// rise) on which a rise is judged a step.
pub const STEP_SPAN_S: f64 = 2.0;
/// Share of its climb a step holds after [`STEP_AFTER_S`]; a response
/// recovering with a time constant of 10 s holds about half.
pub const STEP_HOLD: f64 = 0.85;
/// A climb is followed back while it rises at least this share of its
/// steepest pace (a tonic drift at a response's foot is not its climb).
pub const STEP_PACE: f64 = 0.25;
/// Smallest rise tested for a step: below it, noise, wander and the next
/// response's foot make a small response's recovery too uncertain to judge.
pub const STEP_MIN_US: f64 = 0.08;
/// Noise SDs (of the smoothed signal) a step's level may seem to have
/// fallen by: a peak found on a plateau is a high of its noise.
pub const STEP_NOISE: f64 = 2.0;
/// Smoothing window, s: SCRs rise over 1–3 s and recover over several, so
/// 1.5 s keeps their size while averaging down the sensor noise.
pub const SMOOTHING_S: f64 = 1.5;
/// A fall from a peak is a symmetric artefact only when it exceeds half the
/// rise by more than this many noise SDs (the noise alone may do less).
pub const SYMMETRIC_NOISE: f64 = 3.0;
/// The tonic slope before a rise is fitted over this many seconds ...
pub const TONIC_WINDOW_S: f64 = 5.0;
/// ... or over this many samples when that is longer (at 4 Hz 5 s are 20
/// samples, too few to see a slow fall through the noise: 8 s there) ...
pub const TONIC_MIN_SAMPLES: usize = 32;
/// ... ending this long before the rise's foot: the foot is the lowest
/// point found, and the samples next to it lean down with it.
pub const TONIC_GAP_S: f64 = 0.5;
/// The fit starts after the last response's peak (its rise is not tonic)
/// when that leaves at least this many seconds; otherwise it reaches across.
pub const TONIC_AFTER_PEAK_S: f64 = 1.5;
/// A rise longer than [`MAX_SCR_RISE_S`] to this share of its amplitude is
/// tonic (the share, not the maximum: a noisy, rounded top may put the
/// maximum seconds late).
pub const RISE_SHARE: f64 = 0.85;
/// A falling tonic slope is taken only beyond this many standard errors
/// (the noise of a fitted slope would otherwise inflate small rises) ...
pub const TONIC_FALL_SE: f64 = 1.5;
/// ... and at most this fast, µS/s: a steeper fall is a response's recovery,
/// which slows as it goes (extrapolated as a line it would overstate the
/// next rise).
pub const MAX_TONIC_FALL_US_PER_S: f64 = 0.01;
/// Largest accepted skin conductance, µS (the gateway accepts up to 200;
/// anything above 100 is a sensor fault).
pub const MAX_SCL_US: f64 = 100.0;

/// One skin-conductance response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scr {
    /// Sample index of the onset and the peak.
    pub onset: usize,
    pub peak: usize,
    /// Peak minus onset, µS (smoothed signal); for a rise counted on the
    /// template's evidence alone ([`TEMPLATE_T_RESCUE`]), the template's
    /// fitted height, whose fit may have started from another onset than
    /// `onset`.
    pub amplitude_us: f64,
}

/// Features of one window of skin conductance.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub duration_s: f64,
    /// Tonic level, µS.
    pub scl_us: f64,
    /// Noise SD of the smoothed signal, µS.
    pub noise_us: f64,
    /// Smallest rise that counts as a response on its measured size, µS
    /// (with t ≥ [`TEMPLATE_T`]; [`NOISE_FACTOR`] / [`CANDIDATE_FACTOR`] of
    /// it with t ≥ [`TEMPLATE_T_STRONG`]); a smaller one counts only on the
    /// template's evidence ([`TEMPLATE_T_RESCUE`]).
    pub threshold_us: f64,
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

/// Median of `v` (reordered), 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// SD of the sensor's noise per sample, µS, from the second differences (a
/// linear drift cancels, a response's smooth rise adds little): the mean of
/// their absolute values below their 90th percentile (spikes and the
/// steepest turns of large responses are left out), scaled to an SD — for
/// Gaussian noise that trimmed mean is 0.657 SD, and a second difference
/// has √6 times the noise SD. A mean, not a median, because a quantized
/// signal's differences take few values and a median falls on one of them.
pub fn noise_sd(x: &[f64]) -> f64 {
    if x.len() < 3 {
        return 0.0;
    }
    let mut d2: Vec<f64> = x
        .windows(3)
        .map(|w| (w[2] - 2.0 * w[1] + w[0]).abs())
        .collect();
    let keep = ((d2.len() as f64 * 0.9).ceil() as usize).clamp(1, d2.len());
    if keep < d2.len() {
        d2.select_nth_unstable_by(keep - 1, f64::total_cmp);
    }
    let trimmed = d2[..keep].iter().sum::<f64>() / keep as f64;
    trimmed / 0.657 / 6f64.sqrt()
}

/// Least-squares slope of the tonic level before a sample, per sample, from
/// prefix sums (constant time per query; asked at every new low).
struct TonicSlope {
    /// Prefix sums of y and of i·y.
    sum: Vec<(f64, f64)>,
    window: usize,
    gap: usize,
    min_len: usize,
    after_peak: usize,
    sigma: f64,
    max_fall: f64,
    /// For a full window (the usual case): 1 / the slope's denominator and
    /// the shrinkage of a fall, precomputed.
    full: (f64, f64),
}

impl TonicSlope {
    fn new(y: &[f64], rate_hz: f64, sigma: f64, lag: usize) -> Self {
        let mut sum = Vec::with_capacity(y.len() + 1);
        let (mut sy, mut sxy) = (0.0, 0.0);
        sum.push((sy, sxy));
        for (i, v) in y.iter().enumerate() {
            sy += v;
            sxy += i as f64 * v;
            sum.push((sy, sxy));
        }
        let window = ((TONIC_WINDOW_S * rate_hz).round() as usize).max(TONIC_MIN_SAMPLES);
        TonicSlope {
            sum,
            window,
            gap: (TONIC_GAP_S * rate_hz).round() as usize,
            min_len: (2 * lag + 1).max(3),
            after_peak: ((TONIC_AFTER_PEAK_S * rate_hz).round() as usize).max(1),
            sigma,
            max_fall: MAX_TONIC_FALL_US_PER_S / rate_hz,
            full: Self::constants(window + 1, sigma),
        }
    }

    /// (1 / (n·Σx² − (Σx)²), shrinkage of a fall) for `len` samples at
    /// x = 0, 1, …
    fn constants(len: usize, sigma: f64) -> (f64, f64) {
        let m = len as f64;
        let sx = m * (m - 1.0) / 2.0;
        let sxx = (m - 1.0) * m * (2.0 * m - 1.0) / 6.0;
        let se = sigma * (12.0 / (m * (m * m - 1.0))).sqrt();
        (1.0 / (m * sxx - sx * sx), TONIC_FALL_SE * se)
    }

    /// Slope over the window ending [`TONIC_GAP_S`] before `i` (from `floor`,
    /// just after the last response's peak, on if [`TONIC_AFTER_PEAK_S`]
    /// remain), 0 without room to see it; a fall is shrunk by [`TONIC_FALL_SE`] standard errors
    /// and capped at [`MAX_TONIC_FALL_US_PER_S`], a rise is taken whole (it
    /// only makes a response harder to count).
    fn at(&self, i: usize, floor: usize) -> f64 {
        let Some(end) = i.checked_sub(self.gap) else {
            return 0.0;
        };
        let mut start = end.saturating_sub(self.window);
        if floor > start && end >= floor + self.after_peak {
            start = floor;
        }
        let len = end - start + 1;
        if len < self.min_len {
            return 0.0;
        }
        let m = len as f64;
        let sy = self.sum[end + 1].0 - self.sum[start].0;
        // Σ (i − start)·y over the window.
        let sxy = self.sum[end + 1].1 - self.sum[start].1 - start as f64 * sy;
        let (inverse, shrink) = if len == self.window + 1 {
            self.full
        } else {
            Self::constants(len, self.sigma)
        };
        let b = (m * sxy - m * (m - 1.0) / 2.0 * sy) * inverse;
        if b >= 0.0 {
            return b;
        }
        larger(-self.max_fall, smaller(0.0, b + shrink))
    }
}

/// How strongly the despiked raw signal `x` around a candidate (onset `o`,
/// peak `p`) shows a response's shape rather than noise (a matched filter
/// with nuisance terms): the t statistic of the template's amplitude in a
/// least-squares fit of level + linear trend (+ the recovery of the previous
/// response, peaking at `prev`, when it is within 4 time constants) +
/// template, over the samples from [`TEMPLATE_PRE_S`] before the onset (not
/// before `prev`) to `end`, with the sensor's per-sample noise `sigma`. The
/// template is 0 before the onset, rises along an S-curve (smoothstep) to 1
/// at the peak and recovers exponentially with time constant `tau_s`. It uses
/// every sample of the rise and the slow recovery, where the trough-to-peak
/// amplitude uses two smoothed ones: at 4 Hz this is what tells a 0.02-µS
/// response from noise. Infinite for a positive fit on a noise-free signal.
#[allow(clippy::too_many_arguments)]
fn template_t_stat(
    x: &[f64],
    rate_hz: f64,
    sigma: f64,
    o: usize,
    p: usize,
    prev: Option<usize>,
    end: usize,
    tau_s: f64,
) -> Fit {
    let pre_s = TEMPLATE_PRE_S;
    let n = x.len();
    if n == 0 || p >= n || o > p {
        return Fit::NONE;
    }
    let mut start = o.saturating_sub((pre_s * rate_hz).round() as usize);
    if let Some(q) = prev.filter(|&q| q < o) {
        start = start.max(q + 1);
    }
    let end = end.min(n - 1);
    let rise = (p - o).max(1) as f64;
    let decay = (-1.0 / (tau_s * rate_hz)).exp();
    // The previous response's recovery, when it is close enough to matter.
    let prev_decay = prev
        .filter(|&q| q < o && (o - q) as f64 <= 4.0 * tau_s * rate_hz)
        .map(|q| (q, decay));
    let k = if prev_decay.is_some() { 4 } else { 3 };
    let reference = x[o];
    let mut a = [[0.0f64; 4]; 4];
    let mut r = [0.0f64; 4];
    let mut g_after = 1.0;
    // The previous response's recovery at `start`, then one step at a time.
    let mut h = prev_decay.map_or(0.0, |(q, d)| d.powi((start - q) as i32) / d);
    for (j, &v) in x.iter().enumerate().take(end + 1).skip(start) {
        let u = (j as f64 - o as f64) / rate_hz;
        let g = if j <= o {
            0.0
        } else if j <= p {
            // Smoothstep (within 0.01 of a half cosine, without its cost).
            let s = (j - o) as f64 / rise;
            s * s * (3.0 - 2.0 * s)
        } else {
            g_after *= decay;
            g_after
        };
        let mut row = [1.0, u, 0.0, 0.0];
        match prev_decay {
            Some((_, d)) => {
                h *= d;
                row[2] = h;
                row[3] = g;
            }
            None => row[2] = g,
        }
        let v = v - reference;
        for ((a_i, r_i), &row_i) in a.iter_mut().zip(r.iter_mut()).zip(&row).take(k) {
            for (a_im, &row_m) in a_i.iter_mut().zip(&row).take(k) {
                *a_im += row_i * row_m;
            }
            *r_i += row_i * v;
        }
    }
    // Solve (Gauss–Jordan, partial pivoting) for the coefficients and for
    // the last column of the inverse (the template's variance factor).
    let last = k - 1;
    let mut aug = [[0.0f64; 6]; 4];
    for (i, (aug_i, (a_i, &r_i))) in aug.iter_mut().zip(a.iter().zip(&r)).enumerate().take(k) {
        aug_i[..k].copy_from_slice(&a_i[..k]);
        aug_i[4] = r_i;
        aug_i[5] = if i == last { 1.0 } else { 0.0 };
    }
    for c in 0..k {
        let piv = (c..k)
            .max_by(|&i, &m| aug[i][c].abs().total_cmp(&aug[m][c].abs()))
            .unwrap_or(c);
        aug.swap(c, piv);
        let pivot = aug[c];
        let d = pivot[c];
        if d.is_nan() || d.abs() <= 1e-12 {
            return Fit::NONE;
        }
        for (i, row) in aug.iter_mut().enumerate().take(k) {
            if i != c {
                let f = row[c] / d;
                for (value, &above) in row.iter_mut().zip(&pivot).skip(c) {
                    *value -= f * above;
                }
            }
        }
    }
    let amplitude = aug[last][4] / aug[last][last];
    let variance = aug[last][5] / aug[last][last];
    if variance.is_nan() || variance <= 0.0 || !amplitude.is_finite() {
        return Fit::NONE;
    }
    let t = if sigma <= 0.0 {
        if amplitude > 0.0 { f64::INFINITY } else { 0.0 }
    } else {
        amplitude / (sigma * variance.sqrt())
    };
    Fit { t, amplitude }
}

/// A template fit: its t statistic and the template's fitted height, µS.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fit {
    t: f64,
    amplitude: f64,
}

impl Fit {
    const NONE: Fit = Fit {
        t: 0.0,
        amplitude: 0.0,
    };
}

/// The foot of the first rise of at least `rise` from the running low after
/// the peak at `p`, or `last` if none comes first: where a window that
/// starts at the peak must end, before a next response holds the level up.
/// With `fall_first`, only a rise after the signal has fallen below the
/// peak counts (one straight from the peak is the same climb going on).
fn next_rise_foot(y: &[f64], p: usize, last: usize, rise: f64, fall_first: bool) -> usize {
    let mut trough = p;
    for j in p + 1..=last {
        if y[j] < y[trough] {
            trough = j;
        } else if (trough > p || !fall_first) && y[j] - y[trough] >= rise {
            return trough;
        }
    }
    last
}

/// Replaces motion spikes by the running median (a Hampel filter with a
/// shape test). A sample is a spike when it departs from the median of the
/// surrounding `2·half + 1` samples by more than `limit` and by more than
/// the median itself moves within that window — so a response's rise (where
/// the median follows the signal) and its rounded peak (a small departure
/// next to a large rise) are kept, while a fast excursion that returns to
/// where it started is removed whatever its sign.
fn despike(x: &[f64], half: usize, limit: f64, shoulder: f64) -> Vec<f64> {
    let n = x.len();
    let span = |i: usize| i.saturating_sub(half)..(i + half + 1).min(n);
    // Medians are computed lazily, only around candidate spikes.
    // (Allocated on the first candidate: most windows have none.)
    let mut medians: Vec<Option<f64>> = Vec::new();
    let mut scratch = Vec::new();
    let mut median_at = |i: usize, medians: &mut Vec<Option<f64>>| -> f64 {
        if medians.is_empty() {
            medians.resize(n, None);
        }
        if let Some(m) = medians[i] {
            return m;
        }
        scratch.clear();
        scratch.extend_from_slice(&x[span(i)]);
        let m = median(&mut scratch);
        medians[i] = Some(m);
        m
    };
    let mut out = x.to_vec();
    // Sign of each spike sample found; empty while there is none.
    let mut spike: Vec<f64> = Vec::new();
    for i in 0..n {
        // The median is more than `limit` below x[i] exactly when more than
        // half the window is (and likewise above): counting needs no sort,
        // and the median is computed only for the rare sample that passes.
        let window = &x[span(i)];
        // (The median is the element at sorted index len / 2.)
        let need_below = window.len() / 2 + 1;
        let need_above = window.len() - window.len() / 2;
        let (mut below, mut above) = (0, 0);
        for &v in window {
            below += usize::from(v < x[i] - limit);
            above += usize::from(v > x[i] + limit);
        }
        if below < need_below && above < need_above {
            continue;
        }
        let m = median_at(i, &mut medians);
        let d = x[i] - m;
        let (mut m_lo, mut m_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for j in span(i) {
            let mj = median_at(j, &mut medians);
            m_lo = m_lo.min(mj);
            m_hi = m_hi.max(mj);
        }
        let moves = if d > 0.0 { m - m_lo } else { m_hi - m };
        if d.abs() > moves {
            out[i] = m;
            if spike.is_empty() {
                spike.resize(n, 0.0);
            }
            spike[i] = d.signum();
        }
    }
    if spike.is_empty() {
        return out;
    }
    // A spike's shoulders, too small to pass `limit` alone, would be left
    // as a small bump: extend each spike while its neighbours still depart
    // the same way by more than `shoulder`.
    for i in 0..n {
        if spike[i] == 0.0 {
            continue;
        }
        let sign = spike[i];
        for range in [
            Box::new((0..i).rev()) as Box<dyn Iterator<Item = usize>>,
            Box::new(i + 1..n),
        ] {
            for j in range.take(half) {
                if spike[j] != 0.0 {
                    break;
                }
                let m = median_at(j, &mut medians);
                if (x[j] - m) * sign > shoulder {
                    out[j] = m;
                } else {
                    break;
                }
            }
        }
    }
    out
}

/// Analyse a window of skin conductance (µS) sampled at `rate_hz`; samples
/// must have passed [`validate`]. `min_amplitude_us` is the absolute floor
/// of the SCR thresholds, which are the larger of it and [`NOISE_FACTOR`]
/// (or, with a clear response shape, [`CANDIDATE_FACTOR`]) times the noise of
/// the smoothed signal.
pub fn analyze(samples: &[f64], rate_hz: f64, min_amplitude_us: f64) -> Features {
    analyze_from(samples, rate_hz, min_amplitude_us, 0, 0).0
}

/// Seconds of a wearer's skin conductance carried into their next reading:
/// enough to see the foot of a response that was still rising when the
/// last reading ended (rises of 1–3 s) and the tonic slope before it.
pub const CARRY_S: f64 = 5.0;
/// At most this many samples are carried (a fast sensor keeps less than
/// [`CARRY_S`]; the state per wearer stays small).
pub const CARRY_MAX_SAMPLES: usize = 256;

/// The end of a wearer's last window of skin conductance.
#[derive(Debug, Clone, PartialEq)]
pub struct Carry {
    pub rate_hz: f64,
    /// Timestamp of the last window's end, ms.
    pub end_ms: i64,
    /// Its last samples, raw.
    pub samples: Vec<f64>,
    /// Samples from the last response counted to the end of `samples`, when
    /// that response peaked within them.
    pub since_peak: Option<usize>,
}

/// [`analyze`] for a reading that may continue the wearer's last one: when
/// `carry` has the same rate and ends where this window begins (`start_ms`,
/// within two samples or 1 s), its samples are analysed in front of this
/// window's, so a response that straddles the boundary is measured from its
/// foot and counted once — in this reading if it was not counted in the
/// last. The features describe this window (its duration, its tonic level,
/// responses peaking in it or left uncounted before it; a response that
/// peaked in the carried seconds has onset and peak 0). Returns the carry for
/// the next reading.
pub fn analyze_continued(
    carry: Option<&Carry>,
    samples: &[f64],
    rate_hz: f64,
    min_amplitude_us: f64,
    start_ms: i64,
) -> (Features, Carry) {
    let tolerance_ms = (2000.0 / rate_hz).max(1000.0);
    let context = carry.filter(|c| {
        c.rate_hz == rate_hz && ((start_ms.saturating_sub(c.end_ms)) as f64).abs() <= tolerance_ms
    });
    let (all, first, count_from): (std::borrow::Cow<'_, [f64]>, usize, usize) = match context {
        Some(c) => {
            let mut all = Vec::with_capacity(c.samples.len() + samples.len());
            all.extend_from_slice(&c.samples);
            all.extend_from_slice(samples);
            // A response within 2 s after the last one counted is that one
            // again, re-measured with this window's samples.
            let margin = (2.0 * rate_hz).round() as usize;
            let count_from = c
                .since_peak
                .map_or(0, |since| (c.samples.len() + margin).saturating_sub(since));
            (all.into(), c.samples.len(), count_from)
        }
        None => (samples.into(), 0, 0),
    };
    let (features, last_peak) = analyze_from(&all, rate_hz, min_amplitude_us, first, count_from);
    let keep = ((CARRY_S * rate_hz).round() as usize).clamp(1, CARRY_MAX_SAMPLES);
    let tail_start = all.len().saturating_sub(keep);
    let last_peak = last_peak.or_else(|| {
        // The last response counted before, if still in reach.
        context.and_then(|c| {
            c.since_peak
                .and_then(|since| c.samples.len().checked_sub(since + 1))
        })
    });
    let duration_ms = (samples.len() as f64 / rate_hz * 1000.0).round() as i64;
    let next = Carry {
        rate_hz,
        end_ms: start_ms.saturating_add(duration_ms),
        samples: all[tail_start..].to_vec(),
        since_peak: last_peak
            .filter(|&p| p >= tail_start)
            .map(|p| all.len() - 1 - p),
    };
    (features, next)
}

/// Analyses `samples`, of which those before `first` are context carried
/// from the last reading: responses count when they peak at `count_from` or
/// later, the tonic level is taken from `first` on, and sample indices in
/// the result are relative to `first`. Also returns the index in `samples`
/// of the last response counted.
fn analyze_from(
    samples: &[f64],
    rate_hz: f64,
    min_amplitude_us: f64,
    first: usize,
    count_from: usize,
) -> (Features, Option<usize>) {
    let n = samples.len();
    let duration_s = n.saturating_sub(first) as f64 / rate_hz;
    if n == 0 || first >= n {
        let features = Features {
            duration_s,
            scl_us: 0.0,
            noise_us: 0.0,
            threshold_us: min_amplitude_us,
            scrs: Vec::new(),
        };
        return (features, None);
    }
    let sigma = noise_sd(samples);
    let half = ((DESPIKE_HALF_S * rate_hz).round() as usize).max(1);
    let x = despike(
        samples,
        half,
        (SPIKE_FACTOR * sigma).max(min_amplitude_us),
        sigma,
    );
    let w = ((SMOOTHING_S * rate_hz).round() as usize).max(1) | 1;
    let y = if w > 1 { smooth(&x, w) } else { x.clone() };
    let noise_us = sigma / (w as f64).sqrt();
    // A response at least this large needs little evidence of its shape ...
    let strong = min_amplitude_us.max(NOISE_FACTOR * noise_us);
    // ... one down to this size needs a clear one.
    let threshold = min_amplitude_us.max(CANDIDATE_FACTOR * noise_us);
    let max_rise = ((MAX_RISE_S * rate_hz).round() as usize).max(1);
    // Hysteresis of the peak search: half the amplitude that counts alone
    // (noise falls by less).
    let fall = strong / 2.0;
    let post = ((TEMPLATE_POST_S * rate_hz).round() as usize).max(1);
    let rescue_t = TEMPLATE_T_RESCUE * (rate_hz / 4.0).sqrt().max(1.0);
    // The template fitted to a rise from `o` to `p` of `amplitude` after the
    // response peaking at `prev`, with no onset before `floor`: the first fit
    // with a t statistic of at least `need` and a height of at least
    // `height`, else the fit from the onset found with the first time
    // constant.
    #[allow(clippy::too_many_arguments)]
    let template_fit = |o: usize,
                        p: usize,
                        floor: usize,
                        prev: Option<usize>,
                        amplitude: f64,
                        need: f64,
                        height: f64|
     -> Fit {
        // The window ends at the foot of a next rise that would dominate the
        // fit (a response of its own, and twice this one), if one comes first.
        let end = next_rise_foot(
            &y,
            p,
            (p + post).min(n - 1),
            strong.max(2.0 * amplitude),
            false,
        );
        let passes = |f: &Fit| f.t >= need && f.amplitude >= height;
        let first = template_t_stat(&x, rate_hz, sigma, o, p, prev, end, TEMPLATE_TAUS_S[0]);
        if passes(&first) {
            return first;
        }
        // A candidate that passes on the first fit pays for no other; one
        // that falls short is fitted again from other feet and with other
        // recovery time constants (a response's foot and recovery vary).
        let lo = prev.map_or(0, |q| q + 1).max(floor);
        let onsets = std::iter::once(o).chain(TEMPLATE_RISES_S.iter().filter_map(|r| {
            p.checked_sub((r * rate_hz).round() as usize)
                .filter(|&o2| o2 >= lo && o2 != o)
        }));
        for (k, o2) in onsets.enumerate() {
            for (j, &tau) in TEMPLATE_TAUS_S.iter().enumerate() {
                if k == 0 && j == 0 {
                    continue;
                }
                let fit = template_t_stat(&x, rate_hz, sigma, o2, p, prev, end, tau);
                if passes(&fit) {
                    return fit;
                }
            }
        }
        first
    };

    let mut scrs: Vec<Scr> = Vec::new();
    // Earliest sample an onset may take: just after the previous peak.
    let mut floor = 0usize;
    let mut peak: Option<usize> = None;
    // Slopes are taken over half a second: single steps of a fast-sampled
    // signal are mostly noise.
    let lag = ((0.5 * rate_hz).round() as usize).max(1);
    let max_onset_rise = ((MAX_ONSET_S * rate_hz).round() as usize).max(1);
    let tonic = TonicSlope::new(&y, rate_hz, sigma, lag);
    // The reference a rise is measured from: the lowest point since the last
    // peak, carried along the tonic level's fall (a small response on a
    // falling level may barely rise in the raw signal).
    let mut low = y[0];
    let (mut low_at, mut low_fall) = (0usize, 0.0f64);
    // Whether the rise peaking at `p` is a step of the tonic level: a climb
    // of over MAX_SCR_RISE_S and at least STEP_MIN_US that, from
    // STEP_AFTER_S after the peak to the window's end or the foot of a next
    // rise (which would hold the level up itself), given STEP_SPAN_S of it,
    // has not fallen by (1 − STEP_HOLD) of itself plus the noise.
    let settle = (STEP_AFTER_S * rate_hz).round() as usize;
    let span = ((STEP_SPAN_S * rate_hz).round() as usize).max(1);
    let is_step = |p: usize, onset: usize, floor: usize, steep: f64| -> bool {
        // The whole climb: the onset may be half-way up a slow step. Followed
        // back while it keeps rising at STEP_PACE of its steepest pace.
        let climbing_by = noise_us.max(STEP_PACE * steep * lag as f64);
        let mut foot = onset;
        while foot >= floor + lag && y[foot - lag] < y[foot] - climbing_by {
            foot -= lag;
        }
        let climb = y[p] - y[foot];
        if (p - foot) as f64 <= MAX_SCR_RISE_S * rate_hz || climb < STEP_MIN_US {
            return false;
        }
        // A rise straight from the peak is this climb going on, not a next one.
        let cut = next_rise_foot(&y, p, (p + post).min(n - 1), threshold, true);
        if cut < p + settle + span {
            return false;
        }
        // The level's own slope from before the climb, taken out. A falling
        // level only makes a response look more recovered (and right after
        // a response it is that response's recovery); a rise steeper than a
        // tonic level's is a climb, capped as falls are.
        let drift = tonic
            .at(foot, floor)
            .clamp(0.0, MAX_TONIC_FALL_US_PER_S / rate_hz);
        let dropped = (p + settle..=cut)
            .map(|j| y[p] - y[j] + drift * (j - p) as f64)
            .sum::<f64>()
            / (cut + 1 - p - settle) as f64;
        dropped < (1.0 - STEP_HOLD) * climb + STEP_NOISE * noise_us
    };
    let evaluate = |p: usize, floor: usize, prev: Option<usize>| -> Option<(Scr, f64)> {
        let window_start = p.saturating_sub(max_rise);
        let from = window_start.max(floor);
        // The steepest part of the rise, then its foot: the lowest point
        // within MAX_ONSET_S before it (rises last 1–3 s).
        let (mut steep_at, mut steep) = (p, 0.0);
        for j in from + 1..=p {
            let s = (y[j] - y[j.saturating_sub(lag).max(from)]) / lag as f64;
            if s > steep {
                (steep_at, steep) = (j, s);
            }
        }
        let search = steep_at.saturating_sub(max_onset_rise).max(from);
        let onset = (search..=steep_at)
            .min_by(|a, b| y[*a].total_cmp(&y[*b]))
            .unwrap_or(search);
        // The drift during the rise is not part of the response.
        let before = tonic.at(onset, floor);
        let rise = p - onset;
        let amplitude = if steep > 0.0 {
            y[p] - y[onset] - before * rise as f64
        } else {
            0.0
        };
        // A response stops climbing at its peak, a drift climbs on.
        let after = (p + lag.max(rate_hz.round() as usize)..=(p + max_onset_rise).min(n - 1))
            .map(|j| (y[j] - y[p]) / (j - p) as f64)
            .fold(f64::INFINITY, smaller);
        let pace = (y[p] - y[onset]) / rise.max(1) as f64;
        // Rise time to RISE_SHARE of the (detrended) amplitude.
        let rise_time = (onset..=p)
            .find(|&j| y[j] - y[onset] - before * (j - onset) as f64 >= RISE_SHARE * amplitude)
            .unwrap_or(p)
            - onset;
        let climbing = after.is_finite() && after > 0.5 * pace;
        let slow = rise_time as f64 > MAX_SCR_RISE_S * rate_hz;
        // Rising from the first samples, with nothing before to tell a
        // drift: only an SCR-fast rise counts.
        let from_start = onset < lag && rise > max_onset_rise;
        // Back below half its amplitude (plus what the noise may do) within
        // its rise time (at most 1 s) of the peak: an artefact as fast to
        // leave as to come, not a response (whose recovery is several times
        // slower than its rise).
        let quick = (rate_hz.round() as usize).max(1).min(rise.max(1));
        let symmetric = y[p + 1..(p + quick + 1).min(n)]
            .iter()
            .any(|&v| y[p] - v > 0.5 * amplitude + SYMMETRIC_NOISE * noise_us);
        if climbing || from_start || symmetric || amplitude <= 0.0 {
            return None;
        }
        // A response recovers; a step of the tonic level (an electrode
        // settling, a change of posture) climbs slowly and stays up.
        if is_step(p, onset, floor, steep) {
            return None;
        }
        // The shape: a rise that stays up, as a response's slow recovery
        // does, and as noise, wander and spike residue do not.
        let rescue = amplitude < threshold || slow;
        let need_t = if rescue {
            // Only a rise seen to stop climbing after its peak.
            if !after.is_finite() {
                return None;
            }
            rescue_t
        } else if amplitude >= strong {
            TEMPLATE_T_STRONG
        } else {
            TEMPLATE_T
        };
        // A rescued rise is measured by the template's height, which must
        // reach the amplitude floor (a sub-threshold ripple stays out).
        let height = if rescue { min_amplitude_us } else { 0.0 };
        let fit = template_fit(onset, p, floor, prev, amplitude, need_t, height);
        (fit.t >= need_t && fit.amplitude >= height).then_some((
            Scr {
                onset,
                peak: p,
                amplitude_us: if rescue { fit.amplitude } else { amplitude },
            },
            fit.t,
        ))
    };
    let confirm = |p: usize, floor: &mut usize, scrs: &mut Vec<Scr>| {
        if let Some((scr, _)) = evaluate(p, *floor, scrs.last().map(|s| s.peak)) {
            scrs.push(scr);
        }
        *floor = p + 1;
    };
    // A rise that slows to a fifth of its steepest pace for STALL_S has
    // ended: what climbs on is tonic drift (on a rising level a response's
    // recovery may never fall by `fall`).
    let stall = ((STALL_S * rate_hz).round() as usize).max(1);
    let (mut steepest, mut start) = (0.0f64, 0usize);
    for i in 1..n {
        let slope = (y[i] - y[i.saturating_sub(lag)]) / lag as f64;
        match peak {
            None => {
                // Looking for a rise of at least the threshold above the low.
                let reference = low + low_fall * (i - low_at) as f64;
                if y[i] < reference {
                    (low, low_at, low_fall) = (y[i], i, smaller(0.0, tonic.at(i, floor)));
                } else if y[i] - reference >= threshold {
                    peak = Some(i);
                    start = i;
                    steepest = slope;
                }
            }
            Some(p) => {
                steepest = larger(steepest, slope);
                if y[i] > y[p] {
                    let stalled = i >= start + stall
                        && (y[i] - y[i - stall]) / (stall as f64) < 0.2 * steepest;
                    if stalled {
                        // The response topped out where the climb slowed.
                        confirm(i - stall, &mut floor, &mut scrs);
                        peak = None;
                        (low, low_at, low_fall) = (y[i], i, smaller(0.0, tonic.at(i, floor)));
                    } else {
                        peak = Some(i);
                    }
                } else if y[p] - y[i] >= fall {
                    confirm(p, &mut floor, &mut scrs);
                    peak = None;
                    (low, low_at, low_fall) = (y[i], i, smaller(0.0, tonic.at(i, floor)));
                }
            }
        }
    }

    // Second look: local maxima (over ±1 s) that the running-low pass did
    // not take as a response's peak — a small response merged into the
    // climb of a neighbour or of the tonic level, or a peak placed seconds
    // off — judged by the same tests, at least SECOND_APART_S from any
    // response counted.
    {
        let reach = (rate_hz.round() as usize).max(1);
        let apart = ((SECOND_APART_S * rate_hz).round() as usize).max(1);
        let mut extra: Vec<(Scr, f64)> = Vec::new();
        let mut k = 0usize; // next accepted response at or after p
        for p in lag..n.saturating_sub(lag) {
            // (Most samples fail next to themselves: no wider look.)
            if y[p - 1] >= y[p] || y[p + 1] > y[p] {
                continue;
            }
            let lo = p.saturating_sub(reach);
            let hi = (p + reach).min(n - 1);
            if y[lo..p].iter().any(|&v| v >= y[p]) || y[p + 1..=hi].iter().any(|&v| v > y[p]) {
                continue;
            }
            while k < scrs.len() && scrs[k].peak < p {
                k += 1;
            }
            let prev = k.checked_sub(1).map(|i| scrs[i].peak);
            if prev.is_some_and(|q| p - q < apart)
                || scrs
                    .get(k)
                    .is_some_and(|s| s.peak - p < apart || s.onset <= p)
            {
                continue;
            }
            // Quick test before the full one: a rise of the threshold within
            // the last few seconds.
            let from = p.saturating_sub(max_rise).max(prev.map_or(0, |q| q + 1));
            if y[p] - y[from..p].iter().copied().fold(f64::INFINITY, smaller) < threshold {
                continue;
            }
            if let Some(found) = evaluate(p, prev.map_or(0, |q| q + 1), prev) {
                match extra.last_mut() {
                    Some(last) if p - last.0.peak < apart => {
                        if found.1 > last.1 {
                            *last = found;
                        }
                    }
                    _ => extra.push(found),
                }
            }
        }
        if !extra.is_empty() {
            scrs.extend(extra.into_iter().map(|(s, _)| s));
            scrs.sort_by_key(|s| s.peak);
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
        .skip(first)
        .filter(|(_, inside)| !**inside)
        .map(|(v, _)| *v)
        .collect();
    let scl_us = if outside.is_empty() {
        scrs.iter().map(|s| y[s.onset]).sum::<f64>() / scrs.len().max(1) as f64
    } else {
        median(&mut outside)
    };
    scrs.retain(|s| s.peak >= count_from);
    let last_peak = scrs.last().map(|s| s.peak);
    for s in &mut scrs {
        s.onset = s.onset.saturating_sub(first);
        s.peak = s.peak.saturating_sub(first);
    }
    let features = Features {
        duration_s,
        scl_us,
        noise_us,
        threshold_us: threshold,
        scrs,
    };
    (features, last_peak)
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

    /// A smooth climb of 7–10 s that then stays up (an electrode settling, a
    /// change of posture), 0.03–1 µS, on a noisy quantized level: a step of
    /// the tonic level, not a response.
    fn slow_step(rate: f64, seed: u64, amplitude: f64, climb_s: f64) -> Vec<f64> {
        let mut rng = synth::Rng::new(seed);
        let tonic = rng.range(1.0, 10.0);
        let noise = rng.range(0.005, 0.01);
        (0..(120.0 * rate) as usize)
            .map(|i| {
                let t = i as f64 / rate;
                let s = ((t - 40.0) / climb_s).clamp(0.0, 1.0);
                let v = tonic + amplitude * s * s * (3.0 - 2.0 * s) + noise * rng.normal();
                (v / 0.001).round() * 0.001
            })
            .collect()
    }

    #[test]
    fn a_slow_step_of_the_level_is_not_a_response() {
        // 0.1–1 µS climbs of 7–10 s at 4–32 Hz, three seeds each: 108 of 108
        // were counted before the step test, 3 are now (twice a climb
        // measured under MAX_SCR_RISE_S from a foot found late, once a
        // noise rise after the peak that left less than STEP_SPAN_S to judge).
        // Steps of 0.03 µS are still counted: a response that small is not
        // told from a step by its recovery (see STEP_MIN_US).
        let mut counted = Vec::new();
        let mut cases = 0;
        for (k, rate) in [4.0, 8.0, 16.0, 32.0].into_iter().enumerate() {
            for amplitude in [0.1, 0.3, 1.0] {
                for climb_s in [7.0, 8.5, 10.0] {
                    for seed in 0..3 {
                        cases += 1;
                        let x = slow_step(rate, 100 * k as u64 + seed, amplitude, climb_s);
                        let f = analyze(&x, rate, DEFAULT_MIN_AMPLITUDE_US);
                        let near = f
                            .scrs
                            .iter()
                            .filter(|s| (35.0..65.0).contains(&(s.peak as f64 / rate)))
                            .count();
                        if near > 0 {
                            counted.push((rate, amplitude, climb_s, seed, near));
                        }
                    }
                }
            }
        }
        assert!(
            counted.len() * 20 <= cases,
            "{} of {cases} steps counted (at most 5 %): {counted:?}",
            counted.len()
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

    /// Detected over true responses (overall and at 4, 8, 16 and 32 Hz),
    /// recall and precision (±2 s of the peak) over `windows` generated
    /// wrist traces of 120 s, a quarter at each rate.
    fn sweep(w: &synth::Wrist, windows: u64, seed: u64) -> (f64, [f64; 4], f64, f64) {
        let (mut found, mut truth, mut hits) = (0usize, 0usize, 0usize);
        let mut by_rate = [(0usize, 0usize); 4];
        for k in 0..windows {
            let r = (k % 4) as usize;
            let rate = [4.0, 8.0, 16.0, 32.0][r];
            let trace = synth::wrist_scr_trace(seed + k, rate, 120.0, w);
            let f = analyze(&trace.samples, rate, DEFAULT_MIN_AMPLITUDE_US);
            let mut used = vec![false; f.scrs.len()];
            for t in &trace.peaks_s {
                if let Some(i) = (0..f.scrs.len())
                    .find(|&i| !used[i] && (f.scrs[i].peak as f64 / rate - t).abs() <= 2.0)
                {
                    used[i] = true;
                    hits += 1;
                }
            }
            found += f.scrs.len();
            truth += trace.peaks_s.len();
            by_rate[r].0 += f.scrs.len();
            by_rate[r].1 += trace.peaks_s.len();
        }
        (
            found as f64 / truth as f64,
            by_rate.map(|(f, t)| f as f64 / t.max(1) as f64),
            hits as f64 / truth as f64,
            hits as f64 / found.max(1) as f64,
        )
    }

    #[test]
    fn small_and_large_responses_are_counted_on_noisy_drifting_wrist_traces() {
        // Seeds apart from the quality report's (7000…): 240 windows of 120 s
        // per amplitude, 60 at each rate, tonic drift and wander, white noise
        // 0.005–0.01 µS, quantization, motion spikes.
        // The target: found/true within ±10 % from 0.02 to 1 µS, at
        // every sample rate.
        let mut failures = Vec::new();
        for amplitude in [0.02, 0.03, 0.05, 0.1, 0.3, 1.0] {
            let (ratio, by_rate, recall, precision) =
                sweep(&synth::Wrist::at(amplitude), 240, 50_000);
            let (min_recall, min_precision) = if amplitude < 0.03 {
                (0.82, 0.9)
            } else {
                (0.9, 0.9)
            };
            if !((0.9..=1.1).contains(&ratio) && recall >= min_recall && precision >= min_precision)
            {
                failures.push(format!(
                    "{amplitude} µS: found/true {ratio:.3}, recall {recall:.3}, precision {precision:.3}"
                ));
            }
            for (rate, r) in [4, 8, 16, 32].into_iter().zip(by_rate) {
                // Every amplitude at every rate, 0.02 µS at 4 Hz included
                // (0.947 measured on these seeds; 0.882 before the template's
                // second revision, 0.72 before the template test).
                let low = 0.9;
                if !(low..=1.1).contains(&r) {
                    failures.push(format!("{amplitude} µS at {rate} Hz: found/true {r:.3}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn drift_wander_noise_and_spikes_alone_are_rarely_responses() {
        // 120 response-free wrist windows of 120 s (tonic drift up to 0.3
        // µS/min, wander, noise, quantization, 1.5 spikes per minute).
        let w = synth::Wrist {
            responses_per_min: 0.0,
            ..synth::Wrist::at(0.1)
        };
        let mut false_found = 0usize;
        for k in 0..120u64 {
            let rate = [4.0, 8.0, 16.0, 32.0][(k % 4) as usize];
            let trace = synth::wrist_scr_trace(95_000 + k, rate, 120.0, &w);
            false_found += analyze(&trace.samples, rate, DEFAULT_MIN_AMPLITUDE_US)
                .scrs
                .len();
        }
        // 15 measured (0.13 per window); 23 before the template's second
        // revision, 34 before the template test,
        // and the quality report's seeds gave 0.63 per window before the
        // tonic slope was fitted clear of the rise's foot.
        assert!(
            false_found <= 20,
            "{false_found} false responses in 120 windows"
        );
    }

    #[test]
    fn a_small_response_on_a_falling_level_counts() {
        // 0.03 µS on a level falling 0.5 µS/min: in the raw signal it climbs
        // barely 0.015 µS; measured against the fall it is 0.02–0.03.
        let rate = 16.0;
        let mut trace = synth::scr_trace(21, rate, 60.0, 5.0, &[30.0], &[0.03], 0.002);
        for (i, v) in trace.samples.iter_mut().enumerate() {
            *v -= 0.5 / 60.0 * i as f64 / rate;
        }
        let f = analyze(&trace.samples, rate, DEFAULT_MIN_AMPLITUDE_US);
        assert_eq!(f.scrs.len(), 1, "{:?}", f.scrs);
        let at = f.scrs[0].peak as f64 / rate;
        assert!((at - trace.peaks_s[0]).abs() < 1.5, "peak at {at} s");
        // (Measured at the raw peak, which the fall brings forward: a little
        // under the response's own height.)
        assert!(
            (0.015..0.04).contains(&f.scrs[0].amplitude_us),
            "{:?}",
            f.scrs
        );
        // The same fall without the response: nothing.
        let flat: Vec<f64> = synth::scr_trace(21, rate, 60.0, 5.0, &[], &[], 0.002)
            .samples
            .iter()
            .enumerate()
            .map(|(i, v)| v - 0.5 / 60.0 * i as f64 / rate)
            .collect();
        let f = analyze(&flat, rate, DEFAULT_MIN_AMPLITUDE_US);
        assert!(f.scrs.is_empty(), "{:?}", f.scrs);
    }

    #[test]
    fn motion_spikes_are_not_responses() {
        // Windows with many spikes and no responses: some 480 spikes in 40
        // windows; what is left is the noise floor's occasional false
        // response, not the spikes.
        let (mut spikes, mut false_found) = (0usize, 0usize);
        for (k, rate) in [4.0, 8.0, 16.0, 32.0].into_iter().enumerate() {
            let w = synth::Wrist {
                responses_per_min: 0.0,
                spikes_per_min: 6.0,
                ..synth::Wrist::at(0.1)
            };
            for seed in 0..10 {
                let trace = synth::wrist_scr_trace(90_000 + 10 * k as u64 + seed, rate, 120.0, &w);
                assert!(trace.peaks_s.is_empty());
                spikes += trace.spikes;
                false_found += analyze(&trace.samples, rate, DEFAULT_MIN_AMPLITUDE_US)
                    .scrs
                    .len();
            }
        }
        assert!(spikes > 300, "{spikes}");
        // 6 measured.
        assert!(
            false_found <= 12,
            "{false_found} false responses among {spikes} spikes"
        );
        // A 0.5-µS spike of 0.5 s on a flat level, either sign, and on the
        // recovery of a response: only the response counts.
        let rate = 16.0;
        for sign in [1.0, -1.0] {
            let mut trace = synth::scr_trace(3, rate, 60.0, 4.0, &[20.0], &[0.2], 0.003);
            for at in [10.0, 26.0] {
                for (i, v) in trace.samples.iter_mut().enumerate() {
                    let t = i as f64 / rate;
                    *v += sign * 0.5 * (1.0 - 4.0 * (t - at).abs()).max(0.0);
                }
            }
            let f = analyze(&trace.samples, rate, DEFAULT_MIN_AMPLITUDE_US);
            assert_eq!(f.scrs.len(), 1, "sign {sign}: {:?}", f.scrs);
            assert!((f.scrs[0].amplitude_us - 0.2).abs() < 0.03, "{:?}", f.scrs);
        }
    }

    #[test]
    fn the_threshold_follows_the_noise_floor() {
        let quiet = synth::scr_trace(11, 8.0, 60.0, 3.0, &[], &[], 0.001);
        let noisy = synth::scr_trace(11, 8.0, 60.0, 3.0, &[], &[], 0.03);
        let q = analyze(&quiet.samples, 8.0, DEFAULT_MIN_AMPLITUDE_US);
        let n = analyze(&noisy.samples, 8.0, DEFAULT_MIN_AMPLITUDE_US);
        assert_eq!(q.threshold_us, DEFAULT_MIN_AMPLITUDE_US);
        // 0.03 µS per sample, 13-sample smoothing: 0.0083 µS; the smallest
        // rise that may count (with a clear response shape) is 3 of those,
        // ~0.025.
        assert!((n.noise_us - 0.0083).abs() < 0.002, "{}", n.noise_us);
        assert!((n.threshold_us - 0.025).abs() < 0.006, "{}", n.threshold_us);
        assert!(n.scrs.is_empty(), "{:?}", n.scrs);
        // A response three times the noise floor's threshold still counts.
        let loud = synth::scr_trace(12, 8.0, 60.0, 3.0, &[30.0], &[0.15], 0.03);
        assert_eq!(
            analyze(&loud.samples, 8.0, DEFAULT_MIN_AMPLITUDE_US)
                .scrs
                .len(),
            1
        );
    }

    #[test]
    fn absurd_windows_do_not_panic() {
        let cases: Vec<(Vec<f64>, f64)> = vec![
            (vec![], 4.0),
            (vec![2.0], 4.0),
            (vec![2.0; 1000], 4.0),
            (vec![0.0; 50], 4.0),
            (
                (0..500)
                    .map(|i| if i % 2 == 0 { 0.0 } else { 100.0 })
                    .collect(),
                4.0,
            ),
            (
                (0..500)
                    .map(|i| (i as f64 * 0.37).sin().abs() * 100.0)
                    .collect(),
                100_000.0,
            ),
            ((0..60).map(|i| 1.0 + 0.01 * i as f64).collect(), 1e-6),
            ((0..60).map(|i| 1.0 + 0.01 * i as f64).collect(), 0.5),
        ];
        for (samples, rate) in cases {
            assert!(validate(&samples, Some(rate)).is_ok());
            let f = analyze(&samples, rate, DEFAULT_MIN_AMPLITUDE_US);
            assert!(f.scl_us.is_finite() && f.noise_us.is_finite() && f.threshold_us.is_finite());
            assert!(
                f.scrs
                    .iter()
                    .all(|s| s.onset <= s.peak && s.peak < samples.len())
            );
        }
    }

    #[test]
    fn a_response_across_two_readings_counts_once() {
        let rate = 4.0;
        let t0 = 1_723_732_200_000i64;
        // Onsets from well before the boundary at 15 s to well after it.
        for k in 0..24 {
            let onset = 9.0 + 0.5 * k as f64;
            let trace = synth::scr_trace(40 + k, rate, 30.0, 3.0, &[onset], &[0.1], 0.002);
            let (a, b) = trace.samples.split_at(60);
            let (f1, carry) = analyze_continued(None, a, rate, DEFAULT_MIN_AMPLITUDE_US, t0);
            let (f2, _) =
                analyze_continued(Some(&carry), b, rate, DEFAULT_MIN_AMPLITUDE_US, t0 + 15_000);
            let all: Vec<&Scr> = f1.scrs.iter().chain(&f2.scrs).collect();
            assert_eq!(
                all.len(),
                1,
                "onset {onset} s: {:?} then {:?}",
                f1.scrs,
                f2.scrs
            );
            assert!(
                (all[0].amplitude_us - 0.1).abs() < 0.02,
                "onset {onset} s: {:?}",
                all[0]
            );
            assert_eq!(f2.duration_s, 15.0);
            assert!((f2.scl_us - 3.0).abs() < 0.1, "{}", f2.scl_us);
            // With a gap before it the second window is read alone: the
            // first window's samples do not count in it.
            let (alone, _) =
                analyze_continued(Some(&carry), b, rate, DEFAULT_MIN_AMPLITUDE_US, t0 + 25_000);
            assert_eq!(alone.scrs, analyze(b, rate, DEFAULT_MIN_AMPLITUDE_US).scrs);
        }
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
