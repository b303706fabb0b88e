//! The device manager: pairings, connections, subscriptions, decoding,
//! reconnects.
//!
//! Drive it from a daemon like this:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn emotion_ble::PairingStore>) -> Result<(), emotion_ble::BleError> {
//! use std::sync::Arc;
//! use emotion_ble::{BleEvent, BleTransport, DeviceManager, ManagerConfig, SimAdapter};
//! use tokio_util::sync::CancellationToken;
//!
//! let transport: Arc<dyn BleTransport> = Arc::new(SimAdapter::new()); // or BtleplugTransport::new().await?
//! let manager = DeviceManager::new(transport, store, ManagerConfig::default())?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let cancel = CancellationToken::new();
//! let task = tokio::spawn({
//!     let (manager, cancel) = (manager.clone(), cancel.clone());
//!     async move { manager.run(cancel, tx).await }
//! });
//! // REST handlers call manager.scan(..), devices(), pair(..), unpair(..).
//! while let Some(ev) = rx.recv().await {
//!     match ev {
//!         BleEvent::Reading(reading) => { /* to the physiological plugin */ }
//!         BleEvent::Gap(gap) => { /* record the gap marker */ }
//!         BleEvent::Battery { .. } | BleEvent::Link(_) => { /* status, logs */ }
//!     }
//! }
//! # cancel.cancel(); let _ = task.await; Ok(()) }
//! ```
//!
//! What it does:
//!
//! - **Pairing** binds a device address to a user id. Pairings are kept in a
//!   [`PairingStore`] (the daemon's) and written there *before* they take
//!   effect, so a pairing acknowledged to the caller survives a restart.
//! - **Connections**: every paired device is connected, up to
//!   [`ManagerConfig::max_connections`] at once (older pairings first; the
//!   rest wait for a slot), and subscribed to Heart Rate Measurement, the
//!   vendor EDA Measurement and Battery Level, whichever it offers.
//! - **Readings**: notifications are decoded ([`crate::convert`]) into
//!   physiological [`RawReading`]s for the bound user, with the address as
//!   device id and the arrival time as timestamp. Notifications from a device
//!   that is not paired (any more) are dropped and counted, never forwarded.
//! - **Link drops**: the device is reconnected and re-subscribed with
//!   exponential back-off (with jitter); once it is back, a [`Gap`] marker
//!   says from when to when no data came.
//! - A failed connect is retried with the same back-off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use emotion_core::reading::RawReading;
use emotion_wire::gatt::{BatteryLevel, HeartRateMeasurement};
use emotion_wire::vendor::EdaMeasurement;

use crate::convert::{self, Skip};
use crate::transport::{Address, BleError, BleTransport, DeviceInfo, TransportEvent};
use crate::uuids;

/// A device bound to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing {
    pub address: Address,
    pub user_id: String,
    pub paired_at: DateTime<Utc>,
}

/// An error from the daemon's pairing store.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where pairings are persisted; the daemon implements it (e.g. in its
/// buffer's metadata). Calls are short and synchronous; the manager makes
/// them from async code, so keep them quick (a local key-value write).
pub trait PairingStore: Send + Sync + 'static {
    /// Every pairing, at start-up.
    fn load(&self) -> Result<Vec<Pairing>, StoreError>;
    /// Insert or replace the pairing of `pairing.address`.
    fn save(&self, pairing: &Pairing) -> Result<(), StoreError>;
    /// Forget a pairing (no error if there was none).
    fn remove(&self, address: &Address) -> Result<(), StoreError>;
}

/// Pairings in memory (tests, or a gateway that need not remember).
#[derive(Debug, Default)]
pub struct MemoryPairingStore(Mutex<BTreeMap<Address, Pairing>>);

