//! The precompiled-component cache, and batching.

mod common;

use std::time::{Duration, Instant};

use common::*;
use emotion_core::reading::RawReading;
use emotion_plugin_host::{Dur, HostConfig, PluginHost, ReadingError};

const FOUR: [(&str, &str); 4] = [
    ("template", "template"),
    ("echo", "echo"),
    ("trap-third", "trap-third"),
    ("nan-output", "nan-output"),
];

#[test]
fn second_start_hits_the_cache_and_is_fast() {
    let dir = plugin_dir(&FOUR);
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.cache_dir = Some(cache.path().to_owned());

    let t = Instant::now();
    let host = PluginHost::new(cfg.clone(), "gw-test").expect("first start");
    let cold = t.elapsed();
    assert!(host.status().iter().all(|s| !s.from_cache));
    drop(host);
    let entries = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .expect("cache dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    };
    assert_eq!(entries(cache.path()).len(), 4);

    let t = Instant::now();
    let host = PluginHost::new(cfg.clone(), "gw-test").expect("second start");
    let warm = t.elapsed();
    let status = host.status();
    assert!(status.iter().all(|s| s.from_cache), "{status:#?}");
    assert!(host.normalize(vec![survey(5, 5)])[0].is_ok());
    eprintln!("start with 4 plugins: cold {cold:?}, from cache {warm:?}");
    assert!(
        warm * 3 < cold,
        "the cache should make start-up much faster: cold {cold:?}, warm {warm:?}"
    );
    drop(host);

    // A file we did not write (or a damaged one) is never deserialized: it
    // fails its integrity check, is recompiled and replaced.
    let victim = entries(cache.path()).into_iter().next().expect("an entry");
    let mut bytes = std::fs::read(&victim).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, &bytes).expect("tamper");
    let host = PluginHost::new(cfg.clone(), "gw-test").expect("third start");
    let recompiled: Vec<_> = host
        .status()
        .into_iter()
        .filter(|s| !s.from_cache)
        .map(|s| s.name)
        .collect();
    assert_eq!(recompiled.len(), 1, "only the tampered entry is recompiled");
    assert!(host.status().iter().all(|s| s.producer.is_some()));
    drop(host);

    // A lost key invalidates everything (recompiled, not trusted).
    std::fs::remove_file(cache.path().join("cache.key")).expect("rm key");
    let host = PluginHost::new(cfg.clone(), "gw-test").expect("fourth start");
    assert!(host.status().iter().all(|s| !s.from_cache));
    drop(host);

    // Entries of another engine configuration are pruned at start.
    let foreign = cache.path().join("00-0000000000000000.cwasm");
    std::fs::write(&foreign, b"x").expect("write");
    let _host = PluginHost::new(cfg, "gw-test").expect("fifth start");
    assert!(!foreign.exists());
}

#[test]
fn an_unwritable_cache_costs_time_not_correctness() {
    let dir = plugin_dir(&[("template", "template")]);
    let blocker = tempfile::NamedTempFile::new().expect("file");
    let mut cfg = config(dir.path());
    // A regular file where the cache directory should be.
    cfg.cache_dir = Some(blocker.path().join("cache"));
    let host = PluginHost::new(cfg, "gw-test").expect("starts without a cache");
    assert!(host.normalize(vec![survey(5, 5)])[0].is_ok());
}

#[test]
fn submitted_readings_are_batched_by_size_and_latency() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let mut cfg = config(dir.path());
    cfg.batch_max_size = 50;
    cfg.batch_max_latency = Dur(Duration::from_millis(300));
    cfg.queue_capacity = 200;
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");

    // 150 readings at once: three full batches, no waiting for the latency.
    let t = Instant::now();
    let pending: Vec<_> = (0..150)
        .map(|i| host.submit(text("u1", &format!("0.1 0.2 n{i}"))))
        .collect();
    for p in pending {
        assert!(p.wait().expect("ok").is_some());
    }
    assert!(
        t.elapsed() < Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    let calls = host.plugin_status("echo").map_or(0, |s| s.stats.calls);
    assert_eq!(calls, 3, "150 readings in batches of 50");

    // A lone reading waits for the latency bound, then goes alone.
    let t = Instant::now();
    assert!(host.submit(text("u1", "0.1 0.2")).wait().is_ok());
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert_eq!(host.plugin_status("echo").map(|s| s.stats.calls), Some(4));
}

