//! A simulated BLE adapter: in-process peripherals behind the same
//! [`BleTransport`] trait as the radio, for tests, demos and firmware-sim.
//!
//! A [`SimPeripheral`] advertises a name, an RSSI and services; what it
//! measures comes from a [`PeripheralBehaviour`] supplied from outside
//! (firmware-sim plugs its emotional-journey generators in here). While a
//! peripheral is connected its behaviour is ticked every
//! [`interval`](PeripheralBehaviour::interval) (or only when a test calls
//! [`SimAdapter::tick`], for fully deterministic tests) and its values for
//! subscribed characteristics become notifications.
//!
//! Link drops are scripted ([`LinkDrop`]: after the n-th notification, out of
//! reach for a while), periodic ([`PeriodicDrop`]: every so long after each
//! connect, the wearer walking out of range now and then) or triggered with
//! [`SimAdapter::drop_link`]. A dropped link loses its subscriptions, as a
//! real one does, and a peripheral sends nothing of what it measured while
//! no one listened ([`PeripheralBehaviour::resume`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

use crate::transport::{
    Address, BleError, BleTransport, DeviceInfo, TransportEvent, broadcast_stream,
};
use crate::uuids;
use emotion_wire::gatt::{HeartRateMeasurement, SensorContact, rr_ms_to_1024};
use emotion_wire::vendor::EdaMeasurement;

/// What a simulated peripheral measures.
pub trait PeripheralBehaviour: Send + 'static {
    /// The characteristics it offers.
    fn characteristics(&self) -> Vec<Uuid>;

    /// How often it is ticked while connected; `None`: only by
    /// [`SimAdapter::tick`].
    fn interval(&self) -> Option<Duration>;

    /// One tick: the values it notifies now, per characteristic. `elapsed`
    /// counts from the peripheral's first connection and keeps running
    /// through link drops (the wearer's body does not pause).
    fn tick(&mut self, elapsed: Duration) -> Vec<(Uuid, Vec<u8>)>;

    /// The link is back, `elapsed` after the first connection. A real
    /// peripheral keeps no backlog of what it measured while disconnected,
    /// so a behaviour that fills the time since its last tick should skip
    /// it here rather than send it all on the next tick. Default: nothing.
    fn resume(&mut self, elapsed: Duration) {
        let _ = elapsed;
    }

    /// The value a read returns; `None` if it cannot be read.
    fn read(&mut self, characteristic: Uuid) -> Option<Vec<u8>>;
}

/// A scripted link drop: after the peripheral has sent
/// `after_notifications` notifications in total, the link drops and the
/// peripheral is out of reach for `down_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkDrop {
    pub after_notifications: u64,
    pub down_for: Duration,
}

/// Periodic link drops: each link drops `every` after it was established
/// and the peripheral is then out of reach for `down_for`, for as long as
/// the adapter runs (a demo that shows reconnects without anyone touching
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodicDrop {
    pub every: Duration,
    pub down_for: Duration,
}

/// A simulated peripheral.
pub struct SimPeripheral {
    pub address: Address,
    pub name: Option<String>,
    pub rssi: i16,
    /// Advertised services.
    pub services: Vec<Uuid>,
    pub behaviour: Box<dyn PeripheralBehaviour>,
    pub link_drops: Vec<LinkDrop>,
    /// `None`, or an `every` of zero: no periodic drops.
    pub periodic_drop: Option<PeriodicDrop>,
}

impl std::fmt::Debug for SimPeripheral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPeripheral")
            .field("address", &self.address)
            .field("name", &self.name)
            .field("rssi", &self.rssi)
            .field("services", &self.services)
            .field("link_drops", &self.link_drops)
            .field("periodic_drop", &self.periodic_drop)
            .finish_non_exhaustive()
    }
}

impl SimPeripheral {
    /// A heart-rate strap: Heart Rate and Battery services.
    pub fn heart_rate_strap(address: Address, behaviour: impl PeripheralBehaviour) -> Self {
        Self {
            address,
            name: Some("EmoStrap HR-1".into()),
            rssi: -58,
            services: vec![uuids::HEART_RATE_SERVICE, uuids::BATTERY_SERVICE],
            behaviour: Box::new(behaviour),
            link_drops: Vec::new(),
            periodic_drop: None,
        }
    }

