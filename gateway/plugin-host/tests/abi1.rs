//! Plugins built for ABI 1 (`emotion:plugin@0.1.0`, labels as strings, extra
//! fields as `(key, JSON text)` pairs) still load next to ABI 2 ones and
//! answer alike: `echo-abi1` is the `echo` test plugin built against the
//! frozen `sdk-plugin/wit-abi1/plugin.wit`.

mod common;

use common::*;
use emotion_core::EmotionLabel;
use emotion_core::reading::RawReading;
use emotion_plugin_host::{
    PluginConfig, PluginHost, PluginState, ReadingError, ReadingResult, read_abi_version,
};
use serde_json::json;

/// The texts both builds answer, and what differs by ABI.
fn readings() -> Vec<RawReading> {
    [
        "joy 0.8 0.7",
        "calm",
        "-0.5 0.2",
        "Stress 0.1 0.9",
        "none",
        "error no words I know",
        "elation 0.8 0.7",
    ]
    .into_iter()
    .map(|t| text("u1", t))
    .collect()
}

fn host_with(file: &str) -> (PluginHost, tempfile::TempDir) {
    let dir = plugin_dir(&[(file, file)]);
    let mut cfg = config(dir.path());
    cfg.per_plugin.insert(
        file.into(),
        PluginConfig {
            settings: Some(json!({"greeting": "hello"})),
            ..Default::default()
        },
    );
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    (host, dir)
}

/// An event without what differs by construction (id, producer, times).
fn comparable(r: &ReadingResult) -> Option<serde_json::Value> {
    let e = r.as_ref().ok()?.as_ref()?;
    Some(json!({
        "label": e.emotion_label,
        "valence": e.valence,
        "arousal": e.arousal,
        "confidence": e.confidence,
        "context": e.context,
        "user": e.user_id,
        "source": e.source,
    }))
}

#[test]
fn abi1_component_loads_and_answers_like_its_abi2_build() {
    assert_eq!(
        read_abi_version(&std::fs::read(component("echo-abi1")).expect("echo-abi1")),
        Ok(1)
    );
    assert_eq!(
        read_abi_version(&std::fs::read(component("echo")).expect("echo")),
        Ok(2)
    );
    let (old, _old_dir) = host_with("echo-abi1");
    let (new, _new_dir) = host_with("echo");
    let s = old.plugin_status("echo-abi1").expect("status");
    assert_eq!(s.state, PluginState::Running, "{:?}", s.state);
    assert_eq!(s.abi_version, Some(1));
    assert_eq!(s.producer.as_deref(), Some("echo-abi1@1.0.0"));
    assert_eq!(
        new.plugin_status("echo").and_then(|s| s.abi_version),
        Some(2)
    );

    let a = old.normalize(readings());
    let b = new.normalize(readings());
    assert_eq!(a.len(), 7);
    // The first four are emotions, the same events from either ABI.
    for i in 0..4 {
        let (x, y) = (comparable(&a[i]), comparable(&b[i]));
        assert!(x.is_some(), "{i}: {:?}", a[i]);
        assert_eq!(x, y, "reading {i}");
    }
    let event = |r: &ReadingResult| r.as_ref().ok().and_then(|e| e.clone()).expect("event");
    assert_eq!(event(&a[0]).emotion_label, EmotionLabel::Joy);
    assert_eq!(event(&a[1]).emotion_label, EmotionLabel::Calm);
    assert_eq!(
        event(&a[2]).emotion_label,
        EmotionLabel::nearest(-0.5, 0.2),
        "no label: the nearest"
    );
    // A label in another case is read as the gateway reads it.
    assert_eq!(event(&a[3]).emotion_label, EmotionLabel::Stress);
    assert_eq!(
        event(&a[0]).context.map(emotion_core::Json::into_value),
        Some(json!({"echo": "joy 0.8 0.7"}))
    );
    assert_eq!(event(&a[0]).producer, "echo-abi1@1.0.0");
    for r in [&a, &b] {
        assert!(matches!(r[4], Ok(None)), "{:?}", r[4]);
        assert!(
            matches!(&r[5], Err(ReadingError::Plugin { message, .. }) if message == "no words I know"),
            "{:?}",
            r[5]
        );
    }
    // An unknown label: ABI 1 carries the string and the host refuses it;
    // under ABI 2 the plugin cannot name it and answers an error itself.
    assert!(
        matches!(&a[6], Err(ReadingError::InvalidEmotion { message, .. }) if message.contains("elation")),
        "{:?}",
        a[6]
    );
    assert!(
        matches!(&b[6], Err(ReadingError::Plugin { message, .. }) if message.contains("elation")),
        "{:?}",
        b[6]
    );

    // ABI 1's host imports are linked: the plugin reads its settings.
    let r = old.normalize(vec![text("u1", "settings")]);
    assert!(
        matches!(&r[0], Err(ReadingError::Plugin { message, .. })
            if message == r#"settings: {"greeting":"hello"}"#),
        "{:?}",
        r[0]
    );
    let s = old.plugin_status("echo-abi1").expect("status");
    assert_eq!((s.stats.failures, s.state), (0, PluginState::Running));
}
