//! The vendor's inner loop: run one component on a JSONL file of raw
//! readings and print one line per reading (`emotion-gateway plugin test`).
//!
//! Output lines (JSON):
//!
//! ```text
//! {"line":1,"event":{…EmotionEvent…},"micros":4.2}
//! {"line":2,"none":true,"micros":3.1}
//! {"line":3,"error":{"kind":"plugin_error","message":"…"},"micros":2.9}
//! {"line":4,"error":{"kind":"validation_error","message":"payload.text: is required"}}
//! ```
//!
//! Every reading is its own call (batch of one), so `micros` is the time of
//! that reading alone, host overhead included. A failing call (trap,
//! timeout, memory, garbage) is reported on its line and the next reading
//! gets a fresh instance, as in the gateway; there is no quarantine here.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use emotion_core::reading::RawReading;
use serde_json::{Value, json};

use crate::config::{ByteSize, Dur, HostConfig, Limits, MemoryLimitOrigin, Profiler};
use crate::convert;
use crate::error::{HostError, ReadingError};
use crate::runtime::{LimitsFrom, LoadRequest, LoadedPlugin, PluginInfo, Runtime};

/// Options of [`test_plugin`].
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The plugin's settings (`{}` when `None`).
    pub settings: Option<Value>,
    /// The deadline, and the memory limit for a component declaring no
    /// memory need (or for every component, see `memory_from_component`).
    pub limits: Limits,
    /// A memory need the component declares replaces `limits.memory_limit`,
    /// as in the gateway (`HostConfig::limits_for`, with its ceiling): the
    /// default. [`TestOptions::with_limits`] turns it off, for a limit given
    /// on the command line.
    pub memory_from_component: bool,
    /// Stamped on the events.
    pub gateway_id: String,
}

impl Default for TestOptions {
    fn default() -> Self {
        let c = HostConfig::default();
        TestOptions {
            settings: None,
            limits: Limits {
                deadline: c.deadline.0,
                memory_limit: c.memory_limit.0,
            },
            memory_from_component: true,
            gateway_id: "plugin-test".into(),
        }
    }
}

impl TestOptions {
    /// Limits from strings as in the configuration (`"100ms"`, `"64MiB"`);
    /// the memory limit is then used whatever the component declares.
    pub fn with_limits(mut self, deadline: &str, memory: &str) -> Result<Self, String> {
        self.limits = Limits {
            deadline: Dur::parse(deadline)?.0,
            memory_limit: ByteSize::parse(memory)?.0,
        };
        self.memory_from_component = false;
        Ok(self)
    }

    /// The deadline from a string as in the configuration (`"100ms"`).
    pub fn with_deadline(mut self, deadline: &str) -> Result<Self, String> {
        self.limits.deadline = Dur::parse(deadline)?.0;
        Ok(self)
    }
}

/// What a [`test_plugin`] run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSummary {
    pub info: PluginInfo,
    /// The memory limit the run used, and where it came from.
    pub memory_limit: u64,
    pub memory_limit_origin: MemoryLimitOrigin,
    pub load_time: Duration,
    /// Non-empty input lines.
    pub lines: usize,
    pub events: usize,
    pub nothing: usize,
    pub errors: usize,
    /// Time spent in calls, over all readings that reached the plugin.
    pub call_time: Duration,
    pub calls: usize,
}

impl TestSummary {
    pub fn mean_per_reading(&self) -> Option<Duration> {
        u32::try_from(self.calls)
            .ok()
            .filter(|n| *n > 0)
            .map(|n| self.call_time / n)
    }
}

impl std::fmt::Display for TestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (sources: {}): {} lines, {} events, {} none, {} errors; memory limit {} ({}); load {:.1} ms",
            self.info.name,
            self.info.version,
            self.info
                .sources
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.lines,
            self.events,
            self.nothing,
            self.errors,
            ByteSize(self.memory_limit),
            match self.memory_limit_origin {
                MemoryLimitOrigin::Configured => "given",
                MemoryLimitOrigin::Declared => "declared by the component",
                MemoryLimitOrigin::Default => "default",
            },
            self.load_time.as_secs_f64() * 1000.0
        )?;
        if let Some(m) = self.mean_per_reading() {
            write!(f, ", mean {:.1} µs per reading", m.as_secs_f64() * 1e6)?;
        }
        Ok(())
    }
}