    /// An EDA band: the vendor EDA service and Battery.
    pub fn eda_band(address: Address, behaviour: impl PeripheralBehaviour) -> Self {
        Self {
            address,
            name: Some("EmoBand EDA-1".into()),
            rssi: -64,
            services: vec![uuids::EDA_SERVICE, uuids::BATTERY_SERVICE],
            behaviour: Box::new(behaviour),
            link_drops: Vec::new(),
            periodic_drop: None,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_rssi(mut self, rssi: i16) -> Self {
        self.rssi = rssi;
        self
    }

    pub fn with_link_drops(mut self, drops: impl IntoIterator<Item = LinkDrop>) -> Self {
        self.link_drops = drops.into_iter().collect();
        self
    }

    /// Drop every link `drop.every` after it was established (none if
    /// `every` is zero).
    pub fn with_periodic_drops(mut self, drop: PeriodicDrop) -> Self {
        self.periodic_drop = (!drop.every.is_zero()).then_some(drop);
        self
    }
}

struct SimDevice {
    info: DeviceInfo,
    behaviour: Box<dyn PeripheralBehaviour>,
    characteristics: Vec<Uuid>,
    interval: Option<Duration>,
    in_range: bool,
    unreachable_until: Option<Instant>,
    connected: bool,
    /// Bumped on every connect and drop: a ticker of an older link stops.
    generation: u64,
    subscribed: BTreeSet<Uuid>,
    drops: VecDeque<LinkDrop>,
    periodic_drop: Option<PeriodicDrop>,
    /// Link drops so far (scripted, periodic, on demand, out of range).
    dropped: u64,
    notifications: u64,
    connects: u64,
    subscribes: u64,
    first_connect: Option<Instant>,
}

struct SimState {
    devices: BTreeMap<Address, SimDevice>,
    /// Addresses seen by a scan.
    seen: BTreeSet<Address>,
    peak_connected: usize,
}

impl SimState {
    fn connected(&self) -> usize {
        self.devices.values().filter(|d| d.connected).count()
    }
}

/// The simulated adapter. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SimAdapter {
    state: Arc<Mutex<SimState>>,
    events: broadcast::Sender<TransportEvent>,
}

impl std::fmt::Debug for SimAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("SimAdapter")
            .field("devices", &s.devices.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for SimAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl SimAdapter {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            state: Arc::new(Mutex::new(SimState {
                devices: BTreeMap::new(),
                seen: BTreeSet::new(),
                peak_connected: 0,
            })),
            events,
        }
    }

    /// A simulated adapter with `peripherals` in range.
    pub fn with_peripherals(peripherals: impl IntoIterator<Item = SimPeripheral>) -> Self {
        let sim = Self::new();
        for p in peripherals {
            sim.add_peripheral(p);
        }
        sim
    }

    /// Add (or replace) a peripheral, in range.
    pub fn add_peripheral(&self, p: SimPeripheral) {
        let characteristics = p.behaviour.characteristics();
        let interval = p.behaviour.interval();
        let device = SimDevice {
            info: DeviceInfo {
                address: p.address.clone(),
                name: p.name,
                rssi: Some(p.rssi),
                services: p.services,
                last_seen: Utc::now(),
            },
            behaviour: p.behaviour,
            characteristics,
            interval,
            in_range: true,
            unreachable_until: None,
            connected: false,
            generation: 0,
            subscribed: BTreeSet::new(),
            drops: p.link_drops.into(),
            periodic_drop: p.periodic_drop.filter(|d| !d.every.is_zero()),
            dropped: 0,
            notifications: 0,
            connects: 0,
            subscribes: 0,
            first_connect: None,
        };
        self.state.lock().devices.insert(p.address, device);
    }

    /// Move a peripheral in or out of range. Out of range drops its link and
    /// fails connects until it is back.
    pub fn set_in_range(&self, address: &Address, in_range: bool) {
        let mut s = self.state.lock();
        if let Some(d) = s.devices.get_mut(address) {
            d.in_range = in_range;
            if !in_range && d.connected {
                self.drop_locked(d, None);
            }
        }
    }

