//! The plugin host: the registry of plugins, routing by source, quarantine,
//! status, and reloading (hot swap).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use emotion_core::Source;
use emotion_core::reading::RawReading;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::batcher::{PendingReading, Queues, RunBatch};
use crate::cache::{Cache, hex};
use crate::canary::{Canary, CanaryState, CanaryStatus, Shadow, Verdict};
use crate::config::{HostConfig, MemoryLimitOrigin, QuarantineConfig, check_plugin_name};
use crate::convert;
use crate::error::{CallFailure, HostError, LoadError, ReadingError, ReadingResult};
use crate::runtime::{LimitsFrom, LoadRequest, LoadedPlugin, PluginInfo, Runtime};
use crate::signing::{SignatureError, TrustedKey, signature_path, verify};
use crate::wit;

/// Runs the plugins of one directory. Cheap to clone (a handle); the host
/// shuts down when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct PluginHost {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Itself, for the threads it starts (canaries) to hold weakly.
    me: Weak<Inner>,
    pub(crate) config: HostConfig,
    trusted: Vec<TrustedKey>,
    gateway_id: String,
    pub(crate) runtime: Arc<Runtime>,
    cache: Option<Cache>,
    registry: RwLock<Registry>,
    /// One reload at a time: a directory poll and an API call must not
    /// interleave their swaps.
    reload_lock: Mutex<()>,
    pub(crate) queues: Queues,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("dir", &self.config.dir)
            .field(
                "plugins",
                &self.registry.read().slots.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queues.close();
    }
}

struct Registry {
    /// By plugin name (the file name without `.wasm`).
    slots: BTreeMap<String, Arc<Slot>>,
    /// Which plugin handles each source, by `Source::index`.
    routes: [Option<Arc<Slot>>; 8],
    /// The plugin the configuration chooses for each source
    /// (`[plugins.sources]`), by `Source::index`.
    chosen: [Option<String>; 8],
}

impl Registry {
    fn new(config: &HostConfig) -> Self {
        Registry {
            slots: BTreeMap::new(),
            routes: Default::default(),
            chosen: config.chosen_plugins(),
        }
    }

    /// Routes follow the loaded versions. A source with a chosen plugin goes
    /// to it alone, and to nobody while it is not loaded (no fallback: the
    /// operator chose it). Elsewhere conflicts were refused before a version
    /// was installed, so the first claimant (in name order) wins only where
    /// two were loaded at start.
    fn rebuild_routes(&mut self) {
        let mut routes: [Option<Arc<Slot>>; 8] = Default::default();
        for slot in self.slots.values() {
            if let Some(p) = slot.current.read().as_ref() {
                for s in &p.info.sources {
                    let i = s.index();
                    if self.chosen[i].as_ref().is_some_and(|c| *c != slot.name) {
                        continue;
                    }
                    if routes[i].is_none() {
                        routes[i] = Some(slot.clone());
                    }
                }
            }
        }
        for source in Source::ALL {
            let i = source.index();
            let Some(chosen) = &self.chosen[i] else {
                continue;
            };
            match (&self.routes[i], &routes[i]) {
                (Some(_), None) => tracing::warn!(
                    plugin = %chosen,
                    "source `{source}` lost its plugin: `{chosen}`, chosen by [plugins.sources], no longer serves it (removed, or a version without it); its readings get `no_plugin` errors, no other plugin stands in"
                ),
                (None, Some(_)) => tracing::info!(
                    plugin = %chosen,
                    "source `{source}` is read by `{chosen}`, as [plugins.sources] chooses"
                ),
                _ => {}
            }
        }
        self.routes = routes;
    }

    /// The plugin other than `name` that handles `source`, if any, where
    /// that is a conflict: a source with a chosen plugin has none (the
    /// others load and serve it nothing).
    fn owner_other_than(&self, source: Source, name: &str) -> Option<String> {
        if self.chosen[source.index()].is_some() {
            return None;
        }
        self.routes[source.index()]
            .as_ref()
            .filter(|s| s.name != name)
            .map(|s| s.name.clone())
    }

    /// The sources routed to `slot` now.
    fn served_by(&self, slot: &Arc<Slot>) -> Vec<Source> {
        Source::ALL
            .into_iter()
            .filter(|s| {
                self.routes[s.index()]
                    .as_ref()
                    .is_some_and(|r| Arc::ptr_eq(r, slot))
            })
            .collect()
    }
}

/// One plugin name: its current version (if any) and its health.
struct Slot {
    name: String,
    path: PathBuf,
    current: RwLock<Option<Arc<LoadedPlugin>>>,
    state: Mutex<SlotState>,
    stats: Stats,
}

