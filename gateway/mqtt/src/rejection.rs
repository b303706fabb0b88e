//! Why a message was dropped, as reported to its device (on
//! `{devices}/{device_id}/errors`) and counted.

use chrono::Utc;
use emotion_core::event::FieldError;
use serde_json::{Value, json};

use super::stats::RejectKind;

/// A rejection, as reported to the sender.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: RejectKind,
    pub message: String,
    pub fields: Option<Vec<FieldError>>,
}

impl Rejection {
    pub fn new(kind: RejectKind, message: impl Into<String>) -> Self {
        Rejection {
            kind,
            message: message.into(),
            fields: None,
        }
    }
}

/// The JSON published to `{devices}/{device_id}/errors`.
pub fn error_json(device_id: &str, topic: &str, r: &Rejection) -> Value {
    let mut v = json!({
        "status": "error",
        "error": r.kind.as_str(),
        "message": r.message,
        "device_id": device_id,
        "topic": topic,
        "timestamp": Utc::now().to_rfc3339(),
    });
    if let (Some(fields), Value::Object(m)) = (&r.fields, &mut v) {
        m.insert("fields".into(), json!(fields));
    }
    v
}