    /// Whether a peripheral with this address exists (in range or not).
    pub fn contains(&self, address: &Address) -> bool {
        self.state.lock().devices.contains_key(address)
    }

    /// Drop a peripheral's link now; it cannot be reconnected for `down_for`.
    /// Returns whether it was connected.
    pub fn drop_link(&self, address: &Address, down_for: Duration) -> bool {
        let mut s = self.state.lock();
        match s.devices.get_mut(address) {
            Some(d) if d.connected => {
                self.drop_locked(d, Some(down_for));
                true
            }
            _ => false,
        }
    }

    /// Tick a connected peripheral's behaviour once, as its interval would;
    /// returns the number of notifications delivered.
    pub fn tick(&self, address: &Address) -> usize {
        let mut s = self.state.lock();
        match s.devices.get_mut(address) {
            Some(d) if d.connected => self.tick_locked(d),
            _ => 0,
        }
    }

    pub fn is_connected(&self, address: &Address) -> bool {
        self.state
            .lock()
            .devices
            .get(address)
            .is_some_and(|d| d.connected)
    }

    /// Devices connected now.
    pub fn connected_count(&self) -> usize {
        self.state.lock().connected()
    }

    /// The most devices ever connected at once.
    pub fn peak_connected(&self) -> usize {
        self.state.lock().peak_connected
    }

    /// Successful connects of a device so far.
    pub fn connects(&self, address: &Address) -> u64 {
        self.state
            .lock()
            .devices
            .get(address)
            .map_or(0, |d| d.connects)
    }

    /// Successful subscribe calls of a device so far.
    pub fn subscribes(&self, address: &Address) -> u64 {
        self.state
            .lock()
            .devices
            .get(address)
            .map_or(0, |d| d.subscribes)
    }

    /// Characteristics subscribed on the current link.
    pub fn subscriptions(&self, address: &Address) -> Vec<Uuid> {
        self.state
            .lock()
            .devices
            .get(address)
            .map_or_else(Vec::new, |d| d.subscribed.iter().copied().collect())
    }

    /// Notifications a device has sent so far.
    pub fn notifications(&self, address: &Address) -> u64 {
        self.state
            .lock()
            .devices
            .get(address)
            .map_or(0, |d| d.notifications)
    }

    /// Link drops of a device so far, whatever caused them.
    pub fn link_drops(&self, address: &Address) -> u64 {
        self.state
            .lock()
            .devices
            .get(address)
            .map_or(0, |d| d.dropped)
    }

    fn drop_locked(&self, d: &mut SimDevice, down_for: Option<Duration>) {
        d.connected = false;
        d.generation += 1;
        d.dropped += 1;
        d.subscribed.clear();
        if let Some(down) = down_for {
            let now = Instant::now();
            // Saturate: "down for ever" must not wrap to "reachable now".
            d.unreachable_until = Some(
                now.checked_add(down)
                    .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30)),
            );
        }
        // No receiver is fine: nobody listens.
        let _ = self.events.send(TransportEvent::Disconnected {
            address: d.info.address.clone(),
        });
    }

    fn tick_locked(&self, d: &mut SimDevice) -> usize {
        let elapsed = d.first_connect.map_or(Duration::ZERO, |t| t.elapsed());
        let mut delivered = 0;
        for (characteristic, value) in d.behaviour.tick(elapsed) {
            if !d.subscribed.contains(&characteristic) {
                continue;
            }
            d.notifications += 1;
            delivered += 1;
            let _ = self.events.send(TransportEvent::Notification {
                address: d.info.address.clone(),
                characteristic,
                value,
            });
            if d.drops
                .front()
                .is_some_and(|drop| d.notifications >= drop.after_notifications)
            {
                let drop = d.drops.pop_front();
                self.drop_locked(d, drop.map(|x| x.down_for));
                break;
            }
        }
        delivered
    }

    fn spawn_ticker(&self, address: Address, generation: u64, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate
            loop {
                ticker.tick().await;
                let mut s = this.state.lock();
                match s.devices.get_mut(&address) {
                    Some(d) if d.connected && d.generation == generation => {
                        this.tick_locked(d);
                    }
                    _ => return,
                }
            }
        });
    }

    /// Drop the link of generation `generation` after `drop.every`, unless
    /// it has ended by then.
    fn spawn_dropper(&self, address: Address, generation: u64, drop: PeriodicDrop) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(drop.every).await;
            let mut s = this.state.lock();
            if let Some(d) = s.devices.get_mut(&address)
                && d.connected
                && d.generation == generation
            {
                this.drop_locked(d, Some(drop.down_for));
            }
        });
    }

    fn with_connected<R>(
        &self,
        address: &Address,
        f: impl FnOnce(&mut SimDevice) -> Result<R, BleError>,
    ) -> Result<R, BleError> {
        let mut s = self.state.lock();
        match s.devices.get_mut(address) {
            None => Err(BleError::NotFound(address.clone())),
            Some(d) if !d.connected => Err(BleError::NotConnected(address.clone())),
            Some(d) => f(d),
        }
    }
}

