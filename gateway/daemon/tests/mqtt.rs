//! In-process tests of the MQTT transport (the `emotion-mqtt` crate) in the
//! gateway: a real gateway (`app::start`, its buffer in a temporary
//! directory) with the MQTT transport started beside it on free ports, driven
//! by rumqttc clients speaking MQTT 3.1.1 and 5.
#![cfg(feature = "mqtt")]

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use emotion_gateway::app::{self, Running};
use emotion_gateway::config::Config;
use emotion_gateway::config::mqtt::{DeviceCredential, MqttConfig};
use emotion_gateway::mqtt::{MqttHandle, derive_event_id, start};

const TOKEN_A: &str = "token-of-device-a-0123";
const TOKEN_B: &str = "token-of-device-b-0123";
const TOKEN_C: &str = "token-of-device-c-0123";

/// A gateway with its MQTT transport.
struct Gw {
    pub running: Option<Running>,
    pub mqtt: Option<MqttHandle>,
    pub v4: u16,
    pub v5: u16,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn stop(mut self) {
        if let Some(m) = self.mqtt.take() {
            m.shutdown().await;
        }
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// The running gateway's buffer (all these tests read of it).
    fn store(&self) -> &std::sync::Arc<dyn emotion_gateway::buffer::EventStore> {
        &self.running.as_ref().expect("running").state.store
    }

    fn status(&self) -> Value {
        emotion_gateway::mqtt::status(self.mqtt.as_ref().expect("mqtt"))
    }

    fn stored(&self, id: &uuid::Uuid) -> bool {
        self.store().contains(id)
    }

    async fn user_events(&self, user: &str) -> Vec<emotion_core::EmotionEvent> {
        let store = self.store().clone();
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || {
            store
                .user_events(
                    &user,
                    &emotion_gateway::buffer::EventQuery {
                        limit: 1_000_000,
                        ..Default::default()
                    },
                )
                .expect("query")
        })
        .await
        .expect("join")
    }
}

fn devices() -> Vec<DeviceCredential> {
    vec![
        DeviceCredential {
            device_id: "dev-a".into(),
            token: TOKEN_A.into(),
            token_sha256: String::new(),
            user_id: Some("1".into()),
        },
        DeviceCredential {
            device_id: "dev-b".into(),
            token: TOKEN_B.into(),
            token_sha256: String::new(),
            user_id: Some("2".into()),
        },
        DeviceCredential {
            device_id: "dev-c".into(),
            token: TOKEN_C.into(),
            token_sha256: String::new(),
            user_id: None,
        },
    ]
}

fn test_config() -> MqttConfig {
    let mut c = MqttConfig {
        listen_v4: "127.0.0.1:0".into(),
        listen_v5: "127.0.0.1:0".into(),
        devices: devices(),
        ..MqttConfig::default()
    };
    c.limits.max_payload_bytes = 4096;
    c
}

/// A gateway on a temporary buffer. The transport this module is wired into
/// (once `[mqtt]` is part of the configuration) is turned off there, and
/// started here with `cfg`.
async fn gateway(cfg: MqttConfig) -> Gw {
    gateway_in(tempfile::tempdir().expect("tmp"), cfg).await
}

