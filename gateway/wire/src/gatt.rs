//! Bluetooth GATT characteristics, decoded per the GATT Specification
//! Supplement, and encoded the same way (for simulators and tests).

use alloc::vec::Vec;

/// Heart Rate service.
pub const HEART_RATE_SERVICE: u16 = 0x180D;
/// Heart Rate Measurement characteristic (notify).
pub const HEART_RATE_MEASUREMENT: u16 = 0x2A37;
/// Battery service.
pub const BATTERY_SERVICE: u16 = 0x180F;
/// Battery Level characteristic (read, optionally notify).
pub const BATTERY_LEVEL: u16 = 0x2A19;

/// The Bluetooth Base UUID's 128-bit form of a 16-bit assigned number:
/// `0000xxxx-0000-1000-8000-00805F9B34FB`.
pub const fn uuid_from_u16(short: u16) -> u128 {
    ((short as u128) << 96) | 0x0000_0000_0000_1000_8000_0080_5F9B_34FB
}

/// Why a characteristic value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GattError {
    #[error("empty value")]
    Empty,
    #[error("value truncated: {field} needs {needed} bytes, {available} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("odd byte left over after the RR intervals")]
    OddRrBytes,
    #[error("battery level {0} % is above 100")]
    BatteryOutOfRange(u8),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Sensor Contact Status bits (flags bits 1–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SensorContact {
    /// 0b00 or 0b01: the sensor does not report contact.
    NotSupported,
    /// 0b10: supported, no (or poor) contact with the skin.
    NotDetected,
    /// 0b11: supported and in contact.
    Detected,
}

impl SensorContact {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorContact::NotSupported => "not_supported",
            SensorContact::NotDetected => "not_detected",
            SensorContact::Detected => "detected",
        }
    }
}

const FLAG_RATE_U16: u8 = 1 << 0;
const FLAG_CONTACT_SUPPORTED: u8 = 1 << 2;
const FLAG_CONTACT_DETECTED: u8 = 1 << 1;
const FLAG_ENERGY: u8 = 1 << 3;
const FLAG_RR: u8 = 1 << 4;

/// A decoded Heart Rate Measurement (0x2A37).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeartRateMeasurement {
    /// Beats per minute. 0 is legal on the wire (e.g. no contact).
    pub heart_rate_bpm: u16,
    pub sensor_contact: SensorContact,
    /// Accumulated energy expended, kJ, when the sensor sent it.
    pub energy_expended_kj: Option<u16>,
    /// RR intervals as sent: units of 1/1024 s, oldest first.
    pub rr_intervals_1024: Vec<u16>,
}

impl HeartRateMeasurement {
    /// Decode a characteristic value. The reserved flag bits 5–7 are ignored,
    /// as the specification asks of receivers.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        let (&flags, mut rest) = bytes.split_first().ok_or(GattError::Empty)?;
        let heart_rate_bpm = if flags & FLAG_RATE_U16 != 0 {
            take_u16(&mut rest, "heart rate (uint16)")?
        } else {
            u16::from(take_u8(&mut rest, "heart rate (uint8)")?)
        };
        let sensor_contact = match (
            flags & FLAG_CONTACT_SUPPORTED != 0,
            flags & FLAG_CONTACT_DETECTED != 0,
        ) {
            (false, _) => SensorContact::NotSupported,
            (true, false) => SensorContact::NotDetected,
            (true, true) => SensorContact::Detected,
        };
        let energy_expended_kj = if flags & FLAG_ENERGY != 0 {
            Some(take_u16(&mut rest, "energy expended")?)
        } else {
            None
        };
        let mut rr_intervals_1024 = Vec::new();
        if flags & FLAG_RR != 0 {
            if !rest.len().is_multiple_of(2) {
                return Err(GattError::OddRrBytes);
            }
            rr_intervals_1024 = rest
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        // Without the RR flag, trailing bytes are ignored: some straps pad
        // notifications, and the fields the flags announce are all there.
        Ok(Self {
            heart_rate_bpm,
            sensor_contact,
            energy_expended_kj,
            rr_intervals_1024,
        })
    }

