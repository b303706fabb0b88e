//! The plugin host's configuration: the `[plugins]` section of the gateway's
//! configuration file.
//!
//! ```toml
//! [plugins]
//! dir = "./plugins"                 # every *.wasm here is loaded at start
//! cache_dir = "./data/plugin-cache" # precompiled components (default: <dir>/.cache)
//! require_signatures = true
//! trusted_keys = ["Zm9v…base64 ed25519 public key…"]
//! deadline = "100ms"                # CPU budget of one call (one batch)
//! memory_limit = "64MiB"            # linear memory of one instance (default)
//! max_declared_memory = "1GiB"      # most a plugin may declare it needs
//! batch_max_size = 100
//! batch_max_latency = "5ms"
//! queue_capacity = 10000
//! watch_interval = "1s"             # "0s" disables the directory poller
//! profiler = "none"                 # "perfmap": name plugin code for `perf`
//!
//! [plugins.quarantine]
//! after_failures = 3
//! initial_backoff = "1s"
//! max_backoff = "5m"
//!
//! [plugins.canary]                  # a replacement shadows the serving version first
//! enabled = true
//! min_readings = 500
//! max_duration = "5m"
//! margin = 0.01
//!
//! [plugins.sources]                 # which plugin reads a source (default:
//! text = "text-encoder"             # the first claimant by name; see below)
//!
//! [plugins.workers]                 # batch threads per source (default 1)
//! text = 2                          # two batches of `text` at once
//!
//! [plugins.per_plugin.lexicon]      # keyed by file name without .wasm
//! deadline = "20ms"
//! memory_limit = "16MiB"
//! settings = { language = "en" }    # handed to the plugin as JSON
//!
//! [plugins.per_plugin.text-encoder]
//! deadline = "30s"
//! batch_max_size = 8                # smaller calls than the host's batches
//! ```
//!
//! Every key is optional; unknown keys are errors. [`HostConfig::validate`]
//! reports every problem at once.
//!
//! **Sources.** A source listed under `sources` is read by the named plugin
//! only; other loaded plugins claiming it stay loaded but get none of its
//! readings. When the named plugin is not serving (no such file, refused,
//! removed) the source has no route and its readings get the `no_plugin`
//! error: the host never falls back to another plugin, because the operator
//! chose this one (a fallback would change the answers silently). A source
//! not listed goes to the first loaded plugin claiming it, by file name, and
//! a later claimant is refused.
//!
//! **Workers.** Each source's batches run on their own thread, one batch at
//! a time, so a slow plugin holds up only its own sources. `workers.SOURCE =
//! N` runs up to N batches of that source at once, each on its own instance
//! of the plugin (and its own linear memory): for a plugin whose batches take
//! seconds (the text encoder) on a machine with cores to spare. Readings of
//! that source may then finish out of arrival order, by at most the batches
//! in flight; each keeps its own timestamp.
//!
//! **Memory.** A plugin's memory limit is `per_plugin.NAME.memory_limit` when
//! set (the operator's override wins), else the need the plugin declares in
//! its component (`export_plugin!(P, memory = "256MiB")`, see
//! [`crate::abi`]), else `memory_limit`. A declared need above
//! `max_declared_memory` refuses the plugin (unless overridden).

use std::collections::BTreeMap;

use std::path::PathBuf;
use std::time::Duration;

use emotion_core::Source;
use serde::{Deserialize, Serialize};

pub use emotion_core::units::{ByteSize, Dur};

use crate::signing::TrustedKey;

