//! The emotion gateway's plugin host.
//!
//! Plugins are WebAssembly components built against `sdk-plugin/wit/plugin.wit`
//! (package `emotion:plugin@0.2.0`, ABI 2) or, still loaded, its frozen
//! predecessor `sdk-plugin/wit-abi1/plugin.wit` (`emotion:plugin@0.1.0`,
//! ABI 1). The host:
//!
//! * loads every `NAME.wasm` of the plugins directory at start, checking the
//!   ABI stamp before compiling anything, and the ed25519 signature
//!   (`NAME.wasm.sig`) when `require_signatures` is on;
//! * keeps compiled code in an on-disk cache keyed by the component's SHA-256
//!   and the engine's compatibility hash, so start-up does not recompile;
//! * routes each reading to the plugin that handles its source, in batches
//!   (size and latency bounds), and turns the answers into
//!   [`emotion_core::EmotionEvent`]s stamped `name@version`;
//! * runs every call under an epoch deadline and a memory limit (both
//!   configurable per plugin); a call that traps, times out, exhausts memory
//!   or returns garbage fails its batch, its instance is replaced, and
//!   repeated failures quarantine the plugin with exponential back-off while
//!   every other plugin keeps serving;
//! * swaps in new versions at run time after a self-check, keeping the old
//!   version when the new one fails, with batches in flight finishing on the
//!   version they started with;
//! * lets a new version replacing a serving one first shadow it on live
//!   readings (a canary: both run, the serving one's answers are used), and
//!   promotes it only if its error and deadline-miss rates are no worse,
//!   rolling it back otherwise.
//!
//! ```no_run
//! use emotion_plugin_host::{HostConfig, PluginHost};
//! use emotion_core::reading::RawReading;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: HostConfig = toml::from_str(r#"dir = "./plugins""#)?;
//! let host = PluginHost::new(config, "edge-1")?;
//! let _watcher = host.watch(); // hot reload while it lives
//! let reading = RawReading::from_json_str(
//!     r#"{"user_id": "u1", "source": "text", "payload": {"text": "I am happy"}}"#,
//!     None,
//! )?;
//! for result in host.normalize(vec![reading]) {
//!     match result {
//!         Ok(Some(event)) => println!("{}", serde_json::to_string(&event)?),
//!         Ok(None) => println!("no emotion"),
//!         Err(e) => println!("error: {e}"),
//!     }
//! }
//! for plugin in host.status() {
//!     println!("{}", serde_json::to_string(&plugin)?);
//! }
//! # Ok(()) }
//! ```

pub mod abi;
mod batcher;
mod cache;
mod canary;
pub mod config;
mod convert;
mod error;
mod host;
mod runtime;
pub mod signing;
mod tester;
mod watch;
pub mod wit;

pub use abi::{
    ABI_1, ABI_2, ABI_SECTION, AbiError, CURRENT_ABI, MEMORY_SECTION, SUPPORTED_ABIS, Stamps,
    read_abi_version, read_stamps,
};
pub use batcher::PendingReading;
pub use canary::{CanaryState, CanaryStatus, CanaryVersion};
pub use config::{
    ByteSize, CanaryConfig, ConfigError, DeclaredMemoryError, Dur, HostConfig, Limits,
    MemoryLimitOrigin, PluginConfig, Profiler, QuarantineConfig,
};
pub use convert::{to_event, to_wit};
pub use error::{CallFailure, HostError, LoadError, ReadingError, ReadingResult};
pub use host::{
    Event, PluginHost, PluginState, PluginStats, PluginStatus, ReloadOutcome, ReloadReport,
};
pub use runtime::PluginInfo;
pub use signing::{
    KeyPair, SignError, SignatureError, TrustedKey, keygen, read_public_key, sign_file,
    signature_path,
};
pub use tester::{TestOptions, TestSummary, test_plugin};
pub use watch::Watcher;
