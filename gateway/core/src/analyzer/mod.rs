//! The incremental analyzer: per session, per user and global, updated in
//! O(window) per event and never by rescanning history.
//!
//! One `Analyzer` owns all state; the daemon feeds it every durable event in
//! order (and replays the buffer into it at start-up, or restores a
//! [`checkpoint`] and replays only the events after it). Users idle for long
//! can be evicted from RAM and restored on demand (see [`checkpoint`]).

mod anomaly;
pub mod checkpoint;
mod codec;
pub mod fusion;
pub mod fusion_eval;
mod global;
mod report;
pub(crate) mod risk;
pub(crate) mod state;
mod sweep;
pub(crate) mod trajectory;
mod window;

use std::collections::VecDeque;

use hashbrown::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use anomaly::{Anomaly, AnomalyRule, Severity};
pub use checkpoint::{CHECKPOINT_VERSION, CheckpointError};
pub use fusion::{Contribution, FusedEstimate, FusionConfig, FusionSlots};
pub use global::GlobalMetrics;
pub use report::{EmotionShare, ReportAverages, ReportCounts, UserReport};
pub use risk::{FLAG_THRESHOLD, RiskInputs, RiskScore, risk_from_aggregates, risk_score};
pub use state::{RiskAssessment, RiskLevel, SpecificRisk, StateAnalysis, analyze_state, regions};
pub use sweep::{Indicator, RiskFlag, SweepRule};
pub use trajectory::{Trajectory, Trend, stability, trajectory};
pub use window::{Point, Window};

use crate::credit::{CreditHistory, CreditSummary, HISTORY_DAYS};
use crate::event::EmotionEvent;
use crate::label::EmotionLabel;
pub use crate::label::LabelCounts;
use crate::num::round3;

/// The oldest credit activity that still earns a user a credit summary.
fn credit_horizon(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::days(i64::from(HISTORY_DAYS) + 1)
}

/// Window sizes and thresholds. The defaults are the original system's.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzerConfig {
    /// Events per session kept for stability (original: a deque of 100).
    pub session_window: usize,
    /// Events a trajectory (trend, velocity, patterns) is computed over (original: 10).
    pub trajectory_window: usize,
    /// Events of a user's baseline for z-scores and the risk score (default 50).
    pub baseline_window: usize,
    pub anomaly: AnomalyRule,
    /// Anomalies remembered per user, newest last.
    pub recent_anomalies: usize,
    /// Multi-modal fusion (see [`fusion`]).
    pub fusion: FusionConfig,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            session_window: 100,
            trajectory_window: 10,
            baseline_window: 50,
            anomaly: AnomalyRule::default(),
            recent_anomalies: 10,
            fusion: FusionConfig::default(),
        }
    }
}

/// Running totals for averages over everything seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Totals {
    count: u64,
    sum_v: f64,
    sum_a: f64,
    labels: LabelCounts,
}

impl Totals {
    fn add(&mut self, p: &Point) {
        self.count += 1;
        self.sum_v += p.valence;
        self.sum_a += p.arousal;
        self.labels.add(p.label);
    }

    fn avg(&self, sum: f64) -> Option<f64> {
        (self.count > 0).then(|| round3(sum / self.count as f64))
    }
}

/// The `metrics` object of a `processed` reply, and of a session summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionMetrics {
    pub event_count: u64,
    pub avg_valence: Option<f64>,
    pub avg_arousal: Option<f64>,
    pub dominant_emotion: Option<EmotionLabel>,
    pub stability_score: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionState {
    user_id: String,
    window: Window,
    totals: Totals,
    #[serde(with = "codec::ts")]
    first_seen: DateTime<Utc>,
    #[serde(with = "codec::ts")]
    last_seen: DateTime<Utc>,
}

impl SessionState {
    fn stability(&self) -> f64 {
        // The original reported 1.0 until three events were in.
        if self.window.len() < 3 {
            1.0
        } else {
            round3(stability(
                self.window.std_valence(),
                self.window.std_arousal(),
            ))
        }
    }

