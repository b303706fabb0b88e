//! `firmware-sim load`: saturate a gateway from one process and measure
//! what a box can take.
//!
//! - WebSocket (`/ws/emotions/stream`, one user per connection, each event
//!   answered in order) or MQTT (ready events on `emotions/{user}/events`
//!   of the embedded broker, QoS 0 or 1, MQTT 5 or 3.1.1);
//! - closed loop (`depth` messages in flight per connection, the next one
//!   sent as soon as an answer frees a slot) or open loop (a fixed total
//!   `rate`, evenly paced; a message's latency counts from when it was
//!   *due*, so a stalled gateway cannot hide its stall by slowing the
//!   client down: no coordinated omission);
//! - a warm-up, then a measured interval: acknowledged events per second,
//!   ack latency percentiles (a log-linear histogram, [`hist`]), and the
//!   gateway's CPU time and resident memory from `/proc` ([`procfs`]), its
//!   stored-event count from `GET /health`, and this process's own CPU.
//!
//! The client is built to leave the cores to the gateway: event payloads
//! (the original producer's fields, from [`crate::ws::EventGen`]) are
//! serialized once into a small pool per connection; a WebSocket message is
//! a reference-counted copy of a pooled one, an MQTT PUBLISH a copy of a
//! pre-encoded packet with its packet id and a sequence number patched in
//! place ([`mqtt_wire`]); send times live in a fixed ring per connection,
//! latencies in a fixed-size histogram per connection, merged at the end.

pub mod hist;
pub mod http;
pub mod mqtt_wire;
mod pacer;
pub mod procfs;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::devices::Script;
use crate::journey::Journey;
use crate::mqtt::MqttVersion;
use crate::ws::{EventGen, stream_url};
use hist::Histogram;
use pacer::Pacer;

/// Events pre-serialized per connection (varied sources and values).
const POOL: usize = 16;
/// Messages in flight per connection in open loop (the gateway's default
/// `http.max_in_flight_per_connection`); over MQTT 5 the broker's Receive
/// Maximum caps it further.
const OPEN_LOOP_WINDOW: usize = 1024;
/// MQTT writes are gathered up to this many bytes.
const WRITE_BATCH: usize = 32 * 1024;
/// The development device of the gateway's default configuration, bound to
/// user 42 (README, MQTT).
const DEV_DEVICE: (&str, &str, &str) = ("dev-device", "dev-device-token-change-me", "42");
/// Distinct connection errors kept for the report.
const MAX_ERRORS: usize = 8;

/// The transport under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    WebSocket,
    Mqtt,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Mqtt => "mqtt",
        }
    }
}

/// A transport name that is neither `ws` nor `mqtt`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown transport {0:?} (expected ws or mqtt)")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ws" | "websocket" => Ok(Transport::WebSocket),
            "mqtt" => Ok(Transport::Mqtt),
            _ => Err(UnknownTransport(s.to_owned())),
        }
    }
}

/// MQTT settings of a run.
#[derive(Debug, Clone)]
pub struct MqttLoad {
    /// `mqtt://host:port`; `None`: the gateway's own listener for `version`
    /// (from `GET /api/mqtt`).
    pub broker: Option<String>,
    pub version: MqttVersion,
    /// 0 (no acknowledgement) or 1.
    pub qos: u8,
    /// Device credentials and the user the device is bound to; each may
    /// contain `{i}`, replaced by the connection's identity index (0-based,
    /// connection number modulo `users`). Without a username: the
    /// development device (`dev-device`, bound to user 42).
    pub username: Option<String>,
    pub password: Option<String>,
    pub user: Option<String>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub transport: Transport,
    /// `ws://host:port`, `http://host:port` or `host:port`.
    pub gateway: String,
    /// An `ingest` token (and `read`, for the MQTT listener look-up).
    pub token: String,
    pub connections: usize,
    /// Closed loop: messages in flight per connection.
    pub depth: usize,
    /// Open loop: events per second in total (then `depth` is unused).
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    /// Distinct users (WebSocket: `load-1`…; MQTT: device identities);
    /// connection `c` plays user `c % users`.
    pub users: usize,
    /// Per connect, and for the answers still outstanding at the end.
    pub timeout: Duration,
    pub seed: u64,
    /// The gateway's process; `None`: whichever process listens on the
    /// gateway's port, if it is on this machine.
    pub gateway_pid: Option<u32>,
    pub mqtt: MqttLoad,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Options(String),
    #[error("{0}")]
    Setup(String),
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    fn of(h: &Histogram) -> Option<Self> {
        let ms = |q: f64| h.quantile(q).map_or(f64::NAN, |ns| ns as f64 / 1e6);
        (h.count() > 0).then(|| Latency {
            count: h.count(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max().map_or(f64::NAN, |ns| ns as f64 / 1e6),
            mean_ms: h.mean().map_or(f64::NAN, |ns| ns / 1e6),
        })
    }
}

/// The gateway's side of the run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GatewayFigures {
    pub pid: Option<u32>,
    /// `option`, `listening port`, or why it is unknown.
    pub pid_source: String,
    /// CPU seconds (user + system) over the measured interval.
    pub cpu_s: Option<f64>,
    /// `cpu_s` / measured seconds.
    pub cores: Option<f64>,
    /// CPU seconds per 1000 events acknowledged (QoS 0: stored) in the
    /// measured interval.
    pub cpu_s_per_1000_events: Option<f64>,
    /// VmRSS at the end.
    pub rss_bytes: Option<u64>,
    /// The largest VmRSS sampled during the measured interval.
    pub rss_max_sampled_bytes: Option<u64>,
    /// VmHWM: the peak since the gateway started.
    pub rss_peak_bytes: Option<u64>,
    /// `GET /health` ingest.events_stored before the run and after it.
    pub stored_before: Option<u64>,
    pub stored_after: Option<u64>,
    /// Stored during the measured interval.
    pub stored_in_interval: Option<u64>,
    /// The gateway's group commits (`GET /health` ingest.flushes and
    /// mean_flush_ms) in the measured interval: each ends in an fsync, so
    /// their mean time is about the least a typical acknowledgement waits.
    pub commits: Option<CommitFigures>,
    /// Why a figure is missing.
    pub notes: Vec<String>,
}

/// The gateway's group commits over the measured interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CommitFigures {
    pub commits: u64,
    /// Events stored per commit.
    pub mean_events: f64,
    /// Milliseconds per commit (append + fsyncs), the mean.
    pub mean_ms: f64,
    /// The slowest commit since the gateway started.
    pub max_ms_since_start: f64,
}

/// `GET /health`'s group-commit counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CommitCounters {
    flushes: u64,
    events: u64,
    /// Total time of all flushes, ms (mean × count).
    total_ms: f64,
    max_ms: f64,
}

impl CommitCounters {
    fn from_health(v: &Value) -> Option<Self> {
        let i = v.get("ingest")?;
        let flushes = i.get("flushes")?.as_u64()?;
        let mean_events = i.get("mean_batch_events")?.as_f64()?;
        let mean_ms = i.get("mean_flush_ms")?.as_f64()?;
        Some(CommitCounters {
            flushes,
            events: (mean_events * flushes as f64).round() as u64,
            total_ms: mean_ms * flushes as f64,
            max_ms: i.get("max_flush_ms")?.as_f64()?,
        })
    }

    /// What happened between `self` and a later reading.
    fn until(self, later: Self) -> Option<CommitFigures> {
        let commits = later.flushes.checked_sub(self.flushes)?;
        (commits > 0).then(|| CommitFigures {
            commits,
            mean_events: later.events.saturating_sub(self.events) as f64 / commits as f64,
            mean_ms: (later.total_ms - self.total_ms).max(0.0) / commits as f64,
            max_ms_since_start: later.max_ms,
        })
    }
}

