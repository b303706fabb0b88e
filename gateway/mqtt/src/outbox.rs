//! Results going out: each stored event's analysis to
//! `{emotions}/{user_id}/analysis`, the user's new fused estimate (when the
//! event made one) to `{emotions}/{user_id}/fused`, alerts to
//! `{alerts}/{user_id}`, and errors to `{devices}/{device_id}/errors`.
//!
//! Analysis and alerts come from the ingest pipeline's live feed
//! ([`emotion_pipeline::live::Live`]), so they cover events from every transport
//! (WebSocket, wearables, MQTT) and the alert rules and their debounce are the
//! dashboard's (high stress, depression indicators, a flagged risk score, a
//! high-severity anomaly; one per user and kind per minute).
//!
//! Publishing never makes ingest wait: the live feed drops the oldest entries
//! for a receiver that falls behind, and each sink is a bounded queue; what is
//! dropped is counted (`results.shed` in `GET /api/mqtt`). On the embedded
//! broker a result is published only when a device subscribed to its topic,
//! and the feed is not even listened to until one has (so unread analysis
//! costs nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use emotion_core::EmotionEvent;
use emotion_core::analyzer::EventOutcome;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::broker::Publisher;
use super::rejection::{Rejection, error_json};
use super::stats::Stats;
use super::topics::TopicScheme;
use emotion_pipeline::live::{Alert, Live, LiveEvent};

/// Where results go.
#[derive(Debug)]
pub struct Outbox {
    embedded: Option<Publisher>,
    upstream: Option<rumqttc::AsyncClient>,
    topics: TopicScheme,
    stats: Arc<Stats>,
    live: Arc<Live>,
    /// The analysis feed, once wanted, waiting for `follow` to take it.
    feed: Mutex<Option<broadcast::Receiver<Arc<LiveEvent>>>>,
    feed_started: AtomicBool,
    feed_ready: Notify,
}

impl Outbox {
    pub fn new(
        embedded: Option<Publisher>,
        upstream: Option<rumqttc::AsyncClient>,
        topics: TopicScheme,
        stats: Arc<Stats>,
        live: Arc<Live>,
    ) -> Self {
        let o = Outbox {
            embedded,
            upstream,
            topics,
            stats,
            live,
            feed: Mutex::new(None),
            feed_started: AtomicBool::new(false),
            feed_ready: Notify::new(),
        };
        // Upstream, every analysis goes out.
        if o.upstream.is_some() {
            o.want_analysis();
        }
        o
    }

    /// Start listening to the analysis feed (idempotent). Called when a
    /// device's analysis subscription is accepted, before its SUBACK goes
    /// out, so that every event stored after the SUBACK is published.
    pub fn want_analysis(&self) {
        if !self.feed_started.swap(true, Ordering::AcqRel) {
            *self.feed.lock() = Some(self.live.subscribe_events());
            self.feed_ready.notify_one();
        }
    }

    /// Publish the analysis of a newly stored event.
    pub fn analysis(&self, event: &EmotionEvent, outcome: &EventOutcome) {
        let topic = self.topics.analysis(&event.user_id);
        if self.wanted(&topic) {
            let payload = analysis_json(event, outcome);
            self.send(topic, &payload, &self.stats.published_analysis);
        }
        if let Some(fused) = &outcome.fused {
            let topic = self.topics.fused(&event.user_id);
            if self.wanted(&topic) {
                let mut payload = json!(fused);
                payload["user_id"] = json!(event.user_id);
                self.send(topic, &payload, &self.stats.published_fused);
            }
        }
    }

    /// Publish an alert.
    pub fn alert(&self, alert: &Alert) {
        let topic = self.topics.alerts(&alert.user_id);
        if self.wanted(&topic) {
            let payload = json!(alert);
            self.send(topic, &payload, &self.stats.published_alerts);
        }
    }

    /// Report a dropped message to its device.
    pub fn device_error(&self, device_id: &str, topic: &str, r: &Rejection) {
        let to = self.topics.errors(device_id);
        if self.wanted(&to) {
            let payload = error_json(device_id, topic, r);
            self.send(to, &payload, &self.stats.published_errors);
        }
    }

    /// Whether any sink takes `topic`.
    fn wanted(&self, topic: &str) -> bool {
        self.upstream.is_some() || self.embedded.as_ref().is_some_and(|p| p.subscribed(topic))
    }

    fn send(&self, topic: String, payload: &Value, counter: &AtomicU64) {
        let bytes = Bytes::from(payload.to_string());
        let mut sent = false;
        if let Some(p) = &self.embedded
            && p.subscribed(&topic)
        {
            if p.publish(topic.clone(), bytes.clone()) {
                sent = true;
            } else {
                self.stats.shed_results.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(c) = &self.upstream {
            match c.try_publish(topic, rumqttc::QoS::AtMostOnce, false, bytes) {
                Ok(()) => sent = true,
                Err(_) => {
                    self.stats.shed_results.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if sent {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Follow the live feed until `token` is cancelled: alerts always (they are
/// few), analysis once wanted (see [`Outbox::want_analysis`]).
pub async fn follow(outbox: Arc<Outbox>, token: CancellationToken) {
    let mut alerts = outbox.live.subscribe_alerts();
    let mut events = None;
    loop {
        if events.is_none() {
            events = outbox.feed.lock().take();
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = outbox.feed_ready.notified(), if events.is_none() => {}
            a = alerts.recv() => match a {
                Ok(alert) => outbox.alert(&alert),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    outbox.stats.shed_results.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            e = async { match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            } } => match e {
                Ok(le) => outbox.analysis(&le.event, &le.outcome),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    outbox.stats.shed_results.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

/// The analysis message: the WebSocket `processed` reply (`analysis` and
/// `metrics`), plus whose event it was.
pub fn analysis_json(event: &EmotionEvent, outcome: &EventOutcome) -> Value {
    json!({
        "status": "processed",
        "event_id": event.event_id,
        "task_id": event.event_id,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "source": event.source.as_str(),
        "emotion_label": event.emotion_label.as_str(),
        "valence": event.valence,
        "arousal": event.arousal,
        "timestamp": event.timestamp.to_rfc3339(),
        "analysis": outcome.analysis,
        "metrics": outcome.metrics,
    })
}
