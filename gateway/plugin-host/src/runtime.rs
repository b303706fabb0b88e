//! The WebAssembly side: the engine and its epoch ticker, the per-instance
//! host state (imports, memory limiter), and a loaded plugin with its pool of
//! instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use emotion_core::Source;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};

use crate::abi::{ABI_1, ABI_2, SUPPORTED_ABIS, read_stamps};
use crate::cache::{Cache, Origin};
use crate::config::{HostConfig, Limits, MemoryLimitOrigin, Profiler};
use crate::convert;
use crate::convert::MAX_EXTRA_FIELDS;
use crate::error::{CallFailure, LoadError, ReadingError, ReadingResult};
use crate::wit;

/// Idle instances kept per plugin. More are created under concurrency and
/// dropped when they come back to a full pool.
const MAX_IDLE_INSTANCES: usize = 4;
/// Log lines one call may write (a chatty plugin must not flood the log).
const LOG_LINES_PER_CALL: u32 = 64;
const MAX_LOG_LINE: usize = 2048;
/// Bounds on what a plugin may hand back, beyond which output is garbage.
const MAX_LABEL_LEN: usize = 64;
const MAX_EXTRA_BYTES: usize = 64 * 1024;
const MAX_ERROR_LEN: usize = 4096;

/// The engine shared by every plugin, and the thread that advances its epoch.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) tick: Duration,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

/// The version stamped on compiled plugins: wasmtime's, and the patches of
/// its Cranelift glue (`vendor/wasmtime-internal-cranelift/PATCHED.md`).
pub(crate) const MODULE_VERSION: &str = "48.0.8+epoch-check-preserve-all+vnni-dot";

impl Runtime {
    pub(crate) fn new(tick: Duration, profiler: Profiler) -> Result<Self, String> {
        let mut config = wasmtime::Config::new();
        if profiler == Profiler::PerfMap {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Deadlines: generated code checks the epoch at loop headers and
        // function entries (6-9 % of a small reading's host time, 10-16 %
        // before the check's call stopped clobbering vector registers:
        // README; fuel is the slower mechanism by wasmtime's docs).
        config.epoch_interruption(true);
        // Code from the patched Cranelift glue is versioned apart from plain
        // 48.0.8's, so a cache written by an unpatched build is compiled
        // again rather than loaded (it would run, with the old slow epoch
        // check) and an unpatched build refuses this one's artifacts.
        config
            .module_version(wasmtime::ModuleVersionStrategy::Custom(
                MODULE_VERSION.into(),
            ))
            .map_err(|e| format!("{e:#}"))?;
        config.wasm_component_model(true);
        config.parallel_compilation(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // A plugin that recurses without bound traps cleanly.
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;

        let mut linker = Linker::new(&engine);
        // The only imports a plugin gets: logging and its settings, under
        // each ABI's package name (`emotion:plugin/host@0.2.0` and `@0.1.0`).
        wit::EmotionPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("{e:#}"))?;
        wit::abi1::EmotionPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| format!("{e:#}"))?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?
        };
        Ok(Runtime {
            engine,
            linker,
            tick,
            stop,
            ticker: Some(ticker),
        })
    }

    /// Epoch ticks for a deadline: rounded up, plus one because the current
    /// tick may be about to end.
    fn ticks(&self, deadline: Duration) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        u64::try_from(deadline.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX / 2)
            .saturating_add(1)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            // The ticker holds no reference back to us: joining cannot deadlock.
            let _ = t.join();
        }
    }
}

