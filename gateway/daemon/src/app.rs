//! Start-up and shutdown of the whole gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::auth::Tokens;
use crate::buffer::{EventStore, SledStore, StallBeforeFlush, StoreError, StoreOptions};
use crate::config::Config;
use crate::devices::DeviceHandles;
use crate::ingest::Pipeline;
#[cfg(feature = "mqtt")]
use crate::mqtt::MqttHandles;
use crate::privacy::Privacy;
use crate::state::{AppState, Connections};
use crate::sync::{SyncHandles, SyncStatus};
use crate::telemetry::Counters;
use emotion_core::Analyzer;
use emotion_plugin_host::{PluginHost, PluginState, Watcher};

/// How long shutdown waits for open connections to finish their replies.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the buffer at {path}: {source}")]
    Storage { path: String, source: StoreError },
    #[error("HTTP TLS: {0}")]
    Tls(#[from] emotion_tls::TlsError),
    #[error("cannot listen on {addr} (config key http.listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting a worker thread: {0}")]
    Thread(std::io::Error),
    #[error("starting the plugin host: {0}")]
    Plugins(emotion_plugin_host::HostError),
    #[error("reading consents and erasures: {0}")]
    Privacy(crate::privacy::PrivacyError),
    #[error("starting MQTT: {0}")]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started gateway. Dropping it does not stop it; call `shutdown`.
#[derive(Debug)]
pub struct Running {
    /// The address the API actually listens on (port 0 resolved).
    pub addr: SocketAddr,
    /// `https` with `[http.tls]`, `http` without.
    pub scheme: &'static str,
    pub state: AppState,
    server: JoinHandle<()>,
    pipeline: Pipeline,
    /// Polls the plugins directory for hot swaps while it lives.
    watcher: Option<Watcher>,
    /// The MQTT broker and upstream client, when `[mqtt]` turns either on.
    mqtt: Option<crate::mqtt::MqttHandle>,
}

/// Open the buffer (replaying it into the analyzer), start the pipeline and
/// the housekeeping tasks, and begin serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let config = Arc::new(config);
    if config
        .auth
        .tokens
        .iter()
        .any(|t| t.token == crate::config::DEV_TOKEN)
    {
        tracing::warn!(
            "the development token from the embedded default is enabled (allowed on loopback only); \
             configure your own [[auth.tokens]] before exposing this gateway"
        );
    }
    let path = config.storage.path.clone();
    let opts = StoreOptions {
        cache_bytes: config.storage.cache_mb * 1024 * 1024,
        dedup_window: config.storage.dedup_window,
        stall_before_flush: test_fault_from_env(),
        ..StoreOptions::default()
    };
    let analyzer_cfg = config.analyzer_config();
    let (store, report, analyzer, restored) = tokio::task::spawn_blocking(move || {
        let (store, report) = SledStore::open(&path, opts)?;
        let (analyzer, restored) = crate::checkpoint::restore(&store, analyzer_cfg)?;
        Ok::<_, StoreError>((store, report, analyzer, restored))
    })
    .await?
    .map_err(|source| StartError::Storage {
        path: config.storage.path.display().to_string(),
        source,
    })?;
    if let Some(r) = &report.repaired {
        tracing::error!(
            acknowledged_lost = r.acknowledged_lost,
            salvaged_events = r.salvaged_events,
            moved_to = %r.moved_to,
            reason = %r.reason,
            "the buffer was damaged and has been rebuilt from what could be salvaged"
        );
    }
    if let Some(why) = &restored.refused {
        tracing::warn!(reason = %why, "the analyzer checkpoint was not usable; replayed the whole buffer");
    }
    tracing::info!(
        events = report.events,
        batches = report.batches,
        reindexed_batches = report.reindexed_batches,
        open_ms = report.took_ms,
        from_checkpoint = restored.from_checkpoint,
        replayed_events = restored.replayed_events,
        replay_ms = restored.took_ms,
        path = %config.storage.path.display(),
        "buffer opened; analyzer restored"
    );
    let plugins = load_plugins(&config).await?;
    let watcher = plugins.watch();
    let Assembled { state, pipeline } = assemble(
        config.clone(),
        Arc::new(store),
        analyzer,
        restored.through,
        plugins,
    )?;

    let addr = config.listen_addr();
    let listener = crate::edge::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;

    spawn_housekeeping(&state);
    spawn_checkpoints(&state);
    spawn_scrubs(&state);
    spawn_metrics_upkeep(&state);
    crate::devices::start(&config.serial, &config.ble, device_handles(&state)).await;
    if config.risk_sweep.enabled {
        state.tasks.spawn(crate::risk::run(
            state.risk_handles(),
            config.risk_sweep.clone(),
            state.shutdown.clone(),
        ));
    }
    if config.sync.enabled {
        let (cfg, status, token) = (
            config.sync.clone(),
            state.sync.clone(),
            state.shutdown.clone(),
        );
        state
            .tasks
            .spawn(crate::sync::run(sync_handles(&state), cfg, status, token));
        tracing::info!(database = %emotion_sync::config::redact_url(&config.sync.database_url), "central sync is on");
    } else {
        tracing::info!(
            "central sync is off (set [sync] enabled = true and database_url to turn it on)"
        );
    }

    let mqtt = start_mqtt(&config, &state).await?;

    let (server, scheme) = serve_api(&state, listener).await?;
    tracing::info!(%addr, scheme, gateway_id = %config.gateway_id, "gateway started");
    Ok(Running {
        addr,
        scheme,
        state,
        server,
        pipeline,
        watcher,
        mqtt,
    })
}

