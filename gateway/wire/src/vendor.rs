//! The vendor skin-conductance (EDA) service.
//!
//! There is no Bluetooth SIG service for electrodermal activity, so EDA
//! bands speak this one (any vendor may implement it):
//!
//! | what | UUID |
//! |---|---|
//! | EDA service | `9b3c0001-6c1e-4d2a-8f57-2f0e5a1d3c10` |
//! | EDA Measurement characteristic (notify) | `9b3c0002-6c1e-4d2a-8f57-2f0e5a1d3c10` |
//!
//! An EDA Measurement value, all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | flags: bit 0 = skin temperature present; bits 1–7 reserved (send 0, ignore) |
//! | 2 | sample rate, uint16, units of 0.01 Hz (400 = 4 Hz), not 0 |
//! | 2 | skin temperature, sint16, units of 0.01 °C (only if flag bit 0) |
//! | 2 × n | n ≥ 0 skin conductance samples, uint16, units of 0.01 µS (0–655.35), oldest first, evenly spaced at the sample rate, the last one taken when the notification was sent |
//!
//! 0.01 µS matches the smallest skin-conductance response usually scored;
//! within the default ATT MTU (20 bytes of value) a notification holds up to
//! 7 samples (8 without temperature): at 4 Hz one notification a second.

use alloc::vec::Vec;

use crate::gatt::{GattError, take_u8, take_u16};

/// The EDA service.
pub const EDA_SERVICE: u128 = 0x9b3c0001_6c1e_4d2a_8f57_2f0e5a1d3c10;
/// The EDA Measurement characteristic.
pub const EDA_MEASUREMENT: u128 = 0x9b3c0002_6c1e_4d2a_8f57_2f0e5a1d3c10;

const FLAG_TEMPERATURE: u8 = 1;

/// A decoded EDA Measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct EdaMeasurement {
    pub sample_rate_hz: f64,
    pub skin_temperature_c: Option<f64>,
    /// µS.
    pub samples_us: Vec<f64>,
}

impl EdaMeasurement {
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        let mut rest = bytes;
        let flags = take_u8(&mut rest, "flags").map_err(|_| GattError::Empty)?;
        let rate = take_u16(&mut rest, "sample rate")?;
        if rate == 0 {
            return Err(GattError::Invalid("sample rate is 0"));
        }
        let skin_temperature_c = if flags & FLAG_TEMPERATURE != 0 {
            let raw = take_u16(&mut rest, "skin temperature")?;
            Some(f64::from(raw as i16) / 100.0)
        } else {
            None
        };
        if !rest.len().is_multiple_of(2) {
            return Err(GattError::Invalid("odd byte left over after the samples"));
        }
        let samples_us = rest
            .chunks_exact(2)
            .map(|c| f64::from(u16::from_le_bytes([c[0], c[1]])) / 100.0)
            .collect();
        Ok(Self {
            sample_rate_hz: f64::from(rate) / 100.0,
            skin_temperature_c,
            samples_us,
        })
    }

    /// Encode, rounding to the wire units and saturating at their ranges.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 2 * self.samples_us.len());
        let flags = if self.skin_temperature_c.is_some() {
            FLAG_TEMPERATURE
        } else {
            0
        };
        out.push(flags);
        let rate = scaled_u16(self.sample_rate_hz * 100.0).max(1);
        out.extend_from_slice(&rate.to_le_bytes());
        if let Some(t) = self.skin_temperature_c {
            let centi = round_half_away(t * 100.0);
            let raw = if centi.is_nan() {
                0
            } else {
                centi.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
            };
            out.extend_from_slice(&raw.to_le_bytes());
        }
        for s in &self.samples_us {
            out.extend_from_slice(&scaled_u16(s * 100.0).to_le_bytes());
        }
        out
    }
}

/// `f64::round` lives in std; this is the same for the finite values used
/// here (and passes NaN and infinities through).
fn round_half_away(x: f64) -> f64 {
    if !x.is_finite() || x.abs() >= 4_503_599_627_370_496.0 {
        return x; // already integral (or not a number)
    }
    let t = x.abs() + 0.5;
    let r = (t as u64) as f64;
    if x < 0.0 { -r } else { r }
}

fn scaled_u16(x: f64) -> u16 {
    let r = round_half_away(x);
    if r.is_nan() || r <= 0.0 {
        0
    } else if r >= f64::from(u16::MAX) {
        u16::MAX
    } else {
        r as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trip_with_and_without_temperature() {
        let m = EdaMeasurement {
            sample_rate_hz: 4.0,
            skin_temperature_c: Some(33.25),
            samples_us: vec![2.5, 2.51, 12.0, 0.0],
        };
        let bytes = m.encode();
        assert_eq!(bytes.len(), 1 + 2 + 2 + 8);
        assert_eq!(EdaMeasurement::decode(&bytes), Ok(m));
        let m = EdaMeasurement {
            sample_rate_hz: 0.5,
            skin_temperature_c: None,
            samples_us: vec![],
        };
        assert_eq!(EdaMeasurement::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(EdaMeasurement::decode(&[]).is_err());
        assert!(EdaMeasurement::decode(&[0, 0, 0]).is_err());
        assert!(EdaMeasurement::decode(&[1, 144, 1]).is_err());
        assert!(EdaMeasurement::decode(&[0, 144, 1, 5]).is_err());
    }

    #[test]
    fn negative_temperatures_survive() {
        let m = EdaMeasurement {
            sample_rate_hz: 4.0,
            skin_temperature_c: Some(-1.5),
            samples_us: vec![],
        };
        assert_eq!(
            EdaMeasurement::decode(&m.encode())
                .expect("decodes")
                .skin_temperature_c,
            Some(-1.5)
        );
    }
}
