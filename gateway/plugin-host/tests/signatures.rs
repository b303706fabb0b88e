//! Signatures, and the vendor's walk from the template to a signed plugin
//! (the steps of sdk-plugin/README.md, through the library functions the
//! `emotion-gateway plugin keygen|sign|test` commands call).

mod common;

use std::io::Cursor;

use common::*;
use emotion_plugin_host::{
    PluginHost, PluginState, TestOptions, keygen, read_public_key, sign_file, test_plugin,
};

fn rejected_reason(host: &PluginHost, name: &str) -> String {
    match host.plugin_status(name).map(|s| s.state) {
        Some(PluginState::Rejected { reason }) => reason,
        other => panic!("{name} should be rejected, is {other:?}"),
    }
}

#[test]
fn unsigned_and_wrongly_signed_components_are_refused_when_required() {
    let keys = tempfile::tempdir().expect("tempdir");
    let vendor = keygen(keys.path(), "vendor").expect("keygen");
    let stranger = keygen(keys.path(), "stranger").expect("keygen");

    let dir = plugin_dir(&[
        ("template", "template"),
        ("echo", "echo"),
        ("lexicon", "lexicon"),
        ("trap-third", "trap-third"),
        ("nan-output", "nan-output"),
    ]);
    let p = |n: &str| dir.path().join(format!("{n}.wasm"));
    // Signed by the trusted vendor key: loads.
    sign_file(&p("template"), &vendor.secret_key_file).expect("sign");
    // echo: unsigned. lexicon: signed by a key nobody trusts.
    sign_file(&p("lexicon"), &stranger.secret_key_file).expect("sign");
    // trap-third: signed, then the component was swapped for another one.
    sign_file(&p("trap-third"), &vendor.secret_key_file).expect("sign");
    std::fs::copy(component("infinite-loop"), p("trap-third")).expect("tamper");
    // nan-output: its signature file is garbage.
    std::fs::write(dir.path().join("nan-output.wasm.sig"), "not a signature\n").expect("write");

    let mut cfg = config(dir.path());
    cfg.require_signatures = true;
    cfg.trusted_keys = vec![vendor.public_key.clone()];
    let host = PluginHost::new(cfg.clone(), "gw-test").expect("host starts");

    let t = host.plugin_status("template").expect("template");
    assert_eq!(t.state, PluginState::Running);
    assert_eq!(t.signed_by.as_deref(), Some(vendor.fingerprint.as_str()));
    assert!(host.normalize(vec![survey(6, 4)])[0].is_ok());

    let r = rejected_reason(&host, "echo");
    assert!(r.contains("unsigned") && r.contains("echo.wasm.sig"), "{r}");
    let r = rejected_reason(&host, "lexicon");
    assert!(r.contains("does not verify against any trusted key"), "{r}");
    let r = rejected_reason(&host, "trap-third");
    assert!(r.contains("does not verify against any trusted key"), "{r}");
    let r = rejected_reason(&host, "nan-output");
    assert!(r.contains("malformed"), "{r}");
    // Refused plugins serve nothing.
    assert!(host.normalize(vec![text("u1", "joy")])[0].is_err());

    // Signing echo later makes it load on the next reload; a hot swap to an
    // unsigned version is refused and the signed one keeps serving.
    sign_file(&p("echo"), &vendor.secret_key_file).expect("sign");
    host.reload().expect("reload");
    assert_eq!(
        host.plugin_status("echo").map(|s| s.state),
        Some(PluginState::Running)
    );
    std::fs::copy(component("echo-v2"), p("echo")).expect("copy v2");
    let report = host.reload_plugin("echo");
    assert!(
        format!("{report:?}").contains("does not verify"),
        "{report:?}"
    );
    assert_eq!(
        host.plugin_status("echo")
            .and_then(|s| s.producer)
            .as_deref(),
        Some("echo@1.0.0")
    );

    // Without require_signatures the same directory loads everything that
    // is otherwise fine (and notes who signed what).
    cfg.require_signatures = false;
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    for name in ["template", "echo", "lexicon", "nan-output"] {
        assert_ne!(host.plugin_status(name).map(|s| s.state), None, "{name}");
    }
    assert_eq!(
        host.plugin_status("lexicon").and_then(|s| s.signed_by),
        None,
        "an untrusted signature is not reported as trusted"
    );
}

