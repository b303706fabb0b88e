//! The MQTT transport: an embedded broker for devices, and an upstream mode
//! that consumes from an external broker.
//!
//! ```text
//!  devices ──MQTT 3.1.1/5 (TLS)──► listeners (server.rs) ──┐ auth, topic rules,
//!                                                           │ decode, validate
//!  external broker ──rumqttc, manual acks──► upstream.rs ───┤
//!                                                           ▼
//!                              plugin host (readings) ─► ingest (durable) ─► PUBACK / ack
//!                                                           │
//!  devices ◄── rumqttd router (local links) ◄── outbox ◄── live feed (analysis and
//!  external broker ◄── results connection ◄────────┘      alerts of every transport)
//! ```
//!
//! Topics and who may use them: [`topics`]. Event ids of redelivered
//! messages: [`ids`]. Configuration: [`config`] (`[mqtt]`).
//!
//! Why the devices are served by the gateway's own front-end (with rumqttd's
//! codecs and router) rather than by rumqttd's listeners: rumqttd acknowledges
//! a QoS 1 PUBLISH as soon as its router has it, and its router forwards
//! messages without saying who published them. The first breaks "acknowledged
//! only once durable", the second makes a per-device publish rule impossible
//! to enforce on the local link (and rumqttd has no subscribe hook at all, so
//! any device could read every user's analysis). Serving the connections here
//! gives both rules exactly, with no extra hop: a device's message goes from
//! its socket straight into the ingest queue. rumqttd's router is kept for
//! what it is good at: subscriptions, persistent sessions and QoS 1 delivery
//! of results.

pub mod config;
mod handles;
pub mod ids;
pub mod topics;

mod broker;
mod frame;
mod inbound;
mod outbox;
mod rejection;
mod server;
mod stats;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{DeviceCredential, MqttConfig};
pub use handles::MqttHandles;
pub use ids::derive_event_id;
pub use outbox::analysis_json;
pub use stats::{ListenerInfo, RejectKind, UpstreamState};

/// How long shutdown waits for connections to finish their acknowledgements.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the TLS listeners' certificate files are checked for a change.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("invalid MQTT configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// A listener could not bind; the message names the port and the key.
    #[error("{0}")]
    Bind(String),
    #[error("MQTT TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

/// The running MQTT transport. Dropping it does not stop it; call
/// [`MqttHandle::shutdown`].
#[derive(Debug)]
pub struct MqttHandle {
    status: MqttStatus,
    token: CancellationToken,
    tracker: TaskTracker,
    shared: Arc<inbound::Shared>,
    broker: Option<broker::Broker>,
}

/// A cheap, cloneable view for `GET /api/mqtt` (holds no part of the
/// pipeline, so keeping it does not delay shutdown).
#[derive(Debug, Clone)]
pub struct MqttStatus {
    stats: Arc<stats::Stats>,
    embedded: bool,
    upstream: Option<Value>,
}

impl MqttStatus {
    /// The JSON of `GET /api/mqtt`.
    pub fn to_json(&self) -> Value {
        self.stats.to_json(self.embedded, self.upstream.clone())
    }

    /// The bound listeners (port 0 resolved).
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.stats.listeners.lock().clone()
    }
}

/// `GET /api/mqtt` for a running transport.
pub fn status(handle: &MqttHandle) -> Value {
    handle.status.to_json()
}

/// `GET /api/mqtt` when MQTT is off.
pub fn status_off() -> Value {
    json!({
        "enabled": false,
        "embedded": {"enabled": false},
        "upstream": {"enabled": false, "state": UpstreamState::Off},
    })
}