    fn metrics(&self) -> SessionMetrics {
        SessionMetrics {
            event_count: self.totals.count,
            avg_valence: self.totals.avg(self.totals.sum_v),
            avg_arousal: self.totals.avg(self.totals.sum_a),
            dominant_emotion: self.totals.labels.dominant(),
            stability_score: self.stability(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserState {
    baseline: Window,
    totals: Totals,
    #[serde(with = "codec::anomalies")]
    anomalies: VecDeque<Anomaly>,
    /// For the latest `trajectory_window` events: was it a high-severity anomaly?
    high_flags: VecDeque<bool>,
    #[serde(with = "codec::last_event")]
    last_event: Option<(Point, DateTime<Utc>)>,
    #[serde(with = "codec::ts")]
    first_seen: DateTime<Utc>,
    /// `ingested_at` of the user's latest event: their last activity.
    #[serde(with = "codec::ts")]
    last_seen: DateTime<Utc>,
    /// Daily aggregates of the last 30 days, for credit/risk summaries.
    credit: CreditHistory,
    /// Latest reading per source, for fused estimates. Not encoded: it spans
    /// seconds, so checkpoints and evicted states leave it out.
    #[serde(skip)]
    fusion: FusionSlots,
}

impl UserState {
    fn spread(&self) -> (f64, f64) {
        (self.baseline.std_valence(), self.baseline.std_arousal())
    }

    fn high_anomalies(&self) -> usize {
        self.high_flags.iter().filter(|h| **h).count()
    }

    fn risk(&self, cfg: &AnalyzerConfig) -> RiskScore {
        let stab = if self.baseline.len() < 2 {
            1.0
        } else {
            trajectory::recent_stability(&self.baseline, cfg.trajectory_window)
        };
        risk_score(&self.baseline, stab, self.high_anomalies())
    }

    fn summary(&self, user_id: &str, cfg: &AnalyzerConfig) -> UserSummary {
        let trajectory = trajectory(&self.baseline, cfg.trajectory_window);
        UserSummary {
            user_id: user_id.to_owned(),
            event_count: self.totals.count,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            avg_valence: self.totals.avg(self.totals.sum_v),
            avg_arousal: self.totals.avg(self.totals.sum_a),
            dominant_emotion: self.totals.labels.dominant(),
            stability_score: round3(stability(
                self.baseline.std_valence(),
                self.baseline.std_arousal(),
            )),
            state: self
                .last_event
                .map(|(p, _)| analyze_state(p.valence, p.arousal, Some(self.spread()))),
            trajectory,
            recent_anomalies: self.anomalies.iter().cloned().collect(),
            risk: self.risk(cfg),
        }
    }

    fn credit_summaries(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        windows: &[u32],
    ) -> Vec<CreditSummary> {
        windows
            .iter()
            .map(|w| self.credit.summarize(user_id, now, *w))
            .collect()
    }
}

/// The per-event analysis of a `processed` reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Analysis {
    /// Fewer than two events in the session: `{"analysis":"insufficient_data"}`.
    InsufficientData {
        analysis: &'static str,
    },
    Contextual(Box<ContextualAnalysis>),
}

/// The keys the original clients read, plus the richer analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextualAnalysis {
    /// Always `contextual`.
    pub analysis: &'static str,
    pub valence_trend: &'static str,
    pub arousal_trend: &'static str,
    /// `consistent_emotion`, `high_stress`, `calm_positive`, and any of the
    /// trajectory's patterns.
    pub patterns: Vec<&'static str>,
    pub session_length: u64,
    pub emotional_stability: f64,
    pub stability_score: f64,
    pub state: StateAnalysis,
    pub trajectory: Trajectory,
    /// This event, if it is an outlier against the user's baseline.
    pub anomaly: Option<Anomaly>,
    pub risk: RiskScore,
}

/// What ingesting one event produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventOutcome {
    pub analysis: Analysis,
    pub metrics: SessionMetrics,
    /// The user's new fused estimate, when this event made one (its own
    /// stream: not part of the `processed` reply).
    #[serde(skip)]
    pub fused: Option<FusedEstimate>,
}

/// The analyzer's view of one user, for `GET /api/users/{id}/summary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSummary {
    pub user_id: String,
    pub event_count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub avg_valence: Option<f64>,
    pub avg_arousal: Option<f64>,
    pub dominant_emotion: Option<EmotionLabel>,
    /// Stability over the baseline window.
    pub stability_score: f64,
    /// State of the latest event, with the user's volatility.
    pub state: Option<StateAnalysis>,
    pub trajectory: Option<Trajectory>,
    pub recent_anomalies: Vec<Anomaly>,
    pub risk: RiskScore,
}

/// The analyzer's view of one session, for `GET /api/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub user_id: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub metrics: SessionMetrics,
    pub trajectory: Option<Trajectory>,
}

/// All analysis state of the gateway.
///
/// What the analyzer keeps of an evicted user (`checkpoint` hands out and
/// takes back the rest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct EvictedUser {
    /// CRC-32 of the body of the state handed out.
    crc: u32,
    /// [`crate::credit::CreditHistory::last_active`] at eviction.
    #[serde(with = "codec::opt_ts")]
    credit_last_active: Option<DateTime<Utc>>,
}