#[async_trait]
impl BleTransport for SimAdapter {
    async fn scan(
        &self,
        duration: Duration,
        services: &[Uuid],
    ) -> Result<Vec<DeviceInfo>, BleError> {
        tokio::time::sleep(duration).await;
        let mut s = self.state.lock();
        let now = Utc::now();
        let mut found = Vec::new();
        for (address, d) in s.devices.iter_mut() {
            if !d.in_range {
                continue;
            }
            if !services.is_empty() && !d.info.services.iter().any(|x| services.contains(x)) {
                continue;
            }
            d.info.last_seen = now;
            found.push((address.clone(), d.info.clone()));
        }
        let infos = found
            .into_iter()
            .map(|(a, info)| {
                s.seen.insert(a);
                info
            })
            .collect();
        Ok(infos)
    }

    async fn devices(&self) -> Result<Vec<DeviceInfo>, BleError> {
        let s = self.state.lock();
        Ok(s.seen
            .iter()
            .filter_map(|a| s.devices.get(a).map(|d| d.info.clone()))
            .collect())
    }

    async fn connect(&self, address: &Address) -> Result<(), BleError> {
        let spawn = {
            let mut s = self.state.lock();
            let Some(d) = s.devices.get_mut(address) else {
                return Err(BleError::NotFound(address.clone()));
            };
            if d.connected {
                return Ok(());
            }
            if !d.in_range || d.unreachable_until.is_some_and(|t| Instant::now() < t) {
                return Err(BleError::Transport(format!(
                    "{address}: connection failed (out of range)"
                )));
            }
            d.connected = true;
            d.generation += 1;
            d.connects += 1;
            match d.first_connect {
                // Back after a drop or a disconnect: skip what was missed.
                Some(first) => d.behaviour.resume(first.elapsed()),
                None => d.first_connect = Some(Instant::now()),
            }
            d.info.last_seen = Utc::now();
            let spawn = (d.generation, d.interval, d.periodic_drop);
            let n = s.connected();
            s.peak_connected = s.peak_connected.max(n);
            spawn
        };
        let (generation, interval, periodic_drop) = spawn;
        if let Some(interval) = interval {
            self.spawn_ticker(address.clone(), generation, interval);
        }
        if let Some(drop) = periodic_drop {
            self.spawn_dropper(address.clone(), generation, drop);
        }
        Ok(())
    }

    async fn disconnect(&self, address: &Address) -> Result<(), BleError> {
        let mut s = self.state.lock();
        if let Some(d) = s.devices.get_mut(address)
            && d.connected
        {
            // A local disconnect is not a link drop: no event.
            d.connected = false;
            d.generation += 1;
            d.subscribed.clear();
        }
        Ok(())
    }

    async fn characteristics(&self, address: &Address) -> Result<Vec<Uuid>, BleError> {
        self.with_connected(address, |d| Ok(d.characteristics.clone()))
    }

    async fn subscribe(&self, address: &Address, characteristic: Uuid) -> Result<(), BleError> {
        self.with_connected(address, |d| {
            if !d.characteristics.contains(&characteristic) {
                return Err(BleError::NoCharacteristic {
                    address: address.clone(),
                    characteristic,
                });
            }
            d.subscribed.insert(characteristic);
            d.subscribes += 1;
            Ok(())
        })
    }

