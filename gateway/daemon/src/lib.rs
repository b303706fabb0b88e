//! The emotion gateway daemon: transports, durable buffer, ingest pipeline,
//! HTTP/WebSocket API, configuration.
//!
//! The binary (`emotion-gateway`) is a thin shell over [`app::start`].
//!
//! # Components
//!
//! [`app`] assembles the gateway; every component gets only the handles it
//! uses, never the whole [`state::AppState`] (which is the API layer's):
//!
//! - [`config`]: every configuration type, one submodule per section. It
//!   imports no other module of the daemon; modules import their section.
//! - [`ingest`]: the queue into the buffer (group commit) and the analyzer;
//!   [`ingest::Ingest`] is the handle transports submit events to.
//! - [`readings`]: the one path from a raw reading through its plugin into
//!   the ingest queue ([`readings::Readings::submit`], a typed
//!   [`readings::ReadingOutcome`]); `/ws/readings`, MQTT, serial and BLE use it.
//! - [`api`]: the HTTP/WebSocket API on [`state::AppState`]; [`api::router`]
//!   needs no socket.
//! - [`edge`]: the listener that serves the router: TLS, connection limits
//!   and timeouts before authentication, the connection's identity
//!   ([`edge::ConnInfo`]) on every request.
//! - [`mqtt`]: the embedded broker and upstream client (the `emotion-mqtt`
//!   crate, behind the default-on `mqtt` feature), built from
//!   [`config::MqttConfig`] and `mqtt::MqttHandles`.
//! - [`devices`]: serial ports and BLE, from `[[serial]]`/`[ble]` and
//!   [`devices::DeviceHandles`].
//! - [`sync`]: the central PostgreSQL sync, from `[sync]` and
//!   [`sync::SyncHandles`].
//! - [`risk`]: the periodic risk sweep, from `[risk_sweep]` and
//!   [`risk::RiskHandles`].
//! - [`live`], [`telemetry`], [`privacy`], [`checkpoint`]: the live feed,
//!   counters and `/metrics`, consent and erasure, analyzer checkpoints.
//!
//! [`ingest`], [`readings`], [`live`], [`telemetry`], [`privacy`] and
//! [`checkpoint`] are the `emotion-pipeline` crate, which the transports'
//! crates share; they are re-exported here under their old paths.
//!
//! # One event
//!
//! A WebSocket message is validated in `api/ws.rs` and enqueued on
//! [`ingest::Ingest`]; the writer thread appends it with the rest of its
//! batch and flushes once; the analyzer thread updates the user's state,
//! publishes to [`live::Live`] (dashboard, MQTT results) and answers the
//! sender, whose reply goes out in the connection's order. A raw reading
//! takes the same path after [`readings::Readings::submit`] has had its
//! plugin turn it into an event.
//!
//! # Testing
//!
//! [`app::in_memory`] builds the state over the in-memory store with no
//! socket or background task; `tests/` drives [`api::router`] with it
//! (`oneshot`, or a server on 127.0.0.1:0). The end-to-end tests through the
//! binary are in the `emotion-tests` crate.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod devices;
pub mod edge;
pub mod pseudonym;
pub mod risk;
pub mod state;
pub mod sync;

/// The ingest pipeline (its own crate, so that transport crates can use it),
/// re-exported under the daemon's old module paths.
pub use emotion_pipeline::{checkpoint, ingest, live, privacy, rate, readings, telemetry};

/// The MQTT transport (its own crate, behind the default-on `mqtt` feature).
#[cfg(feature = "mqtt")]
pub use emotion_mqtt as mqtt;
/// Without the `mqtt` feature: the types the daemon holds, uninhabited.
#[cfg(not(feature = "mqtt"))]
#[path = "mqtt_off.rs"]
pub mod mqtt;

/// The durable buffer (its own crate, re-exported under its old path).
pub use emotion_buffer as buffer;