/// Denies memory growth beyond the plugin's limit and remembers that it did,
/// so the resulting trap is reported as memory exhaustion. Also keeps the
/// largest memory any instance of the version reached, so an author can
/// measure the need to declare.
#[derive(Debug)]
struct MemoryLimiter {
    limit: usize,
    denied: Option<usize>,
    peak: Arc<AtomicU64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            // `false` makes `memory.grow` return -1: a plugin that can cope
            // with an allocation failure may; Rust's allocator aborts (traps).
            self.denied = Some(desired);
            Ok(false)
        } else {
            self.peak.fetch_max(
                u64::try_from(desired).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            Ok(true)
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

/// What a plugin instance's imports see.
#[derive(Debug)]
pub(crate) struct HostState {
    plugin: Arc<str>,
    settings: Arc<str>,
    memory: MemoryLimiter,
    /// The message of the last panic the SDK's hook reported, if any.
    panic: Option<String>,
    log_budget: u32,
}

impl HostState {
    fn reset_for_call(&mut self) {
        self.memory.denied = None;
        self.panic = None;
        self.log_budget = LOG_LINES_PER_CALL;
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl wit::emotion::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        use wit::LogLevel;
        if level == LogLevel::Error
            && let Some(p) = message.strip_prefix("panic: ")
        {
            self.panic = Some(truncate(p, 512).to_owned());
        }
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let plugin = &*self.plugin;
        let msg = truncate(&message, MAX_LOG_LINE);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{msg}"),
            LogLevel::Debug => tracing::debug!(plugin, "{msg}"),
            LogLevel::Info => tracing::info!(plugin, "{msg}"),
            LogLevel::Warn => tracing::warn!(plugin, "{msg}"),
            LogLevel::Error => tracing::error!(plugin, "{msg}"),
        }
    }

    fn settings(&mut self) -> String {
        self.settings.to_string()
    }
}

impl wit::emotion::plugin::types::Host for HostState {}

/// ABI 1's host interface is ABI 2's under the old package name.
impl wit::abi1::emotion::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::abi1::LogLevel, message: String) {
        use wit::abi1::LogLevel as L1;
        let level = match level {
            L1::Trace => wit::LogLevel::Trace,
            L1::Debug => wit::LogLevel::Debug,
            L1::Info => wit::LogLevel::Info,
            L1::Warn => wit::LogLevel::Warn,
            L1::Error => wit::LogLevel::Error,
        };
        wit::emotion::plugin::host::Host::log(self, level, message);
    }

    fn settings(&mut self) -> String {
        wit::emotion::plugin::host::Host::settings(self)
    }
}

impl wit::abi1::emotion::plugin::types::Host for HostState {}

/// What `describe` said, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub abi_version: u32,
    pub sources: Vec<Source>,
    /// JSON Schema of the plugin's settings.
    pub settings_schema: serde_json::Value,
}

impl PluginInfo {
    fn check(raw: wit::PluginInfo, stamped_abi: u32) -> Result<Self, String> {
        let ok_text = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        };
        if !ok_text(&raw.name) {
            return Err(format!(
                "name {:?} must be 1–64 letters, digits or - _ . +",
                raw.name
            ));
        }
        if !ok_text(&raw.version) {
            return Err(format!(
                "version {:?} must be 1–64 letters, digits or - _ . +",
                raw.version
            ));
        }
        if raw.abi_version != stamped_abi {
            return Err(format!(
                "describe says ABI version {}, the component is stamped {stamped_abi}",
                raw.abi_version
            ));
        }
        if raw.sources.is_empty() {
            return Err("it handles no source".into());
        }
        let mut sources: Vec<Source> = raw
            .sources
            .iter()
            .map(|s| wit::source_to_core(*s))
            .collect();
        sources.sort();
        sources.dedup();
        let settings_schema = serde_json::from_str(&raw.settings_schema)
            .map_err(|e| format!("settings-schema is not JSON: {e}"))?;
        Ok(PluginInfo {
            name: raw.name,
            version: raw.version,
            abi_version: raw.abi_version,
            sources,
            settings_schema,
        })
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
}

/// An instance's exports, per ABI.
enum Bindings {
    Abi2(wit::EmotionPlugin),
    /// ABI 1's `normalize` is called through a function typed with ABI 2's
    /// readings (the same records; see [`wit::abi1`]) and ABI 1's results, so
    /// the readings are not copied into ABI 1's Rust types first.
    Abi1 {
        instance: wasmtime::component::Instance,
        describe: ComponentExportIndex,
        normalize: ComponentExportIndex,
    },
}

/// A version's pre-linked component, per ABI.
enum Pre {
    Abi2(wit::EmotionPluginPre<HostState>),
    Abi1 {
        pre: wasmtime::component::InstancePre<HostState>,
        describe: ComponentExportIndex,
        normalize: ComponentExportIndex,
    },
}

/// A batch's answers as the plugin's ABI shapes them; [`LoadedPlugin::results`]
/// turns either into the readings' results.
pub(crate) enum Results {
    Abi2(Vec<wit::NormalizeResult>),
    Abi1(Vec<wit::abi1::NormalizeResult>),
}

