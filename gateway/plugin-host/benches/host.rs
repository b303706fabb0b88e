//! Plugin host benchmark: what the host adds per reading, against the same
//! normalization compiled natively and called in-process, and start-up time
//! from the precompiled cache.
//!
//!     cargo bench -p emotion-plugin-host
//!
//! The plugin is `plugins/testing/lexicon` (tokenizing, case folding,
//! hash lookups, negation and intensifiers over short sentences), built as a
//! component by scripts/build-plugins.sh and linked natively as a library.
//!
//! Both paths produce the same `EmotionEvent`s: the native path runs the
//! plugin's `normalize` on SDK readings and converts each emotion with the
//! host's own `to_event`; the host path sends WIT readings through
//! `PluginHost::normalize_prepared` (copy into the sandbox, call under a
//! deadline and memory limit, copy out, check, convert). Each figure is the
//! best of several rounds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use emotion_core::Source;
use emotion_plugin_host::{Dur, PluginHost, to_event, wit};
use emotion_plugin_sdk::Plugin;
use emotion_test_plugin_lexicon::Lexicon;

const SENTENCES: [&str; 16] = [
    "I am so happy today, everything went really well at work!",
    "This is the worst day ever, I feel terrible and tired.",
    "Not bad at all, actually quite a nice evening with friends.",
    "I'm worried about the exam tomorrow and I can't sleep.",
    "We won the match!!! Absolutely amazing, I love this team.",
    "The meeting was boring and far too long, as usual.",
    "I feel calm and relaxed after the walk by the lake.",
    "Why does nobody listen? I am furious and upset with them.",
    "Thank you so much, I am grateful for your help yesterday.",
    "The results were disappointing but we will do better next time.",
    "I'm not sure how I feel about the new office, it is okay I guess.",
    "She was scared and nervous before the surgery this morning.",
    "What a beautiful surprise, I did not expect flowers today.",
    "Traffic again. Slightly annoyed but fine, podcast helps.",
    "I hate waiting in line, it's such a waste of my time.",
    "Feeling hopeful about the interview, the people seemed nice.",
];

fn wit_reading(i: usize) -> wit::Reading {
    wit::Reading {
        user_id: format!("user-{}", i % 50),
        session_id: format!("session-{}", i % 7),
        device_id: None,
        timestamp_ms: 1_723_732_200_000 + i as i64,
        source: wit::Source::Text,
        payload: wit::Payload::Text(wit::Text {
            content: SENTENCES[i % SENTENCES.len()].to_owned(),
            language: Some("en".into()),
        }),
    }
}

fn sdk_reading(r: &wit::Reading) -> emotion_plugin_sdk::Reading {
    let wit::Payload::Text(t) = &r.payload else {
        unreachable!("text readings only");
    };
    emotion_plugin_sdk::Reading {
        user_id: r.user_id.clone(),
        session_id: r.session_id.clone(),
        device_id: r.device_id.clone(),
        timestamp_ms: r.timestamp_ms,
        source: emotion_plugin_sdk::Source::Text,
        payload: emotion_plugin_sdk::Payload::Text(emotion_plugin_sdk::Text {
            content: t.content.clone(),
            language: t.language.clone(),
        }),
    }
}

/// The native path: the plugin's code in-process, same events out.
fn native(readings: &[wit::Reading], sdk: &[emotion_plugin_sdk::Reading]) -> usize {
    let now = Utc::now();
    let results = Lexicon::normalize(sdk.to_vec());
    let mut events = 0;
    for (r, out) in readings.iter().zip(results) {
        if let emotion_plugin_sdk::Outcome::Emotion(e) = out {
            // The lexicon plugin names no label (the host picks the nearest).
            let e = wit::Emotion {
                label: None,
                valence: e.valence,
                arousal: e.arousal,
                confidence: e.confidence,
                extra: e.extra,
            };
            if to_event(r, e, "lexicon@0.1.0", "bench", now).is_ok() {
                events += 1;
            }
        }
    }
    events
}

/// Best (lowest) nanoseconds per reading over `rounds` rounds of about
/// `budget` each.
fn measure(rounds: usize, budget: Duration, batch: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut readings = 0usize;
        while start.elapsed() < budget {
            black_box(f());
            readings += batch;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / readings as f64);
    }
    best
}

