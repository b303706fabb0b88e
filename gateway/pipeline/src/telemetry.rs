//! Counters the gateway keeps about itself, read by `/health` and exported as
//! Prometheus metrics by `GET /metrics` (see `api/metrics.rs`).
//!
//! The atomics here are the single bookkeeping: `/metrics` reads them at
//! scrape time and hands them to the `metrics` recorder, which renders the
//! exposition format. The one distribution (group-commit flush latency) is a
//! `metrics` histogram recorded directly, since atomics cannot hold it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use emotion_core::{EmotionEvent, Source};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

/// How an event reached the gateway (the `transport` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Ready-made events over `/ws/emotions/stream` and `/ws/emotions`.
    WebSocket,
    /// Raw readings over `/ws/readings`, made into events by a plugin.
    Readings,
    /// Serial wearables (through their plugin).
    Serial,
    /// BLE wearables (through their plugin).
    Ble,
    /// MQTT devices and apps.
    Mqtt,
    /// The dashboard's live stream (`/ws/dashboard`); an outbound transport.
    Dashboard,
    /// Anything that did not say.
    Other,
}

impl Transport {
    pub const ALL: [Transport; 7] = [
        Transport::WebSocket,
        Transport::Readings,
        Transport::Serial,
        Transport::Ble,
        Transport::Mqtt,
        Transport::Dashboard,
        Transport::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Readings => "readings",
            Transport::Serial => "serial",
            Transport::Ble => "ble",
            Transport::Mqtt => "mqtt",
            Transport::Dashboard => "dashboard",
            Transport::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The WebSocket endpoints, for the open-connections gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsEndpoint {
    Stream,
    Legacy,
    Metrics,
    Readings,
    Dashboard,
}

impl WsEndpoint {
    pub const ALL: [WsEndpoint; 5] = [
        WsEndpoint::Stream,
        WsEndpoint::Legacy,
        WsEndpoint::Metrics,
        WsEndpoint::Readings,
        WsEndpoint::Dashboard,
    ];

    pub fn path(self) -> &'static str {
        match self {
            WsEndpoint::Stream => "/ws/emotions/stream",
            WsEndpoint::Legacy => "/ws/emotions",
            WsEndpoint::Metrics => "/ws/emotions/metrics",
            WsEndpoint::Readings => "/ws/readings",
            WsEndpoint::Dashboard => "/ws/dashboard",
        }
    }
}

/// Per transport, per source.
type Matrix = [[AtomicU64; 8]; Transport::ALL.len()];

/// Lock-free counters, shared by every component.
#[derive(Debug, Default)]
pub struct Counters {
    /// Newly stored events, by transport and source (the source of truth for
    /// `events_stored` and the per-source totals too).
    events_in: Matrix,
    /// Analyzed events delivered back out (the `processed` reply, the
    /// dashboard's live stream, MQTT analysis), by transport and source.
    events_out: Matrix,
    /// Open WebSocket connections per endpoint.
    ws_open: [AtomicI64; WsEndpoint::ALL.len()],
    /// Open MQTT client connections (the MQTT transport keeps it).
    mqtt_open: AtomicI64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    flushes: AtomicU64,
    flushed_events: AtomicU64,
    flush_micros_total: AtomicU64,
    flush_micros_max: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CountersSnapshot {
    pub events_stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub flushes: u64,
    pub mean_batch_events: f64,
    pub mean_flush_ms: f64,
    pub max_flush_ms: f64,
}

impl Counters {
    /// A newly stored event that came in over `transport`.
    pub fn record_event(&self, transport: Transport, e: &EmotionEvent) {
        self.events_in[transport.index()][e.source.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An analyzed event sent out over `transport`.
    pub fn record_out(&self, transport: Transport, source: Source) {
        self.events_out[transport.index()][source.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Events stored so far, over every transport.
    pub fn events_stored(&self) -> u64 {
        sum(&self.events_in)
    }

    /// Non-zero entries of the inbound matrix: (transport, source, count).
    pub fn events_in(&self) -> Vec<(Transport, Source, u64)> {
        entries(&self.events_in)
    }

    /// Non-zero entries of the outbound matrix.
    pub fn events_out(&self) -> Vec<(Transport, Source, u64)> {
        entries(&self.events_out)
    }

    /// Count an open WebSocket on `endpoint` until the guard drops.
    pub fn ws_connection(self: &Arc<Self>, endpoint: WsEndpoint) -> OpenGuard {
        let slot = OpenSlot::Ws(endpoint as usize);
        self.slot(slot).fetch_add(1, Ordering::Relaxed);
        OpenGuard {
            counters: self.clone(),
            slot,
        }
    }

    /// Count an open MQTT client connection until the guard drops.
    pub fn mqtt_connection(self: &Arc<Self>) -> OpenGuard {
        self.mqtt_open.fetch_add(1, Ordering::Relaxed);
        OpenGuard {
            counters: self.clone(),
            slot: OpenSlot::Mqtt,
        }
    }

    pub fn ws_connections(&self) -> impl Iterator<Item = (WsEndpoint, i64)> + '_ {
        WsEndpoint::ALL
            .into_iter()
            .map(|e| (e, self.ws_open[e as usize].load(Ordering::Relaxed)))
    }

    pub fn mqtt_connections(&self) -> i64 {
        self.mqtt_open.load(Ordering::Relaxed)
    }

    fn slot(&self, slot: OpenSlot) -> &AtomicI64 {
        match slot {
            OpenSlot::Ws(i) => &self.ws_open[i],
            OpenSlot::Mqtt => &self.mqtt_open,
        }
    }

    pub fn record_duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_flush(&self, events: usize, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flushed_events
            .fetch_add(events as u64, Ordering::Relaxed);
        self.flush_micros_total.fetch_add(us, Ordering::Relaxed);
        self.flush_micros_max.fetch_max(us, Ordering::Relaxed);
        // The distribution, for the Prometheus histogram (a no-op until the
        // recorder is installed).
        metrics::histogram!(FLUSH_SECONDS).record(took.as_secs_f64());
    }

    /// Group commits so far, and the events they stored.
    pub fn flush_totals(&self) -> (u64, u64) {
        (
            self.flushes.load(Ordering::Relaxed),
            self.flushed_events.load(Ordering::Relaxed),
        )
    }

    pub fn events_by_source(&self) -> impl Iterator<Item = (Source, u64)> + '_ {
        Source::ALL.into_iter().map(|s| {
            let n = self
                .events_in
                .iter()
                .map(|row| row[s.index()].load(Ordering::Relaxed))
                .sum();
            (s, n)
        })
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let flushes = self.flushes.load(Ordering::Relaxed);
        let per_flush = |total: u64| {
            if flushes == 0 {
                0.0
            } else {
                total as f64 / flushes as f64
            }
        };
        CountersSnapshot {
            events_stored: self.events_stored(),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            flushes,
            mean_batch_events: per_flush(self.flushed_events.load(Ordering::Relaxed)),
            mean_flush_ms: per_flush(self.flush_micros_total.load(Ordering::Relaxed)) / 1000.0,
            max_flush_ms: self.flush_micros_max.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

fn sum(m: &Matrix) -> u64 {
    m.iter()
        .flat_map(|row| row.iter())
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
}

fn entries(m: &Matrix) -> Vec<(Transport, Source, u64)> {
    let mut out = Vec::new();
    for t in Transport::ALL {
        for s in Source::ALL {
            let n = m[t.index()][s.index()].load(Ordering::Relaxed);
            if n > 0 {
                out.push((t, s, n));
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum OpenSlot {
    Ws(usize),
    Mqtt,
}

/// Keeps a connection counted while it lives.
#[derive(Debug)]
pub struct OpenGuard {
    counters: Arc<Counters>,
    slot: OpenSlot,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.counters
            .slot(self.slot)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Name of the group-commit latency histogram.
pub const FLUSH_SECONDS: &str = "emotion_gateway_buffer_flush_duration_seconds";

/// Flush latency buckets: sled flushes take from ~0.1 ms (page cache) to
/// hundreds of ms on a slow SD card.
const FLUSH_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use as the global
/// `metrics` recorder (so `metrics::counter!` and friends anywhere in the
/// gateway, the MQTT transport included, end up in `/metrics`). `None` if
/// another recorder was installed first (then `/metrics` answers 503).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(FLUSH_SECONDS.into()), FLUSH_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match built {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "the Prometheus recorder could not be installed; /metrics is unavailable");
                    None
                }
            }
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_endpoint_tables_are_in_declaration_order() {
        for (i, t) in Transport::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i);
        }
        for (i, e) in WsEndpoint::ALL.into_iter().enumerate() {
            assert_eq!(e as usize, i);
        }
    }

    #[test]
    fn guards_count_open_connections() {
        let c = Arc::new(Counters::default());
        let a = c.ws_connection(WsEndpoint::Dashboard);
        let b = c.ws_connection(WsEndpoint::Dashboard);
        let m = c.mqtt_connection();
        assert_eq!(c.mqtt_connections(), 1);
        let open = |c: &Counters| {
            c.ws_connections()
                .find(|(e, _)| *e == WsEndpoint::Dashboard)
                .map(|(_, n)| n)
        };
        assert_eq!(open(&c), Some(2));
        drop((a, m));
        assert_eq!(open(&c), Some(1));
        assert_eq!(c.mqtt_connections(), 0);
        drop(b);
        assert_eq!(open(&c), Some(0));
    }
}
