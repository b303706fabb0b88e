//! Canary rollout: a replacement shadows the serving version on live
//! readings and is promoted only if it fails no more often; a replacement
//! that traps, errs or misses deadlines on live readings is rolled back while
//! the serving version answers every reading as before.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use emotion_core::Source;
use emotion_plugin_host::{
    CanaryConfig, CanaryState, CanaryStatus, Dur, HostConfig, PluginHost, PluginState,
    ReloadOutcome,
};

/// Replace a file the way a deployment should: write beside it, then rename.
fn deploy(component_name: &str, dst: &Path) {
    let bytes = std::fs::read(component(component_name)).expect("component");
    let tmp = dst.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dst).expect("rename");
}

fn canary_config(dir: &Path, min_readings: u64, max_duration: Duration) -> HostConfig {
    let mut cfg = config(dir);
    cfg.canary = CanaryConfig {
        enabled: true,
        min_readings,
        max_duration: Dur(max_duration),
        margin: 0.01,
    };
    cfg
}

fn canary(host: &PluginHost) -> Option<CanaryStatus> {
    host.plugin_status("echo").and_then(|s| s.canary)
}

fn decided(host: &PluginHost) -> bool {
    canary(host).is_some_and(|c| c.state != CanaryState::Shadowing)
}

/// Deploy `component` over the serving echo and reload it: it must start
/// shadowing as a canary.
fn start_canary(host: &PluginHost, dir: &Path, component: &str) {
    deploy(component, &dir.join("echo.wasm"));
    assert!(matches!(
        host.reload_plugin("echo").outcome,
        ReloadOutcome::Canary { .. }
    ));
}

/// Wait up to `secs` for the canary's promotion or rollback.
fn await_decision(host: &PluginHost, secs: u64) {
    assert!(
        eventually(Duration::from_secs(secs), || decided(host)),
        "no decision: {:?}",
        host.plugin_status("echo")
    );
}

/// Check one answer of the serving version: an event from `producer` that
/// echoes `content` (or, for `error …` content, that error).
fn check_answer(
    result: &emotion_plugin_host::ReadingResult,
    content: &str,
    producer: &str,
) -> Result<(), String> {
    if let Some(message) = content.strip_prefix("error ") {
        return match result {
            Err(emotion_plugin_host::ReadingError::Plugin { message: m, .. }) if m == message => {
                Ok(())
            }
            other => Err(format!(
                "{content}: expected its error answer, got {other:?}"
            )),
        };
    }
    match result {
        Ok(Some(e)) => {
            let echoed = e
                .context
                .as_ref()
                .and_then(|c| c.value().get("echo")?.as_str().map(str::to_owned));
            if e.producer == producer && echoed.as_deref() == Some(content) {
                Ok(())
            } else {
                Err(format!(
                    "{content}: answered by {} with {echoed:?}, expected {producer}",
                    e.producer
                ))
            }
        }
        other => Err(format!("{content}: expected an event, got {other:?}")),
    }
}

