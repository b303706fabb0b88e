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
        st.risk.forget_user(&user);
        Ok::<_, ApiError>(e)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(user = %id, events = erasure.erased_locally, request = %erasure.request_id, "user erased");
    Ok(Json(json!({"erasure": erasure})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PseudonymQuery {
    /// Comma-separated user ids.
    user_ids: String,
    /// Accepted so that `?token=` works; checked by the middleware.
    #[allow(dead_code)]
    token: Option<String>,
}

/// Most ids one request may map.
const MAX_PSEUDONYMS: usize = 10_000;

/// `GET /api/pseudonyms?user_ids=42,43` (admin): the pseudonym each user has
/// centrally under `[sync] pseudonymize`; how an operator re-identifies one.
#[utoipa::path(
    get,
    path = "/api/pseudonyms",
    tag = "privacy",
    summary = "Map user ids to their central pseudonyms (admin; audited)",
    params(PseudonymQuery),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{pseudonyms: {user_id: pseudonym}}", body = serde_json::Value),
        (status = 400, description = "Pseudonymization is off, or a bad id", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn pseudonyms(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PseudonymQuery>,
) -> Result<Json<Value>, ApiError> {
    if !state.pseudonyms.is_on() {
        return Err(ApiError::BadRequest(
            "pseudonymization is off ([sync] pseudonymize = false): user ids are synced as they are".into(),
        ));
    }
    let ids: Vec<&str> = q
        .user_ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() || ids.len() > MAX_PSEUDONYMS {
        return Err(ApiError::BadRequest(format!(
            "user_ids must name between 1 and {MAX_PSEUDONYMS} ids, comma-separated"
        )));
    }
    let mut out = serde_json::Map::new();
    for id in ids {
        checked_id("user", id)?;
        out.insert(id.to_owned(), Value::String(state.pseudonyms.user(id)));
    }
    Ok(Json(json!({ "pseudonyms": out })))
}
