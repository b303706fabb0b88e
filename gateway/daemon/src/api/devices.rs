//! Wearables: `GET /api/devices` (read) and the BLE pairing API (admin):
//! `POST /api/ble/scan`, `GET /api/ble/devices`, `POST /api/ble/pair`,
//! `DELETE /api/ble/pair/{address}`.

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
