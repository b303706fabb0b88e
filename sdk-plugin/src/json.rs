//! Small JSON helpers for the extra fields plugins attach to their emotions
//! (see [`Emotion::with_extra`](crate::Emotion::with_extra)): fast number
//! formatting, string quoting, and reading an object's fields back. The SDK
//! has no JSON dependency (plugins need not pay for one).

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

/// Append `s` as a JSON string literal (quoted, escaped).
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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

    #[test]
    fn strings_are_quoted_and_read_back() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let text = format!("{{{s}:1}}");
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("a JSON object");
        assert_eq!(parsed.get("a\"b\\c\nd\u{1}é"), Some(&serde_json::json!(1)));
    }
}
