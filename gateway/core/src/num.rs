//! Number formatting shared by the analyzer and the credit summaries.

/// Round to 3 decimal places, as the original's replies did.
pub(crate) fn round3(x: f64) -> f64 {
    round(x * 1000.0) / 1000.0
}

/// `f64::round` (half away from zero). The standard one is a libm call on the
/// baseline x86-64 target (about a hundred instructions, a tenth of the
/// analyzer's work per event); truncating through an integer is exact for
/// |y| < 2⁵³ and takes a few.
pub(crate) fn round(y: f64) -> f64 {
    // NaN, infinities and huge values take the standard path.
    if y.is_nan() || y.abs() >= 9.0e15 {
        return y.round();
    }
    let t = (y as i64) as f64;
    let f = y - t;
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        // Keeps the sign of a zero (−0.4 rounds to −0, as the standard one does).
        t.copysign(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_matches_the_standard_one() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let y = match i % 4 {
                0 => (x >> 11) as f64 / (1u64 << 53) as f64 * 2000.0 - 1000.0,
                1 => (x % 20_001) as f64 / 10.0 - 1000.0, // exact halves
                2 => f64::from_bits(x),
                _ => (x >> 11) as f64 / (1u64 << 53) as f64 * 2e16 - 1e16,
            };
            let (ours, std) = (round(y), y.round());
            assert!(
                ours == std || (ours.is_nan() && std.is_nan()),
                "{y:e}: {ours} != {std}"
            );
        }
        for y in [
            0.5,
            -0.5,
            1.5,
            -2.5,
            0.49999999999999994,
            -0.0,
            4.5e15,
            f64::INFINITY,
        ] {
            assert_eq!(round(y).to_bits(), y.round().to_bits(), "{y:e}");
        }
    }
}