#[test]
fn readme_walkthrough_template_to_signed_plugin() {
    // 1. Build: `scripts/build-plugins.sh` (done by built_plugins()) writes
    //    target/plugins/template.wasm.
    let built = component("template");
    // 2. Try it on sample readings: `emotion-gateway plugin test`.
    let readings = r#"{"user_id": "u1", "source": "survey", "payload": {"json": {"sam_valence": 8, "sam_arousal": 3, "label": "contentment"}}}
{"user_id": "u1", "source": "behavioral", "payload": {"json": {"positive": 3, "negative": 1, "activity": 0.6}}}

{"user_id": "u1", "source": "survey", "payload": {"json": {"sam_valence": 12, "sam_arousal": 3}}}
{"user_id": "u1", "source": "text", "payload": {"text": "not mine"}}
{"user_id": "u1", "source": "survey"}
{"user_id": "u1", "source": "behavioral", "payload": {"json": {"activity": 0}}}
"#;
    let mut out = Vec::new();
    let options = TestOptions {
        settings: Some(serde_json::json!({"survey_confidence": 0.92})),
        ..TestOptions::default()
    };
    let summary = test_plugin(&built, Cursor::new(readings), &mut out, &options).expect("test run");
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["event"]["emotion_label"], "contentment");
    assert_eq!(
        lines[0]["event"]["confidence"], 0.92,
        "settings reach the plugin"
    );
    assert_eq!(lines[0]["event"]["producer"], "template@0.1.0");
    assert!(lines[0]["micros"].as_f64().is_some_and(|m| m > 0.0));
    assert_eq!(lines[1]["event"]["source"], "behavioral");
    assert_eq!(
        lines[2]["line"], 4,
        "blank lines are skipped, numbering is the file's"
    );
    assert_eq!(lines[2]["error"]["kind"], "plugin_error");
    assert!(
        lines[2]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("between 1 and 9")
    );
    assert_eq!(lines[3]["error"]["kind"], "no_plugin");
    assert_eq!(lines[4]["error"]["kind"], "validation_error");
    assert!(
        lines[4]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("payload")
    );
    assert_eq!(lines[5]["none"], true);
    assert_eq!(
        (
            summary.lines,
            summary.events,
            summary.nothing,
            summary.errors
        ),
        (6, 2, 1, 3)
    );
    assert!(summary.to_string().contains("template@0.1.0"), "{summary}");

    // 3. Make a key: `emotion-gateway plugin keygen`.
    let keys = tempfile::tempdir().expect("tempdir");
    let pair = keygen(keys.path(), "acme").expect("keygen");
    assert_eq!(
        read_public_key(&pair.public_key_file).expect("pub").id,
        pair.fingerprint
    );
    // 4. Install and sign: copy into the plugins directory, then
    //    `emotion-gateway plugin sign`.
    let plugins = tempfile::tempdir().expect("tempdir");
    let installed = plugins.path().join("template.wasm");
    std::fs::copy(&built, &installed).expect("install");
    let sig = sign_file(&installed, &pair.secret_key_file).expect("sign");
    assert!(sig.ends_with("template.wasm.sig"));
    // 5. Configure the gateway to require signatures from that key; it
    //    loads the plugin and serves its sources.
    let text = format!(
        r#"
        dir = "{}"
        cache_dir = "{}"
        require_signatures = true
        trusted_keys = ["{}"]
        watch_interval = "0s"
        [per_plugin.template]
        deadline = "50ms"
        settings = {{ survey_confidence = 0.93 }}
        "#,
        plugins.path().display(),
        shared_cache().display(),
        pair.public_key
    );
    let cfg: emotion_plugin_host::HostConfig = toml::from_str(&text).expect("config");
    let host = PluginHost::new(cfg, "gw-test").expect("host starts");
    let s = host.plugin_status("template").expect("status");
    assert_eq!(s.state, PluginState::Running);
    assert_eq!(s.deadline_ms, 50);
    let e = host
        .normalize(vec![survey(8, 3)])
        .remove(0)
        .expect("ok")
        .expect("event");
    assert_eq!(e.confidence, Some(0.93));
}
