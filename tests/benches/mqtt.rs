//! MQTT end to end, with durability.
//!
//! ```text
//! cargo build --release -p emotion-gateway
//! cargo bench -p emotion-tests --bench mqtt
//! ```
//!
//! Prints, for the release gateway:
//!
//! 1. events per second through the embedded broker into the durable buffer,
//!    many devices, QoS 0 and QoS 1 (target ≥ 100k/s QoS 0 on 2 cores, load
//!    client on the same machine), each as a ratio against a reference taken
//!    in the same run: the same events over the gateway's WebSocket API;
//! 2. the upstream path: a private Mosquitto (needs `mosquitto`, see
//!    `scripts/install-mqtt-test-deps.sh`) takes QoS 1 messages from the
//!    devices, the gateway consumes them with manual acknowledgements; as a
//!    ratio against a bare subscriber draining the same broker;
//! 3. publish-to-analysis latency percentiles at a paced 10k events/s: each
//!    event's timestamp is its send time, and the analysis the gateway
//!    publishes back to the device (`emotions/{user}/analysis`) echoes it.
//!
//! The load client writes MQTT 3.1.1 packets (rumqttc's codec) on plain
//! sockets, in batches, so that it leaves the gateway as much of the two
//! cores as it can.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use emotion_tests::{Gateway, GatewayOptions, PrivateMosquitto, blast, data_dir};
use rumqttc::mqttbytes::Error as MqttBytesError;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

const DEVICES: usize = 32;
/// Events per device in a throughput run.
const PER_DEVICE: u64 = 12_500;
/// QoS 1 messages one device keeps unacknowledged.
const WINDOW: usize = 256;
const LATENCY_RATE: f64 = 10_000.0;
const LATENCY_RUN: Duration = Duration::from_secs(6);

fn token(i: usize) -> String {
    format!("bench-device-token-{i:04}")
}

/// Device credentials d0…d31, each bound to user i+1.
fn devices_env() -> (String, String) {
    let list: Vec<String> = (0..DEVICES)
        .map(|i| {
            format!(
                r#"{{device_id = "d{i}", token = "{}", user_id = "{}"}}"#,
                token(i),
                i + 1
            )
        })
        .collect();
    (
        "EMOTION_GATEWAY__MQTT__DEVICES".into(),
        format!("[{}]", list.join(", ")),
    )
}

/// A ready event. `timestamp`: now for latency runs, fixed otherwise.
fn event(seq: u64, timestamp: &str) -> Vec<u8> {
    let v = ((seq % 200) as f64 / 100.0) - 1.0;
    let source = ["text", "voice", "facial", "physiological"][seq as usize % 4];
    json!({
        "source": source,
        "valence": v, "arousal": 0.55, "confidence": 0.85,
        "timestamp": timestamp,
        "context": {"seq": seq, "weather": "sunny"},
    })
    .to_string()
    .into_bytes()
}

// ---- MQTT 3.1.1 over plain sockets, with rumqttc's codec -----------------

const MAX_PACKET: usize = 1 << 20;

fn encode(packet: Packet, out: &mut BytesMut) {
    packet.write(out, MAX_PACKET).expect("an encodable packet");
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: Vec<u8>) -> Packet {
    let mut p = Publish::new(topic, qos, payload);
    p.pkid = pkid;
    Packet::Publish(p)
}

/// The reading half of a connection, decoding packets as they arrive.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    async fn next(&mut self) -> std::io::Result<Packet> {
        loop {
            match Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(MqttBytesError::InsufficientBytes(_)) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Whether a packet may already be waiting (no read needed).
    fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }
}

struct Client {
    rd: Reader,
    wr: OwnedWriteHalf,
}

/// A connected client (clean session), CONNACK checked.
async fn connect(port: u16, client_id: &str, login: Option<(&str, &str)>) -> Client {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    let _ = tcp.set_nodelay(true);
    let (rd, wr) = tcp.into_split();
    let mut c = Client {
        rd: Reader {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
        },
        wr,
    };
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 60;
    if let Some((u, p)) = login {
        connect.set_login(u, p);
    }
    c.send(Packet::Connect(connect)).await;
    match c.rd.next().await {
        Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => c,
        other => panic!("{client_id}: connection refused: {other:?}"),
    }
}

