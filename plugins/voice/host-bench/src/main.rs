//! Real-time factor of the voice plugin through the gateway's plugin host,
//! against the same analysis compiled natively.
//!
//!     scripts/build-plugins.sh
//!     cargo run --release --manifest-path plugins/voice/host-bench/Cargo.toml [-- COMPONENT_DIR]
//!
//! COMPONENT_DIR defaults to `$CARGO_TARGET_DIR/plugins` (or `target/plugins`).
//! Host = `PluginHost::normalize_prepared` (copy the samples into the
//! sandbox, call under the deadline and memory limit, copy out, check,
//! convert to an event); native = `Voice::normalize` in-process (the
//! plugin's code without the settings lookup). The audio is the synthetic
//! speech-like vowel of `emotion_plugin_voice::synth` — voiced throughout, so
//! every frame goes through the pitch tracker: a worst case for speed. Best
//! of 5 rounds; real-time factor = analysis time / audio duration.
//!
//! Profiling mode: `BENCH_PROFILE=voice[:native] BENCH_CALLS=n` runs only
//! the 3-s reading at 16 kHz (batch 1) through the host (plugin code named
//! for `perf` by the host's `perfmap` profiler) or natively, n times, for
//! `perf record` to look at without the rest of the bench around it.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use emotion_core::Source;
use emotion_plugin_host::{Dur, HostConfig, PluginConfig, PluginHost, Profiler, wit};
use emotion_plugin_sdk as sdk;
use emotion_plugin_voice::Voice;
use emotion_plugin_voice::synth::{self, Utterance};

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

fn readings(rate: u32, seconds: f64, n: usize) -> (Vec<sdk::Reading>, Vec<wit::Reading>) {
    let mut sdk_readings = Vec::new();
    let mut wit_readings = Vec::new();
    for i in 0..n {
        let u = Utterance {
            f0_hz: 110.0 + 15.0 * i as f64,
            seconds,
            ..Utterance::default()
        };
        let samples = synth::utterance(&u, rate);
        // Users unique to each case: the host's instance keeps baselines
        // across calls, and the first call must meet it cold, like the
        // fresh native instance it is compared with.
        let user = format!("speaker-{rate}-{seconds}-{n}-{}", i % 7);
        sdk_readings.push(sdk::Reading {
            user_id: user.clone(),
            session_id: "bench".into(),
            device_id: None,
            timestamp_ms: 1_723_732_200_000 + i as i64,
            source: sdk::Source::Voice,
            payload: sdk::Payload::Voice(sdk::Voice::Pcm(sdk::Pcm {
                samples: samples.clone(),
                sample_rate_hz: rate,
            })),
        });
        wit_readings.push(wit::Reading {
            user_id: user,
            session_id: "bench".into(),
            device_id: None,
            timestamp_ms: 1_723_732_200_000 + i as i64,
            source: wit::Source::Voice,
            payload: wit::Payload::Voice(wit::Voice::Pcm(wit::Pcm {
                samples,
                sample_rate_hz: rate,
            })),
        });
    }
    (sdk_readings, wit_readings)
}

/// Best seconds per call over 5 rounds of about `budget` each.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u32;
        while start.elapsed() < budget || calls == 0 {
            f();
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(calls));
    }
    best
}

