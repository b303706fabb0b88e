//! Every Heart Rate Measurement vector in the shared data set decodes exactly,
//! and re-encodes to an equal measurement (the same bytes where our encoder
//! makes the same choices).

use std::path::PathBuf;

use emotion_wire::gatt::{HeartRateMeasurement, SensorContact};
use serde_json::Value;

/// The shared data set: `$EMOTION_SHARED_DATA`, or `../shared/data` beside
/// the repository root (this crate is two levels below the root), as the
/// plugins' quality examples find it.
fn vectors_path() -> PathBuf {
    std::env::var_os("EMOTION_SHARED_DATA")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
            PathBuf::from,
        )
        .join("ble/hrm_0x2a37_vectors.json")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

#[test]
fn every_vector_decodes_exactly() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the shared BLE vectors must be present at {} (set EMOTION_SHARED_DATA to the data directory): {e}",
            path.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).expect("vectors file is JSON");
    let vectors = doc["vectors"].as_array().expect("`vectors` array");
    assert!(
        vectors.len() >= 8,
        "expected at least 8 vectors, found {}",
        vectors.len()
    );
    for v in vectors {
        let bytes = hex(v["bytes_hex"].as_str().expect("bytes_hex"));
        let m = HeartRateMeasurement::decode(&bytes).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(
            u64::from(m.heart_rate_bpm),
            v["heart_rate_bpm"].as_u64().expect("heart_rate_bpm"),
            "{v}"
        );
        let contact = match v["sensor_contact"].as_str().expect("sensor_contact") {
            "not_supported" => SensorContact::NotSupported,
            "not_detected" => SensorContact::NotDetected,
            "detected" => SensorContact::Detected,
            other => panic!("unknown sensor_contact {other}"),
        };
        assert_eq!(m.sensor_contact, contact, "{v}");
        assert_eq!(m.sensor_contact.as_str(), v["sensor_contact"], "{v}");
        assert_eq!(
            m.energy_expended_kj.map(u64::from),
            v["energy_expended_kj"].as_u64(),
            "{v}"
        );
        let rr: Vec<u64> = v["rr_intervals_1024"]
            .as_array()
            .expect("rr_intervals_1024")
            .iter()
            .map(|x| x.as_u64().expect("integer"))
            .collect();
        assert_eq!(
            m.rr_intervals_1024
                .iter()
                .map(|&x| u64::from(x))
                .collect::<Vec<_>>(),
            rr,
            "{v}"
        );
        let ms: Vec<f64> = v["rr_intervals_ms"]
            .as_array()
            .expect("rr_intervals_ms")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        let got: Vec<f64> = m.rr_intervals_ms().collect();
        assert_eq!(got.len(), ms.len(), "{v}");
        for (g, want) in got.iter().zip(&ms) {
            // The file rounds to 3 decimals; ours is the exact x*1000/1024.
            assert!((g - want).abs() <= 0.0005, "{v}: {g} vs {want}");
            assert_eq!((g * 1000.0).round() / 1000.0, *want, "{v}");
        }
        // Our encoder picks uint8 for rates that fit; a vector may use
        // uint16 for a small rate, so compare bytes only where it did not.
        assert_eq!(
            HeartRateMeasurement::decode(&m.encode()),
            Ok(m.clone()),
            "{v}"
        );
        if bytes[0] & 1 == 0 {
            assert_eq!(m.encode(), bytes, "{v}");
        }
    }
}
