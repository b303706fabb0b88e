//! A JSON value that survives non-self-describing formats, and that need not
//! be parsed to be carried.
//!
//! Events carry free-form objects (`context`, `raw_data`, …). `serde_json::Value`
//! needs `deserialize_any`, which postcard (the buffer's format) does not offer, so
//! this wrapper writes itself as a JSON string in binary formats and as plain JSON
//! in human-readable ones.
//!
//! A [`Json`] holds either a parsed [`Value`] (what the API builds, a
//! client event's `biometrics` and `device_info`, whose fields are checked)
//! or checked JSON text (a plugin's extra fields, a client event's
//! `context`, `location` and `raw_data` as sent over WebSocket or MQTT, an
//! object read back from the buffer). Text is stored and written as it came: a plugin's
//! context used to be parsed into a map only to be written back as text by
//! the buffer, which was a fifth of the plugin host's time per facial frame.
//! [`Json::value`] parses text when something needs to look inside.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

mod quick;

/// Free-form JSON attached to an event.
#[derive(Debug, Clone)]
pub struct Json(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Value(Value),
    /// Valid JSON text (checked by every constructor).
    Text(Box<str>),
}

/// JSON text that was refused, given back with the reason.
#[derive(Debug)]
pub struct TextError {
    pub error: serde_json::Error,
    pub text: String,
}

impl Json {
    /// Parsed JSON.
    pub fn new(v: Value) -> Self {
        Json(Repr::Value(v))
    }

    /// JSON text, checked to be valid JSON (not parsed into a `Value`).
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        if !quick::is_value(&text) {
            check(&text, Checked)?;
        }
        Ok(Json(Repr::Text(text.into_boxed_str())))
    }

    /// The text of one JSON object, checked in one pass that also counts
    /// its fields (duplicates included): the form of a plugin's extra
    /// fields.
    pub fn object_from_text(text: String) -> Result<(Self, usize), TextError> {
        match quick::object_fields(&text).map_or_else(|| check(&text, FieldCount), Ok) {
            Ok(fields) => Ok((Json(Repr::Text(text.into_boxed_str())), fields)),
            Err(error) => Err(TextError { error, text }),
        }
    }

    /// The value, parsed from the text if this holds text. Text was checked
    /// when it was stored, so parsing it again cannot fail but for memory;
    /// `Null` stands in then rather than a panic.
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.0 {
            Repr::Value(v) => Cow::Borrowed(v),
            Repr::Text(t) => Cow::Owned(serde_json::from_str(t).unwrap_or(Value::Null)),
        }
    }

    /// The value, owned (see [`Json::value`]).
    pub fn into_value(self) -> Value {
        match self.0 {
            Repr::Value(v) => v,
            Repr::Text(t) => serde_json::from_str(&t).unwrap_or(Value::Null),
        }
    }

    /// The JSON text, without formatting it when this holds text.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.0 {
            // serde_json's writer, not `Display` (which goes through
            // `fmt::Write` and is slower on the ingest path).
            Repr::Value(v) => Cow::Owned(serde_json::to_string(v).unwrap_or_default()),
            Repr::Text(t) => Cow::Borrowed(t),
        }
    }

    /// Whether the value is a JSON object.
    pub fn is_object(&self) -> bool {
        match &self.0 {
            Repr::Value(v) => v.is_object(),
            // Valid JSON text starting with `{` (after whitespace) is an object.
            Repr::Text(t) => t.trim_start().starts_with('{'),
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
            Repr::Text(t) => t.contains("\\u0000"),
        }
    }
}

impl PartialEq for Json {
    /// Equal values, whatever their form (text compares by what it means,
    /// not by its spacing or key order).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Value(a), Repr::Value(b)) => a == b,
            (Repr::Text(a), Repr::Text(b)) if a == b => true,
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
            // Human-readable formats (the API's JSON) get the parsed value.
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

/// Check that `text` is one JSON value (whitespace around it allowed) with
/// `seed`, which sees the value without building it.
fn check<'de, T: DeserializeSeed<'de>>(
    text: &'de str,
    seed: T,
) -> Result<T::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Any JSON value, walked without building it. Numbers are converted (not
/// only skipped), so text is refused exactly where parsing it into a
/// [`Value`] would fail (`1e400`, out of `f64`'s range, say): checked text
/// always parses again.
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Checked)?;
        }
        Ok(())
    }
}

/// Counts an object's fields, checking every value as [`Checked`] does.
struct FieldCount;

