//! The live feed of analyzed events, and the alerts raised from it.
//!
//! The analyzer stage of the ingest pipeline hands every newly analyzed event
//! to [`Live::publish`]. Two things happen there, both cheap:
//!
//! - alert rules are checked (a few comparisons; a lock is taken only when a
//!   rule fires, to debounce it per user and kind), and a raised alert goes to
//!   the alert broadcast and a short ring of recent alerts, whether or not a
//!   dashboard is watching;
//! - if anyone subscribed (the dashboard's WebSocket, the MQTT transport),
//!   the event and its outcome go to the event broadcast. With no subscriber
//!   nothing is cloned or sent.
//!
//! Broadcast receivers that fall behind lose the oldest messages (they see
//! `Lagged`), so a slow dashboard never slows ingest down.
//!
//! The one-time tickets with which a browser opens the dashboard's WebSocket
//! live here too (see [`Live::issue_ticket`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use emotion_core::analyzer::{Analysis, EventOutcome, RiskFlag, RiskLevel, Severity, regions};
use emotion_core::{EmotionEvent, Source};
use hashbrown::HashMap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::telemetry::Transport;

/// Events buffered per subscriber before the oldest are dropped for it.
const EVENT_CAPACITY: usize = 4096;
/// Alerts buffered per subscriber.
const ALERT_CAPACITY: usize = 256;
/// Recent alerts kept for a dashboard that connects later.
const RECENT_ALERTS: usize = 100;
/// One alert per user and kind within this window (a user who stays in
/// high stress raises one alert a minute, not one per event).
pub const ALERT_DEBOUNCE: Duration = Duration::from_secs(60);
/// Debounce entries kept before old ones are pruned.
const DEBOUNCE_PRUNE_AT: usize = 100_000;
/// How long a dashboard ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Unused tickets kept at most (oldest dropped first), so a client that
/// asks for tickets in a loop cannot grow memory.
const MAX_TICKETS: usize = 1024;

/// One analyzed event, as stored and as analyzed.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub event: Arc<EmotionEvent>,
    pub outcome: EventOutcome,
    pub transport: Transport,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The event lies in the high-stress region (v ≤ −0.3, a ≥ 0.7).
    HighStress,
    /// The event lies in the depression-indicator region (v ≤ −0.4, a ≤ 0.3).
    DepressionIndicators,
    /// The user's risk score reached the flag threshold (0.7).
    RiskFlagged,
    /// A high-severity anomaly against the user's baseline (|z| > 3).
    HighSeverityAnomaly,
    /// The periodic risk sweep newly flags the user, or finds more than
    /// before (judged over their recent history, not one event).
    RiskSweep,
}

impl AlertKind {
    pub const ALL: [AlertKind; 5] = [
        AlertKind::HighStress,
        AlertKind::DepressionIndicators,
        AlertKind::RiskFlagged,
        AlertKind::HighSeverityAnomaly,
        AlertKind::RiskSweep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::HighStress => "high_stress",
            AlertKind::DepressionIndicators => "depression_indicators",
            AlertKind::RiskFlagged => "risk_flagged",
            AlertKind::HighSeverityAnomaly => "high_severity_anomaly",
            AlertKind::RiskSweep => "risk_sweep",
        }
    }
}

/// An alert, as the dashboard shows it and MQTT publishes it.
///
/// An alert about one event names it (`session_id` … `timestamp`); a risk
/// sweep alert is about the user's history and names its `indicators`
/// instead. Fields that do not apply are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// `critical` for a flagged risk score (or a `high` sweep flag), `high`
    /// otherwise.
    pub severity: &'static str,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arousal: Option<f64>,
    /// The user's risk score after this event (or at the sweep), when known.
    pub risk_score: Option<f64>,
    /// The sweep's indicators (`high_stress`, `emotional_crisis`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indicators: Vec<&'static str>,
    pub message: String,
    /// When the event happened (for a sweep: the user's latest activity).
    pub timestamp: DateTime<Utc>,
    /// When the alert was raised.
    pub raised_at: DateTime<Utc>,
}

