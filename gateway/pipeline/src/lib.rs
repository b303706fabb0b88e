//! The gateway's ingest pipeline, shared by every transport (the HTTP and
//! WebSocket API, MQTT, serial, BLE) and owned by none of them.
//!
//! ```text
//! transport ─► readings (plugin) ─► ingest queue ─► writer thread (buffer, one flush per batch)
//!                                                      └─► analyzer thread ─► live feed, reply
//! ```
//!
//! - [`ingest`]: the queue into the buffer (group commit) and the analyzer;
//!   [`ingest::Ingest`] is the handle transports submit events to.
//! - [`readings`]: the one path from a raw reading through its plugin into the
//!   ingest queue, with a typed [`readings::ReadingOutcome`].
//! - [`live`]: analysis and alerts of every transport, for subscribers.
//! - [`telemetry`]: the counters `/health` and `/metrics` read.
//! - [`privacy`]: consent and erasure, checked before an event is stored.
//! - [`rate`]: the token bucket of rate limits per principal or device.
//! - [`checkpoint`]: the analyzer's checkpoint in the buffer, so a start
//!   replays only what came after it.
//!
//! It lives in its own crate so that a transport crate (such as
//! `emotion-mqtt`) can depend on it without depending on the daemon.

pub mod checkpoint;
pub mod ingest;
pub mod live;
pub mod privacy;
pub mod rate;
pub mod readings;
pub mod telemetry;