/// Serve the API of `state` on `listener` through the network edge (TLS
/// from `[http.tls]`, limits from `[http.limits]`) until shutdown. Returns
/// the server task and its scheme (`http` or `https`).
pub async fn serve_api(
    state: &AppState,
    listener: TcpListener,
) -> Result<(JoinHandle<()>, &'static str), StartError> {
    let http = &state.config.http;
    let tls = match http.tls.files() {
        Some(files) => Some(Arc::new(
            tokio::task::spawn_blocking(move || emotion_tls::ReloadingTls::load(files)).await??,
        )),
        None => None,
    };
    let addr = listener.local_addr().ok();
    if tls.is_none() && addr.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            addr = ?addr,
            "http.allow_plaintext: the API listens off loopback without TLS; tokens and events travel in clear"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let edge = crate::edge::Edge::new(http.limits.clone(), tls, http.tls.reload_interval.0);
    let server = tokio::spawn(crate::edge::serve(
        listener,
        api::router(state.clone()),
        edge,
        state.shutdown.clone(),
    ));
    Ok((server, scheme))
}

/// What the serial and BLE transports get from the assembled gateway.
fn device_handles(state: &AppState) -> DeviceHandles {
    DeviceHandles {
        readings: state.readings.clone(),
        store: state.store.clone(),
        devices: state.devices.clone(),
        shutdown: state.shutdown.clone(),
        tasks: state.tasks.clone(),
    }
}

/// What the sync driver gets from the assembled gateway.
fn sync_handles(state: &AppState) -> SyncHandles {
    SyncHandles {
        store: state.store.clone(),
        privacy: state.privacy.clone(),
        audit: state.audit.clone(),
        pseudonyms: state.pseudonyms.clone(),
        analyzer: state.analyzer.clone(),
        gateway_id: state.config.gateway_id.clone(),
    }
}

/// Start the MQTT transport when `[mqtt]` asks for it.
#[cfg(feature = "mqtt")]
async fn start_mqtt(
    config: &Config,
    state: &AppState,
) -> Result<Option<crate::mqtt::MqttHandle>, StartError> {
    if !config.mqtt.enabled_anything() {
        tracing::info!(
            "MQTT is off (set [mqtt] enabled = true, or [mqtt.upstream] enabled = true)"
        );
        return Ok(None);
    }
    let handle = crate::mqtt::start(config.mqtt.clone(), mqtt_handles(state)).await?;
    let _ = state.mqtt.set(handle.status());
    Ok(Some(handle))
}

/// A build without the `mqtt` feature: say so if `[mqtt]` asks for MQTT.
#[cfg(not(feature = "mqtt"))]
async fn start_mqtt(
    config: &Config,
    _: &AppState,
) -> Result<Option<crate::mqtt::MqttHandle>, StartError> {
    for warning in config.mqtt.problems() {
        tracing::warn!("{warning}");
    }
    Ok(None)
}

