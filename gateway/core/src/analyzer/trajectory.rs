//! Where a sequence of emotions is heading: trends from a least-squares slope,
//! stability, recurring patterns and emotional velocity.

use serde::Serialize;

use super::window::{Window, mean_std, slope};
use crate::num::round3;

/// The shortest time span a velocity is computed over: a window of events
/// closer together than this counts as this long.
pub const VELOCITY_MIN_SPAN_SECS: f64 = 60.0;

/// Slope (per event) beyond which a trend counts as moving, from the original.
pub const TREND_THRESHOLD: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    /// Valence: `improving`, `declining`, `stable`; arousal: `increasing`,
    /// `decreasing`, `stable`.
    pub direction: &'static str,
    /// |slope|: how fast it moves, per event.
    pub strength: f64,
    /// Least-squares slope per event over the trajectory window.
    pub slope: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trajectory {
    pub valence: Trend,
    pub arousal: Trend,
    pub stability_score: f64,
    /// `emotional_consistency`, `high_volatility`, `cyclical_emotions`.
    pub patterns: Vec<&'static str>,
    /// Distance moved on the circumplex (valence × arousal) per minute: the
    /// path over the window divided by the time it spans, that span floored
    /// at [`VELOCITY_MIN_SPAN_SECS`] so events milliseconds apart do not
    /// read as thousands per second.
    pub emotional_velocity: f64,
    /// Mean distance moved per event (no time base).
    pub velocity_per_step: f64,
    /// How many events the trajectory was computed from.
    pub window: usize,
}

/// Stability in [0, 1] from the spreads of valence and arousal:
/// `1 − min((σv + σa) / 2, 1)`, the original's formula.
pub fn stability(std_v: f64, std_a: f64) -> f64 {
    1.0 - ((std_v + std_a) / 2.0).min(1.0)
}

/// Population σ of valence and arousal over the last `k` points of `w`.
pub fn spread(w: &Window, k: usize) -> (f64, f64) {
    let (mut n, mut sv, mut qv, mut sa, mut qa) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in w.recent(k) {
        n += 1.0;
        sv += p.valence;
        qv += p.valence * p.valence;
        sa += p.arousal;
        qa += p.arousal * p.arousal;
    }
    if n < 2.0 {
        return (0.0, 0.0);
    }
    let var = |s: f64, q: f64| (q / n - (s / n) * (s / n)).max(0.0).sqrt();
    (var(sv, qv), var(sa, qa))
}

/// Stability of the last `k` points of `w`, as in a trajectory.
pub fn recent_stability(w: &Window, k: usize) -> f64 {
    let (sv, sa) = spread(w, k);
    round3(stability(sv, sa))
}

fn trend(slope: f64, up: &'static str, down: &'static str) -> Trend {
    let direction = if slope > TREND_THRESHOLD {
        up
    } else if slope < -TREND_THRESHOLD {
        down
    } else {
        "stable"
    };
    Trend {
        direction,
        strength: round3(slope.abs()),
        slope: round3(slope),
    }
}

/// Trajectory of the last `k` points of `w`; `None` with fewer than two.
pub fn trajectory(w: &Window, k: usize) -> Option<Trajectory> {
    let pts = w.recent(k);
    let n = pts.len();
    if n < 2 {
        return None;
    }
    let sv = slope(pts.clone().map(|p| p.valence));
    let sa = slope(pts.clone().map(|p| p.arousal));
    let (std_v, std_a) = spread(w, k);

    let mut patterns = Vec::new();
    if n >= 3 {
        let last5 = w.recent(5);
        if last5.len() >= 5 {
            let mut distinct: Vec<_> = last5.clone().map(|p| p.label).collect();
            distinct.sort();
            distinct.dedup();
            if distinct.len() <= 2 {
                patterns.push("emotional_consistency");
            }
            let (_, s5, _) = mean_std(last5.map(|p| p.valence));
            if s5 > 0.5 {
                patterns.push("high_volatility");
            }
        }
        // Direction flips of valence with both steps larger than 0.3, over the last 6.
        let mut last6 = [0.0f64; 6];
        let mut m = 0;
        for (slot, p) in last6.iter_mut().zip(w.recent(6)) {
            *slot = p.valence;
            m += 1;
        }
        let flips = last6[..m]
            .windows(3)
            .filter(|t| {
                let (d1, d2) = (t[1] - t[0], t[2] - t[1]);
                d1.abs() > 0.3 && d2.abs() > 0.3 && d1.signum() != d2.signum()
            })
            .count();
        if flips >= 2 {
            patterns.push("cyclical_emotions");
        }
    }

    // The path over the window, and the time it spans (events arrive in
    // ingestion order; a timestamp going back adds no time).
    let (mut path, mut steps) = (0.0, 0usize);
    let (mut first_t, mut last_t) = (None, f64::MIN);
    let mut prev: Option<(f64, f64)> = None;
    for p in pts {
        if let Some((pv, pa)) = prev {
            let (dv, da): (f64, f64) = (p.valence - pv, p.arousal - pa);
            path += (dv * dv + da * da).sqrt();
            steps += 1;
        }
        first_t.get_or_insert(p.t);
        last_t = last_t.max(p.t);
        prev = Some((p.valence, p.arousal));
    }
    let span = (last_t - first_t.unwrap_or(last_t)).max(VELOCITY_MIN_SPAN_SECS);
    let per_minute = path / span * 60.0;
    let per_step = if steps == 0 { 0.0 } else { path / steps as f64 };

    Some(Trajectory {
        valence: trend(sv, "improving", "declining"),
        arousal: trend(sa, "increasing", "decreasing"),
        stability_score: round3(stability(std_v, std_a)),
        patterns,
        emotional_velocity: crate::num::round(per_minute * 1e4) / 1e4,
        velocity_per_step: crate::num::round(per_step * 1e4) / 1e4,
        window: n,
    })
}