/// This process's side.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientFigures {
    pub cpu_s: Option<f64>,
    pub cores: Option<f64>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub transport: Transport,
    /// `closed` or `open`.
    pub mode: String,
    pub connections: usize,
    pub depth: Option<usize>,
    pub rate: Option<f64>,
    pub mqtt_qos: Option<u8>,
    pub mqtt_version: Option<String>,
    pub mqtt_broker: Option<String>,
    pub users: usize,
    pub warmup_s: f64,
    /// The measured interval (shorter than asked if interrupted).
    pub measured_s: f64,
    /// Whole run (warm-up, measured interval, draining the answers).
    pub sent: u64,
    pub acknowledged: u64,
    pub refused: u64,
    pub refused_reasons: BTreeMap<String, u64>,
    /// Sent but never answered (connection lost, no answer by the end).
    pub failed: u64,
    /// Connection errors (distinct, the first few).
    pub errors: Vec<String>,
    /// In the measured interval: messages sent (by their due time) and
    /// answers acknowledged (by arrival).
    pub interval_sent: u64,
    pub interval_acknowledged: u64,
    pub sent_per_s: f64,
    pub acknowledged_per_s: f64,
    /// Ack latency of the events acknowledged in the measured interval;
    /// open loop: from when each was due.
    pub latency: Option<Latency>,
    /// Open loop only: from when each was actually written.
    pub latency_from_write: Option<Latency>,
    /// Open loop only: how late this tool wrote each acknowledged message
    /// after it was due (its own pacing error, part of `latency`).
    pub send_lag: Option<Latency>,
    pub gateway: GatewayFigures,
    pub client: ClientFigures,
    pub cpus: usize,
    pub load_average: Option<[f64; 3]>,
}

impl LoadReport {
    /// Events that went wrong (refused, unanswered) or connections lost.
    pub fn problems(&self) -> u64 {
        self.refused + self.failed + self.errors.len() as u64 + self.unstored()
    }

    /// Acknowledged events the gateway's stored count does not account
    /// for: refusals over MQTT 3.1.1 (PUBACKed like any other), or events
    /// lost. 0 for QoS 0 and when `/health` could not be read; more stored
    /// than acknowledged (another writer) is no problem.
    pub fn unstored(&self) -> u64 {
        match (
            self.mqtt_qos,
            self.gateway.stored_before,
            self.gateway.stored_after,
        ) {
            (Some(0), _, _) => 0,
            (_, Some(a), Some(b)) => self.acknowledged.saturating_sub(b.saturating_sub(a)),
            _ => 0,
        }
    }
}

/// The phases of a run, as instants.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    base: Instant,
    measure_from: Instant,
    end: Instant,
    /// Answers are awaited until then.
    drain_until: Instant,
}

impl Timeline {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }
    fn measured(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.end
    }
}

/// How messages are paced on one connection.
#[derive(Debug, Clone)]
enum Pacing {
    Closed,
    /// Connection `conn`'s share of the run's schedule, released by the
    /// pacer's thread.
    Open {
        pacer: Arc<Pacer>,
        conn: usize,
    },
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
struct Live {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    /// The gateway's largest VmRSS sampled in the measured interval.
    max_rss: AtomicU64,
}

/// One connection's result.
#[derive(Debug, Default)]
struct ConnStats {
    sent: u64,
    acked: u64,
    refused: u64,
    reasons: BTreeMap<String, u64>,
    failed: u64,
    interval_sent: u64,
    interval_acked: u64,
    hist: Histogram,
    hist_write: Histogram,
    /// Open loop: how late each message was written after it was due.
    hist_lag: Histogram,
    error: Option<String>,
}

/// Send times of the messages in flight on one connection, shared by its
/// writer and reader: slot `i % len` holds message `i`'s due time and the
/// time it was written (ns since the run's start). The window semaphore
/// keeps the writer from reusing a slot before its answer came.
#[derive(Debug)]
struct Ring {
    due: Box<[AtomicU64]>,
    written: Box<[AtomicU64]>,
    /// Messages whose slot is filled (release: the slots before it are
    /// readable).
    sent: AtomicU64,
}

impl Ring {
    fn new(len: usize) -> Self {
        let slots = || (0..len.max(1)).map(|_| AtomicU64::new(0)).collect();
        Ring {
            due: slots(),
            written: slots(),
            sent: AtomicU64::new(0),
        }
    }
    fn slot(&self, i: u64) -> usize {
        (i % self.due.len() as u64) as usize
    }
    fn put(&self, i: u64, due_ns: u64, written_ns: u64) {
        let s = self.slot(i);
        self.due[s].store(due_ns, Ordering::Relaxed);
        self.written[s].store(written_ns, Ordering::Relaxed);
        self.sent.store(i + 1, Ordering::Release);
    }
    /// Message `i`'s (due, written) times, if it was sent.
    fn get(&self, i: u64) -> Option<(u64, u64)> {
        if i >= self.sent.load(Ordering::Acquire) {
            return None;
        }
        let s = self.slot(i);
        Some((
            self.due[s].load(Ordering::Relaxed),
            self.written[s].load(Ordering::Relaxed),
        ))
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Run {
    timeline: Timeline,
    live: Live,
    cancel: CancellationToken,
    /// The window per connection (closed loop: depth).
    window: usize,
}

/// Check the options; the first problem found.
fn check(o: &LoadOptions) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::Options(m));
    if o.connections == 0 || o.connections > 100_000 {
        return bad(format!(
            "--connections must be between 1 and 100000, got {}",
            o.connections
        ));
    }
    if o.depth == 0 || o.depth > 65_535 {
        return bad(format!(
            "--depth must be between 1 and 65535, got {}",
            o.depth
        ));
    }
    if let Some(r) = o.rate
        && !(r.is_finite() && (0.001..=10_000_000.0).contains(&r))
    {
        // Below 0.001/s a message's due time is beyond what `Instant` holds.
        return bad(format!(
            "--rate must be a number of events per second from 0.001 to 10,000,000, got {r}"
        ));
    }
    if o.users == 0 || o.users > o.connections {
        return bad(format!(
            "--users must be between 1 and --connections ({}): each connection carries one user, got {}",
            o.connections, o.users
        ));
    }
    if o.duration.is_zero() {
        return bad("--duration must be positive".into());
    }
    if o.transport == Transport::Mqtt {
        if o.mqtt.qos > 1 {
            return bad(format!("--qos must be 0 or 1, got {}", o.mqtt.qos));
        }
        if o.mqtt.username.is_some() && o.mqtt.user.is_none() {
            return bad(
                "--mqtt-user is needed with --mqtt-username: the user the device is bound to \
                 (events go to emotions/{user}/events, which only that device may publish)"
                    .into(),
            );
        }
        if o.mqtt.username.is_some() != o.mqtt.password.is_some() {
            return bad("--mqtt-username and --mqtt-password go together".into());
        }
    } else if o.mqtt.qos != 1 {
        return bad("--qos is for --transport mqtt".into());
    }
    Ok(())
}

/// The WebSocket user id of identity `k`.
fn ws_user(k: usize) -> String {
    format!("load-{}", k + 1)
}

fn fill(pattern: &str, k: usize) -> String {
    pattern.replace("{i}", &k.to_string())
}

/// An MQTT connection's identity: (username, password, bound user).
fn mqtt_identity(m: &MqttLoad, k: usize) -> (String, String, String) {
    match (&m.username, &m.password) {
        (Some(u), Some(p)) => (
            fill(u, k),
            fill(p, k),
            fill(m.user.as_deref().unwrap_or_default(), k),
        ),
        _ => (
            DEV_DEVICE.0.to_owned(),
            DEV_DEVICE.1.to_owned(),
            m.user.clone().unwrap_or_else(|| DEV_DEVICE.2.to_owned()),
        ),
    }
}

/// `POOL` events of `user`, the original producer's fields, without
/// `event_id` (the gateway gives each a fresh one); with `seq`, a
/// `context.load_seq` placeholder of 16 characters (returned as its
/// offset) that the MQTT writer overwrites per message, since the gateway
/// takes identical QoS 1 payloads from one device for one redelivered
/// event.
fn event_pool(user: &str, seed: u64, seq: Option<&str>) -> Vec<(String, usize)> {
    let journey = Journey::ALL[(seed % Journey::ALL.len() as u64) as usize];
    let mut g = EventGen::new(
        user,
        Script::new(journey, Duration::from_secs(POOL as u64 * 10)),
        seed,
    );
    (0..POOL)
        .map(|i| {
            let mut e = g.event_at(i as f64 * 10.0);
            let mut at = 0;
            if let Value::Object(m) = &mut e {
                m.remove("event_id");
                if let Some(run) = seq {
                    let ctx = m
                        .entry("context")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(c) = ctx {
                        c.insert("load_run".into(), Value::String(run.to_owned()));
                        c.insert("load_seq".into(), Value::String(SEQ_MARK.into()));
                    }
                }
            }
            let text = e.to_string();
            if seq.is_some() {
                at = text.find(SEQ_MARK).unwrap_or(0);
            }
            (text, at)
        })
        .collect()
}

/// The placeholder the sequence number replaces (16 hex digits).
const SEQ_MARK: &str = "SEQ_PLACEHOLDER_";

fn write_hex16(dst: &mut [u8], v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in dst.iter_mut().take(16).enumerate() {
        *d = HEX[((v >> (4 * (15 - i))) & 0xf) as usize];
    }
}

/// Run the load and measure. `bar` shows progress (hidden for none).
pub async fn run(
    o: &LoadOptions,
    bar: &ProgressBar,
    cancel: &CancellationToken,
) -> Result<LoadReport, LoadError> {
    check(o)?;
    let authority = http::http_authority(&o.gateway);
    // The gateway's process.
    let mut gw = GatewayFigures {
        pid: o.gateway_pid,
        pid_source: "option".into(),
        ..GatewayFigures::default()
    };
    if gw.pid.is_none() {
        match local_port(authority.as_deref()) {
            Some(port) => match procfs::listener_pid(port) {
                Some(pid) => {
                    gw.pid = Some(pid);
                    gw.pid_source = format!("the process listening on port {port}");
                }
                None => {
                    gw.pid_source = format!(
                        "unknown: no single process of this user listens on port {port} (pass --gateway-pid)"
                    );
                }
            },
            None => {
                gw.pid_source =
                    "unknown: the gateway is not on this machine's loopback (pass --gateway-pid)"
                        .into();
            }
        }
    }
    if let Some(pid) = o.gateway_pid
        && procfs::cpu_time(pid).is_none()
    {
        return Err(LoadError::Options(format!(
            "--gateway-pid {pid}: no such process (or /proc/{pid}/stat unreadable)"
        )));
    }

    let stored = |label: &'static str| {
        let authority = authority.clone();
        let timeout = o.timeout;
        async move {
            let Some(a) = authority else {
                return Err(format!(
                    "{label}: GET /health needs a plain http:// gateway address"
                ));
            };
            http::get_json(&a, "/health", "", timeout)
                .await?
                .pointer("/ingest/events_stored")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{label}: /health has no ingest.events_stored"))
        }
    };
    let commits = || {
        let authority = authority.clone();
        let timeout = o.timeout;
        async move {
            let a = authority?;
            let v = http::get_json(&a, "/health", "", timeout).await.ok()?;
            CommitCounters::from_health(&v)
        }
    };
    match stored("before the run").await {
        Ok(n) => gw.stored_before = Some(n),
        Err(e) => gw.notes.push(e),
    }

