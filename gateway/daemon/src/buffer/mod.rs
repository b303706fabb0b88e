//! The durable local buffer: every accepted event is written here before it is
//! acknowledged, so the gateway keeps working offline and loses nothing on a
//! crash.
//!
//! Events are stored in group-commit batches (one value per batch, keyed by a
//! sequence number), which keeps both the write cost and sled's space overhead
//! low. Lookups by user and session go through in-memory indexes that are
//! rebuilt by the start-up scan (the same scan that replays history into the
//! analyzer).

mod record;
mod sled_store;

use chrono::{DateTime, Utc};
use emotion_core::EmotionEvent;
use serde::Serialize;
use uuid::Uuid;

pub use record::{Batch, RecordError, Slot, decode as decode_record, encode as encode_record};
pub use sled_store::SledStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("encoding a batch: {0}")]
    Encode(#[from] postcard::Error),
    #[error("batch {seq} is unreadable: {source}")]
    Corrupt { seq: u64, source: RecordError },
    #[error("storage directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is in use by another process (is another gateway running with this storage.path?)"
    )]
    InUse { path: String },
}

/// Position of a stored event: its batch and its index within the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EventPos {
    pub batch: u64,
    pub index: u32,
}

/// What a start-up scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    pub batches: u64,
    pub events: u64,
    /// Batches whose checksum or encoding failed; their events are skipped.
    pub corrupt_batches: u64,
}

/// Sizes for `/health` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub events: u64,
    pub batches: u64,
    pub bytes_on_disk: u64,
    pub corrupt_batches_skipped: u64,
}

/// Filter for per-user event listings. Times bound the event's `timestamp`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// The buffer's contract. Implementations are synchronous: the group-commit
/// writer runs on its own thread, and readers are short.
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Store `events` as one batch and make it durable before returning.
    /// Events whose `event_id` is already stored are skipped; the returned
    /// vector says, per input event, whether it was newly stored.
    fn append(&self, events: &[EmotionEvent]) -> Result<Vec<bool>, StoreError>;

    /// Is an event with this id stored?
    fn contains(&self, event_id: &Uuid) -> bool;

    /// A user's events in storage order, filtered by `q`, at most `q.limit`.
    fn user_events(&self, user_id: &str, q: &EventQuery) -> Result<Vec<EmotionEvent>, StoreError>;

    /// A session's events in storage order.
    fn session_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError>;

    /// Visit every stored event in storage order (start-up replay).
    fn scan(
        &self,
        visit: &mut dyn FnMut(EventPos, &EmotionEvent),
    ) -> Result<ScanReport, StoreError>;

    /// Stored events after position `after` (exclusive; `None`: from the
    /// start), in storage order. Reading stops at the end of the batch in which
    /// `max` is reached, so a result never splits a batch needlessly.
    fn events_after(
        &self,
        after: Option<EventPos>,
        max: usize,
    ) -> Result<Vec<(EventPos, EmotionEvent)>, StoreError>;

    /// How many stored events lie after `after` (the sync lag).
    fn count_after(&self, after: Option<EventPos>) -> Result<u64, StoreError>;

    /// Erase every event of `user_id`. Each becomes a tombstone that keeps its
    /// id (so a re-sent copy is refused) and the positions of other events.
    /// Returns the number erased.
    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Delete whole batches whose newest event was ingested before `cutoff`,
    /// but none at or after `keep_from` (events not yet synced). Returns the
    /// number of events removed.
    fn purge_ingested_before(
        &self,
        cutoff: DateTime<Utc>,
        keep_from: Option<EventPos>,
    ) -> Result<u64, StoreError>;

    /// Small durable key-value records beside the events (consents, erasure
    /// requests, pairings): written and flushed at once.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn remove_meta(&self, key: &str) -> Result<(), StoreError>;
    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    fn stats(&self) -> StoreStats;

    /// Flush everything (shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{Duration, TimeZone};
    use emotion_core::{EmotionLabel, Json, Source};

    use super::*;

    pub(crate) fn sample_events(n: usize, user: &str) -> Vec<EmotionEvent> {
        let t0 = Utc
            .with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
            .single()
            .expect("valid");
        (0..n)
            .map(|i| EmotionEvent {
                event_id: Uuid::now_v7(),
                user_id: user.into(),
                session_id: format!("s-{user}"),
                source: Source::ALL[i % 8],
                emotion_label: EmotionLabel::Joy,
                valence: 0.5,
                arousal: 0.6,
                confidence: Some(0.9),
                timestamp: t0 + Duration::seconds(i as i64),
                ingested_at: t0 + Duration::seconds(i as i64),
                gateway_id: "gw".into(),
                producer: "client".into(),
                context: Some(Json(serde_json::json!({"i": i}))),
                biometrics: None,
                location: None,
                device_info: None,
                raw_data: None,
            })
            .collect()
    }
}
