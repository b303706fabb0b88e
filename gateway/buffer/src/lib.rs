//! The durable local buffer: every accepted event is written here before it is
//! acknowledged, so the gateway keeps working offline and loses nothing on a
//! crash, and what damage does destroy is counted exactly.
//!
//! - Events are stored in group-commit batches (one value per batch, keyed by
//!   a sequence number that is never reused), each a checksummed frame
//!   (`record.rs`).
//! - A separately fsynced ledger (`ledger.rs`) records what was acknowledged,
//!   so "acknowledged − recoverable" is an exact number after any damage.
//! - Lookups by user and by session go through postings on disk; only the
//!   postings of the last few thousand batches and a fixed-size duplicate
//!   window (`dedup.rs`) are in RAM, so memory and start-up time do not grow
//!   with the history.
//! - A store that cannot be opened (an error or a panic of the engine) or that
//!   lost acknowledged batches is moved aside and rebuilt from every frame
//!   whose checksum verifies (`salvage.rs`).
//!
//! [`SledStore`] is the store on disk; [`MemoryStore`] keeps everything in RAM
//! for the tests of the layers above.

mod dedup;
mod fsperm;
pub mod ledger;
mod memory;
pub mod record;
pub mod salvage;
mod sled_store;
#[doc(hidden)]
pub mod testing;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use emotion_core::EmotionEvent;
use serde::Serialize;
use uuid::Uuid;

pub use dedup::DedupWindow;
pub use memory::MemoryStore;
pub use record::{Batch, RecordError, Slot};
pub use sled_store::{OpenReport, SledStore, StoreOptions};

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
    #[error("the acknowledgement ledger: {0}")]
    Ledger(std::io::Error),
    #[error(
        "{path} is in use by another process (is another gateway running with this storage.path?)"
    )]
    InUse { path: String },
    #[error("the storage engine failed: {0}")]
    Panicked(String),
}

/// Position of a stored event: its batch and its index within the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EventPos {
    pub batch: u64,
    pub index: u32,
}

/// What a scan found.
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
    /// Batches below this number are durable and may be shipped.
    pub durable_batches: u64,
    /// Ids held by the duplicate window.
    pub dedup_window: u64,
}

/// What damage did, for `/health`, `/metrics`, the log and the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DamageReport {
    /// Acknowledged events that can no longer be read, over every repair and
    /// scrub of this store's life (kept across restarts).
    pub acknowledged_lost: u64,
    /// Batches found unreadable.
    pub corrupt_batches: u64,
    /// Repairs made, newest last.
    pub repairs: Vec<RepairReport>,
    /// The ledger could not be read in full: losses in the newest batches may
    /// be undercounted.
    pub ledger_damaged: bool,
    /// The background scrub: `None` until it has run once since start.
    pub last_scrub: Option<ScrubReport>,
}

/// One repair: the damaged store moved aside and rebuilt from its frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RepairReport {
    pub at: DateTime<Utc>,
    /// Why the store was repaired.
    pub reason: String,
    /// Where the damaged store was moved.
    pub moved_to: String,
    pub salvaged_batches: u64,
    pub salvaged_events: u64,
    /// Acknowledged events that were not recovered.
    pub acknowledged_lost: u64,
}

/// What a scrub (a read of every batch) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScrubReport {
    pub at: DateTime<Utc>,
    pub batches: u64,
    pub events: u64,
    pub corrupt_batches: u64,
    /// Acknowledged events in unreadable or missing batches.
    pub acknowledged_lost: u64,
    /// Set when damage was found: the next start repairs the store.
    pub repair_scheduled: bool,
    /// False when the scrub was stopped (shutdown) before the end.
    pub complete: bool,
}

/// Filter for per-user event listings. Times bound the event's `timestamp`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: usize,
}

impl EventQuery {
    /// Is `e` an event of `user_id` inside the query's time bounds?
    pub fn matches(&self, user_id: &str, e: &EmotionEvent) -> bool {
        e.user_id == user_id
            && self.from.is_none_or(|f| e.timestamp >= f)
            && self.to.is_none_or(|t| e.timestamp <= t)
    }
}

