//! Landmark geometry: the 68-point layout (iBUG 300-W, as dlib and OpenFace
//! output it), for frames that come without action units.
//!
//! Points, 0-based: jaw 0–16, brows 17–21 and 22–26, nose 27–35, eyes 36–41
//! and 42–47, outer lips 48–59, inner lips 60–67.
//!
//! The face is normalised first: translated to the midpoint of the eye
//! centres, rotated so the eye line is horizontal (in-plane roll removed) and
//! scaled by the inter-ocular distance (IOD, between eye centres). Then a few
//! ratios are measured and turned into rough action-unit intensities:
//!
//! | measure | unit(s) |
//! |---|---|
//! | inner-lip gap / IOD | AU25 lips part, AU26 jaw drop, AU27 mouth stretch |
//! | lip-corner height above the mouth centre / IOD | AU12 (up), AU15 (down) |
//! | eye aspect ratio (Soukupová and Čech 2016) | AU5 (wide), AU43 (closed) |
//! | inner / outer brow height above the eye centres / IOD | AU1, AU2 (up), AU4 (down) |
//!
//! The thresholds are person-independent averages of a neutral adult face
//! (eye aspect ratio ≈ 0.3, brows ≈ 0.33 IOD above the eye centres, lips
//! closed): faces differ more than that from person to person, so these
//! estimates are rough and the plugin gives them its lowest confidence.

use crate::facs::MAX_AU;
use emotion_plugin_sdk::Point;

/// Number of points of the supported layout.
pub const POINTS: usize = 68;

/// Normalised measurements of one face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Inter-ocular distance in the detector's coordinates.
    pub iod: f64,
    /// In-plane rotation of the eye line, degrees.
    pub roll_deg: f64,
    /// Inner-lip gap / IOD.
    pub mouth_open: f64,
    /// Lip corners above the mouth centre / IOD (negative: below).
    pub corner_lift: f64,
    /// Mean eye aspect ratio.
    pub eye_aspect: f64,
    /// Inner brow points (21, 22) above the eye centres / IOD.
    pub inner_brow: f64,
    /// Outer brow points (17, 26) above the eye centres / IOD.
    pub outer_brow: f64,
}

/// Measure a 68-point face. `Err` when the layout is not 68 points or the
/// eyes coincide (a degenerate detection).
pub fn measure(points: &[Point]) -> Result<Geometry, String> {
    if points.len() != POINTS {
        return Err(format!(
            "landmarks: {} points; only the 68-point layout (iBUG 300-W, dlib, OpenFace) can be read without action units",
            points.len()
        ));
    }
    let mean = |range: std::ops::Range<usize>| {
        let n = range.len() as f64;
        let (sx, sy) = points[range]
            .iter()
            .fold((0.0, 0.0), |(sx, sy), p| (sx + p.x, sy + p.y));
        (sx / n, sy / n)
    };
    let right_eye = mean(36..42);
    let left_eye = mean(42..48);
    let (dx, dy) = (left_eye.0 - right_eye.0, left_eye.1 - right_eye.1);
    let iod = dx.hypot(dy);
    if !(iod.is_finite() && iod > 1e-9) {
        return Err("landmarks: the eye centres coincide (degenerate face)".into());
    }
    let angle = dy.atan2(dx);
    let (sin, cos) = (-angle).sin_cos();
    let origin = (
        (right_eye.0 + left_eye.0) / 2.0,
        (right_eye.1 + left_eye.1) / 2.0,
    );
    // Normalised point i: eyes on the x axis, IOD 1, y growing downwards.
    let p = |i: usize| {
        let (x, y) = (points[i].x - origin.0, points[i].y - origin.1);
        ((x * cos - y * sin) / iod, (x * sin + y * cos) / iod)
    };
    let dist = |a: usize, b: usize| {
        let (pa, pb) = (p(a), p(b));
        (pa.0 - pb.0).hypot(pa.1 - pb.1)
    };
    let ear = |e: [usize; 6]| {
        let width = dist(e[0], e[3]);
        if width <= 1e-9 {
            0.0
        } else {
            (dist(e[1], e[5]) + dist(e[2], e[4])) / (2.0 * width)
        }
    };
    let eye_aspect = (ear([36, 37, 38, 39, 40, 41]) + ear([42, 43, 44, 45, 46, 47])) / 2.0;
    // The mouth centre (between the inner lips) moves with the jaw as the
    // corners do, so opening the mouth does not read as a smile.
    let mouth_centre = (p(62).1 + p(66).1) / 2.0;
    let corners = (p(48).1 + p(54).1) / 2.0;
    Ok(Geometry {
        iod,
        roll_deg: angle.to_degrees(),
        mouth_open: dist(62, 66),
        corner_lift: mouth_centre - corners,
        eye_aspect,
        // Eye centres are at y = 0; brows above them have negative y.
        inner_brow: -(p(21).1 + p(22).1) / 2.0,
        outer_brow: -(p(17).1 + p(26).1) / 2.0,
    })
}

/// Linear ramp from `lo` (0) to `hi` (`top`).
fn ramp(x: f64, lo: f64, hi: f64, top: f64) -> f64 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0) * top
}

