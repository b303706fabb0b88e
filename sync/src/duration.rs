//! Durations written as the gateway writes them: `500ms`, `5s`, `30m`, `12h`, `30d`
//! (`#[serde(with = "duration")]`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The gateway's duration syntax (one parser for every section).
pub fn parse(s: &str) -> Result<Duration, String> {
    emotion_core::units::Dur::parse(s).map(|d| d.0)
}

/// The largest exact unit: 90s → `90s`, 120s → `2m`, 1500ms → `1500ms`
/// (finer than a millisecond is dropped: the format has no smaller unit).
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (k, unit) in [(86_400, "d"), (3600, "h"), (60, "m")] {
        if s != 0 && s.is_multiple_of(k) {
            return format!("{}{unit}", s / k);
        }
    }
    format!("{s}s")
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}