#[cfg(test)]
mod tests {
    use super::super::window::Point;
    use super::*;
    use crate::label::EmotionLabel;

    fn window(points: &[(f64, f64)]) -> Window {
        let mut w = Window::new(100);
        for (i, (v, a)) in points.iter().enumerate() {
            w.push(Point {
                valence: *v,
                arousal: *a,
                t: i as f64 * 2.0,
                label: EmotionLabel::nearest(*v, *a),
            });
        }
        w
    }

    #[test]
    fn falling_valence_is_declining_and_rising_arousal_increasing() {
        let pts: Vec<_> = (0..10)
            .map(|i| (0.5 - 0.1 * i as f64, 0.3 + 0.06 * i as f64))
            .collect();
        let t = trajectory(&window(&pts), 10).expect("enough points");
        assert_eq!(t.valence.direction, "declining");
        assert_eq!(t.valence.slope, -0.1);
        assert_eq!(t.arousal.direction, "increasing");
        assert!(t.emotional_velocity > 0.0);
    }

    #[test]
    fn constant_sequence_is_stable_and_consistent() {
        let t = trajectory(&window(&[(0.4, 0.3); 6]), 10).expect("enough points");
        assert_eq!(
            (t.valence.direction, t.arousal.direction),
            ("stable", "stable")
        );
        assert_eq!(t.stability_score, 1.0);
        assert_eq!(t.patterns, ["emotional_consistency"]);
        assert_eq!(t.emotional_velocity, 0.0);
        assert_eq!(t.velocity_per_step, 0.0);
    }

    #[test]
    fn velocity_has_a_time_base_that_means_something() {
        // Two moves of 0.5 each.
        let at = |times: [f64; 3]| {
            let mut w = Window::new(10);
            for ((v, a), t) in [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)].into_iter().zip(times) {
                w.push(Point {
                    valence: v,
                    arousal: a,
                    t,
                    label: EmotionLabel::nearest(v, a),
                });
            }
            trajectory(&w, 10).expect("enough points")
        };
        // Milliseconds apart: the span is floored at a minute, so 1.0 per
        // minute (it was thousands "per second").
        let burst = at([0.0, 0.001, 0.002]);
        assert_eq!(burst.emotional_velocity, 1.0);
        assert_eq!(burst.velocity_per_step, 0.5);
        // Over ten minutes: 0.1 per minute; per step unchanged.
        let slow = at([0.0, 300.0, 600.0]);
        assert_eq!(slow.emotional_velocity, 0.1);
        assert_eq!(slow.velocity_per_step, 0.5);
    }

    #[test]
    fn swinging_valence_is_volatile_and_cyclical() {
        let pts = [
            (0.8, 0.5),
            (-0.8, 0.5),
            (0.8, 0.5),
            (-0.8, 0.5),
            (0.8, 0.5),
            (-0.8, 0.5),
        ];
        let t = trajectory(&window(&pts), 10).expect("enough points");
        assert!(t.patterns.contains(&"high_volatility"), "{:?}", t.patterns);
        assert!(t.patterns.contains(&"cyclical_emotions"));
        assert!(t.stability_score < 0.7);
    }

    #[test]
    fn one_point_has_no_trajectory() {
        assert!(trajectory(&window(&[(0.1, 0.1)]), 10).is_none());
    }
}
