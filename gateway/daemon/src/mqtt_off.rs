//! What the daemon holds of the MQTT transport, in a gateway built without the
//! `mqtt` cargo feature. The types cannot be constructed, so no code path can
//! use MQTT, and the daemon's code stays the same in both builds.

use serde_json::{Value, json};

/// Never constructed: nothing starts.
#[derive(Debug)]
pub enum MqttHandle {}

impl MqttHandle {
    pub async fn shutdown(self) {
        match self {}
    }
}

/// Never constructed: `GET /api/mqtt` always answers [`status_off`].
#[derive(Debug, Clone)]
pub enum MqttStatus {}

impl MqttStatus {
    pub fn to_json(&self) -> Value {
        match *self {}
    }
}

/// Never constructed: nothing can fail to start.
#[derive(Debug)]
pub enum MqttError {}

impl std::fmt::Display for MqttError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for MqttError {}

/// `GET /api/mqtt`: off, and not part of this build.
pub fn status_off() -> Value {
    json!({
        "enabled": false,
        "built": false,
        "embedded": {"enabled": false},
        "upstream": {"enabled": false, "state": "off"},
    })
}
