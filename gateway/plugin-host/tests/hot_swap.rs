//! Hot swap under load: a new version replaces the old one while readings
//! flow, no reading is lost or answered twice, and broken replacements are
//! refused while the old version keeps serving.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use emotion_plugin_host::{Dur, PluginHost, PluginState, ReloadOutcome};

/// Replace a file the way a deployment should: write beside it, then rename.
fn replace_atomically(src: &[u8], dst: &Path) {
    let tmp = dst.with_extension("wasm.tmp");
    std::fs::write(&tmp, src).expect("write");
    std::fs::rename(&tmp, dst).expect("rename");
}

fn producer_of(host: &PluginHost, name: &str) -> Option<String> {
    host.plugin_status(name).and_then(|s| s.producer)
}

#[test]
fn swap_under_load_loses_nothing_and_refuses_broken_replacements() {
    let dir = plugin_dir(&[("echo", "echo"), ("template", "template")]);
    let mut cfg = config(dir.path());
    cfg.batch_max_size = 16;
    cfg.batch_max_latency = Dur(Duration::from_millis(2));
    cfg.watch_interval = Dur(Duration::from_millis(50));
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let watcher = host.watch().expect("watching");
    assert_eq!(producer_of(&host, "echo").as_deref(), Some("echo@1.0.0"));

    // Load: three submitters, each keeping up to 32 readings in flight, until
    // told to stop. Every reading carries a unique id that echo sends back.
    let stop = Arc::new(AtomicBool::new(false));
    let submitters: Vec<_> = (0..3)
        .map(|t| {
            let host = host.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sent = 0usize;
                let mut answers: Vec<(String, Result<String, String>)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let pending: Vec<_> = (0..32)
                        .map(|_| {
                            let id = format!("id-{t}-{sent}");
                            sent += 1;
                            (
                                id.clone(),
                                host.submit(text("u1", &format!("0.25 0.5 {id}"))),
                            )
                        })
                        .collect();
                    for (id, p) in pending {
                        let answer = match p.wait() {
                            Ok(Some(e)) => {
                                let echoed = e
                                    .context
                                    .as_ref()
                                    .and_then(|c| {
                                        c.value().get("echo")?.as_str().map(str::to_owned)
                                    })
                                    .unwrap_or_default();
                                assert_eq!(echoed, format!("0.25 0.5 {id}"), "answer for {id}");
                                Ok(e.producer)
                            }
                            Ok(None) => Err("no emotion".to_owned()),
                            Err(e) => Err(e.to_string()),
                        };
                        answers.push((id, answer));
                    }
                }
                (sent, answers)
            })
        })
        .collect();

    // Let v1 serve a while, then drop v2 into the directory.
    assert!(eventually(Duration::from_secs(10), || {
        host.plugin_status("echo")
            .is_some_and(|s| s.stats.readings > 200)
    }));
    let v2 = std::fs::read(component("echo-v2")).expect("v2");
    replace_atomically(&v2, &dir.path().join("echo.wasm"));
    assert!(
        eventually(Duration::from_secs(20), || producer_of(&host, "echo")
            .as_deref()
            == Some("echo@2.0.0")),
        "the watcher swaps v2 in: {:?}",
        host.plugin_status("echo")
    );
    let at_swap = host.plugin_status("echo").map_or(0, |s| s.stats.readings);
    assert!(eventually(Duration::from_secs(10), || {
        host.plugin_status("echo")
            .is_some_and(|s| s.stats.readings > at_swap + 200)
    }));
    // The explicit reloads below must not race the watcher: whichever of the
    // two reads a new file second finds its bytes already attempted and
    // reports `Unchanged` instead of the refusal. Dropping joins its thread.
    drop(watcher);

    // Broken replacements, still under load: each is refused, v2 keeps serving.
    let echo_file = dir.path().join("echo.wasm");
    let refused = |bytes: &[u8], why: &str| {
        replace_atomically(bytes, &echo_file);
        let report = host.reload_plugin("echo");
        match &report.outcome {
            ReloadOutcome::Refused { reason, serving } => {
                assert!(reason.contains(why), "{why}: {reason}");
                assert_eq!(serving.as_deref(), Some("echo@2.0.0"));
            }
            other => panic!("{why}: expected a refusal, got {other:?}"),
        }
        let s = host.plugin_status("echo").expect("status");
        assert_eq!(s.state, PluginState::Running);
        assert_eq!(s.producer.as_deref(), Some("echo@2.0.0"));
        let last = s.last_reload.expect("last reload").message;
        assert!(
            last.contains("new version refused, echo@2.0.0 keeps serving"),
            "{last}"
        );
    };
    refused(&v2[..v2.len() / 2], "not a WebAssembly binary");
    refused(
        &std::fs::read(component("wrong-abi")).expect("wrong-abi"),
        "ABI version 99",
    );
    refused(
        &std::fs::read(component("wrong-count")).expect("wrong-count"),
        "describes itself as `wrong-count`",
    );
    refused(
        &std::fs::read(component("template")).expect("template"),
        "describes itself as `template`",
    );
    // v2 goes on serving after the refusals.
    let at_refusals = host.plugin_status("echo").map_or(0, |s| s.stats.readings);
    assert!(eventually(Duration::from_secs(10), || {
        host.plugin_status("echo")
            .is_some_and(|s| s.stats.readings > at_refusals + 200)
    }));

    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    let mut ids = HashSet::new();
    let mut by_producer: BTreeMap<String, usize> = BTreeMap::new();
    for s in submitters {
        let (n, answers) = s.join().expect("submitter");
        sent += n;
        for (id, answer) in answers {
            assert!(ids.insert(id.clone()), "{id} answered twice");
            match answer {
                Ok(p) => *by_producer.entry(p).or_default() += 1,
                Err(e) => panic!("{id} failed during the swap: {e}"),
            }
        }
    }
    assert_eq!(ids.len(), sent, "every reading answered exactly once");
    assert!(
        by_producer.get("echo@1.0.0").is_some_and(|n| *n > 0),
        "{by_producer:?}"
    );
    assert!(
        by_producer.get("echo@2.0.0").is_some_and(|n| *n > 0),
        "{by_producer:?}"
    );
    assert_eq!(by_producer.len(), 2, "{by_producer:?}");
    let s = host.plugin_status("echo").expect("status");
    assert_eq!(s.stats.readings as usize, sent);
    assert_eq!((s.stats.failures, s.stats.errors), (0, 0));
    eprintln!("{sent} readings through the swap: {by_producer:?}");

    // A watcher refuses a broken file too: one it has not seen attempted (the
    // template's bytes were, above) is refused, and v2 keeps serving.
    replace_atomically(
        &std::fs::read(component("wrong-abi")).expect("wrong-abi"),
        &echo_file,
    );
    let _watcher = host.watch().expect("watching");
    assert!(
        eventually(Duration::from_secs(10), || host
            .plugin_status("echo")
            .and_then(|s| s.last_reload)
            .is_some_and(|r| r.message.contains("ABI version 99"))),
        "the watcher refuses the broken file: {:?}",
        host.plugin_status("echo")
    );
    let s = host.plugin_status("echo").expect("status");
    assert_eq!(s.state, PluginState::Running);
    assert_eq!(s.producer.as_deref(), Some("echo@2.0.0"));
}

