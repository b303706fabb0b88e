//! From an MQTT message to a stored event: decoding, validation, the plugin
//! for raw readings, the durable buffer, and the verdict that decides the
//! acknowledgement. Shared by the embedded broker and the upstream client.
//!
//! Bad input (oversized, malformed JSON, unknown source, out-of-range values,
//! a topic the sender may not use) is dropped with a counted, logged reason
//! and an error published to `{devices}/{device_id}/errors`; the message is
//! still acknowledged (it would fail the same way if redelivered). Transient
//! failures (storage, plugin overload, shutdown) are *not* acknowledged, so the
//! sender's session redelivers them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use emotion_core::event::{
    Body, BodyError, FieldError, IngestContext, default_session_id, validate_body,
};
use emotion_core::reading::RawReading;
use emotion_core::{EmotionEvent, Source};
use emotion_plugin_host::ReadingError;
use hashbrown::HashMap;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::handles::MqttHandles;
use super::ids::event_id_for;
use super::outbox::Outbox;
use super::rejection::Rejection;
use super::stats::{DeviceStats, RejectKind, Stats};
use super::topics::{Inbound, TopicScheme};
use crate::config::MqttConfig;
use emotion_pipeline::ingest::{Accepted, IngestError};
use emotion_pipeline::readings::ReadingOutcome;
use emotion_pipeline::telemetry::Transport;

/// What became of a message; decides its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Durable in the buffer.
    Stored,
    /// Its `event_id` was stored before (a redelivery): durable.
    Duplicate,
    /// Dropped for good (bad input, not allowed, erased user, no emotion).
    Rejected(RejectKind),
    /// Not stored because of a transient failure: do not acknowledge, so
    /// that it is delivered again.
    Retry,
}

/// A verdict now, or once the message is durable.
pub enum Ticket {
    Ready(Verdict),
    Pending(Pin<Box<dyn Future<Output = Verdict> + Send>>),
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ticket::Ready(v) => f.debug_tuple("Ready").field(v).finish(),
            Ticket::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl Ticket {
    pub async fn resolve(self) -> Verdict {
        match self {
            Ticket::Ready(v) => v,
            Ticket::Pending(f) => f.await,
        }
    }
}

/// Who sent a message.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The device (authenticated for the embedded broker; from the topic for
    /// upstream readings; unknown for upstream events).
    pub device_id: Option<String>,
    /// The user the device is bound to.
    pub user: Option<String>,
    /// Part of a derived event id: who could have sent these bytes.
    pub scope: String,
    pub stats: Option<Arc<DeviceStats>>,
    /// Devices of the embedded broker are rate-limited per device; the
    /// upstream broker is a trusted back-end.
    pub rate_limited: bool,
}

/// State shared by every connection and the upstream client.
#[derive(Debug)]
pub struct Shared {
    pub handles: MqttHandles,
    pub cfg: Arc<MqttConfig>,
    pub topics: TopicScheme,
    pub stats: Arc<Stats>,
    pub outbox: Arc<Outbox>,
    sessions: SessionMap,
    log: RateLimitedLog,
}

impl Shared {
    pub fn new(
        handles: MqttHandles,
        cfg: Arc<MqttConfig>,
        stats: Arc<Stats>,
        outbox: Arc<Outbox>,
    ) -> Self {
        let idle = handles.session_idle;
        Shared {
            topics: cfg.topics.clone(),
            sessions: SessionMap::new(idle),
            log: RateLimitedLog::default(),
            handles,
            cfg,
            stats,
            outbox,
        }
    }

