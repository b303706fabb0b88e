//! The emotion event: what clients send, how it is validated, and what is stored.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::json::Json;
use crate::label::EmotionLabel;
use crate::source::Source;

/// Longest accepted identifier (user, session, gateway). Keeps keys and rows bounded.
pub const MAX_ID_LEN: usize = 128;

/// A validated, normalized emotion event, as stored in the buffer and synced.
///
/// `event_id` is a UUIDv7 (time-ordered), the idempotency key everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmotionEvent {
    pub event_id: Uuid,
    pub user_id: String,
    pub session_id: String,
    pub source: Source,
    pub emotion_label: EmotionLabel,
    pub valence: f64,
    pub arousal: f64,
    /// `None` when the sender gave none; the original schema allows NULL.
    pub confidence: Option<f64>,
    /// When the emotion happened (sender's clock, UTC).
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
    /// When this gateway accepted it.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub ingested_at: DateTime<Utc>,
    pub gateway_id: String,
    /// `plugin-name@version` for plugin output, `client` for events sent ready-made.
    pub producer: String,
    pub context: Option<Json>,
    pub biometrics: Option<Json>,
    pub location: Option<Json>,
    pub device_info: Option<Json>,
    pub raw_data: Option<Json>,
}

/// One problem with one field of an incoming event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// Every problem found in an incoming event (validation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{}", self.describe())]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    fn describe(&self) -> String {
        self.errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn single(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            errors: vec![FieldError {
                field,
                message: message.into(),
            }],
        }
    }
}

/// What the gateway knows about where an incoming event arrived, used to fill
/// in defaults and to stamp the stored event.
#[derive(Debug, Clone)]
pub struct IngestContext<'a> {
    /// The user the connection belongs to, if the transport binds one (the
    /// WebSocket `?user_id=`); the body may omit `user_id` then, and may not
    /// contradict it.
    pub user_id: Option<&'a str>,
    /// The transport's session, which wins over a `session_id` in the body (the
    /// original server behaved so). When `None`, the body's is used, or a default.
    pub session_id: Option<&'a str>,
    pub gateway_id: &'a str,
    pub producer: &'a str,
    pub now: DateTime<Utc>,
    pub event_id: Uuid,
    /// Refuse a `confidence` outside its source's documented range
    /// ([`Source::confidence_range`]); otherwise any value in [0, 1].
    pub confidence_in_source_range: bool,
}

/// The original clients' default session id: `session_{user_id}_{unix_seconds}`.
pub fn default_session_id(user_id: &str, now: DateTime<Utc>) -> String {
    format!("session_{user_id}_{}", now.timestamp())
}

/// Validate a JSON object sent by a client and build the stored event.
///
/// Unknown keys are ignored (the original server ignored them too). An
/// `event_id` in the body, if present, must be a UUID and is kept, so a client
/// or a redelivering broker can make a retry idempotent.
pub fn validate(
    body: &Map<String, Value>,
    ctx: &IngestContext<'_>,
) -> Result<EmotionEvent, ValidationError> {
    check(body, ctx)?.into_event(ctx, |field| body.get(field).cloned().map(Json::new))
}

/// [`validate`] for a body the caller no longer needs: its JSON objects
/// (`context`, `device_info`, …) move into the event instead of being copied.
pub fn validate_owned(
    mut body: Map<String, Value>,
    ctx: &IngestContext<'_>,
) -> Result<EmotionEvent, ValidationError> {
    check(&body, ctx)?.into_event(ctx, |field| body.remove(field).map(Json::new))
}

/// [`validate`] for a message parsed by [`Body::parse`]: the objects it
/// kept as text move into the event as that text.
pub fn validate_body(body: Body, ctx: &IngestContext<'_>) -> Result<EmotionEvent, ValidationError> {
    let Body {
        mut fields,
        mut texts,
    } = body;
    check(&fields, ctx)?.into_event(ctx, |field| {
        match texts.iter().position(|(f, _)| *f == field) {
            Some(i) => Some(texts.swap_remove(i).1),
            None => fields.remove(field).map(Json::new),
        }
    })
}

/// A client's event message, parsed for [`validate_body`].
///
/// The free-form objects `context`, `location` and `raw_data` are kept as
/// their JSON text, checked but not parsed into maps: the buffer stores them
/// as text, and building a map per event only to write it back as text was
/// a fifth of the WebSocket path's CPU (parsing, freeing and re-encoding).
/// Every other field, `biometrics` and `device_info` included (their
/// contents are checked), is parsed as before.
#[derive(Debug)]
pub struct Body {
    fields: Map<String, Value>,
    texts: Vec<(&'static str, Json)>,
}

/// Why a message is not an event body at all (before any field is checked).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    NotJson(serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
}

/// The objects [`Body::parse`] keeps as text: nothing in the gateway looks
/// inside them before they are stored.
const TEXT_OBJECTS: [&str; 3] = ["context", "location", "raw_data"];

/// Reads a message's fields in the order written: each one parsed into a
/// `Value`, but the objects of [`TEXT_OBJECTS`], taken as their text and
/// checked. Every value is checked, a duplicate key's earlier ones too
/// (parsing into a `Value` refuses `1e400` even where a later key replaces
/// it); the last one counts, as in a `Value`.
struct TextPath;