struct SlotState {
    /// Why there is no current version (only meaningful then).
    rejected: Option<String>,
    quarantine: Option<Quarantine>,
    consecutive_failures: u32,
    backoff: Duration,
    last_failure: Option<Event>,
    last_reload: Option<Event>,
    /// Hash of the bytes and signature last tried, so an unchanged (or an
    /// unchanged broken, or rolled back) file is not loaded again on every
    /// poll.
    attempted: Option<[u8; 32]>,
    /// The replacement shadowing the current version, while it does.
    shadow: Option<Arc<Shadow>>,
    /// How the last trial ended.
    last_canary: Option<CanaryStatus>,
}

struct Quarantine {
    until: Instant,
    until_utc: DateTime<Utc>,
    reason: String,
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    readings: AtomicU64,
    failures: AtomicU64,
    errors: AtomicU64,
    ok_readings: AtomicU64,
    busy_nanos: AtomicU64,
}

/// Something that happened to a plugin, with when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub message: String,
}

impl Event {
    fn now(message: impl Into<String>) -> Self {
        Event {
            at: Utc::now(),
            message: message.into(),
        }
    }
}

/// A plugin's state, as `GET /api/plugins` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum PluginState {
    /// Loaded and serving.
    Running,
    /// Taken out of service after repeated failures; readings for its
    /// sources get an error until then.
    Quarantined {
        until: DateTime<Utc>,
        reason: String,
    },
    /// Could not be loaded; nothing serves its sources.
    Rejected { reason: String },
}

/// Counters since the plugin was first loaded (they survive hot swaps).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginStats {
    /// Calls into the plugin (batches).
    pub calls: u64,
    /// Readings routed to it.
    pub readings: u64,
    /// Calls that failed as a whole (trap, timeout, memory, garbage).
    pub failures: u64,
    /// Readings answered with an error (failed calls, error answers,
    /// unusable emotions, and refusals while quarantined).
    pub errors: u64,
    /// Mean wall time per reading of successful calls, microseconds.
    pub mean_us_per_reading: Option<f64>,
}

/// Everything known about one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginStatus {
    /// The plugin's name in this host: its file name without `.wasm`.
    pub name: String,
    pub file: PathBuf,
    /// The name the plugin gives itself (`describe`).
    pub plugin_name: Option<String>,
    pub version: Option<String>,
    /// `name@version`, as stamped on its events.
    pub producer: Option<String>,
    pub abi_version: Option<u32>,
    /// The sources it says it handles.
    pub sources: Vec<Source>,
    /// The sources the host routes to it now: `sources` less those
    /// `[plugins.sources]` gives to another plugin (and, without that table,
    /// those a plugin earlier by name took first).
    pub serving_sources: Vec<Source>,
    pub settings_schema: Option<serde_json::Value>,
    #[serde(flatten)]
    pub state: PluginState,
    pub deadline_ms: u64,
    /// The most readings one call gets (`per_plugin.NAME.batch_max_size`
    /// when smaller than the host's `batch_max_size`).
    pub batch_max_size: usize,
    /// The memory limit in force (for a plugin not loaded, the one it would
    /// get from the configuration alone).
    pub memory_limit_bytes: u64,
    /// Where it came from: `configured` (per_plugin), `declared` (the
    /// component's own need) or `default` (the host's memory_limit).
    pub memory_limit_origin: MemoryLimitOrigin,
    /// The memory need the loaded component declares, in bytes.
    pub declared_memory_bytes: Option<u64>,
    /// The most linear memory an instance of the loaded version has had so
    /// far (bytes): what to compare a declared need or a limit with.
    pub peak_memory_bytes: Option<u64>,
    pub stats: PluginStats,
    pub consecutive_failures: u32,
    pub last_failure: Option<Event>,
    /// The last reload attempt (start-up load, hot swap, refusal).
    pub last_reload: Option<Event>,
    pub sha256: Option<String>,
    /// Fingerprint of the trusted key that signed it.
    pub signed_by: Option<String>,
    /// Whether its compiled code came from the on-disk cache.
    pub from_cache: bool,
    pub loaded_at: Option<DateTime<Utc>>,
    pub load_ms: Option<f64>,
    /// The replacement on trial, or how the last trial ended.
    pub canary: Option<CanaryStatus>,
}

/// What one reload did to one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadReport {
    pub plugin: String,
    #[serde(flatten)]
    pub outcome: ReloadOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A plugin that was not serving now is.
    Loaded { producer: String },
    /// A new version replaced the old one.
    Replaced { old: String, new: String },
    /// A new version loaded and now shadows the serving one, which keeps
    /// serving until the trial is decided (see `canary` in the status).
    Canary { serving: String, candidate: String },
    /// Same bytes and signature as before: nothing to do.
    Unchanged,
    /// The new file was refused; `serving` is the version that keeps
    /// serving, if there is one.
    Refused {
        reason: String,
        serving: Option<String>,
    },
    /// The file is gone; so is the plugin.
    Removed,
}

