//! MQTT devices.
//!
//! Devices publish raw readings (the JSON of `emotion_core::reading::RawReading`)
//! to `sensors/{device_id}/{source}` on the gateway's embedded broker (or any
//! broker the gateway follows upstream); their identity comes from their MQTT
//! credentials.
//!
//! - [`MqttDevice`] generates the readings of a facial-expression camera
//!   (FACS action units, head pose), a voice front end (prosodic features)
//!   and a chat app (text), along a journey;
//! - [`Publisher`] is what a transport implements (a rumqttc client, QoS 1,
//!   waiting for the broker's answer before counting a reading);
//! - [`publish_for`] drives a device through a publisher at a given pace.
//!
//! [`MqttPublisher`] implements [`Publisher`] on rumqttc, MQTT 5 by default
//! or 3.1.1 ([`MqttVersion`]), plain TCP, QoS 1. The gateway acknowledges a
//! message only once it is durable, and it may refuse one (not the device's
//! user, over its rate limit, bad payload): MQTT 5 says so in the PUBACK's
//! reason code (0x87 not authorized, 0x97 quota exceeded, 0x99 payload
//! format invalid, …), which is counted as a refusal with that reason. MQTT
//! 3.1.1 has no negative acknowledgement: the gateway PUBACKs the refused
//! message like any other and reports the refusal on
//! `{devices}/{device_id}/errors`, so there [`ErrorReports`] listens on that
//! topic and the refusals it hears are taken back out of the acknowledged
//! count. `firmware-sim --mqtt URL` runs one MQTT device per simulated user
//! beside its WebSocket client, counted under the `mqtt` transport.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use emotion_core::Source;
use emotion_wire::TopicLayout;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::devices::Script;
use crate::physio::{Rng, rng};

/// The topic a device publishes a source's readings to, in the gateway's
/// default topic layout.
pub fn topic(device_id: &str, source: Source) -> String {
    TopicLayout::default().reading(device_id, source.as_str())
}

/// How the broker answered one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Acknowledged: the gateway has it (durably, for the gateway).
    Accepted,
    /// Refused, with the reason the broker gave (e.g. `not authorized
    /// (0x87)`).
    Refused(String),
}

/// A message sink (an MQTT client, or a test double).
pub trait Publisher: Send {
    /// Publish one message; resolves with the broker's answer, or an error
    /// when there was none (connection lost, timeout).
    fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Ack, String>> + Send;
}

/// The MQTT protocol version a device speaks. The gateway's embedded broker
/// listens for each on its own port (`mqtt.listen_v4`, `mqtt.listen_v5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4): no negative acknowledgement, refusals
    /// only on the errors topic.
    V311,
    /// MQTT 5: refusals as PUBACK reason codes.
    #[default]
    V5,
}

impl MqttVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

impl std::fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MQTT version name that is neither 5 nor 3.1.1.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown MQTT version {0:?} (expected 5 or 3.1.1)")]
pub struct UnknownMqttVersion(pub String);

impl FromStr for MqttVersion {
    type Err = UnknownMqttVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The names mosquitto's tools take (-V mqttv5, mqttv311) too.
        match s.trim().to_ascii_lowercase().as_str() {
            "5" | "5.0" | "v5" | "mqttv5" => Ok(MqttVersion::V5),
            "3.1.1" | "311" | "4" | "v311" | "mqttv311" => Ok(MqttVersion::V311),
            _ => Err(UnknownMqttVersion(s.to_owned())),
        }
    }
}

/// The name of an MQTT 5 PUBACK reason code, with the code.
pub fn puback_reason(reason: PubAckReason) -> String {
    let (name, code) = match reason {
        PubAckReason::Success => ("success", 0x00),
        PubAckReason::NoMatchingSubscribers => ("no matching subscribers", 0x10),
        PubAckReason::UnspecifiedError => ("unspecified error", 0x80),
        PubAckReason::ImplementationSpecificError => ("implementation specific error", 0x83),
        PubAckReason::NotAuthorized => ("not authorized", 0x87),
        PubAckReason::TopicNameInvalid => ("topic name invalid", 0x90),
        PubAckReason::PacketIdentifierInUse => ("packet identifier in use", 0x91),
        PubAckReason::QuotaExceeded => ("quota exceeded", 0x97),
        PubAckReason::PayloadFormatInvalid => ("payload format invalid", 0x99),
    };
    format!("{name} (0x{code:02x})")
}

