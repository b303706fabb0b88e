//! EmoBank dev correlation and sentences per second of the text-encoder
//! plugin through the gateway's plugin host, and the same for the `text`
//! (lexicon) plugin beside it:
//!
//!     scripts/build-plugins.sh
//!     cargo run --release --manifest-path plugins/text-encoder/host-bench/Cargo.toml [-- COMPONENT_DIR]
//!
//! Components are looked up in COMPONENT_DIR, else in `$CARGO_TARGET_DIR` (or
//! `target`)`/plugins` and then `/optional-plugins` (where build-plugins.sh
//! puts text-encoder).
//!
//! To compare builds of text-encoder on a shared machine, where speed varies
//! 2× from minute to minute, give their paths: they run in turn, round after
//! round, and each one's speed is also printed as a ratio to the first's in
//! the same round (the median over rounds at the end):
//!
//!     cargo run --release --manifest-path plugins/text-encoder/host-bench/Cargo.toml -- \
//!         --compare /tmp/te-main.wasm target/optional-plugins/text-encoder.wasm [--rounds 3]
//!
//! Every dev sentence goes through `PluginHost::normalize_prepared` (copy into
//! the sandbox, call under the deadline and memory limit, copy out, check,
//! convert to events) in batches of 100 (the host's default batch size), one
//! host thread; r is computed from the events' valence and arousal. The
//! encoder then runs once more as the gateway runs it with `[plugins.workers]
//! text = N`, N the machine's cores: every sentence submitted to the host's
//! batcher at once, its N workers taking batches of 100, each on its own
//! plugin instance (the `workers` column).
//! `EMOBANK_CSV` overrides the data path; `BENCH_PROFILE=1` writes the
//! plugins' function names to `/tmp/perf-<pid>.map` for `perf` (or for
//! reading their machine code with gdb while it runs).

#[path = "../../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use emotion_core::Source;
use emotion_core::reading::{RawReading, ReadingPayload, TextPayload};
use emotion_plugin_host::{Dur, HostConfig, PluginHost, Profiler, wit};

fn component(name: &str) -> PathBuf {
    let file = format!("{name}.wasm");
    if let Some(dir) = std::env::args().nth(1) {
        return PathBuf::from(dir).join(file);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    let default = target.join("plugins").join(&file);
    if default.is_file() {
        return default;
    }
    target.join("optional-plugins").join(file)
}

fn reading(i: usize, text: &str) -> wit::Reading {
    wit::Reading {
        user_id: format!("user-{}", i % 50),
        session_id: "bench".into(),
        device_id: None,
        timestamp_ms: 1_723_732_200_000 + i as i64,
        source: wit::Source::Text,
        payload: wit::Payload::Text(wit::Text {
            content: text.into(),
            language: Some("en".into()),
        }),
    }
}

/// The same reading as the gateway receives it (for the batcher's path).
fn raw(i: usize, text: &str) -> RawReading {
    RawReading {
        user_id: format!("user-{}", i % 50),
        session_id: Some("bench".into()),
        device_id: None,
        timestamp: None,
        source: Source::Text,
        payload: ReadingPayload::Text(TextPayload {
            text: text.into(),
            language: Some("en".into()),
        }),
    }
}

struct Run {
    valence_r: f64,
    arousal_r: f64,
    per_second: f64,
    /// The slowest call, when the bench made the calls itself.
    batch_ms: Option<f64>,
    start_ms: f64,
    size: u64,
}

/// One plugin alone in a host (component `from`, loaded as `name`): every
/// dev sentence, batches of 100.
fn run(name: &str, from: &std::path::Path, rows: &[&common::Row], workers: usize) -> Run {
    let size = std::fs::metadata(from)
        .unwrap_or_else(|e| {
            common::fail(&format!(
                "{}: {e} (run scripts/build-plugins.sh first)",
                from.display()
            ))
        })
        .len();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(from, dir.path().join(format!("{name}.wasm"))).expect("copy component");
    let cache = tempfile::tempdir().expect("tempdir");
    let config = HostConfig {
        dir: dir.path().to_owned(),
        cache_dir: Some(cache.path().to_owned()),
        // A batch of 100 sentences through the encoder takes seconds on this
        // machine, not the lexicon's 100 ms.
        deadline: Dur(Duration::from_secs(30)),
        watch_interval: Dur(Duration::ZERO),
        // `BENCH_PROFILE=1`: name the plugins' functions for `perf` (and a
        // debugger) in /tmp/perf-<pid>.map.
        profiler: if std::env::var_os("BENCH_PROFILE").is_some() {
            Profiler::PerfMap
        } else {
            Profiler::None
        },
        workers: [("text".to_string(), workers)].into(),
        ..HostConfig::default()
    };
    let started = Instant::now();
    let host = PluginHost::new(config, "bench").unwrap_or_else(|e| common::fail(&e.to_string()));
    // The first call loads the embedded model; not counted.
    let warm = host.normalize_prepared(Source::Text, &[reading(0, "warming up")]);
    if !matches!(warm.first(), Some(Ok(Some(_)))) {
        common::fail(&format!(
            "{name}: warm-up reading failed: {warm:?}; plugins: {:?}",
            host.status()
        ));
    }
    let start_ms = started.elapsed().as_secs_f64() * 1e3;

    let readings: Vec<wit::Reading> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| reading(i, &r.text))
        .collect();
    // One worker: every batch through `normalize_prepared` on this thread.
    // More: the host's own batcher with `workers.text = N`, as the gateway
    // runs it (every sentence submitted at once, batches of 100 taken by the
    // N workers, each on its own plugin instance).
    let t0 = Instant::now();
    // The slowest call is known only on the first path (the batcher's calls
    // are its own).
    let mut slowest = None;
    let results: Vec<emotion_plugin_host::ReadingResult> = if workers == 1 {
        let mut all = Vec::with_capacity(readings.len());
        for batch in readings.chunks(100) {
            let t = Instant::now();
            all.extend(host.normalize_prepared(Source::Text, batch));
            slowest = slowest.max(Some(t.elapsed()));
        }
        all
    } else {
        let pending: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| host.submit(raw(i, &r.text)))
            .collect();
        pending.into_iter().map(|p| p.wait()).collect()
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let (mut pv, mut pa, mut yv, mut ya) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (res, row) in results.iter().zip(rows) {
        match res {
            Ok(Some(e)) => {
                pv.push(e.valence);
                pa.push(e.arousal);
                yv.push(row.v);
                ya.push(row.a);
            }
            // Sentences with nothing to read ("..") count as neutral.
            Ok(None) => {
                pv.push(0.0);
                pa.push(0.5);
                yv.push(row.v);
                ya.push(row.a);
            }
            Err(e) => common::fail(&format!("{name}: {:?}: {e}", row.text)),
        }
    }
    Run {
        valence_r: common::pearson(&pv, &yv),
        arousal_r: common::pearson(&pa, &ya),
        per_second: rows.len() as f64 / elapsed,
        batch_ms: slowest.map(|d| d.as_secs_f64() * 1e3),
        start_ms,
        size,
    }
}