/// A host whose `voice` plugin loops until its `deadline`, sending batches
/// after 1 ms, with the rest of its configuration from `tune`; and a voice
/// reading for it. The directory must outlive the host.
fn stuck_voice(
    deadline: Duration,
    tune: impl FnOnce(&mut HostConfig),
) -> (tempfile::TempDir, PluginHost, RawReading) {
    let dir = plugin_dir(&[("infinite-loop", "infinite-loop")]);
    let mut cfg = config(dir.path());
    cfg.batch_max_latency = Dur(Duration::from_millis(1));
    cfg.deadline = Dur(deadline);
    tune(&mut cfg);
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let voice = reading(r#"{"user_id": "u1", "source": "voice", "payload": {"jitter": 0.01}}"#);
    (dir, host, voice)
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    // While the worker of `voice` is stuck in an infinite loop (until its
    // deadline), readings pile up; past the capacity they are refused at
    // once instead of growing the queue without bound.
    let (_dir, host, voice) = stuck_voice(Duration::from_millis(1500), |cfg| {
        cfg.batch_max_size = 10;
        cfg.queue_capacity = 100;
    });
    let first = host.submit(voice.clone());
    // The worker counts the call as it starts it: from then on it is stuck,
    // and the queue holds only what is submitted below.
    assert!(
        eventually(Duration::from_secs(10), || host
            .plugin_status("infinite-loop")
            .is_some_and(|s| s.stats.calls == 1)),
        "the worker takes the first reading"
    );
    let t = Instant::now();
    let pending: Vec<_> = (0..150).map(|_| host.submit(voice.clone())).collect();
    let overloaded = pending
        .into_iter()
        .filter_map(|p| match p.wait() {
            Err(ReadingError::Overloaded(100, emotion_core::Source::Voice)) => Some(()),
            _ => None,
        })
        .count();
    assert_eq!(overloaded, 50, "capacity 100: the last 50 are refused");
    assert!(
        matches!(first.wait(), Err(ReadingError::PluginFailed { .. })),
        "the stuck batch fails on its deadline"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_source_with_two_workers_runs_two_batches_at_once() {
    // Both readings go to a plugin that loops until its deadline. With one
    // worker the second batch could only start once the first had failed;
    // with `workers.voice = 2` the second starts while the first still runs.
    let (_dir, host, voice) = stuck_voice(Duration::from_secs(3), |cfg| {
        cfg.batch_max_size = 1;
        cfg.workers.insert("voice".into(), 2);
    });
    let first_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiter = {
        let first = host.submit(voice.clone());
        let done = first_done.clone();
        std::thread::spawn(move || {
            let r = first.wait();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        })
    };
    let second = host.submit(voice);
    assert_eq!(
        host.workers().get(&emotion_core::Source::Voice),
        Some(&2),
        "the voice source's workers, as /api/plugins shows them"
    );
    assert!(
        eventually(Duration::from_secs(10), || host
            .plugin_status("infinite-loop")
            .is_some_and(|s| s.stats.calls == 2)),
        "both workers take a batch"
    );
    assert!(
        !first_done.load(std::sync::atomic::Ordering::SeqCst),
        "the second batch started while the first was still running"
    );
    for r in [waiter.join().expect("waiter"), second.wait()] {
        assert!(
            matches!(r, Err(ReadingError::PluginFailed { .. })),
            "each stuck batch fails on its own deadline: {r:?}"
        );
    }
}

#[tokio::test]
async fn pending_readings_can_be_awaited() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let host = PluginHost::new(config(dir.path()), "gw-test").expect("host starts");
    let a = host.submit(text("u1", "joy"));
    let b = host.submit(text("u2", "0.5 0.5"));
    let (a, b) = (a.await, b.await);
    assert_eq!(
        a.expect("ok").expect("event").emotion_label,
        emotion_core::EmotionLabel::Joy
    );
    assert_eq!(b.expect("ok").expect("event").user_id, "u2");
    drop(host);
}