/// Users are either *resident* (their state is in `users`) or *evicted* (their
/// state was handed to the caller by
/// [`evict_users_idle_since`](Analyzer::evict_users_idle_since) and only a
/// small record of it is kept here); see [`checkpoint`].
#[derive(Debug, Clone, Default)]
pub struct Analyzer {
    cfg: AnalyzerConfig,
    users: HashMap<String, UserState>,
    sessions: HashMap<String, SessionState>,
    evicted: HashMap<String, EvictedUser>,
    /// The latest cutoff of [`Analyzer::evict_sessions_idle_since`].
    session_cutoff: Option<DateTime<Utc>>,
    global: global::GlobalState,
}

impl Analyzer {
    pub fn new(cfg: AnalyzerConfig) -> Self {
        Analyzer {
            cfg,
            ..Default::default()
        }
    }

    pub fn config(&self) -> &AnalyzerConfig {
        &self.cfg
    }

    /// Take one event into every view and return its analysis.
    pub fn ingest(&mut self, e: &EmotionEvent) -> EventOutcome {
        let p = Point {
            valence: e.valence,
            arousal: e.arousal,
            t: e.timestamp.timestamp_micros() as f64 / 1e6,
            label: e.emotion_label,
        };
        let cfg = &self.cfg;
        self.global.add(&p, e.source, &e.session_id, e.ingested_at);
        let evicted = &mut self.evicted;

        // User: judge the event against the baseline before it joins it.
        let user = self.users.entry_ref(e.user_id.as_str()).or_insert_with(|| {
            // An evicted user must be restored before their next event; if
            // not, their stored state is abandoned and they start afresh
            // (still counted once among the unique users).
            evicted.remove(e.user_id.as_str());
            UserState {
                baseline: Window::new(cfg.baseline_window),
                totals: Totals::default(),
                anomalies: VecDeque::new(),
                high_flags: VecDeque::new(),
                last_event: None,
                first_seen: e.ingested_at,
                last_seen: e.ingested_at,
                credit: CreditHistory::new(),
                fusion: FusionSlots::default(),
            }
        });
        let anomaly = anomaly::detect(&user.baseline, &p, e.event_id, e.timestamp, &cfg.anomaly);
        if user.high_flags.len() == cfg.trajectory_window {
            user.high_flags.pop_front();
        }
        let high = anomaly
            .as_ref()
            .is_some_and(|a| a.severity == Severity::High);
        user.high_flags.push_back(high);
        // Credit days count when the emotion happened, but never after the
        // gateway received it: a sender's clock running ahead cannot push an
        // event into the future.
        user.credit
            .record(e.timestamp.min(e.ingested_at), p.valence, p.arousal, high);
        if let Some(a) = &anomaly {
            if user.anomalies.len() == cfg.recent_anomalies {
                user.anomalies.pop_front();
            }
            user.anomalies.push_back(a.clone());
        }
        user.baseline.push(p);
        user.totals.add(&p);
        user.last_event = Some((p, e.timestamp));
        user.last_seen = e.ingested_at;
        let spread = user.spread();
        let risk = user.risk(cfg);
        let fused = user.fusion.update(
            &cfg.fusion,
            e.source,
            e.valence,
            e.arousal,
            e.confidence.unwrap_or_else(|| {
                let (lo, hi) = e.source.confidence_range();
                (lo + hi) / 2.0
            }),
            e.timestamp.min(e.ingested_at),
        );

        let session = self
            .sessions
            .entry_ref(e.session_id.as_str())
            .or_insert_with(|| SessionState {
                user_id: e.user_id.clone(),
                window: Window::new(cfg.session_window),
                totals: Totals::default(),
                first_seen: e.ingested_at,
                last_seen: e.ingested_at,
            });
        session.window.push(p);
        session.totals.add(&p);
        session.last_seen = e.ingested_at;
        let metrics = session.metrics();

        let analysis = match trajectory(&session.window, cfg.trajectory_window) {
            None => Analysis::InsufficientData {
                analysis: "insufficient_data",
            },
            Some(traj) => {
                let mut patterns = Vec::new();
                let last5 = session.window.recent(5);
                if last5.len() >= 3 && last5.clone().all(|q| q.label == p.label) {
                    patterns.push("consistent_emotion");
                }
                if regions::high_stress(p.valence, p.arousal) {
                    patterns.push("high_stress");
                }
                if p.valence > 0.5 && p.arousal < 0.3 {
                    patterns.push("calm_positive");
                }
                patterns.extend(traj.patterns.iter().copied());
                Analysis::Contextual(Box::new(ContextualAnalysis {
                    analysis: "contextual",
                    valence_trend: traj.valence.direction,
                    arousal_trend: traj.arousal.direction,
                    patterns,
                    session_length: metrics.event_count,
                    emotional_stability: metrics.stability_score,
                    stability_score: metrics.stability_score,
                    state: analyze_state(p.valence, p.arousal, Some(spread)),
                    trajectory: traj,
                    anomaly,
                    risk,
                }))
            }
        };
        EventOutcome {
            analysis,
            metrics,
            fused,
        }
    }