impl Client {
    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(packet, &mut out);
        self.wr.write_all(&out).await.expect("write");
    }

    /// Subscribe to one topic; SUBACK checked.
    async fn subscribe(&mut self, topic: &str, qos: QoS) {
        let mut sub = Subscribe::new(topic, qos);
        sub.pkid = 1;
        self.send(Packet::Subscribe(sub)).await;
        match self.rd.next().await {
            Ok(Packet::SubAck(_)) => {}
            other => panic!("SUBSCRIBE {topic}: {other:?}"),
        }
    }

    /// Publish `n` events to `topic`: QoS 0 written back to back; QoS 1 with
    /// at most `WINDOW` unacknowledged. Returns the number acknowledged
    /// (QoS 1) or written (QoS 0).
    async fn send_all(self, topic: String, qos: QoS, n: u64, first_seq: u64) -> u64 {
        let Client { mut rd, mut wr } = self;
        let window = Arc::new(Semaphore::new(WINDOW));
        let acks = (qos == QoS::AtLeastOnce).then(|| {
            let window = window.clone();
            tokio::spawn(async move {
                let mut acked = 0u64;
                while acked < n {
                    match rd.next().await {
                        Ok(Packet::PubAck(_)) => {
                            acked += 1;
                            window.add_permits(1);
                        }
                        Ok(other) => panic!("unexpected packet {other:?}"),
                        Err(_) => break,
                    }
                }
                acked
            })
        });
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let ts = "2024-08-15T14:30:00Z";
        for i in 0..n {
            if acks.is_some() {
                window.acquire().await.expect("window").forget();
            }
            let pkid = (i % 65_535) as u16 + 1;
            encode(
                publish(&topic, qos, pkid, event(first_seq + i, ts)),
                &mut buf,
            );
            // QoS 1 is flushed every message (acks free the window), QoS 0
            // in 32 KiB writes.
            if acks.is_some() || buf.len() >= 32 * 1024 {
                wr.write_all(&buf).await.expect("write");
                buf.clear();
            }
        }
        wr.write_all(&buf).await.expect("write");
        match acks {
            Some(a) => a.await.expect("reader"),
            None => n,
        }
    }
}

/// Events the gateway has made durable (`/health`).
async fn stored(gw: &Gateway) -> u64 {
    gw.get_json("/health").await.expect("/health")["ingest"]["events_stored"]
        .as_u64()
        .unwrap_or(0)
}

