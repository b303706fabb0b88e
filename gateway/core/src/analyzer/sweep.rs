//! The risk sweep: which users the risk table flags now (the original
//! `detect_emotional_risk_users`), judged over each user's recent history
//! rather than one event.
//!
//! Per-event alerts (the daemon's live feed) fire on single points; a user who
//! spends most of a day anxious, but never crosses a single-event threshold
//! twice in a row, is only seen by looking at their history. The sweep does
//! that from the analyzer's incremental state (the baseline window and the
//! daily credit aggregates), in O(window + days) per user, with no rescan.
//!
//! # Indicators (a user is flagged when any holds)
//!
//! Over the user's *considered* events: those of their baseline window (the
//! latest `baseline_window` events, 50 by default) whose timestamp lies within
//! [`SweepRule::lookback`] of `now`.
//!
//! - `high_stress`, `depression_indicators`, `anxiety_pattern`: at least
//!   [`SweepRule::min_events`] considered events, and at least
//!   [`SweepRule::min_share`] of them in the state analysis's region (see
//!   [`super::regions`]).
//! - `emotional_volatility`: more than 3 considered events and σ valence > 0.6
//!   or σ arousal > 0.5 among them.
//! - `emotional_crisis`: the credit history's crisis rule over its last
//!   [`crate::credit::CRISIS_RECENT_DAYS`] days (acute distress, see
//!   [`crate::credit`]).
//! - `risk_score`: the user's risk score reaches [`super::FLAG_THRESHOLD`].
//!
//! The level is `high` with a crisis or a flagged risk score, `medium`
//! otherwise.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::state::{RiskLevel, regions};
use super::window::mean_std;
use super::{Analyzer, AnalyzerConfig, CheckpointError, UserState};
use crate::credit::{CRISIS_RECENT_DAYS, CreditPattern};
use crate::num::round3;

/// How the sweep judges a user's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepRule {
    /// Only events this recent count, and only users seen this recently are swept.
    pub lookback: Duration,
    /// Fewest considered events for a region indicator.
    pub min_events: usize,
    /// Share of considered events in a region for its indicator, in (0, 1].
    pub min_share: f64,
}

impl Default for SweepRule {
    fn default() -> Self {
        SweepRule {
            lookback: Duration::hours(24),
            min_events: 5,
            min_share: 0.5,
        }
    }
}

/// One indicator that holds for a user, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Indicator {
    /// `high_stress`, `depression_indicators`, `anxiety_pattern`,
    /// `emotional_volatility`, `emotional_crisis` or `risk_score`.
    pub indicator: &'static str,
    /// Why, in words, with the numbers.
    pub reason: String,
}

/// A user the sweep flags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskFlag {
    pub user_id: String,
    /// `medium` or `high` (see the module docs).
    pub level: RiskLevel,
    /// The user's current risk score.
    pub risk_score: f64,
    pub indicators: Vec<Indicator>,
    /// Events the region and volatility indicators were judged on.
    pub events_considered: usize,
    /// The user's latest activity (ingestion time).
    pub last_seen: DateTime<Utc>,
}

impl RiskFlag {
    /// The indicator names, for comparing two sweeps.
    pub fn indicator_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.indicators.iter().map(|i| i.indicator)
    }
}

/// A region indicator: its name, whether a point lies in the region, and the
/// region in words.
type RegionRule = (&'static str, fn(f64, f64) -> bool, &'static str);

/// The share of `n` in percent, for reasons.
fn pct(k: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        crate::num::round(100.0 * k as f64 / n as f64)
    }
}

