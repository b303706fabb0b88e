//! Wearables: `GET /api/devices` (read) and the BLE pairing API (admin):
//! `POST /api/ble/scan`, `GET /api/ble/devices`, `POST /api/ble/pair`,
//! `DELETE /api/ble/pair/{address}`, and `POST
//! /api/ble/devices/{address}/drop` (simulated adapter only) to see a
//! reconnect happen.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use emotion_ble::{Address, BleError, BleTransport, DeviceManager};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::state::AppState;

/// Longest scan a request may ask for.
const MAX_SCAN: Duration = Duration::from_secs(60);
/// Longest a link drop on demand may keep a device out of reach.
const MAX_DOWN_FOR: Duration = Duration::from_secs(3600);

fn ble(state: &AppState) -> Result<DeviceManager<dyn BleTransport>, ApiError> {
    state.devices.ble().ok_or_else(|| {
        let why = state
            .devices
            .ble_unavailable
            .lock()
            .clone()
            .unwrap_or_else(|| "not started".into());
        ApiError::Unavailable(format!("Bluetooth is not available on this gateway: {why}"))
    })
}

fn ble_error(e: BleError) -> ApiError {
    match e {
        BleError::InvalidAddress(_) | BleError::InvalidUser(_) => {
            ApiError::BadRequest(e.to_string())
        }
        BleError::NotFound(_) => ApiError::NotFound(e.to_string()),
        BleError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// `GET /api/devices`: serial ports, BLE, readings, gap markers.
#[utoipa::path(
    get,
    path = "/api/devices",
    tag = "devices",
    summary = "Serial ports, BLE pairings, reading counters, gap markers",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{serial, ble, readings, gaps}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn devices(State(state): State<AppState>) -> Json<Value> {
    Json(super::status::devices(&state).await)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// Seconds (default: `ble.scan_duration`; at most 60).
    duration_secs: Option<f64>,
}

#[utoipa::path(
    post,
    path = "/api/ble/scan",
    tag = "devices",
    summary = "Scan for BLE devices (admin)",
    request_body(content = Option<ScanBody>, description = "Optional `{duration_secs}` (default ble.scan_duration, at most 60)"),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{devices}", body = serde_json::Value),
        (status = 400, description = "Bad duration", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 503, description = "Bluetooth is not available", body = super::error::ErrorBody),
    )
)]
pub async fn scan(
    State(state): State<AppState>,
    body: Option<Json<ScanBody>>,
) -> Result<Json<Value>, ApiError> {
    let m = ble(&state)?;
    let secs = body.and_then(|Json(b)| b.duration_secs);
    let duration = match secs {
        None => crate::devices::default_scan(&state.config.ble),
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s).min(MAX_SCAN),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "duration_secs must be a positive number, got {s}"
            )));
        }
    };
    let devices = m.scan(duration).await.map_err(ble_error)?;
    Ok(Json(json!({"devices": devices})))
}

#[utoipa::path(
    get,
    path = "/api/ble/devices",
    tag = "devices",
    summary = "BLE devices seen and their links (admin)",
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{devices}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 503, description = "Bluetooth is not available", body = super::error::ErrorBody),
    )
)]
pub async fn ble_devices(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let devices = ble(&state)?.devices().await.map_err(ble_error)?;
    Ok(Json(json!({"devices": devices})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairBody {
    address: String,
    user_id: String,
}

#[utoipa::path(
    post,
    path = "/api/ble/pair",
    tag = "devices",
    summary = "Pair a BLE device with a user (admin)",
    request_body = PairBody,
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{pairing}", body = serde_json::Value),
        (status = 400, description = "Bad address or user", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "No such device", body = super::error::ErrorBody),
        (status = 503, description = "Bluetooth is not available", body = super::error::ErrorBody),
    )
)]
pub async fn pair(
    State(state): State<AppState>,
    body: Result<Json<PairBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"address\", \"user_id\"}}: {e}")))?;
    let m = ble(&state)?;
    let address = Address::parse(&body.address).map_err(ble_error)?;
    let pairing = m.pair(address, &body.user_id).map_err(ble_error)?;
    tracing::info!(address = %pairing.address, user = %pairing.user_id, "BLE device paired");
    Ok(Json(json!({"pairing": pairing})))
}

#[utoipa::path(
    delete,
    path = "/api/ble/pair/{address}",
    tag = "devices",
    summary = "Unpair a BLE device (admin)",
    params(("address" = String, Path, description = "Device address, e.g. E0:00:00:00:B1:01")),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{unpaired}", body = serde_json::Value),
        (status = 400, description = "Bad address", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "Not paired", body = super::error::ErrorBody),
        (status = 503, description = "Bluetooth is not available", body = super::error::ErrorBody),
    )
)]
pub async fn unpair(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = ble(&state)?;
    let address = Address::parse(&address).map_err(ble_error)?;
    match m.unpair(&address).map_err(ble_error)? {
        Some(p) => Ok(Json(json!({"unpaired": p}))),
        None => Err(ApiError::NotFound(format!("{address} is not paired"))),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DropBody {
    /// Seconds the device stays out of reach (default:
    /// `ble.simulated.link_down_for`; at most 3600).
    down_for_secs: Option<f64>,
}

#[utoipa::path(
    post,
    path = "/api/ble/devices/{address}/drop",
    tag = "devices",
    summary = "Drop a simulated device's link now (admin, simulated adapter only)",
    params(("address" = String, Path, description = "Device address, e.g. E0:00:00:00:B1:01")),
    request_body(content = Option<DropBody>, description = "Optional `{down_for_secs}` (default ble.simulated.link_down_for, at most 3600)"),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{dropped, down_for_secs}: the manager reconnects, re-subscribes and records a gap marker", body = serde_json::Value),
        (status = 400, description = "Bad address or duration, not the simulated adapter, or the device is not connected", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
        (status = 404, description = "No such simulated device", body = super::error::ErrorBody),
        (status = 503, description = "Bluetooth is not available", body = super::error::ErrorBody),
    )
)]
pub async fn drop_link(
    State(state): State<AppState>,
    Path(address): Path<String>,
    body: Option<Json<DropBody>>,
) -> Result<Json<Value>, ApiError> {
    ble(&state)?;
    let Some(sim) = state.devices.ble_sim() else {
        return Err(ApiError::BadRequest(
            "link drops on demand need the simulated adapter (ble.adapter = \"simulated\"); \
             to test a real device, switch it off or take it out of range"
                .into(),
        ));
    };
    let address = Address::parse(&address).map_err(ble_error)?;
    let down_for = match body.and_then(|Json(b)| b.down_for_secs) {
        None => state.config.ble.simulated.link_down_for.0,
        Some(s) if s.is_finite() && s >= 0.0 => {
            Duration::try_from_secs_f64(s).map_or(MAX_DOWN_FOR, |d| d.min(MAX_DOWN_FOR))
        }
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "down_for_secs must be a number of seconds, 0 or more, got {s}"
            )));
        }
    };
    if !sim.contains(&address) {
        return Err(ApiError::NotFound(format!(
            "no simulated device {address} (the simulated adapter has {} and {})",
            crate::devices::SIM_STRAP,
            crate::devices::SIM_BAND
        )));
    }
    if !sim.drop_link(&address, down_for) {
        return Err(ApiError::BadRequest(format!(
            "{address} is not connected (pair it first, or wait until it is back)"
        )));
    }
    tracing::info!(%address, ?down_for, "simulated BLE link dropped on demand");
    Ok(Json(
        json!({"dropped": address, "down_for_secs": down_for.as_secs_f64()}),
    ))
}
