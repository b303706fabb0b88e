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

/// The fields of a JSON object text as `(key, value's JSON text)` pairs, in
/// order; an empty text is an object without fields. `None` if the text is
/// not one JSON object (values are delimited, not validated).
pub fn object_fields(text: &str) -> Option<Vec<(String, String)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    let mut fields = Vec::new();
    if i == b.len() {
        return Some(fields);
    }
    if b[i] != b'{' {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(fields);
    }
    loop {
        let (key, after) = string_at(text, i)?;
        i = skip_ws(b, after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        fields.push((key, text[start..end].trim_end().to_owned()));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(fields),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The string literal starting at `i` (a `"`), unescaped, and the index
/// after it.
fn string_at(text: &str, i: usize) -> Option<(String, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut out = String::new();
    let mut j = i + 1;
    let mut start = j;
    loop {
        match *b.get(j)? {
            b'"' => {
                out.push_str(&text[start..j]);
                return Some((out, j + 1));
            }
            b'\\' => {
                out.push_str(&text[start..j]);
                let c = match *b.get(j + 1)? {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hex = |k: usize| {
                            text.get(k..k + 4)
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                        };
                        let hi = hex(j + 2)?;
                        if (0xd800..0xdc00).contains(&hi) {
                            // A surrogate pair: `\uD83D\uDE00`.
                            if text.get(j + 6..j + 8) != Some("\\u") {
                                return None;
                            }
                            let lo = hex(j + 8)?;
                            if !(0xdc00..0xe000).contains(&lo) {
                                return None;
                            }
                            j += 6;
                            char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                        } else {
                            char::from_u32(hi)?
                        }
                    }
                    _ => return None,
                };
                out.push(c);
                j += if b[j + 1] == b'u' { 6 } else { 2 };
                start = j;
            }
            _ => j += 1,
        }
    }
}

/// Where the JSON value starting at `i` ends: the first `,` or `}` outside
/// strings and brackets.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    let mut in_string = false;
    while j < b.len() {
        let c = b[j];
        if in_string {
            match c {
                b'\\' => j += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => depth -= 1,
                b',' | b'}' if depth == 0 => return (j > i).then_some(j),
                b']' => return None,
                _ => {}
            }
        }
        j += 1;
    }
    None
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

    #[test]
    fn strings_are_quoted_and_read_back() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let text = format!("{{{s}:1}}");
        assert_eq!(
            object_fields(&text),
            Some(vec![("a\"b\\c\nd\u{1}é".to_owned(), "1".to_owned())])
        );
    }

    #[test]
    fn object_fields_split_nested_values() {
        let text = r#" {"a": {"x":[1,{"y":"},"}]}, "b":"q\"}" ,"c":[] , "\ud83d\ude00":null} "#;
        assert_eq!(
            object_fields(text),
            Some(vec![
                ("a".to_owned(), r#"{"x":[1,{"y":"},"}]}"#.to_owned()),
                ("b".to_owned(), r#""q\"}""#.to_owned()),
                ("c".to_owned(), "[]".to_owned()),
                ("😀".to_owned(), "null".to_owned()),
            ])
        );
        assert_eq!(object_fields(""), Some(vec![]));
        assert_eq!(object_fields(" {} "), Some(vec![]));
        for bad in [
            "[1]",
            "{",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1"#,
            r#"{"a":1}x"#,
            "3",
        ] {
            assert_eq!(object_fields(bad), None, "{bad}");
        }
    }
}
