//! Readings per second of the text plugin through the gateway's plugin host,
//! against the same normalization compiled natively.
//!
//!     scripts/build-plugins.sh
//!     cargo run --release --manifest-path plugins/text/host-bench/Cargo.toml [-- COMPONENT_DIR]
//!
//! COMPONENT_DIR defaults to `$CARGO_TARGET_DIR/plugins` (or `target/plugins`).
//! Host = `PluginHost::normalize_prepared` (copy into the sandbox, call under
//! the deadline and memory limit, copy out, check, convert to events);
//! native = `Plugin::normalize` in-process. Best of 5 rounds.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use emotion_core::Source;
use emotion_plugin_host::{Dur, HostConfig, PluginHost, Profiler, wit};
use emotion_plugin_sdk as sdk;
use emotion_plugin_sdk::Plugin;
use emotion_plugin_text::TextPlugin;

/// Chat-like messages of several lengths, with emphasis, emoticons and emoji.
const MESSAGES: [&str; 20] = [
    "I am so happy today, everything went really well at work!",
    "This is the worst day ever, I feel terrible and tired.",
    "Not bad at all, actually quite a nice evening with friends.",
    "I'm worried about the exam tomorrow and I can't sleep.",
    "We won the match!!! Absolutely amazing, I LOVE this team.",
    "The meeting was boring and far too long, as usual.",
    "ok",
    "Why does nobody listen? I am furious and upset with them.",
    "Thank you so much \u{1F64F} I am grateful for your help yesterday.",
    "The results were disappointing but we will do better next time.",
    "sooo tired :(",
    "She was scared and nervous before the surgery this morning.",
    "What a beautiful surprise \u{1F60D} I did not expect flowers today.",
    "Traffic again. Slightly annoyed but fine, podcast helps.",
    "I hate waiting in line, it's such a waste of my time.",
    "Feeling hopeful about the interview, the people seemed nice :)",
    "lol \u{1F602}\u{1F602}",
    "The train leaves at 8:15 from platform 3.",
    "Honestly I don't know what to think anymore, it has been a long week and nothing seems to work out the way we planned.",
    "Great news!!",
];

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

fn readings(n: usize) -> (Vec<sdk::Reading>, Vec<wit::Reading>) {
    let sdk: Vec<sdk::Reading> = (0..n)
        .map(|i| sdk::Reading {
            user_id: format!("user-{}", i % 50),
            session_id: "bench".into(),
            device_id: None,
            timestamp_ms: 1_723_732_200_000 + i as i64,
            source: sdk::Source::Text,
            payload: sdk::Payload::Text(sdk::Text {
                content: MESSAGES[i % MESSAGES.len()].into(),
                language: Some("en".into()),
            }),
        })
        .collect();
    let wit = sdk
        .iter()
        .map(|r| {
            let sdk::Payload::Text(t) = &r.payload else {
                unreachable!("text only")
            };
            wit::Reading {
                user_id: r.user_id.clone(),
                session_id: r.session_id.clone(),
                device_id: None,
                timestamp_ms: r.timestamp_ms,
                source: wit::Source::Text,
                payload: wit::Payload::Text(wit::Text {
                    content: t.content.clone(),
                    language: t.language.clone(),
                }),
            }
        })
        .collect();
    (sdk, wit)
}

/// Best nanoseconds per reading over 5 rounds of about 300 ms.
fn measure(batch: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut count = 0usize;
        while start.elapsed() < Duration::from_millis(300) {
            let n = black_box(f());
            assert_eq!(n, batch);
            count += batch;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / count as f64);
    }
    best
}

fn main() {
    let components = component_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let from = components.join("text.wasm");
    let size = std::fs::metadata(&from)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/build-plugins.sh first)",
                from.display()
            )
        })
        .len();
    std::fs::copy(&from, dir.path().join("text.wasm")).expect("copy component");
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
    let started = Instant::now();
    let host = PluginHost::new(config, "bench").expect("host");
    let start_ms = started.elapsed().as_secs_f64() * 1e3;
    for s in host.status() {
        assert!(s.producer.is_some(), "plugin not running: {s:?}");
    }

    println!(
        "text plugin through the plugin host ({}, {size} bytes; host start-up incl. compile {start_ms:.0} ms)",
        from.display()
    );
    println!(
        "best of 5 rounds; host = PluginHost::normalize_prepared, native = Plugin::normalize in-process\n"
    );
    println!(
        "{:>5} | {:>11} | {:>11} | {:>8} | {:>12}",
        "batch", "native µs", "host µs", "ratio", "host rd/s"
    );
    println!(
        "{:-<5}-+-{:-<11}-+-{:-<11}-+-{:-<8}-+-{:-<12}",
        "", "", "", "", ""
    );
    // Profiling mode: `BENCH_PROFILE=text[:native] BENCH_CALLS=n` runs only
    // that path at batch 100, for perf or callgrind.
    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        let calls: usize = std::env::var("BENCH_CALLS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2000);
        let (sdk_readings, wit_readings) = readings(100);
        for _ in 0..calls {
            if which.ends_with(":native") {
                black_box(TextPlugin::normalize(sdk_readings.clone()));
            } else {
                black_box(host.normalize_prepared(Source::Text, &wit_readings));
            }
        }
        return;
    }
    for batch in [1usize, 100, 1000] {
        let (sdk_readings, wit_readings) = readings(batch);
        let results = host.normalize_prepared(Source::Text, &wit_readings);
        let events = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        assert_eq!(
            events,
            batch,
            "{:?}",
            results.iter().find(|r| !matches!(r, Ok(Some(_))))
        );
        let n = measure(batch, || TextPlugin::normalize(sdk_readings.clone()).len());
        let h = measure(batch, || {
            host.normalize_prepared(Source::Text, &wit_readings).len()
        });
        println!(
            "{batch:>5} | {:>11.2} | {:>11.2} | {:>7.2}x | {:>12.0}",
            n / 1e3,
            h / 1e3,
            h / n,
            1e9 / h
        );
    }
    for s in host.status() {
        assert_eq!(s.stats.failures, 0, "{s:?}");
    }
    println!(
        "\n(native µs include cloning the batch, as the host path includes copying it into the sandbox)"
    );
}