/// Run `component` on every reading of `input` (JSONL), writing one JSON
/// line per reading to `output`. Signatures are not checked (this is the
/// vendor's own build); nothing is cached.
pub fn test_plugin(
    component: &Path,
    input: impl BufRead,
    mut output: impl Write,
    options: &TestOptions,
) -> Result<TestSummary, HostError> {
    let bytes = std::fs::read(component).map_err(|source| HostError::Read {
        path: component.to_owned(),
        source,
    })?;
    let tick = HostConfig::default().epoch_tick.0;
    let runtime = Arc::new(Runtime::new(tick, Profiler::None).map_err(HostError::Engine)?);
    let name = component
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    // The gateway's own rule for a declared need, with these limits as
    // its defaults.
    let config = HostConfig {
        deadline: Dur(options.limits.deadline),
        memory_limit: ByteSize(options.limits.memory_limit),
        ..HostConfig::default()
    };
    let limits = if options.memory_from_component {
        LimitsFrom::Config(&config)
    } else {
        LimitsFrom::Fixed(options.limits)
    };
    let started = Instant::now();
    let plugin = LoadedPlugin::load(
        &runtime,
        None,
        LoadRequest {
            slot_name: &name,
            bytes: &bytes,
            limits,
            settings: options
                .settings
                .as_ref()
                .map_or_else(|| "{}".to_owned(), Value::to_string),
            signed_by: None,
        },
    )
    .map_err(|error| HostError::Load {
        path: component.to_owned(),
        error,
    })?;
    let mut summary = TestSummary {
        info: plugin.info.clone(),
        memory_limit: plugin.limits.memory_limit,
        memory_limit_origin: plugin.memory_origin,
        load_time: started.elapsed(),
        lines: 0,
        events: 0,
        nothing: 0,
        errors: 0,
        call_time: Duration::ZERO,
        calls: 0,
    };

    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(|source| HostError::Read {
            path: "<readings>".into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let line_no = index + 1;
        let out = match RawReading::from_json_str(&line, None) {
            Err(e) => {
                summary.errors += 1;
                json!({"line": line_no, "error": {"kind": "validation_error", "message": e.to_string()}})
            }
            Ok(raw) if !plugin.info.sources.contains(&raw.source) => {
                summary.errors += 1;
                json!({"line": line_no, "error": {"kind": "no_plugin",
                    "message": format!("{} does not handle source `{}`", plugin.producer, raw.source)}})
            }
            Ok(raw) => {
                let now = Utc::now();
                let reading = convert::to_wit(&raw, now);
                let t = Instant::now();
                let result = plugin.call(std::slice::from_ref(&reading));
                let elapsed = t.elapsed();
                summary.calls += 1;
                summary.call_time += elapsed;
                let micros = elapsed.as_secs_f64() * 1e6;
                let answer = match result {
                    Err(failure) => Err(ReadingError::PluginFailed {
                        plugin: name.clone(),
                        failure,
                    }),
                    Ok(results) => plugin
                        .results(
                            &name,
                            std::slice::from_ref(&reading),
                            results,
                            &options.gateway_id,
                        )
                        .pop()
                        // `call` checked the count; kept total for safety.
                        .unwrap_or(Ok(None)),
                };
                match answer {
                    Ok(Some(event)) => {
                        summary.events += 1;
                        json!({"line": line_no, "event": event, "micros": micros})
                    }
                    Ok(None) => {
                        summary.nothing += 1;
                        json!({"line": line_no, "none": true, "micros": micros})
                    }
                    Err(e) => {
                        summary.errors += 1;
                        json!({"line": line_no, "error": {"kind": e.kind(), "message": e.to_string()}, "micros": micros})
                    }
                }
            }
        };
        writeln!(output, "{out}").map_err(HostError::Write)?;
    }
    output.flush().map_err(HostError::Write)?;
    Ok(summary)
}
