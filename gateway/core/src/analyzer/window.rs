//! A bounded window of recent points with running sums, so that means and
//! standard deviations cost O(1) per event and slopes O(k) for the last k.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::label::EmotionLabel;

/// One event as the analyzer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub valence: f64,
    pub arousal: f64,
    /// Event time, Unix seconds.
    pub t: f64,
    pub label: EmotionLabel,
}

/// The last `cap` points with sums of values and squares.
///
/// Running sums drift under repeated add/subtract; they are recomputed exactly
/// once every `cap` pushes, which keeps the amortized cost O(1).
///
/// Serialized (for [`super::checkpoint`]) with its running sums as they are,
/// bit for bit, so that a restored window computes exactly what the original
/// would have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    points: VecDeque<Point>,
    cap: usize,
    sum_v: f64,
    sum_a: f64,
    sq_v: f64,
    sq_a: f64,
    pushes_since_resum: usize,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Window {
            points: VecDeque::with_capacity(cap.min(64)),
            cap,
            sum_v: 0.0,
            sum_a: 0.0,
            sq_v: 0.0,
            sq_a: 0.0,
            pushes_since_resum: 0,
        }
    }

    pub fn push(&mut self, p: Point) {
        if self.points.len() == self.cap
            && let Some(old) = self.points.pop_front()
        {
            self.sum_v -= old.valence;
            self.sum_a -= old.arousal;
            self.sq_v -= old.valence * old.valence;
            self.sq_a -= old.arousal * old.arousal;
        }
        self.sum_v += p.valence;
        self.sum_a += p.arousal;
        self.sq_v += p.valence * p.valence;
        self.sq_a += p.arousal * p.arousal;
        self.points.push_back(p);
        self.pushes_since_resum += 1;
        if self.pushes_since_resum >= self.cap {
            self.resum();
        }
    }

    fn resum(&mut self) {
        let (mut sv, mut sa, mut qv, mut qa) = (0.0, 0.0, 0.0, 0.0);
        for p in &self.points {
            sv += p.valence;
            sa += p.arousal;
            qv += p.valence * p.valence;
            qa += p.arousal * p.arousal;
        }
        (self.sum_v, self.sum_a, self.sq_v, self.sq_a) = (sv, sa, qv, qa);
        self.pushes_since_resum = 0;
    }

    /// Whether a decoded window could have been built by
    /// `Window::new(cap)` and pushes.
    pub(crate) fn is_consistent_with(&self, cap: usize) -> bool {
        self.cap == cap.max(1)
            && self.points.len() <= self.cap
            && self.pushes_since_resum < self.cap
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn last(&self) -> Option<&Point> {
        self.points.back()
    }

    /// The last `k` points, oldest first.
    pub fn recent(&self, k: usize) -> impl ExactSizeIterator<Item = &Point> + Clone {
        let skip = self.points.len().saturating_sub(k);
        self.points.range(skip..)
    }

    pub fn mean_valence(&self) -> f64 {
        mean(self.sum_v, self.len())
    }

    pub fn mean_arousal(&self) -> f64 {
        mean(self.sum_a, self.len())
    }

    /// Population standard deviation (numpy's `np.std`, as the original used).
    pub fn std_valence(&self) -> f64 {
        std(self.sum_v, self.sq_v, self.len())
    }

    pub fn std_arousal(&self) -> f64 {
        std(self.sum_a, self.sq_a, self.len())
    }
}

fn mean(sum: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn std(sum: f64, sq: f64, n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let m = sum / n as f64;
    (sq / n as f64 - m * m).max(0.0).sqrt()
}

/// Population mean and standard deviation of a small sequence, in one pass.
pub fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64, usize) {
    let (mut n, mut s, mut q) = (0usize, 0.0, 0.0);
    for x in values {
        n += 1;
        s += x;
        q += x * x;
    }
    (mean(s, n), std(s, q, n), n)
}

/// Least-squares slope of `ys` against their index 0, 1, 2, … (per event).
pub fn slope(ys: impl ExactSizeIterator<Item = f64> + Clone) -> f64 {
    let n = ys.len();
    if n < 2 {
        return 0.0;
    }
    let nf = n as f64;
    let x_mean = (nf - 1.0) / 2.0;
    let y_mean = ys.clone().sum::<f64>() / nf;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.enumerate() {
        let dx = i as f64 - x_mean;
        num += dx * (y - y_mean);
        den += dx * dx;
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(v: f64, a: f64) -> Point {
        Point {
            valence: v,
            arousal: a,
            t: 0.0,
            label: EmotionLabel::Neutral,
        }
    }

    #[test]
    fn running_sums_match_a_fresh_computation_after_wrapping() {
        let mut w = Window::new(7);
        let vals: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 200) as f64 / 100.0 - 1.0)
            .collect();
        for (i, v) in vals.iter().enumerate() {
            w.push(pt(*v, (v + 1.0) / 2.0));
            let start = (i + 1).saturating_sub(7);
            let (m, s, _) = mean_std(vals[start..=i].iter().copied());
            assert!((w.mean_valence() - m).abs() < 1e-9);
            assert!((w.std_valence() - s).abs() < 1e-6, "{i}");
        }
        assert_eq!(w.len(), 7);
    }

    #[test]
    fn slope_of_a_line_is_its_gradient() {
        let ys: Vec<f64> = (0..10).map(|i| 0.5 - 0.1 * i as f64).collect();
        assert!((slope(ys.iter().copied()) + 0.1).abs() < 1e-12);
        assert_eq!(slope([1.0].into_iter()), 0.0);
    }
}