impl PluginHost {
    /// Validate the configuration, start the engine, and load every
    /// component in the plugins directory. Plugins that fail to load are
    /// listed as rejected (see [`PluginHost::status`]); they do not stop the
    /// host. A missing directory is an empty one (plugins may appear later,
    /// see [`PluginHost::watch`]).
    ///
    /// `gateway_id` is stamped on every event.
    pub fn new(config: HostConfig, gateway_id: impl Into<String>) -> Result<Self, HostError> {
        let trusted = config.validate()?;
        let runtime = Arc::new(
            Runtime::new(config.epoch_tick.0, config.profiler).map_err(HostError::Engine)?,
        );
        let cache = match Cache::open(&config.cache_dir(), &runtime.engine) {
            Ok(c) => {
                c.prune_foreign();
                Some(c)
            }
            Err(e) => {
                tracing::warn!(dir = %config.cache_dir().display(), error = %e,
                    "plugin cache unavailable: components are compiled at every start");
                None
            }
        };
        let queues = Queues::new();
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            trusted,
            gateway_id: gateway_id.into(),
            runtime,
            cache,
            registry: RwLock::new(Registry::new(&config)),
            reload_lock: Mutex::new(()),
            queues,
            config,
        });
        inner.queues.start(
            &inner,
            inner.config.batch_max_size,
            inner.config.batch_max_latency.0,
            inner.config.workers_per_source(),
        );
        let host = PluginHost { inner };
        if host.inner.config.dir.exists() {
            host.inner.reload_all()?;
        } else {
            tracing::warn!(dir = %host.inner.config.dir.display(),
                "plugins directory does not exist: starting with no plugins");
        }
        host.warn_unserved_choices();
        Ok(host)
    }

    /// Say once, at start, which sources `[plugins.sources]` gives to a
    /// plugin that is not serving (later changes are logged as they happen).
    fn warn_unserved_choices(&self) {
        let reg = self.inner.registry.read();
        for source in Source::ALL {
            let i = source.index();
            if let (Some(chosen), None) = (&reg.chosen[i], &reg.routes[i]) {
                let why = match reg.slots.get(chosen) {
                    None => format!("there is no {chosen}.wasm in the plugins directory"),
                    Some(slot) => {
                        let serving = slot.current.read().clone();
                        match serving {
                            Some(p) => format!(
                                "{} does not handle this source (it handles {})",
                                p.producer,
                                p.info
                                    .sources
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            None => format!(
                                "it was rejected: {}",
                                slot.state
                                    .lock()
                                    .rejected
                                    .clone()
                                    .unwrap_or_else(|| "not loaded".into())
                            ),
                        }
                    }
                };
                tracing::warn!(
                    plugin = %chosen,
                    "source `{source}` is given to plugin `{chosen}` by [plugins.sources], but {why}: its readings get `no_plugin` errors (no other plugin stands in)"
                );
            }
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Normalize readings on the calling thread, in batches of at most
    /// `batch_max_size` per source; one result per reading, in order. Blocks
    /// for as long as the plugins take (each call is bounded by its deadline):
    /// from async code, call it through `spawn_blocking`, or use
    /// [`PluginHost::submit`].
    pub fn normalize(&self, readings: Vec<RawReading>) -> Vec<ReadingResult> {
        let now = Utc::now();
        let n = readings.len();
        // Converted once, and handed to the plugin in place (no copy per
        // batch): the indices say where each result goes.
        let mut by_source: [(Vec<usize>, Vec<wit::Reading>); 8] = Default::default();
        for (i, r) in readings.iter().enumerate() {
            let (indices, group) = &mut by_source[r.source.index()];
            indices.push(i);
            group.push(convert::to_wit(r, now));
        }
        let mut out: Vec<Option<ReadingResult>> = (0..n).map(|_| None).collect();
        let max = self.inner.config.batch_max_size.max(1);
        for (source, (indices, group)) in Source::ALL.into_iter().zip(by_source) {
            for (is, batch) in indices.chunks(max).zip(group.chunks(max)) {
                let results = self.inner.run_batch(source, batch);
                for (i, r) in is.iter().zip(results) {
                    out[*i] = Some(r);
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(ReadingError::ShutDown)))
            .collect()
    }

    /// Normalize readings already in the plugin ABI's form, all of one
    /// source, as one call (no batching, no conversion; split only by the
    /// serving plugin's own `per_plugin.NAME.batch_max_size`, if set). For
    /// benchmarks and callers that build WIT readings themselves.
    pub fn normalize_prepared(
        &self,
        source: Source,
        readings: &[wit::Reading],
    ) -> Vec<ReadingResult> {
        self.inner.run_batch(source, readings)
    }

    /// Queue one reading for the batcher of its source and return a handle
    /// to its result: `.await` it, or `.wait()` from a plain thread. Never
    /// blocks; a full queue answers `Overloaded` at once.
    pub fn submit(&self, reading: RawReading) -> PendingReading {
        let wit = convert::to_wit(&reading, Utc::now());
        self.inner
            .queues
            .submit(reading.source, wit, self.inner.config.queue_capacity)
    }

    /// Status of every plugin, by name.
    pub fn status(&self) -> Vec<PluginStatus> {
        let slots: Vec<(Arc<Slot>, Vec<Source>)> = {
            let reg = self.inner.registry.read();
            reg.slots
                .values()
                .map(|s| (s.clone(), reg.served_by(s)))
                .collect()
        };
        slots
            .into_iter()
            .map(|(s, serving)| s.status(&self.inner.config, serving))
            .collect()
    }

    /// Status of one plugin.
    pub fn plugin_status(&self, name: &str) -> Option<PluginStatus> {
        let slot = {
            let reg = self.inner.registry.read();
            reg.slots.get(name).map(|s| (s.clone(), reg.served_by(s)))
        };
        slot.map(|(s, serving)| s.status(&self.inner.config, serving))
    }

    /// Which plugin handles each source now. A source `[plugins.sources]`
    /// gives to a plugin that is not serving is missing.
    pub fn routes(&self) -> BTreeMap<Source, String> {
        let reg = self.inner.registry.read();
        Source::ALL
            .into_iter()
            .filter_map(|s| {
                reg.routes[s.index()]
                    .as_ref()
                    .map(|slot| (s, slot.name.clone()))
            })
            .collect()
    }

    /// Batch threads of each source a plugin serves now (`[plugins.workers]`,
    /// 1 unless it says otherwise; fixed when the host starts).
    pub fn workers(&self) -> BTreeMap<Source, usize> {
        let n = self.inner.config.workers_per_source();
        self.routes()
            .into_keys()
            .map(|s| (s, n[s.index()]))
            .collect()
    }

    /// Rescan the directory: load new components, swap changed ones in
    /// (after their self-check), drop removed ones. Batches in flight finish
    /// on the version they started with.
    pub fn reload(&self) -> Result<Vec<ReloadReport>, HostError> {
        self.inner.reload_all()
    }

    /// Reload one plugin from `DIR/NAME.wasm`.
    pub fn reload_plugin(&self, name: &str) -> ReloadReport {
        let path = self.inner.config.dir.join(format!("{name}.wasm"));
        match check_plugin_name(name) {
            Ok(()) => self.inner.reload_file(name, &path),
            Err(reason) => ReloadReport {
                plugin: name.to_owned(),
                outcome: ReloadOutcome::Refused {
                    reason,
                    serving: None,
                },
            },
        }
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }
}

/// A `.wasm` file of the plugins directory.
pub(crate) struct PluginFile {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
}

/// The plugin files of a directory, by name. Other files (the cache
/// directory, signatures, temporary files) are ignored.
pub(crate) fn list_plugin_files(dir: &Path) -> std::io::Result<Vec<PluginFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Err(e) = check_plugin_name(name) {
            tracing::warn!(file = %path.display(), "ignoring: {e}");
            continue;
        }
        out.push(PluginFile {
            name: name.to_owned(),
            path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

impl RunBatch for Inner {
    fn run_batch(&self, source: Source, readings: &[wit::Reading]) -> Vec<ReadingResult> {
        Inner::run_batch(self, source, readings)
    }
}

impl Inner {
    pub(crate) fn reload_all(&self) -> Result<Vec<ReloadReport>, HostError> {
        let files = list_plugin_files(&self.config.dir).map_err(|source| HostError::PluginDir {
            path: self.config.dir.clone(),
            source,
        })?;
        let mut reports: Vec<ReloadReport> = files
            .iter()
            .map(|f| self.reload_file(&f.name, &f.path))
            .collect();
        let gone: Vec<String> = {
            let reg = self.registry.read();
            reg.slots
                .keys()
                .filter(|name| !files.iter().any(|f| &f.name == *name))
                .cloned()
                .collect()
        };
        for name in gone {
            reports.push(self.remove(&name));
        }
        Ok(reports)
    }

    pub(crate) fn remove(&self, name: &str) -> ReloadReport {
        let _guard = self.reload_lock.lock();
        let mut reg = self.registry.write();
        if reg.slots.remove(name).is_some() {
            reg.rebuild_routes();
            tracing::info!(plugin = name, "plugin removed: its file is gone");
        }
        ReloadReport {
            plugin: name.to_owned(),
            outcome: ReloadOutcome::Removed,
        }
    }

    /// Load `path` as plugin `name`, and install it if it passes.
    pub(crate) fn reload_file(&self, name: &str, path: &Path) -> ReloadReport {
        let _guard = self.reload_lock.lock();
        let report = |outcome| ReloadReport {
            plugin: name.to_owned(),
            outcome,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                drop(_guard);
                return self.remove(name);
            }
            Err(e) => {
                return report(self.refuse(name, path, None, LoadError::Read(e.to_string())));
            }
        };
        let sig_path = signature_path(path);
        let signature = std::fs::read_to_string(&sig_path).ok();
        let attempt: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(&bytes);
            h.update([0xff]);
            h.update(signature.as_deref().unwrap_or("").as_bytes());
            h.finalize().into()
        };
        let existing = self.registry.read().slots.get(name).cloned();
        if let Some(slot) = &existing
            && slot.state.lock().attempted == Some(attempt)
        {
            return report(ReloadOutcome::Unchanged);
        }

        match self.load(name, path, &bytes, signature.as_deref(), &sig_path) {
            Ok(plugin) => report(self.install(name, path, plugin, attempt)),
            Err(e) => report(self.refuse(name, path, Some(attempt), e)),
        }
    }

    fn load(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        signature: Option<&str>,
        sig_path: &Path,
    ) -> Result<LoadedPlugin, LoadError> {
        let sig_file = sig_path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let signed_by = match signature {
            Some(sig) => match verify(bytes, sig, &sig_file, &self.trusted) {
                Ok(key) => Some(key.id.clone()),
                Err(e) if self.config.require_signatures => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "signature ignored (not required): {e}");
                    None
                }
            },
            None if self.config.require_signatures => {
                return Err(SignatureError::Missing(sig_file).into());
            }
            None => None,
        };
        let plugin = LoadedPlugin::load(
            &self.runtime,
            self.cache.as_ref(),
            LoadRequest {
                slot_name: name,
                bytes,
                limits: LimitsFrom::Config(&self.config),
                settings: self.config.settings(name),
                signed_by,
            },
        )?;
        let reg = self.registry.read();
        if let Some(slot) = reg.slots.get(name)
            && let Some(current) = slot.current.read().as_ref()
            && current.info.name != plugin.info.name
        {
            return Err(LoadError::NameChanged {
                old: current.info.name.clone(),
                new: plugin.info.name.clone(),
            });
        }
        for s in &plugin.info.sources {
            if let Some(other) = reg.owner_other_than(*s, name) {
                return Err(LoadError::SourceConflict {
                    source_name: *s,
                    other,
                });
            }
        }
        Ok(plugin)
    }

    /// Install a checked version: as a candidate shadowing the serving
    /// version when canaries are on and one serves, otherwise by swapping
    /// it in. Calls that already hold the old version finish on it; the
    /// next batch gets the new one.
    fn install(
        &self,
        name: &str,
        path: &Path,
        plugin: LoadedPlugin,
        attempt: [u8; 32],
    ) -> ReloadOutcome {
        let producer = plugin.producer.clone();
        let mut reg = self.registry.write();
        let slot = reg
            .slots
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Slot::new(name, path, &self.config.quarantine)))
            .clone();
        let serving = slot.current.read().clone();
        // A quarantined version serves nothing to protect (its readings are
        // refused) and gives no answers to compare with: replace it at once.
        let quarantined = slot
            .state
            .lock()
            .quarantine
            .as_ref()
            .is_some_and(|q| Instant::now() < q.until);
        if self.config.canary.enabled
            && let Some(serving) = serving
            && !quarantined
        {
            drop(reg);
            return self.start_canary(&slot, &serving, plugin, attempt);
        }
        let old = slot.current.write().replace(Arc::new(plugin));
        reg.rebuild_routes();
        drop(reg);
        let mut st = slot.state.lock();
        st.rejected = None;
        st.quarantine = None;
        st.consecutive_failures = 0;
        st.backoff = self.config.quarantine.initial_backoff.0;
        st.attempted = Some(attempt);
        if let Some(abandoned) = st.shadow.take() {
            tracing::info!(
                plugin = name,
                "canary of {} abandoned: replaced directly",
                abandoned.canary.candidate.producer
            );
        }
        let outcome = match old {
            Some(old) => ReloadOutcome::Replaced {
                old: old.producer.clone(),
                new: producer.clone(),
            },
            None => ReloadOutcome::Loaded {
                producer: producer.clone(),
            },
        };
        let message = match &outcome {
            ReloadOutcome::Replaced { old, new } => format!("replaced {old} with {new}"),
            _ => format!("loaded {producer}"),
        };
        tracing::info!(plugin = name, "{message}");
        st.last_reload = Some(Event::now(message));
        outcome
    }

    /// Let `candidate` shadow `serving` on live readings, on a thread of
    /// its own that decides the trial (see `canary`).
    fn start_canary(
        &self,
        slot: &Arc<Slot>,
        serving: &LoadedPlugin,
        candidate: LoadedPlugin,
        attempt: [u8; 32],
    ) -> ReloadOutcome {
        let name = slot.name.as_str();
        let candidate_producer = candidate.producer.clone();
        let (shadow, canary, rx) = Canary::start(
            name,
            Arc::new(candidate),
            serving.producer.clone(),
            self.config.canary.clone(),
            self.config.batch_max_size,
        );
        let weak_inner = self.me.clone();
        let weak_slot = Arc::downgrade(slot);
        let gateway_id = self.gateway_id.clone();
        let thread_canary = canary.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-canary-{name}"))
            .spawn(move || {
                thread_canary.shadow(&rx, &gateway_id, |verdict| {
                    if let (Some(inner), Some(slot)) = (weak_inner.upgrade(), weak_slot.upgrade()) {
                        inner.conclude(&slot, &thread_canary, verdict);
                    }
                });
            });
        if let Err(e) = spawned {
            // Without its thread nothing would decide the trial: refuse the
            // candidate, the serving version goes on.
            return self.refuse(
                name,
                &slot.path,
                Some(attempt),
                LoadError::Canary(format!("cannot start its shadow thread: {e}")),
            );
        }
        let c = &self.config.canary;
        let message = format!(
            "{candidate_producer} shadows {} on live readings: promoted after {} compared readings if its error and deadline-miss rates are within {:.1}% of the serving version's, rolled back otherwise (decided within {})",
            serving.producer,
            c.min_readings,
            c.margin * 100.0,
            c.max_duration,
        );
        tracing::info!(plugin = name, "{message}");
        let mut st = slot.state.lock();
        st.attempted = Some(attempt);
        if let Some(abandoned) = st.shadow.replace(Arc::new(shadow)) {
            tracing::info!(
                plugin = name,
                "canary of {} abandoned: a newer file arrived",
                abandoned.canary.candidate.producer
            );
        }
        st.last_reload = Some(Event::now(message));
        ReloadOutcome::Canary {
            serving: serving.producer.clone(),
            candidate: candidate_producer,
        }
    }

    /// Apply a trial's verdict, if the trial is still the plugin's (a newer
    /// file or the plugin's removal ends it without one).
    fn conclude(&self, slot: &Arc<Slot>, canary: &Arc<Canary>, verdict: Verdict) {
        let _guard = self.reload_lock.lock();
        let mut reg = self.registry.write();
        let ours = reg
            .slots
            .get(&slot.name)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
            && slot
                .state
                .lock()
                .shadow
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(&s.canary, canary));
        if !ours {
            return;
        }
        let candidate = &canary.candidate;
        let mut verdict = verdict;
        // Sources are checked against other plugins at load; one may have
        // claimed a source of the candidate since.
        if verdict.promote
            && let Some((source, other)) = candidate
                .info
                .sources
                .iter()
                .find_map(|s| reg.owner_other_than(*s, &slot.name).map(|o| (*s, o)))
        {
            verdict = Verdict {
                promote: false,
                reason: format!(
                    "{}; but source `{source}` is now handled by plugin `{other}`",
                    verdict.reason
                ),
            };
        }
        if verdict.promote {
            slot.current.write().replace(candidate.clone());
            reg.rebuild_routes();
        }
        drop(reg);
        let now = Utc::now();
        let mut st = slot.state.lock();
        st.shadow = None;
        let (state, message) = if verdict.promote {
            st.quarantine = None;
            st.consecutive_failures = 0;
            st.backoff = self.config.quarantine.initial_backoff.0;
            let message = format!(
                "promoted {} over {}: {}",
                candidate.producer, canary.current, verdict.reason
            );
            tracing::info!(plugin = %slot.name, "{message}");
            (CanaryState::Promoted, message)
        } else {
            let message = format!(
                "rolled back {}, {} keeps serving: {}",
                candidate.producer, canary.current, verdict.reason
            );
            tracing::warn!(plugin = %slot.name, "{message}");
            (CanaryState::RolledBack, message)
        };
        st.last_canary = Some(canary.status(state, Some((now, verdict.reason))));
        st.last_reload = Some(Event { at: now, message });
    }

    /// Record a refused load. A version that was serving keeps serving.
    fn refuse(
        &self,
        name: &str,
        path: &Path,
        attempt: Option<[u8; 32]>,
        error: LoadError,
    ) -> ReloadOutcome {
        let reason = error.to_string();
        let mut reg = self.registry.write();
        let slot = reg
            .slots
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Slot::new(name, path, &self.config.quarantine)))
            .clone();
        drop(reg);
        let serving = slot.current.read().as_ref().map(|p| p.producer.clone());
        let mut st = slot.state.lock();
        st.attempted = attempt;
        match &serving {
            Some(v) => {
                tracing::warn!(
                    plugin = name,
                    "new version refused, {v} keeps serving: {reason}"
                );
                st.last_reload = Some(Event::now(format!(
                    "new version refused, {v} keeps serving: {reason}"
                )));
            }
            None => {
                tracing::warn!(plugin = name, "plugin rejected: {reason}");
                st.rejected = Some(reason.clone());
                st.last_reload = Some(Event::now(format!("rejected: {reason}")));
            }
        }
        ReloadOutcome::Refused { reason, serving }
    }

    /// Run one batch of one source through the plugin that handles it.
    pub(crate) fn run_batch(
        &self,
        source: Source,
        readings: &[wit::Reading],
    ) -> Vec<ReadingResult> {
        if readings.is_empty() {
            return Vec::new();
        }
        let slot = self.registry.read().routes[source.index()].clone();
        match slot {
            Some(slot) => {
                // The plugin's own batch size: one call per chunk.
                let max = self.config.plugin_batch_max(&slot.name);
                match max {
                    Some(max) if readings.len() > max => {
                        let mut out = Vec::with_capacity(readings.len());
                        for chunk in readings.chunks(max) {
                            out.extend(slot.run(
                                source,
                                chunk,
                                &self.gateway_id,
                                &self.config.quarantine,
                            ));
                        }
                        out
                    }
                    _ => slot.run(source, readings, &self.gateway_id, &self.config.quarantine),
                }
            }
            None => readings
                .iter()
                .map(|_| Err(ReadingError::NoPlugin(source)))
                .collect(),
        }
    }
}