/// What the MQTT transport gets from the assembled gateway (public for the
/// tests that start a second transport beside a running gateway).
#[cfg(feature = "mqtt")]
pub fn mqtt_handles(state: &AppState) -> MqttHandles {
    MqttHandles {
        ingest: state.ingest.clone(),
        readings: state.readings.clone(),
        counters: state.counters.clone(),
        live: state.live.clone(),
        gateway_id: state.config.gateway_id.clone(),
        confidence_in_source_range: state.config.validation.confidence
            == crate::config::ConfidenceCheck::SourceRange,
        session_idle: state.config.analyzer.session_idle.0,
        shutdown: state.shutdown.clone(),
    }
}

/// The application state and its ingest pipeline, without sockets or
/// background tasks: what [`start`] serves, and what in-process tests drive
/// through [`crate::api::router`].
#[derive(Debug)]
pub struct Assembled {
    pub state: AppState,
    pipeline: Pipeline,
}

impl Assembled {
    /// Stop: cancel the sessions, let the pipeline drain what is queued.
    pub async fn shutdown(self) {
        let Assembled { state, pipeline } = self;
        state.shutdown.cancel();
        state.tasks.close();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, state.tasks.wait()).await;
        // Dropping the last `Ingest` handle lets the writer drain and stop.
        drop(state);
        // Bounded: a router or handle kept elsewhere holds the queue open.
        let joined = tokio::time::timeout(
            DRAIN_TIMEOUT,
            tokio::task::spawn_blocking(move || pipeline.join()),
        )
        .await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::warn!("the ingest pipeline did not drain; an Ingest handle is still held");
        }
    }
}

