//! Hot reload: a thread that polls the plugins directory.
//!
//! Polling (not inotify) because it works the same on every filesystem the
//! gateway runs on (SD cards, overlay and network mounts) and costs one
//! `stat` per file per interval. A file is acted on once its size and
//! modification time have been the same for two polls in a row, so a
//! component being copied in is not loaded half-written (writing a temporary
//! file and renaming it, as `scripts/build-plugins.sh` and `sign` do, is
//! still the better habit). Whether it really changed is then decided by its
//! content hash.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::host::{PluginHost, ReloadOutcome, list_plugin_files};
use crate::signing::signature_path;

/// The directory poller; it stops when dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// What a poll sees of one plugin: its file's and its signature's size and
/// modification time.
type Fingerprint = (Option<(u64, SystemTime)>, Option<(u64, SystemTime)>);

fn fingerprint(path: &std::path::Path) -> Fingerprint {
    let meta = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
    };
    (meta(path), meta(&signature_path(path)))
}

#[derive(Default)]
struct PollState {
    /// Seen at the previous poll.
    seen: HashMap<String, Fingerprint>,
    /// What the last reload of each plugin acted on.
    acted: HashMap<String, Fingerprint>,
    /// Plugins whose file was missing at the previous poll.
    missing: HashSet<String>,
}

impl PluginHost {
    /// Start polling the plugins directory every `watch_interval`; `None`
    /// when the interval is `0s`. Changes are logged and show in
    /// [`PluginHost::status`] (`last_reload`).
    pub fn watch(&self) -> Option<Watcher> {
        let interval = self.config().watch_interval.0;
        if interval.is_zero() {
            return None;
        }
        let weak = self.downgrade();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || {
                let mut state = PollState::default();
                loop {
                    std::thread::park_timeout(interval);
                    if stop_thread.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    PluginHost { inner }.poll(&mut state);
                }
            });
        match thread {
            Ok(t) => Some(Watcher {
                stop,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the plugin directory watcher");
                None
            }
        }
    }

    fn poll(&self, state: &mut PollState) {
        let dir = &self.config().dir;
        let files = match list_plugin_files(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot list the plugins directory");
                Vec::new()
            }
        };
        let mut present = HashSet::new();
        for f in &files {
            present.insert(f.name.clone());
            let fp = fingerprint(&f.path);
            let stable = state.seen.insert(f.name.clone(), fp) == Some(fp);
            if stable && state.acted.get(&f.name) != Some(&fp) {
                state.acted.insert(f.name.clone(), fp);
                let report = self.reload_plugin(&f.name);
                if report.outcome != ReloadOutcome::Unchanged {
                    tracing::info!(plugin = %report.plugin, outcome = ?report.outcome, "plugin directory change");
                }
            }
        }
        state.seen.retain(|name, _| present.contains(name));
        // Removal, also only once it has been seen twice.
        let loaded: Vec<String> = self.status().into_iter().map(|s| s.name).collect();
        let mut still_missing = HashSet::new();
        for name in loaded.into_iter().filter(|n| !present.contains(n)) {
            if state.missing.contains(&name) {
                self.inner.remove(&name);
                state.acted.remove(&name);
            } else {
                still_missing.insert(name);
            }
        }
        state.missing = still_missing;
    }
}