fn main() {
    // EMOTION_PLUGIN_BENCH_DIR: take components from there instead of
    // building them (to compare build settings).
    let override_dir = std::env::var_os("EMOTION_PLUGIN_BENCH_DIR").map(std::path::PathBuf::from);
    let find = |name: &str| match &override_dir {
        Some(d) => d.join(format!("{name}.wasm")),
        None => common::component(name),
    };

    // --- Per-reading cost -------------------------------------------------
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(find("lexicon"), dir.path().join("lexicon.wasm")).expect("copy");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cfg = common::config(dir.path());
    cfg.cache_dir = Some(cache.path().to_owned());
    cfg.batch_max_size = 1000;
    cfg.deadline = Dur(Duration::from_secs(1));
    let host = PluginHost::new(cfg, "bench").expect("host");

    println!("plugin host cost per reading: lexicon text normalizer (plugins/testing/lexicon)");
    println!(
        "best of 5 rounds; host = PluginHost::normalize_prepared, native = the same code in-process"
    );
    println!();
    println!(
        "{:>6} | {:>13} | {:>13} | {:>12} | {:>8}",
        "batch", "native ns/rd", "host ns/rd", "added ns/rd", "ratio"
    );
    println!(
        "{:-<6}-+-{:-<13}-+-{:-<13}-+-{:-<12}-+-{:-<8}",
        "", "", "", "", ""
    );
    for batch in [1usize, 100, 1000] {
        let readings: Vec<wit::Reading> = (0..batch).map(wit_reading).collect();
        let sdk: Vec<_> = readings.iter().map(sdk_reading).collect();
        // Same answers both ways, or the comparison means nothing.
        let host_events = host
            .normalize_prepared(Source::Text, &readings)
            .into_iter()
            .filter(|r| matches!(r, Ok(Some(_))))
            .count();
        assert_eq!(host_events, native(&readings, &sdk), "batch {batch}");
        let budget = Duration::from_millis(400);
        let n = measure(5, budget, batch, || native(&readings, &sdk));
        let h = measure(5, budget, batch, || {
            host.normalize_prepared(Source::Text, &readings).len()
        });
        println!(
            "{batch:>6} | {n:>13.0} | {h:>13.0} | {:>12.0} | {:>7.2}x",
            h - n,
            h / n
        );
    }
    // The same, with empty texts: the plugin finds nothing to do, so what is
    // left is the boundary (copying readings in and results out).
    println!();
    println!("boundary alone (empty texts: the plugin answers `none` at once):");
    for batch in [1usize, 100, 1000] {
        let readings: Vec<wit::Reading> = (0..batch)
            .map(|i| {
                let mut r = wit_reading(i);
                r.payload = wit::Payload::Text(wit::Text {
                    content: String::new(),
                    language: Some("en".into()),
                });
                r
            })
            .collect();
        let sdk: Vec<_> = readings.iter().map(sdk_reading).collect();
        let budget = Duration::from_millis(300);
        let n = measure(3, budget, batch, || native(&readings, &sdk));
        let h = measure(3, budget, batch, || {
            host.normalize_prepared(Source::Text, &readings).len()
        });
        println!("{batch:>6} | {n:>13.0} | {h:>13.0} | {:>12.0} |", h - n);
    }
    let status = host.plugin_status("lexicon").expect("status");
    assert_eq!(status.stats.failures, 0);

    // --- Start-up ----------------------------------------------------------
    let four = ["template", "lexicon", "trap-third", "infinite-loop"];
    let dir = tempfile::tempdir().expect("tempdir");
    for p in four {
        std::fs::copy(find(p), dir.path().join(format!("{p}.wasm"))).expect("copy");
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cfg = common::config(dir.path());
    cfg.cache_dir = Some(cache.path().to_owned());
    let t = Instant::now();
    let cold = PluginHost::new(cfg.clone(), "bench").expect("cold start");
    let cold_time = t.elapsed();
    assert_eq!(
        cold.status()
            .iter()
            .filter(|s| s.producer.is_some())
            .count(),
        4
    );
    drop(cold);
    let mut warm = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let host = PluginHost::new(cfg.clone(), "bench").expect("warm start");
        warm.push(t.elapsed());
        assert!(
            host.status()
                .iter()
                .all(|s| s.from_cache && s.producer.is_some())
        );
    }
    warm.sort();
    println!();
    println!("start-up with 4 plugins ({}):", four.join(", "));
    println!(
        "  compiling (empty cache):   {:8.1} ms",
        cold_time.as_secs_f64() * 1e3
    );
    println!(
        "  from the precompiled cache: {:7.1} ms median, {:.1} ms best, {:.1} ms worst of 10",
        warm[5].as_secs_f64() * 1e3,
        warm[0].as_secs_f64() * 1e3,
        warm[9].as_secs_f64() * 1e3
    );
}
