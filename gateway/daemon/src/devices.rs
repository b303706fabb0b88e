//! Wearables: serial ports and Bluetooth LE devices.
//!
//! Both transports decode their frames into physiological raw readings (see
//! the `emotion-serial` and `emotion-ble` crates); here those readings go to
//! the plugin for their source and on through the buffer and analyzer, like
//! readings sent over WebSocket. Gap markers (frames or notifications that
//! never arrived) are recorded durably per device, and BLE pairings persist
//! in the buffer's metadata, so they survive restarts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use emotion_ble::{
    Address, BleEvent, BleTransport, DeviceManager, JourneyPeripheral, ManagerConfig, Pairing,
    PairingStore, PeriodicDrop, SimAdapter, SimPeripheral,
};
use emotion_common::journey::Script;
use emotion_core::reading::RawReading;
use emotion_serial::{PortConfig, SerialEvent, SerialReader};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::buffer::EventStore;
use crate::config::devices::SimulatedBleConfig;
use crate::config::{BleAdapter, BleConfig, SerialPortConfig};
use crate::readings::{ReadingOutcome, Readings};
use crate::telemetry::Transport;

/// Addresses of the simulated adapter's devices.
pub const SIM_STRAP: &str = "E0:00:00:00:B1:01";
pub const SIM_BAND: &str = "E0:00:00:00:B1:02";

/// Seeds of the simulated strap and band: the same wearer on every run.
const SIM_SEED: u64 = 0xB1E_5EED;

/// Most gap markers kept per device (older ones are dropped from the record).
const GAPS_PER_DEVICE: usize = 1000;

/// A gap marker: readings of a device that never arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GapMarker {
    pub transport: String,
    pub device_id: String,
    pub user_id: Option<String>,
    /// Frames missed (serial), when known.
    pub missed_frames: Option<u32>,
    /// The interval without data (BLE), when known.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
}

/// What the serial and BLE transports are given: nothing else of the
/// gateway.
#[derive(Debug, Clone)]
pub struct DeviceHandles {
    /// Readings go through their plugin into the ingest queue.
    pub readings: Readings,
    /// Pairings and gap markers are kept in the buffer's metadata.
    pub store: Arc<dyn EventStore>,
    /// Status and counters, shared with `/api/devices` and the pairing API.
    pub devices: Arc<Devices>,
    pub shutdown: CancellationToken,
    /// Where the transports' tasks run, so shutdown waits for them.
    pub tasks: TaskTracker,
}