impl MemoryPairingStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl PairingStore for MemoryPairingStore {
    fn load(&self) -> Result<Vec<Pairing>, StoreError> {
        Ok(self.0.lock().values().cloned().collect())
    }
    fn save(&self, pairing: &Pairing) -> Result<(), StoreError> {
        self.0
            .lock()
            .insert(pairing.address.clone(), pairing.clone());
        Ok(())
    }
    fn remove(&self, address: &Address) -> Result<(), StoreError> {
        self.0.lock().remove(address);
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Most devices connected (or connecting) at once (0: connect none).
    pub max_connections: usize,
    /// First retry delay after a drop or a failed connect.
    pub backoff_initial: Duration,
    /// The delay doubles per failed attempt up to this.
    pub backoff_max: Duration,
    /// ± this fraction of random spread on each delay (0 for none), so that
    /// many devices dropped together do not retry in lock step.
    pub backoff_jitter: f64,
    /// Connect + discover + subscribe must finish within this.
    pub connect_timeout: Duration,
    /// How often waiting devices are looked at even when nothing happens.
    pub retry_check: Duration,
    /// Services a scan filters on.
    pub scan_services: Vec<Uuid>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            max_connections: 4,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            backoff_jitter: 0.2,
            connect_timeout: Duration::from_secs(20),
            retry_check: Duration::from_millis(500),
            scan_services: uuids::SCAN_SERVICES.to_vec(),
        }
    }
}

/// The link of a paired device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// Paired, not tried yet.
    Idle,
    /// Paired, waiting because `max_connections` devices are connected.
    WaitingForSlot,
    Connecting,
    Connected {
        since: DateTime<Utc>,
        /// The characteristics subscribed on this link (a reconnect
        /// subscribes again: a dropped link loses its subscriptions).
        subscribed: Vec<Uuid>,
    },
    /// Waiting to retry after a drop or a failed connect.
    Backoff {
        attempt: u32,
        retry_at: DateTime<Utc>,
        last_error: Option<String>,
    },
}

/// A device as the pairing API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceView {
    pub address: Address,
    pub name: Option<String>,
    pub rssi: Option<i16>,
    pub services: Vec<Uuid>,
    /// `None` for a paired device no scan has seen (yet).
    pub last_seen: Option<DateTime<Utc>>,
    /// The bound user, if paired.
    pub user_id: Option<String>,
    /// Only for paired devices.
    pub link: Option<LinkState>,
    pub battery_percent: Option<u8>,
}

/// A gap marker: no data came from a device between `from` and `to` because
/// its link dropped. Emitted once the link is back and re-subscribed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    pub address: Address,
    /// The device id its readings carry (the address).
    pub device_id: String,
    pub user_id: String,
    /// The last notification before the drop (or the drop, if none came).
    pub from: DateTime<Utc>,
    /// When the link was re-established.
    pub to: DateTime<Utc>,
    /// Failed connects before it came back.
    pub failed_attempts: u32,
}

/// Link changes, for logs and status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LinkEvent {
    Connected {
        address: Address,
        user_id: String,
        subscribed: Vec<Uuid>,
    },
    Dropped {
        address: Address,
        user_id: String,
    },
    ConnectFailed {
        address: Address,
        user_id: String,
        error: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// Disconnected on purpose (unpaired).
    Released {
        address: Address,
    },
}

/// What the manager sends on its output channel.
#[derive(Debug, Clone, PartialEq)]
pub enum BleEvent {
    /// A physiological reading for the bound user.
    Reading(RawReading),
    Gap(Gap),
    Battery {
        address: Address,
        user_id: String,
        percent: u8,
    },
    Link(LinkEvent),
}

/// Counters since the manager was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ManagerStats {
    pub readings: u64,
    pub gaps: u64,
    pub link_drops: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Notifications from devices not paired: dropped.
    pub unbound_dropped: u64,
    pub decode_errors: u64,
    /// Heart-rate notifications while the strap reported no skin contact.
    pub no_contact: u64,
    /// Notifications with nothing usable (e.g. a rate of 0 and no RR).
    pub empty: u64,
    /// Transport events lost because the manager fell behind.
    pub lagged: u64,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    /// Failed connects since the last success.
    attempts: u32,
    next_try: Instant,
    /// Set by a drop, cleared (into a gap) by the reconnect.
    down_since: Option<DateTime<Utc>>,
    last_data: Option<DateTime<Utc>>,
    battery: Option<u8>,
    /// The link dropped while a connect was in flight: the connect's
    /// success is stale.
    dropped_while_connecting: bool,
}

