//! `GET /api/audit` (admin): the audit trail, oldest first, a page at a time.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiError;
use crate::state::AppState;

/// Largest page.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only entries about this user.
    user_id: Option<String>,
    /// Entries after this `audit_id` (the last of the previous page).
    after: Option<Uuid>,
    /// Entries per page (default 100, at most 1000).
    limit: Option<usize>,
    /// Accepted here so that `?token=` works; checked by the middleware.
    #[allow(dead_code)]
    token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "privacy",
    summary = "The audit trail: reads of user data, exports, consent changes, erasures, admin actions (admin)",
    params(AuditQuery),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "{entries: [{audit_id, user_id, at, principal, action, outcome}], next_after}", body = serde_json::Value),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the needed scope", body = super::error::ErrorBody),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let audit = state.audit.clone();
    let rows =
        tokio::task::spawn_blocking(move || audit.page(q.after, q.user_id.as_deref(), limit))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.audit_id))
        .flatten();
    Ok(Json(json!({"entries": rows, "next_after": next_after})))
}
