//! Number formatting shared by the analyzer and the credit summaries.

/// Round to 3 decimal places, as the original's replies did.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
