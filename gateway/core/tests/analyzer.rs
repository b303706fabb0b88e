//! Behaviour of the whole analyzer over event sequences, and properties that
//! must hold for any valid input.

use chrono::{DateTime, Duration, TimeZone, Utc};
use emotion_core::analyzer::{Analysis, ContextualAnalysis};
use emotion_core::{Analyzer, AnalyzerConfig, EmotionEvent, EmotionLabel, Source};
use proptest::prelude::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

fn event(user: &str, session: &str, i: i64, v: f64, a: f64, source: Source) -> EmotionEvent {
    let at = t0() + Duration::seconds(i);
    EmotionEvent {
        event_id: Uuid::from_u128(i as u128),
        user_id: user.into(),
        session_id: session.into(),
        source,
        emotion_label: EmotionLabel::nearest(v, a),
        valence: v,
        arousal: a,
        confidence: Some(0.8),
        timestamp: at,
        ingested_at: at,
        gateway_id: "gw".into(),
        producer: "client".into(),
        context: None,
        biometrics: None,
        location: None,
        device_info: None,
        raw_data: None,
    }
}

fn contextual(a: &Analysis) -> &ContextualAnalysis {
    match a {
        Analysis::Contextual(c) => c,
        Analysis::InsufficientData { .. } => panic!("expected a contextual analysis"),
    }
}

#[test]
fn first_event_of_a_session_is_insufficient_data() {
    let mut an = Analyzer::default();
    let out = an.ingest(&event("1", "s1", 0, 0.5, 0.5, Source::Text));
    assert_eq!(
        serde_json::to_value(&out.analysis).expect("json"),
        serde_json::json!({"analysis": "insufficient_data"})
    );
    assert_eq!(out.metrics.event_count, 1);
    assert_eq!(out.metrics.stability_score, 1.0);
}

#[test]
fn a_stress_sequence_shows_high_stress_and_a_non_improving_trend() {
    let mut an = Analyzer::default();
    let seq = [
        (-0.4, 0.75),
        (-0.5, 0.8),
        (-0.55, 0.82),
        (-0.6, 0.85),
        (-0.7, 0.9),
        (-0.75, 0.92),
    ];
    let mut last = None;
    for (i, (v, a)) in seq.into_iter().enumerate() {
        last = Some(an.ingest(&event("7", "s7", i as i64, v, a, Source::Voice)));
    }
    let out = last.expect("ingested");
    let c = contextual(&out.analysis);
    assert!(c.patterns.contains(&"high_stress"), "{:?}", c.patterns);
    assert!(["declining", "stable"].contains(&c.valence_trend));
    assert_eq!(c.valence_trend, "declining");
    assert_eq!(c.arousal_trend, "stable"); // slope ≈ 0.03/event, below the 0.05 threshold
    assert_eq!(c.state.quadrant, "high_negative");
    assert_eq!(c.session_length, 6);
    assert!(c.risk.score >= 0.4, "{:?}", c.risk);
    assert_eq!(out.metrics.event_count, 6);
    assert_eq!(out.metrics.avg_valence, Some(-0.583));
}

#[test]
fn an_outlier_after_a_steady_baseline_is_reported_and_raises_risk() {
    let mut an = Analyzer::default();
    for i in 0..40 {
        let j = if i % 2 == 0 { 0.05 } else { -0.05 };
        an.ingest(&event("u", "s", i, 0.5 + j, 0.3 - j, Source::Facial));
    }
    let out = an.ingest(&event("u", "s", 40, -0.9, 0.95, Source::Facial));
    let c = contextual(&out.analysis);
    let anomaly = c.anomaly.as_ref().expect("outlier");
    assert_eq!(
        serde_json::to_value(anomaly.severity).expect("json"),
        "high"
    );
    let s = an.user_summary("u").expect("known");
    assert_eq!(s.recent_anomalies.len(), 1);
    assert!(s.risk.factors.contains(&"significant emotional anomalies"));
    assert_eq!(s.event_count, 41);
}

