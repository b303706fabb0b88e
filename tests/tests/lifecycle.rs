//! Start-up, configuration errors and graceful shutdown of the real binary.

use std::process::Command;

use emotion_tests::{Gateway, GatewayOptions, data_dir, next_json, send_json, workspace_bin};
use serde_json::json;

#[tokio::test]
async fn sigterm_flushes_and_exits_cleanly_and_a_restart_keeps_everything() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("start");
    let (mut ws, _) = gw.stream("31").await.expect("connect");
    for i in 0..20 {
        send_json(
            &mut ws,
            &json!({"user_id": 31, "source": "text", "emotion_label": "calm", "context": {"i": i}}),
        )
        .await
        .expect("send");
    }
    for _ in 0..20 {
        assert_eq!(
            next_json(&mut ws).await.expect("reply")["status"],
            "processed"
        );
    }
    let logs_before = gw.logs();
    assert_eq!(gw.terminate().expect("terminate"), Some(0), "{logs_before}");
    let gw = Gateway::start(dir.path(), &GatewayOptions::default()).expect("restart");
    assert_eq!(gw.user_events("31").await.expect("events").len(), 20);
    assert!(
        gw.logs().contains("replayed"),
        "start-up reports the replay"
    );
}

#[test]
fn a_bad_config_reports_every_problem_and_exits_2() {
    let dir = data_dir().expect("tmp");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "gatway_id = \"x\"\n[http]\nlisten = \"nowhere\"\n[storage]\nmax_batch_events = 0\n",
    )
    .expect("write");
    let out = Command::new(workspace_bin("emotion-gateway"))
        .args(["--config"])
        .arg(&cfg)
        .arg("check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["gatway_id", "invalid configuration"] {
        assert!(err.contains(needle), "{err}");
    }
    // With the typo fixed, the semantic problems are all listed together.
    std::fs::write(
        &cfg,
        "[http]\nlisten = \"nowhere\"\n[storage]\nmax_batch_events = 0\n",
    )
    .expect("write");
    let out = Command::new(workspace_bin("emotion-gateway"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains("storage.max_batch_events"),
        "{err}"
    );

    let out = Command::new(workspace_bin("emotion-gateway"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[test]
fn a_port_in_use_is_a_clear_error_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = data_dir().expect("tmp");
    let out = Command::new(workspace_bin("emotion-gateway"))
        .env("EMOTION_GATEWAY__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("EMOTION_GATEWAY__STORAGE__PATH", dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains(&port.to_string()),
        "{err}"
    );
}