/// Wait until `target` events are stored; returns when that happened.
async fn wait_stored(gw: &Gateway, target: u64, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let now = stored(gw).await;
        if now >= target {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "only {now} of {target} events stored"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn embedded_ports(s: &serde_json::Value) -> u16 {
    s["embedded"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["key"] == "mqtt.listen_v4"))
        .and_then(|l| l["addr"].as_str())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MQTT 3.1.1 listener in {s}"))
}

/// All devices publish `PER_DEVICE` events at `qos`; events stored per second.
async fn embedded_run(gw: &Gateway, port: u16, qos: QoS, run: u64) -> f64 {
    let before = stored(gw).await;
    let mut clients = Vec::new();
    for d in 0..DEVICES {
        let id = format!("d{d}");
        clients.push(
            connect(
                port,
                &format!("{id}-q{}-{run}", qos as u8),
                Some((&id, &token(d))),
            )
            .await,
        );
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, c) in clients.into_iter().enumerate() {
        let topic = format!("emotions/{}/events", d + 1);
        // Distinct sequence numbers per run: ids derived from the message
        // must not repeat, or the gateway rightly stores them once.
        tasks.push(tokio::spawn(c.send_all(
            topic,
            qos,
            PER_DEVICE,
            run * 1_000_000_000,
        )));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("client");
    }
    assert_eq!(sent, PER_DEVICE * DEVICES as u64, "every message sent");
    let done = wait_stored(gw, before + sent, Duration::from_secs(120)).await;
    sent as f64 / done.duration_since(started).as_secs_f64()
}

/// The same number of events over the WebSocket API (32 pipelined streams).
async fn websocket_reference(gw: &Gateway) -> f64 {
    let total = PER_DEVICE as usize * DEVICES;
    let started = Instant::now();
    let acked = blast(gw, DEVICES, DEVICES, total).await.expect("blast");
    assert_eq!(acked, total, "every WebSocket event acknowledged");
    acked as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Paced QoS 1 events at `LATENCY_RATE` in total; each device subscribes to
/// its user's analysis. Returns publish-to-analysis latencies in µs.
async fn latency_run(port: u16) -> (Vec<u64>, u64) {
    let started = Instant::now();
    let deadline = started + LATENCY_RUN;
    let period = Duration::from_secs_f64(DEVICES as f64 / LATENCY_RATE);
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let id = format!("d{d}");
        let mut c = connect(port, &format!("{id}-lat"), Some((&id, &token(d)))).await;
        let user = d + 1;
        c.subscribe(&format!("emotions/{user}/analysis"), QoS::AtMostOnce)
            .await;
        tasks.push(tokio::spawn(async move {
            let Client { mut rd, mut wr } = c;
            let reader = tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut acked = 0u64;
                let end = deadline + Duration::from_secs(3);
                loop {
                    let left = end.saturating_duration_since(Instant::now());
                    let Ok(Ok(packet)) = tokio::time::timeout(left, rd.next()).await else {
                        break;
                    };
                    match packet {
                        Packet::PubAck(_) => acked += 1,
                        Packet::Publish(p) => {
                            let v: serde_json::Value =
                                serde_json::from_slice(&p.payload).expect("analysis JSON");
                            let sent = v["timestamp"]
                                .as_str()
                                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                                .expect("timestamp");
                            let us = (chrono::Utc::now() - sent.with_timezone(&chrono::Utc))
                                .num_microseconds()
                                .unwrap_or(i64::MAX);
                            lat.push(us.max(0) as u64);
                        }
                        _ => {}
                    }
                }
                (lat, acked)
            });
            let mut next = Instant::now() + period.mul_f64(d as f64 / DEVICES as f64);
            let topic = format!("emotions/{user}/events");
            let mut buf = BytesMut::new();
            let mut i = 0u64;
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += period;
                buf.clear();
                let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let pkid = (i % 65_535) as u16 + 1;
                encode(
                    publish(
                        &topic,
                        QoS::AtLeastOnce,
                        pkid,
                        event(9_000_000_000 + i, &ts),
                    ),
                    &mut buf,
                );
                i += 1;
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            let r = reader.await.expect("reader");
            drop(wr);
            r
        }));
    }
    let mut all = Vec::new();
    let mut acked = 0;
    for t in tasks {
        let (l, a) = t.await.expect("device");
        all.extend(l);
        acked += a;
    }
    all.sort_unstable();
    (all, acked)
}

// ---- upstream ----------------------------------------------------------

/// No queue limit; 1000 QoS 1 messages in flight per subscriber.
fn mosquitto() -> PrivateMosquitto {
    PrivateMosquitto::start("max_queued_messages 0\nmax_inflight_messages 1000")
        .unwrap_or_else(|e| panic!("{e:#} (scripts/install-mqtt-test-deps.sh installs mosquitto)"))
}

/// Publishers send `PER_DEVICE` QoS 1 events each under `root`; returns when
/// the broker acknowledged them all.
async fn publish_upstream(port: u16, root: &str, run: u64) -> u64 {
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let c = connect(port, &format!("pub-{root}-{d}"), None).await;
        let topic = format!("{root}/{}/events", d + 1);
        tasks.push(tokio::spawn(c.send_all(
            topic,
            QoS::AtLeastOnce,
            PER_DEVICE,
            run * 1_000_000_000,
        )));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.expect("publisher");
    }
    n
}

/// A bare QoS 1 subscriber on `root`: receives and acknowledges `n` messages;
/// messages per second from the first publish.
async fn bare_subscriber_reference(port: u16, n: u64) -> f64 {
    let mut c = connect(port, "bare-subscriber", None).await;
    c.subscribe("bare/+/events", QoS::AtLeastOnce).await;
    let started = Instant::now();
    let sub = tokio::spawn(async move {
        let Client { mut rd, mut wr } = c;
        let mut acks = BytesMut::with_capacity(4096);
        let mut received = 0;
        while received < n {
            let Packet::Publish(p) = rd.next().await.expect("PUBLISH") else {
                continue;
            };
            if p.qos == QoS::AtLeastOnce {
                encode(Packet::PubAck(PubAck::new(p.pkid)), &mut acks);
            }
            received += 1;
            // Acknowledge in small groups, as a consumer that stores before
            // it acknowledges would.
            if acks.len() >= 64 * 4 || !rd.has_buffered() {
                wr.write_all(&acks).await.expect("PUBACK");
                acks.clear();
            }
        }
        Instant::now()
    });
    let sent = publish_upstream(port, "bare", 1).await;
    assert_eq!(sent, n);
    let done = sub.await.expect("subscriber");
    n as f64 / done.duration_since(started).as_secs_f64()
}

