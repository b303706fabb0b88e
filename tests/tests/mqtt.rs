//! MQTT against the real binary, with third-party peers: Mosquitto's
//! command-line clients (MQTT 3.1.1 and 5) on the embedded broker, and a
//! Mosquitto broker for the upstream mode.
//!
//! These tests need `mosquitto`, `mosquitto_pub` and `mosquitto_sub`
//! (`scripts/install-mqtt-test-deps.sh`); without them they fail, naming it.
//!
//! The kill -9 test consumes from the machine's own Mosquitto on
//! 127.0.0.1:1883. The 10,000-while-down test runs a private Mosquitto (same
//! binary, own port, own persistence directory) because the packaged
//! configuration of the one on 1883 keeps at most 1000 queued messages per
//! offline client (`max_queued_messages`, Mosquitto's default): it would drop
//! 9,000 of them before any gateway could see them. Set
//! `EMOTION_TEST_MQTT_UPSTREAM=HOST:PORT` to run that test against another
//! broker (it must queue at least 10,000 messages per client).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use emotion_tests::{
    Gateway, GatewayOptions, PrivateMosquitto, data_dir, mqtt_tool, plugin_dir, with_plugins,
    workspace_bin,
};
use rand::Rng;
use serde_json::{Value, json};

const TOKEN_A: &str = "token-of-device-a-0123";
const TOKEN_B: &str = "token-of-device-b-0123";

fn devices_env() -> (String, String) {
    (
        "EMOTION_GATEWAY__MQTT__DEVICES".into(),
        format!(
            r#"[{{device_id = "dev-a", token = "{TOKEN_A}", user_id = "1"}}, {{device_id = "dev-b", token = "{TOKEN_B}", user_id = "2"}}]"#
        ),
    )
}

/// The embedded broker's ports (MQTT 3.1.1, MQTT 5), from `GET /api/mqtt`.
async fn mqtt_ports(gw: &Gateway) -> (u16, u16) {
    let s = gw.get_json("/api/mqtt").await.expect("/api/mqtt");
    let port = |key: &str| {
        s["embedded"]["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["key"] == key))
            .and_then(|l| l["addr"].as_str())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {key} listener in {s}"))
    };
    (port("mqtt.listen_v4"), port("mqtt.listen_v5"))
}

/// `mosquitto_pub` once; returns its output.
fn publish(port: u16, version: &str, user: &str, pass: &str, topic: &str, payload: &str) -> Output {
    Command::new(mqtt_tool("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args([
            "-u", user, "-P", pass, "-t", topic, "-q", "1", "-m", payload,
        ])
        .output()
        .expect("mosquitto_pub runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `mosquitto_sub` (debug output on, so that its SUBACK can be
/// awaited before anything is published).
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: Arc<std::sync::Mutex<String>>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sub {
    fn start(port: u16, version: &str, user: &str, pass: &str, topics: &[&str]) -> Sub {
        // mosquitto_sub flushes its output after each message but not its
        // debug lines (the SUBACK): line-buffer it.
        let mut cmd = Command::new(mqtt_tool("stdbuf"));
        cmd.arg("-oL").arg(mqtt_tool("mosquitto_sub"));
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args(["-u", user, "-P", pass, "-q", "1", "-d", "-v"]);
        for t in topics {
            cmd.args(["-t", t]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let e2 = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut e) = e2.lock() {
                    e.push_str(&line);
                    e.push('\n');
                }
            }
        });
        let mut sub = Sub {
            child,
            lines,
            errors,
        };
        sub.wait_line(|l| l.contains("SUBACK"));
        sub
    }

    fn wait_line(&mut self, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if f(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "mosquitto_sub: no matching line in time; stderr: {}",
                    self.errors.lock().map(|e| e.clone()).unwrap_or_default()
                ),
            }
        }
    }

    /// The next error report about messages on `about`.
    fn error_about(&mut self, about: &str) -> Value {
        loop {
            let e = self.message("devices/dev-a/errors");
            if e["topic"] == about {
                return e;
            }
        }
    }

    /// The next message on `topic`, as JSON (`-v` prints "topic payload").
    fn message(&mut self, topic: &str) -> Value {
        let prefix = format!("{topic} ");
        let line = self.wait_line(|l| l.starts_with(&prefix));
        serde_json::from_str(&line[prefix.len()..]).expect("a JSON message")
    }
}

