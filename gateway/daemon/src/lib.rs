//! The emotion gateway daemon: transports, durable buffer, ingest pipeline,
//! HTTP/WebSocket API, configuration.
//!
//! The binary (`emotion-gateway`) is a thin shell over [`app::start`].

pub mod api;
pub mod app;
pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod devices;
pub mod ingest;
pub mod live;
pub mod mqtt;
pub mod privacy;
pub mod readings;
pub mod state;
pub mod sync;
pub mod telemetry;

/// The durable buffer (its own crate, re-exported under its old path).
pub use emotion_buffer as buffer;
