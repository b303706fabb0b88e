//! Issue 16, item 1: the configuration chooses the plugin per source
//! (`[plugins.sources]`), and a plugin's memory limit follows the need it
//! declares in its component (`export_plugin!(P, memory = "…")`) unless the
//! operator overrides it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use emotion_core::Source;
use emotion_plugin_host::{
    ByteSize, CURRENT_ABI, CallFailure, Dur, HostConfig, MEMORY_SECTION, MemoryLimitOrigin,
    PluginConfig, PluginHost, PluginState, ReadingError, TestOptions, read_stamps, test_plugin,
};

const MIB: u64 = 1 << 20;

fn with_sources(dir: &Path, sources: &[(&str, &str)]) -> HostConfig {
    HostConfig {
        sources: sources
            .iter()
            .map(|(s, p)| ((*s).to_owned(), (*p).to_owned()))
            .collect(),
        ..config(dir)
    }
}

/// The producer (`name@version`) that answered a text reading.
fn text_answered_by(host: &PluginHost) -> Result<String, ReadingError> {
    match host.normalize(vec![text("u1", "joy 0.5 0.5")]).remove(0) {
        Ok(Some(event)) => Ok(event.producer),
        Ok(None) => Ok("(no emotion)".into()),
        Err(e) => Err(e),
    }
}

fn serving(host: &PluginHost, name: &str) -> Vec<Source> {
    host.plugin_status(name)
        .map(|s| s.serving_sources)
        .unwrap_or_default()
}

/// The test config, with a deadline for `memory-declared` generous enough
/// for a loaded machine (only its memory is under test).
fn memory_config(dir: &Path, memory_limit: Option<u64>) -> HostConfig {
    let mut cfg = config(dir);
    cfg.per_plugin.insert(
        "memory-declared".into(),
        PluginConfig {
            deadline: Some(Dur(Duration::from_secs(10))),
            memory_limit: memory_limit.map(ByteSize),
            settings: None,
            batch_max_size: None,
        },
    );
    cfg
}