    let broker = if o.transport == Transport::Mqtt {
        Some(match &o.mqtt.broker {
            Some(b) => b.clone(),
            None => discover_broker(o, authority.as_deref()).await?,
        })
    } else {
        None
    };

    // Connect everything before the clock starts.
    bar.set_message(format!("connecting {} connection(s)", o.connections));
    let conns = connect_all(o, broker.as_deref()).await?;
    let window = match (o.rate, &conns) {
        (None, _) => o.depth,
        (Some(_), Conns::Mqtt(c)) => c
            .iter()
            .filter_map(|c| c.receive_max)
            .min()
            .map_or(OPEN_LOOP_WINDOW, |m| OPEN_LOOP_WINDOW.min(usize::from(m))),
        (Some(_), Conns::Ws(_)) => OPEN_LOOP_WINDOW,
    };
    if let (None, Conns::Mqtt(c)) = (o.rate, &conns)
        && let Some(m) = c.iter().filter_map(|c| c.receive_max).min()
        && usize::from(m) < o.depth
    {
        return Err(LoadError::Options(format!(
            "--depth {} is over the broker's Receive Maximum ({m}, mqtt.limits.max_in_flight_per_connection)",
            o.depth
        )));
    }

    let base = Instant::now();
    let measure_from = base + o.warmup;
    let end = measure_from + o.duration;
    let run = Arc::new(Run {
        timeline: Timeline {
            base,
            measure_from,
            end,
            drain_until: end + o.timeout,
        },
        live: Live::default(),
        cancel: cancel.child_token(),
        window,
    });
    // The pacer's thread is left detached: it ends by itself at the run's
    // end, or within 20 ms of a cancel.
    let pacer = match o.rate {
        None => None,
        Some(rate) => Some(
            Pacer::start(base, rate, o.connections, end, run.cancel.clone())
                .map_err(|e| LoadError::Options(format!("starting the pacer thread: {e}")))?
                .0,
        ),
    };
    let pacing = |c: usize| match &pacer {
        None => Pacing::Closed,
        Some(pacer) => Pacing::Open {
            pacer: pacer.clone(),
            conn: c,
        },
    };
    let mut tasks = Vec::with_capacity(o.connections);
    match conns {
        Conns::Ws(list) => {
            for (c, conn) in list.into_iter().enumerate() {
                tasks.push(tokio::spawn(ws_connection(conn, pacing(c), run.clone())));
            }
        }
        Conns::Mqtt(list) => {
            for (c, conn) in list.into_iter().enumerate() {
                tasks.push(tokio::spawn(mqtt_connection(
                    conn,
                    o.mqtt.qos,
                    pacing(c),
                    run.clone(),
                )));
            }
        }
    }

    let acked_mode = !(o.transport == Transport::Mqtt && o.mqtt.qos == 0);
    let ticker = tokio::spawn(progress(run.clone(), bar.clone(), gw.pid, acked_mode));