/// The router's memory: every subscribed topic keeps at most
/// `subscriber_backlog` bytes, in four segments.
fn router_config(cfg: &MqttConfig) -> rumqttd::RouterConfig {
    let backlog = usize::try_from(cfg.limits.subscriber_backlog.0).unwrap_or(usize::MAX);
    rumqttd::RouterConfig {
        // Every device connection that subscribes holds a link, plus the
        // gateway's own.
        max_connections: cfg.limits.max_connections + 16,
        max_outgoing_packet_count: 256,
        max_segment_size: (backlog / 4).max(1024),
        max_segment_count: 4,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// Start the embedded broker and/or the upstream client. Listeners are bound
/// before this returns: a port in use is an error naming the port and its
/// configuration key.
pub async fn start(cfg: MqttConfig, handles: MqttHandles) -> Result<MqttHandle, MqttError> {
    let problems = cfg.static_problems();
    if !problems.is_empty() {
        return Err(MqttError::Config(problems));
    }
    let cfg = Arc::new(cfg);
    let stats = Arc::new(stats::Stats::default());

    // Bind first, so that nothing starts when an address is taken.
    let mut bound: Vec<(TcpListener, config::ListenerSpec)> = Vec::new();
    for spec in cfg.listeners() {
        let l = TcpListener::bind(spec.addr)
            .await
            .map_err(|e| MqttError::Bind(config::bind_message(spec.key, spec.addr, &e)))?;
        let addr: SocketAddr = l
            .local_addr()
            .map_err(|e| MqttError::Bind(config::bind_message(spec.key, spec.addr, &e)))?;
        stats.listeners.lock().push(ListenerInfo {
            key: spec.key,
            protocol: spec.protocol,
            tls: spec.tls,
            addr,
        });
        bound.push((l, spec));
    }
    let acceptor = if bound.iter().any(|(_, s)| s.tls) {
        Some(tls::listeners(&cfg.tls.cert, &cfg.tls.key)?)
    } else {
        None
    };

    let broker = if cfg.enabled {
        Some(broker::Broker::start(
            router_config(&cfg),
            cfg.limits.outbox_capacity + 1024,
        )?)
    } else {
        None
    };
    let upstream = if cfg.upstream.enabled {
        Some(upstream::clients(&cfg)?)
    } else {
        None
    };

    let topics = cfg.topics.clone();
    let outbox = Arc::new(outbox::Outbox::new(
        broker.as_ref().map(broker::Broker::publisher),
        upstream.as_ref().and_then(|u| u.results.clone()),
        topics,
        stats.clone(),
        handles.live.clone(),
    ));
    let shared = Arc::new(inbound::Shared::new(
        handles.clone(),
        cfg.clone(),
        stats.clone(),
        outbox.clone(),
    ));
    // Our own token, also cancelled when the whole gateway shuts down.
    let token = handles.shutdown.child_token();
    let tracker = TaskTracker::new();

    if let Some(t) = &acceptor {
        // A renewed certificate is served to new connections without a restart.
        tracker.spawn(t.clone().watch(TLS_RELOAD_INTERVAL, token.clone()));
    }
    if let Some(b) = &broker {
        let ctx = Arc::new(server::ServerCtx::new(
            shared.clone(),
            b.links(),
            token.clone(),
            tracker.clone(),
        ));
        for (listener, spec) in bound {
            let tls = if spec.tls { acceptor.clone() } else { None };
            let addr = listener.local_addr().ok();
            tracing::info!(
                key = spec.key,
                protocol = ?spec.protocol,
                tls = spec.tls,
                addr = ?addr,
                "MQTT listener started"
            );
            tracker.spawn(server::accept_loop(
                listener,
                spec.protocol,
                tls,
                ctx.clone(),
            ));
        }
    }
    tracker.spawn(outbox::follow(outbox, token.clone()));
    if let Some(clients) = upstream {
        upstream::spawn(shared.clone(), clients, token.clone(), &tracker);
    }

    let upstream_json = cfg.upstream.enabled.then(|| {
        json!({
            "host": cfg.upstream.host,
            "port": cfg.upstream.port,
            "tls": cfg.upstream.tls,
            "client_id": cfg.upstream.client_id,
            "persistent_session": cfg.upstream.persistent_session,
            "qos": cfg.upstream.qos,
            "filters": cfg.upstream_filters(),
        })
    });
    Ok(MqttHandle {
        status: MqttStatus {
            stats,
            embedded: cfg.enabled,
            upstream: upstream_json,
        },
        token,
        tracker,
        shared,
        broker,
    })
}

impl MqttHandle {
    /// The view for `GET /api/mqtt`.
    pub fn status(&self) -> MqttStatus {
        self.status.clone()
    }

    /// The bound listeners (port 0 resolved).
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.status.listeners()
    }

    /// Stop: no new connections or messages; what is in flight is stored and
    /// acknowledged (up to 10 s), then connections close (MQTT 5 clients get
    /// "server shutting down") and the upstream session is left on its
    /// broker. Call it before the ingest pipeline drains: it releases the
    /// transport's hold on the pipeline.
    pub async fn shutdown(self) {
        let MqttHandle {
            token,
            tracker,
            shared,
            broker,
            ..
        } = self;
        token.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "MQTT connections still busy after {SHUTDOWN_TIMEOUT:?}; closing anyway"
            );
        }
        drop(shared);
        if let Some(b) = broker {
            // The feeder ends once the last connection has let go of it.
            let joined = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(move || b.join()),
            )
            .await;
            if joined.is_err() {
                tracing::debug!("MQTT feeder still busy; leaving it");
            }
        }
        tracing::info!("MQTT transport stopped");
    }
}
