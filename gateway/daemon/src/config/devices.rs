//! `[[serial]]` ports and the `[ble]` section (run by [`crate::devices`]).

use std::path::PathBuf;

use emotion_core::units::Dur;
use serde::{Deserialize, Serialize};

/// One `[[serial]]` port.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// The device id readings carry (default: the frames' device id).
    pub device_id: Option<String>,
    /// The user the readings belong to; without one nothing is stored.
    pub user_id: Option<String>,
}

fn default_baud() -> u32 {
    115_200
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BleAdapter {
    /// The machine's Bluetooth radio (BlueZ over D-Bus).
    Radio,
    /// An in-process simulated heart-rate strap and EDA band (demos, tests).
    Simulated,
}

/// The `[ble]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BleConfig {
    pub enabled: bool,
    pub adapter: BleAdapter,
    pub max_connections: usize,
    pub scan_duration: Dur,
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    pub connect_timeout: Dur,
}