    // The measured interval: CPU and stored counts at both ends.
    let sample = |pid: Option<u32>| (pid.and_then(procfs::cpu_time), procfs::own_cpu_time());
    let interrupted = |t: Instant| {
        let cancel = run.cancel.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep_until(t) => false,
                _ = cancel.cancelled() => true,
            }
        }
    };
    let mut measured_end = end;
    let mut at_start = None;
    let mut stored_start = None;
    let mut commits_start = None;
    if !interrupted(measure_from).await {
        at_start = Some((Instant::now(), sample(gw.pid)));
        stored_start = stored("at the start of the measured interval").await.ok();
        commits_start = commits().await;
        if interrupted(end).await {
            measured_end = Instant::now();
        }
    }
    let at_end = (Instant::now(), sample(gw.pid));
    let stored_end = stored("at the end of the measured interval").await.ok();
    match (commits_start, commits().await) {
        (Some(a), Some(b)) => match a.until(b) {
            Some(c) => gw.commits = Some(c),
            None => gw.notes.push(
                "group commits: none in the measured interval (or the gateway restarted)".into(),
            ),
        },
        _ if at_start.is_some() => gw.notes.push(
            "group commits: not read (GET /health unreachable or without ingest.flushes)".into(),
        ),
        _ => {}
    }
    // Stop the writers now if interrupted (they stop by themselves at `end`).
    if measured_end < end {
        run.cancel.cancel();
    }

    let mut total = ConnStats::default();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(s) => merge(&mut total, s, &mut errors),
            Err(e) => errors.push(format!("a connection task failed: {e}")),
        }
    }
    ticker.abort();
    bar.finish_and_clear();

    let measured_s = match at_start {
        Some((t0, _)) => at_end.0.duration_since(t0).as_secs_f64(),
        None => 0.0,
    };
    let per_s = |n: u64| {
        if measured_s > 0.0 {
            n as f64 / measured_s
        } else {
            0.0
        }
    };
    let mut client = ClientFigures::default();
    if let Some((_, (gw0, me0))) = at_start {
        let (gw1, me1) = at_end.1;
        if let (Some(a), Some(b)) = (me0, me1) {
            let s = b.saturating_sub(a).as_secs_f64();
            client.cpu_s = Some(s);
            client.cores = (measured_s > 0.0).then(|| s / measured_s);
        }
        if let (Some(a), Some(b)) = (gw0, gw1) {
            let s = b.saturating_sub(a).as_secs_f64();
            gw.cpu_s = Some(s);
            gw.cores = (measured_s > 0.0).then(|| s / measured_s);
        }
    }
    if let (Some(a), Some(b)) = (stored_start, stored_end) {
        gw.stored_in_interval = Some(b.saturating_sub(a));
    }
    let qos0 = o.transport == Transport::Mqtt && o.mqtt.qos == 0;
    let events_for_cpu = if qos0 {
        gw.stored_in_interval.unwrap_or(0)
    } else {
        total.interval_acked
    };
    if let Some(s) = gw.cpu_s
        && events_for_cpu > 0
    {
        gw.cpu_s_per_1000_events = Some(s * 1000.0 / events_for_cpu as f64);
    }

    // The stored count after the run: acknowledged events are durable
    // before their answer; QoS 0 ones may still be on their way, so wait
    // until they are all in or the count stops moving.
    gw.stored_after = settle_stored(&stored, gw.stored_before, total.sent, qos0, o.timeout).await;
    if let Some(pid) = gw.pid {
        match procfs::memory(pid) {
            Some(m) => {
                gw.rss_bytes = Some(m.rss);
                gw.rss_peak_bytes = Some(m.peak);
            }
            None => gw
                .notes
                .push(format!("/proc/{pid}/status unreadable at the end")),
        }
    }
    gw.rss_max_sampled_bytes = max_rss(&run, gw.rss_bytes);
    // The kernel folds per-thread RSS counters into VmHWM lazily, so a
    // sample taken earlier can read above it: the peak is at least that.
    if let (Some(p), Some(s)) = (gw.rss_peak_bytes, gw.rss_max_sampled_bytes) {
        gw.rss_peak_bytes = Some(p.max(s));
    }

    Ok(LoadReport {
        transport: o.transport,
        mode: if o.rate.is_some() { "open" } else { "closed" }.into(),
        connections: o.connections,
        depth: o.rate.is_none().then_some(o.depth),
        rate: o.rate,
        mqtt_qos: (o.transport == Transport::Mqtt).then_some(o.mqtt.qos),
        mqtt_version: (o.transport == Transport::Mqtt).then(|| o.mqtt.version.to_string()),
        mqtt_broker: broker,
        users: o.users,
        warmup_s: o.warmup.as_secs_f64(),
        measured_s,
        sent: total.sent,
        acknowledged: total.acked,
        refused: total.refused,
        refused_reasons: total.reasons.clone(),
        failed: total.failed,
        errors,
        interval_sent: total.interval_sent,
        interval_acknowledged: total.interval_acked,
        sent_per_s: per_s(total.interval_sent),
        acknowledged_per_s: per_s(total.interval_acked),
        latency: Latency::of(&total.hist),
        latency_from_write: if o.rate.is_some() {
            Latency::of(&total.hist_write)
        } else {
            None
        },
        send_lag: if o.rate.is_some() {
            Latency::of(&total.hist_lag)
        } else {
            None
        },
        gateway: gw,
        client,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average: procfs::load_average(),
    })
}

/// The largest RSS the progress ticker sampled, or the final one.
fn max_rss(run: &Run, last: Option<u64>) -> Option<u64> {
    match (run.live.max_rss.load(Ordering::Relaxed), last) {
        (0, l) => l,
        (s, l) => Some(l.map_or(s, |l| s.max(l))),
    }
}

async fn settle_stored<F, Fut>(
    stored: &F,
    before: Option<u64>,
    sent: u64,
    qos0: bool,
    timeout: Duration,
) -> Option<u64>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let first = stored("after the run").await.ok()?;
    if !qos0 {
        return Some(first);
    }
    let deadline = Instant::now() + timeout;
    let (mut last, mut since) = (first, Instant::now());
    loop {
        if before.is_some_and(|b| last.saturating_sub(b) >= sent)
            || since.elapsed() >= Duration::from_secs(1)
            || Instant::now() >= deadline
        {
            return Some(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(n) = stored("after the run").await
            && n != last
        {
            (last, since) = (n, Instant::now());
        }
    }
}

fn merge(total: &mut ConnStats, s: ConnStats, errors: &mut Vec<String>) {
    total.sent += s.sent;
    total.acked += s.acked;
    total.refused += s.refused;
    total.failed += s.failed;
    total.interval_sent += s.interval_sent;
    total.interval_acked += s.interval_acked;
    for (k, v) in s.reasons {
        *total.reasons.entry(k).or_default() += v;
    }
    total.hist.add(&s.hist);
    total.hist_write.add(&s.hist_write);
    total.hist_lag.add(&s.hist_lag);
    if let Some(e) = s.error
        && errors.len() < MAX_ERRORS
        && !errors.contains(&e)
    {
        errors.push(e);
    }
}

/// The port of a gateway address on this machine's loopback (or any
/// address, `0.0.0.0`), where `/proc` can find its process.
fn local_port(authority: Option<&str>) -> Option<u16> {
    let a = authority?;
    let (host, port) = a.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    local.then(|| port.parse().ok()).flatten()
}

/// The gateway's embedded-broker listener for the run's MQTT version, from
/// `GET /api/mqtt`.
async fn discover_broker(o: &LoadOptions, authority: Option<&str>) -> Result<String, LoadError> {
    let setup = |m: String| LoadError::Setup(m);
    let a = authority.ok_or_else(|| {
        setup("--transport mqtt over a TLS gateway address: give the broker with --mqtt".into())
    })?;
    let status = http::get_json(a, "/api/mqtt", &o.token, o.timeout)
        .await
        .map_err(|e| {
            setup(format!(
                "finding the gateway's MQTT listener (or give it with --mqtt): {e}"
            ))
        })?;
    let key = match o.mqtt.version {
        MqttVersion::V5 => "mqtt.listen_v5",
        MqttVersion::V311 => "mqtt.listen_v4",
    };
    let addr = status
        .pointer("/embedded/listeners")
        .and_then(Value::as_array)
        .and_then(|ls| ls.iter().find(|l| l["key"] == key))
        .and_then(|l| l["addr"].as_str())
        .ok_or_else(|| {
            setup(format!(
                "the gateway has no {key} listener (GET /api/mqtt); give the broker with --mqtt"
            ))
        })?;
    // A wildcard listener: reach it where the gateway is.
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "1883"));
    let host = if host == "0.0.0.0" || host == "[::]" {
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    } else {
        host
    };
    Ok(format!("mqtt://{host}:{port}"))
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected WebSocket and its event pool.
struct WsConn {
    ws: WsStream,
    pool: Vec<Utf8Bytes>,
}

/// A connected MQTT client and its pre-encoded messages.
struct MqttConn {
    tcp: TcpStream,
    v5: bool,
    receive_max: Option<u16>,
    pool: Vec<mqtt_wire::PublishTemplate>,
    /// Bytes read after the CONNACK.
    leftover: Vec<u8>,
}

enum Conns {
    Ws(Vec<WsConn>),
    Mqtt(Vec<MqttConn>),
}