#[test]
fn a_good_replacement_shadows_is_promoted_after_enough_readings_and_then_serves() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let host = PluginHost::new(
        canary_config(dir.path(), 200, Duration::from_secs(120)),
        "gw-test",
    )
    .expect("host starts");
    let file = dir.path().join("echo.wasm");

    // A replacement starts shadowing; the old version keeps serving.
    deploy("echo-faulty", &file);
    assert_eq!(
        host.reload_plugin("echo").outcome,
        ReloadOutcome::Canary {
            serving: "echo@1.0.0".into(),
            candidate: "echo@3.0.0-faulty".into()
        }
    );
    // A newer file before any decision replaces the candidate.
    deploy("echo-v2", &file);
    assert_eq!(
        host.reload_plugin("echo").outcome,
        ReloadOutcome::Canary {
            serving: "echo@1.0.0".into(),
            candidate: "echo@2.0.0".into()
        }
    );
    let c = canary(&host).expect("a canary");
    assert_eq!(c.state, CanaryState::Shadowing);
    assert_eq!(
        (c.candidate.producer.as_str(), c.current.producer.as_str()),
        ("echo@2.0.0", "echo@1.0.0")
    );
    assert_eq!((c.readings, c.candidate.error_rate), (0, None));

    // Readings flow, one in ten an error both versions answer alike: the
    // comparison is relative, so these do not hold the candidate back.
    let mut sent = 0usize;
    let mut by_v1 = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !decided(&host) {
        assert!(
            Instant::now() < deadline,
            "no decision: {:?}",
            canary(&host)
        );
        let contents: Vec<String> = (0..20)
            .map(|i| {
                sent += 1;
                if i == 7 {
                    format!("error unreadable {sent}")
                } else {
                    format!("0.25 0.5 r{sent}")
                }
            })
            .collect();
        let before = host.plugin_status("echo").and_then(|s| s.producer);
        let results = host.normalize(contents.iter().map(|c| text("u1", c)).collect());
        let after = host.plugin_status("echo").and_then(|s| s.producer);
        for (r, c) in results.iter().zip(&contents) {
            // Until the promotion, every answer is the serving version's.
            if before == after && after.as_deref() == Some("echo@1.0.0") {
                check_answer(r, c, "echo@1.0.0").expect("the serving version answers");
                by_v1 += 1;
            }
        }
    }
    let c = canary(&host).expect("canary");
    assert_eq!(c.state, CanaryState::Promoted, "{c:?}");
    assert!(c.readings >= 200, "{c:?}");
    // (The readings of the call during which v2 was promoted are not
    // counted here, though the comparison may include them.)
    assert!(by_v1 >= 180, "v1 answered while v2 shadowed: {by_v1}");
    assert_eq!(c.candidate.errors, c.current.errors, "{c:?}");
    assert!(
        c.current.errors >= c.readings / 20,
        "the error answers were compared: {c:?}"
    );
    assert_eq!(
        (c.candidate.deadline_misses, c.current.deadline_misses),
        (0, 0)
    );
    assert!(c.decided_at.is_some());
    let reason = c.reason.clone().expect("reason");
    assert!(
        reason.starts_with("no worse than the serving version within the margin of 1.0%"),
        "{reason}"
    );
    let s = host.plugin_status("echo").expect("status");
    assert_eq!(s.producer.as_deref(), Some("echo@2.0.0"));
    assert_eq!(s.state, PluginState::Running);
    let last = s.last_reload.expect("last reload").message;
    assert!(
        last.starts_with("promoted echo@2.0.0 over echo@1.0.0: "),
        "{last}"
    );

    // Now v2 serves.
    let r = host.normalize(vec![text("u1", "0.1 0.2 after")]);
    check_answer(&r[0], "0.1 0.2 after", "echo@2.0.0").expect("v2 serves");
    let json = serde_json::to_value(host.plugin_status("echo")).expect("json");
    assert_eq!(json["canary"]["state"], "promoted", "{json}");
    assert_eq!(
        json["canary"]["candidate"]["error_rate"],
        c.candidate
            .error_rate
            .map_or(serde_json::Value::Null, Into::into)
    );
}

/// Two batch threads for the source and three senders keeping readings in
/// flight through the batcher: while the candidate shadows, every reading is
/// answered once, by the serving version; the candidate is promoted on the
/// batches of both threads, and from a sender's first answer by it on,
/// every later reading of that sender is its (batches in flight when it was
/// promoted finish on the version they started with, and a sender sends
/// its next readings only once all of its previous ones were answered).
#[test]
fn with_two_workers_a_good_replacement_is_promoted_and_every_reading_is_answered_once() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let mut cfg = canary_config(dir.path(), 300, Duration::from_secs(120));
    cfg.workers.insert("text".into(), 2);
    cfg.batch_max_size = 8;
    cfg.batch_max_latency = Dur(Duration::from_millis(2));
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    assert_eq!(host.workers().get(&Source::Text), Some(&2));

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let host = host.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut by_v1, mut by_v2) = (0usize, 0usize);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<(String, _)> = (0..12)
                        .map(|_| {
                            n += 1;
                            let content = format!("0.25 0.5 {t}-{n}");
                            let pending = host.submit(text("u1", &content));
                            (content, pending)
                        })
                        .collect();
                    for (content, pending) in batch {
                        let r = pending.wait();
                        if by_v2 == 0 && check_answer(&r, &content, "echo@1.0.0").is_ok() {
                            by_v1 += 1;
                        } else if let Err(e) = check_answer(&r, &content, "echo@2.0.0") {
                            panic!("sender {t}, {by_v2} answers by v2 so far: {e}");
                        } else {
                            by_v2 += 1;
                        }
                    }
                }
                (by_v1, by_v2)
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || host
        .plugin_status("echo")
        .is_some_and(|s| s.stats.readings > 100)));

    start_canary(&host, dir.path(), "echo-v2");
    await_decision(&host, 60);
    let c = canary(&host).expect("canary");
    assert_eq!(c.state, CanaryState::Promoted, "{c:?}");
    assert!(c.readings >= 300, "{c:?}");
    assert_eq!((c.candidate.errors, c.current.errors), (0, 0), "{c:?}");
    // A while more after the promotion, then the senders' verdict.
    let at_decision = host.plugin_status("echo").map_or(0, |s| s.stats.readings);
    assert!(eventually(Duration::from_secs(10), || host
        .plugin_status("echo")
        .is_some_and(|s| s.stats.readings > at_decision + 100)));
    stop.store(true, Ordering::Relaxed);
    let answers: Vec<(usize, usize)> = senders
        .into_iter()
        .map(|s| {
            s.join()
                .expect("every reading answered once, by v1 then by v2")
        })
        .collect();
    for (t, &(by_v1, by_v2)) in answers.iter().enumerate() {
        assert!(
            by_v1 > 0 && by_v2 > 0,
            "sender {t}: {by_v1} by v1, {by_v2} by v2"
        );
    }
    let s = host.plugin_status("echo").expect("status");
    assert_eq!(s.producer.as_deref(), Some("echo@2.0.0"));
    assert_eq!(s.state, PluginState::Running);
    assert_eq!((s.stats.failures, s.stats.errors), (0, 0), "{s:?}");
}

