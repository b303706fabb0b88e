//! Heart-rate variability in the time domain, with artefact rejection.
//!
//! Definitions (Task Force of the European Society of Cardiology and the
//! North American Society of Pacing and Electrophysiology, *Heart rate
//! variability: standards of measurement, physiological interpretation and
//! clinical use*, Circulation 93:1043–1065, 1996):
//!
//! * **mean NN**: mean of the accepted (normal-to-normal) intervals, ms;
//! * **SDNN**: their *sample* standard deviation (n − 1), ms;
//! * **RMSSD**: root mean square of successive differences, ms;
//! * **pNN50**: percentage of successive differences whose absolute value is
//!   **strictly greater than 50 ms**, divided by the number of successive
//!   differences (not by the number of intervals).
//!
//! Successive differences are taken only between intervals that were
//! adjacent in the recording and both accepted: a difference across a
//! rejected beat (or across a gap between readings) would mix two beats'
//! worth of change into one.
//!
//! # Artefacts
//!
//! An interval is rejected when it is out of range (below 300 ms or above
//! 2000 ms: 200 and 30 beats per minute) or when it differs by more than 20 %
//! from the median of its neighbours (up to two valid intervals on each
//! side) — the usual relative criterion for ectopic beats and missed or
//! extra detections (Malik et al. 1989; Kamath and Fallen 1995), made
//! robust by the median so that one bad interval does not condemn the next.

/// Shortest plausible RR interval, ms (200 bpm).
pub const RR_MIN_MS: f64 = 300.0;
/// Longest plausible RR interval, ms (30 bpm).
pub const RR_MAX_MS: f64 = 2000.0;
/// Largest relative deviation from the neighbours' median.
pub const ECTOPIC_TOLERANCE: f64 = 0.20;

/// Intervals after artefact rejection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cleaned {
    /// Accepted intervals, ms, in order.
    pub nn: Vec<f64>,
    /// `joined[i]`: `nn[i]` directly follows `nn[i - 1]` in the recording
    /// (no rejected beat or gap between them). `joined[0]` says whether it
    /// follows the last interval of the context.
    pub joined: Vec<bool>,
    pub out_of_range: usize,
    pub ectopic: usize,
}

impl Cleaned {
    pub fn rejected(&self) -> usize {
        self.out_of_range + self.ectopic
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Clean `rr` (ms, finite: the caller checked). `context` holds the last
/// accepted intervals before these (up to two are used as neighbours of the
/// first ones); `continues` says whether `rr[0]` directly follows them.
pub fn clean(rr: &[f64], context: &[f64], continues: bool) -> Cleaned {
    let mut out = Cleaned::default();
    // Valid-range intervals with their positions; context first.
    let ctx = &context[context.len().saturating_sub(2)..];
    let valid: Vec<(usize, f64)> = rr
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, x)| (RR_MIN_MS..=RR_MAX_MS).contains(&x))
        .collect();
    out.out_of_range = rr.len() - valid.len();
    let mut previous_kept: Option<usize> = None; // index into rr
    let mut neighbours = [0.0f64; 4];
    for (k, &(i, x)) in valid.iter().enumerate() {
        // Up to two valid neighbours before (context included) and after.
        let mut n = 0;
        for j in (k.saturating_sub(2)..k).rev() {
            neighbours[n] = valid[j].1;
            n += 1;
        }
        if k < 2 && continues {
            for &c in ctx.iter().rev().take(2 - k) {
                neighbours[n] = c;
                n += 1;
            }
        }
        for v in valid.iter().skip(k + 1).take(2) {
            neighbours[n] = v.1;
            n += 1;
        }
        if n > 0 {
            let reference = median(&mut neighbours[..n]);
            if (x - reference).abs() > ECTOPIC_TOLERANCE * reference {
                out.ectopic += 1;
                continue;
            }
        }
        let joined = match previous_kept {
            Some(p) => p + 1 == i,
            None => continues && i == 0,
        };
        out.nn.push(x);
        out.joined.push(joined);
        previous_kept = Some(i);
    }
    out
}

/// Time-domain HRV of a run of NN intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeDomain {
    /// Number of NN intervals.
    pub n: usize,
    /// Number of successive differences used (adjacent accepted pairs).
    pub n_diffs: usize,
    pub mean_nn_ms: f64,
    /// Sample standard deviation; `None` with fewer than 2 intervals.
    pub sdnn_ms: Option<f64>,
    /// `None` without successive differences.
    pub rmssd_ms: Option<f64>,
    /// Differences with |d| > 50 ms (strictly), percent of the differences.
    pub pnn50_pct: Option<f64>,
}

impl TimeDomain {
    pub fn mean_hr_bpm(&self) -> f64 {
        60_000.0 / self.mean_nn_ms
    }
}

