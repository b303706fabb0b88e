//! Counters of the MQTT transport, for `GET /api/mqtt`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Protocol;

/// Devices tracked one by one; beyond it (only possible in upstream mode,
/// where any device id can appear in a topic) the rest are summed under
/// `other`, so the map cannot grow without bound.
const MAX_TRACKED_DEVICES: usize = 10_000;

/// Why a message was not stored (counted, logged, reported to the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    TooLarge,
    InvalidJson,
    ValidationError,
    UnknownSource,
    NotAuthorized,
    /// The plugin found no emotion in the reading (not an error for the
    /// device, but nothing is stored).
    NoEmotion,
    PluginError,
    ErasedUser,
    /// Over the device's rate limit (`mqtt.limits.device_rate_per_second`).
    RateLimited,
}

impl RejectKind {
    pub const ALL: [RejectKind; 9] = [
        RejectKind::TooLarge,
        RejectKind::InvalidJson,
        RejectKind::ValidationError,
        RejectKind::UnknownSource,
        RejectKind::NotAuthorized,
        RejectKind::NoEmotion,
        RejectKind::PluginError,
        RejectKind::ErasedUser,
        RejectKind::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::TooLarge => "too_large",
            RejectKind::InvalidJson => "invalid_json",
            RejectKind::ValidationError => "validation_error",
            RejectKind::UnknownSource => "unknown_source",
            RejectKind::NotAuthorized => "not_authorized",
            RejectKind::NoEmotion => "no_emotion",
            RejectKind::PluginError => "plugin_error",
            RejectKind::ErasedUser => "erased_user",
            RejectKind::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one device.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub connected: AtomicI64,
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    /// Unix milliseconds of the last message.
    pub last_seen_ms: AtomicI64,
    /// The device's rate limit, shared by its connections (set on first use;
    /// `None` inside: unlimited).
    pub bucket: std::sync::OnceLock<Option<emotion_pipeline::rate::TokenBucket>>,
}

impl DeviceStats {
    pub fn seen(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_seen_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    fn to_json(&self) -> Value {
        let last = self.last_seen_ms.load(Ordering::Relaxed);
        json!({
            "connected": self.connected.load(Ordering::Relaxed).max(0),
            "received": self.received.load(Ordering::Relaxed),
            "stored": self.stored.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "last_seen": (last > 0).then(|| DateTime::<Utc>::from_timestamp_millis(last).map(|t| t.to_rfc3339())).flatten(),
        })
    }
}

/// State of the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    Off,
    Connecting,
    Connected,
    /// Lost or refused; waiting before the next attempt.
    BackingOff,
    Stopped,
}

#[derive(Debug)]
pub struct UpstreamStats {
    pub state: Mutex<UpstreamState>,
    pub last_error: Mutex<Option<String>>,
    pub connected_since: Mutex<Option<DateTime<Utc>>>,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    pub session_present: AtomicU64,
    pub received: AtomicU64,
    pub acked: AtomicU64,
    /// Acknowledgements not sent because the connection they belonged to was
    /// gone (the broker redelivers those messages; they are stored once).
    /// Never because the client was busy: those wait and go out in order.
    pub acks_skipped: AtomicU64,
    /// Messages left unacknowledged on purpose (storage failure, overload,
    /// shutdown): the broker redelivers them.
    pub left_for_redelivery: AtomicU64,
    pub forced_reconnects: AtomicU64,
    /// The broker granted the subscriptions on the current connection.
    pub subscribed: std::sync::atomic::AtomicBool,
}

impl Default for UpstreamStats {
    fn default() -> Self {
        UpstreamStats {
            state: Mutex::new(UpstreamState::Off),
            last_error: Mutex::new(None),
            connected_since: Mutex::new(None),
            connects: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            session_present: AtomicU64::new(0),
            received: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acks_skipped: AtomicU64::new(0),
            left_for_redelivery: AtomicU64::new(0),
            forced_reconnects: AtomicU64::new(0),
            subscribed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl UpstreamStats {
    pub fn set_state(&self, s: UpstreamState) {
        *self.state.lock() = s;
    }

    pub fn state(&self) -> UpstreamState {
        *self.state.lock()
    }
}

/// A bound listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    pub key: &'static str,
    pub protocol: Protocol,
    pub tls: bool,
    pub addr: SocketAddr,
}

/// Every counter of the transport.
#[derive(Debug, Default)]
pub struct Stats {
    pub listeners: Mutex<Vec<ListenerInfo>>,
    pub connected: AtomicI64,
    pub connections_accepted: AtomicU64,
    pub refused_auth: AtomicU64,
    pub refused_busy: AtomicU64,
    pub refused_protocol: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    rejected: [AtomicU64; RejectKind::ALL.len()],
    pub subscribe_denied: AtomicU64,
    /// Not acknowledged on purpose (transient failure): the sender resends.
    pub left_for_redelivery: AtomicU64,
    /// Results dropped because the outbox was full.
    pub shed_results: AtomicU64,
    pub published_analysis: AtomicU64,
    /// Fused estimates published.
    pub published_fused: AtomicU64,
    pub published_alerts: AtomicU64,
    pub published_errors: AtomicU64,
    pub upstream: UpstreamStats,
    devices: Mutex<HashMap<String, Arc<DeviceStats>>>,
    other_devices: Arc<DeviceStats>,
}

impl Stats {
    pub fn reject(&self, kind: RejectKind) {
        self.rejected[kind.index()].fetch_add(1, Ordering::Relaxed);
        // Also in `/metrics` (a no-op until the gateway installs the recorder).
        metrics::counter!("emotion_gateway_mqtt_rejected_total", "kind" => kind.as_str())
            .increment(1);
    }

    pub fn rejected(&self, kind: RejectKind) -> u64 {
        self.rejected[kind.index()].load(Ordering::Relaxed)
    }

    /// The counters of `device_id` (shared by all its connections).
    pub fn device(&self, device_id: &str) -> Arc<DeviceStats> {
        let mut map = self.devices.lock();
        if let Some(d) = map.get(device_id) {
            return d.clone();
        }
        if map.len() >= MAX_TRACKED_DEVICES {
            return self.other_devices.clone();
        }
        let d = Arc::new(DeviceStats::default());
        map.insert(device_id.to_owned(), d.clone());
        d
    }

    /// The JSON of `GET /api/mqtt`.
    pub fn to_json(&self, embedded: bool, upstream: Option<Value>) -> Value {
        let rejected: serde_json::Map<String, Value> = RejectKind::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), json!(self.rejected(*k))))
            .collect();
        let mut devices: serde_json::Map<String, Value> = {
            let map = self.devices.lock();
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            names
                .into_iter()
                .filter_map(|n| map.get(n).map(|d| (n.clone(), d.to_json())))
                .collect()
        };
        if self.other_devices.received.load(Ordering::Relaxed) > 0 {
            devices.insert("other".into(), self.other_devices.to_json());
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let upstream_json = upstream.map(|cfg| {
            let u = &self.upstream;
            json!({
                "config": cfg,
                "state": u.state(),
                "subscribed": u.subscribed.load(Ordering::Relaxed),
                "connected_since": u.connected_since.lock().map(|t| t.to_rfc3339()),
                "last_error": u.last_error.lock().clone(),
                "connects": load(&u.connects),
                "connection_errors": load(&u.connection_errors),
                "sessions_resumed": load(&u.session_present),
                "received": load(&u.received),
                "acked": load(&u.acked),
                "acks_skipped": load(&u.acks_skipped),
                "left_for_redelivery": load(&u.left_for_redelivery),
                "forced_reconnects": load(&u.forced_reconnects),
            })
        });
        json!({
            "enabled": true,
            "embedded": {
                "enabled": embedded,
                "listeners": *self.listeners.lock(),
                "connected_clients": self.connected.load(Ordering::Relaxed).max(0),
                "connections_accepted": load(&self.connections_accepted),
                "refused": {
                    "bad_credentials": load(&self.refused_auth),
                    "busy": load(&self.refused_busy),
                    "protocol": load(&self.refused_protocol),
                },
                "protocol_errors": load(&self.protocol_errors),
                "subscriptions_denied": load(&self.subscribe_denied),
            },
            "upstream": upstream_json.unwrap_or_else(|| json!({"enabled": false, "state": UpstreamState::Off})),
            "messages": {
                "received": load(&self.received),
                "stored": load(&self.stored),
                "duplicates": load(&self.duplicates),
                "rejected": rejected,
                "left_for_redelivery": load(&self.left_for_redelivery),
            },
            "results": {
                "analysis": load(&self.published_analysis),
                "fused": load(&self.published_fused),
                "alerts": load(&self.published_alerts),
                "errors": load(&self.published_errors),
                "shed": load(&self.shed_results),
            },
            "devices": devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_map_is_bounded() {
        let s = Stats::default();
        for i in 0..MAX_TRACKED_DEVICES + 5 {
            s.device(&format!("d{i}")).seen();
        }
        assert_eq!(s.devices.lock().len(), MAX_TRACKED_DEVICES);
        let j = s.to_json(true, None);
        assert_eq!(j["devices"]["other"]["received"], 5);
        assert_eq!(j["devices"]["d0"]["received"], 1);
    }

    #[test]
    fn rejections_are_counted_by_kind() {
        let s = Stats::default();
        s.reject(RejectKind::TooLarge);
        s.reject(RejectKind::TooLarge);
        s.reject(RejectKind::InvalidJson);
        let j = s.to_json(true, None);
        assert_eq!(j["messages"]["rejected"]["too_large"], 2);
        assert_eq!(j["messages"]["rejected"]["invalid_json"], 1);
        assert_eq!(j["messages"]["rejected"]["unknown_source"], 0);
        assert_eq!(j["upstream"]["state"], "off");
    }
}