fn event(valence: f64, arousal: f64, seq: u64) -> String {
    json!({"source": "voice", "valence": valence, "arousal": arousal, "confidence": 0.8,
           "timestamp": chrono::Utc::now().to_rfc3339(), "context": {"seq": seq}})
    .to_string()
}

fn embedded_options() -> GatewayOptions {
    let mut o = GatewayOptions::default();
    o.env.push(devices_env());
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_readings_and_events_over_3_1_1_and_5_and_receive_analysis() {
    let plugins = plugin_dir(&["template"]).expect("template plugin");
    let dir = data_dir().expect("tmp");
    let mut opts = with_plugins(plugins.path(), "0s");
    opts.env.push(devices_env());
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let (v4, v5) = mqtt_ports(&gw).await;
    for (version, port, user, dev, token) in [
        ("mqttv311", v4, "1", "dev-a", TOKEN_A),
        ("mqttv5", v5, "2", "dev-b", TOKEN_B),
    ] {
        let analysis = format!("emotions/{user}/analysis");
        let mut sub = Sub::start(port, version, dev, token, &[&analysis]);
        // A raw survey reading: the template plugin makes the event; the
        // device's bound user fills in user_id.
        let out = publish(
            port,
            version,
            dev,
            token,
            &format!("sensors/{dev}/survey"),
            r#"{"payload": {"json": {"sam_valence": 8, "sam_arousal": 3}}}"#,
        );
        assert!(
            out.status.success() && stderr(&out).is_empty(),
            "{version}: {}",
            stderr(&out)
        );
        let first = sub.message(&analysis);
        assert_eq!(first["status"], "processed", "{first}");
        assert_eq!(first["source"], "survey");
        assert_eq!(first["metrics"]["event_count"], 1);
        assert_eq!(first["analysis"]["analysis"], "insufficient_data");
        // A ready-made event, same session.
        let out = publish(
            port,
            version,
            dev,
            token,
            &format!("emotions/{user}/events"),
            &event(0.5, 0.4, 1),
        );
        assert!(
            out.status.success() && stderr(&out).is_empty(),
            "{version}: {}",
            stderr(&out)
        );
        let second = sub.message(&analysis);
        assert_eq!(second["metrics"]["event_count"], 2, "{second}");
        assert_eq!(second["analysis"]["analysis"], "contextual", "{second}");
        let stored = gw.user_events(user).await.expect("events");
        assert_eq!(stored.len(), 2, "{version}");
        assert!(stored.iter().any(|e| {
            e["producer"]
                .as_str()
                .is_some_and(|p| p.starts_with("template@"))
        }));
        assert!(stored.iter().any(|e| e["producer"] == "client"));
    }
    let s = gw.get_json("/api/mqtt").await.expect("status");
    assert_eq!(s["messages"]["stored"], 4, "{s}");
    assert_eq!(s["devices"]["dev-a"]["stored"], 2, "{s}");
    assert_eq!(s["devices"]["dev-b"]["stored"], 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_over_3_1_1_and_5() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &embedded_options()).expect("start");
    let (v4, v5) = mqtt_ports(&gw).await;
    for (version, port) in [("mqttv311", v4), ("mqttv5", v5)] {
        for (user, pass) in [("dev-a", TOKEN_B), ("stranger", TOKEN_A)] {
            let out = publish(
                port,
                version,
                user,
                pass,
                "emotions/1/events",
                &event(0.1, 0.1, 1),
            );
            assert!(!out.status.success(), "{version} {user}: accepted");
            let e = stderr(&out).to_lowercase();
            assert!(
                e.contains("bad user name or password"),
                "{version} {user}: {e}"
            );
        }
    }
    assert!(gw.user_events("1").await.expect("events").is_empty());
    let s = gw.get_json("/api/mqtt").await.expect("status");
    assert_eq!(s["embedded"]["refused"]["bad_credentials"], 4, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_topics_are_refused_and_bad_input_is_reported() {
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &embedded_options()).expect("start");
    let (v4, v5) = mqtt_ports(&gw).await;
    let mut errors = Sub::start(v4, "mqttv311", "dev-a", TOKEN_A, &["devices/dev-a/errors"]);
    // MQTT 5: the PUBACK says "not authorized".
    let out = publish(
        v5,
        "mqttv5",
        "dev-a",
        TOKEN_A,
        "sensors/dev-b/survey",
        r#"{"payload": {"json": {}}}"#,
    );
    assert!(stderr(&out).contains("Not authorized"), "{}", stderr(&out));
    let e = errors.message("devices/dev-a/errors");
    assert_eq!(
        (e["error"].as_str(), e["topic"].as_str()),
        (Some("not_authorized"), Some("sensors/dev-b/survey")),
        "{e}"
    );
    // MQTT 3.1.1 has no negative PUBACK: the errors topic says it.
    let out = publish(
        v4,
        "mqttv311",
        "dev-a",
        TOKEN_A,
        "emotions/2/events",
        &event(0.1, 0.1, 1),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let e = errors.message("devices/dev-a/errors");
    assert_eq!(
        (e["error"].as_str(), e["topic"].as_str()),
        (Some("not_authorized"), Some("emotions/2/events")),
        "{e}"
    );
    // Reading another user's results is refused too.
    let denied = Command::new(mqtt_tool("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &v5.to_string(), "-V", "mqttv5"])
        .args([
            "-u",
            "dev-a",
            "-P",
            TOKEN_A,
            "-t",
            "emotions/2/analysis",
            "-t",
            "alerts/2",
            "-W",
            "3",
        ])
        .output()
        .expect("mosquitto_sub");
    assert!(stderr(&denied).contains("denied"), "{}", stderr(&denied));
    // Malformed and out-of-range input: dropped, reported, connection fine.
    let out = publish(
        v5,
        "mqttv5",
        "dev-a",
        TOKEN_A,
        "emotions/1/events",
        "{not json",
    );
    assert!(
        stderr(&out).contains("Payload format invalid"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        errors.error_about("emotions/1/events")["error"],
        "invalid_json"
    );
    let out = publish(
        v4,
        "mqttv311",
        "dev-a",
        TOKEN_A,
        "emotions/1/events",
        r#"{"source": "voice", "valence": 7, "arousal": 0.5}"#,
    );
    assert!(out.status.success());
    let e = errors.error_about("emotions/1/events");
    assert_eq!(e["error"], "validation_error");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("valence")),
        "{e}"
    );
    let out = publish(
        v4,
        "mqttv311",
        "dev-a",
        TOKEN_A,
        "sensors/dev-a/telepathy",
        r#"{"payload": {"json": {}}}"#,
    );
    assert!(out.status.success());
    assert_eq!(
        errors.error_about("sensors/dev-a/telepathy")["error"],
        "unknown_source"
    );
    let big = format!(
        r#"{{"source": "voice", "valence": 0.1, "arousal": 0.1, "context": {{"pad": "{}"}}}}"#,
        "x".repeat(70_000)
    );
    let out = publish(v4, "mqttv311", "dev-a", TOKEN_A, "emotions/1/events", &big);
    assert!(out.status.success());
    assert_eq!(
        errors.error_about("emotions/1/events")["error"],
        "too_large"
    );

    assert!(gw.user_events("2").await.expect("events").is_empty());
    assert!(gw.user_events("1").await.expect("events").is_empty());
    let out = publish(
        v4,
        "mqttv311",
        "dev-a",
        TOKEN_A,
        "emotions/1/events",
        &event(0.1, 0.1, 2),
    );
    assert!(out.status.success());
    assert_eq!(gw.user_events("1").await.expect("events").len(), 1);
    let s = gw.get_json("/api/mqtt").await.expect("status");
    let r = &s["messages"]["rejected"];
    assert_eq!(r["not_authorized"], 2, "{s}");
    assert_eq!(r["invalid_json"], 1, "{s}");
    assert_eq!(r["validation_error"], 1, "{s}");
    assert_eq!(r["unknown_source"], 1, "{s}");
    assert_eq!(r["too_large"], 1, "{s}");
    assert_eq!(s["embedded"]["subscriptions_denied"], 2, "{s}");
}

/// A broker for the upstream tests.
struct Upstream {
    port: u16,
    _broker: Option<PrivateMosquitto>,
}

fn upstream_broker() -> Upstream {
    if let Ok(addr) = std::env::var("EMOTION_TEST_MQTT_UPSTREAM") {
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("EMOTION_TEST_MQTT_UPSTREAM=HOST:PORT");
        return Upstream {
            port,
            _broker: None,
        };
    }
    let broker = PrivateMosquitto::start("max_queued_messages 0\nmax_inflight_messages 200")
        .expect("a private mosquitto");
    Upstream {
        port: broker.port,
        _broker: Some(broker),
    }
}

fn upstream_options(port: u16, client_id: &str) -> GatewayOptions {
    let mut o = GatewayOptions::default();
    for (k, v) in [
        ("MQTT__ENABLED", "false".to_owned()),
        ("MQTT__UPSTREAM__ENABLED", "true".to_owned()),
        ("MQTT__UPSTREAM__PORT", port.to_string()),
        ("MQTT__UPSTREAM__CLIENT_ID", client_id.to_owned()),
        ("MQTT__UPSTREAM__RECONNECT_INITIAL", "100ms".to_owned()),
        ("MQTT__UPSTREAM__RECONNECT_MAX", "1s".to_owned()),
    ] {
        o.env.push((format!("EMOTION_GATEWAY__{k}"), v));
    }
    o
}

async fn wait_subscribed(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = gw.get_json("/api/mqtt").await.expect("status");
        if s["upstream"]["subscribed"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "upstream never subscribed: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publish events `from..to` for user `up` to `topic` with QoS 1 in one
/// `mosquitto_pub -l` run (one message per line); true once the broker
/// acknowledged all.
fn publish_lines(port: u16, topic: &str, from: u64, to: u64) -> bool {
    let mut child = Command::new(mqtt_tool("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs");
    if let Some(mut stdin) = child.stdin.take() {
        let mut text = String::new();
        for seq in from..to {
            // No event_id: the gateway derives one from the message, so a
            // redelivery is recognized. The timestamp is fixed per seq.
            text.push_str(
                &json!({"source": "text", "valence": 0.1, "arousal": 0.2, "session_id": "s-up",
                        "timestamp": "2026-01-01T00:00:00Z", "context": {"seq": seq}})
                .to_string(),
            );
            text.push('\n');
        }
        if stdin.write_all(text.as_bytes()).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
    }
    child.wait_with_output().is_ok_and(|o| o.status.success())
}

/// Wait until user `up` has `n` events; returns the sequence numbers stored.
async fn stored_seqs(gw: &Gateway, n: usize, within: Duration) -> Vec<u64> {
    let deadline = Instant::now() + within;
    loop {
        let evs = gw.user_events("up").await.expect("events");
        if evs.len() >= n || Instant::now() > deadline {
            let mut seqs: Vec<u64> = evs
                .iter()
                .filter_map(|e| e["context"]["seq"].as_u64())
                .collect();
            seqs.sort_unstable();
            return seqs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_each_once(seqs: &[u64], n: u64, logs: &str) {
    let missing: Vec<u64> = (0..n)
        .filter(|s| seqs.binary_search(s).is_err())
        .take(10)
        .collect();
    let dupes = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(
        missing.is_empty() && dupes == 0 && seqs.len() as u64 == n,
        "{} stored for {n} published; first missing {missing:?}; {dupes} duplicates\nlog tail:\n{}",
        seqs.len(),
        logs.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_messages_published_while_the_gateway_is_down_are_stored_exactly_once() {
    let broker = upstream_broker();
    let client_id = format!("gw-down-{}", uuid::Uuid::now_v7().simple());
    let opts = upstream_options(broker.port, &client_id);
    let dir = data_dir().expect("tmp");
    // The first run creates the session (and its subscription) on the broker.
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    wait_subscribed(&gw).await;
    assert_eq!(gw.terminate().expect("stops"), Some(0));

    const N: u64 = 10_000;
    assert!(
        publish_lines(broker.port, "emotions/up/events", 0, N),
        "the broker took all {N} messages"
    );
    let gw = Gateway::start(dir.path(), &opts).expect("restart");
    let seqs = stored_seqs(&gw, N as usize, Duration::from_secs(180)).await;
    assert_each_once(&seqs, N, &gw.logs());
    let s = gw.get_json("/api/mqtt").await.expect("status");
    assert!(s["upstream"]["sessions_resumed"].as_u64() >= Some(1), "{s}");
}

/// The Mosquitto every development and CI machine runs on 127.0.0.1:1883
/// (`EMOTION_TEST_MQTT_SYSTEM=HOST:PORT` names another); a loud failure if
/// it is not there.
fn system_broker_port() -> u16 {
    let addr =
        std::env::var("EMOTION_TEST_MQTT_SYSTEM").unwrap_or_else(|_| "127.0.0.1:1883".into());
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "no MQTT broker at {addr}: start Mosquitto (`mosquitto -d -c /etc/mosquitto/mosquitto.conf`) \
         or set EMOTION_TEST_MQTT_SYSTEM=HOST:PORT"
    );
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("EMOTION_TEST_MQTT_SYSTEM=HOST:PORT")
}

/// Against the machine's own Mosquitto on 1883, with its packaged settings
/// (at most 1000 messages queued per offline client: the publisher's pace
/// keeps every outage well below that). Topic roots unique to this run keep
/// other users of the shared broker out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_survives_kill_9_at_random_moments_while_publishing_continues() {
    let port = system_broker_port();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let client_id = format!("gw-kill-{run}");
    let mut opts = upstream_options(port, &client_id);
    opts.env.push((
        "EMOTION_GATEWAY__MQTT__TOPICS__EMOTIONS".into(),
        format!("t{run}/emotions"),
    ));
    opts.env.push((
        "EMOTION_GATEWAY__MQTT__TOPICS__SENSORS".into(),
        format!("t{run}/sensors"),
    ));
    let topic = format!("t{run}/emotions/up/events");
    let dir = data_dir().expect("tmp");
    let mut gw = Gateway::start(dir.path(), &opts).expect("start");
    wait_subscribed(&gw).await;

    // Publish in chunks (about 500 a second) while the gateway is killed and
    // restarted.
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (published, stop, topic) = (published.clone(), stop.clone(), topic.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let from = published.load(Ordering::Relaxed);
                assert!(
                    publish_lines(port, &topic, from, from + 50),
                    "the broker refused a chunk"
                );
                published.store(from + 50, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(80));
            }
        })
    };
    let mut kills = 0;
    while kills < 10 {
        let wait = rand::rng().random_range(200..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        gw.kill9().expect("kill -9");
        kills += 1;
        let down = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(down)).await;
        gw = Gateway::start(dir.path(), &opts).expect("restart after kill -9");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    let n = published.load(Ordering::Relaxed);
    assert!(n >= 1000, "only {n} published");
    let seqs = stored_seqs(&gw, n as usize, Duration::from_secs(300)).await;
    assert_each_once(&seqs, n, &gw.logs());
    eprintln!("{kills} kills, {n} messages, each stored exactly once");
}

/// firmware-sim's MQTT devices (a facial camera, a voice front end and a chat
/// app per user, in turn) publish raw readings to the embedded broker as one
/// hub device, over MQTT 5 (firmware-sim's default); the plugins turn every
/// acknowledged reading into a stored event, counted under the `mqtt`
/// transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_sim_mqtt_devices_reach_the_plugins_through_the_embedded_broker() {
    const HUB_TOKEN: &str = "token-of-the-sim-hub-0123";
    let plugins = plugin_dir(&["facial", "voice", "text"]).expect("the source plugins");
    let dir = data_dir().expect("tmp");
    let mut opts = with_plugins(plugins.path(), "0s");
    opts.env.push((
        "EMOTION_GATEWAY__MQTT__DEVICES".into(),
        format!(r#"[{{device_id = "sim-hub", token = "{HUB_TOKEN}"}}]"#),
    ));
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let (_, v5) = mqtt_ports(&gw).await;
    let gateway = gw.http("");
    let broker = format!("mqtt://127.0.0.1:{v5}");
    let s = emotion_tests::firmware_sim_summary([
        "multi-user",
        "--speed",
        "60",
        "--quiet",
        "--token",
        emotion_tests::TOKEN,
        "--gateway",
        &gateway,
        "--mqtt",
        &broker,
        "--mqtt-username",
        "sim-hub",
        "--mqtt-password",
        HUB_TOKEN,
    ])
    .expect("firmware-sim");
    let mqtt = &s["transports"]["mqtt"];
    let acked = mqtt["acknowledged"].as_u64().unwrap_or(0);
    assert!(acked > 50, "{s}");
    assert_eq!(mqtt["failed"], 0, "{s}");
    assert_eq!(mqtt["refused"], 0, "{s}");

    // A PUBACK is sent once the event is durable: the counts agree at once.
    let status = gw.get_json("/api/mqtt").await.expect("status");
    assert_eq!(status["devices"]["sim-hub"]["stored"], acked, "{status}");
    let metrics = reqwest::Client::new()
        .get(gw.http("/metrics"))
        .bearer_auth(emotion_tests::TOKEN)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics parses");
    let mut total = 0u64;
    for source in ["facial", "voice", "text"] {
        let n = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "emotion_gateway_events_in_total"
                    && s.labels.get("transport") == Some("mqtt")
                    && s.labels.get("source") == Some(source)
            })
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v) => Some(v as u64),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no MQTT {source} events in /metrics:\n{metrics}"));
        assert!(n > 0, "{source}");
        total += n;
    }
    assert_eq!(
        total, acked,
        "every acknowledged reading became one stored event"
    );
}

/// firmware-sim with `args`: its exit code, its summary (written whatever the
/// outcome) and what it printed.
fn firmware_sim(args: &[&str]) -> (Option<i32>, Value, String) {
    let work = tempfile::tempdir().expect("tmp");
    let summary = work.path().join("summary.json");
    let out = Command::new(workspace_bin("firmware-sim"))
        .args(args)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .expect("firmware-sim runs");
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("no summary ({e}):\n{printed}"));
    let summary = serde_json::from_str(&text).expect("the summary is JSON");
    (out.status.code(), summary, printed)
}

/// Issue 14, item 9: a device bound to user 42 (like the README's
/// development device) publishing firmware-sim's user 1001's readings has
/// every one refused. firmware-sim must count them refused, with the
/// reason, not acknowledged: over MQTT 5 from the PUBACK's reason code
/// (0x99, payload format invalid: the reading names another user), over
/// MQTT 3.1.1, whose PUBACK cannot refuse, from the reports on the device's
/// errors topic. Its counts agree with the gateway's, and it exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_sim_counts_refused_readings_as_refused_over_mqtt_5_and_3_1_1() {
    const DEV_TOKEN: &str = "token-of-the-dev-device-0123";
    let plugins = plugin_dir(&["facial"]).expect("the facial plugin");
    let dir = data_dir().expect("tmp");
    let mut opts = with_plugins(plugins.path(), "0s");
    opts.env.push((
        "EMOTION_GATEWAY__MQTT__DEVICES".into(),
        format!(r#"[{{device_id = "dev-device", token = "{DEV_TOKEN}", user_id = "42"}}]"#),
    ));
    let gw = Gateway::start(dir.path(), &opts).expect("start");
    let (v4, v5) = mqtt_ports(&gw).await;
    let gateway = gw.http("");
    let mut refused_so_far = 0;
    for (version, port, reason) in [
        ("5", v5, "payload format invalid (0x99)"),
        ("3.1.1", v4, "validation_error"),
    ] {
        let broker = format!("mqtt://127.0.0.1:{port}");
        // single-user: user 1001, one facial camera, 10 readings.
        let (code, s, printed) = firmware_sim(&[
            "single-user",
            "--duration",
            "30",
            "--speed",
            "60",
            "--quiet",
            "--token",
            emotion_tests::TOKEN,
            "--gateway",
            &gateway,
            "--mqtt",
            &broker,
            "--mqtt-version",
            version,
            "--mqtt-username",
            "dev-device",
            "--mqtt-password",
            DEV_TOKEN,
        ]);
        let mqtt = &s["transports"]["mqtt"];
        assert_eq!(
            (
                &mqtt["sent"],
                &mqtt["acknowledged"],
                &mqtt["refused"],
                &mqtt["failed"]
            ),
            (&json!(10), &json!(0), &json!(10), &json!(0)),
            "MQTT {version}: {s}\n{printed}"
        );
        assert_eq!(
            mqtt["refused_reasons"],
            json!({ reason: 10 }),
            "MQTT {version}: {s}"
        );
        assert!(
            printed.contains("refused") && printed.contains(reason),
            "the printed summary names the refusals: {printed}"
        );
        assert_eq!(code, Some(1), "refusals are not a success: {printed}");
        // The WebSocket user beside it was served as ever.
        assert_eq!(s["transports"]["websocket"]["acknowledged"], 10, "{s}");
        // The gateway's own counts say the same.
        refused_so_far += 10;
        let status = gw.get_json("/api/mqtt").await.expect("status");
        let device = &status["devices"]["dev-device"];
        assert_eq!(device["rejected"], refused_so_far, "{status}");
        assert_eq!(device["stored"], 0, "{status}");
    }
}
