//! What a voice reading may carry, checked.
//!
//! * `voice(prosody)`: features from a front end (each optional);
//! * `voice(pcm)`: mono 16-bit samples and their rate;
//! * `json`: the same two forms as JSON text, as on the wire
//!   (`{"f0_mean_hz": 180, …}` or `{"pcm_base64": "…", "sample_rate": 16000}`);
//! * `raw`: a WAV file (RIFF, 16-bit PCM; several channels are averaged).
//!
//! Anything else, and any value that is not a finite number in a plausible
//! range, is an error for that reading.

use emotion_plugin_sdk::{Payload, Pcm, Prosody, Voice};
use serde_json::{Map, Value};

/// Prosody features, checked: the shared prosody schema (the same one the
/// gateway validates readings against).
pub use emotion_plugin_sdk::common::Prosody as Features;

/// A decoded voice reading.
#[derive(Debug, Clone, PartialEq)]
pub enum VoiceInput {
    Prosody(Features),
    Pcm { samples: Vec<i16>, rate: u32 },
}

/// Accepted range of each prosody feature (inclusive), and its unit for
/// error messages.
const RANGES: [(&str, f64, f64, &str); 7] = [
    ("f0_mean_hz", 40.0, 1000.0, "Hz"),
    ("f0_range_hz", 0.0, 1500.0, "Hz"),
    ("loudness_db", -120.0, 140.0, "dB"),
    ("speech_rate", 0.0, 15.0, "syllables per second"),
    ("jitter", 0.0, 0.3, "a fraction: 0.01 = 1 %"),
    ("shimmer", 0.0, 0.5, "a fraction: 0.05 = 5 %"),
    ("hnr_db", -20.0, 60.0, "dB"),
];

fn check(name: &str, value: Option<f64>) -> Result<Option<f64>, String> {
    let Some(x) = value else {
        return Ok(None);
    };
    let (_, lo, hi, unit) = RANGES
        .iter()
        .find(|(n, ..)| *n == name)
        .copied()
        .unwrap_or((name, f64::NEG_INFINITY, f64::INFINITY, ""));
    if !x.is_finite() {
        return Err(format!("{name} must be a finite number, got {x}"));
    }
    if !(lo..=hi).contains(&x) {
        return Err(format!(
            "{name} must be between {lo} and {hi} ({unit}), got {x}"
        ));
    }
    Ok(Some(x))
}

/// Check a WIT prosody record.
pub fn prosody(p: &Prosody) -> Result<Features, String> {
    features(p.features())
}

/// Check every feature against its plausible range, in the schema's order.
fn features(raw: Features) -> Result<Features, String> {
    let mut f = Features::default();
    for (name, value) in raw.fields() {
        let checked = check(name, value)?;
        if let Some(slot) = f.field_mut(name) {
            *slot = checked;
        }
    }
    if f == Features::default() {
        return Err(format!(
            "prosody has no features: send at least one of {}",
            Features::FIELDS.join(", ")
        ));
    }
    Ok(f)
}

/// Decode and check a reading's payload.
pub fn decode(payload: Payload) -> Result<VoiceInput, String> {
    match payload {
        Payload::Voice(Voice::Prosody(p)) => prosody(&p).map(VoiceInput::Prosody),
        Payload::Voice(Voice::Pcm(Pcm {
            samples,
            sample_rate_hz,
        })) => Ok(VoiceInput::Pcm {
            samples,
            rate: sample_rate_hz,
        }),
        Payload::Json(text) => json(&text),
        Payload::Raw(bytes) => wav(&bytes),
        Payload::Text(_) => Err(not_voice("text")),
        Payload::Facial(_) => Err(not_voice("facial")),
        Payload::Physiological(_) => Err(not_voice("physiological")),
    }
}

fn not_voice(kind: &str) -> String {
    format!(
        "expected a voice payload (prosody features, PCM, or a WAV file as raw bytes), got a {kind} payload"
    )
}