/// Open every connection, at most 64 handshakes at a time; the first
/// failure (after all have been tried) is the error.
async fn connect_all(o: &LoadOptions, broker: Option<&str>) -> Result<Conns, LoadError> {
    // A descriptor per connection, and some for the rest.
    let want = o.connections as u64 + 64;
    if let Some(limit) = procfs::raise_open_files(want)
        && limit < want
    {
        return Err(LoadError::Options(format!(
            "--connections {} needs about {want} open files, the limit is {limit} (ulimit -n)",
            o.connections
        )));
    }
    let gate = Arc::new(Semaphore::new(64));
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut ws_tasks = Vec::new();
    let mut mqtt_tasks = Vec::new();
    for c in 0..o.connections {
        let k = c % o.users;
        let seed = o.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
        let gate = gate.clone();
        let timeout = o.timeout;
        match o.transport {
            Transport::WebSocket => {
                let user = ws_user(k);
                let url = stream_url(&o.gateway, &user, &o.token);
                let shown = stream_url(&o.gateway, &user, "***");
                ws_tasks.push(tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    let ws = ws_connect(&url, &shown, timeout).await?;
                    let pool = event_pool(&user, seed, None)
                        .into_iter()
                        .map(|(t, _)| Utf8Bytes::from(t))
                        .collect();
                    Ok::<_, String>(WsConn { ws, pool })
                }));
            }
            Transport::Mqtt => {
                let broker = broker.unwrap_or_default().to_owned();
                let (username, password, user) = mqtt_identity(&o.mqtt, k);
                let v5 = o.mqtt.version == MqttVersion::V5;
                let qos = o.mqtt.qos;
                let client_id = format!("fsim-load-{:x}-{c}", nonce & 0xffff_ffff);
                let run_tag = format!("{:x}-{c}", nonce & 0xffff_ffff_ffff);
                mqtt_tasks.push(tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    let (tcp, receive_max, leftover) =
                        mqtt_connect(&broker, &client_id, (&username, &password), v5, timeout)
                            .await?;
                    let topic = emotion_wire::TopicLayout::default().events(&user);
                    let pool = event_pool(&user, seed, Some(&run_tag))
                        .into_iter()
                        .map(|(text, at)| mqtt_wire::publish(&topic, text.as_bytes(), qos, v5, at))
                        .collect();
                    Ok::<_, String>(MqttConn {
                        tcp,
                        v5,
                        receive_max,
                        pool,
                        leftover,
                    })
                }));
            }
        }
    }
    let mut first_error = None;
    let mut failures = 0;
    let mut note = |e: String| {
        failures += 1;
        first_error.get_or_insert(e);
    };
    let mut ws = Vec::new();
    for t in ws_tasks {
        match t.await {
            Ok(Ok(c)) => ws.push(c),
            Ok(Err(e)) => note(e),
            Err(e) => note(e.to_string()),
        }
    }
    let mut mqtt = Vec::new();
    for t in mqtt_tasks {
        match t.await {
            Ok(Ok(c)) => mqtt.push(c),
            Ok(Err(e)) => note(e),
            Err(e) => note(e.to_string()),
        }
    }
    if let Some(e) = first_error {
        return Err(LoadError::Setup(format!(
            "{failures} of {} connection(s) failed; the first: {e}",
            o.connections
        )));
    }
    Ok(match o.transport {
        Transport::WebSocket => Conns::Ws(ws),
        Transport::Mqtt => Conns::Mqtt(mqtt),
    })
}

/// Connect and read the welcome.
async fn ws_connect(url: &str, shown: &str, timeout: Duration) -> Result<WsStream, String> {
    let (mut ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .map_err(|_| format!("connecting to {shown}: no answer within {timeout:?}"))?
    .map_err(|e| {
        let hint = if e.to_string().contains("503") {
            " (over the gateway's connection limits: http.limits.max_connections, \
             and max_connections_per_source per client address, 1024 by default)"
        } else {
            ""
        };
        format!("connecting to {shown}: {e}{hint}")
    })?;
    let welcome = tokio::time::timeout(timeout, ws.next())
        .await
        .map_err(|_| format!("{shown}: no welcome within {timeout:?}"))?;
    match welcome {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"connected\"") => Ok(ws),
        Some(Ok(Message::Close(f))) => Err(format!(
            "{shown}: the gateway closed the connection{} (a wrong --token closes with 1008)",
            f.map(|f| format!(" (code {}: {})", u16::from(f.code), f.reason))
                .unwrap_or_default()
        )),
        Some(Ok(other)) => Err(format!("{shown}: expected a welcome, got {other:?}")),
        Some(Err(e)) => Err(format!("{shown}: {e}")),
        None => Err(format!("{shown}: closed before the welcome")),
    }
}