impl UserState {
    /// This user's flag under `rule` at `now`, or `None` when nothing holds or
    /// they were not seen within the lookback.
    pub(super) fn risk_flag(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        rule: &SweepRule,
        cfg: &AnalyzerConfig,
    ) -> Option<RiskFlag> {
        let since = now - rule.lookback;
        if self.last_seen < since {
            return None;
        }
        let since_t = since.timestamp_micros() as f64 / 1e6;
        let points: Vec<_> = self
            .baseline
            .recent(self.baseline.len())
            .filter(|p| p.t >= since_t)
            .collect();
        let n = points.len();
        let mut indicators = Vec::new();
        if n >= rule.min_events {
            let regions_of: [RegionRule; 3] = [
                (
                    "high_stress",
                    regions::high_stress,
                    "high stress (valence ≤ −0.3, arousal ≥ 0.7)",
                ),
                (
                    "depression_indicators",
                    regions::depression,
                    "depression indicators (valence ≤ −0.4, arousal ≤ 0.3)",
                ),
                (
                    "anxiety_pattern",
                    regions::anxiety,
                    "the anxiety pattern (valence in [−0.6, 0.2], arousal ≥ 0.6)",
                ),
            ];
            for (name, inside, what) in regions_of {
                let k = points
                    .iter()
                    .filter(|p| inside(p.valence, p.arousal))
                    .count();
                if k as f64 >= rule.min_share * n as f64 {
                    indicators.push(Indicator {
                        indicator: name,
                        reason: format!(
                            "{k} of the latest {n} events ({}%) show {what}",
                            pct(k, n)
                        ),
                    });
                }
            }
        }
        if n > 3 {
            let (_, sv, _) = mean_std(points.iter().map(|p| p.valence));
            let (_, sa, _) = mean_std(points.iter().map(|p| p.arousal));
            if regions::volatile(sv, sa) {
                indicators.push(Indicator {
                    indicator: "emotional_volatility",
                    reason: format!(
                        "high volatility over the latest {n} events: σ valence {:.2}, σ arousal {:.2} \
                         (limits 0.6 and 0.5)",
                        sv, sa
                    ),
                });
            }
        }
        let crisis = self.credit.summarize(user_id, now, CRISIS_RECENT_DAYS);
        let in_crisis = crisis.patterns.contains(&CreditPattern::EmotionalCrisis);
        if in_crisis {
            indicators.push(Indicator {
                indicator: "emotional_crisis",
                reason: format!(
                    "crisis indicators in the last {CRISIS_RECENT_DAYS} days ({} events): offer support",
                    crisis.event_count
                ),
            });
        }
        let risk = self.risk(cfg);
        if risk.flagged {
            indicators.push(Indicator {
                indicator: "risk_score",
                reason: format!("risk score {:.2}: {}", risk.score, risk.factors.join("; ")),
            });
        }
        if indicators.is_empty() {
            return None;
        }
        Some(RiskFlag {
            user_id: user_id.to_owned(),
            level: if in_crisis || risk.flagged {
                RiskLevel::High
            } else {
                RiskLevel::Medium
            },
            risk_score: round3(risk.score),
            indicators,
            events_considered: n,
            last_seen: self.last_seen,
        })
    }
}

/// Highest level first, then highest score, then by user id.
fn sort_flags(flags: &mut [RiskFlag]) {
    flags.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(b.risk_score.total_cmp(&a.risk_score))
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
}

impl Analyzer {
    /// The flags of every resident user at `now` (see the module docs),
    /// highest level and score first.
    pub fn risk_sweep(&self, now: DateTime<Utc>, rule: &SweepRule) -> Vec<RiskFlag> {
        let mut flags: Vec<RiskFlag> = self
            .users
            .iter()
            .filter_map(|(id, u)| u.risk_flag(id, now, rule, &self.cfg))
            .collect();
        sort_flags(&mut flags);
        flags
    }