    /// Decode `payload` and hand it to the pipeline. Enqueueing (for events)
    /// happens before this returns, so messages keep their order; the ticket
    /// resolves once the event is durable.
    pub async fn submit(
        self: &Arc<Self>,
        origin: &Origin,
        inbound: Inbound<'_>,
        topic: &str,
        payload: Bytes,
        qos: u8,
    ) -> Ticket {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &origin.stats {
            s.seen();
        }
        if payload.len() > self.cfg.limits.max_payload_bytes {
            return Ticket::Ready(self.reject(
                origin,
                topic,
                Rejection::new(
                    RejectKind::TooLarge,
                    format!(
                        "payload of {} bytes is larger than the limit of {} bytes (mqtt.limits.max_payload_bytes)",
                        payload.len(),
                        self.cfg.limits.max_payload_bytes
                    ),
                ),
            ));
        }
        if origin.rate_limited
            && let Some(s) = &origin.stats
            && let Some(bucket) = s.bucket.get_or_init(|| {
                let l = &self.cfg.limits;
                emotion_pipeline::rate::TokenBucket::new(
                    l.device_rate_per_second,
                    l.device_rate_burst,
                )
            })
            && let Err(wait) = bucket.take(1.0)
        {
            return Ticket::Ready(self.reject(
                origin,
                topic,
                Rejection::new(
                    RejectKind::RateLimited,
                    format!(
                        "over the device's rate limit of {} messages/s (mqtt.limits.device_rate_per_second); \
                         this message was not stored, retry in {} ms",
                        self.cfg.limits.device_rate_per_second,
                        wait.as_millis().max(1)
                    ),
                ),
            ));
        }
        let now = Utc::now();
        match inbound {
            Inbound::Event { user_id } => {
                let id = || event_id_for(qos, &origin.scope, topic, &payload);
                let device = origin.device_id.as_deref().unwrap_or("");
                match self.decode_event(&payload, user_id, device, id, now) {
                    Err(r) => Ticket::Ready(self.reject(origin, topic, r)),
                    Ok(event) => self.enqueue(origin, topic, event).await,
                }
            }
            Inbound::Reading { device_id, source } => {
                let forced_id =
                    (qos > 0).then(|| event_id_for(qos, &origin.scope, topic, &payload));
                match self.decode_reading(&payload, device_id, source, origin.user.as_deref(), now)
                {
                    Err(r) => Ticket::Ready(self.reject(origin, topic, r)),
                    Ok(reading) => self.submit_reading(origin, topic, reading, forced_id, qos),
                }
            }
        }
    }

    async fn enqueue(
        self: &Arc<Self>,
        origin: &Origin,
        topic: &str,
        event: EmotionEvent,
    ) -> Ticket {
        match self
            .handles
            .ingest
            .enqueue_via(event, Transport::Mqtt)
            .await
        {
            Err(e) => Ticket::Ready(self.ingest_failed(origin, topic, &e)),
            Ok(pending) => {
                let (me, origin, topic) = (self.clone(), origin.clone(), topic.to_owned());
                Ticket::Pending(Box::pin(async move {
                    let r = pending.wait().await;
                    me.finish(&origin, &topic, r)
                }))
            }
        }
    }

    fn submit_reading(
        self: &Arc<Self>,
        origin: &Origin,
        topic: &str,
        reading: RawReading,
        forced_id: Option<Uuid>,
        qos: u8,
    ) -> Ticket {
        let outcome = self
            .handles
            .readings
            .submit(reading, Transport::Mqtt, forced_id);
        let (me, origin, topic) = (self.clone(), origin.clone(), topic.to_owned());
        Ticket::Pending(Box::pin(async move {
            match outcome.await {
                ReadingOutcome::Plugin(
                    e @ (ReadingError::Overloaded(..) | ReadingError::ShutDown),
                ) if qos > 0 => {
                    me.log.warn(
                        "plugin_busy",
                        format_args!("reading left for redelivery: {e}"),
                    );
                    me.retry()
                }
                ReadingOutcome::Plugin(e) => me.reject(
                    &origin,
                    &topic,
                    Rejection::new(RejectKind::PluginError, format!("{}: {e}", e.kind())),
                ),
                ReadingOutcome::NoEmotion => {
                    me.stats.reject(RejectKind::NoEmotion);
                    Verdict::Rejected(RejectKind::NoEmotion)
                }
                // A redelivered reading became the same event (forced_id).
                ReadingOutcome::Stored(a) => me.finish(&origin, &topic, Ok(a)),
                ReadingOutcome::Ingest(e) => me.finish(&origin, &topic, Err(e)),
            }
        }))
    }