/// The hub. One per gateway, shared by the ingest pipeline, the API and MQTT.
#[derive(Debug)]
pub struct Live {
    events: broadcast::Sender<Arc<LiveEvent>>,
    alerts: broadcast::Sender<Arc<Alert>>,
    recent: Mutex<VecDeque<Arc<Alert>>>,
    /// When each user last raised each kind of alert (ingestion time). Keyed
    /// by user alone so a debounced event is looked up without allocating.
    debounce: Mutex<HashMap<String, [Option<DateTime<Utc>>; AlertKind::ALL.len()]>>,
    raised: [AtomicU64; AlertKind::ALL.len()],
    tickets: Mutex<HashMap<String, Instant>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            events: broadcast::channel(EVENT_CAPACITY).0,
            alerts: broadcast::channel(ALERT_CAPACITY).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_ALERTS)),
            debounce: Mutex::new(HashMap::new()),
            raised: Default::default(),
            tickets: Mutex::new(HashMap::new()),
        }
    }
}

impl Live {
    /// Called by the analyzer stage for every newly stored event.
    pub fn publish(&self, event: &Arc<EmotionEvent>, outcome: &EventOutcome, transport: Transport) {
        for kind in alert_kinds(event, outcome) {
            self.raise(kind, event, outcome);
        }
        // `send` fails only when nobody listens; checking first also skips
        // the clone of the outcome in that case.
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(LiveEvent {
                event: event.clone(),
                outcome: outcome.clone(),
                transport,
            }));
        }
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.events.subscribe()
    }

    pub fn subscribe_alerts(&self) -> broadcast::Receiver<Arc<Alert>> {
        self.alerts.subscribe()
    }

    /// The latest alerts, oldest first.
    pub fn recent_alerts(&self) -> Vec<Arc<Alert>> {
        self.recent.lock().iter().cloned().collect()
    }

    /// Alerts raised so far, per kind.
    pub fn alerts_raised(&self) -> impl Iterator<Item = (AlertKind, u64)> + '_ {
        AlertKind::ALL
            .into_iter()
            .map(|k| (k, self.raised[k as usize].load(Ordering::Relaxed)))
    }

    fn raise(&self, kind: AlertKind, e: &EmotionEvent, outcome: &EventOutcome) {
        let now = e.ingested_at;
        let Ok(window) = chrono::Duration::from_std(ALERT_DEBOUNCE) else {
            return;
        };
        {
            let mut d = self.debounce.lock();
            let slot = kind as usize;
            if let Some(last) = d.get(e.user_id.as_str()).and_then(|k| k[slot])
                && now - last < window
            {
                return;
            }
            if d.len() >= DEBOUNCE_PRUNE_AT {
                d.retain(|_, k| k.iter().flatten().any(|t| now - *t < window));
            }
            match d.get_mut(e.user_id.as_str()) {
                Some(k) => k[slot] = Some(now),
                None => {
                    let mut k = [None; AlertKind::ALL.len()];
                    k[slot] = Some(now);
                    d.insert(e.user_id.clone(), k);
                }
            }
        }
        let risk = match &outcome.analysis {
            Analysis::Contextual(c) => Some(&c.risk),
            Analysis::InsufficientData { .. } => None,
        };
        let message = match kind {
            AlertKind::HighStress => format!(
                "high stress: valence {:.2}, arousal {:.2}",
                e.valence, e.arousal
            ),
            AlertKind::DepressionIndicators => format!(
                "depression indicators: valence {:.2}, arousal {:.2}",
                e.valence, e.arousal
            ),
            AlertKind::RiskFlagged => match risk {
                Some(r) => format!(
                    "risk score {:.2} flagged: {}",
                    r.score,
                    r.factors.join("; ")
                ),
                None => "risk score flagged".to_owned(),
            },
            // Raised by `raise_flag`, never from one event.
            AlertKind::RiskSweep => return,
            AlertKind::HighSeverityAnomaly => match &outcome.analysis {
                Analysis::Contextual(c) => match &c.anomaly {
                    Some(a) => format!(
                        "high-severity anomaly: z valence {:.1}, z arousal {:.1}",
                        a.valence_zscore, a.arousal_zscore
                    ),
                    None => "high-severity anomaly".to_owned(),
                },
                Analysis::InsufficientData { .. } => "high-severity anomaly".to_owned(),
            },
        };
        let alert = Arc::new(Alert {
            kind,
            severity: if kind == AlertKind::RiskFlagged {
                "critical"
            } else {
                "high"
            },
            user_id: e.user_id.clone(),
            session_id: Some(e.session_id.clone()),
            event_id: Some(e.event_id),
            source: Some(e.source),
            valence: Some(e.valence),
            arousal: Some(e.arousal),
            risk_score: risk.map(|r| r.score),
            indicators: Vec::new(),
            message,
            timestamp: e.timestamp,
            raised_at: Utc::now(),
        });
        self.send(alert);
    }

    /// Raise the risk sweep's alert for a user it newly flags (the sweep
    /// decides when; nothing is debounced here).
    pub fn raise_flag(&self, flag: &RiskFlag) {
        let reasons: Vec<&str> = flag.indicators.iter().map(|i| i.reason.as_str()).collect();
        let high = flag.level == RiskLevel::High;
        self.send(Arc::new(Alert {
            kind: AlertKind::RiskSweep,
            severity: if high { "critical" } else { "high" },
            user_id: flag.user_id.clone(),
            session_id: None,
            event_id: None,
            source: None,
            valence: None,
            arousal: None,
            risk_score: Some(flag.risk_score),
            indicators: flag.indicator_names().collect(),
            message: format!(
                "risk sweep ({} risk): {}",
                if high { "high" } else { "medium" },
                reasons.join("; ")
            ),
            timestamp: flag.last_seen,
            raised_at: Utc::now(),
        }));
    }

    fn send(&self, alert: Arc<Alert>) {
        self.raised[alert.kind as usize].fetch_add(1, Ordering::Relaxed);
        {
            let mut r = self.recent.lock();
            if r.len() == RECENT_ALERTS {
                r.pop_front();
            }
            r.push_back(alert.clone());
        }
        let _ = self.alerts.send(alert);
    }

    /// Forget a user (an erasure): their recent alerts and debounce state.
    pub fn forget_user(&self, user_id: &str) {
        self.recent.lock().retain(|a| a.user_id != user_id);
        self.debounce.lock().remove(user_id);
    }

    /// A fresh one-time ticket for opening `/ws/dashboard` (valid for
    /// [`TICKET_TTL`]). Browsers cannot set headers on a WebSocket, and a
    /// token in the URL would end up in logs; a ticket in the URL is
    /// harmless once used or expired.
    pub fn issue_ticket(&self) -> String {
        let bytes: [u8; 32] = rand::random();
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut t = self.tickets.lock();
        t.retain(|_, issued| now.duration_since(*issued) < TICKET_TTL);
        if t.len() >= MAX_TICKETS
            && let Some(oldest) = t.iter().min_by_key(|(_, i)| **i).map(|(k, _)| k.clone())
        {
            t.remove(&oldest);
        }
        t.insert(ticket.clone(), now);
        ticket
    }

    /// Use up a ticket: true if it was issued and has not expired or been used.
    pub fn redeem_ticket(&self, ticket: &str) -> bool {
        match self.tickets.lock().remove(ticket) {
            Some(issued) => issued.elapsed() < TICKET_TTL,
            None => false,
        }
    }
}