impl Results {
    pub(crate) fn len(&self) -> usize {
        match self {
            Results::Abi2(r) => r.len(),
            Results::Abi1(r) => r.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A compiled, checked plugin version and its idle instances.
pub(crate) struct LoadedPlugin {
    pub(crate) info: PluginInfo,
    /// `name@version`, stamped on every event this version produces.
    pub(crate) producer: String,
    pub(crate) sha256: [u8; 32],
    pub(crate) from_cache: bool,
    pub(crate) signed_by: Option<String>,
    pub(crate) limits: Limits,
    /// Where `limits.memory_limit` came from.
    pub(crate) memory_origin: MemoryLimitOrigin,
    /// The memory need the component declares, in bytes.
    pub(crate) memory_need: Option<u64>,
    /// Largest linear memory (bytes) any instance of this version has had.
    pub(crate) peak_memory: Arc<AtomicU64>,
    pub(crate) loaded_at: DateTime<Utc>,
    pub(crate) load_time: Duration,
    runtime: Arc<Runtime>,
    pre: Pre,
    slot_name: Arc<str>,
    settings: Arc<str>,
    pool: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("producer", &self.producer)
            .field("sources", &self.info.sources)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Where a plugin's limits come from.
pub(crate) enum LimitsFrom<'a> {
    /// These, whatever the component declares (`plugin test`'s options).
    Fixed(Limits),
    /// The host configuration, with the component's declared memory need
    /// ([`HostConfig::limits_for`]).
    Config(&'a HostConfig),
}

/// What [`LoadedPlugin::load`] needs besides the bytes.
pub(crate) struct LoadRequest<'a> {
    pub(crate) slot_name: &'a str,
    pub(crate) bytes: &'a [u8],
    pub(crate) limits: LimitsFrom<'a>,
    pub(crate) settings: String,
    pub(crate) signed_by: Option<String>,
}

impl LoadedPlugin {
    /// Check the ABI stamp and the declared memory need, compile (or take
    /// from the cache), link, instantiate, `describe`, and self-check with an
    /// empty batch.
    pub(crate) fn load(
        runtime: &Arc<Runtime>,
        cache: Option<&Cache>,
        req: LoadRequest<'_>,
    ) -> Result<Self, LoadError> {
        let started = Instant::now();
        // Before any compilation: a plugin for another ABI is refused by its
        // stamp, with a message that says so, instead of by a type mismatch;
        // one needing more memory than allowed is refused before costing a
        // compile.
        let stamps = read_stamps(req.bytes)?;
        let abi = stamps.abi_version;
        if !SUPPORTED_ABIS.contains(&abi) {
            return Err(LoadError::AbiMismatch {
                found: abi,
                supported: SUPPORTED_ABIS.to_vec(),
            });
        }
        let (limits, memory_origin) = match req.limits {
            LimitsFrom::Fixed(l) => (l, MemoryLimitOrigin::Configured),
            LimitsFrom::Config(c) => c.limits_for(req.slot_name, stamps.memory_need)?,
        };
        let sha256: [u8; 32] = Sha256::digest(req.bytes).into();
        let (component, origin) = match cache {
            Some(c) => c.get_or_compile(&runtime.engine, req.bytes, &sha256),
            None => Component::new(&runtime.engine, req.bytes).map(|c| (c, Origin::Compiled)),
        }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;

        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(link_error(&runtime.engine, &component, &e)))?;
        let pre = match abi {
            ABI_1 => {
                let export = |parent: Option<&ComponentExportIndex>, name: &str| {
                    component.get_export_index(parent, name).ok_or_else(|| {
                        LoadError::Exports(format!(
                            "no export `{name}` in {}",
                            wit::abi1::PLUGIN_INTERFACE
                        ))
                    })
                };
                let interface = export(None, wit::abi1::PLUGIN_INTERFACE)?;
                Pre::Abi1 {
                    describe: export(Some(&interface), "describe")?,
                    normalize: export(Some(&interface), "normalize")?,
                    pre: instance_pre,
                }
            }
            _ => Pre::Abi2(
                wit::EmotionPluginPre::new(instance_pre)
                    .map_err(|e| LoadError::Exports(format!("{e:#}")))?,
            ),
        };
        debug_assert!(abi == ABI_1 || abi == ABI_2);

        let mut plugin = LoadedPlugin {
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                abi_version: abi,
                sources: Vec::new(),
                settings_schema: serde_json::Value::Null,
            },
            producer: String::new(),
            sha256,
            from_cache: origin == Origin::Cache,
            signed_by: req.signed_by,
            limits,
            memory_origin,
            memory_need: stamps.memory_need,
            peak_memory: Arc::new(AtomicU64::new(0)),
            loaded_at: Utc::now(),
            load_time: Duration::ZERO,
            runtime: runtime.clone(),
            pre,
            slot_name: Arc::from(req.slot_name),
            settings: Arc::from(req.settings.as_str()),
            pool: Mutex::new(Vec::new()),
        };
        let (mut instance, raw_info) = plugin.instantiate_raw().map_err(|f| match f {
            RawFailure::Instantiate(f) => LoadError::Instantiate(f),
            RawFailure::Describe(f) => LoadError::Describe(f),
        })?;
        plugin.info = PluginInfo::check(raw_info, abi).map_err(LoadError::BadInfo)?;
        plugin.producer = format!("{}@{}", plugin.info.name, plugin.info.version);

        match instance.normalize(&plugin, &[]) {
            Ok(results) if results.is_empty() => {}
            Ok(results) => {
                return Err(LoadError::SelfCheck(format!(
                    "returned {} results for an empty batch",
                    results.len()
                )));
            }
            Err(f) => return Err(LoadError::SelfCheck(f.to_string())),
        }
        plugin.pool.lock().push(instance);
        plugin.load_time = started.elapsed();
        Ok(plugin)
    }

    /// A fresh store and instance, with `describe` called on it (the WIT
    /// contract promises plugins that `describe` comes first).
    fn instantiate_raw(&self) -> Result<(Instance, wit::PluginInfo), RawFailure> {
        let mut store = Store::new(
            &self.runtime.engine,
            HostState {
                plugin: self.slot_name.clone(),
                settings: self.settings.clone(),
                memory: MemoryLimiter {
                    limit: usize::try_from(self.limits.memory_limit).unwrap_or(usize::MAX),
                    denied: None,
                    peak: self.peak_memory.clone(),
                },
                panic: None,
                log_budget: LOG_LINES_PER_CALL,
            },
        );
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();
        // Instantiation runs the component's start code: it gets a deadline too.
        store.set_epoch_deadline(self.runtime.ticks(self.limits.deadline));
        let instantiate_failed = |e, store: &Store<HostState>| {
            RawFailure::Instantiate(classify(e, store.data(), &self.limits))
        };
        let describe_failed = |e, store: &Store<HostState>| {
            RawFailure::Describe(classify(e, store.data(), &self.limits))
        };
        let bindings = match &self.pre {
            Pre::Abi2(pre) => Bindings::Abi2(
                pre.instantiate(&mut store)
                    .map_err(|e| instantiate_failed(e, &store))?,
            ),
            Pre::Abi1 {
                pre,
                describe,
                normalize,
            } => Bindings::Abi1 {
                instance: pre
                    .instantiate(&mut store)
                    .map_err(|e| instantiate_failed(e, &store))?,
                describe: *describe,
                normalize: *normalize,
            },
        };
        store.data_mut().reset_for_call();
        store.set_epoch_deadline(self.runtime.ticks(self.limits.deadline));
        let info = match &bindings {
            Bindings::Abi2(b) => b.emotion_plugin_plugin().call_describe(&mut store),
            // `plugin-info` is the same record in both ABIs.
            Bindings::Abi1 {
                instance, describe, ..
            } => instance
                .get_typed_func::<(), (wit::PluginInfo,)>(&mut store, describe)
                .and_then(|f| f.call(&mut store, ()))
                .map(|(info,)| info),
        }
        .map_err(|e| describe_failed(e, &store))?;
        Ok((Instance { store, bindings }, info))
    }

    fn instantiate(&self) -> Result<Instance, CallFailure> {
        let (instance, info) = self.instantiate_raw().map_err(|f| match f {
            RawFailure::Instantiate(f) | RawFailure::Describe(f) => {
                CallFailure::Instantiate(f.to_string())
            }
        })?;
        if info.name != self.info.name || info.version != self.info.version {
            return Err(CallFailure::Instantiate(format!(
                "a new instance describes itself as {}@{}, not {}",
                info.name, info.version, self.producer
            )));
        }
        Ok(instance)
    }

    /// Normalize one batch on an idle (or new) instance. On any failure the
    /// instance is dropped: a trapped instance cannot be entered again, and
    /// one that returned garbage is not trusted with the next batch.
    pub(crate) fn call(&self, readings: &[wit::Reading]) -> Result<Results, CallFailure> {
        let idle = self.pool.lock().pop();
        let mut instance = match idle {
            Some(i) => i,
            None => self.instantiate()?,
        };
        let results = instance.normalize(self, readings)?;
        check_results(readings.len(), &results)?;
        let mut pool = self.pool.lock();
        if pool.len() < MAX_IDLE_INSTANCES {
            pool.push(instance);
        }
        Ok(results)
    }
}

/// One batch's answers from one version, as the readings' results: the
/// serving version's go to the readings' senders, a canary's only into its
/// comparison. One function for both, so both are judged alike.
pub(crate) struct Answer {
    /// One per reading, in order.
    pub(crate) results: Vec<ReadingResult>,
    /// Why the call failed as a whole, if it did (every result is then an
    /// error).
    pub(crate) failure: Option<CallFailure>,
    pub(crate) elapsed: Duration,
}

impl LoadedPlugin {
    /// [`LoadedPlugin::call`] one batch and turn the answers into events
    /// stamped with this version, or errors naming `plugin` (the slot).
    pub(crate) fn answer(
        &self,
        plugin: &str,
        readings: &[wit::Reading],
        gateway_id: &str,
    ) -> Answer {
        let started = Instant::now();
        let result = self.call(readings);
        let elapsed = started.elapsed();
        match result {
            Ok(results) => Answer {
                results: self.results(plugin, readings, results, gateway_id),
                failure: None,
                elapsed,
            },
            Err(failure) => Answer {
                results: readings
                    .iter()
                    .map(|_| {
                        Err(ReadingError::PluginFailed {
                            plugin: plugin.to_owned(),
                            failure: failure.clone(),
                        })
                    })
                    .collect(),
                failure: Some(failure),
                elapsed,
            },
        }
    }
}

impl LoadedPlugin {
    /// The readings' results for a batch's checked answers: events stamped
    /// with this version, or errors naming `plugin` (the slot).
    pub(crate) fn results(
        &self,
        plugin: &str,
        readings: &[wit::Reading],
        results: Results,
        gateway_id: &str,
    ) -> Vec<ReadingResult> {
        let now = Utc::now();
        let mut ids = convert::EventIds::new(readings.len(), now);
        let invalid = |message| ReadingError::InvalidEmotion {
            plugin: plugin.to_owned(),
            message,
        };
        let answered = |message| ReadingError::Plugin {
            plugin: plugin.to_owned(),
            message,
        };
        let producer = &self.producer;
        match results {
            Results::Abi2(results) => readings
                .iter()
                .zip(results)
                .map(|(reading, result)| match result {
                    wit::NormalizeResult::Emotion(e) => convert::to_event_with_id(
                        reading,
                        e,
                        producer,
                        gateway_id,
                        now,
                        ids.next_id(),
                    )
                    .map(Some)
                    .map_err(invalid),
                    wit::NormalizeResult::None => Ok(None),
                    wit::NormalizeResult::Error(message) => Err(answered(message)),
                })
                .collect(),
            Results::Abi1(results) => readings
                .iter()
                .zip(results)
                .map(|(reading, result)| match result {
                    wit::abi1::NormalizeResult::Emotion(e) => convert::abi1_to_event_with_id(
                        reading,
                        e,
                        producer,
                        gateway_id,
                        now,
                        ids.next_id(),
                    )
                    .map(Some)
                    .map_err(invalid),
                    wit::abi1::NormalizeResult::None => Ok(None),
                    wit::abi1::NormalizeResult::Error(message) => Err(answered(message)),
                })
                .collect(),
        }
    }
}

enum RawFailure {
    Instantiate(CallFailure),
    Describe(CallFailure),
}

impl Instance {
    fn normalize(
        &mut self,
        plugin: &LoadedPlugin,
        readings: &[wit::Reading],
    ) -> Result<Results, CallFailure> {
        self.store.data_mut().reset_for_call();
        self.store
            .set_epoch_deadline(plugin.runtime.ticks(plugin.limits.deadline));
        match &self.bindings {
            Bindings::Abi2(b) => b
                .emotion_plugin_plugin()
                .call_normalize(&mut self.store, readings)
                .map(Results::Abi2),
            // Typed per call (the type check is per batch, not per reading):
            // the parameter's lifetime is the call's.
            Bindings::Abi1 {
                instance,
                normalize,
                ..
            } => instance
                .get_typed_func::<(&[wit::Reading],), (Vec<wit::abi1::NormalizeResult>,)>(
                    &mut self.store,
                    normalize,
                )
                .and_then(|f| f.call(&mut self.store, (readings,)))
                .map(|(results,)| Results::Abi1(results)),
        }
        .map_err(|e| classify(e, self.store.data(), &plugin.limits))
    }
}

/// Turn a wasmtime error into what happened, in words a plugin author can act on.
fn classify(err: wasmtime::Error, state: &HostState, limits: &Limits) -> CallFailure {
    if let Some(requested) = state.memory.denied {
        return CallFailure::MemoryExhausted {
            limit: limits.memory_limit,
            requested: requested as u64,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallFailure::Timeout(limits.deadline),
        Some(trap) => CallFailure::Trap(match &state.panic {
            Some(p) => format!("{trap} (the plugin panicked: {p})"),
            None => trap.to_string(),
        }),
        None => CallFailure::Trap(format!("{err:#}")),
    }
}

/// Refuse garbage: a wrong count, non-finite or out-of-range numbers, or
/// oversized fields. Unknown labels and bad extra JSON are judged per
/// reading later (they are answers about one reading, not broken output).
fn check_results(expected: usize, results: &Results) -> Result<(), CallFailure> {
    if results.len() != expected {
        return Err(CallFailure::WrongCount {
            expected,
            got: results.len(),
        });
    }
    match results {
        Results::Abi2(results) => {
            for (index, r) in results.iter().enumerate() {
                let garbage = |message: String| CallFailure::Garbage { index, message };
                match r {
                    wit::NormalizeResult::Emotion(e) => {
                        check_numbers(e.valence, e.arousal, e.confidence).map_err(garbage)?;
                        // The field count is checked when the text is parsed
                        // (`convert`), which is the only time it is known.
                        if e.extra.len() > MAX_EXTRA_BYTES {
                            return Err(garbage(format!(
                                "extra fields of {} bytes (at most {MAX_EXTRA_BYTES})",
                                e.extra.len()
                            )));
                        }
                    }
                    wit::NormalizeResult::Error(m) => check_error(m).map_err(garbage)?,
                    wit::NormalizeResult::None => {}
                }
            }
        }
        Results::Abi1(results) => {
            for (index, r) in results.iter().enumerate() {
                let garbage = |message: String| CallFailure::Garbage { index, message };
                match r {
                    wit::abi1::NormalizeResult::Emotion(e) => {
                        check_numbers(e.valence, e.arousal, e.confidence).map_err(garbage)?;
                        if e.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL_LEN) {
                            return Err(garbage(format!(
                                "label longer than {MAX_LABEL_LEN} bytes"
                            )));
                        }
                        let extra_bytes: usize =
                            e.extra.iter().map(|(k, v)| k.len() + v.len()).sum();
                        if e.extra.len() > MAX_EXTRA_FIELDS || extra_bytes > MAX_EXTRA_BYTES {
                            return Err(garbage(format!(
                                "{} extra fields of {extra_bytes} bytes (at most {MAX_EXTRA_FIELDS} fields, {MAX_EXTRA_BYTES} bytes)",
                                e.extra.len()
                            )));
                        }
                    }
                    wit::abi1::NormalizeResult::Error(m) => check_error(m).map_err(garbage)?,
                    wit::abi1::NormalizeResult::None => {}
                }
            }
        }
    }
    Ok(())
}

/// Valence, arousal and confidence finite and in range.
fn check_numbers(valence: f64, arousal: f64, confidence: f64) -> Result<(), String> {
    for (name, x, lo, hi) in [
        ("valence", valence, -1.0, 1.0),
        ("arousal", arousal, 0.0, 1.0),
        ("confidence", confidence, 0.0, 1.0),
    ] {
        if !x.is_finite() {
            return Err(format!("{name} is {x}"));
        }
        if !(lo..=hi).contains(&x) {
            return Err(format!("{name} {x} is outside [{lo}, {hi}]"));
        }
    }
    Ok(())
}

/// An error message a plugin answered, within its size bound.
fn check_error(message: &str) -> Result<(), String> {
    if message.len() > MAX_ERROR_LEN {
        return Err(format!(
            "error message of {} bytes (at most {MAX_ERROR_LEN})",
            message.len()
        ));
    }
    Ok(())
}

/// Explain a link failure: almost always an import we do not provide (a
/// guest built for WASI, say).
fn link_error(engine: &Engine, component: &Component, err: &wasmtime::Error) -> String {
    let foreign: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .filter(|name| !name.starts_with("emotion:plugin/host@"))
        .collect();
    if foreign.is_empty() {
        format!("{err:#}")
    } else {
        format!(
            "it imports {} but plugins may import only emotion:plugin/host (no WASI: build for wasm32-unknown-unknown)",
            foreign.join(", ")
        )
    }
}