impl<'de> DeserializeSeed<'de> for FieldCount {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldCount {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Checked)?;
            n += 1;
        }
        Ok(n)
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
        let (o, fields) =
            Json::object_from_text(r#"{"a": 1, "b": [true, "x"]}"#.into()).expect("an object");
        assert_eq!((&o, fields), (&v, 2));
        assert_eq!(v, t);
        assert_ne!(t, Json::new(json!({"a": 2, "b": [true, "x"]})));
        assert_eq!(t.value().into_owned(), json!({"a": 1, "b": [true, "x"]}));
        assert!(t.is_object() && v.is_object());
        assert!(!Json::from_text(" [1]".into()).expect("valid").is_object());
    }

    #[test]
    fn invalid_text_is_refused() {
        for bad in [
            "",
            "{",
            r#"{"a":}"#,
            "{\"a\":\"\u{1}\"}",
            "nul",
            r#"{"a":"\x"}"#,
            "{} {}",
            // Valid syntax, but no `f64`: parsing it into a `Value` fails.
            r#"{"a":[1e400]}"#,
        ] {
            assert!(Json::from_text(bad.into()).is_err(), "{bad:?}");
            assert!(Json::object_from_text(bad.into()).is_err(), "{bad:?}");
        }
        for not_object in ["[1]", "\"x\"", "2"] {
            let e = Json::object_from_text(not_object.into()).expect_err(not_object);
            assert_eq!(e.text, not_object);
            assert!(e.error.to_string().contains("a JSON object"), "{}", e.error);
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

    /// JSON-like text from pieces that are valid, invalid or outside the
    /// quick check's plain subset (exponents, `\u` escapes, huge integers,
    /// control characters, deep nesting).
    fn json_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("0".to_owned()),
            Just("-0".to_owned()),
            Just("01".to_owned()),
            Just("1.".to_owned()),
            Just("-".to_owned()),
            Just("2.50".to_owned()),
            Just("1e400".to_owned()),
            Just("1E-5".to_owned()),
            Just("9".repeat(310)),
            Just(format!("{}.5", "9".repeat(300))),
            Just("true".to_owned()),
            Just("nul".to_owned()),
            Just("null".to_owned()),
            Just("false".to_owned()),
            Just(r#""\u0000""#.to_owned()),
            Just(r#""\ud800""#.to_owned()),
            Just(r#""a\"b\\c\/\n""#.to_owned()),
            Just(r#""\x""#.to_owned()),
            Just("\"tab\there\"".to_owned()),
            Just("\"é ✓\"".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            "[a-z]{0,4}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\u{b}")];
            prop_oneof![
                prop::collection::vec((inner.clone(), ws.clone()), 0..5).prop_map(|v| {
                    let items: Vec<String> =
                        v.into_iter().map(|(x, w)| format!("{w}{x}{w}")).collect();
                    format!("[{}]", items.join(","))
                }),
                prop::collection::vec(("[a-c]{1,2}", inner.clone(), ws), 0..5).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, x, w)| format!("{w}\"{k}\"{w}:{x}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
                // Broken containers.
                inner.clone().prop_map(|x| format!("{{\"k\" {x}}}")),
                inner.clone().prop_map(|x| format!("[{x},]")),
                inner.prop_map(|x| format!("{x} {x}")),
            ]
        })
    }

    proptest::proptest! {
        /// serde_json decides: whatever the quick check accepts, serde_json
        /// accepts with the same field count, and the constructors give
        /// serde_json's verdict either way.
        #[test]
        fn the_quick_check_accepts_only_what_serde_json_accepts(text in json_like()) {
            let serde_value = check(&text, Checked).is_ok();
            let serde_fields = check(&text, FieldCount).ok();
            if quick::is_value(&text) {
                proptest::prop_assert!(serde_value, "{}", text);
            }
            if let Some(n) = quick::object_fields(&text) {
                proptest::prop_assert_eq!(serde_fields, Some(n), "{}", text);
            }
            proptest::prop_assert_eq!(Json::from_text(text.clone()).is_ok(), serde_value);
            proptest::prop_assert_eq!(
                Json::object_from_text(text.clone()).ok().map(|(_, n)| n),
                serde_fields
            );
        }
    }

    #[test]
    fn the_quick_check_covers_what_plugins_send() {
        // The facial plugin's extra fields: no serde_json walk needed.
        let facial = r#"{"facs_match":{"variant":"6+12","source":"EMFACS-7; FACS 2002 IG","score":1.000},"runner_up":{"label":"contempt","score":0.310},"active_units":[6,12,25],"quality":{"detection":1.000,"pose":0.946,"expression":0.912,"input":"au_intensity"}}"#;
        assert_eq!(quick::object_fields(facial), Some(4));
        assert!(quick::is_value(&format!(" {facial}\n")));
        // Left to serde_json (it accepts them all).
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for plain_no_more in [r#"{"a":1e5}"#, r#"{"a":"\u00e9"}"#, deep.as_str()] {
            assert!(!quick::is_value(plain_no_more), "{plain_no_more}");
            assert!(
                Json::from_text(plain_no_more.into()).is_ok(),
                "{plain_no_more}"
            );
        }
        assert_eq!(quick::object_fields("{}"), Some(0));
        assert_eq!(quick::object_fields(r#"{"a":1,"a":2}"#), Some(2));
        assert_eq!(quick::object_fields("[1]"), None);
        // Fractions serde_json counts in an `i32`: long ones are its call.
        assert!(quick::is_value(&format!("0.{}", "5".repeat(1000))));
        assert!(!quick::is_value(&format!("0.{}", "5".repeat(1001))));
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
