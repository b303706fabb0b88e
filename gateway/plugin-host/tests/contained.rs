//! Every deliberately broken plugin, built from this repository, runs in one
//! host next to a good one: each is contained with a clear error and a
//! visible state, and the good one keeps serving in the same process.

mod common;

use std::time::{Duration, Instant};

use common::*;
use emotion_plugin_host::{
    CallFailure, Dur, PluginHost, PluginState, PluginStatus, ReadingError, ReadingResult,
};

fn failure(r: &ReadingResult) -> &CallFailure {
    match r {
        Err(ReadingError::PluginFailed { failure, .. }) => failure,
        other => panic!("expected a plugin failure, got {other:?}"),
    }
}

fn status(host: &PluginHost, name: &str) -> PluginStatus {
    host.plugin_status(name)
        .unwrap_or_else(|| panic!("no status for {name}"))
}

fn assert_template_event(r: &ReadingResult) {
    match r {
        Ok(Some(e)) => assert_eq!(e.producer, "template@0.1.0"),
        other => panic!("template should keep serving, got {other:?}"),
    }
}

fn voice() -> emotion_core::reading::RawReading {
    reading(r#"{"user_id": "u1", "source": "voice", "payload": {"f0_mean_hz": 180}}"#)
}

#[test]
fn broken_plugins_are_contained_while_a_good_one_keeps_serving() {
    let dir = plugin_dir(&[
        ("template", "template"),
        ("infinite-loop", "infinite-loop"),
        ("memory-hog", "memory-hog"),
        ("trap-third", "trap-third"),
        ("wrong-abi", "wrong-abi"),
        ("nan-output", "nan-output"),
        ("out-of-range", "out-of-range"),
        ("wrong-count", "wrong-count"),
    ]);
    let mut cfg = config(dir.path());
    cfg.deadline = Dur(Duration::from_millis(200));
    cfg.memory_limit = emotion_plugin_host::ByteSize(16 << 20);
    cfg.quarantine.after_failures = 2;
    cfg.quarantine.initial_backoff = Dur(Duration::from_millis(600));
    // The infinite loop gets a shorter deadline than everyone else.
    cfg.per_plugin.insert(
        "infinite-loop".into(),
        emotion_plugin_host::PluginConfig {
            deadline: Some(Dur(Duration::from_millis(50))),
            ..Default::default()
        },
    );
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");

    // Wrong ABI: refused before instantiation, with the reason.
    match status(&host, "wrong-abi").state {
        PluginState::Rejected { reason } => {
            assert!(
                reason.contains("ABI version 99") && reason.contains("supports versions 1, 2"),
                "{reason}"
            );
        }
        other => panic!("wrong-abi should be rejected, is {other:?}"),
    }
    assert_eq!(
        host.routes().len(),
        8,
        "every source has a plugin: {:?}",
        host.routes()
    );

    // One mixed batch: every broken plugin fails its part, the template answers.
    let batch = vec![
        survey(7, 3),
        voice(),
        reading(
            r#"{"user_id": "u1", "source": "facial", "payload": {"action_units": {"AU12": 3}}}"#,
        ),
        reading(r#"{"user_id": "u1", "source": "physiological", "payload": {"heart_rate": 70}}"#),
        reading(r#"{"user_id": "u1", "source": "biometric", "payload": {"heart_rate": 70}}"#),
        reading(
            r#"{"user_id": "u1", "source": "contextual", "payload": {"json": {"place": "home"}}}"#,
        ),
        text("u1", "hello"),
        survey(2, 8),
    ];
    let started = Instant::now();
    let results = host.normalize(batch);
    assert_eq!(results.len(), 8);
    assert_template_event(&results[0]);
    assert_template_event(&results[7]);

    match failure(&results[1]) {
        CallFailure::Timeout(d) => assert_eq!(*d, Duration::from_millis(50)),
        other => panic!("infinite loop: {other:?}"),
    }
    let msg = results[1].as_ref().expect_err("timeout").to_string();
    assert!(
        msg.contains("infinite-loop") && msg.contains("deadline of 50ms"),
        "{msg}"
    );

    match failure(&results[2]) {
        CallFailure::MemoryExhausted { limit, requested } => {
            assert_eq!(*limit, 16 << 20);
            assert!(*requested > 16 << 20);
        }
        other => panic!("memory hog: {other:?}"),
    }
    assert!(
        results[3].as_ref().is_ok_and(Option::is_some),
        "trap-third call 1 works: {:?}",
        results[3]
    );
    match failure(&results[4]) {
        CallFailure::Garbage { index: 0, message } => {
            assert!(message.contains("valence is NaN"), "{message}")
        }
        other => panic!("nan-output: {other:?}"),
    }
    match failure(&results[5]) {
        CallFailure::Garbage { index: 0, message } => {
            assert!(
                message.contains("arousal 1.5 is outside [0, 1]"),
                "{message}"
            );
        }
        other => panic!("out-of-range: {other:?}"),
    }
    assert_eq!(
        failure(&results[6]),
        &CallFailure::WrongCount {
            expected: 1,
            got: 2
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a batch with broken plugins still finishes promptly: {:?}",
        started.elapsed()
    );

    // Trap on the third call: calls 2 works, 3 traps (with the panic
    // message), 4 runs on a fresh instance and works again.
    let physio = || {
        reading(r#"{"user_id": "u1", "source": "physiological", "payload": {"heart_rate": 70}}"#)
    };
    assert!(host.normalize(vec![physio()])[0].is_ok());
    let third = host.normalize(vec![physio(), physio()]);
    for r in &third {
        match failure(r) {
            CallFailure::Trap(m) => assert!(m.contains("deliberate trap on call 3"), "{m}"),
            other => panic!("trap-third: {other:?}"),
        }
    }
    assert!(
        host.normalize(vec![physio()])[0].is_ok(),
        "restarted after the trap"
    );
    let s = status(&host, "trap-third");
    assert_eq!(
        s.state,
        PluginState::Running,
        "one failure is not enough to quarantine"
    );
    assert_eq!((s.stats.calls, s.stats.failures, s.stats.errors), (4, 1, 2));
    assert_eq!(s.consecutive_failures, 0, "a success resets the count");

    // Second timeout in a row: quarantined, visible in the status.
    assert!(matches!(
        failure(&host.normalize(vec![voice()])[0]),
        CallFailure::Timeout(_)
    ));
    let s = status(&host, "infinite-loop");
    let PluginState::Quarantined { until, reason } = &s.state else {
        panic!("infinite-loop should be quarantined: {s:?}");
    };
    assert!(
        reason.contains("2 consecutive failed calls") && reason.contains("deadline"),
        "{reason}"
    );
    let left = *until - chrono::Utc::now();
    assert!(
        left > chrono::Duration::milliseconds(300),
        "back-off ~600ms, left {left}"
    );
    // While quarantined, its readings are refused at once, without a call.
    let t = Instant::now();
    let r = host.normalize(vec![voice()]);
    assert!(t.elapsed() < Duration::from_millis(40), "{:?}", t.elapsed());
    assert!(
        matches!(&r[0], Err(ReadingError::Quarantined { plugin, .. }) if plugin == "infinite-loop"),
        "{r:?}"
    );
    assert_eq!(status(&host, "infinite-loop").stats.calls, 2);
    // The others keep working meanwhile.
    assert_template_event(&host.normalize(vec![survey(5, 5)])[0]);

    // After the back-off: one probe call, which fails again, and the next
    // quarantine lasts twice as long.
    // Poll until the quarantine lets a reading through (a refused reading
    // costs no call, as checked above); that reading is the probe.
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = loop {
        let r = host.normalize(vec![voice()]);
        if !matches!(&r[0], Err(ReadingError::Quarantined { .. })) {
            break r;
        }
        assert!(Instant::now() < deadline, "the back-off never ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(failure(&probe[0]), CallFailure::Timeout(_)));
    let s = status(&host, "infinite-loop");
    let PluginState::Quarantined { until, .. } = &s.state else {
        panic!("re-quarantined: {s:?}");
    };
    let left = *until - chrono::Utc::now();
    assert!(
        left > chrono::Duration::milliseconds(900),
        "doubled back-off ~1200ms, left {left}"
    );
    assert_eq!((s.stats.calls, s.stats.failures), (3, 3));

    // The failures of the others are visible too, and the template is clean.
    for name in ["memory-hog", "nan-output", "out-of-range", "wrong-count"] {
        let s = status(&host, name);
        assert_eq!(s.stats.failures, 1, "{name}: {s:?}");
        assert!(s.last_failure.is_some(), "{name}");
    }
    let t = status(&host, "template");
    assert_eq!(t.state, PluginState::Running);
    assert_eq!((t.stats.failures, t.stats.errors), (0, 0));
    assert!(
        t.stats.calls >= 2 && t.stats.mean_us_per_reading.is_some(),
        "{t:?}"
    );
    let json = serde_json::to_value(host.status()).expect("status serializes");
    assert_eq!(json[0]["name"], "infinite-loop");
    assert_eq!(json[0]["state"], "quarantined");
}

#[test]
fn repeated_garbage_quarantines_and_a_success_clears_the_count() {
    let dir = plugin_dir(&[("nan-output", "nan-output"), ("template", "template")]);
    let mut cfg = config(dir.path());
    cfg.quarantine.after_failures = 3;
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let bio =
        || reading(r#"{"user_id": "u1", "source": "biometric", "payload": {"heart_rate": 70}}"#);
    for i in 1..=3 {
        let r = host.normalize(vec![bio(), survey(5, 5)]);
        assert!(matches!(failure(&r[0]), CallFailure::Garbage { .. }), "{i}");
        assert_template_event(&r[1]);
    }
    assert!(matches!(
        status(&host, "nan-output").state,
        PluginState::Quarantined { .. }
    ));
    assert_eq!(status(&host, "template").state, PluginState::Running);
}

#[test]
fn plugin_error_answers_and_unknown_labels_are_per_reading() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let host = PluginHost::new(config(dir.path()), "gw-test").expect("host starts");
    let r = host.normalize(vec![
        text("u1", "joy 0.8 0.7"),
        text("u1", "elation 0.8 0.7"),
        text("u1", "error no words I know"),
        text("u1", "none"),
        text("u1", "-0.5 0.2"),
    ]);
    let e = r[0].as_ref().expect("ok").as_ref().expect("event");
    assert_eq!(
        (e.emotion_label, e.producer.as_str()),
        (emotion_core::EmotionLabel::Joy, "echo@1.0.0")
    );
    // ABI 2 labels are an enum: `echo` answers an error for a name the
    // gateway does not know (an ABI 1 plugin's unknown label is judged by
    // the host: tests/abi1.rs).
    assert!(
        matches!(&r[1], Err(ReadingError::Plugin { message, .. }) if message.contains("elation")),
        "{:?}",
        r[1]
    );
    assert!(
        matches!(&r[2], Err(ReadingError::Plugin { message, .. }) if message == "no words I know"),
        "{:?}",
        r[2]
    );
    assert!(matches!(r[3], Ok(None)));
    let e = r[4].as_ref().expect("ok").as_ref().expect("event");
    assert_eq!(
        e.emotion_label,
        emotion_core::EmotionLabel::nearest(-0.5, 0.2),
        "no label: the nearest"
    );
    let s = status(&host, "echo");
    assert_eq!((s.stats.calls, s.stats.failures, s.stats.errors), (1, 0, 2));
    assert_eq!(s.state, PluginState::Running, "answers are not failures");

    // A source nobody handles.
    let r = host.normalize(vec![voice()]);
    assert!(matches!(
        r[0],
        Err(ReadingError::NoPlugin(emotion_core::Source::Voice))
    ));
}