fn main() {
    let components = component_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let from = components.join("voice.wasm");
    std::fs::copy(&from, dir.path().join("voice.wasm")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/build-plugins.sh first)",
            from.display()
        )
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let config = HostConfig {
        dir: dir.path().to_owned(),
        cache_dir: Some(cache.path().to_owned()),
        deadline: Dur(Duration::from_secs(2)),
        batch_max_size: 1000,
        watch_interval: Dur(Duration::ZERO),
        profiler: if std::env::var_os("BENCH_PROFILE").is_some() {
            Profiler::PerfMap
        } else {
            Profiler::None
        },
        ..HostConfig::default()
    };
    let host = PluginHost::new(config, "bench").expect("host");
    let status = host.plugin_status("voice").expect("voice plugin loaded");
    assert!(
        status.producer.is_some(),
        "voice plugin not running: {status:?}"
    );
    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        let native_only = match which.as_str() {
            "voice" => false,
            "voice:native" => true,
            other => panic!("BENCH_PROFILE is voice or voice:native, not {other}"),
        };
        let calls: usize = std::env::var("BENCH_CALLS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2000);
        let (sdk_r, wit_r) = readings(16000, 3.0, 1);
        // A failing call (deadline, quarantine) must not be timed as one.
        match &host.normalize_prepared(Source::Voice, &wit_r)[..] {
            [Ok(Some(_))] => {}
            other => panic!("host: {other:?}"),
        }
        let mut v = Voice::default();
        let start = Instant::now();
        for _ in 0..calls {
            if native_only {
                for r in &sdk_r {
                    black_box(v.normalize(r.clone()));
                }
            } else {
                black_box(host.normalize_prepared(Source::Voice, &wit_r));
            }
        }
        println!(
            "{which}: {calls} calls, {:.3} ms each",
            start.elapsed().as_secs_f64() * 1e3 / calls as f64
        );
        return;
    }

    println!("voice plugin through the plugin host ({})", from.display());
    println!(
        "best of 5 rounds; host = PluginHost::normalize_prepared, native = Voice::normalize in-process"
    );
    println!("synthetic speech-like audio, voiced throughout (every frame pitch-tracked)\n");
    println!(
        "{:>8} | {:>5} | {:>5} | {:>11} | {:>11} | {:>9} | {:>9} | {:>6}",
        "rate Hz", "sec", "batch", "native ms", "host ms", "native RTF", "host RTF", "ratio"
    );
    println!("{:-<88}", "");
    let cases = [
        (16000u32, 1.0, 1usize),
        (16000, 3.0, 1),
        (16000, 10.0, 1),
        (16000, 3.0, 10),
        (8000, 3.0, 1),
        (44100, 3.0, 1),
        (48000, 3.0, 1),
    ];
    for (rate, seconds, batch) in cases {
        let (sdk_r, wit_r) = readings(rate, seconds, batch);
        // Same answers both ways (up to libm differences), or the comparison
        // means nothing.
        let mut native_voice = Voice::default();
        let native_out: Vec<f64> = sdk_r
            .iter()
            .map(|r| match native_voice.normalize(r.clone()) {
                sdk::Outcome::Emotion(e) => e.arousal,
                other => panic!("native: {other:?}"),
            })
            .collect();
        let host_out: Vec<f64> = host
            .normalize_prepared(Source::Voice, &wit_r)
            .into_iter()
            .map(|r| match r {
                Ok(Some(e)) => e.arousal,
                other => panic!("host: {other:?}"),
            })
            .collect();
        for (n, h) in native_out.iter().zip(&host_out) {
            assert!((n - h).abs() < 1e-3, "native {n} vs host {h}");
        }
        let budget = Duration::from_millis(400);
        let audio = seconds * batch as f64;
        let mut v = Voice::default();
        let native = measure(budget, || {
            for r in &sdk_r {
                black_box(v.normalize(r.clone()));
            }
        });
        let hosted = measure(budget, || {
            black_box(host.normalize_prepared(Source::Voice, &wit_r));
        });
        println!(
            "{rate:>8} | {seconds:>5.1} | {batch:>5} | {:>11.3} | {:>11.3} | {:>10.5} | {:>9.5} | {:>5.2}x",
            native * 1e3,
            hosted * 1e3,
            native / audio,
            hosted / audio,
            hosted / native
        );
    }
    let status = host.plugin_status("voice").expect("status");
    assert_eq!(status.stats.failures, 0, "{status:?}");

    // The largest reading the wire accepts (4 MiB of samples: 250 s at
    // 8 kHz) with the largest `max_seconds` (60), under the default memory
    // limit (64 MiB) and deadline (100 ms).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&from, dir.path().join("voice.wasm")).expect("copy");
    let mut per_plugin = std::collections::BTreeMap::new();
    per_plugin.insert(
        "voice".to_owned(),
        PluginConfig {
            settings: Some(serde_json::json!({"max_seconds": 60})),
            ..PluginConfig::default()
        },
    );
    let config = HostConfig {
        dir: dir.path().to_owned(),
        cache_dir: Some(cache.path().to_owned()),
        watch_interval: Dur(Duration::ZERO),
        per_plugin,
        ..HostConfig::default()
    };
    let limits = (config.deadline, config.memory_limit);
    let host = PluginHost::new(config, "bench").expect("host");
    let (_, wit_r) = readings(8000, 250.0, 1);
    // Five calls: the first also grows the new instance's memory (the 4 MiB
    // of samples and the analysis buffers); the later ones reuse it.
    let mut times = Vec::new();
    let mut arousal = f64::NAN;
    for _ in 0..5 {
        let t = Instant::now();
        let out = host.normalize_prepared(Source::Voice, &wit_r);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        match &out[..] {
            [Ok(Some(e))] => arousal = e.arousal,
            other => panic!("largest reading failed: {other:?}"),
        }
    }
    let first = times[0];
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "\nlargest wire reading (250 s at 8 kHz, 4 MiB; max_seconds 60) under the default limits ({:?}, {} MiB): first call {first:.1} ms, best of 5 {best:.1} ms (all: {}), arousal {arousal:.3}",
        limits.0.0,
        limits.1.0 >> 20,
        times
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
