//! Credit/risk summaries through the analyzer: five scripted users, each of
//! whom must land on their row of the original's credit impact table.

use chrono::{DateTime, Duration, TimeZone, Utc};
use emotion_core::credit::{CreditAction, CreditPattern, CreditSummary, DEFAULT_WINDOWS};
use emotion_core::{Analyzer, EmotionEvent, EmotionLabel, Source};
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 30, 20, 0, 0)
        .single()
        .expect("valid")
}

fn coords(l: EmotionLabel) -> (f64, f64) {
    let c = l.coordinates().expect("placed");
    (c.valence, c.arousal)
}

fn event(user: &str, n: u128, at: DateTime<Utc>, (v, a): (f64, f64)) -> EmotionEvent {
    EmotionEvent {
        event_id: Uuid::from_u128(n),
        user_id: user.into(),
        session_id: format!("s-{user}-{}", at.date_naive()),
        source: Source::Physiological,
        emotion_label: EmotionLabel::nearest(v, a),
        valence: v,
        arousal: a,
        confidence: Some(0.9),
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

/// One week, eight events a day per user, users interleaved as on a real gateway.
fn scripted_week() -> Analyzer {
    let (joy, sadness, stress, content) = (
        coords(EmotionLabel::Joy),
        coords(EmotionLabel::Sadness),
        coords(EmotionLabel::Stress),
        coords(EmotionLabel::Contentment),
    );
    let mut an = Analyzer::default();
    let mut n = 0u128;
    for day in 0..7i64 {
        for i in 0..8i64 {
            let at =
                now() - Duration::days(6 - day) - Duration::hours(12) + Duration::minutes(i * 30);
            let jitter = 0.02 * (i % 3) as f64;
            let users: [(&str, (f64, f64)); 5] = [
                ("stable", (content.0 + jitter, content.1)),
                ("volatile", if i % 2 == 0 { joy } else { sadness }),
                ("stressed", (stress.0 + jitter, stress.1)),
                ("recovering", if day < 3 { sadness } else { content }),
                ("crisis", if day >= 5 { (-0.9, 0.95) } else { stress }),
            ];
            for (user, point) in users {
                n += 1;
                an.ingest(&event(user, n, at, point));
            }
        }
    }
    an
}

fn find<'a>(all: &'a [CreditSummary], user: &str, window: u32) -> &'a CreditSummary {
    all.iter()
        .find(|s| s.user_id == user && s.window_days == window)
        .unwrap_or_else(|| panic!("no {window}-day summary for {user}"))
}

#[test]
fn each_scripted_user_gets_its_row_of_the_credit_table_with_reasons() {
    let an = scripted_week();
    let all = an.all_credit_summaries(now(), &DEFAULT_WINDOWS);
    assert_eq!(all.len(), 10, "five users, two windows");
    let expect: [(&str, f64, CreditAction, CreditPattern, &str); 5] = [
        (
            "stable",
            -5.0,
            CreditAction::Discount,
            CreditPattern::HighStability,
            "high stability",
        ),
        (
            "volatile",
            10.0,
            CreditAction::Premium,
            CreditPattern::EmotionalVolatility,
            "emotional volatility",
        ),
        (
            "stressed",
            15.0,
            CreditAction::Premium,
            CreditPattern::ChronicStress,
            "chronic stress",
        ),
        (
            "recovering",
            0.0,
            CreditAction::StandardRates,
            CreditPattern::Recovery,
            "recovery",
        ),
        (
            "crisis",
            0.0,
            CreditAction::DelayAndSupport,
            CreditPattern::EmotionalCrisis,
            "emotional crisis",
        ),
    ];
    for (user, pct, action, pattern, reason) in expect {
        for w in DEFAULT_WINDOWS {
            let s = find(&all, user, w);
            assert_eq!(s.event_count, 56, "{user}");
            assert_eq!(s.risk_premium_adjustment_pct, pct, "{user} {w}: {s:#?}");
            assert_eq!(s.action, action, "{user} {w}");
            assert!(
                s.patterns.contains(&pattern),
                "{user} {w}: {:?}",
                s.patterns
            );
            assert!(
                s.reasons.iter().any(|r| r.starts_with(reason)),
                "{user}: {:?}",
                s.reasons
            );
            assert!(s.risk_score.is_finite() && (0.0..=1.0).contains(&s.risk_score));
            assert_eq!(s.computed_at, now());
        }
    }
    // Crisis overrides the chronic-stress penalty that the same data carries.
    let c = find(&all, "crisis", 7);
    assert!(
        c.patterns.contains(&CreditPattern::ChronicStress),
        "{:?}",
        c.patterns
    );
    assert!(
        c.reasons
            .iter()
            .any(|r| r.contains("waived, a crisis is never penalized"))
    );
}

#[test]
fn one_user_and_unknown_users() {
    let an = scripted_week();
    let s = an.credit_summaries("stable", now(), &[7]);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].window_days, 7);
    assert!(an.credit_summaries("nobody", now(), &[7, 30]).is_empty());
}

#[test]
fn quiet_users_send_one_last_empty_summary_then_drop_out() {
    let an = scripted_week();
    // 31 days after the last event: the 30-day window is empty but still sent.
    let later = now() + Duration::days(30) + Duration::hours(1);
    let all = an.all_credit_summaries(later, &[30]);
    assert_eq!(all.len(), 5);
    assert!(
        all.iter()
            .all(|s| s.event_count == 0 && s.action == CreditAction::InsufficientData)
    );
    assert!(
        an.all_credit_summaries(later + Duration::days(2), &[30])
            .is_empty()
    );
}

#[test]
fn erasing_a_user_forgets_their_credit_history_and_sessions() {
    let mut an = scripted_week();
    let sessions = an.live_sessions();
    assert!(an.erase_user("crisis"));
    assert!(!an.erase_user("crisis"));
    assert!(an.user_summary("crisis").is_none());
    assert!(an.credit_summaries("crisis", now(), &[7]).is_empty());
    assert_eq!(
        an.live_sessions(),
        sessions - 7,
        "its seven daily sessions went"
    );
    assert_eq!(an.all_credit_summaries(now(), &[7]).len(), 4);
}