/// A gateway on the buffer in `dir` (kept across restarts by the caller).
async fn gateway_in(dir: tempfile::TempDir, cfg: MqttConfig) -> Gw {
    let mut env = vec![
        (
            "EMOTION_GATEWAY__STORAGE__PATH".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        (
            "EMOTION_GATEWAY__PLUGINS__DIR".to_owned(),
            dir.path().join("no-plugins").display().to_string(),
        ),
        (
            "EMOTION_GATEWAY__HTTP__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
    ];
    // The configured transport is off; the test starts its own with `cfg`.
    env.push(("EMOTION_GATEWAY__MQTT__ENABLED".into(), "false".into()));
    let config = Config::load(None, env).expect("config");
    let running = app::start(config).await.expect("gateway starts");
    let mqtt = start(cfg, app::mqtt_handles(&running.state))
        .await
        .expect("mqtt starts");
    let port = |key: &str| {
        mqtt.listeners()
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.addr.port())
            .unwrap_or(0)
    };
    let (v4, v5) = (port("mqtt.listen_v4"), port("mqtt.listen_v5"));
    Gw {
        running: Some(running),
        mqtt: Some(mqtt),
        v4,
        v5,
        _dir: dir,
    }
}

/// An MQTT 3.1.1 device client; its events arrive on `rx`.
struct Dev {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Event, String>>,
    /// Events skipped by `wait`, looked at first by the next one.
    backlog: std::collections::VecDeque<Event>,
}

fn drive(mut eventloop: EventLoop) -> mpsc::UnboundedReceiver<Result<Event, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let stop = ev.is_err();
            if tx.send(ev.map_err(|e| e.to_string())).is_err() || stop {
                break;
            }
        }
    });
    rx
}

impl Dev {
    async fn connect(port: u16, client_id: &str, user: &str, pass: &str) -> Result<Dev, String> {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_credentials(user, pass);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, eventloop) = AsyncClient::new(o, 1000);
        let mut dev = Dev {
            client,
            rx: drive(eventloop),
            backlog: Default::default(),
        };
        match dev
            .wait(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
            .await
        {
            Ok(_) => Ok(dev),
            Err(e) => Err(e),
        }
    }

    /// The next event matching `f` (others skipped), within 10 s.
    async fn wait(&mut self, f: impl Fn(&Event) -> bool) -> Result<Event, String> {
        if let Some(i) = self.backlog.iter().position(&f) {
            return self.backlog.remove(i).ok_or_else(|| "backlog".to_owned());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Err("timed out".into()),
                Ok(None) => return Err("event loop ended".into()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(ev))) if f(&ev) => return Ok(ev),
                Ok(Some(Ok(ev))) => {
                    if self.backlog.len() < 10_000 {
                        self.backlog.push_back(ev);
                    }
                }
            }
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, payload: &Value) {
        self.publish_bytes(topic, qos, payload.to_string().into_bytes())
            .await;
    }

    async fn publish_bytes(&mut self, topic: &str, qos: QoS, payload: Vec<u8>) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .expect("publish queued");
        if qos == QoS::AtLeastOnce {
            self.wait(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
                .await
                .expect("puback");
        }
    }

    async fn subscribe(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        match self
            .wait(|e| matches!(e, Event::Incoming(Packet::SubAck(_))))
            .await
        {
            Ok(Event::Incoming(Packet::SubAck(s))) => s.return_codes,
            other => panic!("no suback: {other:?}"),
        }
    }

    /// The next error report about messages on `about`.
    async fn error_about(&mut self, errors: &str, about: &str) -> Value {
        loop {
            let e = self.message(errors).await;
            if e["topic"] == about {
                return e;
            }
        }
    }

    /// The next message on `topic`, as JSON.
    async fn message(&mut self, topic: &str) -> Value {
        match self
            .wait(|e| matches!(e, Event::Incoming(Packet::Publish(p)) if p.topic == topic))
            .await
        {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                serde_json::from_slice(&p.payload).expect("JSON message")
            }
            other => panic!("no message on {topic}: {other:?}"),
        }
    }
}

