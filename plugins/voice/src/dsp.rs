//! Signal-processing primitives: dot products, biquads, running energies,
//! percentiles and the YIN difference function.

/// Dot product with eight independent accumulators: the compiler can keep
/// them in vector registers natively, and even scalar WebAssembly gains from
/// the shorter dependency chains.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// A second-order IIR section (RBJ audio-EQ cookbook), transposed direct
/// form II.
#[derive(Debug, Clone, Copy)]
pub struct Biquad {
    b0: f32,
    b1: f32,
    b2: f32,
    a1: f32,
    a2: f32,
}

impl Biquad {
    fn from_normalised(b: [f64; 3], a: [f64; 3]) -> Self {
        Biquad {
            b0: (b[0] / a[0]) as f32,
            b1: (b[1] / a[0]) as f32,
            b2: (b[2] / a[0]) as f32,
            a1: (a[1] / a[0]) as f32,
            a2: (a[2] / a[0]) as f32,
        }
    }

    /// Low-pass at `f0` Hz for sample rate `fs`, quality `q`
    /// (0.7071: Butterworth).
    pub fn lowpass(fs: f64, f0: f64, q: f64) -> Self {
        let w = 2.0 * std::f64::consts::PI * f0 / fs;
        let (s, c) = w.sin_cos();
        let alpha = s / (2.0 * q);
        Self::from_normalised(
            [(1.0 - c) / 2.0, 1.0 - c, (1.0 - c) / 2.0],
            [1.0 + alpha, -2.0 * c, 1.0 - alpha],
        )
    }

    /// High-pass at `f0` Hz for sample rate `fs`, quality `q`.
    pub fn highpass(fs: f64, f0: f64, q: f64) -> Self {
        let w = 2.0 * std::f64::consts::PI * f0 / fs;
        let (s, c) = w.sin_cos();
        let alpha = s / (2.0 * q);
        Self::from_normalised(
            [(1.0 + c) / 2.0, -(1.0 + c), (1.0 + c) / 2.0],
            [1.0 + alpha, -2.0 * c, 1.0 - alpha],
        )
    }

    /// One sample through the section, with its state `z` (transposed
    /// direct form II; the same arithmetic as [`Biquad::apply`]).
    #[inline(always)]
    pub fn step(&self, z: &mut [f32; 2], input: f32) -> f32 {
        let out = self.b0 * input + z[0];
        z[0] = self.b1 * input - self.a1 * out + z[1];
        z[1] = self.b2 * input - self.a2 * out;
        out
    }

    /// Filter `x` in place, from a zero state.
    pub fn apply(&self, x: &mut [f32]) {
        let (mut z1, mut z2) = (0.0f32, 0.0f32);
        for v in x.iter_mut() {
            let input = *v;
            let out = self.b0 * input + z1;
            z1 = self.b1 * input - self.a1 * out + z2;
            z2 = self.b2 * input - self.a2 * out;
            *v = out;
        }
    }
}

/// Running sums of squares: `out[i]` = Σ x[..i]², so the energy of
/// `x[a..b]` is `out[b] - out[a]` (f64: the differences stay exact enough
/// over minutes of audio).
pub fn prefix_squares(x: &[f32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len() + 1);
    let mut acc = 0.0f64;
    out.push(0.0);
    for &v in x {
        acc += f64::from(v) * f64::from(v);
        out.push(acc);
    }
    out
}

/// `v` when positive, else 0 (NaN too): `v.max(0.0)` without a call into
/// libm (`emotion_plugin_sdk::num`), 48,000 times per 3-s reading in the
/// pitch tracker's difference functions.
#[inline]
pub fn non_negative(v: f64) -> f64 {
    emotion_plugin_sdk::num::larger(0.0, v)
}

/// Energy of `x[start..start + len]` from its [`prefix_squares`].
#[inline]
pub fn energy(prefix: &[f64], start: usize, len: usize) -> f64 {
    non_negative(prefix[start + len] - prefix[start])
}

/// The `p`-quantile (0..=1) of sorted values, linearly interpolated.
/// `None` for no values.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    match sorted.len() {
        0 => None,
        1 => Some(sorted[0]),
        n => {
            let pos = p.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let f = pos - lo as f64;
            Some(sorted[lo] * (1.0 - f) + sorted[hi] * f)
        }
    }
}

/// Sort finite values (NaNs must not reach here; they sort last if they do).
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Power in decibels, floored at −120 dB (digital silence).
pub fn db(power: f64) -> f64 {
    10.0 * power.max(1e-12).log10()
}

/// The YIN difference function d(τ) = Σ_{j<w} (x[s+j] − x[s+j+τ])² for
/// τ in `lags`, written into `out[τ]` (de Cheveigné & Kawahara 2002, eq. 6),
/// computed as e(s) + e(s+τ) − 2·r(τ) with the energies from `prefix`.
pub fn difference(
    x: &[f32],
    prefix: &[f64],
    start: usize,
    w: usize,
    lags: std::ops::RangeInclusive<usize>,
    out: &mut [f64],
) {
    let e0 = energy(prefix, start, w);
    let head = &x[start..start + w];
    for tau in lags {
        let r = f64::from(dot(head, &x[start + tau..start + tau + w]));
        let et = energy(prefix, start + tau, w);
        out[tau] = non_negative(e0 + et - 2.0 * r);
    }
}

/// Result of the YIN search on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YinPick {
    /// Integer lag of the chosen dip.
    pub lag: usize,
    /// The cumulative-mean-normalised difference d'(lag): YIN's aperiodicity
    /// measure (0 = perfectly periodic, about 1 = noise).
    pub aperiodicity: f64,
}

/// YIN steps 3–4 on a frame's difference function `d[0..=tau_max]`: the
/// cumulative mean normalised difference d'(τ), then the first dip below
/// `threshold` in `tau_min..=tau_max` (followed down to its local minimum), or
/// the global minimum when no dip goes below it.
pub fn yin_pick(
    d: &[f64],
    tau_min: usize,
    tau_max: usize,
    threshold: f64,
    cmnd: &mut [f64],
) -> Option<YinPick> {
    if tau_max >= d.len() || tau_min < 1 || tau_min > tau_max {
        return None;
    }
    cmnd[0] = 1.0;
    let mut running = 0.0;
    for tau in 1..=tau_max {
        running += d[tau];
        cmnd[tau] = if running > 0.0 {
            d[tau] * tau as f64 / running
        } else {
            1.0
        };
    }
    let mut tau = tau_min;
    while tau <= tau_max {
        if cmnd[tau] < threshold {
            while tau < tau_max && cmnd[tau + 1] < cmnd[tau] {
                tau += 1;
            }
            return Some(YinPick {
                lag: tau,
                aperiodicity: cmnd[tau],
            });
        }
        tau += 1;
    }
    let (lag, &aperiodicity) = cmnd[tau_min..=tau_max]
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))?;
    Some(YinPick {
        lag: lag + tau_min,
        aperiodicity,
    })
}

/// Vertex offset (−0.5..0.5 when `b` is the minimum) of the parabola through
/// three equally spaced points.
pub fn parabolic_offset(a: f64, b: f64, c: f64) -> f64 {
    let den = a - 2.0 * b + c;
    if den.abs() < 1e-18 {
        0.0
    } else {
        (0.5 * (a - c) / den).clamp(-1.0, 1.0)
    }
}

/// Median of a small slice (copied).
pub fn median(v: &[f64]) -> Option<f64> {
    quantile(&sorted(v.to_vec()), 0.5)
}
