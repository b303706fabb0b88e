//! `firmware-sim load` against the real gateway (`target/debug/emotion-gateway`,
//! built first: `cargo build -p emotion-gateway`; a missing binary fails the
//! test): WebSocket in closed and open loop, MQTT QoS 1 (MQTT 5) and QoS 0
//! (MQTT 3.1.1) on the gateway's embedded broker. Every run's acknowledged
//! count must be what the gateway says it stored (`GET /health` and the
//! users' events), the percentiles ordered, the gateway's CPU and memory
//! present and plausible; refusals and bad options show in the exit code.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use firmware_sim::load::http;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

/// A gateway process on free ports with its own data directory; killed and
/// cleaned up on drop.
struct Gateway {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gateway_bin() -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/emotion-gateway
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .join("emotion-gateway");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p emotion-gateway)",
        bin.display()
    );
    bin
}

fn start_gateway(name: &str, env: &[(&str, String)]) -> Gateway {
    let dir = std::env::temp_dir().join(format!(
        "fsim-load-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("data dir");
    let tokens =
        format!(r#"[{{name = "test", token = "{TOKEN}", scopes = ["ingest", "read", "admin"]}}]"#);
    let mut cmd = Command::new(gateway_bin());
    cmd.env("EMOTION_GATEWAY__HTTP__LISTEN", "127.0.0.1:0")
        .env("EMOTION_GATEWAY__STORAGE__PATH", &dir)
        .env("EMOTION_GATEWAY__AUTH__TOKENS", tokens)
        .env("EMOTION_GATEWAY__MQTT__LISTEN_V4", "127.0.0.1:0")
        .env("EMOTION_GATEWAY__MQTT__LISTEN_V5", "127.0.0.1:0")
        .env("EMOTION_GATEWAY__PLUGINS__DIR", dir.join("no-plugins"))
        .env("EMOTION_GATEWAY__LOG__LEVEL", "warn")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the gateway starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("emotion-gateway listening on http://") {
                let _ = tx.send(a.trim().to_owned());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!("the gateway did not print its address within 60 s");
        }
    };
    Gateway { child, addr, dir }
}

/// Run `firmware-sim load … --json --quiet` against `gw`: exit code, the
/// report (Null if none), stderr.
fn load(gw: &Gateway, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
        .arg("load")
        .args([
            "--gateway",
            &format!("http://{}", gw.addr),
            "--token",
            TOKEN,
        ])
        .args(["--json", "--quiet", "--timeout", "20"])
        .args(args)
        .output()
        .expect("firmware-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn get(gw: &Gateway, path: &str) -> Value {
    rt().block_on(http::get_json(
        &gw.addr,
        path,
        TOKEN,
        Duration::from_secs(20),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn stored(gw: &Gateway) -> u64 {
    get(gw, "/health")["ingest"]["events_stored"]
        .as_u64()
        .expect("events_stored")
}

/// Events the gateway holds for `user` (its REST API).
fn user_events(gw: &Gateway, user: &str) -> u64 {
    // A release gateway stores more than the tool's 8 MB for one user in
    // a run (the API returns at most 100,000 events).
    let path = format!("/api/users/{user}/events?limit=100000");
    let v = rt()
        .block_on(http::get_json_up_to(
            &gw.addr,
            &path,
            TOKEN,
            Duration::from_secs(60),
            1 << 30,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    v["events"].as_array().expect("events").len() as u64
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// What every acknowledged run must show: no refusal or failure, the
/// acknowledged count stored, ordered percentiles, plausible CPU and RSS
/// of the right process.
fn check_report(gw: &Gateway, r: &Value, stderr: &str) {
    assert!(r.is_object(), "no report; stderr: {stderr}");
    let acked = u(&r["acknowledged"]);
    assert!(acked > 0, "{r:#}");
    assert_eq!(u(&r["refused"]), 0, "{r:#}");
    assert_eq!(u(&r["failed"]), 0, "{r:#}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r:#}");
    assert_eq!(u(&r["sent"]), acked, "every event sent was acknowledged");
    // The gateway's own count, read by the tool and here.
    let g = &r["gateway"];
    assert_eq!(
        u(&g["stored_after"]) - u(&g["stored_before"]),
        acked,
        "{r:#}"
    );
    assert_eq!(stored(gw), u(&g["stored_after"]));
    let interval = u(&r["interval_acknowledged"]);
    assert!(interval > 0 && interval <= acked, "{r:#}");
    let measured = f(&r["measured_s"]);
    assert!((f(&r["acknowledged_per_s"]) - interval as f64 / measured).abs() < 1e-6);
    let stored_in = u(&g["stored_in_interval"]);
    assert!(stored_in > 0 && stored_in <= acked, "{r:#}");

    let l = &r["latency"];
    assert_eq!(
        u(&l["count"]),
        interval,
        "one latency per event acknowledged"
    );
    let ps: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
        .iter()
        .map(|k| f(&l[k]))
        .collect();
    assert!(ps[0] > 0.0, "{l}");
    assert!(ps.windows(2).all(|w| w[0] <= w[1]), "ordered: {l}");
    assert!(ps[4] < 20_000.0, "{l}");

    // Group commits: every acknowledged event waited for one, so there
    // were some, each held at least one event and took some time.
    let c = &g["commits"];
    assert!(u(&c["commits"]) > 0, "{c}");
    assert!(f(&c["mean_events"]) >= 1.0 - 1e-9, "{c}");
    let mean_ms = f(&c["mean_ms"]);
    assert!(
        mean_ms > 0.0 && mean_ms <= f(&c["max_ms_since_start"]) + 1e-9,
        "{c}"
    );

    assert_eq!(u(&g["pid"]), u64::from(gw.child.id()), "{r:#}");
    let cpu = f(&g["cpu_s"]);
    let cores = f(&g["cores"]);
    let cpus = u(&r["cpus"]) as f64;
    assert!(cpu > 0.0 && cores > 0.0 && cores <= cpus + 0.5, "{g}");
    assert!((cores - cpu / measured).abs() < 1e-6);
    let per_1000 = f(&g["cpu_s_per_1000_events"]);
    assert!(
        (per_1000 - cpu * 1000.0 / interval as f64).abs() < 1e-9,
        "{g}"
    );
    let (rss, peak, sampled) = (
        u(&g["rss_bytes"]),
        u(&g["rss_peak_bytes"]),
        u(&g["rss_max_sampled_bytes"]),
    );
    assert!(rss > 2_000_000 && rss < 4_000_000_000, "{g}");
    assert!(peak >= rss && sampled >= rss && peak >= sampled, "{g}");
    assert!(f(&r["client"]["cpu_s"]) > 0.0, "{r:#}");
    assert!(r["load_average"].is_array(), "{r:#}");
}

#[test]
fn websocket_closed_loop_every_acknowledged_event_is_stored() {
    let gw = start_gateway("ws-closed", &[]);
    let (code, r, stderr) = load(
        &gw,
        &[
            "--connections",
            "4",
            "--depth",
            "8",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--users",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}\n{r:#}");
    check_report(&gw, &r, &stderr);
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["depth"], 8);
    assert!(r["latency_from_write"].is_null());
    assert!(
        r["gateway"]["pid_source"]
            .as_str()
            .is_some_and(|s| s.contains("listening on port")),
        "found by its port: {r:#}"
    );
    // Two users (load-1, load-2) hold every event between them.
    let held = user_events(&gw, "load-1") + user_events(&gw, "load-2");
    assert_eq!(held, u(&r["acknowledged"]));
}

#[test]
fn websocket_open_loop_keeps_its_rate_and_measures_from_the_due_time() {
    let gw = start_gateway("ws-open", &[]);
    let (code, r, stderr) = load(
        &gw,
        &[
            "--connections",
            "3",
            "--rate",
            "300",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--gateway-pid",
            &gw.child.id().to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}\n{r:#}");
    check_report(&gw, &r, &stderr);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["gateway"]["pid_source"], "option");
    // The schedule decides what is sent: 300/s over the measured 2 s.
    let sent = u(&r["interval_sent"]) as f64;
    assert!((sent - 600.0).abs() <= 30.0, "{r:#}");
    let acked_rate = f(&r["acknowledged_per_s"]);
    assert!((acked_rate - 300.0).abs() <= 60.0, "{r:#}");
    // From the due time is never shorter than from the write.
    let (due, wrote) = (&r["latency"], &r["latency_from_write"]);
    assert_eq!(due["count"], wrote["count"]);
    assert!(
        f(&due["max_ms"]) >= f(&wrote["max_ms"]) - 0.02,
        "{due} {wrote}"
    );
    assert!(f(&due["mean_ms"]) >= f(&wrote["mean_ms"]), "{due} {wrote}");
    // The tool's own lateness is reported, and is exactly the difference of
    // the two (means are exact sums, not bucketed).
    let lag = &r["send_lag"];
    assert_eq!(lag["count"], due["count"]);
    let (d, w, l) = (f(&due["mean_ms"]), f(&wrote["mean_ms"]), f(&lag["mean_ms"]));
    assert!((d - w - l).abs() <= 0.001, "{due} {wrote} {lag}");
}

/// Devices d0…d3 with tokens, bound to users mu0…mu3.
fn mqtt_devices(rate_limit: &str) -> Vec<(&'static str, String)> {
    let list: Vec<String> = (0..4)
        .map(|i| {
            format!(r#"{{device_id = "d{i}", token = "tok-{i}-0123456789", user_id = "mu{i}"}}"#)
        })
        .collect();
    vec![
        (
            "EMOTION_GATEWAY__MQTT__DEVICES",
            format!("[{}]", list.join(", ")),
        ),
        (
            "EMOTION_GATEWAY__MQTT__LIMITS__DEVICE_RATE_PER_SECOND",
            rate_limit.into(),
        ),
    ]
}

const MQTT_LOGIN: [&str; 6] = [
    "--mqtt-username",
    "d{i}",
    "--mqtt-password",
    "tok-{i}-0123456789",
    "--mqtt-user",
    "mu{i}",
];

/// [`load`] over MQTT as the devices of [`mqtt_devices`].
fn load_mqtt(gw: &Gateway, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["--transport", "mqtt"];
    all.extend(args);
    all.extend(MQTT_LOGIN);
    load(gw, &all)
}

#[test]
fn mqtt_qos1_on_the_embedded_broker_every_puback_is_a_stored_event() {
    let gw = start_gateway("mqtt-q1", &mqtt_devices("0"));
    let (code, r, stderr) = load_mqtt(
        &gw,
        &[
            "--connections",
            "4",
            "--depth",
            "16",
            "--duration",
            "2",
            "--warmup",
            "0.5",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}\n{r:#}");
    check_report(&gw, &r, &stderr);
    assert_eq!(r["mqtt_qos"], 1);
    assert_eq!(r["mqtt_version"], "5");
    // Found through GET /api/mqtt.
    assert!(
        r["mqtt_broker"]
            .as_str()
            .is_some_and(|b| b.starts_with("mqtt://127.0.0.1:")),
        "{r:#}"
    );
    let held: u64 = (0..4).map(|i| user_events(&gw, &format!("mu{i}"))).sum();
    assert_eq!(held, u(&r["acknowledged"]));

    // Open loop over MQTT: every PUBACK counted once in each latency.
    let (code, r, stderr) = load_mqtt(
        &gw,
        &[
            "--connections",
            "4",
            "--rate",
            "400",
            "--duration",
            "1",
            "--warmup",
            "0.3",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}\n{r:#}");
    check_report(&gw, &r, &stderr);
    let count = &r["latency"]["count"];
    assert!(u(count) > 0, "{r:#}");
    assert_eq!(&r["latency_from_write"]["count"], count, "{r:#}");
    assert_eq!(&r["send_lag"]["count"], count, "{r:#}");
}

#[test]
fn mqtt_qos0_over_3_1_1_every_published_event_is_stored() {
    let gw = start_gateway("mqtt-q0", &mqtt_devices("0"));
    let (code, r, stderr) = load_mqtt(
        &gw,
        &[
            "--qos",
            "0",
            "--mqtt-version",
            "3.1.1",
            "--connections",
            "2",
            "--rate",
            "400",
            "--users",
            "2",
            "--duration",
            "1.5",
            "--warmup",
            "0.3",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}\n{r:#}");
    assert_eq!(r["acknowledged"], 0, "QoS 0 has no acknowledgement");
    assert!(r["latency"].is_null());
    let sent = u(&r["sent"]);
    assert!(sent > 0, "{r:#}");
    let g = &r["gateway"];
    assert_eq!(
        u(&g["stored_after"]) - u(&g["stored_before"]),
        sent,
        "{r:#}"
    );
    // CPU per event counts the events stored in the interval.
    assert!(f(&g["cpu_s_per_1000_events"]) > 0.0, "{g}");
}

#[test]
fn refusals_and_bad_setups_show_in_the_exit_code() {
    // The default per-device rate limit (200/s, burst 400) refuses a
    // device that publishes as fast as it can: MQTT 5 says so per message.
    let gw = start_gateway("refusals", &mqtt_devices("200"));
    let (code, r, stderr) = load_mqtt(
        &gw,
        &[
            "--connections",
            "1",
            "--depth",
            "32",
            "--duration",
            "1.5",
            "--warmup",
            "0",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}\n{r:#}");
    let refused = u(&r["refused"]);
    assert!(refused > 0, "{r:#}");
    assert_eq!(r["refused_reasons"]["quota exceeded (0x97)"], refused);
    let g = &r["gateway"];
    assert_eq!(
        u(&g["stored_after"]) - u(&g["stored_before"]),
        u(&r["acknowledged"]),
        "refused events are not stored"
    );

    // MQTT 3.1.1 cannot refuse in a PUBACK: a device publishing for a user
    // it is not bound to gets its messages PUBACKed and dropped; the stored
    // count falling short is what says so.
    let (code, r, stderr) = load(
        &gw,
        &[
            "--transport",
            "mqtt",
            "--mqtt-version",
            "3.1.1",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--mqtt-username",
            "d0",
            "--mqtt-password",
            "tok-0-0123456789",
            "--mqtt-user",
            "mu1",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}\n{r:#}");
    let acked = u(&r["acknowledged"]);
    assert!(acked > 0, "{r:#}");
    let g = &r["gateway"];
    assert_eq!(u(&g["stored_after"]), u(&g["stored_before"]), "{r:#}");
    assert_eq!((u(&r["refused"]), u(&r["failed"])), (0, 0), "{r:#}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r:#}");

    // A wrong token: the connection is refused before the run.
    let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
        .args(["load", "--quiet", "--duration", "1", "--timeout", "5"])
        .args(["--gateway", &gw.addr, "--token", "wrong-token-0123456789"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1008"), "{stderr}");

    // Nothing listening.
    let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
        .args(["load", "--quiet", "--duration", "1", "--timeout", "2"])
        .args(["--gateway", "ws://127.0.0.1:9"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1 of 1 connection(s) failed"), "{stderr}");

    // Conflicting and out-of-range options.
    for (args, says) in [
        (vec!["--rate", "100", "--depth", "4"], "cannot be used with"),
        (vec!["--connections", "2", "--users", "3"], "--users"),
        (vec!["--qos", "0"], "--qos is for --transport mqtt"),
        (vec!["--transport", "udp"], "unknown transport"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
            .arg("load")
            .args(["--gateway", "ws://127.0.0.1:9"])
            .args(&args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