impl<'de> serde::de::Visitor<'de> for TextPath {
    type Value = Body;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Body, A::Error> {
        use serde::de::Error as _;
        let mut fields = Map::new();
        let mut texts: Vec<(&'static str, Json)> = Vec::new();
        while let Some(key) = m.next_key::<String>()? {
            texts.retain(|(f, _)| *f != key);
            let Some(field) = TEXT_OBJECTS.iter().find(|f| **f == key) else {
                let value: Value = m.next_value()?;
                fields.insert(key, value);
                continue;
            };
            let raw: &'de RawValue = m.next_value()?;
            let text = raw.get();
            // U+0000 is refused with its path, which the parsed value gives.
            if text.starts_with('{') && !text.contains("\\u0000") {
                // Checked in one pass, numbers included.
                let (object, _) = Json::object_from_text(text.to_owned())
                    .map_err(|e| A::Error::custom(e.error))?;
                fields.remove(&key);
                texts.push((*field, object));
            } else {
                let value: Value = serde_json::from_str(text).map_err(A::Error::custom)?;
                fields.insert(key, value);
            }
        }
        Ok(Body { fields, texts })
    }
}

impl Body {
    /// Parse one message. Errors and the fields' values are exactly those of
    /// parsing it into a `serde_json::Value`: anything the text path does not
    /// take as it is (a number out of range, an object that may hold U+0000,
    /// a field that is not an object) goes through that parse instead.
    pub fn parse(json: &[u8]) -> Result<Body, BodyError> {
        match std::str::from_utf8(json) {
            Ok(text) => Self::parse_str(text),
            Err(_) => Self::plain(serde_json::from_slice(json)),
        }
    }

    /// [`Body::parse`] for text already known to be UTF-8 (a WebSocket text
    /// frame): serde_json reads it without checking each string again.
    pub fn parse_str(text: &str) -> Result<Body, BodyError> {
        match Self::keeping_text(text) {
            Some(body) => Ok(body),
            None => Self::plain(serde_json::from_str(text)),
        }
    }

    /// The whole message parsed into a `Value`: the fallback, and the judge
    /// of every error.
    fn plain(parsed: Result<Value, serde_json::Error>) -> Result<Body, BodyError> {
        match parsed {
            Ok(Value::Object(fields)) => Ok(Body {
                fields,
                texts: Vec::new(),
            }),
            Ok(_) => Err(BodyError::NotObject),
            Err(e) => Err(BodyError::NotJson(e)),
        }
    }

    /// The text path, one pass over the message; `None` leaves it to the
    /// plain parse.
    fn keeping_text(text: &str) -> Option<Body> {
        let mut de = serde_json::Deserializer::from_str(text);
        let body = serde::Deserializer::deserialize_map(&mut de, TextPath).ok()?;
        de.end().ok()?;
        Some(body)
    }

    /// A top-level field that was parsed (not one of the objects kept as text).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }
}

/// Whether an event whose body has this `event_id` takes its id from
/// [`IngestContext::event_id`] (none, or null); otherwise validation keeps
/// the body's id or refuses it. A transport whose default id is costly to
/// derive asks this first.
pub fn takes_context_id(event_id: Option<&Value>) -> bool {
    matches!(event_id, None | Some(Value::Null))
}

/// The free-form object fields of an event, each with its own check.
type ObjectCheck = fn(&Map<String, Value>) -> Result<(), String>;
const OBJECTS: [(&str, ObjectCheck); 5] = [
    ("context", |_| Ok(())),
    ("biometrics", check_biometrics),
    ("location", |_| Ok(())),
    ("device_info", check_device_info),
    ("raw_data", |_| Ok(())),
];

/// A body that passed every check, short of its objects, which
/// [`Checked::into_event`] takes from it.
struct Checked {
    user_id: String,
    body_session: Option<String>,
    source: Source,
    emotion_label: EmotionLabel,
    valence: f64,
    arousal: f64,
    confidence: Option<f64>,
    timestamp: DateTime<Utc>,
    event_id: Uuid,
}

fn check(body: &Map<String, Value>, ctx: &IngestContext<'_>) -> Result<Checked, ValidationError> {
    // Each step reports its own problems; every field is checked, so the
    // client hears about all of them at once, in this order.
    let mut f = Fields {
        body,
        errs: Vec::new(),
    };
    let user_id = f.user_id(ctx.user_id);
    let body_session = f.session_id();
    let source = f.source();
    let label = f.label();
    let valence = f.number("valence", -1.0, 1.0);
    let arousal = f.number("arousal", 0.0, 1.0);
    let confidence = f.number("confidence", 0.0, 1.0);
    if ctx.confidence_in_source_range
        && let (Some(src), Some(c)) = (source, confidence)
    {
        let (lo, hi) = src.confidence_range();
        if !(lo..=hi).contains(&c) {
            f.err(
                "confidence",
                format!(
                    "{c} is outside the documented range of `{}` events, [{lo}, {hi}] \
                     (validation.confidence = \"any\" accepts any value in [0, 1])",
                    src.as_str()
                ),
            );
        }
    }
    let resolved = f.resolve_coordinates(label, valence, arousal);
    let timestamp = f.timestamp(ctx.now);
    let event_id = f.event_id(ctx.event_id);
    for (field, check) in OBJECTS {
        f.object(field, check);
    }

    if !f.errs.is_empty() {
        return Err(ValidationError { errors: f.errs });
    }
    // Every `None` below was reported above; the `else` is unreachable in
    // practice but keeps this function free of panics.
    let (
        Some(user_id),
        Some(source),
        Some((emotion_label, valence, arousal)),
        Some(timestamp),
        Some(event_id),
    ) = (user_id, source, resolved, timestamp, event_id)
    else {
        return Err(ValidationError::single("event", "incomplete event"));
    };
    Ok(Checked {
        user_id,
        body_session,
        source,
        emotion_label,
        valence,
        arousal,
        confidence,
        timestamp,
        event_id,
    })
}

impl Checked {
    /// The event, with its objects from `take` (which hands out what the
    /// checks accepted: a present, non-null object field).
    fn into_event(
        self,
        ctx: &IngestContext<'_>,
        mut take: impl FnMut(&'static str) -> Option<Json>,
    ) -> Result<EmotionEvent, ValidationError> {
        let session_id = ctx
            .session_id
            .map(str::to_owned)
            .or(self.body_session)
            .unwrap_or_else(|| default_session_id(&self.user_id, ctx.now));
        let [context, biometrics, location, device_info, raw_data] =
            OBJECTS.map(|(field, _)| take(field).filter(Json::is_object));
        let event = EmotionEvent {
            event_id: self.event_id,
            user_id: self.user_id,
            session_id,
            source: self.source,
            emotion_label: self.emotion_label,
            valence: self.valence,
            arousal: self.arousal,
            confidence: self.confidence,
            timestamp: self.timestamp,
            ingested_at: ctx.now,
            gateway_id: ctx.gateway_id.to_owned(),
            producer: ctx.producer.to_owned(),
            context,
            biometrics,
            location,
            device_info,
            raw_data,
        };
        // What came from the transport rather than the body (the WebSocket's
        // `?session_id=`, say) meets the same rule; the body's objects were
        // checked above.
        let errors = nul_in_strings(&event);
        if !errors.is_empty() {
            return Err(ValidationError { errors });
        }
        Ok(event)
    }
}

/// The steps of [`validate`]: each reads one field of the body, records
/// what is wrong with it, and returns the value if it is good.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    errs: Vec<FieldError>,
}

impl Fields<'_> {
    fn err(&mut self, field: &'static str, message: String) {
        self.errs.push(FieldError { field, message });
    }

