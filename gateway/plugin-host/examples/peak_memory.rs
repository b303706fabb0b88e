//! The most linear memory one instance of a plugin reaches on a workload:
//! the figure to declare with `export_plugin!(P, memory = "…")`.
//!
//! ```sh
//! scripts/build-plugins.sh
//! cargo run --release -p emotion-plugin-host --example peak_memory -- COMPONENT [READINGS.jsonl]
//! ```
//!
//! The component runs alone in a host, with a 4 GiB memory limit and a 60 s
//! deadline so that neither bounds it, in batches of 100 (the default batch
//! size). With a JSONL file of raw readings, that is the workload. Without
//! one, text: 100 texts of 5 words, of 40 words, and of 16,000 bytes (just
//! under the text plugins' default `max_bytes`, and past the encoder's 254
//! word pieces). After each, it prints the peak so far and the time taken.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use emotion_core::reading::RawReading;
use emotion_plugin_host::{ByteSize, Dur, HostConfig, PluginConfig, PluginHost};

const WORDS: &[&str] = &[
    "the",
    "match",
    "was",
    "absolutely",
    "amazing",
    "and",
    "I",
    "could",
    "not",
    "stop",
    "smiling",
    "although",
    "traffic",
    "afterwards",
    "made",
    "everyone",
    "furious",
    "tired",
    "worried",
    "about",
    "tomorrow's",
    "exam",
    "results",
    "yet",
    "hopeful",
    "grateful",
    "unbelievable",
    "disappointing",
    "calm",
    "evening",
    "by",
    "lake",
    "with",
    "friends",
];

fn text_of(words: usize, max_bytes: usize, seed: usize) -> String {
    let mut out = String::new();
    for i in 0..words {
        let w = WORDS[(seed * 7 + i * 13) % WORDS.len()];
        if out.len() + w.len() + 1 > max_bytes {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

fn text_batch(words: usize, max_bytes: usize) -> Vec<RawReading> {
    (0..100)
        .map(|i| {
            let json = serde_json::json!({
                "user_id": format!("u{i}"),
                "source": "text",
                "payload": {"text": text_of(words, max_bytes, i), "language": "en"},
            });
            RawReading::from_json_str(&json.to_string(), None)
        })
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| fail(&format!("synthetic reading refused: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("peak_memory: {message}");
    std::process::exit(1)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(component) = args.next().map(PathBuf::from) else {
        fail("usage: peak_memory COMPONENT.wasm [READINGS.jsonl]");
    };
    let workloads: Vec<(String, Vec<RawReading>)> = match args.next() {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| fail(&format!("cannot read {file}: {e}")));
            let readings = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| RawReading::from_json_str(l, None))
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| fail(&format!("{file}: {e}")));
            vec![(file, readings)]
        }
        None => vec![
            ("100 texts of 5 words".into(), text_batch(5, usize::MAX)),
            ("100 texts of 40 words".into(), text_batch(40, usize::MAX)),
            (
                "100 texts of 16,000 bytes".into(),
                text_batch(usize::MAX, 16_000),
            ),
        ],
    };

    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
    let name = "measured";
    std::fs::copy(&component, dir.path().join(format!("{name}.wasm")))
        .unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", component.display())));
    let mut config = HostConfig {
        dir: dir.path().to_owned(),
        watch_interval: Dur(Duration::ZERO),
        ..HostConfig::default()
    };
    config.per_plugin.insert(
        name.into(),
        PluginConfig {
            deadline: Some(Dur(Duration::from_secs(60))),
            memory_limit: Some(ByteSize(4 << 30)),
            settings: None,
            batch_max_size: None,
        },
    );
    let host = PluginHost::new(config, "peak-memory").unwrap_or_else(|e| fail(&e.to_string()));
    let status = || {
        host.plugin_status(name)
            .unwrap_or_else(|| fail("the plugin vanished"))
    };
    let s = status();
    if let emotion_plugin_host::PluginState::Rejected { reason } = &s.state {
        fail(&format!("{} refused: {reason}", component.display()));
    }
    println!(
        "{} ({}): declares {}",
        component.display(),
        s.producer.as_deref().unwrap_or("?"),
        s.declared_memory_bytes
            .map_or_else(|| "no memory need".into(), mib)
    );
    println!(
        "after load and self-check: peak {}",
        mib(s.peak_memory_bytes.unwrap_or(0))
    );
    for (label, readings) in workloads {
        let n = readings.len();
        let started = Instant::now();
        let results = host.normalize(readings);
        let elapsed = started.elapsed();
        let failed = results.iter().filter(|r| r.is_err()).count();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            eprintln!("  first error: {e}");
        }
        println!(
            "{label}: {n} readings, {failed} errors, {:.2} s; peak {}",
            elapsed.as_secs_f64(),
            mib(status().peak_memory_bytes.unwrap_or(0))
        );
    }
}