/// Configuration of a [`PluginHost`](crate::PluginHost).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Directory of plugin components (`NAME.wasm`, with `NAME.wasm.sig` beside
    /// it when signed). A plugin's name in the host is its file name without
    /// `.wasm`.
    pub dir: PathBuf,
    /// Where precompiled components are kept; `None`: `<dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
    /// Refuse components without a valid signature from a trusted key.
    pub require_signatures: bool,
    /// Trusted ed25519 public keys, base64 (as `keygen` writes them).
    pub trusted_keys: Vec<String>,
    /// Wall-clock budget of one call into a plugin (one batch).
    pub deadline: Dur,
    /// Most linear memory one plugin instance may use, for plugins that
    /// declare no need of their own.
    pub memory_limit: ByteSize,
    /// The largest memory need a plugin may declare; one declaring more is
    /// refused (a `per_plugin` memory_limit overrides the declaration).
    pub max_declared_memory: ByteSize,
    /// Most readings in one call.
    pub batch_max_size: usize,
    /// Longest a reading waits for its batch to fill before the batch is sent.
    pub batch_max_latency: Dur,
    /// Readings waiting per source before `submit` answers `Overloaded`.
    pub queue_capacity: usize,
    /// How often the directory is polled for new, changed or removed
    /// components; `0s` turns hot reloading off.
    pub watch_interval: Dur,
    /// Granularity of deadlines: the epoch ticker's period.
    pub epoch_tick: Dur,
    /// Whether plugins' compiled code is named for a profiler.
    pub profiler: Profiler,
    pub quarantine: QuarantineConfig,
    pub canary: CanaryConfig,
    /// Which plugin (file name without `.wasm`) reads each source, keyed by
    /// source name (`text`, `voice`, …). Sources not listed: first claimant.
    pub sources: BTreeMap<String, String>,
    /// Batch threads per source, keyed by source name (1 to
    /// [`MAX_WORKERS`]); sources not listed: 1.
    pub workers: BTreeMap<String, usize>,
    /// Per-plugin limits and settings, keyed by plugin (file) name.
    pub per_plugin: BTreeMap<String, PluginConfig>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            dir: PathBuf::from("./plugins"),
            cache_dir: None,
            require_signatures: false,
            trusted_keys: Vec::new(),
            deadline: Dur(Duration::from_millis(100)),
            memory_limit: ByteSize(64 << 20),
            max_declared_memory: ByteSize(DEFAULT_MAX_DECLARED_MEMORY),
            batch_max_size: 100,
            batch_max_latency: Dur(Duration::from_millis(5)),
            queue_capacity: 10_000,
            watch_interval: Dur(Duration::from_secs(1)),
            epoch_tick: Dur(Duration::from_millis(5)),
            profiler: Profiler::None,
            quarantine: QuarantineConfig::default(),
            canary: CanaryConfig::default(),
            sources: BTreeMap::new(),
            workers: BTreeMap::new(),
            per_plugin: BTreeMap::new(),
        }
    }
}

/// Naming plugins' compiled code for a sampling profiler. Off by default:
/// without it `perf` shows a plugin's whole run as anonymous JIT addresses,
/// so a vendor cannot tell their own functions from the ABI glue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profiler {
    #[default]
    None,
    /// Append each compiled function's address range and name to
    /// `/tmp/perf-<pid>.map`, which `perf report` reads (Linux).
    PerfMap,
}

/// When a failing plugin is taken out of service, and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Consecutive failed calls (trap, timeout, memory, garbage) before the
    /// plugin is quarantined. After a quarantine ends, one more failure puts it
    /// back, for twice as long.
    pub after_failures: u32,
    pub initial_backoff: Dur,
    pub max_backoff: Dur,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            after_failures: 3,
            initial_backoff: Dur(Duration::from_secs(1)),
            max_backoff: Dur(Duration::from_secs(300)),
        }
    }
}

/// How a replacement version earns its place: it first shadows the serving
/// version on live readings (both run, the serving one's answers are used)
/// and is promoted only if it fails no more often, or rolled back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryConfig {
    /// Off: a replacement that loads replaces the serving version at once.
    pub enabled: bool,
    /// Readings both versions must have run before the rates are compared.
    /// 500 keeps the decision from hanging on chance: one failed batch of a
    /// few readings is not a verdict, a failure on 1 % of readings shows.
    pub min_readings: u64,
    /// Longest a candidate shadows. If fewer than `min_readings` were
    /// compared by then, it is promoted only if it ran at least
    /// [`MIN_READINGS_AT_TIME_LIMIT`] readings with no more errors and no more
    /// deadline misses than the serving version had on them, and otherwise
    /// rolled back: too little evidence keeps what works.
    pub max_duration: Dur,
    /// How much worse (as a share of readings, 0.01 = one percentage point)
    /// the candidate's error rate and its deadline-miss rate may each be
    /// than the serving version's on the same readings.
    pub margin: f64,
}

