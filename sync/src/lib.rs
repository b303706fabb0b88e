//! The central-database contract of the emotion gateway: schema migrations,
//! row types, the exactly-once writer, and the retry helper the daemon's sync
//! driver uses. See `sync/README.md` for the schema and the guarantees.
//!
//! ```no_run
//! # async fn demo(events: Vec<emotion_core::EmotionEvent>) -> Result<(), emotion_sync::SyncError> {
//! use emotion_sync::{Cursor, SyncClient};
//! let mut db = SyncClient::connect("postgres://postgres@127.0.0.1:5432/emotion").await?;
//! db.migrate().await?;
//! // Resume where the central database says this gateway stopped.
//! let from = db.read_cursor("gw-1").await?;
//! // … read the buffer from `from` on, then ship one batch with its end position:
//! db.write_events("gw-1", &events, Cursor::new(42, 0)).await?;
//! # let _ = from; Ok(()) }
//! ```

mod client;
pub mod config;
pub mod duration;
mod error;
mod isolate;
pub mod migrate;
pub mod retry;
mod rows;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{ClientOptions, SyncClient};
pub use config::SyncConfig;
pub use error::{Result, SyncError};
pub use isolate::{IsolatedOutcome, Refused};
pub use migrate::{MIGRATIONS, Migration, MigrationReport};
pub use retry::{Backoff, RetryConfig, retry, retry_if};
pub use rows::{
    AuditRow, Consent, ConsentOutcome, ConsentPurpose, Cursor, ErasureOutcome, GatewaySyncState,
    SummaryOutcome, UnknownPurpose, WriteOutcome,
};
