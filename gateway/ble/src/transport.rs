//! The transport trait: what the device manager needs from a BLE central.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use uuid::Uuid;

/// A Bluetooth device address, canonical form `AA:BB:CC:DD:EE:FF` (upper
/// case). It is the device id of the readings a device produces.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Address(String);

impl TryFrom<String> for Address {
    type Error = BleError;
    fn try_from(s: String) -> Result<Self, BleError> {
        Self::parse(&s)
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.0
    }
}

impl Address {
    /// Parse six hex octets separated by `:` or `-`, any case.
    pub fn parse(s: &str) -> Result<Self, BleError> {
        let bad = || BleError::InvalidAddress(s.chars().take(64).collect());
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = String::with_capacity(17);
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            if i > 0 {
                out.push(':');
            }
            out.push_str(&p.to_ascii_uppercase());
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Address {
    type Err = BleError;
    fn from_str(s: &str) -> Result<Self, BleError> {
        Self::parse(s)
    }
}

/// A device seen advertising.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    pub address: Address,
    pub name: Option<String>,
    /// dBm, from the latest advertisement.
    pub rssi: Option<i16>,
    /// Advertised services.
    pub services: Vec<Uuid>,
    pub last_seen: DateTime<Utc>,
}

/// Something a transport reports on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportEvent {
    /// A notification from a subscribed characteristic.
    Notification {
        address: Address,
        characteristic: Uuid,
        value: Vec<u8>,
    },
    /// The link to a connected device dropped (or the device disconnected).
    Disconnected { address: Address },
    /// The consumer fell behind and `missed` events were lost.
    Lagged { missed: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleError {
    /// No Bluetooth here: no D-Bus system bus, no BlueZ, no adapter, or the
    /// crate was built without the `btleplug` feature. Run without BLE.
    #[error("Bluetooth is not available: {0}")]
    Unavailable(String),
    #[error("invalid Bluetooth address {0:?} (expected six hex octets like AA:BB:CC:DD:EE:FF)")]
    InvalidAddress(String),
    #[error("device {0} not found")]
    NotFound(Address),
    #[error("device {0} is not connected")]
    NotConnected(Address),
    #[error("device {address} has no characteristic {characteristic}")]
    NoCharacteristic {
        address: Address,
        characteristic: Uuid,
    },
    #[error("{op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// Anything else the backend reported (connection refused, out of range…).
    #[error("Bluetooth: {0}")]
    Transport(String),
    #[error("invalid user id: {0}")]
    InvalidUser(String),
    #[error("pairing store: {0}")]
    Store(String),
}

/// A BLE central, real or simulated.
///
/// Object safe (through `async-trait`), so a daemon can pick the radio or
/// the simulator at start-up and hold an `Arc<dyn BleTransport>`.
#[async_trait]
pub trait BleTransport: Send + Sync + 'static {
    /// Scan for `duration`; return the devices seen during this scan that
    /// advertise any of `services` (every device when `services` is empty).
    async fn scan(
        &self,
        duration: Duration,
        services: &[Uuid],
    ) -> Result<Vec<DeviceInfo>, BleError>;

    /// Every device seen so far, by any scan, with its latest data.
    async fn devices(&self) -> Result<Vec<DeviceInfo>, BleError>;

    /// Connect (and discover services). Connecting a connected device is Ok.
    async fn connect(&self, address: &Address) -> Result<(), BleError>;

    async fn disconnect(&self, address: &Address) -> Result<(), BleError>;

    /// The characteristics a connected device offers.
    async fn characteristics(&self, address: &Address) -> Result<Vec<Uuid>, BleError>;

    /// Enable notifications of a characteristic; they arrive on
    /// [`events`](Self::events). A link drop ends every subscription: after
    /// reconnecting, subscribe again.
    async fn subscribe(&self, address: &Address, characteristic: Uuid) -> Result<(), BleError>;

    async fn read(&self, address: &Address, characteristic: Uuid) -> Result<Vec<u8>, BleError>;

    /// Notifications and link drops of every device, from now on. Each call
    /// gets its own stream.
    fn events(&self) -> BoxStream<'static, TransportEvent>;
}

/// Turn a broadcast receiver into an event stream (shared by the
/// implementations): a lagging consumer gets a [`TransportEvent::Lagged`]
/// instead of an error.
pub(crate) fn broadcast_stream(
    rx: tokio::sync::broadcast::Receiver<TransportEvent>,
) -> BoxStream<'static, TransportEvent> {
    use tokio::sync::broadcast::error::RecvError;
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(ev) => Some((ev, rx)),
            Err(RecvError::Lagged(missed)) => Some((TransportEvent::Lagged { missed }, rx)),
            Err(RecvError::Closed) => None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_canonical() {
        let a = Address::parse("aa-bb-cc-dd-ee-0f").expect("valid");
        assert_eq!(a.as_str(), "AA:BB:CC:DD:EE:0F");
        assert_eq!(a, "AA:BB:CC:DD:EE:0F".parse().expect("valid"));
        for bad in [
            "",
            "AA:BB",
            "AA:BB:CC:DD:EE:GG",
            "AAA:BB:CC:DD:EE:FF",
            "AA:BB:CC:DD:EE:FF:00",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
