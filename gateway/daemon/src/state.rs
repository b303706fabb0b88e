//! What every request handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use emotion_core::Analyzer;
use emotion_plugin_host::PluginHost;
use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Tokens;
use crate::buffer::EventStore;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::privacy::Privacy;
use crate::telemetry::Counters;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub tokens: Arc<Tokens>,
    pub ingest: Ingest,
    pub store: Arc<dyn EventStore>,
    pub analyzer: Arc<Mutex<Analyzer>>,
    /// The first batch the analyzer has not seen (set under its lock).
    pub analyzed: Arc<AtomicU64>,
    pub counters: Arc<Counters>,
    pub privacy: Arc<Privacy>,
    /// Who read, exported, consented, erased (see `crate::audit`).
    pub audit: crate::audit::Audit,
    /// How user ids leave for the central database (see `crate::pseudonym`).
    pub pseudonyms: crate::pseudonym::Pseudonyms,
    /// The WebAssembly plugins that turn raw readings into events.
    pub plugins: PluginHost,
    /// The one path from a raw reading through its plugin into `ingest`.
    pub readings: crate::readings::Readings,
    /// Serial ports and BLE devices.
    pub devices: Arc<crate::devices::Devices>,
    /// The central sync's progress (disabled when sync is off).
    pub sync: Arc<crate::sync::SyncStatus>,
    pub connections: Arc<Connections>,
    /// The MQTT transport's status for `GET /api/mqtt`; set once it has
    /// started (empty while it starts, and when MQTT is off).
    pub mqtt: Arc<std::sync::OnceLock<crate::mqtt::MqttStatus>>,
    /// The live feed of analyzed events, alerts, and dashboard tickets.
    pub live: Arc<crate::live::Live>,
    /// The latest risk sweep (see `crate::risk`).
    pub risk: Arc<crate::risk::RiskRegister>,
    /// Cancelled when the gateway begins to shut down; long tasks watch it.
    pub shutdown: CancellationToken,
    /// Long-lived tasks (WebSocket sessions, housekeeping) that shutdown waits for.
    pub tasks: TaskTracker,
    pub started: Instant,
}

impl AppState {
    /// What the risk sweep needs of the state.
    pub fn risk_handles(&self) -> crate::risk::RiskHandles {
        crate::risk::RiskHandles {
            analyzer: self.analyzer.clone(),
            store: self.store.clone(),
            live: self.live.clone(),
            register: self.risk.clone(),
        }
    }

    /// Replace the analyzer's state with a replay of the buffer (after an
    /// erasure). Ingest's analysis waits meanwhile, so no event is missed or
    /// counted twice. Blocking: run it on a blocking thread.
    pub fn rebuild_analyzer(&self) -> Result<u64, crate::buffer::StoreError> {
        let mut an = self.analyzer.lock();
        let mut fresh = Analyzer::new(an.config().clone());
        // Batches at or past the mark are still on their way to the analyzer
        // stage, which will ingest them after this.
        let through = self.analyzed.load(Ordering::Acquire);
        let mut events = 0;
        self.store.scan(0, &mut |pos, e| {
            if pos.batch < through {
                fresh.ingest(e);
                events += 1;
            }
        })?;
        *an = fresh;
        // Everyone is in RAM again; stored evicted states are stale now.
        crate::checkpoint::forget_evicted(self.store.as_ref())?;
        Ok(events)
    }
}

/// Open event-stream connections, for the metrics stream's
/// `active_connections` and `active_users`.
#[derive(Debug, Default)]
pub struct Connections {
    active: AtomicUsize,
    users: Mutex<HashMap<String, usize>>,
}

impl Connections {
    /// Count a connection for `user_id` until the guard is dropped.
    pub fn open(self: &Arc<Self>, user_id: &str) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        *self.users.lock().entry_ref(user_id).or_insert(0) += 1;
        ConnectionGuard {
            conns: self.clone(),
            user_id: user_id.to_owned(),
        }
    }

    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn active_users(&self) -> usize {
        self.users.lock().len()
    }
}

#[derive(Debug)]
pub struct ConnectionGuard {
    conns: Arc<Connections>,
    user_id: String,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.conns.active.fetch_sub(1, Ordering::Relaxed);
        let mut users = self.conns.users.lock();
        if let Some(n) = users.get_mut(self.user_id.as_str()) {
            *n -= 1;
            if *n == 0 {
                users.remove(self.user_id.as_str());
            }
        }
    }
}