    /// Whether the body carries `field` with a non-null value.
    fn given(&self, field: &str) -> bool {
        self.body.get(field).is_some_and(|v| !v.is_null())
    }

    /// `user_id`: the body's, which must agree with the connection's user
    /// `bound` if there is one, or else `bound`.
    fn user_id(&mut self, bound: Option<&str>) -> Option<String> {
        match (self.body.get("user_id"), bound) {
            (None | Some(Value::Null), Some(bound)) => Some(bound.to_owned()),
            (None | Some(Value::Null), None) => {
                self.err("user_id", "is required".into());
                None
            }
            (Some(v), bound) => match parse_user_id(v) {
                Ok(id) => match bound {
                    Some(b) if b != id => {
                        self.err(
                            "user_id",
                            format!("`{id}` does not match the connection's user `{b}`"),
                        );
                        None
                    }
                    _ => Some(id),
                },
                Err(m) => {
                    self.err("user_id", m);
                    None
                }
            },
        }
    }

    /// The body's `session_id`, if any.
    fn session_id(&mut self) -> Option<String> {
        match self.body.get("session_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match check_identifier(s) {
                Ok(()) => Some(s.clone()),
                Err(m) => {
                    self.err("session_id", m);
                    None
                }
            },
            Some(other) => {
                self.err(
                    "session_id",
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// `source`: required, one of the eight names.
    fn source(&mut self) -> Option<Source> {
        match self.body.get("source") {
            None | Some(Value::Null) => {
                self.err("source", "is required".into());
                None
            }
            Some(Value::String(s)) => match s.parse::<Source>() {
                Ok(src) => Some(src),
                Err(e) => {
                    self.err("source", e.to_string());
                    None
                }
            },
            Some(other) => {
                self.err(
                    "source",
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// `emotion_label`, if given.
    fn label(&mut self) -> Option<EmotionLabel> {
        match self.body.get("emotion_label") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match s.parse::<EmotionLabel>() {
                Ok(l) => Some(l),
                Err(e) => {
                    self.err("emotion_label", e.to_string());
                    None
                }
            },
            Some(other) => {
                self.err(
                    "emotion_label",
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional finite number in [lo, hi] (numeric strings accepted).
    fn number(&mut self, field: &'static str, lo: f64, hi: f64) -> Option<f64> {
        match self.body.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => match parse_number(v) {
                Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Some(x),
                Ok(x) if x.is_finite() => {
                    self.err(
                        field,
                        format!("must be between {lo:.1} and {hi:.1}, got {x}"),
                    );
                    None
                }
                Ok(_) => {
                    self.err(
                        field,
                        "must be a finite number (NaN and infinity are rejected)".into(),
                    );
                    None
                }
                Err(m) => {
                    self.err(field, m);
                    None
                }
            },
        }
    }

    /// Label and coordinates, completed from each other: a label without
    /// coordinates takes the table's; coordinates without a label take the
    /// nearest label. Only when a given coordinate was invalid do we stop
    /// (a coordinate that was sent but rejected must not be replaced by the
    /// table's).
    fn resolve_coordinates(
        &mut self,
        label: Option<EmotionLabel>,
        valence: Option<f64>,
        arousal: Option<f64>,
    ) -> Option<(EmotionLabel, f64, f64)> {
        let bad_numbers = (self.given("valence") && valence.is_none())
            || (self.given("arousal") && arousal.is_none());
        if bad_numbers {
            return None;
        }
        match (label, valence, arousal) {
            (Some(l), v, a) => match l.coordinates() {
                Some(c) => Some((l, v.unwrap_or(c.valence), a.unwrap_or(c.arousal))),
                None => match (v, a) {
                    (Some(v), Some(a)) => Some((l, v, a)),
                    _ => {
                        self.err(
                            "valence",
                            "and arousal are required when emotion_label is `unknown`".into(),
                        );
                        None
                    }
                },
            },
            (None, Some(v), Some(a)) => Some((EmotionLabel::nearest(v, a), v, a)),
            (None, Some(_), None) => {
                self.err("arousal", "is required when emotion_label is absent".into());
                None
            }
            (None, None, Some(_)) => {
                self.err("valence", "is required when emotion_label is absent".into());
                None
            }
            (None, None, None) => {
                self.err(
                    "emotion_label",
                    "is required unless valence and arousal are given".into(),
                );
                None
            }
        }
    }

    /// `timestamp`, or `now` when missing.
    fn timestamp(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.body.get("timestamp") {
            None | Some(Value::Null) => Some(now),
            Some(v) => match parse_timestamp(v) {
                Ok(t) => Some(t),
                Err(m) => {
                    self.err("timestamp", m);
                    None
                }
            },
        }
    }

    /// The body's `event_id` (a UUID), or `default` when missing.
    fn event_id(&mut self, default: Uuid) -> Option<Uuid> {
        let given = self.body.get("event_id");
        let Some(given) = given.filter(|_| !takes_context_id(given)) else {
            return Some(default);
        };
        match given {
            Value::String(s) => match Uuid::parse_str(s) {
                Ok(id) => Some(id),
                Err(_) => {
                    self.err("event_id", format!("must be a UUID, got `{s}`"));
                    None
                }
            },
            other => {
                self.err(
                    "event_id",
                    format!("must be a UUID string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional JSON object must pass `check` and be storable (the
    /// caller takes it from the body once everything passed).
    fn object(&mut self, field: &'static str, check: ObjectCheck) {
        match self.body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Err(msg) = check(m).and_then(|()| storable_object(field, m)) {
                    self.err(field, msg);
                }
            }
            Some(other) => {
                self.err(
                    field,
                    format!("must be an object, got {}", type_name(other)),
                );
            }
        }
    }
}

/// Where U+0000 sits in `v`, as a path below `field` (`context.notes[2]`,
/// `raw_data.tags["a\u{0}b"]` for a key holding it), if anywhere.
///
/// PostgreSQL's `text` and `jsonb` cannot hold U+0000 (SQLSTATE 22021 and
/// 22P05): an event carrying one would be acknowledged here and then refused
/// by the central database, so it is refused at the door instead.
pub fn find_nul(field: &str, v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut String) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(m) => m.iter().any(|(k, item)| {
                let len = path.len();
                if k.contains('\0') {
                    path.push_str(&format!("[{k:?}]"));
                    return true;
                }
                path.push('.');
                path.push_str(k);
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if !has_nul(v) {
        return None;
    }
    let mut path = field.to_owned();
    walk(v, &mut path).then_some(path)
}

fn nul_message(path: &str) -> String {
    format!(
        "contains U+0000 (a NUL character) at `{path}`, which the central database cannot store"
    )
}

/// Whether U+0000 sits anywhere in `v`, keys included: [`find_nul`]
/// without building paths, for the common case where there is none.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// An object field's JSON must be storable centrally (see [`find_nul`]).
fn storable_object(field: &str, m: &Map<String, Value>) -> Result<(), String> {
    if !m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Ok(());
    }
    // Walk the map without cloning it into a `Value`.
    for (k, v) in m {
        if k.contains('\0') {
            return Err(nul_message(&format!("{field}[{k:?}]")));
        }
        if let Some(path) = find_nul(&format!("{field}.{k}"), v) {
            return Err(nul_message(&path));
        }
    }
    Ok(())
}

/// Check an event built outside [`validate`] (a plugin's output, say) for
/// what the central database cannot store: U+0000 in any string field or
/// anywhere in its JSON objects, keys included. Events from [`validate`]
/// pass by construction; this is the same rule for every other producer.
pub fn check_storable(e: &EmotionEvent) -> Result<(), ValidationError> {
    let mut errors = nul_in_strings(e);
    let objects: [(&'static str, &Option<Json>); 5] = [
        ("context", &e.context),
        ("biometrics", &e.biometrics),
        ("location", &e.location),
        ("device_info", &e.device_info),
        ("raw_data", &e.raw_data),
    ];
    for (field, j) in objects {
        let path = j
            .as_ref()
            .filter(|j| j.may_hold_nul())
            .and_then(|j| find_nul(field, &j.value()));
        if let Some(path) = path {
            errors.push(FieldError {
                field,
                message: nul_message(&path),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { errors })
    }
}

/// The string fields of `e` that hold U+0000.
fn nul_in_strings(e: &EmotionEvent) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let strings: [(&'static str, &str); 4] = [
        ("user_id", &e.user_id),
        ("session_id", &e.session_id),
        ("gateway_id", &e.gateway_id),
        ("producer", &e.producer),
    ];
    for (field, s) in strings {
        if s.contains('\0') {
            errors.push(FieldError {
                field,
                message: nul_message(field),
            });
        }
    }
    errors
}

/// A user id is a positive integer (the original's `int > 0`) or an identifier.
pub fn parse_user_id(v: &Value) -> Result<String, String> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i > 0 => Ok(i.to_string()),
            Some(i) => Err(format!("must be a positive integer, got {i}")),
            None => Err(format!("must be a positive integer, got {n}")),
        },
        Value::String(s) => {
            check_identifier(s)?;
            match s.parse::<i64>() {
                Ok(i) if i <= 0 => Err(format!("must be a positive integer, got {i}")),
                _ => Ok(s.clone()),
            }
        }
        other => Err(format!(
            "must be a positive integer or a string, got {}",
            type_name(other)
        )),
    }
}

/// Identifiers end up in URLs, MQTT topics and database keys: keep them plain.
pub fn check_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!(
            "must be at most {MAX_ID_LEN} bytes, got {}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@')))
    {
        return Err(format!(
            "may contain only letters, digits and _ - . : @ (found {c:?})"
        ));
    }
    Ok(())
}

/// Numbers may come as JSON numbers or, as the original's lax parser allowed,
/// numeric strings. Non-finite values parse here and are rejected by the caller.
fn parse_number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("is not a number: {n}")),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("must be a number, got the string {s:?}")),
        other => Err(format!("must be a number, got {}", type_name(other))),
    }
}

/// RFC 3339; the naive ISO form the original clients send (taken as UTC); or
/// Unix seconds as a number.
pub fn parse_timestamp(v: &Value) -> Result<DateTime<Utc>, String> {
    match v {
        Value::String(s) => parse_timestamp_str(s),
        Value::Number(n) => {
            let secs = n
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or("must be a finite number")?;
            let whole = secs.floor();
            let nanos = ((secs - whole) * 1e9).round() as u32;
            // `as i64` saturates; out-of-range values are then refused by chrono.
            Utc.timestamp_opt(whole as i64, nanos.min(999_999_999))
                .single()
                .ok_or_else(|| format!("Unix time {secs} is out of range"))
        }
        other => Err(format!(
            "must be an RFC 3339 string, got {}",
            type_name(other)
        )),
    }
}

pub fn parse_timestamp_str(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "must be RFC 3339 (2024-08-15T14:30:00Z) or naive ISO 8601 taken as UTC (2024-08-15T14:30:00.123456), got {s:?}"
    ))
}

/// `biometrics` is a map of named measurements: every value a finite number.
fn check_biometrics(m: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in m {
        match v.as_f64() {
            Some(x) if x.is_finite() => {}
            _ => return Err(format!("`{k}` must be a finite number, got {v}")),
        }
    }
    Ok(())
}

/// `device_info` is a map of strings (device_type, platform, app_version, …).
fn check_device_info(m: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in m {
        if !v.is_string() {
            return Err(format!("`{k}` must be a string, got {}", type_name(v)));
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(now: DateTime<Utc>) -> IngestContext<'static> {
        IngestContext {
            user_id: None,
            session_id: None,
            gateway_id: "gw-test",
            producer: "client",
            now,
            event_id: Uuid::nil(),
            confidence_in_source_range: false,
        }
    }

    #[test]
    fn confidence_outside_the_source_range_is_refused_when_asked() {
        let now = Utc::now();
        let strict = IngestContext {
            confidence_in_source_range: true,
            ..ctx(now)
        };
        let facial = |c: f64| {
            obj(json!({"user_id": 1, "source": "facial", "emotion_label": "joy", "confidence": c}))
        };
        let e = validate(&facial(0.3), &strict).expect_err("0.3 is outside facial's range");
        assert_eq!(e.errors[0].field, "confidence");
        assert!(e.errors[0].message.contains("[0.8, 0.95]"), "{e}");
        assert!(validate(&facial(0.9), &strict).is_ok());
        // Without the check, anything in [0, 1]; no confidence is fine either way.
        assert!(validate(&facial(0.3), &ctx(now)).is_ok());
        let none = obj(json!({"user_id": 1, "source": "facial", "emotion_label": "joy"}));
        assert!(validate(&none, &strict).is_ok());
    }

    /// What the WebSocket and MQTT paths did before [`Body`]: parse the
    /// whole message into a `Value`.
    fn via_value(text: &str, ctx: &IngestContext<'_>) -> Result<EmotionEvent, String> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => validate_owned(m, ctx).map_err(|e| e.to_string()),
            Ok(_) => Err("not an object".into()),
            Err(e) => Err(format!("not JSON: {e}")),
        }
    }

    fn via_body(text: &str, ctx: &IngestContext<'_>) -> Result<EmotionEvent, String> {
        match Body::parse(text.as_bytes()) {
            Ok(body) => validate_body(body, ctx).map_err(|e| e.to_string()),
            Err(BodyError::NotObject) => Err("not an object".into()),
            Err(BodyError::NotJson(e)) => Err(format!("not JSON: {e}")),
        }
    }

    /// Keeping `context`, `location` and `raw_data` as text changes neither
    /// what is accepted nor what is refused, nor the stored event's meaning,
    /// the odd cases included.
    #[test]
    fn a_body_with_objects_kept_as_text_validates_as_the_parsed_value_does() {
        let base = r#""user_id": "u1", "source": "text", "emotion_label": "joy", "valence": 0.5"#;
        let cases = [
            // The load tool's shape: every object kind at once.
            format!(
                r#"{{{base}, "context": {{"a": 1, "b": [1, 2.5, {{"c": null}}]}},
                "location": {{"type": "office", "latitude": -23.561414}},
                "raw_data": {{"text_sample": "é \" \n", "n": 12345678901234567890}},
                "biometrics": {{"heart_rate": 71.5}}, "device_info": {{"platform": "iOS"}}}}"#
            ),
            // Spacing inside and around the objects.
            format!("{{{base},\n \"context\" :\t{{ \"a\" : [ ] , \"b\" : {{ }} }} \n}}"),
            // Duplicate keys: the last one counts, at the top and inside.
            format!(r#"{{{base}, "context": {{"a": 1}}, "context": {{"a": 2, "a": 3}}}}"#),
            format!(r#"{{{base}, "context": {{"a": 1}}, "context": null}}"#),
            format!(r#"{{{base}, "context": null, "context": {{"a": 1}}}}"#),
            // An escaped key naming an object field.
            format!(r#"{{{base}, "cont\u0065xt": {{"a": 1}}}}"#),
            // Refused: not objects, numbers out of range, U+0000 (with its path).
            format!(r#"{{{base}, "context": [1, 2]}}"#),
            format!(r#"{{{base}, "raw_data": "text"}}"#),
            format!(r#"{{{base}, "context": {{"x": 1e400}}}}"#),
            format!(r#"{{{base}, "valence": 1e400}}"#),
            format!(r#"{{{base}, "context": {{"notes": ["ok", "a\u0000b"]}}}}"#),
            format!(r#"{{{base}, "location": {{"k\u0000": 1}}}}"#),
            // An escaped backslash before `u0000` is not U+0000: accepted.
            format!(r#"{{{base}, "raw_data": {{"path": "C:\\u0000"}}}}"#),
            // Checked objects still checked; other faults reported together.
            format!(r#"{{{base}, "biometrics": {{"heart_rate": "fast"}}, "context": {{"a": 1}}}}"#),
            r#"{"source": "text", "emotion_label": "nope", "context": {"a": 1}}"#.to_owned(),
            // Not an object, not JSON, trailing garbage.
            "[1, 2]".to_owned(),
            "{\"user_id\": ".to_owned(),
            format!(r#"{{{base}, "context": {{"a": 1}}}} x"#),
        ];
        for text in &cases {
            let (a, b) = (via_value(text, &ctx(now())), via_body(text, &ctx(now())));
            assert_eq!(a, b, "{text}");
        }
        // Bytes that are not UTF-8 (an MQTT payload): refused as before.
        let bad = b"{\"user_id\": \"u1\", \"context\": {\"a\": \"\xff\"}}";
        let expected = serde_json::from_slice::<Value>(bad)
            .expect_err("not UTF-8")
            .to_string();
        match Body::parse(bad) {
            Err(BodyError::NotJson(e)) => assert_eq!(e.to_string(), expected),
            other => panic!("{other:?}"),
        }
        // The text path really kept the text (stored as it came).
        let body = Body::parse(cases[0].as_bytes()).expect("body");
        assert!(body.get("context").is_none() && body.get("biometrics").is_some());
        let e = validate_body(body, &ctx(now())).expect("valid");
        let raw = e.raw_data.expect("raw_data");
        assert!(!raw.may_hold_nul());
        assert_eq!(
            raw.text(),
            r#"{"text_sample": "é \" \n", "n": 12345678901234567890}"#
        );
    }

    mod both_paths {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Random objects (nested, duplicate keys, escapes, big numbers) in
            /// every object field: both paths agree.
            #[test]
            fn any_objects_validate_the_same_through_both_paths(
                objects in prop::collection::vec(
                    (0usize..5, prop_oneof![
                        Just("null".to_owned()),
                        "[a-c]{1,2}".prop_map(|k| format!(r#"{{"{k}": 1, "{k}": [true, "x\\u0000"]}}"#)),
                        (-1e300f64..1e300).prop_map(|x| format!(r#"{{"x": {x}, "y": {{"z": "\u00e9"}}}}"#)),
                        Just(r#"{"big": 1e999}"#.to_owned()),
                        Just(r#"{"nul": "\u0000"}"#.to_owned()),
                        Just("\"not an object\"".to_owned()),
                    ]),
                    0..6,
                )
            ) {
                let mut text = r#"{"user_id": "u1", "source": "voice", "emotion_label": "calm""#.to_owned();
                for (field, value) in &objects {
                    text.push_str(&format!(r#", "{}": {value}"#, OBJECTS[*field].0));
                }
                text.push('}');
                prop_assert_eq!(via_value(&text, &ctx(now())), via_body(&text, &ctx(now())), "{}", text);
            }
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 8, 15, 14, 30, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn full_original_event_validates() {
        let body = obj(json!({
            "user_id": 123, "session_id": "session_123_1643723400", "source": "facial",
            "emotion_label": "joy", "valence": 0.75, "arousal": 0.65, "confidence": 0.92,
            "timestamp": "2024-08-15T14:30:00.123456",
            "biometrics": {"heart_rate": 72.5}, "device_info": {"platform": "iOS"},
            "location": {"type": "home", "latitude": 1.5}, "raw_data": {"action_units": {"AU6": 2.0}},
            "context": {"time_period": "afternoon"}, "ignored_extra": true
        }));
        let e = validate(&body, &ctx(now())).expect("valid");
        assert_eq!(e.user_id, "123");
        assert_eq!(e.session_id, "session_123_1643723400");
        assert_eq!(e.source, Source::Facial);
        assert_eq!(e.emotion_label, EmotionLabel::Joy);
        assert_eq!(
            (e.valence, e.arousal, e.confidence),
            (0.75, 0.65, Some(0.92))
        );
        assert_eq!(e.timestamp.timestamp_subsec_micros(), 123_456);
        assert_eq!(e.producer, "client");
        assert!(e.raw_data.is_some() && e.biometrics.is_some());
        // The owned form moves the objects instead of copying them and
        // builds the same event.
        assert_eq!(validate_owned(body.clone(), &ctx(now())), Ok(e));
        let mut bad = body;
        bad.insert("context".into(), json!({"note": "a\u{0}b"}));
        bad.insert("valence".into(), json!(7));
        assert_eq!(
            validate_owned(bad.clone(), &ctx(now())),
            validate(&bad, &ctx(now()))
        );
        assert_eq!(
            validate(&bad, &ctx(now()))
                .expect_err("bad")
                .errors
                .iter()
                .map(|e| e.field)
                .collect::<Vec<_>>(),
            ["valence", "context"]
        );
    }

    #[test]
    fn label_fills_coordinates_and_coordinates_fill_label() {
        let e = validate(
            &obj(json!({"user_id": 1, "source": "text", "emotion_label": "sadness"})),
            &ctx(now()),
        )
        .expect("valid");
        let c = EmotionLabel::Sadness.coordinates().expect("placed");
        assert_eq!((e.valence, e.arousal), (c.valence, c.arousal));
        assert_eq!(e.timestamp, now(), "missing timestamp means now");
        assert_eq!(e.session_id, format!("session_1_{}", now().timestamp()));

        let e = validate(
            &obj(json!({"user_id": 1, "source": "text", "valence": 0.8, "arousal": 0.7})),
            &ctx(now()),
        )
        .expect("valid");
        assert_eq!(e.emotion_label, EmotionLabel::Joy);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                json!({"user_id": 1, "source": "text", "valence": 2.0, "arousal": 0.5}),
                "valence",
            ),
            (
                json!({"user_id": 1, "source": "text", "valence": 0.1, "arousal": -0.1}),
                "arousal",
            ),
            (
                json!({"user_id": 1, "source": "text", "emotion_label": "joy", "confidence": "NaN"}),
                "confidence",
            ),
            (
                json!({"user_id": 1, "source": "telepathy", "emotion_label": "joy"}),
                "source",
            ),
            (
                json!({"user_id": 0, "source": "text", "emotion_label": "joy"}),
                "user_id",
            ),
            (
                json!({"user_id": "0", "source": "text", "emotion_label": "joy"}),
                "user_id",
            ),
            (
                json!({"user_id": 1, "source": "text", "emotion_label": "elation"}),
                "emotion_label",
            ),
            (
                json!({"user_id": 1, "source": "text", "emotion_label": "joy", "timestamp": "yesterday"}),
                "timestamp",
            ),
            (
                json!({"user_id": 1, "source": "text", "emotion_label": "joy", "biometrics": {"hr": "x"}}),
                "biometrics",
            ),
            (
                json!({"user_id": 1, "source": "text", "emotion_label": "unknown"}),
                "valence",
            ),
            (json!({"user_id": 1, "source": "text"}), "emotion_label"),
            (
                json!({"user_id": 1, "source": "text", "emotion_label": "joy", "event_id": "nope"}),
                "event_id",
            ),
            (
                json!({"user_id": "a/b", "source": "text", "emotion_label": "joy"}),
                "user_id",
            ),
        ];
        for (body, field) in cases {
            let e = validate(&obj(body.clone()), &ctx(now())).expect_err(&body.to_string());
            assert!(e.errors.iter().any(|f| f.field == field), "{body}: {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let e = validate(
            &obj(json!({"user_id": -4, "source": 7, "valence": 9, "arousal": 3})),
            &ctx(now()),
        )
        .expect_err("invalid");
        let fields: Vec<_> = e.errors.iter().map(|f| f.field).collect();
        for f in ["user_id", "source", "valence", "arousal"] {
            assert!(fields.contains(&f), "{fields:?}");
        }
    }

    #[test]
    fn connection_binding_wins_and_is_enforced() {
        let mut c = ctx(now());
        c.user_id = Some("42");
        c.session_id = Some("s-conn");
        let e = validate(
            &obj(json!({"source": "voice", "emotion_label": "calm", "session_id": "s-body"})),
            &c,
        )
        .expect("valid");
        assert_eq!(
            (e.user_id.as_str(), e.session_id.as_str()),
            ("42", "s-conn")
        );
        assert!(
            validate(
                &obj(json!({"user_id": 7, "source": "voice", "emotion_label": "calm"})),
                &c
            )
            .is_err()
        );
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        for s in [
            "2024-08-15T14:30:00Z",
            "2024-08-15T16:30:00+02:00",
            "2024-08-15T14:30:00",
            "2024-08-15 14:30:00.0",
        ] {
            assert_eq!(parse_timestamp_str(s), Ok(now()), "{s}");
        }
        assert_eq!(parse_timestamp(&json!(now().timestamp())), Ok(now()));
        assert!(parse_timestamp(&json!(f64::MAX)).is_err());
    }

    #[test]
    fn nul_in_top_level_strings_is_refused() {
        for field in ["user_id", "session_id"] {
            let mut body = obj(json!({"user_id": "u1", "source": "text", "emotion_label": "joy"}));
            body.insert(field.into(), json!("ab\u{0}c"));
            let e = validate(&body, &ctx(now())).expect_err(field);
            assert!(e.errors.iter().any(|f| f.field == field), "{e}");
        }
        // A session the transport binds (the WebSocket's `?session_id=`).
        let mut c = ctx(now());
        c.session_id = Some("s\u{0}");
        let e = validate(
            &obj(json!({"user_id": "u1", "source": "text", "emotion_label": "joy"})),
            &c,
        )
        .expect_err("NUL in the bound session");
        assert_eq!(e.errors[0].field, "session_id", "{e}");
        // Fields the gateway or a plugin fills in, checked on the built event.
        let good = validate(
            &obj(json!({"user_id": "u1", "source": "text", "emotion_label": "joy"})),
            &ctx(now()),
        )
        .expect("valid");
        assert_eq!(check_storable(&good), Ok(()));
        let mut bad = good.clone();
        bad.producer = "plug\0in@1".into();
        bad.gateway_id = "gw\0".into();
        let e = check_storable(&bad).expect_err("NUL");
        let fields: Vec<_> = e.errors.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["gateway_id", "producer"], "{e}");
    }

    #[test]
    fn nul_in_nested_json_values_is_refused_with_its_path() {
        let cases = [
            (
                json!({"context": {"notes": ["a", "b", "c\u{0}"]}}),
                "context",
                "context.notes[2]",
            ),
            (
                json!({"raw_data": {"a": {"b": [{"c": "\u{0}"}]}}}),
                "raw_data",
                "raw_data.a.b[0].c",
            ),
            (
                json!({"location": {"name": "x\u{0}y"}}),
                "location",
                "location.name",
            ),
            (
                json!({"device_info": {"platform": "iOS\u{0}"}}),
                "device_info",
                "device_info.platform",
            ),
        ];
        for (extra, field, path) in cases {
            let mut body = obj(json!({"user_id": "u1", "source": "text", "emotion_label": "joy"}));
            body.extend(obj(extra.clone()));
            let e = validate(&body, &ctx(now())).expect_err(&extra.to_string());
            assert_eq!(e.errors.len(), 1, "{e}");
            assert_eq!(e.errors[0].field, field, "{e}");
            assert!(e.errors[0].message.contains(path), "{path}: {e}");
            assert!(e.to_string().starts_with(field), "{e}");
        }
        // The same rule on a built event.
        let mut ev = validate(
            &obj(json!({"user_id": "u1", "source": "text", "emotion_label": "joy"})),
            &ctx(now()),
        )
        .expect("valid");
        ev.context = Some(Json::new(json!({"notes": [1, {"t": "\u{0}"}]})));
        let e = check_storable(&ev).expect_err("NUL");
        assert_eq!(e.errors[0].field, "context");
        assert!(e.errors[0].message.contains("context.notes[1].t"), "{e}");
        // Other control characters and escapes are fine: jsonb stores them.
        let ok = obj(
            json!({"user_id": "u1", "source": "text", "emotion_label": "joy",
                            "context": {"s": "tab\there \u{1} \\u0000 literally"}}),
        );
        assert!(validate(&ok, &ctx(now())).is_ok());
    }

    #[test]
    fn nul_in_json_object_keys_is_refused() {
        let cases = [
            (json!({"context": {"k\u{0}": 1}}), "context"),
            (json!({"raw_data": {"a": [{"\u{0}": true}]}}), "raw_data"),
            (json!({"biometrics": {"heart\u{0}rate": 70}}), "biometrics"),
        ];
        for (extra, field) in cases {
            let mut body = obj(json!({"user_id": "u1", "source": "text", "emotion_label": "joy"}));
            body.extend(obj(extra.clone()));
            let e = validate(&body, &ctx(now())).expect_err(&extra.to_string());
            assert_eq!(e.errors[0].field, field, "{e}");
            assert!(e.errors[0].message.contains("U+0000"), "{e}");
        }
        assert_eq!(
            find_nul("raw_data", &json!({"a": [{"\u{0}": true}]})).as_deref(),
            Some("raw_data.a[0][\"\\0\"]")
        );
    }

    #[test]
    fn stored_form_round_trips_through_postcard_and_json() {
        let body = obj(
            json!({"user_id": "u1", "source": "text", "emotion_label": "joy",
            "context": {"nested": [1, {"a": null}]}}),
        );
        let e = validate(&body, &ctx(now())).expect("valid");
        let bytes = postcard::to_stdvec(&e).expect("encode");
        assert_eq!(
            postcard::from_bytes::<EmotionEvent>(&bytes).expect("decode"),
            e
        );
        let text = serde_json::to_string(&e).expect("json");
        assert!(text.contains(r#""context":{"nested""#), "{text}");
        assert_eq!(
            serde_json::from_str::<EmotionEvent>(&text).expect("json back"),
            e
        );
    }
}
