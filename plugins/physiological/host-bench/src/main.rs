//! Readings per second of the facial and physiological plugins through the
//! gateway's plugin host, against the same normalization compiled natively.
//!
//!     scripts/build-plugins.sh
//!     cargo run --release --manifest-path plugins/physiological/host-bench/Cargo.toml [-- COMPONENT_DIR]
//!
//! COMPONENT_DIR defaults to `$CARGO_TARGET_DIR/plugins` (or `target/plugins`).
//! Host = `PluginHost::normalize_prepared` (copy into the sandbox, call under
//! the deadline and memory limit, copy out, check, convert to events);
//! native = the plugin's `Plugin::normalize` in-process. Best of 5 rounds.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use emotion_core::Source;
use emotion_plugin_facial::reference::{self, Encoding};
use emotion_plugin_host::{Dur, HostConfig, PluginHost, Profiler, wit};
use emotion_plugin_physiological::synth::{self, Rng, State};
use emotion_plugin_sdk as sdk;
use emotion_plugin_sdk::Plugin;

const T0: i64 = 1_723_732_200_000;

fn component_dir() -> PathBuf {
    if let Some(dir) = std::env::args().nth(1) {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    target.join("plugins")
}

fn wit_payload(p: &sdk::Payload) -> wit::Payload {
    match p {
        sdk::Payload::Facial(f) => wit::Payload::Facial(wit::Facial {
            action_units: f
                .action_units
                .iter()
                .map(|u| wit::ActionUnit {
                    number: u.number,
                    value: match u.value {
                        sdk::AuValue::Intensity(x) => wit::AuValue::Intensity(x),
                        sdk::AuValue::Presence(b) => wit::AuValue::Presence(b),
                    },
                })
                .collect(),
            landmarks: f
                .landmarks
                .iter()
                .map(|p| wit::Point { x: p.x, y: p.y })
                .collect(),
            head_pose: f.head_pose.map(|h| wit::HeadPose {
                pitch: h.pitch,
                yaw: h.yaw,
                roll: h.roll,
            }),
            detection_quality: f.detection_quality,
        }),
        sdk::Payload::Physiological(p) => wit::Payload::Physiological(wit::Physiological {
            heart_rate_bpm: p.heart_rate_bpm,
            rr_intervals_ms: p.rr_intervals_ms.clone(),
            skin_conductance_us: p.skin_conductance_us.clone(),
            eda_sample_rate_hz: p.eda_sample_rate_hz,
            breathing_rate_bpm: p.breathing_rate_bpm,
            skin_temperature_c: p.skin_temperature_c,
        }),
        _ => unreachable!("facial and physiological readings only"),
    }
}

fn wit_reading(r: &sdk::Reading) -> wit::Reading {
    wit::Reading {
        user_id: r.user_id.clone(),
        session_id: r.session_id.clone(),
        device_id: r.device_id.clone(),
        timestamp_ms: r.timestamp_ms,
        source: match r.source {
            sdk::Source::Facial => wit::Source::Facial,
            sdk::Source::Biometric => wit::Source::Biometric,
            _ => wit::Source::Physiological,
        },
        payload: wit_payload(&r.payload),
    }
}

fn sdk_reading(user: String, ts: i64, source: sdk::Source, payload: sdk::Payload) -> sdk::Reading {
    sdk::Reading {
        user_id: user,
        session_id: "bench".into(),
        device_id: None,
        timestamp_ms: ts,
        source,
        payload,
    }
}

/// Facial frames: every prototype and near-miss of PROTOTYPES.md at intensity C.
fn facial_readings(n: usize) -> Vec<sdk::Reading> {
    let cases: Vec<_> = reference::prototype_cases()
        .into_iter()
        .chain(reference::near_miss_cases())
        .collect();
    (0..n)
        .map(|i| {
            let f = reference::frame(&cases[i % cases.len()].units, Encoding::Intensity(3.0));
            sdk_reading(
                format!("cam-user-{}", i % 50),
                T0 + i as i64,
                sdk::Source::Facial,
                sdk::Payload::Facial(f),
            )
        })
        .collect()
}

/// 15-s wearable windows: RR, 60 EDA samples at 4 Hz, breathing, temperature.
fn window_readings(n: usize) -> Vec<sdk::Reading> {
    let mut rng = Rng::new(5);
    (0..n)
        .map(|i| {
            let p = synth::window(&mut rng, i as f64 * 15.0, 15.0, &State::CALM);
            sdk_reading(
                format!("band-{}", i % 50),
                T0 + (i / 50) as i64 * 15_000,
                sdk::Source::Physiological,
                sdk::Payload::Physiological(p),
            )
        })
        .collect()
}

/// BLE heart-rate notifications: heart rate and one or two RR intervals.
fn notification_readings(n: usize) -> Vec<sdk::Reading> {
    (0..n)
        .map(|i| {
            let p = sdk::Physiological {
                heart_rate_bpm: Some(72.0),
                rr_intervals_ms: if i % 2 == 0 {
                    vec![830.0]
                } else {
                    vec![825.0, 841.0]
                },
                skin_conductance_us: Vec::new(),
                eda_sample_rate_hz: None,
                breathing_rate_bpm: None,
                skin_temperature_c: None,
            };
            sdk_reading(
                format!("strap-{}", i % 50),
                T0 + i as i64 * 1000,
                sdk::Source::Biometric,
                sdk::Payload::Physiological(p),
            )
        })
        .collect()
}

/// Nanoseconds per reading: the fastest call and the median call, over
/// about 1.5 s of calls. On a busy machine the fastest call is the one that
/// ran undisturbed; the median shows the contention.
fn measure(batch: usize, mut f: impl FnMut() -> usize) -> (f64, f64) {
    let mut per_call = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) || per_call.len() < 20 {
        let t = Instant::now();
        let n = black_box(f());
        per_call.push(t.elapsed().as_nanos() as f64 / batch as f64);
        assert_eq!(n, batch);
    }
    per_call.sort_by(f64::total_cmp);
    (per_call[0], per_call[per_call.len() / 2])
}

