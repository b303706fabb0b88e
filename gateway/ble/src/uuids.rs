//! Service and characteristic UUIDs.

use uuid::Uuid;

use emotion_wire::{gatt, vendor};

/// Heart Rate service 0x180D.
pub const HEART_RATE_SERVICE: Uuid = Uuid::from_u128(gatt::uuid_from_u16(gatt::HEART_RATE_SERVICE));
/// Heart Rate Measurement 0x2A37 (notify).
pub const HEART_RATE_MEASUREMENT: Uuid =
    Uuid::from_u128(gatt::uuid_from_u16(gatt::HEART_RATE_MEASUREMENT));
/// Battery service 0x180F.
pub const BATTERY_SERVICE: Uuid = Uuid::from_u128(gatt::uuid_from_u16(gatt::BATTERY_SERVICE));
/// Battery Level 0x2A19 (read, notify optional).
pub const BATTERY_LEVEL: Uuid = Uuid::from_u128(gatt::uuid_from_u16(gatt::BATTERY_LEVEL));
/// Vendor skin-conductance (EDA) service; see [`emotion_wire::vendor`].
pub const EDA_SERVICE: Uuid = Uuid::from_u128(vendor::EDA_SERVICE);
/// Vendor EDA Measurement characteristic (notify); see [`emotion_wire::vendor`].
pub const EDA_MEASUREMENT: Uuid = Uuid::from_u128(vendor::EDA_MEASUREMENT);

/// The services a scan looks for by default.
pub const SCAN_SERVICES: [Uuid; 3] = [HEART_RATE_SERVICE, BATTERY_SERVICE, EDA_SERVICE];

/// The characteristics the manager subscribes to when a device offers them.
pub const SUBSCRIBED: [Uuid; 3] = [HEART_RATE_MEASUREMENT, EDA_MEASUREMENT, BATTERY_LEVEL];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_uuids_expand_from_the_base() {
        assert_eq!(
            HEART_RATE_MEASUREMENT.to_string(),
            "00002a37-0000-1000-8000-00805f9b34fb"
        );
        assert_eq!(
            EDA_SERVICE.to_string(),
            "9b3c0001-6c1e-4d2a-8f57-2f0e5a1d3c10"
        );
    }
}
