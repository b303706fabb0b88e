//! Decoded measurements → physiological reading payloads.
//!
//! Values outside what `emotion_core::reading` accepts are left out here
//! rather than producing a reading the pipeline would reject: a heart rate of
//! 0 (allowed on the wire, e.g. while the strap finds the pulse) or an RR
//! interval of 0 is no measurement. A payload with nothing left is `None`.

use chrono::{DateTime, Utc};
use emotion_core::Source;
use emotion_core::reading::{PhysiologicalPayload, RawReading, ReadingPayload};
use emotion_wire::gatt::{GattError, HeartRateMeasurement, SensorContact};
use emotion_wire::vendor::EdaMeasurement;

// The ranges `emotion_core::reading` validates physiological payloads with.
const HEART_RATE: (f64, f64) = (1.0, 400.0);
const RR_MS: (f64, f64) = (1.0, 10_000.0);
const SKIN_CONDUCTANCE: (f64, f64) = (0.0, 200.0);
const EDA_RATE: (f64, f64) = (0.001, 100_000.0);
const SKIN_TEMPERATURE: (f64, f64) = (0.0, 50.0);

fn within(x: f64, (lo, hi): (f64, f64)) -> bool {
    x.is_finite() && (lo..=hi).contains(&x)
}

fn opt_within(x: f64, range: (f64, f64)) -> Option<f64> {
    within(x, range).then_some(x)
}

/// Why a measurement produced no reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Skip {
    #[error("undecodable value: {0}")]
    Decode(#[from] GattError),
    /// The strap reports no skin contact: its numbers are not a pulse.
    #[error("sensor not in contact with the skin")]
    NoContact,
    #[error("no usable measurement in the value")]
    Empty,
}

/// A Heart Rate Measurement as a payload: rate and RR intervals (ms).
pub fn heart_rate(m: &HeartRateMeasurement) -> Result<PhysiologicalPayload, Skip> {
    if m.sensor_contact == SensorContact::NotDetected {
        return Err(Skip::NoContact);
    }
    let p = PhysiologicalPayload {
        heart_rate: opt_within(f64::from(m.heart_rate_bpm), HEART_RATE),
        rr_intervals_ms: m.rr_intervals_ms().filter(|&x| within(x, RR_MS)).collect(),
        ..Default::default()
    };
    non_empty(p)
}

/// A vendor EDA Measurement as a payload: samples, their rate, temperature.
pub fn eda(m: &EdaMeasurement) -> Result<PhysiologicalPayload, Skip> {
    let rate = opt_within(m.sample_rate_hz, EDA_RATE);
    let samples: Vec<f64> = match rate {
        Some(_) if m.samples_us.iter().all(|&x| within(x, SKIN_CONDUCTANCE)) => {
            m.samples_us.clone()
        }
        // Samples without a usable rate (or with a bad one among them) are
        // dropped whole: their timing or values cannot be trusted.
        _ => Vec::new(),
    };
    let p = PhysiologicalPayload {
        eda_sample_rate_hz: if samples.is_empty() { None } else { rate },
        skin_conductance: samples,
        skin_temperature: m
            .skin_temperature_c
            .and_then(|t| opt_within(t, SKIN_TEMPERATURE)),
        ..Default::default()
    };
    non_empty(p)
}

/// A serial frame payload as a physiological payload. `Ok(None)` for
/// payloads that are not measurements (hello, battery).
pub fn frame_payload(p: &emotion_wire::Payload) -> Result<Option<PhysiologicalPayload>, Skip> {
    use emotion_wire::Payload;
    match p {
        Payload::Hello(_) | Payload::Battery { .. } => Ok(None),
        Payload::HeartRateMeasurement(bytes) => {
            heart_rate(&HeartRateMeasurement::decode(bytes)?).map(Some)
        }
        Payload::SkinConductance {
            sample_rate_hz,
            samples_us,
        } => eda(&EdaMeasurement {
            sample_rate_hz: f64::from(*sample_rate_hz),
            skin_temperature_c: None,
            samples_us: samples_us.iter().map(|&x| f64::from(x)).collect(),
        })
        .map(Some),
        Payload::SkinTemperature { celsius } => non_empty(PhysiologicalPayload {
            skin_temperature: opt_within(f64::from(*celsius), SKIN_TEMPERATURE),
            ..Default::default()
        })
        .map(Some),
    }
}

fn non_empty(p: PhysiologicalPayload) -> Result<PhysiologicalPayload, Skip> {
    if p == PhysiologicalPayload::default() {
        Err(Skip::Empty)
    } else {
        Ok(p)
    }
}

/// A physiological reading from a device bound to a user.
pub fn reading(
    user_id: &str,
    device_id: &str,
    timestamp: DateTime<Utc>,
    payload: PhysiologicalPayload,
) -> RawReading {
    RawReading {
        user_id: user_id.to_owned(),
        session_id: None,
        device_id: Some(device_id.to_owned()),
        timestamp: Some(timestamp),
        source: Source::Physiological,
        payload: ReadingPayload::Physiological(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_pass_core_validation() {
        let m = HeartRateMeasurement::decode(&[0x16, 72, 0x00, 0x04]).expect("decodes");
        let p = heart_rate(&m).expect("payload");
        assert_eq!(p.heart_rate, Some(72.0));
        assert_eq!(p.rr_intervals_ms, vec![1000.0]);
        let r = reading("42", "AA:BB:CC:DD:EE:FF", Utc::now(), p);
        let back = RawReading::from_json(&r.to_json(), None).expect("valid reading");
        assert_eq!(back, r);

        let e = EdaMeasurement {
            sample_rate_hz: 4.0,
            skin_temperature_c: Some(33.1),
            samples_us: vec![2.0, 2.1],
        };
        let r = reading("42", "band", Utc::now(), eda(&e).expect("payload"));
        assert!(RawReading::from_json(&r.to_json(), None).is_ok());
    }

    #[test]
    fn no_contact_and_zeros_are_skipped() {
        let m = HeartRateMeasurement::decode(&[0x04, 0]).expect("decodes");
        assert_eq!(heart_rate(&m), Err(Skip::NoContact));
        let m = HeartRateMeasurement::decode(&[0x00, 0]).expect("decodes");
        assert_eq!(heart_rate(&m), Err(Skip::Empty));
        let m = HeartRateMeasurement::decode(&[0x10, 0, 0, 0]).expect("decodes");
        assert_eq!(heart_rate(&m), Err(Skip::Empty));
    }

    #[test]
    fn frame_payloads() {
        use emotion_wire::Payload;
        assert_eq!(frame_payload(&Payload::Battery { percent: 5 }), Ok(None));
        let p = frame_payload(&Payload::SkinTemperature { celsius: 33.5 })
            .expect("ok")
            .expect("payload");
        assert_eq!(p.skin_temperature, Some(33.5));
        assert!(frame_payload(&Payload::HeartRateMeasurement(vec![0x01])).is_err());
        let p = frame_payload(&Payload::SkinConductance {
            sample_rate_hz: 4.0,
            samples_us: vec![f32::NAN],
        });
        assert_eq!(p, Err(Skip::Empty));
    }
}