fn main() {
    let components = component_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["facial", "physiological"] {
        let from = components.join(format!("{name}.wasm"));
        std::fs::copy(&from, dir.path().join(format!("{name}.wasm"))).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/build-plugins.sh first)",
                from.display()
            )
        });
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let config = HostConfig {
        dir: dir.path().to_owned(),
        cache_dir: Some(cache.path().to_owned()),
        deadline: Dur(Duration::from_secs(1)),
        batch_max_size: 1000,
        watch_interval: Dur(Duration::ZERO),
        // In profiling mode, name the plugin's functions for `perf`.
        profiler: if std::env::var_os("BENCH_PROFILE").is_some() {
            Profiler::PerfMap
        } else {
            Profiler::None
        },
        ..HostConfig::default()
    };
    let host = PluginHost::new(config, "bench").expect("host");
    for s in host.status() {
        assert!(s.producer.is_some(), "plugin not running: {s:?}");
    }

    println!(
        "facial and physiological plugins through the plugin host ({})",
        components.display()
    );
    println!(
        "µs per reading in the fastest call (median call in parentheses), about 1.5 s of calls each;"
    );
    println!("host = PluginHost::normalize_prepared, native = Plugin::normalize in-process\n");
    println!(
        "{:<42} | {:>5} | {:>17} | {:>17} | {:>6} | {:>10}",
        "readings", "batch", "native µs", "host µs", "ratio", "host rd/s"
    );
    println!(
        "{:-<42}-+-{:-<5}-+-{:-<17}-+-{:-<17}-+-{:-<6}-+-{:-<10}",
        "", "", "", "", "", ""
    );
    type Make = fn(usize) -> Vec<sdk::Reading>;
    let kinds: [(&str, Source, Make, fn(Vec<sdk::Reading>) -> usize); 3] = [
        (
            "facial frames (AU intensities)",
            Source::Facial,
            facial_readings,
            |r| emotion_plugin_facial::FacialPlugin::normalize(r).len(),
        ),
        (
            "wearable 15-s windows (RR+EDA+resp+temp)",
            Source::Physiological,
            window_readings,
            |r| emotion_plugin_physiological::PhysiologicalPlugin::normalize(r).len(),
        ),
        (
            "BLE notifications (HR + 1-2 RR)",
            Source::Biometric,
            notification_readings,
            |r| emotion_plugin_physiological::PhysiologicalPlugin::normalize(r).len(),
        ),
    ];
    // Profiling mode: `BENCH_PROFILE=<facial|windows|ble>[:native]
    // BENCH_CALLS=n` runs only that path at batch 100, for perf or
    // callgrind to look at without the rest of the bench around it.
    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        let (kind, native_only) = match which.split_once(':') {
            Some((k, "native")) => (k.to_owned(), true),
            _ => (which.clone(), false),
        };
        let calls: usize = std::env::var("BENCH_CALLS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2000);
        let index = ["facial", "windows", "ble"]
            .iter()
            .position(|k| *k == kind)
            .expect("BENCH_PROFILE is facial, windows or ble");
        let (_, source, make, native) = kinds[index];
        let sdk_readings = make(100);
        let wit_readings: Vec<wit::Reading> = sdk_readings.iter().map(wit_reading).collect();
        for _ in 0..calls {
            if native_only {
                black_box(native(sdk_readings.clone()));
            } else {
                black_box(host.normalize_prepared(source, &wit_readings));
            }
        }
        return;
    }
    for (name, source, make, native) in kinds {
        for batch in [1usize, 100, 1000] {
            let sdk_readings = make(batch);
            let wit_readings: Vec<wit::Reading> = sdk_readings.iter().map(wit_reading).collect();
            // Every reading gives an event through the host.
            let results = host.normalize_prepared(source, &wit_readings);
            let events = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
            assert_eq!(
                events,
                batch,
                "{name}: {:?}",
                results.iter().find(|r| !matches!(r, Ok(Some(_))))
            );
            let (n, n_med) = measure(batch, || native(sdk_readings.clone()));
            let (h, h_med) = measure(batch, || {
                host.normalize_prepared(source, &wit_readings).len()
            });
            println!(
                "{name:<42} | {batch:>5} | {:>7.2} ({:>7.2}) | {:>7.2} ({:>7.2}) | {:>5.2}x | {:>10.0}",
                n / 1e3,
                n_med / 1e3,
                h / 1e3,
                h_med / 1e3,
                h / n,
                1e9 / h
            );
        }
    }
    for s in host.status() {
        assert_eq!(s.stats.failures, 0, "{s:?}");
    }
    println!(
        "\n(native µs include cloning the batch, as the host path includes copying it into the sandbox)"
    );
}
