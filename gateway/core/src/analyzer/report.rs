//! A user's summary report over the last days (the original
//! `generate_emotion_summary_report(user_id, days=7)`), built from the
//! analyzer's incremental state, never by rescanning events.
//!
//! Where each part comes from:
//!
//! - counts, averages and the daily series: the user's daily aggregates
//!   (the credit history, 30 days), so they cover *every* event of the period;
//! - the credit impact: the credit summary of the same window;
//! - the emotion mix of the period: the user's latest events (the baseline
//!   window, 50 by default) that fall within the period, so for a busy user it
//!   describes the latest part of the period (`emotions.events` says how many);
//!   the all-time mix comes from the user's running label counts;
//! - trajectory, current state, risk score and anomalies: the analyzer's
//!   latest view of the user; the risk indicators: the risk sweep
//!   ([`super::sweep`]) with the period as its lookback.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use super::sweep::{RiskFlag, SweepRule};
use super::trajectory::trajectory;
use super::{Analyzer, Anomaly, RiskScore, StateAnalysis, Trajectory, UserState};
use crate::credit::{CreditPattern, CreditSummary, DayAggregate, HISTORY_DAYS};
use crate::label::{EmotionLabel, LabelCounts};
use crate::num::round3;

/// Event counts of the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportCounts {
    pub events: u64,
    /// Days of the period with at least one event.
    pub active_days: usize,
    pub high_stress_events: u64,
    pub acute_distress_events: u64,
    pub high_severity_anomalies: u64,
    /// Every event of the user the gateway has analyzed.
    pub all_time_events: u64,
}

/// Averages of the period; `None` without events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportAverages {
    pub valence: Option<f64>,
    pub arousal: Option<f64>,
    pub stress_level: Option<f64>,
    pub stability_score: f64,
}

/// One emotion's part of a mix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmotionShare {
    pub emotion: EmotionLabel,
    pub count: u64,
    /// In [0, 1].
    pub share: f64,
}

/// The emotion mix of a set of events, most frequent first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmotionMix {
    /// How many events the mix is of.
    pub events: u64,
    pub dominant: Option<EmotionLabel>,
    pub shares: Vec<EmotionShare>,
}

impl EmotionMix {
    fn of(counts: &LabelCounts) -> EmotionMix {
        let events: u64 = EmotionLabel::ALL.iter().map(|l| counts.get(*l)).sum();
        let mut shares: Vec<EmotionShare> = EmotionLabel::ALL
            .iter()
            .filter(|l| counts.get(**l) > 0)
            .map(|l| EmotionShare {
                emotion: *l,
                count: counts.get(*l),
                share: round3(counts.get(*l) as f64 / events as f64),
            })
            .collect();
        // Stable: ties keep the label order, as `dominant` does.
        shares.sort_by_key(|s| std::cmp::Reverse(s.count));
        EmotionMix {
            events,
            dominant: counts.dominant(),
            shares,
        }
    }
}

/// The report of `GET /api/users/{id}/report` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserReport {
    pub user_id: String,
    /// The period: `days` UTC days, `from` to `to` inclusive (`to` is today).
    pub days: u32,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub generated_at: DateTime<Utc>,
    pub counts: ReportCounts,
    pub averages: ReportAverages,
    /// The days of the period with events, oldest first.
    pub daily: Vec<DayAggregate>,
    /// The mix of the user's latest events within the period.
    pub emotions: EmotionMix,
    pub emotions_all_time: EmotionMix,
    pub trajectory: Option<Trajectory>,
    /// Patterns of the period (credit patterns) and of the latest trajectory.
    pub patterns: Vec<&'static str>,
    /// The state of the user's latest event.
    pub current_state: Option<StateAnalysis>,
    pub risk: RiskScore,
    /// What the risk sweep flags over the period; `None`: nothing.
    pub risk_flag: Option<RiskFlag>,
    /// High- and medium-severity anomalies of the period (the latest ones kept).
    pub anomalies: Vec<Anomaly>,
    /// What to do, most urgent first.
    pub recommendations: Vec<String>,
    /// The credit/risk summary of the same window, as the credit system gets it.
    pub credit_impact: CreditSummary,
}

/// Recommendations for the period's patterns, most urgent first.
fn pattern_advice(p: CreditPattern) -> &'static str {
    match p {
        CreditPattern::EmotionalCrisis => {
            "Crisis indicators: reach out and offer support now (credit processing is delayed, never penalized)"
        }
        CreditPattern::ChronicStress => {
            "Stress persisted over several days: consider stress-management support and what causes it"
        }
        CreditPattern::EmotionalVolatility => {
            "Large mood swings: a steady routine and closer follow-up may help"
        }
        CreditPattern::Recovery => "Mood is recovering: keep the supports that helped in place",
        CreditPattern::HighStability => "A stable period: no action needed",
    }
}

