//! The real radio: [`BleTransport`] on btleplug (BlueZ over D-Bus on Linux).
//!
//! [`BtleplugTransport::new`] fails with [`BleError::Unavailable`] when there
//! is no D-Bus system bus (`Manager::new()` fails), no BlueZ (`adapters()`
//! fails) or no adapter; neither panics, so the daemon can log once "no
//! Bluetooth; running without BLE" and go on.
//!
//! Notifications: btleplug gives one notification stream per connected
//! peripheral; a task per connection forwards it into the shared event
//! channel. Link drops come from the adapter's `DeviceDisconnected` events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::transport::{
    Address, BleError, BleTransport, DeviceInfo, TransportEvent, broadcast_stream,
};
use crate::uuids;

/// How long `connect` scans for a device the adapter does not know yet
/// (after a restart BlueZ may have forgotten it).
const FIND_TIMEOUT: Duration = Duration::from_secs(8);

fn backend(e: btleplug::Error) -> BleError {
    BleError::Transport(e.to_string())
}

struct Shared {
    seen: BTreeMap<Address, DeviceInfo>,
    /// Connected peripherals and the task forwarding their notifications.
    links: HashMap<Address, (Peripheral, JoinHandle<()>)>,
    /// Adapter ids → addresses, for disconnect events.
    ids: HashMap<PeripheralId, Address>,
}

/// btleplug's first adapter as a [`BleTransport`].
pub struct BtleplugTransport {
    adapter: Adapter,
    adapter_info: String,
    events: broadcast::Sender<TransportEvent>,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for BtleplugTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtleplugTransport")
            .field("adapter", &self.adapter_info)
            .finish_non_exhaustive()
    }
}

impl Drop for BtleplugTransport {
    fn drop(&mut self) {
        self.stop.cancel();
        for (_, (_, task)) in self.shared.lock().links.drain() {
            task.abort();
        }
    }
}