/// A test-only fault: stop the writer between inserting a batch and making it
/// durable, so a test can kill the process at exactly that point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StallBeforeFlush {
    /// Stall on this batch (0: the first batch written after open).
    pub after_batches: u64,
    /// Created when the writer stalls, so the test knows when to kill.
    pub marker: PathBuf,
}

/// The buffer's contract. Implementations are synchronous: the group-commit
/// writer runs on its own thread, and readers are short.
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Store `events` as one batch and make it durable before returning.
    /// Events whose `event_id` is in the duplicate window are skipped; the
    /// returned vector says, per input event, whether it was newly stored.
    fn append(&self, events: &[EmotionEvent]) -> Result<Vec<bool>, StoreError>;

    /// Is an event with this id in the duplicate window?
    fn contains(&self, event_id: &Uuid) -> bool;

    /// A user's events in storage order, filtered by `q`, at most `q.limit`.
    fn user_events(&self, user_id: &str, q: &EventQuery) -> Result<Vec<EmotionEvent>, StoreError>;

    /// A session's events in storage order.
    fn session_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError>;

    /// Visit every stored event of batches from `from_batch` on, in storage
    /// order (replay after an analyzer checkpoint; rebuilds).
    fn scan(
        &self,
        from_batch: u64,
        visit: &mut dyn FnMut(EventPos, &EmotionEvent),
    ) -> Result<ScanReport, StoreError>;

    /// Durable events after position `after` (exclusive; `None`: from the
    /// start), in storage order. Never returns a batch at or past
    /// [`EventStore::durable_batches`]. Reading stops at the end of the batch
    /// in which `max` is reached, so a result never splits a batch needlessly.
    fn events_after(
        &self,
        after: Option<EventPos>,
        max: usize,
    ) -> Result<Vec<(EventPos, EmotionEvent)>, StoreError>;

    /// How many stored slots lie after `after` (the sync lag; erased slots
    /// are counted until they are passed).
    fn count_after(&self, after: Option<EventPos>) -> Result<u64, StoreError>;

    /// The durable high-water mark: every batch numbered below it is durable
    /// and acknowledged; it only moves after the flush.
    fn durable_batches(&self) -> u64;

    /// Erase every event of `user_id`. Each becomes a tombstone that keeps the
    /// positions of other events. Returns the number erased.
    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Delete whole batches whose newest event was ingested before `cutoff`,
    /// oldest first, but none at or after `keep_from` (events not yet
    /// synced). Returns the number of events removed.
    fn purge_ingested_before(
        &self,
        cutoff: DateTime<Utc>,
        keep_from: Option<EventPos>,
    ) -> Result<u64, StoreError>;

    /// Small durable key-value records beside the events (consents, erasure
    /// requests, pairings, checkpoints): written and flushed at once.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn remove_meta(&self, key: &str) -> Result<(), StoreError>;
    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// At most `limit` records of `prefix` whose keys sort after `after`
    /// (all of them when `None`), in key order: a page of an append-only
    /// log such as the audit trail.
    fn meta_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .meta_with_prefix(prefix)?
            .into_iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .collect())
    }

    fn stats(&self) -> StoreStats;

    /// Damage found at open, by repairs and by scrubs.
    fn damage(&self) -> DamageReport;

    /// Read every batch and check it against its neighbours and the ledger;
    /// count what is unreadable or missing. Slow: run it in the background.
    /// `stop` is polled between batches; a stopped scrub reports
    /// `complete: false` and changes nothing.
    fn scrub(&self, stop: &dyn Fn() -> bool) -> Result<ScrubReport, StoreError>;

    /// Flush everything (shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Periodic upkeep of the engine (the sled store reopens it to bound the
    /// next start: see `SledStore::compact_log`). Blocks writers meanwhile.
    fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