async fn upstream_section() {
    let broker = mosquitto();
    let total = PER_DEVICE * DEVICES as u64;
    let reference = bare_subscriber_reference(broker.port, total).await;

    let dir = data_dir().expect("tmp");
    let mut opts = GatewayOptions::default();
    for (k, v) in [
        ("MQTT__ENABLED", "false".to_owned()),
        ("MQTT__UPSTREAM__ENABLED", "true".to_owned()),
        ("MQTT__UPSTREAM__PORT", broker.port.to_string()),
        ("MQTT__UPSTREAM__CLIENT_ID", "bench-gateway".to_owned()),
        ("MQTT__UPSTREAM__PUBLISH_RESULTS", "false".to_owned()),
    ] {
        opts.env.push((format!("EMOTION_GATEWAY__{k}"), v));
    }
    let gw = Gateway::start(dir.path(), &opts).expect("gateway starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.get_json("/api/mqtt").await.expect("status")["upstream"]["subscribed"] != true {
        assert!(
            Instant::now() < deadline,
            "gateway never subscribed upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let sent = publish_upstream(broker.port, "emotions", 2).await;
    let done = wait_stored(&gw, sent, Duration::from_secs(180)).await;
    let rate = sent as f64 / done.duration_since(started).as_secs_f64();
    println!(
        "upstream (Mosquitto → gateway, QoS 1, manual acks after durability): {rate:>9.0} events/s \
         = {:.2} × a bare QoS 1 subscriber on the same broker ({reference:.0} msg/s); {sent} events, {DEVICES} publishers",
        rate / reference
    );
    let s = gw.get_json("/api/mqtt").await.expect("status");
    println!("  upstream counters: {}", s["upstream"]);
}

async fn run() {
    let (k, v) = devices_env();
    let mut opts = GatewayOptions::default();
    opts.env.push((k, v));
    // The bench's devices keep far more in flight than a wearable would.
    opts.env.push((
        "EMOTION_GATEWAY__MQTT__LIMITS__MAX_IN_FLIGHT_PER_CONNECTION".into(),
        WINDOW.to_string(),
    ));
    // ...and publish far faster than the per-device rate limit allows.
    opts.env.push((
        "EMOTION_GATEWAY__MQTT__LIMITS__DEVICE_RATE_PER_SECOND".into(),
        "0".into(),
    ));
    let dir = data_dir().expect("tmp");
    let gw = Gateway::start(dir.path(), &opts).expect("gateway starts");
    let port = embedded_ports(&gw.get_json("/api/mqtt").await.expect("/api/mqtt"));
    println!(
        "MQTT bench: {DEVICES} devices × {PER_DEVICE} events, release gateway, durable buffer, \
         load client on the same 2-core machine"
    );

    // Warm-up (allocations, page cache), then the runs.
    let _ = embedded_run(&gw, port, QoS::AtLeastOnce, 0).await;
    let ws = websocket_reference(&gw).await;
    let q0 = embedded_run(&gw, port, QoS::AtMostOnce, 1).await;
    let q1 = embedded_run(&gw, port, QoS::AtLeastOnce, 2).await;
    let ws2 = websocket_reference(&gw).await;
    let ws = (ws + ws2) / 2.0;
    println!("reference: WebSocket API, same events, 32 pipelined streams: {ws:>9.0} events/s");
    println!(
        "embedded broker, QoS 0 → durable: {q0:>9.0} events/s = {:.2} × WebSocket",
        q0 / ws
    );
    println!(
        "embedded broker, QoS 1 → durable, PUBACK after durability: {q1:>9.0} events/s = {:.2} × WebSocket",
        q1 / ws
    );

    let (lat, acked) = latency_run(port).await;
    println!(
        "publish → analysis at {LATENCY_RATE:.0} events/s (QoS 1, {DEVICES} devices, {} analyses, {acked} PUBACKs): \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
    );
    let s = gw.get_json("/api/mqtt").await.expect("status");
    println!("  embedded counters: {}", s["messages"]);
    drop(gw);

    upstream_section().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` must not run it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}