/// Rough action-unit intensities (0–5) from the geometry.
pub fn estimate_units(g: &Geometry) -> [f64; MAX_AU] {
    let mut i = [0.0; MAX_AU];
    i[25] = ramp(g.mouth_open, 0.04, 0.10, 3.0);
    i[26] = ramp(g.mouth_open, 0.15, 0.35, 4.0);
    i[27] = ramp(g.mouth_open, 0.45, 0.65, 4.0);
    i[12] = ramp(g.corner_lift, 0.03, 0.13, 4.0);
    i[15] = ramp(-g.corner_lift, 0.04, 0.12, 3.5);
    i[5] = ramp(g.eye_aspect, 0.34, 0.44, 3.5);
    i[43] = ramp(-g.eye_aspect, -0.15, -0.07, 4.0);
    i[1] = ramp(g.inner_brow, 0.38, 0.48, 3.5);
    i[2] = ramp(g.outer_brow, 0.38, 0.48, 3.5);
    i[4] = ramp(-g.inner_brow, -0.27, -0.19, 3.5);
    i
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A neutral 68-point face: eye centres at (±0.5, 0) times `scale`.
    pub fn neutral_face() -> Vec<(f64, f64)> {
        let mut p = vec![(0.0, 0.0); POINTS];
        // Jaw.
        for (k, pt) in p.iter_mut().enumerate().take(17) {
            let t = k as f64 / 16.0 * std::f64::consts::PI;
            *pt = (-0.9 * t.cos(), 0.3 + 1.0 * t.sin());
        }
        // Brows, outer to inner (right), inner to outer (left).
        let brow_y = [-0.30, -0.33, -0.34, -0.33, -0.32];
        for k in 0..5 {
            p[17 + k] = (-0.8 + 0.13 * k as f64, brow_y[k]);
            p[26 - k] = (0.8 - 0.13 * k as f64, brow_y[k]);
        }
        // Nose.
        for k in 0..4 {
            p[27 + k] = (0.0, 0.1 + 0.12 * k as f64);
        }
        for k in 0..5 {
            p[31 + k] = (-0.12 + 0.06 * k as f64, 0.58);
        }
        // Eyes: corners at centre ± 0.15, lids at ∓0.045 (aspect ratio 0.3).
        for (start, cx) in [(36, -0.5), (42, 0.5)] {
            p[start] = (cx - 0.15, 0.0);
            p[start + 1] = (cx - 0.05, -0.045);
            p[start + 2] = (cx + 0.05, -0.045);
            p[start + 3] = (cx + 0.15, 0.0);
            p[start + 4] = (cx + 0.05, 0.045);
            p[start + 5] = (cx - 0.05, 0.045);
        }
        // Outer lips: 48 right corner, 51 top centre, 54 left corner, 57 bottom centre.
        let outer = [
            (-0.42, 1.0),
            (-0.28, 0.95),
            (-0.1, 0.92),
            (0.0, 0.93),
            (0.1, 0.92),
            (0.28, 0.95),
            (0.42, 1.0),
            (0.28, 1.05),
            (0.1, 1.08),
            (0.0, 1.08),
            (-0.1, 1.08),
            (-0.28, 1.05),
        ];
        p[48..60].copy_from_slice(&outer);
        // Inner lips: 60 right, 62 top centre, 64 left, 66 bottom centre.
        let inner = [
            (-0.36, 1.0),
            (-0.15, 0.995),
            (0.0, 0.99),
            (0.15, 0.995),
            (0.36, 1.0),
            (0.15, 1.005),
            (0.0, 1.01),
            (-0.15, 1.005),
        ];
        p[60..68].copy_from_slice(&inner);
        p
    }

    pub fn to_points(face: &[(f64, f64)], scale: f64, roll_deg: f64, at: (f64, f64)) -> Vec<Point> {
        let (s, c) = roll_deg.to_radians().sin_cos();
        face.iter()
            .map(|&(x, y)| Point {
                x: at.0 + scale * (x * c - y * s),
                y: at.1 + scale * (x * s + y * c),
            })
            .collect()
    }

    #[test]
    fn neutral_face_has_no_units_whatever_its_size_and_roll() {
        for (scale, roll) in [(1.0, 0.0), (80.0, 20.0), (0.1, -35.0)] {
            let g = measure(&to_points(&neutral_face(), scale, roll, (300.0, 200.0)))
                .expect("measurable");
            assert!((g.iod / scale - 1.0).abs() < 1e-9);
            assert!((g.roll_deg - roll).abs() < 1e-6);
            let units = estimate_units(&g);
            assert!(units.iter().all(|&x| x == 0.0), "{g:?}");
        }
    }

    #[test]
    fn smile_and_open_mouth_are_seen() {
        let mut face = neutral_face();
        face[48].1 -= 0.12;
        face[54].1 -= 0.12;
        let g = measure(&to_points(&face, 50.0, 10.0, (0.0, 0.0))).expect("measurable");
        let u = estimate_units(&g);
        assert!(u[12] > 2.5, "{g:?}");
        // Jaw drop: the lower lip goes down, the corners half as far.
        let mut face = neutral_face();
        for i in [55, 56, 57, 58, 59, 65, 66, 67] {
            face[i].1 += 0.3;
        }
        for i in [48, 54, 60, 64] {
            face[i].1 += 0.15;
        }
        let u = estimate_units(&measure(&to_points(&face, 50.0, 0.0, (0.0, 0.0))).expect("m"));
        assert!(u[25] > 2.9 && u[26] > 1.0, "{:?}", &u[25..28]);
        assert_eq!((u[12], u[15]), (0.0, 0.0));
    }

    #[test]
    fn wrong_layouts_are_refused() {
        assert!(measure(&[Point { x: 0.0, y: 0.0 }; 5]).is_err());
        assert!(measure(&vec![Point { x: 1.0, y: 1.0 }; POINTS]).is_err());
    }
}