/// What an MQTT device senses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttKind {
    /// Facial action units from a camera.
    Facial,
    /// Prosodic voice features.
    Voice,
    /// Chat messages.
    Text,
}

impl MqttKind {
    pub fn source(self) -> Source {
        match self {
            MqttKind::Facial => Source::Facial,
            MqttKind::Voice => Source::Voice,
            MqttKind::Text => Source::Text,
        }
    }
}

/// A journey-driven MQTT device.
#[derive(Debug, Clone)]
pub struct MqttDevice {
    pub device_id: String,
    pub user_id: String,
    pub kind: MqttKind,
    script: Script,
    rng: Rng,
}

const CALM_TEXTS: [&str; 3] = [
    "Had a lovely walk, feeling relaxed.",
    "All good here, thanks for asking!",
    "Quiet afternoon, nice and easy.",
];
const STRESSED_TEXTS: [&str; 3] = [
    "I can't keep up with all of this, it's too much.",
    "Deadline moved up again and I'm panicking.",
    "Everything is going wrong today.",
];

impl MqttDevice {
    pub fn new(
        device_id: impl Into<String>,
        user_id: impl Into<String>,
        kind: MqttKind,
        script: Script,
        seed: u64,
    ) -> Self {
        Self {
            device_id: device_id.into(),
            user_id: user_id.into(),
            kind,
            script,
            rng: rng(seed),
        }
    }

    pub fn topic(&self) -> String {
        topic(&self.device_id, self.kind.source())
    }

    /// The raw reading at simulated time `t_s` (RawReading JSON).
    pub fn reading_at(&mut self, t_s: f64) -> Value {
        let a = self.script.affect_at(t_s);
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        let payload = match self.kind {
            MqttKind::Facial => {
                let smile = a.valence.max(0.0);
                let frown = (-a.valence).max(0.0);
                json!({
                    "action_units": {
                        "AU1": r2((frown * 2.0 * a.arousal).min(5.0)),
                        "AU4": r2((frown * 3.5).min(5.0)),
                        "AU5": r2((a.arousal * 2.5).min(5.0)),
                        "AU6": r2((smile * 3.0).min(5.0)),
                        "AU12": r2((smile * 3.5 + 0.2 * self.rng.uniform()).min(5.0)),
                        "AU25": a.arousal > 0.6,
                    },
                    "head_pose": {"pitch": r2(2.0 * self.rng.normal()), "yaw": r2(5.0 * self.rng.normal()), "roll": 0.0},
                    "detection_quality": r2(0.85 + 0.1 * self.rng.uniform()),
                })
            }
            MqttKind::Voice => json!({
                "f0_mean_hz": r2(140.0 + 90.0 * a.arousal + 5.0 * self.rng.normal()),
                "f0_range_hz": r2(30.0 + 80.0 * a.arousal),
                "loudness_db": r2(55.0 + 15.0 * a.arousal),
                "speech_rate": r2(3.5 + 2.5 * a.arousal),
                "jitter": r2(0.005 + 0.02 * a.arousal) ,
                "shimmer": r2(0.03 + 0.05 * a.arousal),
                "hnr_db": r2(20.0 - 8.0 * a.arousal),
            }),
            MqttKind::Text => {
                let pool = if a.valence < 0.0 {
                    STRESSED_TEXTS
                } else {
                    CALM_TEXTS
                };
                let i = (self.rng.next_u64() % pool.len() as u64) as usize;
                json!({"text": pool[i], "language": "en"})
            }
        };
        json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "source": self.kind.source().as_str(),
            "payload": payload,
        })
    }
}

