//! Small JSON helpers for the extra fields plugins attach to their emotions
//! (see [`Emotion::with_extra`](crate::Emotion::with_extra)): fast number
//! formatting and string quoting. The SDK has no JSON dependency (plugins
//! need not pay for one).

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
    let scaled = round_half_up(x.abs() * scale as f64);
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

/// `y.round()` for `y >= 0` (halves away from zero). `f64::round` has no
/// WebAssembly instruction and becomes a call into the guest's libm; `trunc`
/// is one instruction, and `y - trunc(y)` is exact.
fn round_half_up(y: f64) -> f64 {
    let t = y.trunc();
    if y - t >= 0.5 { t + 1.0 } else { t }
}

/// Decimal digits of `n`, zero-padded to at least `width`.
fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    // Digits in 32-bit arithmetic as soon as they fit: wasm32 has no 64-bit
    // multiply-high, so a 64-bit division by 10 stays a division there
    // (natively it is a multiplication), and the extra text's numbers fit.
    while n > u64::from(u32::MAX) {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut m = u32::try_from(n).unwrap_or(u32::MAX);
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    // ASCII digits, pushed as they are (a `str::from_utf8` check of them
    // was a visible cost in WebAssembly).
    out.extend(buf[start..].iter().map(|&b| char::from(b)));
}

/// Append `s` as a JSON string literal (quoted, escaped).
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    // Most strings (keys) need no escape: one pass without an early exit
    // (LLVM vectorizes it), then one copy. The loop below, which stops at
    // every byte, took four times its native time in WebAssembly.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
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
    fn rounding_and_digits_match_the_standard_library() {
        let mut ys: Vec<f64> = vec![
            0.0,
            0.5,
            1.5,
            2.5,
            0.499_999_999_999_999_94,
            4_503_599_627_370_495.5,
        ];
        let mut y = 1e-3_f64;
        while y < 9e15 {
            ys.extend([y, y + 0.5, (y * 7.3).floor() + 0.5, y.next_up()]);
            y *= 1.7;
        }
        for y in ys {
            assert_eq!(round_half_up(y), y.round(), "{y:e}");
        }
        for (n, width) in [
            (0, 1),
            (7, 3),
            (4_294_967_295, 1),
            (4_294_967_296, 1),
            (10_000_000_000, 12),
            (u64::MAX, 1),
        ] {
            let mut s = String::new();
            push_digits(&mut s, n, width);
            assert_eq!(s, format!("{n:0width$}"));
        }
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

    #[test]
    fn plain_strings_are_copied_and_any_escape_anywhere_is_found() {
        for plain in ["", "stress_index", "é ü 😀", "a'b/c<d>"] {
            let mut s = String::new();
            push_string(&mut s, plain);
            assert_eq!(s, format!("\"{plain}\""));
        }
        // One character needing an escape at every position of a string
        // longer than a vector of bytes.
        let base = "abcdefghijklmnopqrstuvwxyz0123456789";
        for c in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in 0..=base.len() {
                let text = format!("{}{c}{}", &base[..at], &base[at..]);
                let mut s = String::new();
                push_string(&mut s, &text);
                let back: String = serde_json::from_str(&s).expect("a JSON string");
                assert_eq!(back, text, "{s}");
            }
        }
    }
}