    /// A resident user's latest fused estimate (see [`fusion`]).
    pub fn fused(&self, user_id: &str) -> Option<FusedEstimate> {
        self.users.get(user_id)?.fusion.estimate(&self.cfg.fusion)
    }

    /// [`Analyzer::fused`] with each source's part in it.
    pub fn fused_detail(&self, user_id: &str) -> Option<(FusedEstimate, Vec<Contribution>)> {
        let slots = &self.users.get(user_id)?.fusion;
        let estimate = slots.estimate(&self.cfg.fusion)?;
        Some((estimate, slots.contributions(&self.cfg.fusion)))
    }

    /// The summary of a resident user; `None` for an unknown or evicted user
    /// (see [`Analyzer::user_summary_from_encoded`]).
    pub fn user_summary(&self, user_id: &str) -> Option<UserSummary> {
        let u = self.users.get(user_id)?;
        Some(u.summary(user_id, &self.cfg))
    }

    pub fn session_summary(&self, session_id: &str) -> Option<SessionSummary> {
        let s = self.sessions.get(session_id)?;
        Some(SessionSummary {
            session_id: session_id.to_owned(),
            user_id: s.user_id.clone(),
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            metrics: s.metrics(),
            trajectory: trajectory(&s.window, self.cfg.trajectory_window),
        })
    }

    /// Gateway-wide metrics. Evicted users still count among the unique users.
    pub fn global_metrics(&self, now: DateTime<Utc>) -> GlobalMetrics {
        self.global
            .snapshot(now, self.users.len() + self.evicted.len())
    }

    /// Credit/risk summaries of one user for each of `windows` (days, see
    /// [`crate::credit`]), computed for `now`. Empty for an unknown or evicted
    /// user (see [`Analyzer::credit_summaries_from_encoded`]).
    pub fn credit_summaries(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        windows: &[u32],
    ) -> Vec<CreditSummary> {
        match self.users.get(user_id) {
            Some(u) => u.credit_summaries(user_id, now, windows),
            None => Vec::new(),
        }
    }

    /// Credit/risk summaries of every resident user with an event in the 31
    /// days before `now`, for each of `windows`, ordered by user id.
    ///
    /// Evicted users are not included: [`Analyzer::evicted_credit_candidates`]
    /// lists those the same rule selects, for
    /// [`Analyzer::credit_summaries_from_encoded`].
    ///
    /// The extra day lets a user who went quiet send one last summary with an
    /// empty 30-day window (`insufficient_data`), so the central copy does not
    /// keep showing an adjustment for a period that has passed.
    pub fn all_credit_summaries(&self, now: DateTime<Utc>, windows: &[u32]) -> Vec<CreditSummary> {
        let horizon = credit_horizon(now);
        let mut ids: Vec<&String> = self
            .users
            .iter()
            .filter(|(_, u)| u.credit.last_active().is_some_and(|t| t > horizon))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids.into_iter()
            .flat_map(|id| self.credit_summaries(id, now, windows))
            .collect()
    }

    /// Forget everything about a user: their state, their sessions' live
    /// state, their credit history (for an erasure request). Global counts,
    /// which hold no per-user data, are kept. Returns whether the user was known
    /// (resident or evicted; the caller deletes an evicted user's stored state).
    pub fn erase_user(&mut self, user_id: &str) -> bool {
        self.sessions.retain(|_, s| s.user_id != user_id);
        let evicted = self.evicted.remove(user_id).is_some();
        self.users.remove(user_id).is_some() || evicted
    }

    /// Resident users (evicted ones: [`Analyzer::evicted_user_ids`]).
    pub fn user_ids(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Drop the live state of sessions idle since before `cutoff` (their events
    /// stay in the buffer; global counts are kept). Returns how many went.
    ///
    /// Sessions of evicted users are dropped by the same rule when the user is
    /// restored (the latest `cutoff` is remembered for that).
    pub fn evict_sessions_idle_since(&mut self, cutoff: DateTime<Utc>) -> usize {
        if self.session_cutoff.is_none_or(|c| c < cutoff) {
            self.session_cutoff = Some(cutoff);
        }
        let before = self.sessions.len();
        self.sessions.retain(|_, s| s.last_seen >= cutoff);
        before - self.sessions.len()
    }

    /// Sessions with live state.
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }
}
