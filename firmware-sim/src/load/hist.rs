//! A log-linear latency histogram (the HdrHistogram layout, without the
//! dependency): values below 256 ns are counted exactly, above that each
//! power of two is split into 128 equal buckets, so a recorded value is
//! known to within 1/128 (0.8 %). Fixed size, no allocation when
//! recording; histograms of several connections add up.

/// Linear sub-buckets per power of two.
const SUB: u64 = 128;
/// Values below this are their own bucket.
const EXACT: u64 = 2 * SUB;
/// 256 exact buckets, then 128 for each exponent 8..=63.
const BUCKETS: usize = EXACT as usize + (64 - 8) * SUB as usize;

/// Nanosecond latencies.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros()); // ≥ 8
    let mantissa = v >> (e - 7); // in [128, 256)
    (EXACT + (e - 8) * SUB + (mantissa - SUB)) as usize
}

/// The largest value that lands in bucket `i` (what a percentile reports:
/// never below the true value).
fn highest_in(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let e = (i - EXACT) / SUB + 8;
    let mantissa = (i - EXACT) % SUB + SUB;
    let shift = e - 7;
    // (mantissa + 1) << shift, minus one, without overflowing at e = 63.
    (mantissa << shift).saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.count += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1): the smallest bucket bound at or
    /// below which at least `q` of the values lie, capped at the exact
    /// maximum. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(highest_in(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_and_within_one_percent() {
        for w in (0..5_000u64).collect::<Vec<_>>().windows(2) {
            assert!(index(w[0]) <= index(w[1]), "monotone at {}", w[1]);
        }
        for v in (0..5_000u64).chain((1..64).map(|e| 1u64 << e)).chain([
            u64::MAX,
            u64::MAX - 1,
            1_234_567_891,
        ]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v} → {i}");
            let hi = highest_in(i);
            assert!(hi >= v, "{v}: bucket {i} tops at {hi}");
            assert!(
                (hi - v) as f64 <= v as f64 / 128.0 + 1.0,
                "{v}: {hi} too coarse"
            );
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 1..=10_000 µs in ns.
        for us in 1..=10_000u64 {
            h.record(us * 1000);
        }
        let near = |q: f64, want_us: f64| {
            let got = h.quantile(q).expect("values") as f64 / 1000.0;
            assert!(
                (got - want_us).abs() <= want_us / 100.0,
                "q {q}: {got} µs, want {want_us}"
            );
        };
        near(0.5, 5_000.0);
        near(0.99, 9_900.0);
        near(0.999, 9_990.0);
        near(1.0, 10_000.0);
        assert_eq!(h.max(), Some(10_000_000));
        let mut other = Histogram::default();
        other.record(50_000_000);
        h.add(&other);
        assert_eq!(h.count(), 10_001);
        assert_eq!(h.quantile(1.0), Some(50_000_000));
        assert!(h.quantile(0.5) <= h.quantile(0.99));
    }
}