/// Build the application state around an opened store and a restored
/// analyzer (`analyzed_through`: the first batch it has not seen): privacy,
/// counters, the live feed and the ingest pipeline. [`start`] uses it; so
/// does [`in_memory`].
pub fn assemble(
    config: Arc<Config>,
    store: Arc<dyn EventStore>,
    analyzer: Analyzer,
    analyzed_through: u64,
    plugins: PluginHost,
) -> Result<Assembled, StartError> {
    let analyzed = Arc::new(AtomicU64::new(analyzed_through));
    let analyzer = Arc::new(Mutex::new(analyzer));
    let privacy = Arc::new(Privacy::load(store.clone()).map_err(StartError::Privacy)?);
    let pseudonyms = if config.sync.pseudonymize {
        crate::pseudonym::Pseudonyms::load_or_create(store.as_ref()).map_err(|source| {
            StartError::Storage {
                path: config.storage.path.display().to_string(),
                source,
            }
        })?
    } else {
        crate::pseudonym::Pseudonyms::off()
    };
    let counters = Arc::new(Counters::default());
    let live = Arc::new(crate::live::Live::default());
    // Install the Prometheus recorder before anything records into it.
    let _ = crate::telemetry::prometheus();
    let (ingest, pipeline) = Pipeline::start(
        store.clone(),
        analyzer.clone(),
        analyzed.clone(),
        privacy.clone(),
        counters.clone(),
        live.clone(),
        config.storage.max_batch_events,
        config.storage.queue_capacity,
    )
    .map_err(StartError::Thread)?;
    let state = AppState {
        tokens: Arc::new(Tokens::new(&config.auth)),
        readings: crate::readings::Readings::new(plugins.clone(), ingest.clone()),
        audit: crate::audit::Audit::new(store.clone()),
        pseudonyms,
        config,
        ingest,
        store,
        analyzer,
        analyzed,
        counters,
        privacy,
        plugins,
        sync: Arc::new(SyncStatus::default()),
        devices: Arc::new(crate::devices::Devices::default()),
        connections: Arc::new(Connections::default()),
        mqtt: Arc::default(),
        live,
        risk: Arc::default(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        started: Instant::now(),
    };
    Ok(Assembled { state, pipeline })
}

/// The application state over the in-memory store (`emotion_buffer::MemoryStore`),
/// with the plugins of `config.plugins`: no file, socket or background task,
/// for in-process tests of the API. Nothing is durable past the process.
pub async fn in_memory(config: Config) -> Result<Assembled, StartError> {
    let config = Arc::new(config);
    let store: Arc<dyn EventStore> =
        Arc::new(crate::buffer::MemoryStore::new(config.storage.dedup_window));
    let analyzer = Analyzer::new(config.analyzer_config());
    let plugins = load_plugins(&config).await?;
    assemble(config, store, analyzer, 0, plugins)
}

/// Load the plugins of `[plugins]` (compiling them is blocking work).
async fn load_plugins(config: &Config) -> Result<PluginHost, StartError> {
    let host_config = config.plugins.clone();
    let gateway_id = config.gateway_id.clone();
    let plugins = tokio::task::spawn_blocking(move || PluginHost::new(host_config, gateway_id))
        .await?
        .map_err(StartError::Plugins)?;
    for p in plugins.status() {
        match &p.state {
            PluginState::Running => tracing::info!(
                plugin = %p.name,
                producer = p.producer.as_deref().unwrap_or("?"),
                sources = ?p.sources,
                from_cache = p.from_cache,
                "plugin loaded"
            ),
            other => tracing::warn!(plugin = %p.name, state = ?other, "plugin not serving"),
        }
    }
    if plugins.status().is_empty() {
        tracing::warn!(
            dir = %config.plugins.dir.display(),
            "no plugins loaded: raw readings will be answered with no_plugin (build them with scripts/build-plugins.sh)"
        );
    }

    Ok(plugins)
}

/// The test-only writer stall (see `StallBeforeFlush`), from
/// `EMOTION_GATEWAY_TEST_STALL_BEFORE_FLUSH=<batches>:<marker path>`: the
/// crash tests kill the process while a batch is inserted but not durable.
/// Nothing else reads this variable; it is not configuration.
fn test_fault_from_env() -> Option<StallBeforeFlush> {
    let v = std::env::var("EMOTION_GATEWAY_TEST_STALL_BEFORE_FLUSH").ok()?;
    let (n, marker) = v.split_once(':')?;
    let after_batches = n.parse().ok()?;
    tracing::warn!(
        after_batches,
        "test fault armed: the writer will stall before a flush"
    );
    Some(StallBeforeFlush {
        after_batches,
        marker: marker.into(),
    })
}

/// Save the analyzer's checkpoint on a timer, until shutdown.
fn spawn_checkpoints(state: &AppState) {
    let st = state.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(st.config.analyzer.checkpoint_interval.0);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = st.shutdown.cancelled() => return,
            }
            let s = st.clone();
            let save = move || crate::checkpoint::save(s.store.as_ref(), &s.analyzer, &s.analyzed);
            match tokio::task::spawn_blocking(save).await {
                Ok(Ok(bytes)) => tracing::debug!(bytes, "analyzer checkpoint saved"),
                Ok(Err(e)) => tracing::warn!(error = %e, "analyzer checkpoint failed"),
                Err(e) => tracing::warn!(error = %e, "analyzer checkpoint task failed"),
            }
        }
    });
}

/// Scrub the buffer `storage.scrub_first_after` after start and then every
/// `storage.scrub_interval`.
fn spawn_scrubs(state: &AppState) {
    let every = state.config.storage.scrub_interval.0;
    if every.is_zero() {
        return;
    }
    let st = state.clone();
    state.tasks.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(st.config.storage.scrub_first_after.0) => {}
            _ = st.shutdown.cancelled() => return,
        }
        loop {
            let store = st.store.clone();
            let token = st.shutdown.clone();
            let scrub = tokio::task::spawn_blocking(move || store.scrub(&|| token.is_cancelled()));
            tokio::select! {
                r = scrub => match r {
                    Ok(Ok(r)) if !r.complete => return,
                    Ok(Ok(r)) if r.repair_scheduled => tracing::error!(
                        acknowledged_lost = r.acknowledged_lost,
                        corrupt_batches = r.corrupt_batches,
                        "buffer scrub found damage; the store is repaired at the next start"
                    ),
                    Ok(Ok(r)) => tracing::info!(batches = r.batches, events = r.events, "buffer scrub found no damage"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "buffer scrub failed"),
                    Err(e) => tracing::warn!(error = %e, "buffer scrub task failed"),
                },
                _ = st.shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = st.shutdown.cancelled() => return,
            }
        }
    });
}

