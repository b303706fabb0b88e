//! `GET /api/export?user_id=&from=&to=&format=csv|json[&kind=events|summaries]`
//! (read scope): one user's stored events and summaries, as a download.
//!
//! JSON carries everything: the events (as `GET /api/users/{id}/events`
//! returns them), the analyzer's summary of the user, and the credit/risk
//! summaries for the configured windows. CSV is one table, so it carries
//! either the events (the default) or, with `kind=summaries`, the credit/risk
//! summaries; cells are quoted per RFC 4180 by the `csv` crate, nested
//! objects are written as JSON text. Every cell is written from the same JSON
//! the API returns, so a CSV row and the API's event agree exactly.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use emotion_core::event::parse_timestamp_str;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiError;
use super::rest::checked_id;
use crate::buffer::EventQuery;
use crate::state::AppState;

/// Most events one export returns (the JSON says `truncated` and a CSV
/// carries `x-export-truncated: true` when there were more).
const MAX_EXPORT: usize = 1_000_000;

/// The event columns of a CSV export, in order.
pub const EVENT_COLUMNS: [&str; 17] = [
    "event_id",
    "user_id",
    "session_id",
    "source",
    "emotion_label",
    "valence",
    "arousal",
    "confidence",
    "timestamp",
    "ingested_at",
    "gateway_id",
    "producer",
    "context",
    "biometrics",
    "location",
    "device_info",
    "raw_data",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The user whose data to export.
    user_id: Option<String>,
    /// Only events that happened at or after this time (RFC 3339, naive ISO 8601 or Unix seconds).
    from: Option<String>,
    /// Only events that happened at or before this time.
    to: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
    /// For CSV: `events` (default) or `summaries` (the credit/risk summaries).
    kind: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/export",
    tag = "export",
    summary = "Export a user's events and summaries as CSV or JSON",
    description = "A download (`content-disposition: attachment`). JSON: `{user_id, from, to, generated_at, count, truncated, \
        summary, credit_summaries, events}`. CSV: a header row and one row per event (columns event_id, user_id, session_id, \
        source, emotion_label, valence, arousal, confidence, timestamp, ingested_at, gateway_id, producer, context, biometrics, \
        location, device_info, raw_data; objects as JSON text), or with `kind=summaries` one row per credit/risk summary.",
    params(ExportQuery),
    security(("token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The export (a download)", content(
            (String = "text/csv"),
            (serde_json::Value = "application/json"),
        )),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the read scope", body = super::error::ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let user = q
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("user_id is required".into()))?;
    checked_id("user", &user)?;
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "format must be `csv` or `json`, got `{other}`"
            )));
        }
    };
    let summaries_only = match q.kind.as_deref().unwrap_or("events") {
        "events" => false,
        "summaries" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "kind must be `events` or `summaries`, got `{other}`"
            )));
        }
    };
    let parse = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                parse_timestamp_str(s).map_err(|m| ApiError::BadRequest(format!("{name}: {m}")))
            })
            .transpose()
    };
    let (from, to) = (parse("from", &q.from)?, parse("to", &q.to)?);
    let now = chrono::Utc::now();
    let (summary, credit) = {
        let mut an = state.analyzer.lock();
        crate::checkpoint::make_resident(&mut an, state.store.as_ref(), &user);
        (
            an.user_summary(&user),
            an.credit_summaries(&user, now, &state.config.sync.summary_windows),
        )
    };
    let credit: Vec<Value> = credit.iter().map(|c| json!(c)).collect();

    let events = if csv && summaries_only {
        Vec::new()
    } else {
        let store = state.store.clone();
        let (u, query) = (
            user.clone(),
            EventQuery {
                from,
                to,
                limit: MAX_EXPORT,
            },
        );
        tokio::task::spawn_blocking(move || store.user_events(&u, &query))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    let truncated = events.len() >= MAX_EXPORT;
    let events: Vec<Value> = events.iter().map(|e| json!(e)).collect();

    if !csv {
        let body = json!({
            "user_id": user,
            "from": from,
            "to": to,
            "generated_at": now,
            "count": events.len(),
            "truncated": truncated,
            "summary": summary,
            "credit_summaries": credit,
            "events": events,
        });
        return Ok(download(
            "application/json",
            &format!("emotions-{user}.json"),
            body.to_string().into_bytes(),
            truncated,
        ));
    }
    let (name, body) = if summaries_only {
        (
            format!("emotions-{user}-summaries.csv"),
            summaries_csv(&credit)?,
        )
    } else {
        (format!("emotions-{user}-events.csv"), events_csv(&events)?)
    };
    Ok(download("text/csv; charset=utf-8", &name, body, truncated))
}

fn download(
    content_type: &'static str,
    filename: &str,
    body: Vec<u8>,
    truncated: bool,
) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    // User ids are checked identifiers (letters, digits, `_-.:@`), so the
    // name needs no escaping.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    if truncated {
        resp.headers_mut()
            .insert("x-export-truncated", HeaderValue::from_static("true"));
    }
    resp
}

/// A CSV cell from a JSON value: strings as they are, numbers and booleans
/// as JSON writes them, null as empty, arrays and objects as JSON text.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn write_rows<'a>(
    header: &[&str],
    rows: impl Iterator<Item = &'a Map<String, Value>>,
) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ApiError::Internal(format!("writing CSV: {e}"));
    w.write_record(header).map_err(err)?;
    for row in rows {
        w.write_record(header.iter().map(|k| cell(row.get(*k))))
            .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))
}

fn events_csv(events: &[Value]) -> Result<Vec<u8>, ApiError> {
    write_rows(&EVENT_COLUMNS, events.iter().filter_map(Value::as_object))
}

fn summaries_csv(summaries: &[Value]) -> Result<Vec<u8>, ApiError> {
    // The summary's own field names, in the order serde_json keeps them.
    let header: Vec<String> = summaries
        .first()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_else(|| vec!["user_id".into(), "window_days".into(), "event_count".into()]);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    write_rows(&header, summaries.iter().filter_map(Value::as_object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_quotes_and_newlines_and_writes_objects_as_json() {
        let ev = json!({
            "event_id": "e1", "user_id": "u1", "valence": -0.5, "arousal": 0.25,
            "context": {"note": "a \"quoted\", text\nwith a newline"}, "confidence": null,
        });
        let out = String::from_utf8(events_csv(&[ev]).expect("csv")).expect("utf8");
        let mut r = csv::Reader::from_reader(out.as_bytes());
        let headers = r.headers().expect("header").clone();
        assert_eq!(headers.iter().collect::<Vec<_>>(), EVENT_COLUMNS.to_vec());
        let row = r.records().next().expect("row").expect("parses");
        assert_eq!(&row[0], "e1");
        assert_eq!(&row[5], "-0.5");
        assert_eq!(&row[7], "", "null is empty");
        let ctx: Value = serde_json::from_str(&row[12]).expect("context is JSON");
        assert_eq!(ctx["note"], "a \"quoted\", text\nwith a newline");
    }
}
