//! Consent and erasure endpoints.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::rest::checked_id;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    analytics: bool,
    credit: bool,
}

/// `GET /api/users/{id}/consent`: the recorded consent, or none given.
#[utoipa::path(
    get,
    path = "/api/users/{id}/consent",
    tag = "privacy",
    summary = "A user's recorded consent",
    params(("id" = String, Path, description = "User id")),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{user_id, consent: {analytics, credit, updated_at}}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn get_consent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    Ok(Json(match state.privacy.consent(&id) {
        Some(c) => json!({"user_id": id, "consent": c}),
        None => {
            json!({"user_id": id, "consent": {"analytics": false, "credit": false, "updated_at": null}})
        }
    }))
}

/// `PUT /api/users/{id}/consent` (admin): `{"analytics": bool, "credit": bool}`.
#[utoipa::path(
    put,
    path = "/api/users/{id}/consent",
    tag = "privacy",
    summary = "Record a user's consent (admin)",
    params(("id" = String, Path, description = "User id")),
    request_body = ConsentBody,
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{user_id, consent}", body = serde_json::Value),
        (status = 400, description = "Bad body", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn put_consent(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ConsentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    let Json(body) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"analytics\": bool, \"credit\": bool}}: {e}"
        ))
    })?;
    let privacy = state.privacy.clone();
    let user = id.clone();
    let c = tokio::task::spawn_blocking(move || {
        privacy.set_consent(&user, body.analytics, body.credit, Utc::now())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(user = %id, analytics = c.analytics, credit = c.credit, "consent recorded");
    Ok(Json(json!({"user_id": id, "consent": c})))
}

/// `DELETE /api/users/{id}/data` (admin): erase the user here and, through
/// the sync, centrally.
#[utoipa::path(
    delete,
    path = "/api/users/{id}/data",
    tag = "privacy",
    summary = "Erase a user here and centrally (admin)",
    params(("id" = String, Path, description = "User id")),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{erasure}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked_id("user", &id)?;
    let st = state.clone();
    let user = id.clone();
    let erasure = tokio::task::spawn_blocking(move || {
        let e = st
            .privacy
            .erase(&user, Utc::now())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        st.rebuild_analyzer()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // The dashboard's recent alerts name the user too.
        st.live.forget_user(&user);
        Ok::<_, ApiError>(e)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(user = %id, events = erasure.erased_locally, request = %erasure.request_id, "user erased");
    Ok(Json(json!({"erasure": erasure})))
}