/// Connect, CONNECT, and read the CONNACK: the stream, the broker's
/// Receive Maximum, and any bytes read past the CONNACK.
async fn mqtt_connect(
    broker: &str,
    client_id: &str,
    login: (&str, &str),
    v5: bool,
    timeout: Duration,
) -> Result<(TcpStream, Option<u16>, Vec<u8>), String> {
    let addr = broker
        .strip_prefix("mqtt://")
        .or_else(|| broker.strip_prefix("tcp://"))
        .unwrap_or(broker)
        .trim_end_matches('/');
    let attempt = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to the broker {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(&mqtt_wire::connect(client_id, Some(login), v5))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        loop {
            match mqtt_wire::decode(&buf, v5).map_err(|e| format!("{addr}: {e}"))? {
                Some((
                    mqtt_wire::Incoming::ConnAck {
                        code: 0,
                        receive_max,
                    },
                    used,
                )) => {
                    return Ok((tcp, receive_max, buf[used..].to_vec()));
                }
                Some((mqtt_wire::Incoming::ConnAck { code, .. }, _)) => {
                    return Err(format!(
                        "{addr}: the broker refused {} as {}: {}",
                        client_id,
                        login.0,
                        mqtt_wire::connack_name(code, v5)
                    ));
                }
                Some((other, _)) => {
                    return Err(format!("{addr}: expected a CONNACK, got {other:?}"));
                }
                None => {}
            }
            let mut chunk = [0u8; 256];
            let n = tcp
                .read(&mut chunk)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "{addr}: the broker closed the connection before its CONNACK \
                     (MQTT {} on a port for the other version?)",
                    if v5 { "5" } else { "3.1.1" }
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("connecting to the broker {addr}: no CONNACK within {timeout:?}"))?
}

/// The next due time of a writer, or `None` when it is done. Closed loop:
/// now (after a window slot was free). Open loop: the schedule, waiting
/// for the pacer to release the message; a writer that fell behind sends
/// what is overdue at once, each message keeping its due time.
struct Schedule {
    pacing: Pacing,
    /// Messages of this connection taken so far (open loop).
    taken: u64,
}

impl Schedule {
    fn new(pacing: Pacing) -> Self {
        Schedule { pacing, taken: 0 }
    }

    /// Whether the next message is due now (open loop) — else the writer
    /// flushes before waiting.
    fn due_now(&self) -> bool {
        match &self.pacing {
            Pacing::Closed => true,
            Pacing::Open { pacer, conn } => pacer.is_released(*conn, self.taken),
        }
    }

    async fn next(&mut self, run: &Run) -> Option<Instant> {
        let end = run.timeline.end;
        match &self.pacing {
            Pacing::Closed => {
                (Instant::now() < end && !run.cancel.is_cancelled()).then(Instant::now)
            }
            Pacing::Open { pacer, conn } => {
                let due = pacer.due(*conn, self.taken);
                if due >= end || run.cancel.is_cancelled() {
                    return None;
                }
                if !pacer.is_released(*conn, self.taken) {
                    tokio::select! {
                        _ = pacer.released(*conn, self.taken) => {}
                        _ = run.cancel.cancelled() => return None,
                    }
                }
                self.taken += 1;
                Some(due)
            }
        }
    }
}

/// Take a window slot; `None` when the run ended (or was interrupted)
/// while waiting for one.
async fn slot(permits: &Semaphore, run: &Run) -> Option<()> {
    if let Ok(p) = permits.try_acquire() {
        p.forget();
        return Some(());
    }
    tokio::select! {
        p = permits.acquire() => { p.ok()?.forget(); Some(()) }
        _ = tokio::time::sleep_until(run.timeline.end) => None,
        _ = run.cancel.cancelled() => None,
    }
}

/// What a writer reports when it stops.
struct Written {
    interval_sent: u64,
    error: Option<String>,
}

async fn ws_connection(conn: WsConn, pacing: Pacing, run: Arc<Run>) -> ConnStats {
    let WsConn { ws, pool } = conn;
    let (mut sink, mut stream) = ws.split();
    let ring = Arc::new(Ring::new(run.window));
    let permits = Arc::new(Semaphore::new(run.window));
    let mut writer = tokio::spawn({
        let (ring, permits, run) = (ring.clone(), permits.clone(), run.clone());
        async move {
            let tl = run.timeline;
            let closed = matches!(pacing, Pacing::Closed);
            let mut schedule = Schedule::new(pacing);
            let mut out = Written {
                interval_sent: 0,
                error: None,
            };
            let mut i = 0u64;
            loop {
                if !schedule.due_now()
                    && let Err(e) = sink.flush().await
                {
                    out.error = Some(format!("sending: {e}"));
                    break;
                }
                let Some(mut due) = schedule.next(&run).await else {
                    break;
                };
                if permits.available_permits() == 0
                    && let Err(e) = sink.flush().await
                {
                    out.error = Some(format!("sending: {e}"));
                    break;
                }
                if slot(&permits, &run).await.is_none() {
                    break;
                }
                let now = Instant::now();
                if closed {
                    due = now;
                }
                ring.put(i, tl.ns(due), tl.ns(now));
                if tl.measured(due) {
                    out.interval_sent += 1;
                }
                let msg = Message::Text(pool[(i % pool.len() as u64) as usize].clone());
                i += 1;
                run.live.sent.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = sink.feed(msg).await {
                    out.error = Some(format!("sending: {e}"));
                    break;
                }
            }
            if out.error.is_none()
                && let Err(e) = sink.flush().await
            {
                out.error = Some(format!("sending: {e}"));
            }
            // The sink lives until here: dropping it does not close the
            // socket (the stream half still reads the answers).
            (out, sink)
        }
    });

    let tl = run.timeline;
    let mut st = ConnStats::default();
    let mut answered = 0u64;
    let mut written: Option<Written> = None;
    let mut _sink = None;
    loop {
        if written.is_some() && answered >= ring.sent.load(Ordering::Acquire) {
            break;
        }
        let msg = tokio::select! {
            m = stream.next() => m,
            w = &mut writer, if written.is_none() => {
                match w {
                    Ok((w, sink)) => { written = Some(w); _sink = Some(sink); }
                    Err(e) => written = Some(Written { interval_sent: 0, error: Some(e.to_string()) }),
                }
                continue;
            }
            _ = tokio::time::sleep_until(tl.drain_until) => {
                st.error.get_or_insert_with(|| format!("answers still missing {:?} after the end", tl.drain_until - tl.end));
                break;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                st.error = Some(format!(
                    "the gateway closed the connection{}",
                    f.map(|f| format!(" (code {}: {})", u16::from(f.code), f.reason))
                        .unwrap_or_default()
                ));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                st.error = Some(format!("receiving: {e}"));
                break;
            }
            None => {
                st.error = Some("the gateway closed the connection".into());
                break;
            }
        };
        let now = Instant::now();
        let Some((due, wrote)) = ring.get(answered) else {
            st.error = Some("an answer to nothing sent".into());
            break;
        };
        answered += 1;
        permits.add_permits(1);
        // The gateway writes its struct with `status` first; anything else
        // (an error reply) is parsed.
        let accepted = text.as_str().starts_with(r#"{"status":"processed""#) || {
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            if v["status"] == "processed" {
                true
            } else {
                let reason = v["error"].as_str().unwrap_or("unexpected reply");
                *st.reasons.entry(reason.to_owned()).or_default() += 1;
                false
            }
        };
        if accepted {
            st.acked += 1;
            run.live.acked.fetch_add(1, Ordering::Relaxed);
            if tl.measured(now) {
                st.interval_acked += 1;
                let now_ns = tl.ns(now);
                st.hist.record(now_ns.saturating_sub(due));
                st.hist_write.record(now_ns.saturating_sub(wrote));
                st.hist_lag.record(wrote.saturating_sub(due));
            }
        } else {
            st.refused += 1;
            run.live.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    if written.is_none() {
        writer.abort();
        if let Ok((w, _)) = writer.await {
            written = Some(w);
        }
    }
    st.sent = ring.sent.load(Ordering::Acquire);
    st.failed = st.sent.saturating_sub(answered);
    if let Some(w) = written {
        st.interval_sent = w.interval_sent;
        if st.error.is_none() {
            st.error = w.error;
        }
    }
    st
}

async fn mqtt_connection(conn: MqttConn, qos: u8, pacing: Pacing, run: Arc<Run>) -> ConnStats {
    let MqttConn {
        tcp,
        v5,
        pool,
        leftover,
        ..
    } = conn;
    let (mut rd, mut wr) = tcp.into_split();
    let window = run.window.min(65_535);
    // Packet ids 1..=65535 in turn: message i has id i % 65535 + 1. With a
    // ring whose length divides 65535, its slot i % len is (id - 1) % len,
    // so an answer finds its message by packet id, in any order.
    let ring = Arc::new(Ring::new(pkid_ring_len(window)));
    let permits = Arc::new(Semaphore::new(window));
    let acked_mode = qos > 0;
    let mut writer = tokio::spawn({
        let (ring, permits, run) = (ring.clone(), permits.clone(), run.clone());
        async move {
            let tl = run.timeline;
            let closed = matches!(pacing, Pacing::Closed);
            let mut schedule = Schedule::new(pacing);
            let mut out = Written {
                interval_sent: 0,
                error: None,
            };
            let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH * 2);
            let mut i = 0u64;
            loop {
                if !schedule.due_now() && !buf.is_empty() {
                    if let Err(e) = wr.write_all(&buf).await {
                        out.error = Some(format!("sending: {e}"));
                        break;
                    }
                    buf.clear();
                }
                let Some(mut due) = schedule.next(&run).await else {
                    break;
                };
                if acked_mode {
                    if permits.available_permits() == 0 && !buf.is_empty() {
                        if let Err(e) = wr.write_all(&buf).await {
                            out.error = Some(format!("sending: {e}"));
                            break;
                        }
                        buf.clear();
                    }
                    if slot(&permits, &run).await.is_none() {
                        break;
                    }
                }
                let now = Instant::now();
                if closed {
                    due = now;
                }
                let pkid = (i % 65_535) as u16 + 1;
                let tpl = &pool[(i % pool.len() as u64) as usize];
                let start = buf.len();
                buf.extend_from_slice(&tpl.bytes);
                if let Some(at) = tpl.pkid_at {
                    buf[start + at..start + at + 2].copy_from_slice(&pkid.to_be_bytes());
                }
                write_hex16(&mut buf[start + tpl.seq_at..start + tpl.seq_at + 16], i);
                ring.put(i, tl.ns(due), tl.ns(now));
                if tl.measured(due) {
                    out.interval_sent += 1;
                }
                i += 1;
                run.live.sent.fetch_add(1, Ordering::Relaxed);
                if buf.len() >= WRITE_BATCH {
                    if let Err(e) = wr.write_all(&buf).await {
                        out.error = Some(format!("sending: {e}"));
                        break;
                    }
                    buf.clear();
                }
            }
            if out.error.is_none()
                && !buf.is_empty()
                && let Err(e) = wr.write_all(&buf).await
            {
                out.error = Some(format!("sending: {e}"));
            }
            (out, wr)
        }
    });

    let tl = run.timeline;
    let mut st = ConnStats::default();
    let mut answered = 0u64;
    let mut written: Option<Written> = None;
    let mut _wr = None;
    let mut buf = leftover;
    buf.reserve(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        // Decode what has arrived.
        let mut used = 0;
        loop {
            match mqtt_wire::decode(&buf[used..], v5) {
                Ok(Some((packet, n))) => {
                    used += n;
                    match packet {
                        mqtt_wire::Incoming::PubAck { pkid, reason } => {
                            let now = Instant::now();
                            let Some((due, wrote)) = ring.get_pkid(pkid) else {
                                st.error =
                                    Some(format!("a PUBACK for packet id {pkid}, not in flight"));
                                break 'read;
                            };
                            answered += 1;
                            permits.add_permits(1);
                            if reason < 0x80 {
                                st.acked += 1;
                                run.live.acked.fetch_add(1, Ordering::Relaxed);
                                if tl.measured(now) {
                                    st.interval_acked += 1;
                                    let now_ns = tl.ns(now);
                                    st.hist.record(now_ns.saturating_sub(due));
                                    st.hist_write.record(now_ns.saturating_sub(wrote));
                                    st.hist_lag.record(wrote.saturating_sub(due));
                                }
                            } else {
                                st.refused += 1;
                                run.live.refused.fetch_add(1, Ordering::Relaxed);
                                *st.reasons
                                    .entry(mqtt_wire::puback_reason_name(reason))
                                    .or_default() += 1;
                            }
                        }
                        mqtt_wire::Incoming::Disconnect { reason } => {
                            st.error =
                                Some(format!("the broker disconnected (reason 0x{reason:02x})"));
                            break 'read;
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    st.error = Some(format!("from the broker: {e}"));
                    break 'read;
                }
            }
        }
        buf.drain(..used);
        let outstanding = if acked_mode {
            ring.issued().saturating_sub(answered)
        } else {
            0
        };
        if written.is_some() && outstanding == 0 {
            break;
        }
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) => {
                    st.error = Some("the broker closed the connection".into());
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    st.error = Some(format!("receiving: {e}"));
                    break;
                }
            },
            w = &mut writer, if written.is_none() => {
                match w {
                    Ok((w, wr)) => { written = Some(w); _wr = Some(wr); }
                    Err(e) => written = Some(Written { interval_sent: 0, error: Some(e.to_string()) }),
                }
            }
            _ = tokio::time::sleep_until(tl.drain_until) => {
                st.error.get_or_insert_with(|| format!("PUBACKs still missing {:?} after the end", tl.drain_until - tl.end));
                break;
            }
        }
    }
    if written.is_none() {
        writer.abort();
        if let Ok((w, _)) = writer.await {
            written = Some(w);
        }
    }
    st.sent = ring.issued();
    st.failed = if acked_mode {
        st.sent.saturating_sub(answered)
    } else {
        0
    };
    if let Some(w) = written {
        st.interval_sent = w.interval_sent;
        if st.error.is_none() {
            st.error = w.error;
        }
    }
    st
}

impl Ring {
    /// MQTT: the times of the message in flight under packet id `pkid`
    /// (see [`pkid_ring_len`]).
    fn get_pkid(&self, pkid: u16) -> Option<(u64, u64)> {
        if pkid == 0 || self.issued() == 0 {
            return None;
        }
        let s = usize::from(pkid - 1) % self.due.len();
        Some((
            self.due[s].load(Ordering::Relaxed),
            self.written[s].load(Ordering::Relaxed),
        ))
    }
    fn issued(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }
}

/// The smallest divisor of 65535 (the number of MQTT packet ids) that holds
/// `window` messages.
fn pkid_ring_len(window: usize) -> usize {
    const DIVISORS: [usize; 16] = [
        1, 3, 5, 15, 17, 51, 85, 255, 257, 771, 1285, 3855, 4369, 13107, 21845, 65535,
    ];
    DIVISORS.into_iter().find(|&d| d >= window).unwrap_or(65535)
}

/// The progress bar: phase, acknowledged count and rate, in flight.
async fn progress(run: Arc<Run>, bar: ProgressBar, pid: Option<u32>, acked_mode: bool) {
    let tl = run.timeline;
    let total_ms = tl.end.duration_since(tl.base).as_millis() as u64;
    bar.set_length(total_ms.max(1));
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let sent = run.live.sent.load(Ordering::Relaxed);
        let acked = run.live.acked.load(Ordering::Relaxed);
        let refused = run.live.refused.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let (ack_rate, send_rate) = (
            acked.saturating_sub(last.1) as f64 / dt,
            sent.saturating_sub(last.2) as f64 / dt,
        );
        last = (now, acked, sent);
        let phase = if now < tl.measure_from {
            "warm-up"
        } else if now < tl.end {
            if let Some(m) = pid.and_then(procfs::memory) {
                run.live.max_rss.fetch_max(m.rss, Ordering::Relaxed);
            }
            "measuring"
        } else {
            "draining"
        };
        bar.set_position(now.duration_since(tl.base).as_millis() as u64);
        let in_flight = sent.saturating_sub(acked + refused);
        bar.set_message(if acked_mode {
            format!(
                "{phase}: {acked} acknowledged ({ack_rate:.0}/s), {in_flight} in flight, {refused} refused"
            )
        } else {
            format!("{phase}: {sent} published ({send_rate:.0}/s)")
        });
    }
}

