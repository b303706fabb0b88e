//! A UTC time written as chrono writes it, without chrono's formatter.
//!
//! chrono serializes a `DateTime<Utc>` with `collect_str` over its
//! `Display` (RFC 3339, `Z`, 0/3/6/9 fraction digits); postcard, the
//! buffer's format, formats a `collect_str` value twice (once to count its
//! length), and at saturation the two times of every event were ~3 % of
//! the gateway's CPU, on the one writer thread. [`serialize`] writes the
//! same text into a stack buffer with plain digit arithmetic and hands it
//! to `serialize_str`, which gives the same bytes in every format; times
//! chrono writes differently (years outside 0–9999, leap seconds) go to
//! chrono. A property test checks every other time against chrono.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` is the longest.
const MAX_LEN: usize = 30;

/// For `#[serde(serialize_with = "crate::rfc3339::serialize")]`.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// The text's length, or `None` for a time chrono writes in another shape.
fn write(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let (year, ns) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || ns >= 1_000_000_000 {
        return None;
    }
    let mut w = Writer { buf, n: 0 };
    w.digits(year as u32, 4);
    for (sep, v) in [(b'-', t.month()), (b'-', t.day())] {
        w.byte(sep);
        w.digits(v, 2);
    }
    for (sep, v) in [(b'T', t.hour()), (b':', t.minute()), (b':', t.second())] {
        w.byte(sep);
        w.digits(v, 2);
    }
    // chrono's `SecondsFormat::AutoSi`: as few groups of three as exact.
    let (fraction, width) = if ns == 0 {
        (0, 0)
    } else if ns % 1_000_000 == 0 {
        (ns / 1_000_000, 3)
    } else if ns % 1_000 == 0 {
        (ns / 1_000, 6)
    } else {
        (ns, 9)
    };
    if width > 0 {
        w.byte(b'.');
        w.digits(fraction, width);
    }
    w.byte(b'Z');
    Some(w.n)
}

/// Appends to the buffer (never past `MAX_LEN`: the widths above sum to it).
struct Writer<'a> {
    buf: &'a mut [u8; MAX_LEN],
    n: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.n] = b;
        self.n += 1;
    }

    /// `v` in `width` decimal digits, zero-padded.
    fn digits(&mut self, v: u32, width: u32) {
        for i in (0..width).rev() {
            self.byte(b'0' + (v / 10u32.pow(i) % 10) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize)]
    struct Ours(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    fn same_as_chrono(t: DateTime<Utc>) {
        let want = serde_json::to_string(&t).expect("chrono");
        assert_eq!(serde_json::to_string(&Ours(t)).expect("ours"), want);
        let want = postcard::to_allocvec(&t).expect("chrono");
        assert_eq!(
            postcard::to_allocvec(&Ours(t)).expect("ours"),
            want,
            "{t:?}"
        );
    }

    #[test]
    fn edges_are_written_as_chrono_writes_them() {
        for micros in [
            0,
            1,
            999,
            1_000,
            1_000_000,
            -1,
            1_796_000_000_123_456,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            -62_167_219_200_000_000, // 0000-01-01
            -62_167_219_200_000_001, // the year before: chrono's own path
            253_402_300_800_000_000, // 10000-01-01: chrono's own path
        ] {
            same_as_chrono(DateTime::from_timestamp_micros(micros).expect("in range"));
        }
        for nanos in [1, 10, 100_000, 1_000_001, 999_999_999, 120_000_000] {
            same_as_chrono(DateTime::from_timestamp(1_796_000_000, nanos).expect("in range"));
        }
        // A leap second (nanosecond field ≥ 1e9) goes to chrono.
        same_as_chrono(DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("leap"));
    }

    proptest! {
        #[test]
        fn any_time_is_written_as_chrono_writes_it(
            secs in -62_200_000_000i64..253_500_000_000,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000),
                                 (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000],
        ) {
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                same_as_chrono(t);
            }
        }
    }
}