/// What [`publish_for`] got back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub acknowledged: u64,
    /// Refused by the broker, by reason.
    pub refused: BTreeMap<String, u64>,
    /// No answer (connection lost, timeout).
    pub failed: u64,
}

/// Publish `device`'s readings every `interval_s` simulated seconds for
/// `duration_s`, at `speed`×.
pub async fn publish_for<P: Publisher>(
    device: &mut MqttDevice,
    publisher: &mut P,
    duration_s: f64,
    interval_s: f64,
    speed: f64,
    cancel: &CancellationToken,
) -> Published {
    let mut out = Published::default();
    let interval = interval_s.max(0.001);
    let speed = if speed > 0.0 && speed.is_finite() {
        speed
    } else {
        1.0
    };
    let topic = device.topic();
    let mut t = 0.0;
    while t < duration_s && !cancel.is_cancelled() {
        let payload = device.reading_at(t).to_string().into_bytes();
        match publisher.publish(&topic, payload).await {
            Ok(Ack::Accepted) => out.acknowledged += 1,
            Ok(Ack::Refused(reason)) => *out.refused.entry(reason).or_default() += 1,
            Err(_) => out.failed += 1,
        }
        t += interval;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(crate::secs(interval / speed)) => {}
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("bad broker address {0:?} (expected mqtt://HOST:PORT or HOST:PORT)")]
    BadAddress(String),
    #[error("connecting to the broker: {0}")]
    Connect(String),
    #[error("subscribing to {topic}: {reason}")]
    Subscribe { topic: String, reason: String },
}

/// What an event-loop task reports.
#[derive(Debug)]
enum Signal {
    ConnAck,
    /// A publish went out with this packet id.
    Sent(u16),
    /// Its acknowledgement: `None` accepted, `Some(reason)` refused.
    Acked(u16, Option<String>),
    /// The SUBACK: `None` granted, `Some(reason)` refused.
    SubAck(Option<String>),
    /// A message on a subscribed topic.
    Message(Vec<u8>),
    Error(String),
}

