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
//!   waiting for PUBACK before counting a reading acknowledged);
//! - [`publish_for`] drives a device through a publisher at a given pace.
//!
//! [`MqttPublisher`] implements [`Publisher`] on rumqttc (plain TCP, QoS 1,
//! each message counted once its PUBACK arrives); `firmware-sim --mqtt URL`
//! runs one MQTT device per simulated user beside its WebSocket client,
//! counted under the `mqtt` transport.

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

/// A message sink (an MQTT client, or a test double).
pub trait Publisher: Send {
    /// Publish one message; resolves once the broker has acknowledged it.
    fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> + Send;
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

/// Publish `device`'s readings every `interval_s` simulated seconds for
/// `duration_s`, at `speed`×; returns (published, failed).
pub async fn publish_for<P: Publisher>(
    device: &mut MqttDevice,
    publisher: &mut P,
    duration_s: f64,
    interval_s: f64,
    speed: f64,
    cancel: &CancellationToken,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
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
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
        t += interval;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(crate::secs(interval / speed)) => {}
        }
    }
    (ok, failed)
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("bad broker address {0:?} (expected mqtt://HOST:PORT or HOST:PORT)")]
    BadAddress(String),
    #[error("connecting to the broker: {0}")]
    Connect(String),
}

/// What the event-loop task reports.
#[derive(Debug)]
enum Signal {
    ConnAck,
    /// A publish went out with this packet id.
    Sent(u16),
    Acked(u16),
    Error(String),
}

/// A [`Publisher`] on a rumqttc client: QoS 1, one message in flight, each
/// resolved by its PUBACK (matched by packet id). rumqttc reconnects by
/// itself on the next poll after an error.
#[derive(Debug)]
pub struct MqttPublisher {
    client: AsyncClient,
    signals: mpsc::UnboundedReceiver<Signal>,
    task: JoinHandle<()>,
    timeout: Duration,
}

impl Drop for MqttPublisher {
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

impl MqttPublisher {
    /// Connect as `client_id` (with `credentials`, the device identity the
    /// gateway checks) and wait for the broker's CONNACK.
    pub async fn connect(
        broker: &str,
        client_id: &str,
        credentials: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Result<Self, MqttError> {
        let (host, port) = broker_address(broker)?;
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, mut signals) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let signal = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Signal::ConnAck,
                    Ok(Event::Incoming(Packet::PubAck(ack))) => Signal::Acked(ack.pkid),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Signal::Sent(pkid),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Signal::Error(e.to_string()));
                        // Let the broker come back before rumqttc retries.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if tx.send(signal).is_err() {
                    return;
                }
            }
        });
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
        let publisher = Self {
            client,
            signals,
            task,
            timeout,
        };
        match connected {
            Ok(Ok(())) => Ok(publisher),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MqttError::Connect(format!("no CONNACK within {timeout:?}"))),
        }
    }
}

impl Publisher for MqttPublisher {
    async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())?;
        let signals = &mut self.signals;
        tokio::time::timeout(self.timeout, async {
            let mut pkid = None;
            loop {
                match signals.recv().await {
                    Some(Signal::Sent(id)) if pkid.is_none() => pkid = Some(id),
                    Some(Signal::Acked(id)) if Some(id) == pkid => return Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::Journey;
    use emotion_core::reading::RawReading;

    struct Collect(Vec<(String, Vec<u8>)>);

    impl Publisher for Collect {
        async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
            self.0.push((topic.to_owned(), payload));
            Ok(())
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
            let (ok, failed) = publish_for(
                &mut d,
                &mut sink,
                60.0,
                10.0,
                1000.0,
                &CancellationToken::new(),
            )
            .await;
            assert_eq!((ok, failed), (6, 0));
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
}
