//! BLE wearables for the emotion gateway.
//!
//! - [`BleTransport`]: what the gateway needs from a Bluetooth central
//!   (scan, list, connect, subscribe, read, a stream of notifications and
//!   link drops). Two implementations: [`SimAdapter`] (in-process simulated
//!   peripherals, always built) and `BtleplugTransport` (the real radio via
//!   BlueZ, behind the `btleplug` feature).
//! - [`DeviceManager`]: pairings (address → user, persisted through
//!   [`PairingStore`]), connections up to a limit, subscriptions, decoding,
//!   reconnects with exponential back-off and gap markers; its output is a
//!   channel of [`BleEvent`]s carrying `emotion_core` physiological readings.
//! - [`uuids`]: the services and characteristics used, including the vendor
//!   skin-conductance service (format in [`emotion_wire::vendor`]).
//! - [`convert`]: decoded characteristics and serial frame payloads →
//!   physiological reading payloads (shared with the serial reader).
//! - [`journey`]: simulated wearables that play an emotional journey
//!   (`emotion_common::journey`), for [`SimAdapter`] here and for
//!   firmware-sim's serial devices.

pub mod convert;
pub mod journey;
pub mod manager;
pub mod sim;
pub mod transport;
pub mod uuids;

#[cfg(feature = "btleplug")]
pub mod btle;

#[cfg(feature = "btleplug")]
pub use btle::BtleplugTransport;
pub use journey::JourneyPeripheral;
pub use manager::{
    BleEvent, DeviceManager, DeviceView, Gap, LinkEvent, LinkState, ManagerConfig, ManagerStats,
    MemoryPairingStore, Pairing, PairingStore, StoreError,
};
pub use sim::{
    LinkDrop, PeriodicDrop, PeripheralBehaviour, SimAdapter, SimPeripheral, SteadyEda,
    SteadyHeartRate,
};
pub use transport::{Address, BleError, BleTransport, DeviceInfo, TransportEvent};

/// The real radio, if this machine has one and the crate was built with the
/// `btleplug` feature; otherwise [`BleError::Unavailable`] saying why, so a
/// daemon can log it once and run on without BLE. Never panics.
pub async fn open_radio() -> Result<std::sync::Arc<dyn BleTransport>, BleError> {
    #[cfg(feature = "btleplug")]
    {
        let radio = BtleplugTransport::new().await?;
        tracing::info!("Bluetooth adapter: {}", radio.adapter_info());
        Ok(std::sync::Arc::new(radio))
    }
    #[cfg(not(feature = "btleplug"))]
    {
        Err(BleError::Unavailable(
            "built without the `btleplug` feature of emotion-ble".into(),
        ))
    }
}