/// A rumqttc client of either protocol version.
#[derive(Debug)]
enum Client {
    V311(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish(topic, QoS5::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn subscribe(&self, topic: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe(topic, QoS5::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// A connected client and its event-loop task, which turns rumqttc's events
/// into [`Signal`]s. rumqttc reconnects by itself on the next poll after an
/// error.
#[derive(Debug)]
struct Connection {
    client: Client,
    signals: mpsc::UnboundedReceiver<Signal>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `mqtt://host:port`, `tcp://host:port` or `host[:port]` (default 1883).
fn broker_address(broker: &str) -> Result<(String, u16), MqttError> {
    let bad = || MqttError::BadAddress(broker.to_owned());
    let rest = broker
        .strip_prefix("mqtt://")
        .or_else(|| broker.strip_prefix("tcp://"))
        .unwrap_or(broker)
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Lock, also after a panic elsewhere (the counts stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pass `signal` on; false once nobody listens.
fn forward(tx: &mpsc::UnboundedSender<Signal>, signal: Signal) -> bool {
    tx.send(signal).is_ok()
}

impl Connection {
    /// Connect as `client_id` (with `credentials`, the device identity the
    /// gateway checks) and wait for the broker's CONNACK.
    async fn open(
        broker: &str,
        client_id: &str,
        credentials: Option<(&str, &str)>,
        version: MqttVersion,
        timeout: Duration,
    ) -> Result<Self, MqttError> {
        let (host, port) = broker_address(broker)?;
        let (tx, mut signals) = mpsc::unbounded_channel();
        let (client, task) = match version {
            MqttVersion::V311 => {
                let mut options = MqttOptions::new(client_id, host, port);
                options.set_keep_alive(Duration::from_secs(30));
                if let Some((user, password)) = credentials {
                    options.set_credentials(user, password);
                }
                let (client, mut eventloop) = AsyncClient::new(options, 16);
                let task = tokio::spawn(async move {
                    loop {
                        let signal = match eventloop.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => Signal::ConnAck,
                            // 3.1.1 has no negative PUBACK.
                            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                                Signal::Acked(ack.pkid, None)
                            }
                            Ok(Event::Incoming(Packet::SubAck(ack))) => Signal::SubAck(
                                ack.return_codes
                                    .iter()
                                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                                    .then(|| "refused by the broker".to_owned()),
                            ),
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                Signal::Message(p.payload.to_vec())
                            }
                            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Signal::Sent(pkid),
                            Ok(_) => continue,
                            Err(e) => {
                                if !forward(&tx, Signal::Error(e.to_string())) {
                                    return;
                                }
                                // Let the broker come back before rumqttc retries.
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                continue;
                            }
                        };
                        if !forward(&tx, signal) {
                            return;
                        }
                    }
                });
                (Client::V311(client), task)
            }
            MqttVersion::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(client_id, host, port);
                options.set_keep_alive(Duration::from_secs(30));
                if let Some((user, password)) = credentials {
                    options.set_credentials(user, password);
                }
                let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 16);
                let task = tokio::spawn(async move {
                    use rumqttc::v5::Event as Event5;
                    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as Sub5;
                    loop {
                        let signal = match eventloop.poll().await {
                            Ok(Event5::Incoming(Packet5::ConnAck(_))) => Signal::ConnAck,
                            Ok(Event5::Incoming(Packet5::PubAck(ack))) => {
                                let refused = !matches!(
                                    ack.reason,
                                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                                );
                                Signal::Acked(ack.pkid, refused.then(|| puback_reason(ack.reason)))
                            }
                            Ok(Event5::Incoming(Packet5::SubAck(ack))) => Signal::SubAck(
                                ack.return_codes
                                    .iter()
                                    .find(|c| !matches!(c, Sub5::Success(_)))
                                    .map(|c| format!("{c:?}")),
                            ),
                            Ok(Event5::Incoming(Packet5::Publish(p))) => {
                                Signal::Message(p.payload.to_vec())
                            }
                            Ok(Event5::Outgoing(Outgoing::Publish(pkid))) => Signal::Sent(pkid),
                            Ok(_) => continue,
                            Err(e) => {
                                if !forward(&tx, Signal::Error(e.to_string())) {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                continue;
                            }
                        };
                        if !forward(&tx, signal) {
                            return;
                        }
                    }
                });
                (Client::V5(client), task)
            }
        };
        let connected = tokio::time::timeout(timeout, async {
            loop {
                match signals.recv().await {
                    Some(Signal::ConnAck) => return Ok(()),
                    Some(Signal::Error(e)) => return Err(MqttError::Connect(e)),
                    Some(_) => continue,
                    None => return Err(MqttError::Connect("event loop ended".into())),
                }
            }
        })
        .await;
        let connection = Self {
            client,
            signals,
            task,
        };
        match connected {
            Ok(Ok(())) => Ok(connection),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MqttError::Connect(format!("no CONNACK within {timeout:?}"))),
        }
    }
}

/// A [`Publisher`] on a rumqttc client: QoS 1, one message in flight, each
/// resolved by its PUBACK (matched by packet id), whose MQTT 5 reason code
/// says whether it was refused.
#[derive(Debug)]
pub struct MqttPublisher {
    connection: Connection,
    timeout: Duration,
}

impl MqttPublisher {
    /// Connect as `client_id` (with `credentials`, the device identity the
    /// gateway checks) and wait for the broker's CONNACK.
    pub async fn connect(
        broker: &str,
        client_id: &str,
        credentials: Option<(&str, &str)>,
        version: MqttVersion,
        timeout: Duration,
    ) -> Result<Self, MqttError> {
        let connection = Connection::open(broker, client_id, credentials, version, timeout).await?;
        Ok(Self {
            connection,
            timeout,
        })
    }
}

impl Publisher for MqttPublisher {
    async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<Ack, String> {
        self.connection.client.publish(topic, payload).await?;
        let signals = &mut self.connection.signals;
        tokio::time::timeout(self.timeout, async {
            let mut pkid = None;
            loop {
                match signals.recv().await {
                    Some(Signal::Sent(id)) if pkid.is_none() => pkid = Some(id),
                    Some(Signal::Acked(id, refused)) if Some(id) == pkid => {
                        return Ok(refused.map_or(Ack::Accepted, Ack::Refused));
                    }
                    Some(Signal::Error(e)) => return Err(e),
                    Some(_) => continue,
                    None => return Err("MQTT event loop ended".to_owned()),
                }
            }
        })
        .await
        .map_err(|_| format!("no PUBACK within {:?}", self.timeout))?
    }
}

/// Refusals a gateway reports on a device's errors topic,
/// `{devices}/{device_id}/errors`: the only place MQTT 3.1.1, which has no
/// negative acknowledgement, can carry them.
///
/// One listener per device identity: every connection subscribed to the
/// topic hears every report, and a report does not say which message (nor
/// which connection) it is about, so the reports are counted once, here,
/// and taken out of the acknowledged count at the end. Anything else
/// publishing as the same device meanwhile is counted too; MQTT 5 has no
/// such ambiguity.
#[derive(Debug)]
pub struct ErrorReports {
    /// Reports by `error` kind.
    reports: Arc<Mutex<BTreeMap<String, u64>>>,
    /// When the last report came.
    last: Arc<Mutex<Instant>>,
    task: JoinHandle<()>,
}

impl Drop for ErrorReports {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ErrorReports {
    /// Connect as `client_id` with `credentials` and subscribe to
    /// `device_id`'s errors topic; returns once the broker granted the
    /// subscription (the gateway reports only to subscribers, so publishing
    /// should start after this).
    pub async fn listen(
        broker: &str,
        client_id: &str,
        credentials: Option<(&str, &str)>,
        device_id: &str,
        version: MqttVersion,
        timeout: Duration,
    ) -> Result<Self, MqttError> {
        let mut connection =
            Connection::open(broker, client_id, credentials, version, timeout).await?;
        let topic = TopicLayout::default().errors(device_id);
        let refused = |reason: String| MqttError::Subscribe {
            topic: topic.clone(),
            reason,
        };
        connection.client.subscribe(&topic).await.map_err(refused)?;
        let granted = tokio::time::timeout(timeout, async {
            loop {
                match connection.signals.recv().await {
                    Some(Signal::SubAck(None)) => return Ok(()),
                    Some(Signal::SubAck(Some(reason))) => return Err(reason),
                    Some(Signal::Error(e)) => return Err(e),
                    Some(_) => continue,
                    None => return Err("event loop ended".to_owned()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no SUBACK within {timeout:?}")));
        granted.map_err(refused)?;
        let reports: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let last = Arc::new(Mutex::new(Instant::now()));
        let task = tokio::spawn({
            let (reports, last) = (reports.clone(), last.clone());
            let device_id = device_id.to_owned();
            async move {
                // The connection lives (and its task runs) as long as this.
                let mut connection = connection;
                while let Some(signal) = connection.signals.recv().await {
                    let Signal::Message(payload) = signal else {
                        continue;
                    };
                    let report: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    let kind = report["error"].as_str().unwrap_or("unknown").to_owned();
                    let first = {
                        let mut r = lock(&reports);
                        let n = r.entry(kind.clone()).or_default();
                        *n += 1;
                        *n == 1
                    };
                    *lock(&last) = Instant::now();
                    if first {
                        let message = report["message"].as_str().unwrap_or_default();
                        eprintln!(
                            "MQTT device {device_id}: refused by the gateway: {kind}: {message}"
                        );
                    }
                }
            }
        });
        Ok(Self {
            reports,
            last,
            task,
        })
    }

    /// Reports heard so far, by `error` kind.
    pub fn reports(&self) -> BTreeMap<String, u64> {
        lock(&self.reports).clone()
    }

    /// Wait until no report has come for `quiet` (the gateway sends a report
    /// before the PUBACK, but on another path, so it may trail the PUBACK a
    /// little), or `max` has passed; then the reports heard.
    pub async fn settle(&self, quiet: Duration, max: Duration) -> BTreeMap<String, u64> {
        let start = Instant::now();
        loop {
            let last = *lock(&self.last);
            let now = Instant::now();
            let quiet_since = last.max(start);
            if now.duration_since(quiet_since) >= quiet || now.duration_since(start) >= max {
                return self.reports();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::Journey;
    use emotion_core::reading::RawReading;

    struct Collect(Vec<(String, Vec<u8>)>);

    impl Publisher for Collect {
        async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<Ack, String> {
            self.0.push((topic.to_owned(), payload));
            Ok(Ack::Accepted)
        }
    }

    /// Refuses every other message, as a gateway might (e.g. over a rate
    /// limit).
    struct RefuseEveryOther(u64);

    impl Publisher for RefuseEveryOther {
        async fn publish(&mut self, _: &str, _: Vec<u8>) -> Result<Ack, String> {
            self.0 += 1;
            Ok(if self.0.is_multiple_of(2) {
                Ack::Refused(puback_reason(PubAckReason::QuotaExceeded))
            } else {
                Ack::Accepted
            })
        }
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(
            broker_address("mqtt://127.0.0.1:1884").expect("ok"),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            broker_address("broker").expect("ok"),
            ("broker".into(), 1883)
        );
        assert!(broker_address("mqtt://:1").is_err());
        assert!(broker_address("h:notaport").is_err());
    }

    #[tokio::test]
    async fn devices_publish_valid_readings_to_their_topics() {
        let script = Script::new(Journey::CalmStressRecovery, Duration::from_secs(60));
        for (i, kind) in [MqttKind::Facial, MqttKind::Voice, MqttKind::Text]
            .into_iter()
            .enumerate()
        {
            let mut d = MqttDevice::new(format!("dev-{i}"), "42", kind, script, 5);
            let mut sink = Collect(Vec::new());
            let published = publish_for(
                &mut d,
                &mut sink,
                60.0,
                10.0,
                1000.0,
                &CancellationToken::new(),
            )
            .await;
            assert_eq!(
                published,
                Published {
                    acknowledged: 6,
                    ..Published::default()
                }
            );
            for (topic, payload) in &sink.0 {
                assert_eq!(
                    topic,
                    &format!("sensors/dev-{i}/{}", kind.source().as_str())
                );
                let text = String::from_utf8(payload.clone()).expect("utf-8");
                let r = RawReading::from_json_str(&text, None);
                assert!(r.is_ok(), "{text}: {r:?}");
            }
        }
    }

    #[tokio::test]
    async fn refusals_are_counted_with_their_reason_not_as_acknowledged() {
        let script = Script::new(Journey::Stable, Duration::from_secs(60));
        let mut d = MqttDevice::new("dev", "42", MqttKind::Text, script, 5);
        let published = publish_for(
            &mut d,
            &mut RefuseEveryOther(0),
            60.0,
            10.0,
            1000.0,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(published.acknowledged, 3);
        assert_eq!(
            published.refused,
            BTreeMap::from([("quota exceeded (0x97)".to_owned(), 3)])
        );
        assert_eq!(published.failed, 0);
    }

    #[test]
    fn versions_and_reason_codes_have_names() {
        assert_eq!("5".parse::<MqttVersion>().ok(), Some(MqttVersion::V5));
        assert_eq!("mqttv5".parse::<MqttVersion>().ok(), Some(MqttVersion::V5));
        for v in ["3.1.1", "311", "mqttv311"] {
            assert_eq!(
                v.parse::<MqttVersion>().ok(),
                Some(MqttVersion::V311),
                "{v}"
            );
        }
        assert!("3".parse::<MqttVersion>().is_err());
        assert_eq!(MqttVersion::default(), MqttVersion::V5);
        assert_eq!(
            puback_reason(PubAckReason::NotAuthorized),
            "not authorized (0x87)"
        );
        assert_eq!(
            puback_reason(PubAckReason::PayloadFormatInvalid),
            "payload format invalid (0x99)"
        );
    }
}
