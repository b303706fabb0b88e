//! The periodic risk sweep (the original `detect_emotional_risk_users`): every
//! `risk_sweep.interval`, judge every user seen within the lookback by the
//! risk table over their recent history ([`emotion_core::analyzer::sweep`]
//! has the rules), keep the result for `GET /api/risk`, and alert on users it
//! newly flags. Local only: it needs no central database.
//!
//! An alert goes out when a user is flagged who was not at the previous sweep,
//! when their level rises, or when an indicator appears that they did not
//! have; a user who stays flagged for the same reasons raises nothing more.
//! Alerts take the live feed's path, so they reach the dashboard and MQTT
//! `alerts/{user_id}` like the per-event ones.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use emotion_core::Analyzer;
use emotion_core::analyzer::{RiskFlag, SweepRule};
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::buffer::EventStore;
use crate::config::RiskSweepConfig;
use crate::live::Live;

/// The outcome of one sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepResult {
    pub swept_at: DateTime<Utc>,
    pub took_ms: u64,
    /// Flagged users, highest level and score first.
    pub flagged: Vec<RiskFlag>,
    /// Idle users whose stored state could not be read (logged; not judged).
    pub unreadable: usize,
}

/// The latest sweep, shared by the sweep task and the API.
#[derive(Debug, Default)]
pub struct RiskRegister {
    latest: Mutex<Option<Arc<SweepResult>>>,
}

impl RiskRegister {
    /// The latest sweep; `None` before the first.
    pub fn latest(&self) -> Option<Arc<SweepResult>> {
        self.latest.lock().clone()
    }

    /// Forget a user (an erasure) until the next sweep judges them again.
    pub fn forget_user(&self, user_id: &str) {
        let mut latest = self.latest.lock();
        if let Some(r) = latest.as_mut()
            && r.flagged.iter().any(|f| f.user_id == user_id)
        {
            let mut r2 = (**r).clone();
            r2.flagged.retain(|f| f.user_id != user_id);
            *r = Arc::new(r2);
        }
    }
}

/// What the sweep needs: the analyzer, the store (idle users' saved state),
/// the live feed (alerts) and where to keep the result.
#[derive(Debug, Clone)]
pub struct RiskHandles {
    pub analyzer: Arc<Mutex<Analyzer>>,
    pub store: Arc<dyn EventStore>,
    pub live: Arc<Live>,
    pub register: Arc<RiskRegister>,
}

/// Does `now` show more than `before` did (a new user, a higher level, a new
/// indicator)?
fn worse(now: &RiskFlag, before: Option<&RiskFlag>) -> bool {
    let Some(before) = before else {
        return true;
    };
    now.level > before.level
        || now
            .indicator_names()
            .any(|i| !before.indicator_names().any(|j| j == i))
}

/// Sweep once at `now`, alert on what got worse, keep the result. Blocking
/// (it locks the analyzer and may read idle users' state): run it on a
/// blocking thread.
pub fn sweep_now(h: &RiskHandles, rule: &SweepRule, now: DateTime<Utc>) -> Arc<SweepResult> {
    let started = Instant::now();
    let (flagged, unreadable) = h
        .analyzer
        .lock()
        .risk_sweep_with_evicted(now, rule, |user| {
            crate::checkpoint::load_user(h.store.as_ref(), user)
        });
    for (user, e) in &unreadable {
        tracing::warn!(user, error = %e, "risk sweep: an idle user's stored state is unreadable; not judged");
    }
    let previous = h.register.latest();
    let mut raised = 0;
    for f in &flagged {
        let before = previous
            .as_ref()
            .and_then(|p| p.flagged.iter().find(|b| b.user_id == f.user_id));
        if worse(f, before) {
            h.live.raise_flag(f);
            raised += 1;
        }
    }
    let result = Arc::new(SweepResult {
        swept_at: now,
        took_ms: started.elapsed().as_millis() as u64,
        flagged,
        unreadable: unreadable.len(),
    });
    tracing::debug!(
        flagged = result.flagged.len(),
        alerts = raised,
        took_ms = result.took_ms,
        "risk sweep done"
    );
    *h.register.latest.lock() = Some(result.clone());
    result
}

/// Sweep every `cfg.interval` until `shutdown` (the first sweep one interval
/// after start, once the analyzer has caught up with the buffer).
pub async fn run(h: RiskHandles, cfg: RiskSweepConfig, shutdown: CancellationToken) {
    let rule = cfg.rule();
    let mut tick = tokio::time::interval(cfg.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let handles = h.clone();
        let sweep = move || sweep_now(&handles, &rule, Utc::now());
        if let Err(e) = tokio::task::spawn_blocking(sweep).await {
            tracing::warn!(error = %e, "risk sweep task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emotion_core::AnalyzerConfig;
    use emotion_core::event::{IngestContext, validate};
    use serde_json::json;

    fn handles() -> RiskHandles {
        RiskHandles {
            analyzer: Arc::new(Mutex::new(Analyzer::new(AnalyzerConfig::default()))),
            store: Arc::new(crate::buffer::MemoryStore::new(16)),
            live: Arc::new(Live::default()),
            register: Arc::default(),
        }
    }

    fn ingest(h: &RiskHandles, user: &str, v: f64, a: f64, at: DateTime<Utc>) {
        let body = json!({"user_id": user, "session_id": "s", "source": "voice",
                          "valence": v, "arousal": a, "timestamp": at.to_rfc3339()});
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
        h.analyzer
            .lock()
            .ingest(&validate(&m, &ctx).expect("valid event"));
    }

    #[test]
    fn a_user_alerts_when_flagged_and_again_only_when_it_gets_worse() {
        let h = handles();
        let mut alerts = h.live.subscribe_alerts();
        let rule = SweepRule::default();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        for i in 0..6 {
            ingest(&h, "u1", -0.1, 0.65, t0 + chrono::Duration::minutes(i));
        }
        let r = sweep_now(&h, &rule, Utc::now());
        assert_eq!(r.flagged.len(), 1);
        let a = alerts.try_recv().expect("first flag alerts");
        assert_eq!(a.kind, crate::live::AlertKind::RiskSweep);
        assert_eq!(a.indicators, ["anxiety_pattern"]);
        assert_eq!(a.severity, "high");
        // Same reasons: no new alert.
        sweep_now(&h, &rule, Utc::now());
        assert!(alerts.try_recv().is_err());
        // Despair on top: crisis, a higher level, alerts again.
        for i in 0..6 {
            ingest(&h, "u1", -0.95, 0.2, t0 + chrono::Duration::minutes(10 + i));
        }
        let r = sweep_now(&h, &rule, Utc::now());
        let a = alerts.try_recv().expect("worse alerts");
        assert_eq!(a.severity, "critical");
        assert!(a.indicators.contains(&"emotional_crisis"), "{a:?}");
        assert_eq!(h.register.latest().expect("kept").flagged, r.flagged);
        h.register.forget_user("u1");
        assert!(h.register.latest().expect("kept").flagged.is_empty());
    }
}