/// Counters and handles for `/api/devices` and the pairing API.
#[derive(Debug, Default)]
pub struct Devices {
    pub ble: Mutex<Option<DeviceManager<dyn BleTransport>>>,
    /// The simulated adapter behind `ble`, when `ble.adapter = "simulated"`:
    /// the handle that drops its links on demand.
    pub ble_sim: Mutex<Option<SimAdapter>>,
    /// Why BLE is not running, when it is not.
    pub ble_unavailable: Mutex<Option<String>>,
    pub serial: Mutex<Vec<Arc<SerialReader>>>,
    readings: Mutex<ReadingCounters>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ReadingCounters {
    pub received: u64,
    pub stored: u64,
    pub no_emotion: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

impl Devices {
    pub fn ble(&self) -> Option<DeviceManager<dyn BleTransport>> {
        self.ble.lock().clone()
    }

    pub fn counters(&self) -> ReadingCounters {
        self.readings.lock().clone()
    }

    pub fn ble_sim(&self) -> Option<SimAdapter> {
        self.ble_sim.lock().clone()
    }
}

/// Pairings in the buffer's metadata (`pairing/ADDRESS` → JSON).
#[derive(Debug)]
struct MetaPairings(Arc<dyn EventStore>);

impl PairingStore for MetaPairings {
    fn load(&self) -> Result<Vec<Pairing>, emotion_ble::StoreError> {
        let mut out = Vec::new();
        for (_, v) in self.0.meta_with_prefix("pairing/")? {
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    fn save(&self, p: &Pairing) -> Result<(), emotion_ble::StoreError> {
        self.0
            .put_meta(&format!("pairing/{}", p.address), &serde_json::to_vec(p)?)?;
        Ok(())
    }

    fn remove(&self, address: &Address) -> Result<(), emotion_ble::StoreError> {
        self.0.remove_meta(&format!("pairing/{address}"))?;
        Ok(())
    }
}

/// Record a gap marker durably (`gap/DEVICE/TIME`), keeping the newest
/// `GAPS_PER_DEVICE` per device.
fn record_gap(store: &dyn EventStore, g: &GapMarker) {
    let prefix = format!("gap/{}/", g.device_id);
    let key = format!("{prefix}{}", g.recorded_at.format("%Y%m%dT%H%M%S%.6fZ"));
    let value = serde_json::to_vec(g).unwrap_or_default();
    if let Err(e) = store.put_meta(&key, &value) {
        tracing::warn!(error = %e, device = %g.device_id, "could not record a gap marker");
        return;
    }
    if let Ok(all) = store.meta_with_prefix(&prefix)
        && all.len() > GAPS_PER_DEVICE
    {
        for (k, _) in &all[..all.len() - GAPS_PER_DEVICE] {
            let _ = store.remove_meta(k);
        }
    }
    tracing::info!(device = %g.device_id, transport = %g.transport, missed = ?g.missed_frames, "gap marker recorded");
}

/// Recorded gap markers of every device, oldest first per device.
pub fn gaps(store: &dyn EventStore) -> Vec<GapMarker> {
    store
        .meta_with_prefix("gap/")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect()
}

/// Send a device reading through its plugin and into the buffer.
async fn ingest_reading(h: &DeviceHandles, transport: Transport, reading: RawReading) {
    h.devices.readings.lock().received += 1;
    let outcome = match h.readings.submit(reading, transport, None).await {
        ReadingOutcome::NoEmotion => {
            h.devices.readings.lock().no_emotion += 1;
            return;
        }
        ReadingOutcome::Plugin(e) => Err(e.to_string()),
        ReadingOutcome::Ingest(e) => Err(e.to_string()),
        ReadingOutcome::Stored(_) => Ok(()),
    };
    let mut c = h.devices.readings.lock();
    match outcome {
        Ok(()) => c.stored += 1,
        Err(e) => {
            // Log the first failure and every thousandth, not every reading.
            if c.failed.is_multiple_of(1000) {
                tracing::warn!(error = %e, failed = c.failed + 1, "a device reading could not be stored");
            }
            c.failed += 1;
            c.last_error = Some(e);
        }
    }
}

/// Readings are handed on in order but processed concurrently (the plugin
/// host batches them); this bounds how many are in flight per transport.
const IN_FLIGHT: usize = 256;

async fn forward(handles: DeviceHandles, mut rx: mpsc::Receiver<(Transport, RawReading)>) {
    let mut running: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    while let Some((transport, r)) = rx.recv().await {
        if running.len() >= IN_FLIGHT
            && let Some(h) = running.pop_front()
        {
            let _ = h.await;
        }
        let handles = handles.clone();
        running.push_back(tokio::spawn(async move {
            ingest_reading(&handles, transport, r).await
        }));
    }
    for h in running {
        let _ = h.await;
    }
}

/// Start every configured serial port and the BLE manager.
pub async fn start(serial: &[SerialPortConfig], ble: &BleConfig, h: DeviceHandles) {
    // Readings carry their transport, for the per-transport metrics.
    let (tx, rx) = mpsc::channel::<(Transport, RawReading)>(1024);
    h.tasks.spawn(forward(h.clone(), rx));

    for port in serial {
        let mut cfg = PortConfig::new(port.path.clone());
        cfg.baud = port.baud;
        cfg.device_id = port.device_id.clone();
        cfg.user_id = port.user_id.clone();
        if cfg.user_id.is_none() {
            tracing::warn!(path = %port.path.display(), "serial port has no user_id: its readings are not stored");
        }
        let reader = Arc::new(SerialReader::new(cfg));
        h.devices.serial.lock().push(reader.clone());
        let (stx, mut srx) = mpsc::channel::<SerialEvent>(1024);
        let cancel = h.shutdown.clone();
        h.tasks.spawn(async move { reader.run(cancel, stx).await });
        let (tx, store) = (tx.clone(), h.store.clone());
        h.tasks.spawn(async move {
            while let Some(ev) = srx.recv().await {
                match ev {
                    SerialEvent::Reading(r) => {
                        if tx.send((Transport::Serial, r)).await.is_err() {
                            return;
                        }
                    }
                    SerialEvent::Gap { device_id, user_id, missed, at, .. } => {
                        let g = GapMarker {
                            transport: "serial".into(),
                            device_id,
                            user_id,
                            missed_frames: Some(missed),
                            from: None,
                            to: None,
                            recorded_at: at,
                        };
                        let store = store.clone();
                        let _ = tokio::task::spawn_blocking(move || record_gap(store.as_ref(), &g)).await;
                    }
                    SerialEvent::PortLost { path, reason } => {
                        tracing::warn!(path = %path.display(), %reason, "serial port lost; reopening with back-off");
                    }
                    SerialEvent::PortOpened { path } => tracing::info!(path = %path.display(), "serial port open"),
                    SerialEvent::Hello { device_id, firmware, model, .. } => {
                        tracing::info!(%device_id, %firmware, %model, "serial device said hello");
                    }
                    SerialEvent::Battery { .. } => {}
                }
            }
        });
    }

    if !ble.enabled {
        *h.devices.ble_unavailable.lock() =
            Some("disabled in the configuration ([ble] enabled = false)".into());
        return;
    }
    let transport: Arc<dyn BleTransport> = match ble.adapter {
        BleAdapter::Simulated => {
            let sim = simulated_adapter(&ble.simulated);
            *h.devices.ble_sim.lock() = Some(sim.clone());
            Arc::new(sim)
        }
        BleAdapter::Radio => match emotion_ble::open_radio().await {
            Ok(t) => t,
            Err(e) => {
                // Said once, clearly; the gateway runs on without BLE.
                tracing::warn!("no Bluetooth: {e}; running without BLE");
                *h.devices.ble_unavailable.lock() = Some(e.to_string());
                return;
            }
        },
    };
    let mcfg = ManagerConfig {
        max_connections: ble.max_connections,
        backoff_initial: ble.backoff_initial.0,
        backoff_max: ble.backoff_max.0,
        connect_timeout: ble.connect_timeout.0,
        ..ManagerConfig::default()
    };
    let manager = match DeviceManager::new(transport, Arc::new(MetaPairings(h.store.clone())), mcfg)
    {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "BLE device manager could not start; running without BLE");
            *h.devices.ble_unavailable.lock() = Some(e.to_string());
            return;
        }
    };
    *h.devices.ble.lock() = Some(manager.clone());
    let (btx, mut brx) = mpsc::channel::<BleEvent>(1024);
    let cancel: CancellationToken = h.shutdown.clone();
    h.tasks.spawn(async move {
        if let Err(e) = manager.run(cancel, btx).await {
            tracing::error!(error = %e, "BLE device manager stopped");
        }
    });
    let store = h.store.clone();
    h.tasks.spawn(async move {
        while let Some(ev) = brx.recv().await {
            match ev {
                BleEvent::Reading(r) => {
                    if tx.send((Transport::Ble, r)).await.is_err() {
                        return;
                    }
                }
                BleEvent::Gap(g) => {
                    let m = GapMarker {
                        transport: "ble".into(),
                        device_id: g.device_id.clone(),
                        user_id: Some(g.user_id.clone()),
                        missed_frames: None,
                        from: Some(g.from),
                        to: Some(g.to),
                        recorded_at: Utc::now(),
                    };
                    let store = store.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || record_gap(store.as_ref(), &m)).await;
                }
                BleEvent::Link(l) => log_link(&l),
                BleEvent::Battery { .. } => {}
            }
        }
    });
}

/// Link changes in words: someone watching the log of `scripts/run.sh` sees
/// a drop, the failed attempts while the device is out of reach, and the
/// reconnect with what was subscribed again.
fn log_link(l: &emotion_ble::LinkEvent) {
    use emotion_ble::LinkEvent;
    match l {
        LinkEvent::Connected {
            address,
            user_id,
            subscribed,
        } => {
            tracing::info!(%address, user = %user_id, subscribed = subscribed.len(), "BLE device connected and subscribed")
        }
        LinkEvent::Dropped { address, user_id } => {
            tracing::warn!(%address, user = %user_id, "BLE link dropped; reconnecting")
        }
        LinkEvent::ConnectFailed {
            address,
            error,
            attempt,
            retry_in,
            ..
        } => tracing::info!(%address, attempt, ?retry_in, "BLE reconnect failed: {error}"),
        LinkEvent::Released { address } => tracing::info!(%address, "BLE device released"),
    }
}

/// The simulated adapter: a strap and an EDA band worn by someone living
/// through `cfg.journey` (looping), whose links drop every
/// `cfg.link_drop_every` if set.
fn simulated_adapter(cfg: &SimulatedBleConfig) -> SimAdapter {
    let script = Script::new(cfg.journey, cfg.journey_duration.0).looping();
    let drops = PeriodicDrop {
        every: cfg.link_drop_every.0,
        down_for: cfg.link_down_for.0,
    };
    let mut peripherals = Vec::new();
    if let Ok(a) = Address::parse(SIM_STRAP) {
        let strap = JourneyPeripheral::strap(script, SIM_SEED, cfg.speed);
        peripherals.push(SimPeripheral::heart_rate_strap(a, strap).with_periodic_drops(drops));
    }
    if let Ok(a) = Address::parse(SIM_BAND) {
        let band = JourneyPeripheral::band(script, SIM_SEED.wrapping_add(1), cfg.speed);
        peripherals.push(SimPeripheral::eda_band(a, band).with_periodic_drops(drops));
    }
    tracing::info!(
        journey = %cfg.journey,
        speed = cfg.speed,
        link_drop_every = %cfg.link_drop_every,
        "simulated BLE adapter: strap {SIM_STRAP}, band {SIM_BAND}"
    );
    SimAdapter::with_peripherals(peripherals)
}

/// Default scan length for `POST /api/ble/scan` without a duration.
pub fn default_scan(ble: &BleConfig) -> Duration {
    ble.scan_duration.0
}
