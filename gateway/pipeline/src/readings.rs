//! The one path from a raw reading to a stored event: the plugin for its
//! source turns it into an emotion event (or nothing), the ingest queue makes
//! that event durable and analyzes it. Every transport that carries readings
//! (`/ws/readings`, MQTT, serial, BLE) goes through [`Readings::submit`] and
//! maps the typed [`ReadingOutcome`] to its own reply or counters.

use std::future::Future;

use emotion_core::reading::RawReading;
use emotion_plugin_host::{PluginHost, ReadingError};
use uuid::Uuid;

use crate::ingest::{Accepted, Ingest, IngestError};
use crate::telemetry::Transport;

/// A cheap, cloneable handle: the plugin host and the ingest queue.
#[derive(Debug, Clone)]
pub struct Readings {
    plugins: PluginHost,
    ingest: Ingest,
}

/// What became of one reading.
#[derive(Debug)]
pub enum ReadingOutcome {
    /// The plugin's event went through the buffer and the analyzer (or its
    /// `event_id` was stored before: see [`Accepted::is_duplicate`]).
    Stored(Accepted),
    /// The plugin found no emotion to report; nothing was stored.
    NoEmotion,
    /// The plugin host refused or failed the reading.
    Plugin(ReadingError),
    /// The plugin made an event, but the ingest queue did not store it.
    Ingest(IngestError),
}

impl Readings {
    pub fn new(plugins: PluginHost, ingest: Ingest) -> Self {
        Readings { plugins, ingest }
    }

    /// The plugin host (for status pages).
    pub fn plugins(&self) -> &PluginHost {
        &self.plugins
    }

    /// Hand `reading` to its plugin now and return a future of its outcome.
    /// The hand-over happens before this returns, so a connection's readings
    /// reach the host in the order they arrived. `event_id`, when given,
    /// replaces the plugin's id: a redelivered message must become the same
    /// event (and be recognised as a duplicate).
    pub fn submit(
        &self,
        reading: RawReading,
        transport: Transport,
        event_id: Option<Uuid>,
    ) -> impl Future<Output = ReadingOutcome> + Send + 'static {
        let pending = self.plugins.submit(reading);
        let ingest = self.ingest.clone();
        async move {
            let mut event = match pending.await {
                Err(e) => return ReadingOutcome::Plugin(e),
                Ok(None) => return ReadingOutcome::NoEmotion,
                Ok(Some(event)) => event,
            };
            if let Some(id) = event_id {
                event.event_id = id;
            }
            match ingest.submit_via(event, transport).await {
                Ok(accepted) => ReadingOutcome::Stored(accepted),
                Err(e) => ReadingOutcome::Ingest(e),
            }
        }
    }
}