impl Slot {
    fn new(name: &str, path: &Path, q: &QuarantineConfig) -> Self {
        Slot {
            name: name.to_owned(),
            path: path.to_owned(),
            current: RwLock::new(None),
            state: Mutex::new(SlotState {
                rejected: None,
                quarantine: None,
                consecutive_failures: 0,
                backoff: q.initial_backoff.0,
                last_failure: None,
                last_reload: None,
                attempted: None,
                shadow: None,
                last_canary: None,
            }),
            stats: Stats::default(),
        }
    }

    fn run(
        &self,
        source: Source,
        readings: &[wit::Reading],
        gateway_id: &str,
        q: &QuarantineConfig,
    ) -> Vec<ReadingResult> {
        let n = readings.len() as u64;
        self.stats.readings.fetch_add(n, Ordering::Relaxed);
        let all = |e: ReadingError| -> Vec<ReadingResult> {
            readings.iter().map(|_| Err(e.clone())).collect()
        };
        let shadow = {
            let mut st = self.state.lock();
            if let Some(qu) = &st.quarantine {
                if Instant::now() < qu.until {
                    self.stats.errors.fetch_add(n, Ordering::Relaxed);
                    return all(ReadingError::Quarantined {
                        plugin: self.name.clone(),
                        until: qu.until_utc,
                        reason: qu.reason.clone(),
                    });
                }
                // Back-off over: let calls through again. The failure count
                // stays at its threshold, so one more failure re-quarantines
                // (for twice as long) and one success clears it.
                st.quarantine = None;
            }
            st.shadow.clone()
        };
        // The Arc keeps this version alive until the call ends, even if a
        // hot swap replaces it meanwhile.
        let plugin = self.current.read().clone();
        let Some(plugin) = plugin else {
            self.stats.errors.fetch_add(n, Ordering::Relaxed);
            let reason = self
                .state
                .lock()
                .rejected
                .clone()
                .unwrap_or_else(|| "no version loaded".into());
            return all(ReadingError::Unavailable {
                plugin: self.name.clone(),
                reason,
            });
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let answer = plugin.answer(&self.name, readings, gateway_id);
        match &answer.failure {
            None => {
                self.stats.ok_readings.fetch_add(n, Ordering::Relaxed);
                self.stats.busy_nanos.fetch_add(
                    u64::try_from(answer.elapsed.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                {
                    let mut st = self.state.lock();
                    st.consecutive_failures = 0;
                    st.backoff = q.initial_backoff.0;
                }
                let errors = answer.results.iter().filter(|r| r.is_err()).count() as u64;
                self.stats.errors.fetch_add(errors, Ordering::Relaxed);
            }
            Some(failure) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.stats.errors.fetch_add(n, Ordering::Relaxed);
                self.on_failure(&plugin.producer, failure, q);
            }
        }
        // Only batches the version on trial shadows (not one that was
        // promoted while this call ran) are compared.
        if let Some(shadow) = shadow
            && !Arc::ptr_eq(&shadow.canary.candidate, &plugin)
        {
            shadow.offer(source, readings, &answer.results);
        }
        answer.results
    }

    fn on_failure(&self, producer: &str, failure: &CallFailure, q: &QuarantineConfig) {
        let mut st = self.state.lock();
        st.consecutive_failures = st.consecutive_failures.saturating_add(1);
        let reason = format!("{producer} {failure}");
        st.last_failure = Some(Event::now(reason.clone()));
        if st.consecutive_failures >= q.after_failures {
            let backoff = st.backoff;
            // Saturating everywhere: a back-off from the configuration must
            // never overflow a clock and panic.
            let now = Utc::now();
            let until_utc = chrono::Duration::from_std(backoff)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            tracing::warn!(plugin = %self.name, backoff_ms = backoff.as_millis() as u64,
                "plugin quarantined after {} consecutive failures: {reason}", st.consecutive_failures);
            st.quarantine = Some(Quarantine {
                until: Instant::now()
                    .checked_add(backoff)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
                until_utc,
                reason: format!(
                    "{} consecutive failed calls, the last: {reason}",
                    st.consecutive_failures
                ),
            });
            st.backoff = backoff.saturating_mul(2).min(q.max_backoff.0);
        } else {
            tracing::warn!(plugin = %self.name, "plugin call failed, instance restarted: {reason}");
        }
    }

    fn status(&self, config: &HostConfig, serving_sources: Vec<Source>) -> PluginStatus {
        let current = self.current.read().clone();
        let st = self.state.lock();
        let state = match (&current, &st.quarantine) {
            (Some(_), Some(q)) if Instant::now() < q.until => PluginState::Quarantined {
                until: q.until_utc,
                reason: q.reason.clone(),
            },
            (Some(_), _) => PluginState::Running,
            (None, _) => PluginState::Rejected {
                reason: st.rejected.clone().unwrap_or_else(|| "not loaded".into()),
            },
        };
        let (limits, memory_limit_origin) = match &current {
            Some(p) => (p.limits, p.memory_origin),
            None => {
                // Not loaded: what the configuration alone gives it.
                let origin = if config
                    .per_plugin
                    .get(&self.name)
                    .is_some_and(|p| p.memory_limit.is_some())
                {
                    MemoryLimitOrigin::Configured
                } else {
                    MemoryLimitOrigin::Default
                };
                (config.limits(&self.name), origin)
            }
        };
        let ok = self.stats.ok_readings.load(Ordering::Relaxed);
        let busy = self.stats.busy_nanos.load(Ordering::Relaxed);
        let info: Option<&PluginInfo> = current.as_ref().map(|p| &p.info);
        PluginStatus {
            name: self.name.clone(),
            file: self.path.clone(),
            plugin_name: info.map(|i| i.name.clone()),
            version: info.map(|i| i.version.clone()),
            producer: current.as_ref().map(|p| p.producer.clone()),
            abi_version: info.map(|i| i.abi_version),
            sources: info.map(|i| i.sources.clone()).unwrap_or_default(),
            serving_sources,
            settings_schema: info.map(|i| i.settings_schema.clone()),
            state,
            deadline_ms: u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
            batch_max_size: config.batch_max_for(&self.name),
            memory_limit_bytes: limits.memory_limit,
            memory_limit_origin,
            declared_memory_bytes: current.as_ref().and_then(|p| p.memory_need),
            peak_memory_bytes: current
                .as_ref()
                .map(|p| p.peak_memory.load(Ordering::Relaxed)),
            stats: PluginStats {
                calls: self.stats.calls.load(Ordering::Relaxed),
                readings: self.stats.readings.load(Ordering::Relaxed),
                failures: self.stats.failures.load(Ordering::Relaxed),
                errors: self.stats.errors.load(Ordering::Relaxed),
                mean_us_per_reading: (ok > 0).then(|| busy as f64 / ok as f64 / 1000.0),
            },
            consecutive_failures: st.consecutive_failures,
            last_failure: st.last_failure.clone(),
            last_reload: st.last_reload.clone(),
            sha256: current.as_ref().map(|p| hex(&p.sha256)),
            signed_by: current.as_ref().and_then(|p| p.signed_by.clone()),
            from_cache: current.as_ref().is_some_and(|p| p.from_cache),
            loaded_at: current.as_ref().map(|p| p.loaded_at),
            load_ms: current.as_ref().map(|p| p.load_time.as_secs_f64() * 1000.0),
            canary: match &st.shadow {
                Some(s) => Some(s.canary.status(CanaryState::Shadowing, None)),
                None => st.last_canary.clone(),
            },
        }
    }
}