fn event(valence: f64, arousal: f64, seq: u64) -> Value {
    json!({"source": "voice", "valence": valence, "arousal": arousal, "confidence": 0.8,
           "timestamp": chrono::Utc::now().to_rfc3339(), "context": {"seq": seq}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_events_are_stored_once_and_acknowledged_after_they_are_durable() {
    let gw = gateway(test_config()).await;
    let mut dev = Dev::connect(gw.v4, "a-1", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    let body = event(0.4, 0.3, 1);
    let topic = "emotions/1/events";
    dev.publish(topic, QoS::AtLeastOnce, &body).await;
    // The PUBACK came after the flush: the event is there now.
    let id = derive_event_id("device:dev-a", topic, body.to_string().as_bytes());
    assert!(gw.stored(&id), "stored under the derived id");
    // The same message again (a redelivery) is stored once.
    dev.publish(topic, QoS::AtLeastOnce, &body).await;
    let events = gw.user_events("1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, id);
    assert_eq!(events[0].producer, "client");
    // An event with its own id keeps it; QoS 0 gets a fresh one.
    let own = uuid::Uuid::now_v7();
    let mut with_id = event(0.1, 0.2, 2);
    with_id["event_id"] = json!(own);
    dev.publish(topic, QoS::AtLeastOnce, &with_id).await;
    assert!(gw.stored(&own));
    // A null id is no id: the derived one is used.
    let mut null_id = event(0.1, 0.2, 5);
    null_id["event_id"] = serde_json::Value::Null;
    dev.publish(topic, QoS::AtLeastOnce, &null_id).await;
    let derived = derive_event_id("device:dev-a", topic, null_id.to_string().as_bytes());
    assert!(gw.stored(&derived), "a null event_id takes the derived id");
    dev.publish(topic, QoS::AtMostOnce, &event(0.1, 0.2, 3))
        .await;
    dev.publish(topic, QoS::AtLeastOnce, &event(0.1, 0.2, 4))
        .await;
    let events = gw.user_events("1").await;
    assert_eq!(
        events.len(),
        5,
        "QoS 0 message stored before the next QoS 1 was acknowledged"
    );
    assert!(events.iter().all(|e| !e.event_id.is_nil()), "{events:?}");
    // One session for the device's events (they named none).
    assert!(events.iter().all(|e| e.session_id == events[0].session_id));
    let s = gw.status();
    assert_eq!(s["messages"]["stored"], 5, "{s}");
    assert_eq!(s["messages"]["duplicates"], 1, "{s}");
    assert_eq!(s["devices"]["dev-a"]["stored"], 5, "{s}");
    assert_eq!(s["embedded"]["connected_clients"], 1, "{s}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_and_alerts_reach_the_bound_device() {
    let gw = gateway(test_config()).await;
    let mut dev = Dev::connect(gw.v4, "a-2", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    let codes = dev.subscribe("emotions/1/analysis").await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let codes = dev.subscribe("alerts/1").await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    for seq in 0..3 {
        dev.publish(
            "emotions/1/events",
            QoS::AtLeastOnce,
            &event(-0.7, 0.9, seq),
        )
        .await;
    }
    let first = dev.message("emotions/1/analysis").await;
    assert_eq!(first["status"], "processed");
    assert_eq!(first["analysis"]["analysis"], "insufficient_data");
    assert_eq!(first["metrics"]["event_count"], 1);
    let second = dev.message("emotions/1/analysis").await;
    assert_eq!(second["metrics"]["event_count"], 2);
    assert!(
        second["analysis"]["patterns"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("high_stress")))
    );
    let alert = dev.message("alerts/1").await;
    assert_eq!(alert["kind"], "high_stress", "{alert}");
    assert_eq!(alert["user_id"], "1");
    // Debounced: the later stressed events raise no second alert.
    let _third = dev.message("emotions/1/analysis").await;
    let s = gw.status();
    assert_eq!(s["results"]["alerts"], 1, "{s}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_estimates_reach_the_bound_device_once_two_sources_report() {
    let gw = gateway(test_config()).await;
    let mut dev = Dev::connect(gw.v4, "a-f", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    let codes = dev.subscribe("emotions/1/fused").await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // Voice alone makes no estimate; a facial event beside it does.
    dev.publish("emotions/1/events", QoS::AtLeastOnce, &event(0.5, 0.6, 1))
        .await;
    let mut facial = event(0.7, 0.4, 2);
    facial["source"] = json!("facial");
    facial["confidence"] = json!(0.9);
    dev.publish("emotions/1/events", QoS::AtLeastOnce, &facial)
        .await;
    let fused = dev.message("emotions/1/fused").await;
    assert_eq!(fused["user_id"], "1", "{fused}");
    let sources: Vec<&str> = fused["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(sources, ["voice", "facial"], "{fused}");
    let v = fused["valence"].as_f64().expect("valence");
    assert!(
        v > 0.5 && v < 0.7,
        "between the two, nearer the face: {fused}"
    );
    // The counter moves just after the hand-off to the broker, so the device
    // may hold the message first: wait for it rather than read it at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.status()["results"]["fused"] != 1 {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() {
    let gw = gateway(test_config()).await;
    for (user, pass) in [("dev-a", TOKEN_B), ("nobody", TOKEN_A), ("dev-a", "")] {
        let e = Dev::connect(gw.v4, "x", user, pass)
            .await
            .err()
            .expect("refused");
        assert!(e.contains("BadUserNamePassword"), "{user}: {e}");
    }
    // Without credentials at all.
    let (_c, eventloop) = AsyncClient::new(MqttOptions::new("anon", "127.0.0.1", gw.v4), 10);
    let mut rx = drive(eventloop);
    let e = rx.recv().await.expect("event").expect_err("refused");
    assert!(e.contains("BadUserNamePassword"), "{e}");
    assert_eq!(gw.status()["embedded"]["refused"]["bad_credentials"], 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_cannot_publish_or_read_outside_their_topics() {
    let gw = gateway(test_config()).await;
    let mut a = Dev::connect(gw.v4, "a-3", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    assert_eq!(
        a.subscribe("devices/dev-a/errors").await,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    for denied in [
        "emotions/2/analysis",
        "alerts/2",
        "emotions/+/analysis",
        "#",
        "devices/dev-b/errors",
    ] {
        assert_eq!(
            a.subscribe(denied).await,
            [rumqttc::SubscribeReasonCode::Failure],
            "{denied}"
        );
    }
    // Another device's sensor topic, another user's events topic.
    a.publish("emotions/2/events", QoS::AtLeastOnce, &event(0.1, 0.1, 1))
        .await;
    let err = a
        .error_about("devices/dev-a/errors", "emotions/2/events")
        .await;
    assert_eq!(err["error"], "not_authorized", "{err}");
    assert_eq!(err["topic"], "emotions/2/events");
    a.publish(
        "sensors/dev-b/survey",
        QoS::AtLeastOnce,
        &json!({"payload": {"json": {"sam_valence": 5}}}),
    )
    .await;
    let err = a
        .error_about("devices/dev-a/errors", "sensors/dev-b/survey")
        .await;
    assert_eq!(err["error"], "not_authorized", "{err}");
    assert!(gw.user_events("2").await.is_empty());
    // A bound device's reading for another user is refused too.
    a.publish(
        "sensors/dev-a/survey",
        QoS::AtLeastOnce,
        &json!({"user_id": "2", "payload": {"json": {"sam_valence": 5}}}),
    )
    .await;
    let err = a
        .error_about("devices/dev-a/errors", "sensors/dev-a/survey")
        .await;
    assert_eq!(err["error"], "validation_error", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("user_id"))
    );
    // The connection is still up: a good event goes through.
    a.publish("emotions/1/events", QoS::AtLeastOnce, &event(0.1, 0.1, 2))
        .await;
    assert_eq!(gw.user_events("1").await.len(), 1);
    let s = gw.status();
    assert_eq!(s["messages"]["rejected"]["not_authorized"], 2, "{s}");
    assert_eq!(s["embedded"]["subscriptions_denied"], 5, "{s}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dropped_reported_and_the_connection_stays_up() {
    let gw = gateway(test_config()).await;
    let mut a = Dev::connect(gw.v4, "a-4", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    a.subscribe("devices/dev-a/errors").await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("emotions/1/events", b"{not json".to_vec(), "invalid_json"),
        ("emotions/1/events", b"[1,2,3]".to_vec(), "invalid_json"),
        (
            "emotions/1/events",
            json!({"source": "voice", "valence": 3.0, "arousal": 0.5})
                .to_string()
                .into_bytes(),
            "validation_error",
        ),
        (
            "emotions/1/events",
            json!({"source": "voice", "valence": "NaN", "arousal": 0.5})
                .to_string()
                .into_bytes(),
            "validation_error",
        ),
        (
            "sensors/dev-a/telepathy",
            json!({"payload": {"json": {}}}).to_string().into_bytes(),
            "unknown_source",
        ),
        (
            "sensors/dev-a/survey",
            json!({"source": "text", "payload": {"json": {}}})
                .to_string()
                .into_bytes(),
            "validation_error",
        ),
        // No plugin is loaded in this gateway.
        (
            "sensors/dev-a/survey",
            json!({"payload": {"json": {"sam_valence": 5}}})
                .to_string()
                .into_bytes(),
            "plugin_error",
        ),
        ("emotions/1/events", vec![b' '; 5000], "too_large"),
        // Larger than the packet limit itself: skipped without buffering.
        ("emotions/1/events", vec![b' '; 200_000], "too_large"),
    ];
    for (topic, payload, kind) in &cases {
        a.publish_bytes(topic, QoS::AtLeastOnce, payload.clone())
            .await;
        let err = a.message("devices/dev-a/errors").await;
        assert_eq!(err["error"], *kind, "{topic}: {err}");
        assert_eq!(err["topic"], *topic);
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let err_valence = {
        a.publish(
            "emotions/1/events",
            QoS::AtLeastOnce,
            &json!({"source": "voice", "valence": 3.0, "arousal": 0.5}),
        )
        .await;
        a.message("devices/dev-a/errors").await
    };
    assert_eq!(
        err_valence["fields"][0]["field"], "valence",
        "{err_valence}"
    );
    a.publish("emotions/1/events", QoS::AtLeastOnce, &event(0.2, 0.2, 9))
        .await;
    assert_eq!(gw.user_events("1").await.len(), 1);
    let s = gw.status();
    let r = &s["messages"]["rejected"];
    assert_eq!(r["invalid_json"], 2, "{s}");
    assert_eq!(r["validation_error"], 4, "{s}");
    assert_eq!(r["unknown_source"], 1, "{s}");
    assert_eq!(r["too_large"], 2, "{s}");
    assert_eq!(r["plugin_error"], 1, "{s}");
    assert_eq!(s["embedded"]["protocol_errors"], 0, "{s}");
    gw.stop().await;
}

/// MQTT 5: the reason codes tell the device what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_reason_codes() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, SubscribeReasonCode};
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};
    let gw = gateway(test_config()).await;
    let mut o = O5::new("a-5", "127.0.0.1", gw.v5);
    o.set_credentials("dev-a", TOKEN_A);
    let (client, mut el) = C5::new(o, 100);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let mut next = async |f: &dyn Fn(&E5) -> bool| loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("event");
        if f(&ev) {
            return ev;
        }
    };
    next(&|e| matches!(e, E5::Incoming(P5::ConnAck(_)))).await;
    client
        .subscribe("emotions/2/analysis", Q5::AtLeastOnce)
        .await
        .expect("sub");
    match next(&|e| matches!(e, E5::Incoming(P5::SubAck(_)))).await {
        E5::Incoming(P5::SubAck(s)) => {
            assert_eq!(s.return_codes, [SubscribeReasonCode::NotAuthorized])
        }
        _ => unreachable!(),
    }
    let mut puback = async |topic: &str, payload: Vec<u8>| {
        client
            .publish(topic, Q5::AtLeastOnce, false, payload)
            .await
            .expect("pub");
        match next(&|e| matches!(e, E5::Incoming(P5::PubAck(_)))).await {
            E5::Incoming(P5::PubAck(a)) => a.reason,
            _ => unreachable!(),
        }
    };
    assert_eq!(
        puback(
            "emotions/1/events",
            event(0.3, 0.3, 1).to_string().into_bytes()
        )
        .await,
        PubAckReason::Success
    );
    assert_eq!(
        puback(
            "emotions/2/events",
            event(0.3, 0.3, 2).to_string().into_bytes()
        )
        .await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        puback("emotions/1/events", b"nope".to_vec()).await,
        PubAckReason::PayloadFormatInvalid
    );
    assert_eq!(gw.user_events("1").await.len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_protocol_version_is_refused_per_listener() {
    let gw = gateway(test_config()).await;
    // A 3.1.1 client on the MQTT 5 listener.
    let e = Dev::connect(gw.v5, "a-6", "dev-a", TOKEN_A)
        .await
        .err()
        .expect("refused");
    assert!(
        e.contains("Refused") || e.contains("Protocol") || e.contains("refused"),
        "{e}"
    );
    assert_eq!(gw.status()["embedded"]["connected_clients"], 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publish_is_received_once_durable() {
    let gw = gateway(test_config()).await;
    let mut a = Dev::connect(gw.v4, "a-7", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    let body = event(0.5, 0.5, 1);
    a.client
        .publish(
            "emotions/1/events",
            QoS::ExactlyOnce,
            false,
            body.to_string(),
        )
        .await
        .expect("pub");
    a.wait(|e| matches!(e, Event::Incoming(Packet::PubComp(_))))
        .await
        .expect("pubcomp");
    let id = derive_event_id(
        "device:dev-a",
        "emotions/1/events",
        body.to_string().as_bytes(),
    );
    assert!(gw.stored(&id));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let gw = gateway(test_config()).await;
    let mut first = Dev::connect(gw.v4, "same", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    let _second = Dev::connect(gw.v4, "same", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    let ended = first.wait(|_| false).await.expect_err("first is closed");
    assert!(!ended.contains("timed out"), "{ended}");
    // Another device with the same client id is a different session.
    let _b = Dev::connect(gw.v4, "same", "dev-b", TOKEN_B)
        .await
        .expect("connect");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_get_results_published_while_away() {
    let gw = gateway(test_config()).await;
    let connect = |clean: bool| {
        let port = gw.v4;
        async move {
            let mut o = MqttOptions::new("a-persist", "127.0.0.1", port);
            o.set_credentials("dev-a", TOKEN_A);
            o.set_clean_session(clean);
            let (client, eventloop) = AsyncClient::new(o, 100);
            let mut d = Dev {
                client,
                rx: drive(eventloop),
                backlog: Default::default(),
            };
            d.wait(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
                .await
                .expect("connack");
            d
        }
    };
    let mut a = connect(false).await;
    a.subscribe("emotions/1/analysis").await;
    a.client.disconnect().await.expect("disconnect");
    let _ = a.wait(|_| false).await;
    // While it is away, another device of the same user publishes.
    let mut other = Dev::connect(gw.v4, "a-other", "dev-a", TOKEN_A)
        .await
        .expect("connect");
    other
        .publish("emotions/1/events", QoS::AtLeastOnce, &event(0.2, 0.2, 1))
        .await;
    let mut back = connect(false).await;
    let m = back.message("emotions/1/analysis").await;
    assert_eq!(m["metrics"]["event_count"], 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_start_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let mut cfg = test_config();
    cfg.listen_v5 = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tmp");
    let mut env = vec![
        (
            "EMOTION_GATEWAY__STORAGE__PATH".to_owned(),
            dir.path().display().to_string(),
        ),
        (
            "EMOTION_GATEWAY__PLUGINS__DIR".to_owned(),
            dir.path().join("no-plugins").display().to_string(),
        ),
        (
            "EMOTION_GATEWAY__HTTP__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
    ];
    // The configured transport is off; the test starts its own with `cfg`.
    env.push(("EMOTION_GATEWAY__MQTT__ENABLED".into(), "false".into()));
    let running = app::start(Config::load(None, env).expect("config"))
        .await
        .expect("start");
    let e = start(cfg, app::mqtt_handles(&running.state))
        .await
        .expect_err("bind fails");
    let msg = e.to_string();
    assert!(
        msg.contains("mqtt.listen_v5") && msg.contains(&port.to_string()),
        "{msg}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_devices_at_once_under_a_small_in_flight_bound() {
    let mut cfg = test_config();
    cfg.limits.max_in_flight_per_connection = 2;
    cfg.devices = (0..20)
        .map(|i| DeviceCredential {
            device_id: format!("d{i}"),
            token: format!("token-of-device-{i}-0123456"),
            token_sha256: String::new(),
            user_id: Some(format!("u{i}")),
        })
        .collect();
    let gw = Arc::new(gateway(cfg).await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let port = gw.v4;
        tasks.push(tokio::spawn(async move {
            let mut d = Dev::connect(
                port,
                &format!("c{i}"),
                &format!("d{i}"),
                &format!("token-of-device-{i}-0123456"),
            )
            .await
            .expect("connect");
            for seq in 0..50 {
                d.client
                    .publish(
                        format!("emotions/u{i}/events"),
                        QoS::AtLeastOnce,
                        false,
                        event(0.1, 0.1, seq).to_string(),
                    )
                    .await
                    .expect("pub");
            }
            let mut acks = 0;
            while acks < 50 {
                d.wait(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
                    .await
                    .expect("ack");
                acks += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("device");
    }
    for i in 0..20 {
        assert_eq!(gw.user_events(&format!("u{i}")).await.len(), 50);
    }
    let gw = Arc::into_inner(gw).expect("sole owner");
    gw.stop().await;
}

/// A private Mosquitto on a free port, with a persistent store and no limit
/// on queued messages (the packaged default, 1000, would drop messages queued
/// for an offline gateway). Fails loudly when Mosquitto is not installed.
struct Mosquitto {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto() -> Mosquitto {
    let bin = [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("mosquitto is not installed: run scripts/install-mqtt-test-deps.sh");
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 100\n",
            dir.path().display()
        ),
    )
    .expect("conf");
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto {
        port,
        child,
        _dir: dir,
    }
}

fn upstream_config(port: u16, client_id: &str) -> MqttConfig {
    let mut c = test_config();
    c.enabled = false;
    c.upstream.enabled = true;
    c.upstream.port = port;
    c.upstream.client_id = client_id.into();
    c.upstream.reconnect_initial = emotion_gateway::config::Dur(Duration::from_millis(100));
    c.upstream.reconnect_max = emotion_gateway::config::Dur(Duration::from_millis(500));
    c
}

/// Publish `events` QoS 1 events for user `up` (each with its sequence
/// number, no event_id: the gateway derives it) from a plain client.
async fn publish_upstream(port: u16, from: u64, to: u64) {
    let mut o = MqttOptions::new(format!("pub-{from}"), "127.0.0.1", port);
    o.set_inflight(200);
    let (client, eventloop) = AsyncClient::new(o, 1000);
    let mut rx = drive(eventloop);
    let publisher = tokio::spawn(async move {
        for seq in from..to {
            let body = json!({"source": "text", "valence": 0.1, "arousal": 0.2, "session_id": "s-up",
                              "timestamp": "2026-01-01T00:00:00Z", "context": {"seq": seq}});
            client
                .publish(
                    "emotions/up/events",
                    QoS::AtLeastOnce,
                    false,
                    body.to_string(),
                )
                .await
                .expect("queued");
        }
        client
    });
    let mut acks = 0;
    while acks < to - from {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Ok(Event::Incoming(Packet::PubAck(_))))) => acks += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("publisher: {other:?}"),
        }
    }
    let _client = publisher.await.expect("publisher");
}

async fn wait_stored(gw: &Gw, user: &str, n: usize) -> Vec<emotion_core::EmotionEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let evs = gw.user_events(user).await;
        if evs.len() >= n || tokio::time::Instant::now() > deadline {
            return evs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_consumes_with_manual_acks_and_a_persistent_session() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_owned();
    let gw = gateway_in(dir, upstream_config(broker.port, "gw-up-1")).await;
    // Messages published before the very first subscription are nobody's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.status()["upstream"]["subscribed"] != true {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_upstream(broker.port, 0, 500).await;
    let evs = wait_stored(&gw, "up", 500).await;
    assert_eq!(evs.len(), 500);
    // The ack follows the store: wait for it rather than read it at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.status()["upstream"]["acked"] != 500 {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = gw.status();
    assert_eq!(s["upstream"]["state"], "connected", "{s}");
    assert_eq!(s["upstream"]["acked"], 500, "{s}");
    // Down: the broker queues for the persistent session.
    let Gw {
        running,
        mqtt,
        _dir,
        ..
    } = gw;
    if let Some(m) = mqtt {
        m.shutdown().await;
    }
    if let Some(r) = running {
        r.shutdown().await;
    }
    publish_upstream(broker.port, 500, 1500).await;
    let gw = gateway_in(_dir, upstream_config(broker.port, "gw-up-1")).await;
    let evs = wait_stored(&gw, "up", 1500).await;
    let mut seqs: Vec<u64> = evs
        .iter()
        .filter_map(|e| e.context.as_ref()?.value().get("seq")?.as_u64())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..1500).collect::<Vec<_>>(), "each exactly once");
    assert!(data.exists());
    let s = gw.status();
    assert_eq!(s["upstream"]["sessions_resumed"], 1, "{s}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_rate_gets_quota_exceeded_and_a_report() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
    use rumqttc::v5::{AsyncClient as C5, Event as E5, MqttOptions as O5};
    let mut cfg = test_config();
    // A rate so low that the refill during the test is at most one message.
    cfg.limits.device_rate_per_second = 0.1;
    cfg.limits.device_rate_burst = 5.0;
    let gw = gateway(cfg).await;

    // MQTT 5: 10 QoS 1 publishes in a row; 5 are stored (the burst), the
    // rest acknowledged with 0x97 (quota exceeded) and not stored.
    let mut o = O5::new("a-5", "127.0.0.1", gw.v5);
    o.set_credentials("dev-a", TOKEN_A);
    let (client, mut el) = C5::new(o, 100);
    for i in 0..10 {
        client
            .publish(
                "emotions/1/events",
                Q5::AtLeastOnce,
                false,
                event(0.1, 0.2, i).to_string(),
            )
            .await
            .expect("publish");
    }
    let mut reasons = Vec::new();
    while reasons.len() < 10 {
        let ev = tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .expect("in time")
            .expect("event");
        if let E5::Incoming(P5::PubAck(a)) = ev {
            reasons.push(a.reason);
        }
    }
    let ok = reasons
        .iter()
        .filter(|r| **r == PubAckReason::Success)
        .count();
    let quota = reasons
        .iter()
        .filter(|r| **r == PubAckReason::QuotaExceeded)
        .count();
    assert!((5..=6).contains(&ok), "{reasons:?}");
    assert_eq!(ok + quota, 10, "{reasons:?}");
    assert_eq!(gw.user_events("1").await.len(), ok);

    // MQTT 3.1.1 has no negative acknowledgement: the refusal is reported on
    // the device's errors topic, and counted.
    let mut d = Dev::connect(gw.v4, "b-4", "dev-b", TOKEN_B)
        .await
        .expect("connect");
    d.subscribe("devices/dev-b/errors").await;
    for i in 0..7 {
        d.publish(
            "emotions/2/events",
            QoS::AtLeastOnce,
            &event(0.1, 0.2, 100 + i),
        )
        .await;
    }
    let report = loop {
        let e = d
            .error_about("devices/dev-b/errors", "emotions/2/events")
            .await;
        if e.to_string().contains("rate_limited") {
            break e;
        }
    };
    assert!(
        report.to_string().contains("device_rate_per_second"),
        "{report}"
    );
    let status = gw.status();
    assert!(
        status.to_string().contains("rate_limited"),
        "rejections by kind in the status: {status}"
    );
    // And in /metrics.
    let metrics = api_get(&gw, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("emotion_gateway_mqtt_rejected_total{kind=\"rate_limited\"}")),
        "{metrics}"
    );
    gw.stop().await;
}

/// `GET path` on the gateway's API with an admin token, over a raw
/// connection (the crate's tests have no HTTP client).
async fn api_get(gw: &Gw, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.running.as_ref().expect("running").addr;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nx-auth-token: dev-token-change-me\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}
