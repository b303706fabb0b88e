//! Errors of the plugin host, one enum per question a caller asks.
//!
//! Everything here is `Clone` and carries messages rather than foreign error
//! values, because the same failure is copied into every reading of a batch
//! and kept in the plugin's status.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use emotion_core::{EmotionEvent, Source};

use crate::abi::AbiError;
use crate::config::{ConfigError, DeclaredMemoryError};
use crate::signing::SignatureError;

/// One answer per reading: an event, nothing (the plugin saw no emotion), or
/// why not.
pub type ReadingResult = Result<Option<EmotionEvent>, ReadingError>;

/// The host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot read the plugins directory {path}: {source}")]
    PluginDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write: {0}")]
    Write(std::io::Error),
    #[error("plugin {path} was refused: {error}")]
    Load { path: PathBuf, error: LoadError },
}

/// Why a component was refused (at start, or as a replacement).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the component: {0}")]
    Read(String),
    #[error("signature refused: {0}")]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Abi(#[from] AbiError),
    #[error("{0}")]
    DeclaredMemory(#[from] DeclaredMemoryError),
    #[error(
        "built for plugin ABI version {found}, this gateway supports versions {}",
        versions(supported)
    )]
    AbiMismatch { found: u32, supported: Vec<u32> },
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("cannot be linked: {0}")]
    Link(String),
    #[error("does not export the plugin interface of its ABI (emotion:plugin/plugin): {0}")]
    Exports(String),
    #[error("cannot be instantiated: {0}")]
    Instantiate(CallFailure),
    #[error("`describe` failed: {0}")]
    Describe(CallFailure),
    #[error("`describe` returned an unusable plugin-info: {0}")]
    BadInfo(String),
    #[error("self-check (normalize of an empty batch) failed: {0}")]
    SelfCheck(String),
    #[error(
        "the replacement describes itself as `{new}`, but `{old}` is serving under this file name; a different plugin needs its own file"
    )]
    NameChanged { old: String, new: String },
    #[error("source `{source_name}` is already handled by plugin `{other}`")]
    SourceConflict { source_name: Source, other: String },
    #[error("its canary could not start: {0}")]
    Canary(String),
}

/// Why one call into a plugin failed as a whole. Every reading of the batch
/// gets an error, the instance is discarded, and the failure counts towards
/// quarantine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    #[error("exceeded its deadline of {}ms and was interrupted", .0.as_millis())]
    Timeout(Duration),
    #[error("exceeded its memory limit of {limit} bytes (it asked for {requested})")]
    MemoryExhausted { limit: u64, requested: u64 },
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {got} results for {expected} readings")]
    WrongCount { expected: usize, got: usize },
    #[error("returned garbage for reading {index}: {message}")]
    Garbage { index: usize, message: String },
    #[error("a fresh instance could not be created: {0}")]
    Instantiate(String),
}

/// Why a reading got no event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadingError {
    #[error("no plugin handles source `{0}`")]
    NoPlugin(Source),
    #[error("plugin `{plugin}` is quarantined until {}: {reason}", until.to_rfc3339())]
    Quarantined {
        plugin: String,
        until: DateTime<Utc>,
        reason: String,
    },
    #[error("plugin `{plugin}` is not loaded: {reason}")]
    Unavailable { plugin: String, reason: String },
    #[error("plugin `{plugin}` failed on this batch: {failure}")]
    PluginFailed {
        plugin: String,
        failure: CallFailure,
    },
    #[error("plugin `{plugin}` could not normalize this reading: {message}")]
    Plugin { plugin: String, message: String },
    #[error("plugin `{plugin}` returned an unusable emotion: {message}")]
    InvalidEmotion { plugin: String, message: String },
    #[error("the plugin host is overloaded: {0} readings already wait for source `{1}`")]
    Overloaded(usize, Source),
    #[error("the plugin host has shut down")]
    ShutDown,
}

impl ReadingError {
    /// The plugin this error is about, if any.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            ReadingError::Quarantined { plugin, .. }
            | ReadingError::Unavailable { plugin, .. }
            | ReadingError::PluginFailed { plugin, .. }
            | ReadingError::Plugin { plugin, .. }
            | ReadingError::InvalidEmotion { plugin, .. } => Some(plugin),
            ReadingError::NoPlugin(_) | ReadingError::Overloaded(..) | ReadingError::ShutDown => {
                None
            }
        }
    }

    /// A short machine-readable kind, for JSON replies.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadingError::NoPlugin(_) => "no_plugin",
            ReadingError::Quarantined { .. } => "plugin_quarantined",
            ReadingError::Unavailable { .. } => "plugin_unavailable",
            ReadingError::PluginFailed { .. } => "plugin_failed",
            ReadingError::Plugin { .. } => "plugin_error",
            ReadingError::InvalidEmotion { .. } => "invalid_emotion",
            ReadingError::Overloaded(..) => "overloaded",
            ReadingError::ShutDown => "shut_down",
        }
    }
}

/// `1, 2` for the ABI versions a host supports.
fn versions(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}
