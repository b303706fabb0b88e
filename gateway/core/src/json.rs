//! A JSON value that survives non-self-describing formats.
//!
//! Events carry free-form objects (`context`, `raw_data`, …). `serde_json::Value`
//! needs `deserialize_any`, which postcard (the buffer's format) does not offer, so
//! this wrapper writes itself as a JSON string in binary formats and as plain JSON
//! in human-readable ones.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Free-form JSON attached to an event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Json(pub Value);

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            // serde_json's writer, not `Display` (which goes through
            // `fmt::Write` and is slower on the ingest path).
            let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Value::deserialize(deserializer).map(Json)
        } else {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            serde_json::from_str(&text)
                .map(Json)
                .map_err(serde::de::Error::custom)
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Json(v)
    }
}