    /// Count and report an ingest result; publish the analysis.
    fn finish(&self, origin: &Origin, topic: &str, r: Result<Accepted, IngestError>) -> Verdict {
        match r {
            Err(e) => self.ingest_failed(origin, topic, &e),
            Ok(a) => match &a.outcome {
                Some(_) => {
                    self.stats.stored.fetch_add(1, Ordering::Relaxed);
                    if let Some(s) = &origin.stats {
                        s.stored.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Stored
                }
                None => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    if let Some(s) = &origin.stats {
                        s.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Duplicate
                }
            },
        }
    }

    fn ingest_failed(&self, origin: &Origin, topic: &str, e: &IngestError) -> Verdict {
        match e {
            IngestError::Erased => self.reject(
                origin,
                topic,
                Rejection::new(RejectKind::ErasedUser, e.to_string()),
            ),
            IngestError::Storage | IngestError::ShuttingDown => {
                self.log.warn(
                    "ingest_failed",
                    format_args!("message left for redelivery: {e}"),
                );
                self.retry()
            }
        }
    }

    fn retry(&self) -> Verdict {
        self.stats
            .left_for_redelivery
            .fetch_add(1, Ordering::Relaxed);
        Verdict::Retry
    }

    /// Count, log and report a dropped message.
    pub fn reject(&self, origin: &Origin, topic: &str, r: Rejection) -> Verdict {
        self.stats.reject(r.kind);
        self.handles.counters.record_rejected();
        if let Some(s) = &origin.stats {
            s.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let device = origin.device_id.as_deref().unwrap_or("?");
        self.log.warn(
            r.kind.as_str(),
            format_args!(
                "MQTT message dropped: device={device} topic={topic} error={}: {}",
                r.kind.as_str(),
                r.message
            ),
        );
        if let Some(device_id) = &origin.device_id {
            self.outbox.device_error(device_id, topic, &r);
        }
        Verdict::Rejected(r.kind)
    }

    fn decode_event(
        &self,
        payload: &[u8],
        user_id: &str,
        device: &str,
        event_id: impl FnOnce() -> Uuid,
        now: DateTime<Utc>,
    ) -> Result<EmotionEvent, Rejection> {
        let body = event_body(payload)?;
        // The id a message without one gets (a SHA-256 of the whole
        // message at QoS 1: 3 % of the MQTT path's CPU) is derived only
        // when the body has none; a body's own id is kept or refused.
        let event_id = if emotion_core::event::takes_context_id(body.get("event_id")) {
            event_id()
        } else {
            // Never stored: validation keeps the body's id or refuses it.
            Uuid::nil()
        };
        // A session in the body wins (devices that track their own); without
        // one, the device's current session for this user.
        let has_session = !matches!(body.get("session_id"), None | Some(Value::Null));
        let session = (!has_session).then(|| self.sessions.session(device, user_id, now));
        let ctx = IngestContext {
            user_id: Some(user_id),
            session_id: session.as_deref(),
            gateway_id: &self.handles.gateway_id,
            producer: "client",
            now,
            event_id,
            confidence_in_source_range: self.handles.confidence_in_source_range,
        };
        validate_body(body, &ctx).map_err(|e| Rejection {
            kind: RejectKind::ValidationError,
            message: e.to_string(),
            fields: Some(e.errors),
        })
    }

    fn decode_reading(
        &self,
        payload: &[u8],
        device_id: &str,
        source: &str,
        bound_user: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RawReading, Rejection> {
        let source: Source = source.parse().map_err(|_| {
            Rejection::new(
                RejectKind::UnknownSource,
                format!(
                    "unknown source `{source}` in the topic (one of: {})",
                    Source::ALL.map(Source::as_str).join(", ")
                ),
            )
        })?;
        let mut body = json_object(payload)?;
        // The topic names the device and the source; the body may repeat
        // them but not contradict them.
        for (key, expected) in [("device_id", device_id), ("source", source.as_str())] {
            match body.get(key) {
                None | Some(Value::Null) => {
                    body.insert(key.into(), Value::String(expected.to_owned()));
                }
                Some(Value::String(s)) if s == expected => {}
                Some(other) => {
                    return Err(Rejection {
                        kind: RejectKind::ValidationError,
                        message: format!("{key}: {other} does not match the topic's `{expected}`"),
                        fields: Some(vec![FieldError {
                            field: if key == "source" {
                                "source"
                            } else {
                                "device_id"
                            },
                            message: format!("does not match the topic's `{expected}`"),
                        }]),
                    });
                }
            }
        }
        if matches!(body.get("session_id"), None | Some(Value::Null)) {
            let user = match body.get("user_id") {
                Some(v @ (Value::String(_) | Value::Number(_))) => {
                    emotion_core::event::parse_user_id(v).ok()
                }
                _ => bound_user.map(str::to_owned),
            };
            if let Some(user) = user {
                let session = self.sessions.session(device_id, &user, now);
                body.insert("session_id".into(), Value::String(session));
            }
        }
        RawReading::from_json(&Value::Object(body), bound_user).map_err(|e| Rejection {
            kind: RejectKind::ValidationError,
            message: e.to_string(),
            fields: Some(e.errors),
        })
    }
}

/// An event's payload, its free-form objects kept as text ([`Body`]).
fn event_body(payload: &[u8]) -> Result<Body, Rejection> {
    Body::parse(payload).map_err(invalid_payload)
}

/// A reading's payload, parsed.
fn json_object(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid_payload(BodyError::NotObject)),
        Err(e) => Err(invalid_payload(BodyError::NotJson(e))),
    }
}

/// The refusal of a payload that is not a JSON object.
fn invalid_payload(e: BodyError) -> Rejection {
    match e {
        BodyError::NotObject => {
            Rejection::new(RejectKind::InvalidJson, "payload must be a JSON object")
        }
        BodyError::NotJson(e) => Rejection::new(
            RejectKind::InvalidJson,
            format!("payload must be valid JSON (UTF-8): {e}"),
        ),
    }
}

/// Sessions of messages that name none: one per device and user, kept while
/// messages keep coming (a gap longer than `analyzer.session_idle` starts a
/// new one), named like the original clients' default,
/// `session_{user_id}_{unix_seconds}`.
#[derive(Debug)]
struct SessionMap {
    idle: Duration,
    map: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// Live sessions kept before idle ones are pruned.
const SESSION_MAP_PRUNE_AT: usize = 100_000;

impl SessionMap {
    fn new(idle: Duration) -> Self {
        SessionMap {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, device: &str, user: &str, now: DateTime<Utc>) -> String {
        let t = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= SESSION_MAP_PRUNE_AT {
            let idle = self.idle;
            map.retain(|_, (_, last)| t.duration_since(*last) < idle);
            if map.len() >= SESSION_MAP_PRUNE_AT {
                // Every session is live: forget them all rather than grow;
                // the next messages start new sessions.
                map.clear();
            }
        }
        let key = (device.to_owned(), user.to_owned());
        match map.get_mut(&key) {
            Some((session, last)) if t.duration_since(*last) < self.idle => {
                *last = t;
                session.clone()
            }
            _ => {
                let s = default_session_id(user, now);
                map.insert(key, (s.clone(), t));
                s
            }
        }
    }
}

/// Per-message warnings, at most one per kind every 10 s (with the number
/// suppressed meanwhile), so a misbehaving device cannot flood the log.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl RateLimitedLog {
    fn warn(&self, kind: &'static str, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let suppressed = {
            let mut map = self.last.lock();
            match map.get_mut(kind) {
                Some((at, n)) if now.duration_since(*at) < LOG_EVERY => {
                    *n += 1;
                    return;
                }
                Some((at, n)) => {
                    *at = now;
                    std::mem::take(n)
                }
                None => {
                    map.insert(kind, (now, 0));
                    0
                }
            }
        };
        if suppressed > 0 {
            tracing::warn!(
                kind,
                suppressed,
                "{msg} (and {suppressed} more of this kind in the last 10s)"
            );
        } else {
            tracing::warn!(kind, "{msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::error_json;

    #[test]
    fn sessions_are_kept_per_device_and_user_until_idle() {
        let m = SessionMap::new(Duration::from_millis(50));
        let now = Utc::now();
        let a = m.session("d1", "u1", now);
        assert_eq!(a, default_session_id("u1", now));
        let later = now + chrono::Duration::seconds(5);
        assert_eq!(m.session("d1", "u1", later), a);
        assert_ne!(m.session("d2", "u1", later), "");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            m.session("d1", "u1", later),
            default_session_id("u1", later)
        );
    }

    #[test]
    fn payloads_must_be_json_objects() {
        assert_eq!(
            json_object(b"[1,2]").map_err(|r| r.kind).err(),
            Some(RejectKind::InvalidJson)
        );
        assert_eq!(
            json_object(b"{not json").map_err(|r| r.kind).err(),
            Some(RejectKind::InvalidJson)
        );
        assert_eq!(
            json_object(&[0xff, 0xfe]).map_err(|r| r.kind).err(),
            Some(RejectKind::InvalidJson)
        );
        assert!(json_object(br#"{"a":1}"#).is_ok());
    }

    #[test]
    fn error_reports_name_kind_topic_and_fields() {
        let r = Rejection {
            kind: RejectKind::ValidationError,
            message: "valence: must be between -1.0 and 1.0, got 3".into(),
            fields: Some(vec![FieldError {
                field: "valence",
                message: "must be between -1.0 and 1.0, got 3".into(),
            }]),
        };
        let v = error_json("dev-a", "emotions/1/events", &r);
        assert_eq!(v["error"], "validation_error");
        assert_eq!(v["topic"], "emotions/1/events");
        assert_eq!(v["fields"][0]["field"], "valence");
    }
}