impl BtleplugTransport {
    /// Open the first Bluetooth adapter. Errors are [`BleError::Unavailable`]
    /// with the reason (no D-Bus, no BlueZ, no adapter).
    pub async fn new() -> Result<Self, BleError> {
        let manager = Manager::new().await.map_err(|e| {
            BleError::Unavailable(format!("cannot reach BlueZ over the D-Bus system bus: {e}"))
        })?;
        let adapters = manager
            .adapters()
            .await
            .map_err(|e| BleError::Unavailable(format!("cannot list Bluetooth adapters: {e}")))?;
        let adapter = adapters
            .into_iter()
            .next()
            .ok_or_else(|| BleError::Unavailable("no Bluetooth adapter".into()))?;
        let adapter_info = adapter
            .adapter_info()
            .await
            .unwrap_or_else(|e| format!("(unknown adapter: {e})"));
        let mut central_events = adapter
            .events()
            .await
            .map_err(|e| BleError::Unavailable(format!("cannot watch the adapter: {e}")))?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Mutex::new(Shared {
            seen: BTreeMap::new(),
            links: HashMap::new(),
            ids: HashMap::new(),
        }));
        let stop = CancellationToken::new();
        let this = Self {
            adapter: adapter.clone(),
            adapter_info,
            events: events.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = central_events.next() => match ev {
                        Some(ev) => ev,
                        None => return,
                    },
                };
                match ev {
                    CentralEvent::DeviceDisconnected(id) => {
                        let link = {
                            let mut s = shared.lock();
                            let address = s.ids.get(&id).cloned();
                            address.and_then(|a| s.links.remove(&a).map(|l| (a, l)))
                        };
                        if let Some((address, (_, task))) = link {
                            task.abort();
                            let _ = events.send(TransportEvent::Disconnected { address });
                        }
                    }
                    CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id) => {
                        if let Ok(p) = adapter.peripheral(&id).await {
                            record(&shared, &p).await;
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(this)
    }

    /// The adapter's description (name and address), for the start-up log.
    pub fn adapter_info(&self) -> &str {
        &self.adapter_info
    }

    async fn find(&self, address: &Address) -> Result<Peripheral, BleError> {
        if let Some(p) = self.lookup(address).await? {
            return Ok(p);
        }
        // Unknown to the adapter: scan for it for a while.
        self.adapter
            .start_scan(ScanFilter {
                services: uuids::SCAN_SERVICES.to_vec(),
            })
            .await
            .map_err(backend)?;
        let deadline = tokio::time::Instant::now() + FIND_TIMEOUT;
        let found = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(p) = self.lookup(address).await? {
                break Some(p);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
        };
        let _ = self.adapter.stop_scan().await;
        found.ok_or_else(|| BleError::NotFound(address.clone()))
    }

    async fn lookup(&self, address: &Address) -> Result<Option<Peripheral>, BleError> {
        let peripherals = self.adapter.peripherals().await.map_err(backend)?;
        for p in peripherals {
            if Address::parse(&p.address().to_string()).ok().as_ref() == Some(address) {
                self.shared.lock().ids.insert(p.id(), address.clone());
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    fn connected(&self, address: &Address) -> Result<Peripheral, BleError> {
        self.shared
            .lock()
            .links
            .get(address)
            .map(|(p, _)| p.clone())
            .ok_or_else(|| BleError::NotConnected(address.clone()))
    }

    fn characteristic(
        &self,
        p: &Peripheral,
        address: &Address,
        uuid: Uuid,
    ) -> Result<btleplug::api::Characteristic, BleError> {
        p.characteristics()
            .into_iter()
            .find(|c| c.uuid == uuid)
            .ok_or(BleError::NoCharacteristic {
                address: address.clone(),
                characteristic: uuid,
            })
    }
}

/// Remember what a peripheral advertises.
async fn record(shared: &Mutex<Shared>, p: &Peripheral) -> Option<DeviceInfo> {
    let props = p.properties().await.ok().flatten()?;
    let address = Address::parse(&props.address.to_string()).ok()?;
    let info = DeviceInfo {
        address: address.clone(),
        name: props.local_name.or(props.advertisement_name),
        rssi: props.rssi,
        services: props.services,
        last_seen: Utc::now(),
    };
    let mut s = shared.lock();
    s.ids.insert(p.id(), address.clone());
    s.seen.insert(address, info.clone());
    Some(info)
}

#[async_trait]
impl BleTransport for BtleplugTransport {
    async fn scan(
        &self,
        duration: Duration,
        services: &[Uuid],
    ) -> Result<Vec<DeviceInfo>, BleError> {
        let started = Utc::now();
        self.adapter
            .start_scan(ScanFilter {
                services: services.to_vec(),
            })
            .await
            .map_err(backend)?;
        tokio::time::sleep(duration).await;
        let stopped = self.adapter.stop_scan().await;
        let peripherals = self.adapter.peripherals().await.map_err(backend)?;
        stopped.map_err(backend)?;
        let mut found = Vec::new();
        for p in peripherals {
            let Some(info) = record(&self.shared, &p).await else {
                continue;
            };
            // BlueZ may hand back devices outside the filter, and devices
            // cached from before this scan: keep what matches and was heard.
            let matches = services.is_empty() || info.services.iter().any(|s| services.contains(s));
            if matches && info.rssi.is_some() && info.last_seen >= started {
                found.push(info);
            }
        }
        Ok(found)
    }

    async fn devices(&self) -> Result<Vec<DeviceInfo>, BleError> {
        Ok(self.shared.lock().seen.values().cloned().collect())
    }

    async fn connect(&self, address: &Address) -> Result<(), BleError> {
        if self.shared.lock().links.contains_key(address) {
            return Ok(());
        }
        let p = self.find(address).await?;
        if !p.is_connected().await.map_err(backend)? {
            p.connect().await.map_err(backend)?;
        }
        p.discover_services().await.map_err(backend)?;
        let mut notifications = p.notifications().await.map_err(backend)?;
        let events = self.events.clone();
        let a = address.clone();
        let task = tokio::spawn(async move {
            while let Some(n) = notifications.next().await {
                let _ = events.send(TransportEvent::Notification {
                    address: a.clone(),
                    characteristic: n.uuid,
                    value: n.value,
                });
            }
        });
        let mut s = self.shared.lock();
        s.ids.insert(p.id(), address.clone());
        if let Some((_, old)) = s.links.insert(address.clone(), (p, task)) {
            old.abort();
        }
        Ok(())
    }

    async fn disconnect(&self, address: &Address) -> Result<(), BleError> {
        let link = self.shared.lock().links.remove(address);
        if let Some((p, task)) = link {
            task.abort();
            p.disconnect().await.map_err(backend)?;
        }
        Ok(())
    }

    async fn characteristics(&self, address: &Address) -> Result<Vec<Uuid>, BleError> {
        let p = self.connected(address)?;
        Ok(p.characteristics().into_iter().map(|c| c.uuid).collect())
    }

    async fn subscribe(&self, address: &Address, characteristic: Uuid) -> Result<(), BleError> {
        let p = self.connected(address)?;
        let c = self.characteristic(&p, address, characteristic)?;
        p.subscribe(&c).await.map_err(backend)
    }

    async fn read(&self, address: &Address, characteristic: Uuid) -> Result<Vec<u8>, BleError> {
        let p = self.connected(address)?;
        let c = self.characteristic(&p, address, characteristic)?;
        p.read(&c).await.map_err(backend)
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        broadcast_stream(self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without D-Bus/BlueZ/adapter this must be a clean error,
    /// never a panic; with a radio it opens it.
    #[tokio::test]
    async fn new_fails_cleanly_without_bluetooth() {
        match BtleplugTransport::new().await {
            Ok(t) => eprintln!("Bluetooth adapter found: {}", t.adapter_info()),
            Err(BleError::Unavailable(why)) => eprintln!("no Bluetooth, as expected here: {why}"),
            Err(other) => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