fn mb(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("?".into(), |v| format!("{v:.digits$}"))
}

fn lat_line(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} events)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
    )
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match (self.rate, self.depth) {
            (Some(r), _) => format!("open loop at {r:.0} events/s"),
            (None, Some(d)) => format!("closed loop, depth {d}"),
            (None, None) => "closed loop".into(),
        };
        let mqtt = match (self.mqtt_qos, &self.mqtt_version, &self.mqtt_broker) {
            (Some(q), Some(v), Some(b)) => format!(", MQTT {v} QoS {q} via {b}"),
            _ => String::new(),
        };
        writeln!(
            f,
            "load: {} × {}, {}{mqtt}, {} user(s); {:.1} s measured after {:.1} s warm-up",
            self.connections,
            self.transport.as_str(),
            how,
            self.users,
            self.measured_s,
            self.warmup_s
        )?;
        let qos0 = self.mqtt_qos == Some(0);
        if qos0 {
            writeln!(
                f,
                "published        {:>10.0} events/s ({} in the interval; QoS 0 has no acknowledgement)",
                self.sent_per_s, self.interval_sent
            )?;
            if let (Some(n), true) = (self.gateway.stored_in_interval, self.measured_s > 0.0) {
                writeln!(
                    f,
                    "stored           {:>10.0} events/s ({n} in the interval, GET /health)",
                    n as f64 / self.measured_s
                )?;
            }
        } else {
            writeln!(
                f,
                "acknowledged     {:>10.0} events/s ({} in the interval; sent {:.0}/s)",
                self.acknowledged_per_s, self.interval_acknowledged, self.sent_per_s
            )?;
            match &self.latency {
                Some(l) if self.rate.is_some() => {
                    writeln!(f, "ack latency      {} from when due", lat_line(l))?
                }
                Some(l) => writeln!(f, "ack latency      {}", lat_line(l))?,
                None => writeln!(f, "ack latency      none acknowledged")?,
            }
            if let Some(l) = &self.latency_from_write {
                writeln!(f, "                 {} from the write", lat_line(l))?;
            }
            if let Some(l) = &self.send_lag {
                writeln!(
                    f,
                    "sent late by     p50 {:.3} ms  p99 {:.3} ms  max {:.2} ms (this tool's pacing, part of the latency from when due)",
                    l.p50_ms, l.p99_ms, l.max_ms
                )?;
            }
        }
        if let Some(c) = &self.gateway.commits {
            writeln!(
                f,
                "group commits    {} in the interval, {:.1} events each, {:.2} ms each (mean; \
                 {:.2} ms the slowest since start): what an ack waits for at least, typically",
                c.commits, c.mean_events, c.mean_ms, c.max_ms_since_start
            )?;
        }
        let stored = match (self.gateway.stored_before, self.gateway.stored_after) {
            (Some(a), Some(b)) => {
                let d = b.saturating_sub(a);
                let check = if qos0 {
                    format!("{} published", self.sent)
                } else if d == self.acknowledged {
                    "= acknowledged".into()
                } else if d > self.acknowledged {
                    format!("> {} acknowledged: another writer?", self.acknowledged)
                } else {
                    format!(
                        "{} short of the acknowledged: refused over MQTT 3.1.1, or lost",
                        self.unstored()
                    )
                };
                format!(", gateway stored +{d} ({check})")
            }
            _ => String::new(),
        };
        writeln!(
            f,
            "whole run        sent {}, acknowledged {}, refused {}, failed {}{stored}",
            self.sent, self.acknowledged, self.refused, self.failed
        )?;
        for (reason, n) in &self.refused_reasons {
            writeln!(f, "refused          {n} {reason}")?;
        }
        if self.refused_reasons.keys().any(|r| r.contains("(0x97)")) {
            writeln!(
                f,
                "                 (quota exceeded: the per-device rate limit, \
                 mqtt.limits.device_rate_per_second, not the box; see README, Sizing a box)"
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error            {e}")?;
        }
        let g = &self.gateway;
        match g.pid {
            Some(pid) => {
                writeln!(
                    f,
                    "gateway CPU      {} cores ({} CPU-s over {:.1} s) = {} CPU-s per 1000 events [pid {pid}, {}]",
                    opt(g.cores, 2),
                    opt(g.cpu_s, 2),
                    self.measured_s,
                    opt(g.cpu_s_per_1000_events, 4),
                    g.pid_source
                )?;
                writeln!(
                    f,
                    "gateway RSS      {} at the end, {} largest sampled, {} peak since start (VmHWM)",
                    mb(g.rss_bytes),
                    mb(g.rss_max_sampled_bytes),
                    mb(g.rss_peak_bytes)
                )?;
            }
            None => writeln!(f, "gateway CPU/RSS  {}", g.pid_source)?,
        }
        writeln!(
            f,
            "load tool CPU    {} cores ({} CPU-s)",
            opt(self.client.cores, 2),
            opt(self.client.cpu_s, 2)
        )?;
        let la = self.load_average.map_or("?".into(), |l| {
            format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
        });
        write!(
            f,
            "machine          {} CPU(s), load average {la} (at the end)",
            self.cpus
        )?;
        for n in &g.notes {
            write!(f, "\nnote             {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LoadOptions {
        LoadOptions {
            transport: Transport::WebSocket,
            gateway: "ws://127.0.0.1:1".into(),
            token: "t".into(),
            connections: 4,
            depth: 1,
            rate: None,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            users: 4,
            timeout: Duration::from_secs(1),
            seed: 1,
            gateway_pid: None,
            mqtt: MqttLoad {
                broker: None,
                version: MqttVersion::V5,
                qos: 1,
                username: None,
                password: None,
                user: None,
            },
        }
    }

    #[test]
    fn bad_options_are_named() {
        let msg = |o: LoadOptions| match check(&o) {
            Err(e) => e.to_string(),
            Ok(()) => "ok".into(),
        };
        assert_eq!(msg(options()), "ok");
        assert!(
            msg(LoadOptions {
                users: 5,
                ..options()
            })
            .contains("--users")
        );
        assert!(
            msg(LoadOptions {
                depth: 0,
                ..options()
            })
            .contains("--depth")
        );
        assert!(
            msg(LoadOptions {
                rate: Some(f64::NAN),
                ..options()
            })
            .contains("--rate")
        );
        for rate in [1e-20, 0.0, -1.0, 2e7] {
            assert!(
                msg(LoadOptions {
                    rate: Some(rate),
                    depth: 1,
                    ..options()
                })
                .contains("--rate"),
                "{rate}"
            );
        }
        assert!(
            msg(LoadOptions {
                connections: 0,
                ..options()
            })
            .contains("--connections")
        );
        let mut o = options();
        o.mqtt.qos = 0;
        assert!(msg(o.clone()).contains("--qos is for"));
        o.transport = Transport::Mqtt;
        assert_eq!(msg(o.clone()), "ok");
        o.mqtt.qos = 2;
        assert!(msg(o.clone()).contains("0 or 1"));
        o.mqtt.qos = 1;
        o.mqtt.username = Some("d{i}".into());
        o.mqtt.password = Some("p".into());
        assert!(msg(o.clone()).contains("--mqtt-user"));
        o.mqtt.user = Some("{i}".into());
        assert_eq!(msg(o.clone()), "ok");
        assert_eq!(
            mqtt_identity(&o.mqtt, 3),
            ("d3".into(), "p".into(), "3".into())
        );
        assert_eq!(
            mqtt_identity(&options().mqtt, 3),
            (
                "dev-device".into(),
                "dev-device-token-change-me".into(),
                "42".into()
            )
        );
        assert!("udp".parse::<Transport>().is_err());
        assert_eq!("ws".parse::<Transport>().ok(), Some(Transport::WebSocket));
    }

    #[test]
    fn pooled_events_are_valid_and_mqtt_ones_carry_a_sequence_slot() {
        let ctx = emotion_core::IngestContext {
            user_id: Some("load-1"),
            session_id: None,
            gateway_id: "gw",
            producer: "client",
            now: chrono::Utc::now(),
            event_id: uuid::Uuid::now_v7(),
            confidence_in_source_range: true,
        };
        for (text, _) in event_pool("load-1", 7, None) {
            let v: Value = serde_json::from_str(&text).expect("json");
            assert!(v.get("event_id").is_none());
            let Value::Object(body) = &v else {
                panic!("object")
            };
            assert!(emotion_core::event::validate(body, &ctx).is_ok(), "{text}");
        }
        let pool = event_pool("load-1", 7, Some("run-0"));
        let sources: std::collections::HashSet<String> = pool
            .iter()
            .map(|(t, _)| serde_json::from_str::<Value>(t).expect("json")["source"].to_string())
            .collect();
        assert!(sources.len() >= 5, "{sources:?}");
        for (text, at) in pool {
            let mut bytes = text.into_bytes();
            write_hex16(&mut bytes[at..at + 16], 0xabc);
            let v: Value = serde_json::from_slice(&bytes).expect("json after patching");
            assert_eq!(v["context"]["load_seq"], "0000000000000abc");
            assert_eq!(v["context"]["load_run"], "run-0");
        }
    }

    #[test]
    fn packet_id_rings() {
        for w in [1, 2, 32, 256, 1024, 65_535] {
            let len = pkid_ring_len(w);
            assert!(len >= w && 65_535 % len == 0, "{w} → {len}");
            // Message i (id i % 65535 + 1) lands where its id says, across
            // the wrap of the ids.
            for i in [0u64, 1, 65_534, 65_535, 65_536, 200_000] {
                let pkid = (i % 65_535) as usize + 1;
                assert_eq!((i % len as u64) as usize, (pkid - 1) % len);
            }
        }
    }

    #[test]
    fn group_commits_are_the_difference_of_two_health_readings() {
        let health = |flushes: u64, events: f64, ms: f64, max: f64| {
            serde_json::json!({"ingest": {"flushes": flushes, "mean_batch_events": events,
                "mean_flush_ms": ms, "max_flush_ms": max, "events_stored": 0}})
        };
        let a = CommitCounters::from_health(&health(10, 4.0, 2.0, 9.0)).expect("a");
        let b = CommitCounters::from_health(&health(30, 8.0, 3.0, 12.5)).expect("b");
        let c = a.until(b).expect("commits");
        // 20 commits held 240 - 40 = 200 events and took 90 - 20 = 70 ms.
        assert_eq!(c.commits, 20);
        assert!((c.mean_events - 10.0).abs() < 1e-9, "{c:?}");
        assert!((c.mean_ms - 3.5).abs() < 1e-9, "{c:?}");
        assert_eq!(c.max_ms_since_start, 12.5);
        // No commit in between, a restarted gateway, or a /health without
        // the counters: no figure rather than a wrong one.
        assert_eq!(a.until(a), None);
        assert_eq!(b.until(a), None);
        assert_eq!(
            CommitCounters::from_health(&serde_json::json!({"ingest": {}})),
            None
        );
    }

    #[test]
    fn local_ports() {
        assert_eq!(local_port(Some("127.0.0.1:8080")), Some(8080));
        assert_eq!(local_port(Some("localhost:1")), Some(1));
        assert_eq!(local_port(Some("[::1]:2")), Some(2));
        assert_eq!(local_port(Some("10.1.2.3:8080")), None);
        assert_eq!(local_port(None), None);
    }
}
