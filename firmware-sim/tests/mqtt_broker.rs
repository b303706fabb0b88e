//! MQTT devices against a real broker (a private Mosquitto; without it the
//! test fails and names the install script): every reading is published with QoS 1
//! to sensors/{device_id}/{source}, acknowledged, and parses as a raw reading,
//! over MQTT 5 (the default) and 3.1.1.

use std::sync::Arc;
use std::time::Duration;

use emotion_core::reading::RawReading;
use firmware_sim::journey::Journey;
use firmware_sim::mqtt::MqttVersion;
use firmware_sim::scenario::{self, Counter, MqttTarget, ScenarioPlan, UserPlan, WsOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

fn mosquitto() -> Option<&'static str> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

#[tokio::test]
async fn mqtt_5_devices_publish_readings_that_a_subscriber_receives() {
    devices_publish_readings_that_a_subscriber_receives(MqttVersion::V5).await;
}

#[tokio::test]
async fn mqtt_3_1_1_devices_publish_readings_that_a_subscriber_receives() {
    devices_publish_readings_that_a_subscriber_receives(MqttVersion::V311).await;
}

async fn devices_publish_readings_that_a_subscriber_receives(version: MqttVersion) {
    let Some(bin) = mosquitto() else {
        panic!("mosquitto is not installed: run scripts/install-mqtt-test-deps.sh");
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let _broker = tokio::process::Command::new(bin)
        .args(["-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto starts");
    // Subscribe once the broker listens.
    let mut sub = None;
    for _ in 0..50 {
        let (client, mut eventloop) =
            AsyncClient::new(MqttOptions::new("test-sub", "127.0.0.1", port), 64);
        if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await
        {
            client
                .subscribe("sensors/#", QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            sub = Some(eventloop);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut eventloop = sub.expect("broker up");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            match ev {
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    let _ = tx.send(("suback".into(), Vec::new()));
                }
                _ => {}
            }
        }
    });
    let (topic, _) = rx.recv().await.expect("suback");
    assert_eq!(topic, "suback");

    let plans = vec![ScenarioPlan {
        name: "mqtt".into(),
        users: ["51", "52", "53"]
            .iter()
            .map(|u| UserPlan {
                user_id: (*u).into(),
                journey: Journey::CalmStressRecovery,
                duration: Duration::from_secs(10),
            })
            .collect(),
    }];
    let opts = WsOptions {
        speed: 100.0,
        event_interval_s: 1.0,
        timeout: Duration::from_secs(5),
        ..WsOptions::default()
    };
    let counter = Arc::new(Counter::default());
    let target = MqttTarget {
        broker: format!("mqtt://127.0.0.1:{port}"),
        username: None,
        password: None,
        version,
    };
    scenario::run_mqtt(
        &plans,
        &opts,
        &target,
        counter.clone(),
        &CancellationToken::new(),
    )
    .await;
    let c = counter.snapshot();
    assert_eq!(
        (c.sent, c.acknowledged, c.refused, c.failed),
        (30, 30, 0, 0)
    );
    let mut got = Vec::new();
    while got.len() < 30 {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("messages arrive")
            .expect("open");
        got.push(m);
    }
    for (topic, payload) in &got {
        let text = String::from_utf8(payload.clone()).expect("utf-8");
        let r = RawReading::from_json_str(&text, None).expect("a valid raw reading");
        let device = r.device_id.as_deref().expect("device id");
        assert_eq!(topic, &format!("sensors/{device}/{}", r.source.as_str()));
    }
    let topics: std::collections::HashSet<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics.len(), 3, "{topics:?}");
}
