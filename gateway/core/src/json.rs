//! A JSON value that survives non-self-describing formats, and that need not
//! be parsed to be carried.
//!
//! Events carry free-form objects (`context`, `raw_data`, …). `serde_json::Value`
//! needs `deserialize_any`, which postcard (the buffer's format) does not offer, so
//! this wrapper writes itself as a JSON string in binary formats and as plain JSON
//! in human-readable ones.
//!
//! A [`Json`] holds either a parsed [`Value`] (what a client's event or the
//! API builds) or checked JSON text (a plugin's extra fields, an object read
//! back from the buffer). Text is stored and written as it came: a plugin's
//! context used to be parsed into a map only to be written back as text by
//! the buffer, which was a fifth of the plugin host's time per facial frame.
//! [`Json::value`] parses text when something needs to look inside.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Free-form JSON attached to an event.
#[derive(Debug, Clone)]
pub struct Json(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Value(Value),
    /// Valid JSON text (checked when it was made).
    Text(Box<RawValue>),
}

impl Json {
    /// Parsed JSON.
    pub fn new(v: Value) -> Self {
        Json(Repr::Value(v))
    }

    /// JSON text, checked to be valid JSON (not parsed into a `Value`).
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(|t| Json(Repr::Text(t)))
    }

    /// The value, parsed from the text if this holds text. Text was checked
    /// when it was stored, so parsing it again cannot fail but for memory;
    /// `Null` stands in then rather than a panic.
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.0 {
            Repr::Value(v) => Cow::Borrowed(v),
            Repr::Text(t) => Cow::Owned(serde_json::from_str(t.get()).unwrap_or(Value::Null)),
        }
    }

    /// The value, owned (see [`Json::value`]).
    pub fn into_value(self) -> Value {
        match self.0 {
            Repr::Value(v) => v,
            Repr::Text(t) => serde_json::from_str(t.get()).unwrap_or(Value::Null),
        }
    }

    /// The JSON text, without formatting it when this holds text.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.0 {
            // serde_json's writer, not `Display` (which goes through
            // `fmt::Write` and is slower on the ingest path).
            Repr::Value(v) => Cow::Owned(serde_json::to_string(v).unwrap_or_default()),
            Repr::Text(t) => Cow::Borrowed(t.get()),
        }
    }

    /// Whether the value is a JSON object.
    pub fn is_object(&self) -> bool {
        match &self.0 {
            Repr::Value(v) => v.is_object(),
            // Valid JSON text starting with `{` (after whitespace) is an object.
            Repr::Text(t) => t.get().trim_start().starts_with('{'),
        }
    }

    /// Whether a string or key somewhere in the value may hold U+0000,
    /// which the central database cannot store. Without it, a caller need
    /// not walk the value. In text, U+0000 can only be written as the
    /// escape `\u0000` (JSON has no raw control characters in strings);
    /// the text having it (even as `\\u0000`, an escaped backslash) is a
    /// "maybe", settled by walking the parsed value.
    pub fn may_hold_nul(&self) -> bool {
        match &self.0 {
            Repr::Value(_) => true,
            Repr::Text(t) => t.get().contains("\\u0000"),
        }
    }
}

impl PartialEq for Json {
    /// Equal values, whatever their form (text compares by what it means,
    /// not by its spacing or key order).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Value(a), Repr::Value(b)) => a == b,
            (Repr::Text(a), Repr::Text(b)) if a.get() == b.get() => true,
            _ => self.value() == other.value(),
        }
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::new(Value::Null)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.0, serializer.is_human_readable()) {
            (Repr::Value(v), true) => v.serialize(serializer),
            // A raw value is written as itself only by serde_json; any other
            // human-readable format gets the parsed value.
            (Repr::Text(_), true) => self.value().serialize(serializer),
            (_, false) => serializer.serialize_str(&self.text()),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Value::deserialize(deserializer).map(Json::new)
        } else {
            // Checked, not parsed: most objects read back from the buffer
            // are only written on (to the central database, to the API).
            let text = String::deserialize(deserializer)?;
            Json::from_text(text).map_err(serde::de::Error::custom)
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Json::new(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_value_forms_are_equal_by_meaning() {
        let v = Json::new(json!({"a": 1, "b": [true, "x"]}));
        let t = Json::from_text(r#"{ "b": [true, "x"], "a": 1 }"#.into()).expect("valid");
        assert_eq!(v, t);
        assert_ne!(t, Json::new(json!({"a": 2, "b": [true, "x"]})));
        assert_eq!(t.value().into_owned(), json!({"a": 1, "b": [true, "x"]}));
        assert!(t.is_object() && v.is_object());
        assert!(!Json::from_text(" [1]".into()).expect("valid").is_object());
    }

    #[test]
    fn invalid_text_is_refused() {
        for bad in ["", "{", r#"{"a":}"#, "{\"a\":\"\u{1}\"}", "nul"] {
            assert!(Json::from_text(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_is_written_as_it_came() {
        let t = Json::from_text(r#"{"z":1,"a":0.10}"#.into()).expect("valid");
        // Human-readable (serde_json): the same JSON value.
        assert_eq!(
            serde_json::to_value(&t).expect("serializes"),
            json!({"z": 1, "a": 0.1})
        );
        // Binary (the buffer's postcard): the text itself, and back.
        let bytes = postcard::to_allocvec(&t).expect("serializes");
        let back: Json = postcard::from_bytes(&bytes).expect("deserializes");
        assert_eq!(back.text(), r#"{"z":1,"a":0.10}"#);
        let v = Json::new(json!({"z": 1}));
        let back: Json = postcard::from_bytes(&postcard::to_allocvec(&v).expect("serializes"))
            .expect("deserializes");
        assert_eq!(back, v);
    }

    #[test]
    fn nul_is_suspected_only_where_the_escape_is() {
        assert!(
            !Json::from_text(r#"{"a":"b"}"#.into())
                .expect("valid")
                .may_hold_nul()
        );
        assert!(
            Json::from_text(r#"{"a":"\u0000"}"#.into())
                .expect("valid")
                .may_hold_nul()
        );
        assert!(Json::new(json!({})).may_hold_nul());
    }
}
