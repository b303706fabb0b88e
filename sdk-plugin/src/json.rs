//! Fast JSON number formatting, for the extra fields plugins attach to
//! their emotions (see [`Emotion::with_extra`](crate::Emotion::with_extra)).

use std::fmt::Write as _;

/// Append `x` with `decimals` (0–6) fixed decimals, as JSON (`null` if not
/// finite). Much cheaper than `format!("{x:.3}")`, whose exact algorithm
/// dominated the cost of a reading.
pub fn push_fixed(out: &mut String, x: f64, decimals: u32) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    let decimals = decimals.min(6);
    let scale = 10u64.pow(decimals);
    let scaled = (x.abs() * scale as f64).round();
    if scaled >= 9.0e15 {
        // Beyond exact integers: let the standard formatter do it.
        let _ = write!(out, "{x:.prec$}", prec = decimals as usize);
        return;
    }
    let n = scaled as u64;
    if x < 0.0 && n > 0 {
        out.push('-');
    }
    push_digits(out, n / scale, 1);
    if decimals > 0 {
        out.push('.');
        push_digits(out, n % scale, decimals as usize);
    }
}

/// Decimal digits of `n`, zero-padded to at least `width`.
fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or("0"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_formatter() {
        let mut x = 0.000_123_f64;
        let mut k = 0u32;
        while x < 1e7 {
            for v in [x, -x, x * 1.37, x + 0.5] {
                for d in 0..=4 {
                    let mut s = String::new();
                    push_fixed(&mut s, v, d);
                    let expected = format!("{v:.prec$}", prec = d as usize);
                    let parsed: f64 = s.parse().expect("a number");
                    // Equal, or one unit in the last place apart (ties).
                    assert!(
                        s == expected || (parsed - v).abs() <= 0.5 * 10f64.powi(-(d as i32)) + 1e-9,
                        "{v} .{d}: {s} vs {expected}"
                    );
                }
            }
            x *= 3.1;
            k += 1;
        }
        assert!(k > 10);
        let mut s = String::new();
        push_fixed(&mut s, f64::NAN, 2);
        s.push(' ');
        push_fixed(&mut s, -0.0001, 2);
        s.push(' ');
        push_fixed(&mut s, 63.92, 2);
        s.push(' ');
        push_fixed(&mut s, 7.0, 0);
        assert_eq!(s, "null 0.00 63.92 7");
    }
}
