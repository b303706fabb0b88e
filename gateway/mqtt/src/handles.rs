//! [`MqttHandles`]: everything the transport is given, in a file of its own
//! so that the transport's modules depend on it and not on the crate root.

use std::sync::Arc;
use std::time::Duration;

use emotion_pipeline::ingest::Ingest;
use emotion_pipeline::live::Live;
use emotion_pipeline::readings::Readings;
use emotion_pipeline::telemetry::Counters;
use tokio_util::sync::CancellationToken;

/// What the MQTT transport is given: nothing else of the gateway.
#[derive(Debug, Clone)]
pub struct MqttHandles {
    /// Emotion events go straight into the ingest queue.
    pub ingest: Ingest,
    /// Raw readings go through their plugin first.
    pub readings: Readings,
    /// Rejections and open connections, for `/metrics`.
    pub counters: Arc<Counters>,
    /// Analysis and alerts of every transport, published to subscribers.
    pub live: Arc<Live>,
    /// Stamped on the events this transport validates.
    pub gateway_id: String,
    /// `validation.confidence`: events' confidence must lie in their
    /// source's documented range.
    pub confidence_in_source_range: bool,
    /// `analyzer.session_idle`: a device's implicit session ends after this
    /// long without messages.
    pub session_idle: Duration,
    /// Cancelled when the gateway shuts down.
    pub shutdown: CancellationToken,
}