    async fn read(&self, address: &Address, characteristic: Uuid) -> Result<Vec<u8>, BleError> {
        self.with_connected(address, |d| {
            d.behaviour
                .read(characteristic)
                .ok_or(BleError::NoCharacteristic {
                    address: address.clone(),
                    characteristic,
                })
        })
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        broadcast_stream(self.events.subscribe())
    }
}

/// A strap at a fixed heart rate: every tick a 0x2A37 measurement with the
/// rate and one RR interval of 60000/bpm ms (sensor contact detected), and a
/// battery level (read and notified).
#[derive(Debug, Clone)]
pub struct SteadyHeartRate {
    pub bpm: u16,
    pub battery_percent: u8,
    pub interval: Option<Duration>,
}

impl SteadyHeartRate {
    pub fn new(bpm: u16) -> Self {
        Self {
            bpm,
            battery_percent: 90,
            interval: Some(Duration::from_secs(1)),
        }
    }

    /// Ticked only by [`SimAdapter::tick`].
    pub fn manual(bpm: u16) -> Self {
        Self {
            interval: None,
            ..Self::new(bpm)
        }
    }

    fn measurement(&self) -> Vec<u8> {
        let rr = 60_000.0 / f64::from(self.bpm.max(1));
        HeartRateMeasurement {
            heart_rate_bpm: self.bpm,
            sensor_contact: SensorContact::Detected,
            energy_expended_kj: None,
            rr_intervals_1024: vec![rr_ms_to_1024(rr)],
        }
        .encode()
    }
}

impl PeripheralBehaviour for SteadyHeartRate {
    fn characteristics(&self) -> Vec<Uuid> {
        vec![uuids::HEART_RATE_MEASUREMENT, uuids::BATTERY_LEVEL]
    }
    fn interval(&self) -> Option<Duration> {
        self.interval
    }
    fn tick(&mut self, _elapsed: Duration) -> Vec<(Uuid, Vec<u8>)> {
        vec![(uuids::HEART_RATE_MEASUREMENT, self.measurement())]
    }
    fn read(&mut self, characteristic: Uuid) -> Option<Vec<u8>> {
        if characteristic == uuids::BATTERY_LEVEL {
            Some(vec![self.battery_percent])
        } else if characteristic == uuids::HEART_RATE_MEASUREMENT {
            Some(self.measurement())
        } else {
            None
        }
    }
}

/// An EDA band at a fixed skin conductance: every tick `rate_hz` samples
/// (one second's worth) and the skin temperature.
#[derive(Debug, Clone)]
pub struct SteadyEda {
    pub level_us: f64,
    pub rate_hz: f64,
    pub skin_temperature_c: f64,
    pub interval: Option<Duration>,
}

impl SteadyEda {
    pub fn new(level_us: f64) -> Self {
        Self {
            level_us,
            rate_hz: 4.0,
            skin_temperature_c: 33.0,
            interval: Some(Duration::from_secs(1)),
        }
    }

    pub fn manual(level_us: f64) -> Self {
        Self {
            interval: None,
            ..Self::new(level_us)
        }
    }
}

impl PeripheralBehaviour for SteadyEda {
    fn characteristics(&self) -> Vec<Uuid> {
        vec![uuids::EDA_MEASUREMENT, uuids::BATTERY_LEVEL]
    }
    fn interval(&self) -> Option<Duration> {
        self.interval
    }
    fn tick(&mut self, _elapsed: Duration) -> Vec<(Uuid, Vec<u8>)> {
        let n = self.rate_hz.clamp(1.0, 7.0) as usize;
        let m = EdaMeasurement {
            sample_rate_hz: self.rate_hz,
            skin_temperature_c: Some(self.skin_temperature_c),
            samples_us: vec![self.level_us; n],
        };
        vec![(uuids::EDA_MEASUREMENT, m.encode())]
    }
    fn read(&mut self, characteristic: Uuid) -> Option<Vec<u8>> {
        (characteristic == uuids::BATTERY_LEVEL).then(|| vec![80])
    }
}
