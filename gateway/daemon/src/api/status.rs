//! Status views shared by their REST endpoints and the dashboard's status
//! frame, so the dashboard does not call other handlers.

use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /api/plugins`: every plugin, which plugin serves each source, and
/// how many batch threads each served source has.
pub(super) fn plugins(state: &AppState) -> Value {
    json!({
        "plugins": state.plugins.status(),
        "routes": state.plugins.routes(),
        "workers": state.plugins.workers(),
    })
}

/// `GET /api/sync`: the central sync's progress.
pub(super) fn sync(state: &AppState) -> Value {
    json!(state.sync.view(chrono::Utc::now(), state.store.as_ref()))
}

/// `GET /api/mqtt`: the MQTT transport, or "off".
pub(super) fn mqtt(state: &AppState) -> Value {
    state
        .mqtt
        .get()
        .map(crate::mqtt::MqttStatus::to_json)
        .unwrap_or_else(crate::mqtt::status_off)
}

/// The buffer's size and damage.
pub(super) fn buffer(state: &AppState) -> Value {
    json!({"stats": state.store.stats(), "damage": state.store.damage()})
}

/// `GET /api/devices`: serial ports, BLE, reading counters, gap markers.
pub(super) async fn devices(state: &AppState) -> Value {
    let serial: Vec<Value> = state
        .devices
        .serial
        .lock()
        .iter()
        .map(|r| {
            let c = r.config();
            json!({"path": c.path, "device_id": c.device_id, "user_id": c.user_id, "stats": r.stats()})
        })
        .collect();
    let ble = match state.devices.ble() {
        Some(m) => json!({"available": true, "stats": m.stats(), "pairings": m.pairings()}),
        None => json!({"available": false, "reason": state.devices.ble_unavailable.lock().clone()}),
    };
    let store = state.store.clone();
    // The gap record is on disk: read it off the async workers.
    let gaps = tokio::task::spawn_blocking(move || crate::devices::gaps(store.as_ref()))
        .await
        .unwrap_or_default();
    json!({
        "serial": serial,
        "ble": ble,
        "readings": state.devices.counters(),
        "gaps": gaps,
    })
}