fn contextual() -> emotion_core::reading::RawReading {
    reading(r#"{"user_id": "u1", "source": "contextual", "payload": {"json": {"place": "home"}}}"#)
}

/// A component with one more custom section appended at its top level
/// (where the host reads stamps too), as a faulty build tool could leave it.
fn with_section(component: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend(name.as_bytes());
    content.extend(data);
    let mut out = component.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend(content);
    out
}

#[test]
fn without_the_table_the_first_claimant_serves_and_the_second_is_refused() {
    let dir = plugin_dir(&[("echo", "echo"), ("lexicon", "lexicon")]);
    let host = PluginHost::new(config(dir.path()), "gw-test").expect("host starts");
    assert_eq!(text_answered_by(&host).as_deref(), Ok("echo@1.0.0"));
    match host.plugin_status("lexicon").map(|s| s.state) {
        Some(PluginState::Rejected { reason }) => {
            assert!(
                reason.contains("already handled by plugin `echo`"),
                "{reason}"
            );
        }
        other => panic!("lexicon should be refused, is {other:?}"),
    }
}

#[test]
fn the_configured_plugin_reads_the_source_and_the_other_claimant_idles() {
    let dir = plugin_dir(&[("echo", "echo"), ("lexicon", "lexicon")]);

    // lexicon comes second by name, but the table gives it `text`.
    let host = PluginHost::new(with_sources(dir.path(), &[("text", "lexicon")]), "gw-test")
        .expect("host starts");
    for name in ["echo", "lexicon"] {
        assert_eq!(
            host.plugin_status(name).map(|s| s.state),
            Some(PluginState::Running),
            "{name} loads"
        );
    }
    assert_eq!(text_answered_by(&host).as_deref(), Ok("lexicon@0.1.0"));
    assert_eq!(
        host.routes().get(&Source::Text).map(String::as_str),
        Some("lexicon")
    );
    assert_eq!(serving(&host, "lexicon"), vec![Source::Text]);
    let echo = host.plugin_status("echo").expect("echo listed");
    assert_eq!(echo.sources, vec![Source::Text]);
    assert!(echo.serving_sources.is_empty(), "echo serves nothing");
    assert_eq!(echo.stats.readings, 0, "echo got no reading");
    drop(host);

    // Switched by configuration: the same directory, echo chosen.
    let host = PluginHost::new(with_sources(dir.path(), &[("text", "echo")]), "gw-test")
        .expect("host starts");
    assert_eq!(text_answered_by(&host).as_deref(), Ok("echo@1.0.0"));
    assert_eq!(serving(&host, "echo"), vec![Source::Text]);
    assert!(serving(&host, "lexicon").is_empty());
}

#[test]
fn a_chosen_plugin_that_is_absent_or_refused_leaves_its_source_unrouted() {
    let dir = plugin_dir(&[
        ("echo", "echo"),
        ("lexicon", "lexicon"),
        ("wrong-abi", "wrong-abi"),
        ("template", "template"),
    ]);

    // No such file: both text claimants load, neither stands in.
    let host = PluginHost::new(
        with_sources(dir.path(), &[("text", "text-encoder")]),
        "gw-test",
    )
    .expect("host starts");
    assert_eq!(
        text_answered_by(&host),
        Err(ReadingError::NoPlugin(Source::Text))
    );
    assert_eq!(host.routes().get(&Source::Text), None);
    assert!(serving(&host, "echo").is_empty() && serving(&host, "lexicon").is_empty());
    // Sources without a choice keep today's routing.
    assert_eq!(
        host.routes().get(&Source::Survey).map(String::as_str),
        Some("template")
    );
    assert!(host.normalize(vec![survey(7, 3)])[0].is_ok());
    drop(host);

    // The chosen file is refused (wrong ABI): same, no fallback.
    let host = PluginHost::new(
        with_sources(dir.path(), &[("text", "wrong-abi")]),
        "gw-test",
    )
    .expect("host starts");
    assert!(matches!(
        host.plugin_status("wrong-abi").map(|s| s.state),
        Some(PluginState::Rejected { .. })
    ));
    assert_eq!(
        text_answered_by(&host),
        Err(ReadingError::NoPlugin(Source::Text))
    );
}

#[test]
fn a_plugin_batch_size_splits_its_calls_and_keeps_the_order() {
    let dir = plugin_dir(&[("echo", "echo"), ("lexicon", "lexicon")]);
    let mut cfg = with_sources(dir.path(), &[("text", "echo")]);
    cfg.per_plugin.insert(
        "echo".into(),
        PluginConfig {
            batch_max_size: Some(3),
            ..PluginConfig::default()
        },
    );
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let status = host.plugin_status("echo").expect("echo listed");
    assert_eq!(status.batch_max_size, 3);
    assert_eq!(
        host.plugin_status("lexicon").map(|s| s.batch_max_size),
        Some(100),
        "the host's size for the others"
    );
    let calls_before = status.stats.calls;

    // Ten readings: calls of 3, 3, 3 and 1, answers in reading order.
    let readings = (0..10).map(|i| text("u1", &format!("0.{i} 0.5"))).collect();
    let valences: Vec<f64> = host
        .normalize(readings)
        .into_iter()
        .map(|r| match r {
            Ok(Some(e)) => e.valence,
            other => panic!("an emotion, got {other:?}"),
        })
        .collect();
    let expected: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
    assert_eq!(valences, expected);
    let stats = host.plugin_status("echo").expect("echo listed").stats;
    assert_eq!(stats.calls - calls_before, 4, "{stats:?}");
    assert_eq!(stats.readings, 10);
}

#[test]
fn hot_reload_follows_the_table() {
    let dir = plugin_dir(&[("echo", "echo")]);
    let mut cfg = with_sources(dir.path(), &[("text", "lexicon")]);
    cfg.watch_interval = Dur(Duration::from_millis(30));
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let watcher = host.watch().expect("watching");
    assert_eq!(
        text_answered_by(&host),
        Err(ReadingError::NoPlugin(Source::Text)),
        "echo does not stand in for the chosen lexicon"
    );

    // The chosen plugin arrives: it takes the source.
    std::fs::copy(component("lexicon"), dir.path().join("lexicon.wasm")).expect("copy");
    assert!(
        eventually(Duration::from_secs(30), || text_answered_by(&host)
            .as_deref()
            == Ok("lexicon@0.1.0")),
        "lexicon serves text once loaded: {:?}",
        host.status()
    );
    assert!(serving(&host, "echo").is_empty());

    // It leaves: the source is unrouted again, echo still idle.
    std::fs::remove_file(dir.path().join("lexicon.wasm")).expect("remove");
    assert!(eventually(Duration::from_secs(10), || host
        .plugin_status("lexicon")
        .is_none()));
    assert_eq!(
        text_answered_by(&host),
        Err(ReadingError::NoPlugin(Source::Text))
    );
    assert_eq!(
        host.plugin_status("echo").map(|s| s.state),
        Some(PluginState::Running)
    );
    drop(watcher);
}

#[test]
fn the_declared_memory_need_is_the_limit_unless_overridden() {
    let dir = plugin_dir(&[("memory-declared", "memory-declared"), ("echo", "echo")]);

    // Declared 96 MiB: the limit in force, and 80 MiB of work fits.
    let host = PluginHost::new(memory_config(dir.path(), None), "gw-test").expect("host starts");
    let s = host.plugin_status("memory-declared").expect("listed");
    assert_eq!(s.state, PluginState::Running);
    assert_eq!(s.declared_memory_bytes, Some(96 * MIB));
    assert_eq!(s.memory_limit_bytes, 96 * MIB);
    assert_eq!(s.memory_limit_origin, MemoryLimitOrigin::Declared);
    let out = host.normalize(vec![contextual()]);
    assert!(matches!(out[0], Ok(Some(_))), "{:?}", out[0]);
    let peak = host
        .plugin_status("memory-declared")
        .and_then(|s| s.peak_memory_bytes)
        .expect("peak known");
    assert!(
        (80 * MIB..=96 * MIB).contains(&peak),
        "peak {peak} bytes between what it uses and what it declares"
    );
    // A plugin declaring nothing keeps the host default.
    let echo = host.plugin_status("echo").expect("listed");
    assert_eq!(echo.declared_memory_bytes, None);
    assert_eq!(echo.memory_limit_bytes, 64 * MIB);
    assert_eq!(echo.memory_limit_origin, MemoryLimitOrigin::Default);
    drop(host);

    // The operator's per_plugin limit wins: 64 MiB is too little for it.
    let host =
        PluginHost::new(memory_config(dir.path(), Some(64 * MIB)), "gw-test").expect("host starts");
    let s = host.plugin_status("memory-declared").expect("listed");
    assert_eq!(s.memory_limit_bytes, 64 * MIB);
    assert_eq!(s.memory_limit_origin, MemoryLimitOrigin::Configured);
    assert_eq!(s.declared_memory_bytes, Some(96 * MIB));
    match &host.normalize(vec![contextual()])[0] {
        Err(ReadingError::PluginFailed {
            failure: CallFailure::MemoryExhausted { limit, .. },
            ..
        }) => assert_eq!(*limit, 64 * MIB),
        other => panic!("expected memory exhaustion at 64 MiB, got {other:?}"),
    }
}

#[test]
fn the_vendor_test_run_applies_the_declared_need_unless_given_a_limit() {
    let component = component("memory-declared");
    let readings =
        r#"{"user_id": "u1", "source": "contextual", "payload": {"json": {"place": "home"}}}"#;
    let run = |options: TestOptions| {
        let mut out = Vec::new();
        let summary = test_plugin(
            &component,
            std::io::Cursor::new(readings),
            &mut out,
            &options,
        )
        .expect("test run");
        let line: serde_json::Value =
            serde_json::from_slice(out.trim_ascii_end()).expect("one JSON line");
        (summary, line)
    };
    let options = || {
        TestOptions::default()
            .with_deadline("10s")
            .expect("deadline")
    };

    // As in the gateway: the declared 96 MiB, and 80 MiB of work fits.
    let (summary, line) = run(options());
    assert_eq!(summary.memory_limit, 96 * MIB);
    assert_eq!(summary.memory_limit_origin, MemoryLimitOrigin::Declared);
    assert!(line.get("event").is_some(), "{line}");
    assert!(
        summary.to_string().contains("declared by the component"),
        "{summary}"
    );

    // `--memory 64MiB`: that limit, whatever the component says.
    let (summary, line) = run(options().with_limits("10s", "64MiB").expect("limits"));
    assert_eq!(summary.memory_limit, 64 * MIB);
    assert_eq!(summary.memory_limit_origin, MemoryLimitOrigin::Configured);
    assert_eq!(line["error"]["kind"], "plugin_failed", "{line}");
}

#[test]
fn a_declared_need_above_the_ceiling_refuses_the_plugin() {
    let dir = plugin_dir(&[("memory-declared", "memory-declared")]);
    let mut cfg = memory_config(dir.path(), None);
    cfg.max_declared_memory = ByteSize(64 * MIB);
    let host = PluginHost::new(cfg.clone(), "gw-test").expect("host starts");
    let s = host.plugin_status("memory-declared").expect("listed");
    match &s.state {
        PluginState::Rejected { reason } => {
            for needle in [
                "96MiB",
                "max_declared_memory (64MiB)",
                "per_plugin.memory-declared.memory_limit",
            ] {
                assert!(reason.contains(needle), "{needle:?} not in {reason}");
            }
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(host.normalize(vec![contextual()])[0].is_err());
    drop(host);

    // An override makes the declaration irrelevant, ceiling included.
    let mut cfg = memory_config(dir.path(), Some(128 * MIB));
    cfg.max_declared_memory = ByteSize(64 * MIB);
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let s = host.plugin_status("memory-declared").expect("listed");
    assert_eq!(s.state, PluginState::Running);
    assert_eq!(s.memory_limit_bytes, 128 * MIB);
    assert!(matches!(host.normalize(vec![contextual()])[0], Ok(Some(_))));
}

#[test]
fn malformed_or_conflicting_memory_sections_refuse_the_plugin() {
    let echo = std::fs::read(component("echo")).expect("echo component");
    let declared = std::fs::read(component("memory-declared")).expect("component");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "short",
            with_section(&echo, MEMORY_SECTION, &[0, 0, 0, 6]),
            "holds 4 bytes, expected 8",
        ),
        (
            "conflicting",
            with_section(&declared, MEMORY_SECTION, &(200 * MIB).to_le_bytes()),
            "several different memory needs",
        ),
        (
            "tiny",
            with_section(&echo, MEMORY_SECTION, &4096u64.to_le_bytes()),
            "less than the smallest limit (1MiB)",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes, _) in &cases {
        std::fs::write(dir.path().join(format!("{name}.wasm")), bytes).expect("write");
    }
    let host = PluginHost::new(config(dir.path()), "gw-test").expect("host starts");
    for (name, _, needle) in &cases {
        match host.plugin_status(name).map(|s| s.state) {
            Some(PluginState::Rejected { reason }) => {
                assert!(
                    reason.contains(needle),
                    "{name}: {needle:?} not in {reason}"
                );
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    // The same section, well formed, is accepted on a component that had none.
    let ok = with_section(&echo, MEMORY_SECTION, &(32 * MIB).to_le_bytes());
    assert_eq!(
        read_stamps(&ok).map(|s| (s.abi_version, s.memory_need)),
        Ok((CURRENT_ABI, Some(32 * MIB)))
    );
}

#[test]
fn the_text_encoder_declares_its_need() {
    built_plugins();
    let path = target_dir().join("optional-plugins/text-encoder.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/build-plugins.sh builds it)",
            path.display()
        )
    });
    let stamps = read_stamps(&bytes).expect("readable stamps");
    assert_eq!(stamps.abi_version, CURRENT_ABI);
    let need = stamps
        .memory_need
        .expect("text-encoder declares a memory need");
    assert!(
        need > 64 * MIB && need <= HostConfig::default().max_declared_memory.0,
        "{need} bytes: above the default limit, within the default ceiling"
    );
}