/// HRV of `nn`; `joined[i]` as in [`Cleaned`] (`joined[0]` is ignored: the
/// difference to an interval outside `nn` cannot be taken). `None` for an
/// empty series.
pub fn time_domain(nn: &[f64], joined: &[bool]) -> Option<TimeDomain> {
    let n = nn.len();
    if n == 0 {
        return None;
    }
    let mean = nn.iter().sum::<f64>() / n as f64;
    let sdnn = (n >= 2).then(|| {
        let ss: f64 = nn.iter().map(|x| (x - mean) * (x - mean)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    let mut n_diffs = 0usize;
    let mut sum_sq = 0.0;
    let mut over_50 = 0usize;
    for i in 1..n {
        if !joined.get(i).copied().unwrap_or(true) {
            continue;
        }
        let d = nn[i] - nn[i - 1];
        n_diffs += 1;
        sum_sq += d * d;
        if d.abs() > 50.0 {
            over_50 += 1;
        }
    }
    Some(TimeDomain {
        n,
        n_diffs,
        mean_nn_ms: mean,
        sdnn_ms: sdnn,
        rmssd_ms: (n_diffs > 0).then(|| (sum_sq / n_diffs as f64).sqrt()),
        pnn50_pct: (n_diffs > 0).then(|| 100.0 * over_50 as f64 / n_diffs as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hrv_example` of shared/data/ble/hrm_0x2a37_vectors.json.
    const EXAMPLE_RR: [f64; 8] = [800.0, 810.0, 790.0, 860.0, 780.0, 800.0, 900.0, 820.0];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.0005
    }

    #[test]
    fn the_example_of_the_ble_vectors_is_reproduced_exactly() {
        let c = clean(&EXAMPLE_RR, &[], false);
        assert_eq!(
            c.nn, EXAMPLE_RR,
            "no interval of the example is an artefact"
        );
        let t = time_domain(&c.nn, &c.joined).expect("metrics");
        assert_eq!((t.n, t.n_diffs), (8, 7));
        assert!(close(t.mean_nn_ms, 820.0));
        assert!(close(t.sdnn_ms.expect("sdnn"), 40.356), "{t:?}");
        assert!(close(t.rmssd_ms.expect("rmssd"), 63.920), "{t:?}");
        assert!(close(t.pnn50_pct.expect("pnn50"), 57.143), "{t:?}");
    }

    #[test]
    fn pnn50_is_strictly_greater_than_50() {
        let t = time_domain(&[800.0, 850.0, 800.0, 851.0], &[true; 4]).expect("metrics");
        // |d| = 50, 50, 51: only the last counts.
        assert!(close(t.pnn50_pct.expect("pnn50"), 100.0 / 3.0));
    }

    #[test]
    fn ectopic_and_out_of_range_beats_are_rejected() {
        // A premature beat with its compensatory pause, a missed beat (double
        // interval), a dropout (0) and an out-of-range spike.
        let rr = [
            800.0, 810.0, 790.0, 480.0, 1120.0, 805.0, 795.0, 1600.0, 800.0, 0.0, 810.0, 2500.0,
            790.0, 800.0,
        ];
        let c = clean(&rr, &[], false);
        assert_eq!(c.out_of_range, 2);
        assert_eq!(c.ectopic, 3, "{c:?}");
        assert!(c.nn.iter().all(|x| (780.0..=820.0).contains(x)));
        let t = time_domain(&c.nn, &c.joined).expect("metrics");
        // Differences are only taken between adjacent accepted beats.
        assert!(t.rmssd_ms.expect("rmssd") < 20.0, "{t:?}");
        assert!(t.n_diffs < t.n - 1);
    }

    #[test]
    fn context_judges_the_first_beats_of_a_short_reading() {
        // One interval per BLE notification: judged against the last ones.
        let ctx = [800.0, 805.0];
        let c = clean(&[1200.0], &ctx, true);
        assert_eq!(c.ectopic, 1);
        let c = clean(&[812.0], &ctx, true);
        assert_eq!(
            (c.nn.as_slice(), c.joined.as_slice()),
            ([812.0].as_slice(), [true].as_slice())
        );
        // Without continuity the context is not used, and nothing is joined.
        let c = clean(&[1200.0], &ctx, false);
        assert_eq!((c.ectopic, c.joined.as_slice()), (0, [false].as_slice()));
    }

    #[test]
    fn short_series() {
        assert!(time_domain(&[], &[]).is_none());
        let t = time_domain(&[900.0], &[false]).expect("one interval");
        assert_eq!((t.sdnn_ms, t.rmssd_ms, t.pnn50_pct), (None, None, None));
        assert!(close(t.mean_hr_bpm(), 66.667));
    }
}
