//! The dashboard in real headless Chromium: the gateway runs with simulated
//! users streaming events (and a simulated BLE strap paired), and
//! `tests/browser/dashboard.test.mjs` (playwright-core driving Debian's
//! chromium) signs in, watches the counters move, checks the charts, injects
//! a high-stress burst and waits for its risk indicator and alert, for the
//! risk sweep to flag the user, opens their printable report, downloads
//! a CSV export and compares it with the API, saves screenshots, checks a
//! wrong token's login error, and checks `/docs` offline.
//!
//! Needs node, /usr/bin/chromium and `npm ci` in tests/browser: without them
//! this test FAILS (never skips) and names `scripts/install-browser-test-deps.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use emotion_tests::{
    Gateway, READ_TOKEN, TOKEN, data_dir, next_json, plugin_dir, send_json, with_plugins,
    workspace_bin,
};
use serde_json::{Value, json};

const INSTALL: &str = "run scripts/install-browser-test-deps.sh (installs Debian's chromium and runs `npm ci` in tests/browser)";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Fail loudly, with the fix, when the browser toolchain is missing.
fn require_browser_deps() -> PathBuf {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "{} is missing: {INSTALL}",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({node:?}): {INSTALL}"
    );
    let pw = repo_root().join("tests/browser/node_modules/playwright-core");
    assert!(pw.exists(), "{} is missing: {INSTALL}", pw.display());
    chromium
}

/// Users streaming events until `stop`: a few per second each, every source.
fn simulate_users(
    gw: &Gateway,
    users: &[&str],
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let sources = [
        "voice",
        "text",
        "facial",
        "survey",
        "behavioral",
        "contextual",
        "biometric",
    ];
    users
        .iter()
        .enumerate()
        .map(|(k, user)| {
            let url = gw.ws_url(&format!("/ws/emotions/stream?user_id={user}&token={TOKEN}"));
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
                    return 0;
                };
                if next_json(&mut ws).await.is_err() {
                    return 0;
                }
                let mut sent = 0u64;
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (k as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    // xorshift: varied but reproducible points, calm to tense.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let v = ((x % 1600) as f64 / 1000.0) - 0.8;
                    let a = ((x >> 20) % 900) as f64 / 1000.0 + 0.05;
                    let src = sources[((x >> 40) as usize + k) % sources.len()];
                    let body = json!({"source": src, "valence": v, "arousal": a, "confidence": 0.8,
                        "context": {"sim": true, "note": "a, \"quoted\" note"}});
                    if send_json(&mut ws, &body).await.is_err() || next_json(&mut ws).await.is_err()
                    {
                        break;
                    }
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
                sent
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let chromium = require_browser_deps();
    let plugins = plugin_dir(&["physiological"]).expect("plugins (scripts/build-plugins.sh)");
    let mut opts = with_plugins(plugins.path(), "0s");
    opts.env
        .push(("EMOTION_GATEWAY__BLE__ADAPTER".into(), "simulated".into()));
    // A sweep a second, so the burst is flagged while the page watches.
    opts.env
        .push(("EMOTION_GATEWAY__RISK_SWEEP__INTERVAL".into(), "1s".into()));
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &opts).expect("start");

    // A paired (simulated) heart-rate strap, so the devices card has one.
    let paired = reqwest::Client::new()
        .post(gw.http("/api/ble/pair"))
        .header("x-auth-token", TOKEN)
        .json(&json!({"address": "E0:00:00:00:B1:01", "user_id": "wearer-1"}))
        .send()
        .await
        .expect("pair");
    assert!(paired.status().is_success(), "pairing: {}", paired.status());

    let stop = Arc::new(AtomicBool::new(false));
    let users = ["sim-1", "sim-2", "sim-3", "sim-4"];
    let sims = simulate_users(&gw, &users, stop.clone());
    // Some history before the page opens.
    let t0 = Instant::now();
    while gw.user_events("sim-1").await.map(|e| e.len()).unwrap_or(0) < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "simulated users send nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let artifacts = workspace_bin("emotion-gateway")
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("browser-artifacts"))
        .unwrap_or_else(|| PathBuf::from("target/browser-artifacts"));
    let root = repo_root();
    let mut cmd = Command::new("node");
    cmd.arg("tests/browser/dashboard.test.mjs")
        .current_dir(&root)
        .env("GATEWAY_URL", format!("http://{}", gw.addr))
        .env("READ_TOKEN", READ_TOKEN)
        .env("INGEST_TOKEN", TOKEN)
        .env("EXPORT_USER", "sim-1")
        .env("BURST_USER", "burst-user")
        .env("ARTIFACT_DIR", &artifacts)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        let child = cmd.spawn().expect("node");
        wait_with_timeout(child, Duration::from_secs(180))
    })
    .await
    .expect("join");
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for s in sims {
        sent += s.await.unwrap_or(0);
    }

    let (status, stdout, stderr) = output;
    println!("--- browser test output ---\n{stdout}\n{stderr}");
    assert!(
        status == Some(0),
        "the browser test failed (exit {status:?}):\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        gw.logs()
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str(r).ok())
        .expect("a RESULT line");
    let shot = result["screenshot"].as_str().expect("screenshot path");
    assert!(Path::new(shot).is_file(), "{shot}");
    println!("screenshot (test artefact): {shot}");
    println!(
        "phone screenshot: {}; docs screenshot: {}",
        result["phone_screenshot"], result["docs"]["screenshot"]
    );
    assert!(
        result["export"]["rows"].as_u64().is_some_and(|n| n >= 5),
        "{result}"
    );
    assert!(result["counters"]["second"].as_u64() > result["counters"]["first"].as_u64());
    assert_eq!(result["ble_pairings"], 1, "{result}");
    assert!(
        result["report"]["high_stress_events"].as_u64() >= Some(12),
        "{result}"
    );
    assert!(result["flagged"].as_str().is_some(), "{result}");
    assert!(
        result["fused"].as_array().is_some_and(|f| !f.is_empty()),
        "{result}"
    );
    assert!(sent > 20, "simulated users sent {sent} events");

    // The burst is what the analyzer says too.
    let summary = gw
        .get_json("/api/users/burst-user/summary")
        .await
        .expect("summary");
    let risks = summary["state"]["risk_assessment"]["specific_risks"].to_string();
    assert!(risks.contains("high_stress"), "{summary}");
}

/// Wait for a child, killing it after `limit`; returns (exit code, stdout, stderr).
fn wait_with_timeout(
    mut child: std::process::Child,
    limit: Duration,
) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code(),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break None,
        }
    };
    (
        status,
        reader.join().unwrap_or_default(),
        ereader.join().unwrap_or_default(),
    )
}