fn main() {
    let (path, rows) = common::load_emobank();
    let dev: Vec<&common::Row> = rows.iter().filter(|r| r.split == "dev").collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--compare") {
        return compare(&args[1..], &dev);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "EmoBank dev ({} sentences, {}) through the plugin host, batches of 100",
        dev.len(),
        path.display()
    );
    println!();
    println!(
        "{:<13} | {:>7} | {:>10} | {:>10} | {:>12} | {:>16} | {:>9} | {:>8}",
        "plugin",
        "workers",
        "valence r",
        "arousal r",
        "sentences/s",
        "slowest batch ms",
        "size MiB",
        "start ms"
    );
    println!(
        "{:-<13}-+-{:-<7}-+-{:-<10}-+-{:-<10}-+-{:-<12}-+-{:-<16}-+-{:-<9}-+-{:-<8}",
        "", "", "", "", "", "", "", ""
    );
    // The encoder also with one batch worker per core (`[plugins.workers]`).
    let runs = [("text", 1), ("text-encoder", 1), ("text-encoder", cores)];
    for (i, &(name, workers)) in runs.iter().enumerate() {
        if i > 0 && runs[i - 1] == (name, workers) {
            continue;
        }
        let r = run(name, &component(name), &dev, workers);
        println!(
            "{:<13} | {:>7} | {:>10.3} | {:>10.3} | {:>12.0} | {:>16} | {:>9.1} | {:>8.0}",
            name,
            workers,
            r.valence_r,
            r.arousal_r,
            r.per_second,
            r.batch_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms:.0}")),
            r.size as f64 / (1 << 20) as f64,
            r.start_ms
        );
    }
    println!();
    println!("targets for text-encoder: valence r >= 0.70, arousal r >= 0.54, >= 200 sentences/s");
}

/// `--compare A.wasm B.wasm … [--rounds N]`: the text-encoder builds in turn,
/// N rounds (default 3), speeds as ratios to A's in the same round.
fn compare(args: &[String], dev: &[&common::Row]) {
    let mut paths = Vec::new();
    let mut rounds = 3;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--rounds" {
            rounds = it
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| common::fail("--rounds needs a positive number"));
        } else {
            paths.push(PathBuf::from(a));
        }
    }
    if paths.len() < 2 {
        common::fail("--compare needs at least two components");
    }
    println!(
        "text-encoder builds on EmoBank dev ({} sentences), batches of 100, one thread, {rounds} rounds",
        dev.len()
    );
    let mut ratios = vec![Vec::new(); paths.len()];
    for round in 1..=rounds {
        let mut first = None;
        for (i, p) in paths.iter().enumerate() {
            let r = run("text-encoder", p, dev, 1);
            let base = *first.get_or_insert(r.per_second);
            ratios[i].push(r.per_second / base);
            println!(
                "round {round}  {:<50}  {:>7.1} sentences/s  ×{:.2}  valence r {:.3}  arousal r {:.3}  slowest batch {:.0} ms",
                p.display(),
                r.per_second,
                r.per_second / base,
                r.valence_r,
                r.arousal_r,
                r.batch_ms.unwrap_or_default()
            );
        }
    }
    println!();
    for (p, r) in paths.iter().zip(&mut ratios) {
        r.sort_by(f64::total_cmp);
        println!(
            "{:<50}  median ×{:.2} of the first (rounds: {})",
            p.display(),
            r[r.len() / 2],
            r.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