/// Compared readings a candidate needs to be promoted when `max_duration`
/// ends before `min_readings` were compared (and then it must not have
/// failed more often than the serving version at all): a handful of clean
/// readings, fewer would be no evidence.
pub const MIN_READINGS_AT_TIME_LIMIT: u64 = 10;

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            enabled: true,
            min_readings: 500,
            max_duration: Dur(Duration::from_secs(300)),
            margin: 0.01,
        }
    }
}

/// Overrides for one plugin.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    pub deadline: Option<Dur>,
    pub memory_limit: Option<ByteSize>,
    /// At most this many readings per call to this plugin. The host's
    /// `batch_max_size` still bounds every batch; this one only makes a
    /// plugin's calls smaller, for a plugin slow per reading (a sentence
    /// encoder reading long texts) whose full batch would not fit its
    /// deadline.
    pub batch_max_size: Option<usize>,
    /// The plugin's settings, handed to it as JSON by `host.settings()`.
    pub settings: Option<serde_json::Value>,
}

/// The limits one plugin runs under, after defaults and overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_limit: u64,
}

/// Where a plugin's memory limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryLimitOrigin {
    /// `per_plugin.NAME.memory_limit`.
    Configured,
    /// The need the component declares.
    Declared,
    /// The host's `memory_limit`.
    Default,
}

/// Why a plugin's declared memory need was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclaredMemoryError {
    #[error(
        "it declares a memory need of {declared}, more than max_declared_memory ({ceiling}): raise max_declared_memory, or set per_plugin.{name}.memory_limit"
    )]
    AboveCeiling {
        name: String,
        declared: ByteSize,
        ceiling: ByteSize,
    },
    #[error("it declares a memory need of {0}, less than the smallest limit (1MiB)")]
    BelowMinimum(ByteSize),
}

/// Default `max_declared_memory`: 1 GiB, a quarter of what wasm32 can address
/// and more than any plugin of this repository declares.
pub const DEFAULT_MAX_DECLARED_MEMORY: u64 = 1 << 30;

/// Every problem found in a [`HostConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin host configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

const MIN_DEADLINE: Duration = Duration::from_millis(1);
const MAX_DEADLINE: Duration = Duration::from_secs(60);
const MIN_MEMORY: u64 = 1 << 20;
/// wasm32 linear memory cannot exceed 4 GiB.
const MAX_MEMORY: u64 = 4 << 30;
const MAX_BATCH: usize = 100_000;

/// Most batch threads for one source: more than a gateway box has cores.
pub const MAX_WORKERS: usize = 64;