    /// [`Analyzer::risk_sweep`] over evicted users too: those whose latest
    /// activity lies within the lookback are judged from their stored state,
    /// which `load` returns (`None`: not found). Users whose state is missing
    /// or refused are left out and reported with the error.
    pub fn risk_sweep_with_evicted(
        &self,
        now: DateTime<Utc>,
        rule: &SweepRule,
        mut load: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> (Vec<RiskFlag>, Vec<(String, CheckpointError)>) {
        let mut flags = self.risk_sweep(now, rule);
        let mut failed = Vec::new();
        // `credit_last_active` is the start of the user's last active day.
        let horizon = now - rule.lookback - Duration::days(1);
        for id in self.evicted_active_since(horizon) {
            let judged = load(id)
                .ok_or_else(|| CheckpointError::Missing(id.to_owned()))
                .and_then(|bytes| self.decode_evicted_user(id, &bytes));
            match judged {
                Ok(u) => flags.extend(u.risk_flag(id, now, rule, &self.cfg)),
                Err(e) => failed.push((id.to_owned(), e)),
            }
        }
        sort_flags(&mut flags);
        (flags, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{IngestContext, validate};
    use serde_json::json;

    fn ingest(an: &mut Analyzer, user: &str, v: f64, a: f64, at: DateTime<Utc>) {
        let body = json!({"user_id": user, "session_id": format!("s-{user}"), "source": "voice",
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
        an.ingest(&validate(&m, &ctx).expect("valid event"));
    }

    fn names(f: &RiskFlag) -> Vec<&'static str> {
        f.indicator_names().collect()
    }

    #[test]
    fn each_region_pattern_over_the_day_flags_its_user_and_calm_users_are_not_flagged() {
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let t0 = Utc::now() - Duration::hours(2);
        for i in 0..10 {
            let at = t0 + Duration::minutes(i);
            // Anxious: mildly negative, activated (not high stress).
            ingest(&mut an, "anxious", -0.1, 0.65, at);
            ingest(&mut an, "low", -0.45, 0.25, at);
            ingest(&mut an, "calm", 0.5, 0.3, at);
            // Stressed half of the time: exactly at the share.
            let (v, a) = if i % 2 == 0 { (-0.5, 0.8) } else { (0.1, 0.5) };
            ingest(&mut an, "stressed", v, a, at);
        }
        let flags = an.risk_sweep(Utc::now(), &SweepRule::default());
        let of = |u: &str| flags.iter().find(|f| f.user_id == u);
        assert!(of("calm").is_none(), "{flags:?}");
        assert_eq!(names(of("anxious").expect("anxious")), ["anxiety_pattern"]);
        assert_eq!(names(of("low").expect("low")), ["depression_indicators"]);
        let s = of("stressed").expect("stressed");
        assert!(names(s).contains(&"high_stress"), "{s:?}");
        assert!(
            s.indicators[0]
                .reason
                .contains("5 of the latest 10 events (50%)"),
            "{s:?}"
        );
        assert_eq!(s.level, RiskLevel::Medium);
    }

    #[test]
    fn crisis_and_a_flagged_score_are_high_and_old_history_is_not_swept() {
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let now = Utc::now();
        for i in 0..6 {
            // Despair: acute distress on every event.
            ingest(
                &mut an,
                "despair",
                -0.9,
                0.2,
                now - Duration::minutes(30 - i),
            );
        }
        // Swings between the corners: volatile and unstable.
        for i in 0..12 {
            let (v, a) = if i % 2 == 0 {
                (0.9, 0.05)
            } else {
                (-0.9, 0.95)
            };
            ingest(&mut an, "swings", v, a, now - Duration::minutes(30 - i));
        }
        let flags = an.risk_sweep(now, &SweepRule::default());
        let despair = flags
            .iter()
            .find(|f| f.user_id == "despair")
            .expect("despair");
        assert_eq!(despair.level, RiskLevel::High);
        assert!(names(despair).contains(&"emotional_crisis"), "{despair:?}");
        let swings = flags
            .iter()
            .find(|f| f.user_id == "swings")
            .expect("swings");
        assert!(
            names(swings).contains(&"emotional_volatility"),
            "{swings:?}"
        );
        // High first.
        assert_eq!(flags[0].level, RiskLevel::High);
        // Two days later none of it is within the lookback.
        assert!(
            an.risk_sweep(now + Duration::days(2), &SweepRule::default())
                .is_empty()
        );
    }

    #[test]
    fn evicted_users_are_swept_from_their_stored_state() {
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let now = Utc::now();
        for i in 0..8 {
            ingest(
                &mut an,
                "low",
                -0.6,
                0.1,
                now - Duration::hours(3) + Duration::minutes(i),
            );
        }
        let stored = an.evict_users_idle_since(now - Duration::hours(1));
        assert_eq!(stored.len(), 1);
        assert!(
            an.risk_sweep(now, &SweepRule::default()).is_empty(),
            "not resident"
        );
        let (flags, failed) = an.risk_sweep_with_evicted(now, &SweepRule::default(), |u| {
            stored
                .iter()
                .find(|(id, _)| id == u)
                .map(|(_, b)| b.clone())
        });
        assert!(failed.is_empty());
        assert_eq!(flags.len(), 1);
        assert!(names(&flags[0]).contains(&"depression_indicators"));
        // A missing state is reported, not a panic.
        let (flags, failed) = an.risk_sweep_with_evicted(now, &SweepRule::default(), |_| None);
        assert!(flags.is_empty());
        assert_eq!(failed.len(), 1);
    }
}