impl Link {
    fn new() -> Self {
        Self {
            state: LinkState::Idle,
            attempts: 0,
            next_try: Instant::now(),
            down_since: None,
            last_data: None,
            battery: None,
            dropped_while_connecting: false,
        }
    }

    fn active(&self) -> bool {
        matches!(
            self.state,
            LinkState::Connecting | LinkState::Connected { .. }
        )
    }
}

#[derive(Debug, Default)]
struct State {
    pairings: BTreeMap<Address, Pairing>,
    links: BTreeMap<Address, Link>,
    /// Unpaired while connected: to be disconnected by the run loop.
    release: Vec<Address>,
    running: bool,
    stats: ManagerStats,
    jitter_seed: u64,
}

struct Inner<T: ?Sized> {
    config: ManagerConfig,
    store: Arc<dyn PairingStore>,
    state: Mutex<State>,
    wake: Notify,
    transport: Arc<T>,
}

/// The device manager. Cheap to clone; every clone is the same manager.
pub struct DeviceManager<T: BleTransport + ?Sized> {
    inner: Arc<Inner<T>>,
}

impl<T: BleTransport + ?Sized> Clone for DeviceManager<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: BleTransport + ?Sized> std::fmt::Debug for DeviceManager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.state.lock();
        f.debug_struct("DeviceManager")
            .field("config", &self.inner.config)
            .field("pairings", &s.pairings.len())
            .field("running", &s.running)
            .finish_non_exhaustive()
    }
}

/// Clears the `running` flag however `run` ends.
struct RunningGuard<'a>(&'a Mutex<State>);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.running = false;
        for link in s.links.values_mut() {
            link.state = LinkState::Idle;
        }
    }
}

/// Result of one connect attempt: the battery level read, the
/// characteristics subscribed.
type ConnectOutcome = (Address, Result<(Option<u8>, Vec<Uuid>), BleError>);