impl UserState {
    fn report(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        days: u32,
        analyzer: &Analyzer,
    ) -> UserReport {
        let cfg = &analyzer.cfg;
        let days = days.clamp(1, HISTORY_DAYS);
        let to = now.date_naive();
        let from = to - Duration::days(i64::from(days) - 1);
        let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
        let daily = self.credit.daily(now, days);
        let credit = self.credit.summarize(user_id, now, days);
        let counts = ReportCounts {
            events: daily.iter().map(|d| d.events).sum(),
            active_days: daily.len(),
            high_stress_events: daily.iter().map(|d| d.high_stress_events).sum(),
            acute_distress_events: daily.iter().map(|d| d.acute_events).sum(),
            high_severity_anomalies: daily.iter().map(|d| d.high_severity_anomalies).sum(),
            all_time_events: self.totals.count,
        };
        let start_t = start.timestamp_micros() as f64 / 1e6;
        let mut recent = LabelCounts::default();
        for p in self
            .baseline
            .recent(self.baseline.len())
            .filter(|p| p.t >= start_t)
        {
            recent.add(p.label);
        }
        let traj = trajectory(&self.baseline, cfg.trajectory_window);
        let mut patterns: Vec<&'static str> = credit.patterns.iter().map(|p| p.as_str()).collect();
        for p in traj.iter().flat_map(|t| t.patterns.iter()) {
            if !patterns.contains(p) {
                patterns.push(p);
            }
        }
        let current_state = self
            .last_event
            .map(|(p, _)| super::analyze_state(p.valence, p.arousal, Some(self.spread())));
        let rule = SweepRule {
            lookback: now - start,
            ..SweepRule::default()
        };
        let risk_flag = self.risk_flag(user_id, now, &rule, cfg);
        let mut recommendations: Vec<String> = Vec::new();
        let mut advise = |s: &str| {
            if !recommendations.iter().any(|r| r == s) {
                recommendations.push(s.to_owned());
            }
        };
        for p in &credit.patterns {
            // Stability is good news only when nothing else is wrong (a
            // steady crisis is stable too): then the credit action is a discount.
            if *p == CreditPattern::HighStability
                && credit.action != crate::credit::CreditAction::Discount
            {
                continue;
            }
            advise(pattern_advice(*p));
        }
        if let Some(st) = &current_state {
            advise(st.risk_assessment.recommendation);
            for r in st.recommendations {
                advise(r);
            }
        }
        if counts.events == 0 {
            advise("No events in this period: nothing to judge");
        }
        UserReport {
            user_id: user_id.to_owned(),
            days,
            from,
            to,
            generated_at: now,
            averages: ReportAverages {
                valence: credit.avg_valence,
                arousal: credit.avg_arousal,
                stress_level: credit.avg_stress_level,
                stability_score: credit.stability_score,
            },
            counts,
            daily,
            emotions: EmotionMix::of(&recent),
            emotions_all_time: EmotionMix::of(&self.totals.labels),
            trajectory: traj,
            patterns,
            current_state,
            risk: self.risk(cfg),
            risk_flag,
            anomalies: self
                .anomalies
                .iter()
                .filter(|a| a.timestamp >= start)
                .cloned()
                .collect(),
            recommendations,
            credit_impact: credit,
        }
    }
}

impl Analyzer {
    /// The report of a resident user over the `days` (clamped to 1..=30) UTC
    /// days ending today; `None` for an unknown or evicted user (make them
    /// resident first).
    pub fn user_report(&self, user_id: &str, now: DateTime<Utc>, days: u32) -> Option<UserReport> {
        let u = self.users.get(user_id)?;
        Some(u.report(user_id, now, days, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnalyzerConfig;
    use crate::event::{IngestContext, validate};
    use serde_json::json;

    fn ingest(an: &mut Analyzer, v: f64, a: f64, label: &str, at: DateTime<Utc>) {
        let body = json!({"user_id": "u1", "session_id": "s1", "source": "voice",
                          "valence": v, "arousal": a, "emotion_label": label, "timestamp": at.to_rfc3339()});
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

    #[test]
    fn report_counts_every_event_of_the_period_and_only_those() {
        let mut an = Analyzer::new(AnalyzerConfig::default());
        // Noon, so that "30 minutes ago" is today.
        let now: DateTime<Utc> = "2026-06-15T12:00:00Z".parse().expect("time");
        // Ten days ago: outside a 7-day report.
        for i in 0..4 {
            ingest(
                &mut an,
                0.6,
                0.4,
                "joy",
                now - Duration::days(10) + Duration::minutes(i),
            );
        }
        // Five and three days ago and today: stressed.
        for d in [5, 3, 0] {
            for i in 0..6 {
                let at = now - Duration::days(d) - Duration::minutes(30 - i);
                ingest(&mut an, -0.6, 0.85, "fear", at);
            }
        }
        let r = an.user_report("u1", now, 7).expect("report");
        assert_eq!(r.days, 7);
        assert_eq!(r.to, now.date_naive());
        assert_eq!(r.from, now.date_naive() - Duration::days(6));
        assert_eq!(r.counts.events, 18);
        assert_eq!(r.counts.all_time_events, 22);
        assert_eq!(r.counts.high_stress_events, 18);
        assert_eq!(r.counts.active_days, 3, "{:?}", r.daily);
        assert_eq!(r.daily[0].date, r.to - Duration::days(5));
        assert_eq!(r.averages.valence, Some(-0.6));
        assert_eq!(
            r.emotions.events, 18,
            "the joy of ten days ago is not in the period"
        );
        assert_eq!(r.emotions.dominant, Some(EmotionLabel::Fear));
        assert_eq!(r.emotions_all_time.events, 22);
        assert!(r.patterns.contains(&"chronic_stress"), "{:?}", r.patterns);
        let flag = r.risk_flag.as_ref().expect("flagged");
        assert!(
            flag.indicator_names().any(|i| i == "high_stress"),
            "{flag:?}"
        );
        assert!(
            r.recommendations[0].starts_with("Stress persisted"),
            "{:?}",
            r.recommendations
        );
        assert_eq!(r.credit_impact.window_days, 7);
        assert_eq!(r.credit_impact.event_count, 18);
        // A one-day report holds only today.
        let today = an.user_report("u1", now, 1).expect("report");
        assert_eq!(today.counts.events, 6);
        // Out-of-range days are clamped, unknown users have no report.
        assert_eq!(an.user_report("u1", now, 365).expect("report").days, 30);
        assert!(an.user_report("nobody", now, 7).is_none());
    }
}