impl HostConfig {
    /// Check every value; returns the trusted keys parsed.
    pub fn validate(&self) -> Result<Vec<TrustedKey>, ConfigError> {
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        for (i, k) in self.trusted_keys.iter().enumerate() {
            match TrustedKey::parse(k) {
                Ok(key) => keys.push(key),
                Err(e) => problems.push(format!("trusted_keys[{i}]: {e}")),
            }
        }
        if self.require_signatures && self.trusted_keys.is_empty() {
            problems.push(
                "require_signatures = true but trusted_keys is empty: no plugin could load".into(),
            );
        }
        check_deadline("deadline", self.deadline.0, &mut problems);
        check_memory("memory_limit", self.memory_limit.0, &mut problems);
        check_memory(
            "max_declared_memory",
            self.max_declared_memory.0,
            &mut problems,
        );
        if !(1..=MAX_BATCH).contains(&self.batch_max_size) {
            problems.push(format!(
                "batch_max_size must be between 1 and {MAX_BATCH}, got {}",
                self.batch_max_size
            ));
        }
        if self.batch_max_latency.0 > Duration::from_secs(10) {
            problems.push(format!(
                "batch_max_latency must be at most 10s, got {}",
                self.batch_max_latency
            ));
        }
        if self.queue_capacity < self.batch_max_size {
            problems.push(format!(
                "queue_capacity ({}) must be at least batch_max_size ({})",
                self.queue_capacity, self.batch_max_size
            ));
        }
        if self.epoch_tick.0 < Duration::from_millis(1)
            || self.epoch_tick.0 > Duration::from_secs(1)
        {
            problems.push(format!(
                "epoch_tick must be between 1ms and 1s, got {}",
                self.epoch_tick
            ));
        }
        let q = &self.quarantine;
        if q.after_failures == 0 {
            problems.push("quarantine.after_failures must be at least 1".into());
        }
        if q.max_backoff.0 > Duration::from_secs(86_400) {
            problems.push(format!(
                "quarantine.max_backoff must be at most 1d, got {}",
                q.max_backoff
            ));
        }
        if q.initial_backoff.0.is_zero() || q.initial_backoff.0 > q.max_backoff.0 {
            problems.push(format!(
                "quarantine.initial_backoff ({}) must be positive and at most max_backoff ({})",
                q.initial_backoff, q.max_backoff
            ));
        }
        let c = &self.canary;
        if !(1..=10_000_000).contains(&c.min_readings) {
            problems.push(format!(
                "canary.min_readings must be between 1 and 10000000, got {}",
                c.min_readings
            ));
        }
        if c.max_duration.0 < Duration::from_secs(1)
            || c.max_duration.0 > Duration::from_secs(86_400)
        {
            problems.push(format!(
                "canary.max_duration must be between 1s and 1d, got {}",
                c.max_duration
            ));
        }
        if !(0.0..=1.0).contains(&c.margin) {
            problems.push(format!(
                "canary.margin must be between 0 and 1 (a share of readings), got {}",
                c.margin
            ));
        }
        for (source, plugin) in &self.sources {
            if source.parse::<Source>().is_err() {
                problems.push(format!(
                    "sources.{source}: unknown source (known: {})",
                    Source::ALL.map(Source::as_str).join(", ")
                ));
            }
            if let Err(m) = check_plugin_name(plugin) {
                problems.push(format!("sources.{source}: {m}"));
            }
        }
        for (source, &n) in &self.workers {
            if source.parse::<Source>().is_err() {
                problems.push(format!(
                    "workers.{source}: unknown source (known: {})",
                    Source::ALL.map(Source::as_str).join(", ")
                ));
            }
            if !(1..=MAX_WORKERS).contains(&n) {
                problems.push(format!(
                    "workers.{source} must be between 1 and {MAX_WORKERS}, got {n}"
                ));
            }
        }
        for (name, p) in &self.per_plugin {
            if let Err(m) = check_plugin_name(name) {
                problems.push(format!("per_plugin.{name}: {m}"));
            }
            if let Some(d) = p.deadline {
                check_deadline(&format!("per_plugin.{name}.deadline"), d.0, &mut problems);
            }
            if let Some(m) = p.memory_limit {
                check_memory(
                    &format!("per_plugin.{name}.memory_limit"),
                    m.0,
                    &mut problems,
                );
            }
            if let Some(b) = p.batch_max_size
                && !(1..=MAX_BATCH).contains(&b)
            {
                problems.push(format!(
                    "per_plugin.{name}.batch_max_size must be between 1 and {MAX_BATCH}, got {b}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(keys)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Batch threads of each source, by `Source::index` (1 unless `workers`
    /// says otherwise; unknown source names are refused by
    /// [`HostConfig::validate`]).
    pub fn workers_per_source(&self) -> [usize; 8] {
        let mut n = [1; 8];
        for (source, &w) in &self.workers {
            if let Ok(s) = source.parse::<Source>() {
                n[s.index()] = w.clamp(1, MAX_WORKERS);
            }
        }
        n
    }

    /// The plugin chosen for each source in `sources`, by `Source::index`
    /// (unknown source names are refused by [`HostConfig::validate`]).
    pub fn chosen_plugins(&self) -> [Option<String>; 8] {
        let mut chosen: [Option<String>; 8] = Default::default();
        for (source, plugin) in &self.sources {
            if let Ok(s) = source.parse::<Source>() {
                chosen[s.index()] = Some(plugin.clone());
            }
        }
        chosen
    }

    /// The limits of plugin `name` when its component declares
    /// `declared_memory` (bytes), and where the memory limit came from: the
    /// `per_plugin` override, else the declared need (at most
    /// `max_declared_memory`), else `memory_limit`.
    pub fn limits_for(
        &self,
        name: &str,
        declared_memory: Option<u64>,
    ) -> Result<(Limits, MemoryLimitOrigin), DeclaredMemoryError> {
        let mut limits = self.limits(name);
        let configured = self
            .per_plugin
            .get(name)
            .and_then(|p| p.memory_limit)
            .is_some();
        if configured {
            return Ok((limits, MemoryLimitOrigin::Configured));
        }
        let Some(declared) = declared_memory else {
            return Ok((limits, MemoryLimitOrigin::Default));
        };
        if declared > self.max_declared_memory.0 {
            return Err(DeclaredMemoryError::AboveCeiling {
                name: name.to_owned(),
                declared: ByteSize(declared),
                ceiling: self.max_declared_memory,
            });
        }
        if declared < MIN_MEMORY {
            return Err(DeclaredMemoryError::BelowMinimum(ByteSize(declared)));
        }
        limits.memory_limit = declared;
        Ok((limits, MemoryLimitOrigin::Declared))
    }

    /// The limits of plugin `name`, from the configuration alone (a
    /// component's declared need is applied by [`HostConfig::limits_for`]).
    pub fn limits(&self, name: &str) -> Limits {
        let p = self.per_plugin.get(name);
        Limits {
            deadline: p.and_then(|p| p.deadline).unwrap_or(self.deadline).0,
            memory_limit: p
                .and_then(|p| p.memory_limit)
                .unwrap_or(self.memory_limit)
                .0,
        }
    }

    /// Plugin `name`'s own `batch_max_size`, if set: the host splits what
    /// it hands that plugin into calls of at most this many readings.
    pub fn plugin_batch_max(&self, name: &str) -> Option<usize> {
        self.per_plugin
            .get(name)
            .and_then(|p| p.batch_max_size)
            .map(|b| b.max(1))
    }

    /// The most readings one call to plugin `name` gets from the batcher:
    /// its own `batch_max_size` if smaller than the host's, else the host's.
    pub fn batch_max_for(&self, name: &str) -> usize {
        let host = self.batch_max_size.max(1);
        self.per_plugin
            .get(name)
            .and_then(|p| p.batch_max_size)
            .map_or(host, |b| b.clamp(1, host))
    }

    /// The settings JSON of plugin `name` (`{}` when none).
    pub fn settings(&self, name: &str) -> String {
        self.per_plugin
            .get(name)
            .and_then(|p| p.settings.as_ref())
            .map_or_else(|| "{}".to_owned(), |v| v.to_string())
    }

    /// The cache directory in effect.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.dir.join(".cache"))
    }
}

fn check_deadline(field: &str, d: Duration, problems: &mut Vec<String>) {
    if !(MIN_DEADLINE..=MAX_DEADLINE).contains(&d) {
        problems.push(format!(
            "{field} must be between 1ms and 60s, got {}",
            Dur(d)
        ));
    }
}

fn check_memory(field: &str, bytes: u64, problems: &mut Vec<String>) {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        problems.push(format!(
            "{field} must be between 1MiB and 4GiB, got {}",
            ByteSize(bytes)
        ));
    }
}

/// Whether a file name (without `.wasm`) is acceptable as a plugin name.
pub(crate) fn check_plugin_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a plugin name must be 1–64 characters".into());
    }
    if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "plugin name `{name}` may contain only letters, digits, - _ . and not start with ."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses_and_validates() {
        let text = r#"
            dir = "/srv/plugins"
            cache_dir = "/var/cache/plugins"
            require_signatures = true
            trusted_keys = ["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
            deadline = "100ms"
            memory_limit = "64MiB"
            batch_max_size = 50
            batch_max_latency = "2ms"
            watch_interval = "0s"
            profiler = "perfmap"
            [quarantine]
            after_failures = 2
            initial_backoff = "500ms"
            max_backoff = "1m"
            [canary]
            enabled = true
            min_readings = 200
            max_duration = "2m"
            margin = 0.02
            [per_plugin.lexicon]
            deadline = "20ms"
            memory_limit = 16777216
            settings = { language = "en", weights = [1, 2] }
        "#;
        let c: HostConfig = toml::from_str(text).expect("parses");
        c.validate().expect("valid");
        assert_eq!(
            c.limits("lexicon"),
            Limits {
                deadline: Duration::from_millis(20),
                memory_limit: 16 << 20
            }
        );
        assert_eq!(
            c.limits("other"),
            Limits {
                deadline: Duration::from_millis(100),
                memory_limit: 64 << 20
            }
        );
        assert_eq!(
            c.settings("lexicon"),
            r#"{"language":"en","weights":[1,2]}"#
        );
        assert_eq!(c.settings("other"), "{}");
        assert_eq!(c.cache_dir(), PathBuf::from("/var/cache/plugins"));
        assert_eq!(c.profiler, Profiler::PerfMap);
        assert!(toml::from_str::<HostConfig>(r#"profiler = "vtune""#).is_err());
        assert_eq!(
            c.canary,
            CanaryConfig {
                enabled: true,
                min_readings: 200,
                max_duration: Dur(Duration::from_secs(120)),
                margin: 0.02
            }
        );
    }

    #[test]
    fn defaults_are_valid() {
        HostConfig::default().validate().expect("valid");
        let c: HostConfig = toml::from_str("").expect("empty is fine");
        assert_eq!(c, HostConfig::default());
        assert_eq!(c.cache_dir(), PathBuf::from("./plugins/.cache"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_not_panics() {
        assert!(toml::from_str::<HostConfig>("dirr = \"x\"").is_err());
        assert!(toml::from_str::<HostConfig>("[per_plugin.x]\ndeadlin = \"1s\"").is_err());
        assert!(toml::from_str::<HostConfig>("[canary]\nmin_reading = 5").is_err());
        assert!(toml::from_str::<HostConfig>("deadline = \"soon\"").is_err());
        assert!(toml::from_str::<HostConfig>("memory_limit = \"12 parsecs\"").is_err());
        let c: HostConfig = toml::from_str(
            r#"
            require_signatures = true
            deadline = "0ms"
            memory_limit = "5GiB"
            batch_max_size = 0
            trusted_keys = ["not base64!"]
            [quarantine]
            after_failures = 0
            max_backoff = "9999d"
            [canary]
            min_readings = 0
            max_duration = "10ms"
            margin = -0.5
            [per_plugin."../evil"]
            deadline = "2m"
            [per_plugin.slow]
            batch_max_size = 0
            "#,
        )
        .expect("parses");
        let e = c.validate().expect_err("invalid");
        let text = e.to_string();
        for needle in [
            "trusted_keys[0]",
            "deadline must be",
            "memory_limit must be",
            "batch_max_size",
            "after_failures",
            "max_backoff must be at most 1d",
            "canary.min_readings",
            "canary.max_duration",
            "canary.margin",
            "per_plugin.../evil",
            "per_plugin.../evil.deadline",
            "per_plugin.slow.batch_max_size must be between 1 and",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn a_plugin_batch_size_only_makes_its_calls_smaller() {
        let c: HostConfig = toml::from_str(
            r#"
            batch_max_size = 50
            [per_plugin.text-encoder]
            batch_max_size = 8
            [per_plugin.big]
            batch_max_size = 500
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.batch_max_for("text-encoder"), 8);
        assert_eq!(c.batch_max_for("big"), 50, "the host's size bounds it");
        assert_eq!(c.batch_max_for("other"), 50);
    }

    #[test]
    fn sources_choose_plugins_and_every_problem_is_reported() {
        let c: HostConfig = toml::from_str(
            r#"
            [sources]
            text = "text-encoder"
            voice = "voice"
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        let chosen = c.chosen_plugins();
        assert_eq!(
            chosen[Source::Text.index()].as_deref(),
            Some("text-encoder")
        );
        assert_eq!(chosen[Source::Voice.index()].as_deref(), Some("voice"));
        assert_eq!(chosen[Source::Facial.index()], None);

        let c: HostConfig = toml::from_str(
            r#"
            max_declared_memory = "8GiB"
            [sources]
            txt = "text"
            text = "../evil"
            emotions = ""
            "#,
        )
        .expect("parses");
        let text = c.validate().expect_err("invalid").to_string();
        for needle in [
            "max_declared_memory must be between 1MiB and 4GiB",
            "sources.txt: unknown source (known: text, voice",
            "sources.text: plugin name `../evil`",
            "sources.emotions: unknown source",
            "sources.emotions: a plugin name must be 1–64 characters",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        // A source table entry must name a plugin by a string.
        assert!(toml::from_str::<HostConfig>("[sources]\ntext = 3").is_err());
    }

    #[test]
    fn workers_are_per_source_and_bounded() {
        let c: HostConfig = toml::from_str("[workers]\ntext = 2\nvoice = 1").expect("parses");
        c.validate().expect("valid");
        let n = c.workers_per_source();
        assert_eq!((n[Source::Text.index()], n[Source::Voice.index()]), (2, 1));
        assert_eq!(n[Source::Facial.index()], 1, "unlisted: one");

        let c: HostConfig =
            toml::from_str("[workers]\ntext = 0\ntxt = 2\nvoice = 65").expect("parses");
        let text = c.validate().expect_err("invalid").to_string();
        for needle in [
            "workers.text must be between 1 and 64, got 0",
            "workers.txt: unknown source (known: text, voice",
            "workers.voice must be between 1 and 64, got 65",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(toml::from_str::<HostConfig>("[workers]\ntext = -1").is_err());
        assert!(toml::from_str::<HostConfig>("[workers]\ntext = \"2\"").is_err());
    }

    #[test]
    fn memory_limit_comes_from_override_then_declaration_then_default() {
        let c: HostConfig = toml::from_str(
            r#"
            memory_limit = "64MiB"
            max_declared_memory = "512MiB"
            [per_plugin.pinned]
            memory_limit = "32MiB"
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        let mem = |name: &str, declared: Option<u64>| {
            c.limits_for(name, declared)
                .map(|(l, origin)| (l.memory_limit, origin))
        };
        assert_eq!(
            mem("plain", None),
            Ok((64 << 20, MemoryLimitOrigin::Default))
        );
        assert_eq!(
            mem("plain", Some(200 << 20)),
            Ok((200 << 20, MemoryLimitOrigin::Declared))
        );
        // A declared need below the default is the limit too: it is the
        // plugin's own word.
        assert_eq!(
            mem("plain", Some(16 << 20)),
            Ok((16 << 20, MemoryLimitOrigin::Declared))
        );
        assert_eq!(
            mem("pinned", Some(200 << 20)),
            Ok((32 << 20, MemoryLimitOrigin::Configured))
        );
        // The override wins even over a need above the ceiling.
        assert_eq!(
            mem("pinned", Some(2 << 30)),
            Ok((32 << 20, MemoryLimitOrigin::Configured))
        );
        let e = mem("plain", Some(600 << 20)).expect_err("above the ceiling");
        assert_eq!(
            e.to_string(),
            "it declares a memory need of 600MiB, more than max_declared_memory (512MiB): raise max_declared_memory, or set per_plugin.plain.memory_limit"
        );
        assert_eq!(
            mem("plain", Some(4096)),
            Err(DeclaredMemoryError::BelowMinimum(ByteSize(4096)))
        );
        assert_eq!(HostConfig::default().max_declared_memory, ByteSize(1 << 30));
    }

    #[test]
    fn sizes_and_durations_round_trip() {
        for s in ["1KiB", "64MiB", "2GiB", "100B"] {
            assert_eq!(ByteSize::parse(s).expect(s).to_string(), s);
        }
        for s in ["5ms", "2s", "1500ms"] {
            assert_eq!(Dur::parse(s).expect(s).to_string(), s);
        }
        assert_eq!(Dur::parse("1m"), Ok(Dur(Duration::from_secs(60))));
        assert!(ByteSize::parse("99999999999999GiB").is_err());
    }
}