impl<T: BleTransport + ?Sized> DeviceManager<T> {
    /// Load the pairings from `store`. Nothing connects until [`run`](Self::run).
    pub fn new(
        transport: Arc<T>,
        store: Arc<dyn PairingStore>,
        config: ManagerConfig,
    ) -> Result<Self, BleError> {
        let loaded = store
            .load()
            .map_err(|e| BleError::Store(format!("loading pairings: {e}")))?;
        let mut state = State {
            jitter_seed: 0x9E37_79B9_7F4A_7C15,
            ..State::default()
        };
        for p in loaded {
            state.links.insert(p.address.clone(), Link::new());
            state.pairings.insert(p.address.clone(), p);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                store,
                state: Mutex::new(state),
                wake: Notify::new(),
                transport,
            }),
        })
    }

    pub fn transport(&self) -> &Arc<T> {
        &self.inner.transport
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> ManagerStats {
        self.inner.state.lock().stats
    }

    pub fn pairings(&self) -> Vec<Pairing> {
        self.inner.state.lock().pairings.values().cloned().collect()
    }

    /// Bind `address` to `user_id` (re-binding a paired device moves it to
    /// the new user). Persisted before it takes effect. Works whether or not
    /// [`run`](Self::run) is running; a running manager connects at once.
    pub fn pair(&self, address: Address, user_id: &str) -> Result<Pairing, BleError> {
        emotion_core::event::check_identifier(user_id).map_err(BleError::InvalidUser)?;
        if let Some(p) = self.inner.state.lock().pairings.get(&address)
            && p.user_id == user_id
        {
            return Ok(p.clone());
        }
        let pairing = Pairing {
            address: address.clone(),
            user_id: user_id.to_owned(),
            paired_at: Utc::now(),
        };
        self.inner
            .store
            .save(&pairing)
            .map_err(|e| BleError::Store(format!("saving pairing of {address}: {e}")))?;
        {
            let mut s = self.inner.state.lock();
            s.pairings.insert(address.clone(), pairing.clone());
            s.links.entry(address).or_insert_with(Link::new);
        }
        self.inner.wake.notify_one();
        Ok(pairing)
    }

    /// Unbind a device; a connected one is disconnected. From this call on
    /// none of its notifications are forwarded. Returns the old pairing.
    pub fn unpair(&self, address: &Address) -> Result<Option<Pairing>, BleError> {
        if !self.inner.state.lock().pairings.contains_key(address) {
            return Ok(None);
        }
        self.inner
            .store
            .remove(address)
            .map_err(|e| BleError::Store(format!("removing pairing of {address}: {e}")))?;
        let old = {
            let mut s = self.inner.state.lock();
            let old = s.pairings.remove(address);
            if s.links.remove(address).is_some_and(|l| l.active()) {
                s.release.push(address.clone());
            }
            old
        };
        self.inner.wake.notify_one();
        Ok(old)
    }

    /// Scan for the configured services for `duration`; the devices found.
    pub async fn scan(&self, duration: Duration) -> Result<Vec<DeviceView>, BleError> {
        let found = self
            .inner
            .transport
            .scan(duration, &self.inner.config.scan_services)
            .await?;
        Ok(self.views(found, false))
    }

    /// Every device seen by scans, plus paired devices not seen (yet).
    pub async fn devices(&self) -> Result<Vec<DeviceView>, BleError> {
        let seen = self.inner.transport.devices().await?;
        Ok(self.views(seen, true))
    }

    fn views(&self, infos: Vec<DeviceInfo>, with_unseen_paired: bool) -> Vec<DeviceView> {
        let s = self.inner.state.lock();
        let mut out: BTreeMap<Address, DeviceView> = BTreeMap::new();
        for info in infos {
            let (user_id, link, battery_percent) = Self::pairing_view(&s, &info.address);
            out.insert(
                info.address.clone(),
                DeviceView {
                    address: info.address,
                    name: info.name,
                    rssi: info.rssi,
                    services: info.services,
                    last_seen: Some(info.last_seen),
                    user_id,
                    link,
                    battery_percent,
                },
            );
        }
        if with_unseen_paired {
            for address in s.pairings.keys() {
                if !out.contains_key(address) {
                    let (user_id, link, battery_percent) = Self::pairing_view(&s, address);
                    out.insert(
                        address.clone(),
                        DeviceView {
                            address: address.clone(),
                            name: None,
                            rssi: None,
                            services: Vec::new(),
                            last_seen: None,
                            user_id,
                            link,
                            battery_percent,
                        },
                    );
                }
            }
        }
        out.into_values().collect()
    }

    fn pairing_view(
        s: &State,
        address: &Address,
    ) -> (Option<String>, Option<LinkState>, Option<u8>) {
        let user = s.pairings.get(address).map(|p| p.user_id.clone());
        let link = s.links.get(address);
        (
            user,
            link.map(|l| l.state.clone()),
            link.and_then(|l| l.battery),
        )
    }

    /// Connect paired devices and forward their readings to `out` until
    /// `cancel` fires (or `out` is closed); then disconnect everything and
    /// return. Only one `run` at a time per manager.
    pub async fn run(
        &self,
        cancel: CancellationToken,
        out: mpsc::Sender<BleEvent>,
    ) -> Result<(), BleError> {
        {
            let mut s = self.inner.state.lock();
            if s.running {
                return Err(BleError::Transport(
                    "the device manager is already running".into(),
                ));
            }
            s.running = true;
        }
        let _guard = RunningGuard(&self.inner.state);
        let mut events = self.inner.transport.events();
        let mut connecting: JoinSet<ConnectOutcome> = JoinSet::new();
        let mut chores: JoinSet<()> = JoinSet::new();
        // `interval` panics on a zero period; a config may say 0.
        let mut check =
            tokio::time::interval(self.inner.config.retry_check.max(Duration::from_millis(1)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result = loop {
            let (to_connect, to_release) = self.plan();
            let mut open = true;
            for address in to_release {
                let transport = self.inner.transport.clone();
                let a = address.clone();
                chores.spawn(async move {
                    if let Err(e) = transport.disconnect(&a).await {
                        tracing::debug!(address = %a, "disconnect after unpair: {e}");
                    }
                });
                if open {
                    open = send(
                        &out,
                        &cancel,
                        BleEvent::Link(LinkEvent::Released { address }),
                    )
                    .await;
                }
            }
            if !open {
                break Ok(());
            }
            for address in to_connect {
                let transport = self.inner.transport.clone();
                let timeout = self.inner.config.connect_timeout;
                connecting.spawn(async move {
                    let r = match tokio::time::timeout(
                        timeout,
                        connect_and_subscribe(&*transport, &address),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            // Leave no half-open link behind.
                            let _ = transport.disconnect(&address).await;
                            Err(BleError::Timeout {
                                op: "connect and subscribe",
                                after: timeout,
                            })
                        }
                    };
                    (address, r)
                });
            }

            let outputs = tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                ev = events.next() => match ev {
                    Some(ev) => self.on_transport_event(ev),
                    None => break Err(BleError::Transport("the transport's event stream ended".into())),
                },
                Some(joined) = connecting.join_next(), if !connecting.is_empty() => match joined {
                    Ok((address, r)) => self.on_connect_result(address, r, &mut chores),
                    Err(e) => {
                        // A connect task panicked (a transport bug): its
                        // device stays "connecting"; say so loudly.
                        tracing::error!("BLE connect task failed: {e}");
                        Vec::new()
                    }
                },
                Some(_) = chores.join_next(), if !chores.is_empty() => Vec::new(),
                _ = self.inner.wake.notified() => Vec::new(),
                _ = check.tick() => Vec::new(),
            };
            for ev in outputs {
                if !send(&out, &cancel, ev).await {
                    open = false;
                    break;
                }
            }
            if !open {
                break Ok(());
            }
        };

        // Shut down: stop connecting, disconnect what is connected.
        connecting.abort_all();
        let connected: Vec<Address> = {
            let s = self.inner.state.lock();
            s.links
                .iter()
                .filter(|(_, l)| l.active())
                .map(|(a, _)| a.clone())
                .collect()
        };
        for address in connected {
            let transport = self.inner.transport.clone();
            chores.spawn(async move {
                let _ = transport.disconnect(&address).await;
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while chores.join_next().await.is_some() {}
        })
        .await;
        result
    }

    /// Decide what to connect and release now; marks them.
    fn plan(&self) -> (Vec<Address>, Vec<Address>) {
        let mut s = self.inner.state.lock();
        let release = std::mem::take(&mut s.release);
        let now = Instant::now();
        let mut active = s.links.values().filter(|l| l.active()).count();
        let max = self.inner.config.max_connections;
        let mut waiting: Vec<(DateTime<Utc>, Address)> = s
            .links
            .iter()
            .filter(|(_, l)| match l.state {
                LinkState::Idle | LinkState::WaitingForSlot => true,
                LinkState::Backoff { .. } => l.next_try <= now,
                LinkState::Connecting | LinkState::Connected { .. } => false,
            })
            .filter_map(|(a, _)| s.pairings.get(a).map(|p| (p.paired_at, a.clone())))
            .collect();
        waiting.sort();
        let mut connect = Vec::new();
        for (_, address) in waiting {
            let Some(link) = s.links.get_mut(&address) else {
                continue;
            };
            if active < max {
                link.state = LinkState::Connecting;
                active += 1;
                connect.push(address);
            } else if !matches!(link.state, LinkState::Backoff { .. }) {
                link.state = LinkState::WaitingForSlot;
            }
        }
        (connect, release)
    }

    fn backoff(&self, s: &mut State, attempt: u32) -> Duration {
        let c = &self.inner.config;
        let exp = attempt.saturating_sub(1).min(20);
        let base = c
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(c.backoff_max);
        if c.backoff_jitter <= 0.0 {
            return base;
        }
        // splitmix64: good enough spread, no dependency, no global state.
        s.jitter_seed = s.jitter_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s.jitter_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let factor = 1.0 + c.backoff_jitter.min(1.0) * (2.0 * unit - 1.0);
        // `mul_f64` panics on overflow; a configured maximum may be huge.
        Duration::try_from_secs_f64(base.as_secs_f64() * factor.max(0.0)).unwrap_or(base)
    }

    fn on_connect_result(
        &self,
        address: Address,
        result: Result<(Option<u8>, Vec<Uuid>), BleError>,
        chores: &mut JoinSet<()>,
    ) -> Vec<BleEvent> {
        let mut s = self.inner.state.lock();
        let now = Utc::now();
        let Some(user_id) = s.pairings.get(&address).map(|p| p.user_id.clone()) else {
            // Unpaired while connecting: let go of it.
            if result.is_ok() {
                let transport = self.inner.transport.clone();
                chores.spawn(async move {
                    let _ = transport.disconnect(&address).await;
                });
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        let stale = s
            .links
            .get_mut(&address)
            .is_some_and(|l| std::mem::take(&mut l.dropped_while_connecting));
        let result = match result {
            Ok(_) if stale => Err(BleError::Transport(format!(
                "{address}: link dropped while subscribing"
            ))),
            r => r,
        };
        match result {
            Ok((battery, subscribed)) => {
                s.stats.connects += 1;
                let Some(link) = s.links.get_mut(&address) else {
                    return out;
                };
                let failed_attempts = std::mem::take(&mut link.attempts);
                link.state = LinkState::Connected {
                    since: now,
                    subscribed: subscribed.clone(),
                };
                if battery.is_some() {
                    link.battery = battery;
                }
                let gap = link.down_since.take().map(|from| Gap {
                    device_id: address.to_string(),
                    address: address.clone(),
                    user_id: user_id.clone(),
                    from,
                    to: now,
                    failed_attempts,
                });
                if gap.is_some() {
                    s.stats.gaps += 1;
                }
                out.push(BleEvent::Link(LinkEvent::Connected {
                    address: address.clone(),
                    user_id: user_id.clone(),
                    subscribed,
                }));
                if let Some(gap) = gap {
                    out.push(BleEvent::Gap(gap));
                }
                if let Some(percent) = battery {
                    out.push(BleEvent::Battery {
                        address,
                        user_id,
                        percent,
                    });
                }
            }
            Err(e) => {
                s.stats.connect_failures += 1;
                let attempt = s.links.get(&address).map_or(1, |l| l.attempts + 1);
                let delay = self.backoff(&mut s, attempt);
                let Some(link) = s.links.get_mut(&address) else {
                    return out;
                };
                link.attempts = attempt;
                link.next_try = later(delay);
                link.state = LinkState::Backoff {
                    attempt,
                    retry_at: at_after(now, delay),
                    last_error: Some(e.to_string()),
                };
                tracing::debug!(%address, attempt, ?delay, "BLE connect failed: {e}");
                out.push(BleEvent::Link(LinkEvent::ConnectFailed {
                    address,
                    user_id,
                    error: e.to_string(),
                    attempt,
                    retry_in: delay,
                }));
            }
        }
        out
    }

    fn on_transport_event(&self, ev: TransportEvent) -> Vec<BleEvent> {
        let mut s = self.inner.state.lock();
        let now = Utc::now();
        match ev {
            TransportEvent::Lagged { missed } => {
                s.stats.lagged += missed;
                tracing::warn!(missed, "BLE manager fell behind; events lost");
                Vec::new()
            }
            TransportEvent::Disconnected { address } => {
                let Some(user_id) = s.pairings.get(&address).map(|p| p.user_id.clone()) else {
                    return Vec::new();
                };
                let delay = self.backoff(&mut s, 1);
                let Some(link) = s.links.get_mut(&address) else {
                    return Vec::new();
                };
                match link.state {
                    LinkState::Connected { .. } => {}
                    LinkState::Connecting => {
                        link.dropped_while_connecting = true;
                        return Vec::new();
                    }
                    _ => return Vec::new(),
                }
                link.down_since = Some(link.last_data.unwrap_or(now));
                link.attempts = 0;
                link.next_try = later(delay);
                link.state = LinkState::Backoff {
                    attempt: 0,
                    retry_at: at_after(now, delay),
                    last_error: None,
                };
                s.stats.link_drops += 1;
                vec![BleEvent::Link(LinkEvent::Dropped { address, user_id })]
            }
            TransportEvent::Notification {
                address,
                characteristic,
                value,
            } => {
                let Some(user_id) = s.pairings.get(&address).map(|p| p.user_id.clone()) else {
                    s.stats.unbound_dropped += 1;
                    return Vec::new();
                };
                if let Some(link) = s.links.get_mut(&address) {
                    link.last_data = Some(now);
                }
                let payload = if characteristic == uuids::HEART_RATE_MEASUREMENT {
                    HeartRateMeasurement::decode(&value)
                        .map_err(Skip::from)
                        .and_then(|m| convert::heart_rate(&m))
                } else if characteristic == uuids::EDA_MEASUREMENT {
                    EdaMeasurement::decode(&value)
                        .map_err(Skip::from)
                        .and_then(|m| convert::eda(&m))
                } else if characteristic == uuids::BATTERY_LEVEL {
                    return match BatteryLevel::decode(&value) {
                        Ok(BatteryLevel(percent)) => {
                            if let Some(link) = s.links.get_mut(&address) {
                                link.battery = Some(percent);
                            }
                            vec![BleEvent::Battery {
                                address,
                                user_id,
                                percent,
                            }]
                        }
                        Err(_) => {
                            s.stats.decode_errors += 1;
                            Vec::new()
                        }
                    };
                } else {
                    return Vec::new();
                };
                match payload {
                    Ok(p) => {
                        s.stats.readings += 1;
                        vec![BleEvent::Reading(convert::reading(
                            &user_id,
                            address.as_str(),
                            now,
                            p,
                        ))]
                    }
                    Err(Skip::Decode(e)) => {
                        s.stats.decode_errors += 1;
                        tracing::debug!(%address, %characteristic, "undecodable notification: {e}");
                        Vec::new()
                    }
                    Err(Skip::NoContact) => {
                        s.stats.no_contact += 1;
                        Vec::new()
                    }
                    Err(Skip::Empty) => {
                        s.stats.empty += 1;
                        Vec::new()
                    }
                }
            }
        }
    }
}

/// `Instant::now() + delay`, saturating instead of panicking.
fn later(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// `now + delay`, saturating instead of panicking on absurd delays.
fn at_after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Send unless cancelled; false when the receiver is gone or we are cancelled.
async fn send(out: &mpsc::Sender<BleEvent>, cancel: &CancellationToken, ev: BleEvent) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        r = out.send(ev) => r.is_ok(),
    }
}

/// Connect, then subscribe to every characteristic of interest the device
/// offers; read the battery level once.
async fn connect_and_subscribe<T: BleTransport + ?Sized>(
    transport: &T,
    address: &Address,
) -> Result<(Option<u8>, Vec<Uuid>), BleError> {
    transport.connect(address).await?;
    let result = async {
        let offered = transport.characteristics(address).await?;
        if !offered.contains(&uuids::HEART_RATE_MEASUREMENT)
            && !offered.contains(&uuids::EDA_MEASUREMENT)
        {
            return Err(BleError::Transport(format!(
                "{address} offers neither Heart Rate Measurement nor EDA Measurement"
            )));
        }
        let mut subscribed = Vec::new();
        for c in uuids::SUBSCRIBED {
            if !offered.contains(&c) {
                continue;
            }
            match transport.subscribe(address, c).await {
                Ok(()) => subscribed.push(c),
                // Battery Level notifications are optional in the spec.
                Err(e) if c == uuids::BATTERY_LEVEL => {
                    tracing::debug!(%address, "battery level not notifiable: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        let battery = if offered.contains(&uuids::BATTERY_LEVEL) {
            match transport.read(address, uuids::BATTERY_LEVEL).await {
                Ok(v) => BatteryLevel::decode(&v).ok().map(|b| b.0),
                Err(_) => None,
            }
        } else {
            None
        };
        Ok((battery, subscribed))
    }
    .await;
    if result.is_err() {
        let _ = transport.disconnect(address).await;
    }
    result
}