/// The Prometheus recorder keeps histogram samples until upkeep folds them
/// into buckets; without an HTTP listener of its own nobody else runs it.
fn spawn_metrics_upkeep(state: &AppState) {
    let Some(handle) = crate::telemetry::prometheus() else {
        return;
    };
    let token = state.shutdown.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => handle.run_upkeep(),
                _ = token.cancelled() => return,
            }
        }
    });
}

/// Retention and idle-session eviction, on timers, until shutdown.
fn spawn_housekeeping(state: &AppState) {
    let st = state.clone();
    state.tasks.spawn(async move {
        let retention = st.config.storage.retention.0;
        let idle = st.config.analyzer.session_idle.0;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut minutes = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = st.shutdown.cancelled() => return,
            }
            let now = Utc::now();
            if let Ok(idle) = chrono::Duration::from_std(idle) {
                let evicted = st.analyzer.lock().evict_sessions_idle_since(now - idle);
                if evicted > 0 {
                    tracing::debug!(evicted, "dropped live state of idle sessions");
                }
            }
            let user_idle = st.config.analyzer.user_idle.0;
            if !user_idle.is_zero()
                && let Ok(user_idle) = chrono::Duration::from_std(user_idle)
            {
                let s = st.clone();
                let evict = move || {
                    crate::checkpoint::evict_idle(
                        s.store.as_ref(),
                        &s.analyzer,
                        &s.analyzed,
                        now - user_idle,
                    )
                };
                match tokio::task::spawn_blocking(evict).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::debug!(users = n, "idle users' analysis state left RAM"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "evicting idle users failed"),
                    Err(e) => tracing::warn!(error = %e, "eviction task failed"),
                }
            }
            // The engine is reopened hourly, which bounds what the next start
            // must replay (see `SledStore::compact_log`).
            if minutes % 60 == 59 {
                let store = st.store.clone();
                match tokio::task::spawn_blocking(move || store.maintain()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "buffer upkeep failed"),
                    Err(e) => tracing::error!(error = %e, "buffer upkeep task failed"),
                }
            }
            // Retention runs at start and then hourly.
            if !retention.is_zero()
                && minutes.is_multiple_of(60)
                && let Ok(keep) = chrono::Duration::from_std(retention)
            {
                let store = st.store.clone();
                // Never purge what the central sync has not shipped yet.
                let keep_from = st.sync.keep_from();
                match tokio::task::spawn_blocking(move || {
                    store.purge_ingested_before(now - keep, keep_from)
                })
                .await
                {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(events = n, "retention removed old events"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed"),
                    Err(e) => tracing::warn!(error = %e, "retention task failed"),
                }
            }
            minutes += 1;
        }
    });
}

impl Running {
    /// Stop accepting, let open connections finish their replies, drain the
    /// pipeline, flush the buffer.
    pub async fn shutdown(self) {
        let Running {
            state,
            server,
            pipeline,
            watcher,
            mqtt,
            ..
        } = self;
        drop(watcher);
        state.shutdown.cancel();
        // MQTT stores and acknowledges what is in flight, then lets go of
        // the pipeline, before the pipeline drains.
        if let Some(m) = mqtt {
            m.shutdown().await;
        }
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "HTTP server task failed");
        }
        state.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing anyway");
        }
        let store = state.store.clone();
        let (analyzer, analyzed) = (state.analyzer.clone(), state.analyzed.clone());
        // Dropping the last `Ingest` handle lets the writer drain and stop.
        drop(state);
        let joined = tokio::task::spawn_blocking(move || {
            pipeline.join();
            // A last checkpoint: the next start replays nothing.
            crate::checkpoint::save(store.as_ref(), &analyzer, &analyzed)?;
            store.flush()
        })
        .await;
        match joined {
            Ok(Ok(())) => tracing::info!("buffer flushed; gateway stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
            Err(e) => tracing::error!(error = %e, "shutdown task failed"),
        }
    }
}