#[test]
fn global_metrics_count_everything_once() {
    let mut an = Analyzer::default();
    let mut n = 0;
    for (u, src) in [
        ("1", Source::Text),
        ("2", Source::Voice),
        ("3", Source::Voice),
    ] {
        for i in 0..5 {
            an.ingest(&event(u, &format!("s{u}"), i, 0.2, 0.4, src));
            n += 1;
        }
    }
    let g = an.global_metrics(t0() + Duration::seconds(5));
    assert_eq!(g.total_events, n);
    assert_eq!((g.unique_users, g.unique_sessions), (3, 3));
    assert_eq!(g.events_per_minute, 15);
    assert_eq!(g.source_distribution.get("voice"), Some(&10));
    assert_eq!(g.avg_valence, 0.2);
    assert_eq!(
        an.global_metrics(t0() + Duration::seconds(3600))
            .events_per_minute,
        0
    );
    assert_eq!(
        an.evict_sessions_idle_since(t0() + Duration::seconds(60)),
        3
    );
    assert_eq!(
        an.global_metrics(t0()).unique_sessions,
        3,
        "eviction keeps the counts"
    );
}

#[test]
fn session_summary_reflects_its_events() {
    let mut an = Analyzer::default();
    for i in 0..4 {
        an.ingest(&event(
            "9",
            "sess-9",
            i,
            0.1 * i as f64,
            0.5,
            Source::Survey,
        ));
    }
    let s = an.session_summary("sess-9").expect("known");
    assert_eq!(s.user_id, "9");
    assert_eq!(s.metrics.event_count, 4);
    assert!(s.trajectory.is_some());
    assert!(an.session_summary("nope").is_none());
}

fn finite_in(x: f64, lo: f64, hi: f64) -> bool {
    x.is_finite() && x >= lo && x <= hi
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever valid sequence comes in, every number that goes out is finite
    /// and within its range.
    #[test]
    fn outputs_stay_finite_and_in_range(
        evs in prop::collection::vec((0usize..4, 0usize..3, -1.0f64..=1.0, 0.0f64..=1.0, 0i64..5), 1..150)
    ) {
        let mut an = Analyzer::new(AnalyzerConfig { baseline_window: 30, ..Default::default() });
        let mut t = 0i64;
        for (k, (u, s, v, a, dt)) in evs.iter().enumerate() {
            t += dt;
            let src = Source::ALL[k % 8];
            let out = an.ingest(&event(&u.to_string(), &format!("{u}-{s}"), t, *v, *a, src));
            let m = &out.metrics;
            prop_assert!(finite_in(m.stability_score, 0.0, 1.0));
            prop_assert!(m.avg_valence.is_some_and(|x| finite_in(x, -1.0, 1.0)));
            prop_assert!(m.avg_arousal.is_some_and(|x| finite_in(x, 0.0, 1.0)));
            if let Analysis::Contextual(c) = &out.analysis {
                prop_assert!(finite_in(c.emotional_stability, 0.0, 1.0));
                prop_assert!(finite_in(c.trajectory.stability_score, 0.0, 1.0));
                prop_assert!(c.trajectory.emotional_velocity.is_finite() && c.trajectory.emotional_velocity >= 0.0);
                prop_assert!(finite_in(c.trajectory.valence.slope, -2.0, 2.0));
                prop_assert!(finite_in(c.trajectory.arousal.slope, -1.0, 1.0));
                prop_assert!(finite_in(c.state.intensity, 0.0, 2f64.sqrt() + 1e-9));
                prop_assert!(finite_in(c.risk.score, 0.0, 1.0));
                if let Some(an) = &c.anomaly {
                    prop_assert!(an.valence_zscore.is_finite() && an.arousal_zscore.is_finite());
                }
            }
        }
        for u in 0..4 {
            if let Some(s) = an.user_summary(&u.to_string()) {
                prop_assert!(finite_in(s.risk.score, 0.0, 1.0));
                prop_assert!(finite_in(s.stability_score, 0.0, 1.0));
            }
        }
        let g = an.global_metrics(t0() + Duration::seconds(t));
        prop_assert_eq!(g.total_events, evs.len() as u64);
        prop_assert!(finite_in(g.avg_valence, -1.0, 1.0) && finite_in(g.avg_arousal, 0.0, 1.0));
        prop_assert_eq!(g.source_distribution.values().sum::<u64>(), evs.len() as u64);
    }
}