/// The wire forms as JSON text.
fn json(text: &str) -> Result<VoiceInput, String> {
    let m: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| format!("voice JSON payload is not a JSON object: {e}"))?;
    if m.contains_key("pcm_base64") || m.contains_key("sample_rate") {
        if let Some(k) = m
            .keys()
            .find(|k| !matches!(k.as_str(), "pcm_base64" | "sample_rate"))
        {
            return Err(format!("unknown key `{k}` in a PCM voice payload"));
        }
        let rate = match m.get("sample_rate") {
            None => return Err("sample_rate is required with pcm_base64".into()),
            Some(v) => v
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(|| format!("sample_rate must be a whole number of Hz, got {v}"))?,
        };
        let text = match m.get("pcm_base64") {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(format!(
                    "pcm_base64 must be a base64 string, got {}",
                    kind(other)
                ));
            }
            None => return Err("pcm_base64 is required with sample_rate".into()),
        };
        let bytes = base64_decode(text).map_err(|e| format!("pcm_base64 {e}"))?;
        return Ok(VoiceInput::Pcm {
            samples: le_samples(&bytes, "pcm_base64")?,
            rate,
        });
    }
    let mut p = Features::default();
    for (k, v) in &m {
        let Some(slot) = p.field_mut(k) else {
            return Err(format!("unknown key `{k}` in a voice prosody payload"));
        };
        *slot = match v {
            Value::Null => None,
            Value::Number(n) => n.as_f64(),
            other => return Err(format!("{k} must be a number, got {}", kind(other))),
        };
    }
    features(p).map(VoiceInput::Prosody)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Little-endian 16-bit samples; an odd byte count is an error.
fn le_samples(bytes: &[u8], what: &str) -> Result<Vec<i16>, String> {
    if !bytes.len().is_multiple_of(2) {
        return Err(format!(
            "{what} must hold 16-bit samples (an even number of bytes), got {} bytes",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Standard base64 (RFC 4648 §4), padding optional.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return Err("is not valid base64".into());
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in body.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("is not valid base64 (byte {c:#04x} at offset {i})")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// A RIFF/WAVE file with 16-bit PCM (format 1, or extensible with the PCM
/// sub-format); channels are averaged to mono.
pub fn wav(bytes: &[u8]) -> Result<VoiceInput, String> {
    const NOT_WAV: &str = "a raw voice payload must be a WAV file (RIFF/WAVE, 16-bit PCM)";
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(NOT_WAV.into());
    }
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut pos = 12;
    let mut format: Option<(u16, u32)> = None; // (channels, rate)
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32_at(bytes, pos + 4) as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(len);
        match id {
            b"fmt " => {
                if len < 16 || body_end > bytes.len() {
                    return Err("WAV fmt chunk is truncated".into());
                }
                let b = &bytes[body_start..body_end];
                let tag = u16_at(b, 0);
                let channels = u16_at(b, 2);
                let rate = u32_at(b, 4);
                let bits = u16_at(b, 14);
                let pcm = tag == 1 || (tag == 0xFFFE && len >= 26 && u16_at(b, 24) == 1);
                if !pcm || bits != 16 {
                    return Err(format!(
                        "WAV must be 16-bit PCM, got format tag {tag:#06x} with {bits} bits"
                    ));
                }
                if channels == 0 {
                    return Err("WAV has 0 channels".into());
                }
                format = Some((channels, rate));
            }
            b"data" => {
                let Some((channels, rate)) = format else {
                    return Err("WAV data chunk before its fmt chunk".into());
                };
                // A streamed WAV may carry a placeholder length: take what is there.
                let data = &bytes[body_start..body_end.min(bytes.len())];
                let interleaved = le_samples(data, "WAV data")?;
                let ch = usize::from(channels);
                if interleaved.len() % ch != 0 {
                    return Err(format!(
                        "WAV data holds {} samples, not a whole number of {ch}-channel frames",
                        interleaved.len()
                    ));
                }
                let samples = if ch == 1 {
                    interleaved
                } else {
                    interleaved
                        .chunks_exact(ch)
                        .map(|f| {
                            let sum: i32 = f.iter().map(|&s| i32::from(s)).sum();
                            (sum / ch as i32) as i16
                        })
                        .collect()
                };
                return Ok(VoiceInput::Pcm { samples, rate });
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos = body_end.saturating_add(len & 1);
    }
    Err("WAV file has no data chunk".into())
}