#[test]
fn a_replacement_that_traps_or_errs_on_live_readings_is_rolled_back_while_the_old_one_serves_every_reading()
 {
    faulty_replacement_is_rolled_back(1);
}

/// The same with two batch threads for the source: both hand their batches
/// to the one shadow thread, and neither ever answers with the candidate.
#[test]
fn with_two_workers_a_faulty_replacement_is_rolled_back_and_the_old_one_serves_every_reading() {
    faulty_replacement_is_rolled_back(2);
}

fn faulty_replacement_is_rolled_back(workers: usize) {
    let dir = plugin_dir(&[("echo", "echo")]);
    let mut cfg = canary_config(dir.path(), 300, Duration::from_secs(120));
    cfg.workers.insert("text".into(), workers);
    cfg.batch_max_size = 8;
    cfg.batch_max_latency = Dur(Duration::from_millis(2));
    cfg.watch_interval = Dur(Duration::from_millis(30));
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    assert_eq!(host.workers().get(&Source::Text), Some(&workers));
    let _watcher = host.watch().expect("watching");

    // Two senders, each keeping 16 readings in flight through the batcher;
    // about one reading in 25 says `boom` (the candidate traps on its
    // batch), one in 25 says `oops` (the candidate answers an error). The
    // serving version answers all of them as usual.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let host = host.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answered = 0usize;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<(String, _)> = (0..16)
                        .map(|_| {
                            n += 1;
                            let content = match n % 25 {
                                3 => format!("0.2 0.4 boom {t}-{n}"),
                                11 => format!("calm 0.1 0.3 oops {t}-{n}"),
                                _ => format!("0.25 0.5 {t}-{n}"),
                            };
                            let pending = host.submit(text("u1", &content));
                            (content, pending)
                        })
                        .collect();
                    for (content, pending) in batch {
                        let r = pending.wait();
                        if let Err(e) = check_answer(&r, &content, "echo@1.0.0") {
                            panic!("a reading's sender saw something else than v1: {e}");
                        }
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || host
        .plugin_status("echo")
        .is_some_and(|s| s.stats.readings > 100)));

    deploy("echo-faulty", &dir.path().join("echo.wasm"));
    await_decision(&host, 60);
    // A while more after the decision, then the senders' verdict.
    let at_decision = host.plugin_status("echo").map_or(0, |s| s.stats.readings);
    assert!(eventually(Duration::from_secs(10), || host
        .plugin_status("echo")
        .is_some_and(|s| s.stats.readings > at_decision + 100)));
    stop.store(true, Ordering::Relaxed);
    let answered: usize = senders
        .into_iter()
        .map(|s| s.join().expect("every answer was v1's"))
        .sum();

    let s = host.plugin_status("echo").expect("status");
    let c = s.canary.clone().expect("canary");
    assert_eq!(c.state, CanaryState::RolledBack, "{c:?}");
    assert_eq!(c.candidate.producer, "echo@3.0.0-faulty");
    assert!(c.readings >= 300, "{c:?}");
    assert_eq!(
        (c.current.errors, c.current.deadline_misses),
        (0, 0),
        "{c:?}"
    );
    assert!(c.candidate.error_rate.is_some_and(|r| r > 0.02), "{c:?}");
    assert_eq!(c.current.error_rate, Some(0.0));
    let reason = c.reason.expect("reason");
    assert!(
        reason.starts_with("error rate worse by more than the margin of 1.0%")
            && reason.contains("against 0.0% (0) for echo@1.0.0"),
        "{reason}"
    );
    // The old version kept serving, its record clean: the candidate's
    // failures are not the plugin's and never quarantine it.
    assert_eq!(s.producer.as_deref(), Some("echo@1.0.0"));
    assert_eq!(s.state, PluginState::Running);
    assert_eq!((s.stats.failures, s.stats.errors), (0, 0), "{s:?}");
    assert_eq!(s.stats.readings as usize, answered);
    let last = s.last_reload.expect("last reload").message;
    assert!(
        last.starts_with("rolled back echo@3.0.0-faulty, echo@1.0.0 keeps serving: error rate"),
        "{last}"
    );
    // The rolled-back file is not tried again.
    assert_eq!(host.reload_plugin("echo").outcome, ReloadOutcome::Unchanged);
}

