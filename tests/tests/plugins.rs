//! Plugins inside the real gateway: raw readings over `/ws/readings`,
//! containment of broken plugins, hot swap under load, a replacement's
//! canary, and the vendor's command-line steps from sdk-plugin/README.md.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emotion_tests::{
    Gateway, GatewayOptions, TOKEN, data_dir, next_json, plugin_dir, send_json, with_plugins,
    workspace_bin,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn reading(user: &str, source: &str, payload: Value) -> Value {
    json!({"user_id": user, "source": source, "payload": payload})
}

fn survey() -> Value {
    reading(
        "u1",
        "survey",
        json!({"json": {"sam_valence": 8, "sam_arousal": 3}}),
    )
}

async fn ask(ws: &mut emotion_tests::Ws, r: &Value) -> Value {
    send_json(ws, r).await.expect("send");
    next_json(ws).await.expect("reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_plugins_are_contained_while_other_sources_keep_flowing() {
    let plugins = plugin_dir(&[
        "template",
        "infinite-loop",
        "memory-hog",
        "trap-third",
        "wrong-abi",
        "nan-output",
        "out-of-range",
        "wrong-count",
    ])
    .expect("plugins");
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &with_plugins(plugins.path(), "0s")).expect("start");
    let mut ws = gw.readings().await.expect("connect");

    let ok = ask(&mut ws, &survey()).await;
    assert_eq!(ok["status"], "processed", "{ok}");
    assert!(
        ok["event"]["producer"]
            .as_str()
            .is_some_and(|p| p.starts_with("template@"))
    );
    assert_eq!(ok["event"]["source"], "survey");

    let broken = [
        (
            "voice",
            json!({"f0_mean_hz": 180}),
            "infinite-loop",
            "deadline",
        ),
        (
            "facial",
            json!({"action_units": {"AU6": 2.0, "AU12": 3.0}, "detection_quality": 0.9}),
            "memory-hog",
            "memory",
        ),
        ("biometric", json!({"heart_rate": 72}), "nan-output", ""),
        (
            "contextual",
            json!({"json": {"place": "home"}}),
            "out-of-range",
            "",
        ),
        ("text", json!({"text": "hello"}), "wrong-count", ""),
    ];
    for (source, payload, plugin, hint) in &broken {
        let r = ask(&mut ws, &reading("u1", source, payload.clone())).await;
        assert_eq!(r["status"], "error", "{source}: {r}");
        let msg = r["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(msg.contains(plugin), "{source}: {msg}");
        assert!(msg.contains(hint), "{source}: expected `{hint}` in {msg}");
        // The good plugin keeps serving in the same gateway, right after.
        assert_eq!(ask(&mut ws, &survey()).await["status"], "processed");
    }
    // trap-third: two good calls, then a trap that names the plugin.
    let physio = reading("u1", "physiological", json!({"heart_rate": 70}));
    for _ in 0..2 {
        assert_eq!(ask(&mut ws, &physio).await["status"], "processed");
    }
    let trapped = ask(&mut ws, &physio).await;
    assert_eq!(trapped["error"], "plugin_failed", "{trapped}");
    assert!(
        trapped["message"]
            .as_str()
            .unwrap_or_default()
            .contains("trap-third")
    );

    // Repeated failures quarantine a plugin; the others are unaffected.
    for _ in 0..3 {
        ask(
            &mut ws,
            &reading("u1", "contextual", json!({"json": {"place": "home"}})),
        )
        .await;
    }
    let q = ask(
        &mut ws,
        &reading("u1", "contextual", json!({"json": {"place": "home"}})),
    )
    .await;
    assert_eq!(q["error"], "plugin_quarantined", "{q}");
    assert_eq!(ask(&mut ws, &survey()).await["status"], "processed");

    let status = gw.get_json("/api/plugins").await.expect("plugins");
    let by_name: HashMap<String, Value> = status["plugins"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_owned(), p.clone()))
        .collect();
    assert_eq!(by_name["template"]["state"], "running");
    assert_eq!(by_name["wrong-abi"]["state"], "rejected");
    assert!(
        by_name["wrong-abi"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ABI")
    );
    assert_eq!(by_name["out-of-range"]["state"], "quarantined");
    assert!(by_name["out-of-range"]["until"].is_string());
    for name in [
        "infinite-loop",
        "memory-hog",
        "nan-output",
        "wrong-count",
        "trap-third",
    ] {
        let p = &by_name[name];
        assert!(
            p["stats"]["errors"].as_u64().unwrap_or(0) >= 1,
            "{name}: {p}"
        );
        assert!(p["last_failure"]["message"].is_string(), "{name}: {p}");
    }
    assert_eq!(
        by_name["template"]["stats"]["readings"], 7,
        "one survey before, one after each of 5 broken sources, one after the quarantine"
    );
    assert!(by_name["template"]["version"].is_string());
    assert_eq!(status["routes"]["survey"], "template");

    // The events went through the buffer and analyzer like any other.
    let events = gw.user_events("u1").await.expect("events");
    assert!(events.iter().all(|e| {
        e["producer"]
            .as_str()
            .is_some_and(|p| p.starts_with("template@") || p.starts_with("trap-third@"))
    }));
    assert_eq!(
        gw.get_json("/api/users/u1/summary").await.expect("summary")["event_count"],
        events.len()
    );

    // Invalid readings are validation errors naming the field.
    let bad = ask(&mut ws, &reading("u1", "text", json!({"txt": "typo"}))).await;
    assert_eq!(bad["error"], "validation_error", "{bad}");
    assert!(bad["message"].as_str().unwrap_or_default().contains("txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_nothing_and_refuses_a_broken_replacement() {
    let plugins = plugin_dir(&["echo"]).expect("plugins");
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &with_plugins(plugins.path(), "100ms")).expect("start");
    let ws = gw.readings().await.expect("connect");
    // The sender streams until the gateway reports v2, then sends `after`
    // more, so the swap lands mid-stream however fast or slow the machine is.
    let after = 1000usize;
    let swapped = Arc::new(AtomicBool::new(false));
    let (total_tx, mut total_rx) = watch::channel(None::<usize>);
    let started = Instant::now();
    let (mut tx, mut rx) = ws.split();
    let send = tokio::spawn({
        let swapped = swapped.clone();
        async move {
            let mut i = 0usize;
            let mut remaining = after;
            while remaining > 0 {
                if swapped.load(Ordering::Acquire) {
                    remaining -= 1;
                }
                assert!(i < 200_000, "the swap never landed while readings flowed");
                let r = reading("swap", "text", json!({"text": format!("joy 0.5 0.6 {i}")}));
                tx.send(Message::Text(r.to_string().into()))
                    .await
                    .expect("send");
                i += 1;
                if i.is_multiple_of(50) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let _ = total_tx.send(Some(i));
            tx
        }
    });
    let received = Arc::new(AtomicUsize::new(0));
    let recv = tokio::spawn({
        let received = received.clone();
        async move {
            let mut replies = Vec::new();
            loop {
                let total = *total_rx.borrow();
                if let Some(total) = total
                    && replies.len() >= total
                {
                    assert_eq!(replies.len(), total, "one reply per reading");
                    return replies;
                }
                tokio::select! {
                    // Only until the total is known: a finished sender's channel
                    // would report a change at once, every time.
                    changed = total_rx.changed(), if total.is_none() => {
                        if changed.is_err() && total_rx.borrow().is_none() {
                            panic!("the sender stopped without a total");
                        }
                    }
                    next = tokio::time::timeout(Duration::from_secs(30), rx.next()) => match next {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            replies.push(serde_json::from_str::<Value>(&t).expect("json"));
                            received.store(replies.len(), Ordering::Release);
                        }
                        Ok(Some(Ok(_))) => {}
                        other => panic!(
                            "stream ended early after {} replies: {other:?}",
                            replies.len()
                        ),
                    },
                }
            }
        }
    });
    // Swap mid-stream: v2 replaces v1 once v1 has answered readings.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Acquire) < 100 {
        assert!(Instant::now() < deadline, "v1 answered no readings");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let v2 = emotion_tests::built_plugin("echo-v2").expect("echo-v2");
    let staging = plugins.path().join("echo.wasm.part");
    std::fs::copy(&v2, &staging).expect("copy");
    std::fs::rename(&staging, plugins.path().join("echo.wasm")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = gw.get_json("/api/plugins").await.expect("plugins");
        if s["plugins"][0]["version"] == "2.0.0" {
            break;
        }
        assert!(Instant::now() < deadline, "v2 never took over: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    swapped.store(true, Ordering::Release);
    let _tx = send.await.expect("sender");
    let replies = recv.await.expect("receiver");
    let n = replies.len();
    assert!(n > after, "readings flowed before the swap too");
    let mut producers: HashMap<String, usize> = HashMap::new();
    for r in &replies {
        assert_eq!(r["status"], "processed", "{r}");
        *producers
            .entry(
                r["event"]["producer"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(
        producers.len(),
        2,
        "the swap must land mid-stream: {producers:?}"
    );
    assert!(producers.contains_key("echo@1.0.0") && producers.contains_key("echo@2.0.0"));
    let stored = gw.user_events("swap").await.expect("events");
    assert_eq!(stored.len(), n, "every reading stored exactly once");
    let mut ids: Vec<&str> = stored
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n);
    eprintln!(
        "{n} readings in {:?}, by producer: {producers:?}",
        started.elapsed()
    );

    // A broken replacement (truncated file) is refused; 2.0.0 keeps serving.
    let bytes = std::fs::read(&v2).expect("read");
    std::fs::write(
        plugins.path().join("echo.wasm.part"),
        &bytes[..bytes.len() / 2],
    )
    .expect("write");
    std::fs::rename(
        plugins.path().join("echo.wasm.part"),
        plugins.path().join("echo.wasm"),
    )
    .expect("rename");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = gw.get_json("/api/plugins").await.expect("plugins");
        let p = &s["plugins"][0];
        let msg = p["last_reload"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if msg.contains("refused") || msg.contains("kept") {
            assert_eq!(p["state"], "running", "{p}");
            assert_eq!(p["version"], "2.0.0");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken replacement was not reported: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws2 = gw.readings().await.expect("connect");
    let r = ask(
        &mut ws2,
        &reading("swap", "text", json!({"text": "calm 0.3 0.2"})),
    )
    .await;
    assert_eq!(r["event"]["producer"], "echo@2.0.0", "{r}");
}

/// A replacement that traps on some live readings shadows the serving
/// version, is rolled back, and says why in `/api/plugins`, in the log and
/// in the dashboard's status frame; every reading was answered by the
/// serving version meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_replacement_is_rolled_back_and_shown_in_the_api_and_dashboard() {
    let plugins = plugin_dir(&["echo"]).expect("plugins");
    let dir = data_dir().expect("tmp");
    let mut opts = with_plugins(plugins.path(), "100ms");
    opts.env.push((
        "EMOTION_GATEWAY__PLUGINS__CANARY__MIN_READINGS".into(),
        "200".into(),
    ));
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let mut ws = gw.readings().await.expect("connect");

    let faulty = emotion_tests::built_plugin("echo-faulty").expect("echo-faulty");
    let staging = plugins.path().join("echo.wasm.part");
    std::fs::copy(&faulty, &staging).expect("copy");
    std::fs::rename(&staging, plugins.path().join("echo.wasm")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = gw.get_json("/api/plugins").await.expect("plugins");
        if s["plugins"][0]["canary"]["state"] == "shadowing" {
            assert_eq!(s["plugins"][0]["version"], "1.0.0", "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "the canary never started: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // One reading in ten makes the candidate trap; the serving version
    // answers every one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0usize;
    let plugin = loop {
        for _ in 0..50 {
            i += 1;
            let text = if i.is_multiple_of(10) {
                format!("0.2 0.4 boom {i}")
            } else {
                format!("0.25 0.5 {i}")
            };
            let r = ask(&mut ws, &reading("canary", "text", json!({"text": text}))).await;
            assert_eq!(r["status"], "processed", "{r}");
            assert_eq!(r["event"]["producer"], "echo@1.0.0", "{r}");
        }
        let s = gw.get_json("/api/plugins").await.expect("plugins");
        let p = s["plugins"][0].clone();
        if p["canary"]["state"] != "shadowing" {
            break p;
        }
        assert!(Instant::now() < deadline, "no decision: {p}");
    };
    let c = &plugin["canary"];
    assert_eq!(c["state"], "rolled_back", "{plugin}");
    assert_eq!(c["candidate"]["producer"], "echo@3.0.0-faulty");
    assert_eq!(c["current"]["producer"], "echo@1.0.0");
    assert!(c["readings"].as_u64() >= Some(200), "{c}");
    assert!(c["candidate"]["error_rate"].as_f64() > Some(0.05), "{c}");
    assert_eq!(c["current"]["error_rate"], 0.0, "{c}");
    assert!(c["decided_at"].is_string(), "{c}");
    let reason = c["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("error rate worse by more than the margin of 1.0%"),
        "{reason}"
    );
    assert_eq!(plugin["version"], "1.0.0");
    assert_eq!(plugin["state"], "running");
    let stored = gw.user_events("canary").await.expect("events");
    assert_eq!(stored.len(), i, "every reading answered and stored once");
    assert!(
        gw.logs()
            .contains("rolled back echo@3.0.0-faulty, echo@1.0.0 keeps serving"),
        "not in the log:\n{}",
        gw.logs()
    );

    // The dashboard's status frame carries the same.
    let mut req = gw
        .ws_url("/ws/dashboard")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-auth-token", TOKEN.parse().expect("header"));
    let (mut dash, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let status = loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), dash.next())
            .await
            .expect("a status frame");
        if let Some(Ok(Message::Text(t))) = frame {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "status" {
                break v;
            }
        }
    };
    assert_eq!(
        status["plugins"]["plugins"][0]["canary"]["state"], "rolled_back",
        "{status}"
    );
}

fn gateway_cmd(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("emotion-gateway"))
        .args(args)
        .output()
        .expect("run emotion-gateway")
}

/// The steps of sdk-plugin/README.md, with the real binary: test the plugin
/// on sample readings, make a key, sign, run it in a gateway that requires
/// signatures, and see an unsigned one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_readme_walkthrough_with_the_real_cli() {
    let work = tempfile::tempdir().expect("tmp");
    let template = emotion_tests::built_plugin("template").expect("template");

    // 4. Try it on sample readings.
    let readings = work.path().join("readings.jsonl");
    std::fs::write(
        &readings,
        [
            r#"{"user_id": "u1", "source": "survey", "payload": {"json": {"sam_valence": 8, "sam_arousal": 3}}}"#,
            r#"{"user_id": "u1", "source": "behavioral", "payload": {"json": {"activity": 0}}}"#,
            r#"{"user_id": "u1", "source": "survey", "payload": {"json": {"sam_valence": 12, "sam_arousal": 3}}}"#,
            r#"{"user_id": "u1", "source": "text", "payload": {"txt": "typo"}}"#,
        ]
        .join("\n"),
    )
    .expect("write");
    let out = gateway_cmd(&[
        "plugin",
        "test",
        template.to_str().expect("utf8"),
        readings.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0]["event"]["producer"]
            .as_str()
            .is_some_and(|p| p.starts_with("template@"))
    );
    assert!(lines[0]["micros"].is_number());
    assert_eq!(lines[1]["none"], true);
    assert_eq!(lines[2]["error"]["kind"], "plugin_error");
    assert_eq!(lines[3]["error"]["kind"], "validation_error");

    // 5. Make a signing key and sign the component.
    let keys = work.path().join("keys");
    let out = gateway_cmd(&[
        "plugin",
        "keygen",
        "acme",
        "--dir",
        keys.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(keys.join("acme.pub")).expect("public key");
    let public = public
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("key line")
        .to_owned();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&public));

    let signed_dir = work.path().join("plugins");
    std::fs::create_dir_all(&signed_dir).expect("mkdir");
    let installed = signed_dir.join("template.wasm");
    std::fs::copy(&template, &installed).expect("copy");
    let out = gateway_cmd(&[
        "plugin",
        "sign",
        installed.to_str().expect("utf8"),
        "--key",
        keys.join("acme.key").to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(signed_dir.join("template.wasm.sig").is_file());
    // An unsigned component beside it must be refused.
    std::fs::copy(
        emotion_tests::built_plugin("echo").expect("echo"),
        signed_dir.join("echo.wasm"),
    )
    .expect("copy");

    // 6. Run it in the gateway, signatures required.
    let mut opts: GatewayOptions = with_plugins(&signed_dir, "0s");
    opts.env.push((
        "EMOTION_GATEWAY__PLUGINS__REQUIRE_SIGNATURES".into(),
        "true".into(),
    ));
    opts.env.push((
        "EMOTION_GATEWAY__PLUGINS__TRUSTED_KEYS".into(),
        format!("[\"{public}\"]"),
    ));
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let status = gw.get_json("/api/plugins").await.expect("plugins");
    let list = status["plugins"].as_array().expect("list");
    let find = |n: &str| {
        list.iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(find("template")["state"], "running", "{status}");
    assert!(find("template")["signed_by"].is_string());
    assert_eq!(find("echo")["state"], "rejected", "{status}");
    assert!(
        find("echo")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("signature")
    );
    let mut ws = gw.readings().await.expect("connect");
    assert_eq!(ask(&mut ws, &survey()).await["status"], "processed");
    let r = ask(&mut ws, &reading("u1", "text", json!({"text": "hi"}))).await;
    assert_eq!(r["error"], "no_plugin", "{r}");
    let _ = TOKEN;
}