    /// RR intervals in milliseconds (`x / 1024 * 1000`, exact in f64).
    pub fn rr_intervals_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.rr_intervals_1024.iter().map(|&x| rr_1024_to_ms(x))
    }

    /// Encode: the rate as uint8 when it fits, the flags from the fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u8;
        let mut out = Vec::with_capacity(4 + 2 * self.rr_intervals_1024.len());
        out.push(0);
        if let Ok(small) = u8::try_from(self.heart_rate_bpm) {
            out.push(small);
        } else {
            flags |= FLAG_RATE_U16;
            out.extend_from_slice(&self.heart_rate_bpm.to_le_bytes());
        }
        flags |= match self.sensor_contact {
            SensorContact::NotSupported => 0,
            SensorContact::NotDetected => FLAG_CONTACT_SUPPORTED,
            SensorContact::Detected => FLAG_CONTACT_SUPPORTED | FLAG_CONTACT_DETECTED,
        };
        if let Some(e) = self.energy_expended_kj {
            flags |= FLAG_ENERGY;
            out.extend_from_slice(&e.to_le_bytes());
        }
        if !self.rr_intervals_1024.is_empty() {
            flags |= FLAG_RR;
            for rr in &self.rr_intervals_1024 {
                out.extend_from_slice(&rr.to_le_bytes());
            }
        }
        out[0] = flags;
        out
    }
}

/// 1/1024 s units to milliseconds.
pub fn rr_1024_to_ms(x: u16) -> f64 {
    f64::from(x) * 1000.0 / 1024.0
}

/// Milliseconds to the nearest 1/1024 s unit (saturating at the u16 range).
pub fn rr_ms_to_1024(ms: f64) -> u16 {
    let units = ms * 1024.0 / 1000.0 + 0.5;
    if units.is_nan() || units < 0.0 {
        0
    } else if units >= f64::from(u16::MAX) {
        u16::MAX
    } else {
        units as u16
    }
}

/// Battery Level (0x2A19): one byte, 0–100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatteryLevel(pub u8);

impl BatteryLevel {
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        match bytes {
            [] => Err(GattError::Empty),
            [p, ..] if *p > 100 => Err(GattError::BatteryOutOfRange(*p)),
            [p, ..] => Ok(Self(*p)),
        }
    }

    pub fn encode(self) -> [u8; 1] {
        [self.0]
    }
}

pub(crate) fn take_u8(rest: &mut &[u8], field: &'static str) -> Result<u8, GattError> {
    let (&b, tail) = rest.split_first().ok_or(GattError::Truncated {
        field,
        needed: 1,
        available: 0,
    })?;
    *rest = tail;
    Ok(b)
}

pub(crate) fn take_u16(rest: &mut &[u8], field: &'static str) -> Result<u16, GattError> {
    match rest {
        [a, b, tail @ ..] => {
            let v = u16::from_le_bytes([*a, *b]);
            *rest = tail;
            Ok(v)
        }
        _ => Err(GattError::Truncated {
            field,
            needed: 2,
            available: rest.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn uuid_expansion() {
        assert_eq!(
            uuid_from_u16(0x2A37),
            0x0000_2A37_0000_1000_8000_0080_5F9B_34FB
        );
    }

    #[test]
    fn sixteen_bit_rate_and_reserved_bits() {
        let m = HeartRateMeasurement::decode(&[0xE1, 0x2C, 0x01]).expect("decodes");
        assert_eq!(m.heart_rate_bpm, 300);
        assert_eq!(m.sensor_contact, SensorContact::NotSupported);
        assert_eq!(m.encode(), vec![0x01, 0x2C, 0x01]);
    }

    #[test]
    fn truncations_are_errors() {
        for bytes in [
            &[][..],
            &[0x01, 0x48],
            &[0x08, 0x48, 0x01],
            &[0x10, 0x48, 0x01],
        ] {
            assert!(HeartRateMeasurement::decode(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn battery() {
        assert_eq!(BatteryLevel::decode(&[87]), Ok(BatteryLevel(87)));
        assert_eq!(BatteryLevel::decode(&[]), Err(GattError::Empty));
        assert_eq!(
            BatteryLevel::decode(&[101]),
            Err(GattError::BatteryOutOfRange(101))
        );
    }

    #[test]
    fn rr_conversion() {
        assert_eq!(rr_1024_to_ms(1024), 1000.0);
        assert_eq!(rr_ms_to_1024(1000.0), 1024);
        assert_eq!(rr_ms_to_1024(833.008), 853);
        assert_eq!(rr_ms_to_1024(f64::NAN), 0);
        assert_eq!(rr_ms_to_1024(1e9), u16::MAX);
    }
}