#[test]
fn a_replacement_that_misses_deadlines_is_rolled_back_without_slowing_the_live_path() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let mut cfg = canary_config(dir.path(), 100, Duration::from_secs(120));
    let deadline = Duration::from_millis(250);
    cfg.deadline = Dur(deadline);
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    start_canary(&host, dir.path(), "echo-faulty");

    // Batches of 5; every fourth has a reading that the candidate loops on.
    let mut slowest = Duration::ZERO;
    let mut batch = 0usize;
    let end = Instant::now() + Duration::from_secs(60);
    while !decided(&host) {
        assert!(Instant::now() < end, "no decision: {:?}", canary(&host));
        batch += 1;
        let contents: Vec<String> = (0..5)
            .map(|i| {
                if batch.is_multiple_of(4) && i == 2 {
                    format!("0.3 0.3 slow {batch}")
                } else {
                    format!("0.3 0.3 b{batch}-{i}")
                }
            })
            .collect();
        let started = Instant::now();
        let results = host.normalize(contents.iter().map(|c| text("u1", c)).collect());
        slowest = slowest.max(started.elapsed());
        for (r, c) in results.iter().zip(&contents) {
            check_answer(r, c, "echo@1.0.0").expect("v1 answers every reading");
        }
    }
    let c = canary(&host).expect("canary");
    assert_eq!(c.state, CanaryState::RolledBack, "{c:?}");
    assert!(
        c.candidate.deadline_misses > 0 && c.current.deadline_misses == 0,
        "{c:?}"
    );
    assert!(
        c.candidate.deadline_miss_rate.is_some_and(|r| r > 0.01),
        "{c:?}"
    );
    let reason = c.reason.expect("reason");
    assert!(
        reason.starts_with("deadline-miss rate worse by more than the margin of 1.0%"),
        "{reason}"
    );
    // The candidate's missed deadlines were waited out on its own thread.
    assert!(
        slowest < deadline,
        "a live call took {slowest:?}, the candidate's deadline is {deadline:?}"
    );
    let s = host.plugin_status("echo").expect("status");
    assert_eq!(s.producer.as_deref(), Some("echo@1.0.0"));
    assert_eq!((s.stats.failures, s.stats.errors), (0, 0));
}

#[test]
fn at_the_time_limit_too_few_readings_roll_back_and_a_few_clean_ones_promote() {
    // No traffic at all: no evidence, the serving version stays.
    let dir = plugin_dir(&[("echo", "echo")]);
    let host = PluginHost::new(
        canary_config(dir.path(), 500, Duration::from_secs(1)),
        "gw-test",
    )
    .expect("host starts");
    start_canary(&host, dir.path(), "echo-v2");
    await_decision(&host, 20);
    let c = canary(&host).expect("canary");
    assert_eq!(c.state, CanaryState::RolledBack);
    assert_eq!(c.readings, 0);
    let reason = c.reason.expect("reason");
    assert!(
        reason.starts_with("only 0 readings compared in 1s (deciding on rates needs 500)")
            && reason.contains("too few to promote at the time limit (at least 10"),
        "{reason}"
    );
    assert_eq!(
        host.plugin_status("echo")
            .and_then(|s| s.producer)
            .as_deref(),
        Some("echo@1.0.0")
    );

    // A few clean readings, fewer than min_readings: promoted at the limit.
    let dir = plugin_dir(&[("echo", "echo")]);
    let host = PluginHost::new(
        canary_config(dir.path(), 500, Duration::from_secs(2)),
        "gw-test",
    )
    .expect("host starts");
    start_canary(&host, dir.path(), "echo-v2");
    for i in 0..30 {
        let r = host.normalize(vec![text("u1", &format!("0.1 0.1 {i}"))]);
        assert!(r[0].is_ok());
    }
    await_decision(&host, 20);
    let c = canary(&host).expect("canary");
    assert_eq!(c.state, CanaryState::Promoted, "{c:?}");
    assert!((10..500).contains(&c.readings), "{c:?}");
    assert!(
        c.reason
            .as_deref()
            .is_some_and(|r| r.contains("no more failures at the time limit")),
        "{c:?}"
    );
    assert_eq!(
        host.plugin_status("echo")
            .and_then(|s| s.producer)
            .as_deref(),
        Some("echo@2.0.0")
    );
}