/// Which alert rules an event meets.
fn alert_kinds(e: &EmotionEvent, outcome: &EventOutcome) -> impl Iterator<Item = AlertKind> {
    let (flagged, high_anomaly) = match &outcome.analysis {
        Analysis::Contextual(c) => (
            c.risk.flagged,
            c.anomaly
                .as_ref()
                .is_some_and(|a| a.severity == Severity::High),
        ),
        Analysis::InsufficientData { .. } => (false, false),
    };
    [
        (
            regions::high_stress(e.valence, e.arousal),
            AlertKind::HighStress,
        ),
        (
            regions::depression(e.valence, e.arousal),
            AlertKind::DepressionIndicators,
        ),
        (flagged, AlertKind::RiskFlagged),
        (high_anomaly, AlertKind::HighSeverityAnomaly),
    ]
    .into_iter()
    .filter_map(|(hit, k)| hit.then_some(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use emotion_core::Analyzer;
    use emotion_core::analyzer::AnalyzerConfig;
    use emotion_core::event::{IngestContext, validate};
    use serde_json::json;

    fn event(user: &str, v: f64, a: f64, at: DateTime<Utc>) -> EmotionEvent {
        let body = json!({"user_id": user, "session_id": "s1", "source": "voice", "valence": v, "arousal": a});
        let ctx = IngestContext {
            user_id: None,
            session_id: None,
            gateway_id: "gw",
            producer: "client",
            now: at,
            event_id: uuid::Uuid::now_v7(),
            confidence_in_source_range: false,
        };
        let serde_json::Value::Object(m) = body else {
            panic!("object")
        };
        validate(&m, &ctx).expect("valid event")
    }

    #[test]
    fn high_stress_raises_one_alert_per_user_and_minute() {
        let live = Live::default();
        let mut alerts = live.subscribe_alerts();
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let t0 = Utc::now();
        for i in 0..5 {
            let e = Arc::new(event("u1", -0.8, 0.9, t0 + chrono::Duration::seconds(i)));
            let o = an.ingest(&e);
            live.publish(&e, &o, Transport::WebSocket);
        }
        let a = alerts.try_recv().expect("an alert");
        assert_eq!(a.kind, AlertKind::HighStress);
        assert_eq!(a.user_id, "u1");
        assert!(alerts.try_recv().is_err(), "debounced");
        // Another user is not debounced by u1, and a minute later u1 alerts again.
        let e = Arc::new(event("u2", -0.8, 0.9, t0));
        let o = an.ingest(&e);
        live.publish(&e, &o, Transport::WebSocket);
        assert_eq!(alerts.try_recv().expect("u2").user_id, "u2");
        let e = Arc::new(event("u1", -0.8, 0.9, t0 + chrono::Duration::seconds(61)));
        let o = an.ingest(&e);
        live.publish(&e, &o, Transport::WebSocket);
        assert_eq!(alerts.try_recv().expect("u1 again").user_id, "u1");
        assert_eq!(live.recent_alerts().len(), 3);
        live.forget_user("u1");
        assert_eq!(live.recent_alerts().len(), 1, "an erased user's alerts go");
    }

    #[test]
    fn calm_events_raise_nothing_and_nobody_listening_costs_nothing() {
        let live = Live::default();
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let e = Arc::new(event("u1", 0.6, 0.2, Utc::now()));
        let o = an.ingest(&e);
        live.publish(&e, &o, Transport::WebSocket);
        assert!(live.recent_alerts().is_empty());
        let mut rx = live.subscribe_events();
        live.publish(&e, &o, Transport::Mqtt);
        assert_eq!(rx.try_recv().expect("event").transport, Transport::Mqtt);
    }

    #[test]
    fn tickets_are_single_use() {
        let live = Live::default();
        let t = live.issue_ticket();
        assert_eq!(t.len(), 64);
        assert!(!live.redeem_ticket("nope"));
        assert!(live.redeem_ticket(&t));
        assert!(!live.redeem_ticket(&t), "second use refused");
    }
}