#[test]
fn watcher_loads_new_plugins_and_drops_removed_ones() {
    let dir = plugin_dir(&[("template", "template")]);
    let mut cfg = config(dir.path());
    cfg.watch_interval = Dur(Duration::from_millis(30));
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let watcher = host.watch().expect("watching");
    assert!(
        host.normalize(vec![text("u1", "joy")])[0].is_err(),
        "no text plugin yet"
    );

    std::fs::copy(component("echo"), dir.path().join("echo.wasm")).expect("copy");
    assert!(eventually(Duration::from_secs(20), || producer_of(
        &host, "echo"
    )
    .is_some()));
    assert!(host.normalize(vec![text("u1", "joy")])[0].is_ok());

    std::fs::remove_file(dir.path().join("echo.wasm")).expect("remove");
    assert!(eventually(Duration::from_secs(10), || host
        .plugin_status("echo")
        .is_none()));
    assert!(host.normalize(vec![text("u1", "joy")])[0].is_err());
    assert_eq!(
        host.routes().values().collect::<Vec<_>>(),
        vec!["template", "template"]
    );
    drop(watcher);
}

#[test]
fn explicit_reload_reports_each_plugin() {
    let dir = plugin_dir(&[("template", "template"), ("echo", "echo")]);
    // Without canaries, a replacement that loads replaces at once.
    let mut cfg = config(dir.path());
    cfg.canary.enabled = false;
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    std::fs::copy(component("echo-v2"), dir.path().join("echo.wasm")).expect("copy");
    std::fs::copy(component("lexicon"), dir.path().join("lexicon.wasm")).expect("copy");
    let reports = host.reload().expect("reload");
    let by_name: BTreeMap<_, _> = reports
        .iter()
        .map(|r| (r.plugin.as_str(), &r.outcome))
        .collect();
    assert_eq!(
        by_name["echo"],
        &ReloadOutcome::Replaced {
            old: "echo@1.0.0".into(),
            new: "echo@2.0.0".into()
        }
    );
    assert_eq!(by_name["template"], &ReloadOutcome::Unchanged);
    // lexicon also claims `text`, which echo handles: refused, echo serves on.
    match by_name["lexicon"] {
        ReloadOutcome::Refused {
            reason,
            serving: None,
        } => {
            assert!(
                reason.contains("source `text` is already handled by plugin `echo`"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        host.plugin_status("lexicon").map(|s| s.state),
        Some(PluginState::Rejected { .. })
    ));
}
