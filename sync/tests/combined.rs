//! Users at several gateways (migration 4): the per-gateway summaries of a
//! user who moves between sites combine into one summary per window
//! (`credit_risk_summaries_combined`, read by `credit_emotion_adjustment`),
//! and gateways that share users write consents at once without deadlocks.
//! Summaries come from the real analyzer fed disjoint events per site.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{event_at, fresh};
use emotion_core::Analyzer;
use emotion_core::credit::{CreditSummary, DEFAULT_WINDOWS};
use emotion_sync::testing::TestDatabase;
use emotion_sync::{Consent, ConsentPurpose, SyncClient};
use rand::seq::SliceRandom;

fn t() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("valid")
}

/// One site's events of one user: `per_day` events on each of `days` days
/// before `now`, at (valence, arousal).
struct Part {
    user: &'static str,
    days: i64,
    per_day: i64,
    va: (f64, f64),
}

/// The summaries a gateway's analyzer computes at `now` from `parts`.
fn site(parts: &[Part], now: DateTime<Utc>) -> Vec<CreditSummary> {
    let mut an = Analyzer::default();
    let mut n = 0;
    for p in parts {
        for day in 0..p.days {
            for i in 0..p.per_day {
                n += 1;
                let mut e = event_at(p.user, n, now);
                e.ingested_at = now - Duration::days(day) - Duration::minutes(10 * (i + 1));
                e.timestamp = e.ingested_at;
                (e.valence, e.arousal) = p.va;
                an.ingest(&e);
            }
        }
    }
    an.all_credit_summaries(now, &DEFAULT_WINDOWS)
}

async fn consent_credit(c: &mut SyncClient, users: &[&str]) {
    let rows: Vec<Consent> = users
        .iter()
        .map(|u| Consent {
            user_id: (*u).to_owned(),
            purpose: ConsentPurpose::Credit,
            granted: true,
            updated_at: t() - Duration::days(60),
        })
        .collect();
    c.upsert_consents("gw-a", &rows).await.expect("consents");
}

/// A summary row as the tests compare them.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    event_count: i64,
    avg_valence: Option<f64>,
    avg_arousal: Option<f64>,
    stability: f64,
    stress: Option<f64>,
    patterns: Vec<String>,
    risk: f64,
    pct: f64,
    action: String,
    reasons: serde_json::Value,
    computed_at: DateTime<Utc>,
}

const COLUMNS: &str = "event_count, avg_valence, avg_arousal, stability_score, avg_stress_level, \
                       patterns, risk_score, risk_premium_adjustment_pct, action, reasons, computed_at";

fn row(r: &tokio_postgres::Row) -> Row {
    Row {
        event_count: r.get(0),
        avg_valence: r.get(1),
        avg_arousal: r.get(2),
        stability: r.get(3),
        stress: r.get(4),
        patterns: r.get(5),
        risk: r.get(6),
        pct: r.get(7),
        action: r.get(8),
        reasons: r.get(9),
        computed_at: r.get(10),
    }
}

/// Per-gateway rows of a user and window, by gateway.
async fn site_rows(c: &mut SyncClient, user: &str, window: i32) -> Vec<(String, Row)> {
    c.client()
        .await
        .expect("connection")
        .query(
            &format!(
                "SELECT {COLUMNS}, gateway_id FROM credit_risk_summaries \
                 WHERE user_id = $1 AND window_days = $2 ORDER BY gateway_id"
            ),
            &[&user, &window],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(11), row(r)))
        .collect()
}

/// The combined row of a user and window, with its gateways.
async fn combined(c: &mut SyncClient, user: &str, window: i32) -> (Row, Vec<String>) {
    let r = c
        .client()
        .await
        .expect("connection")
        .query_one(
            &format!(
                "SELECT {COLUMNS}, gateways FROM credit_risk_summaries_combined \
                 WHERE user_id = $1 AND window_days = $2"
            ),
            &[&user, &window],
        )
        .await
        .expect("one combined row");
    (row(&r), r.get(11))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (None, None) => true,
        _ => false,
    }
}

#[tokio::test]
async fn a_mover_gets_one_summary_combined_from_both_sites() {
    let (_db, mut c) = fresh().await;
    consent_credit(&mut c, &["mover", "stay"]).await;
    let stress = (-0.6, 0.85);
    let calm = (0.5, 0.35);
    // Stressed every day at home, calm on three days at work.
    let home = site(
        &[
            Part {
                user: "mover",
                days: 6,
                per_day: 6,
                va: stress,
            },
            Part {
                user: "stay",
                days: 6,
                per_day: 4,
                va: calm,
            },
        ],
        t(),
    );
    let work = site(
        &[Part {
            user: "mover",
            days: 3,
            per_day: 4,
            va: calm,
        }],
        t() + Duration::minutes(1),
    );
    c.upsert_summaries("gw-home", &home).await.expect("home");
    c.upsert_summaries("gw-work", &work).await.expect("work");

    for window in [7, 30] {
        let sites = site_rows(&mut c, "mover", window).await;
        let [(_, h), (_, w)] = &sites[..] else {
            panic!("a row from each site: {sites:?}")
        };
        // What the sites concluded on their own, so the combination is tested
        // on opposite verdicts.
        assert_eq!((h.event_count, h.action.as_str()), (36, "premium"), "{h:?}");
        assert!(h.patterns.contains(&"chronic_stress".to_owned()), "{h:?}");
        assert_eq!(
            (w.event_count, w.action.as_str(), w.pct),
            (12, "discount", -5.0),
            "{w:?}"
        );

        let (m, gateways) = combined(&mut c, "mover", window).await;
        assert_eq!(gateways, ["gw-home", "gw-work"]);
        assert_eq!(m.event_count, 48, "every event once, from either site");
        // Means over all 48 events: exact up to the sites' 3-decimal rounding.
        let mean = |x: f64, y: f64| (36.0 * x + 12.0 * y) / 48.0;
        let (v, a) = (m.avg_valence.expect("v"), m.avg_arousal.expect("a"));
        assert!((v - mean(stress.0, calm.0)).abs() < 1e-3, "{v}");
        assert!((a - mean(stress.1, calm.1)).abs() < 1e-3, "{a}");
        let weighted = |f: fn(&Row) -> f64| (36.0 * f(h) + 12.0 * f(w)) / 48.0;
        assert!((m.risk - weighted(|r| r.risk)).abs() < 1e-9, "{m:?}");
        assert!(
            (m.stability - weighted(|r| r.stability)).abs() < 1e-9,
            "{m:?}"
        );
        // Both sites judge: their adjustments weighted by their events.
        let pct = ((36.0 * h.pct + 12.0 * w.pct) / 48.0 * 1000.0).round() / 1000.0;
        assert_eq!(m.pct, pct);
        assert_eq!(m.action, if pct > 0.0 { "premium" } else { "discount" });
        // Every pattern either site found, in the credit table's order.
        let mut expected: Vec<String> = h.patterns.clone();
        expected.extend(
            w.patterns
                .iter()
                .filter(|p| !h.patterns.contains(p))
                .cloned(),
        );
        let order = [
            "emotional_crisis",
            "chronic_stress",
            "emotional_volatility",
            "recovery",
            "high_stability",
        ];
        expected.sort_by_key(|p| order.iter().position(|o| o == p));
        assert_eq!(m.patterns, expected);
        assert_eq!(m.computed_at, w.computed_at, "the newest row's time");
        let reasons: Vec<&str> = m
            .reasons
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        assert!(reasons[0].starts_with("combined over 2 gateways (gw-home: 36 events, premium; gw-work: 12 events, discount)"), "{reasons:?}");
        for (gw, r) in [("gw-home", h), ("gw-work", w)] {
            for reason in r.reasons.as_array().expect("array") {
                let line = format!("{gw}: {}", reason.as_str().expect("text"));
                assert!(
                    reasons.contains(&line.as_str()),
                    "{line} missing in {reasons:?}"
                );
            }
        }
    }

    // The credit function answers with the combined row, whichever site synced last.
    let r = c
        .client()
        .await
        .expect("connection")
        .query_one(
            "SELECT risk_premium_adjustment_pct, action, event_count, gateway_id, gateways \
             FROM credit_emotion_adjustment('mover', 7)",
            &[],
        )
        .await
        .expect("function");
    let (m, _) = combined(&mut c, "mover", 7).await;
    assert_eq!(r.get::<_, f64>(0), m.pct);
    assert_eq!(r.get::<_, String>(1), m.action);
    assert_eq!(r.get::<_, i64>(2), 48);
    assert_eq!(r.get::<_, String>(3), "gw-work");
    assert_eq!(r.get::<_, Vec<String>>(4), ["gw-home", "gw-work"]);

    // A user of one gateway: the combined row is that row, exactly.
    for window in [7, 30] {
        let sites = site_rows(&mut c, "stay", window).await;
        assert_eq!(sites.len(), 1);
        let (m, gateways) = combined(&mut c, "stay", window).await;
        assert_eq!(gateways, ["gw-home"]);
        assert_eq!(m, sites[0].1);
        assert!(close(m.avg_valence, Some(calm.0)), "{m:?}");
    }
}

#[tokio::test]
async fn a_crisis_at_one_site_decides_and_sites_without_enough_data_do_not_judge() {
    let (_db, mut c) = fresh().await;
    consent_credit(&mut c, &["crisis", "thin", "half"]).await;
    let calm = (0.5, 0.35);
    let a = site(
        &[
            Part {
                user: "crisis",
                days: 2,
                per_day: 4,
                va: (-0.95, 0.95),
            },
            Part {
                user: "thin",
                days: 1,
                per_day: 2,
                va: calm,
            },
            Part {
                user: "half",
                days: 1,
                per_day: 3,
                va: (-0.6, 0.85),
            },
        ],
        t(),
    );
    let b = site(
        &[
            Part {
                user: "crisis",
                days: 5,
                per_day: 6,
                va: calm,
            },
            Part {
                user: "thin",
                days: 1,
                per_day: 3,
                va: calm,
            },
            Part {
                user: "half",
                days: 3,
                per_day: 4,
                va: calm,
            },
        ],
        t(),
    );
    c.upsert_summaries("gw-a", &a).await.expect("a");
    c.upsert_summaries("gw-b", &b).await.expect("b");
    let actions = |rows: &[(String, Row)]| -> Vec<String> {
        rows.iter().map(|(_, r)| r.action.clone()).collect()
    };

    // A crisis at one site outweighs any number of calm events elsewhere.
    let sites = site_rows(&mut c, "crisis", 7).await;
    assert_eq!(actions(&sites), ["delay_and_support", "discount"]);
    let (m, _) = combined(&mut c, "crisis", 7).await;
    assert_eq!(
        (m.action.as_str(), m.pct, m.event_count),
        ("delay_and_support", 0.0, 38)
    );
    assert_eq!(m.patterns[0], "emotional_crisis");

    // Neither site has enough events to judge: nor does the combination,
    // even though the two together have five.
    let sites = site_rows(&mut c, "thin", 7).await;
    assert_eq!(actions(&sites), ["insufficient_data", "insufficient_data"]);
    let (m, _) = combined(&mut c, "thin", 7).await;
    assert_eq!(
        (m.action.as_str(), m.pct, m.event_count),
        ("insufficient_data", 0.0, 5)
    );

    // Only the site that can judge decides the adjustment; the other's
    // events still count in the totals and means.
    let sites = site_rows(&mut c, "half", 7).await;
    assert_eq!(actions(&sites), ["insufficient_data", "discount"]);
    let (m, _) = combined(&mut c, "half", 7).await;
    assert_eq!(
        (m.action.as_str(), m.pct, m.event_count),
        ("discount", -5.0, 15)
    );
    let v = m.avg_valence.expect("v");
    assert!((v - (3.0 * -0.6 + 12.0 * 0.5) / 15.0).abs() < 1e-3, "{v}");
}

#[tokio::test]
async fn a_row_older_than_its_window_no_longer_counts() {
    let (_db, mut c) = fresh().await;
    consent_credit(&mut c, &["left"]).await;
    let stress = (-0.6, 0.85);
    // The user left site A eight days before site B's newest summary.
    let old = site(
        &[Part {
            user: "left",
            days: 6,
            per_day: 6,
            va: stress,
        }],
        t() - Duration::days(8),
    );
    let new = site(
        &[Part {
            user: "left",
            days: 3,
            per_day: 4,
            va: (0.5, 0.35),
        }],
        t(),
    );
    c.upsert_summaries("gw-a", &old).await.expect("a");
    c.upsert_summaries("gw-b", &new).await.expect("b");
    let (m7, g7) = combined(&mut c, "left", 7).await;
    assert_eq!(
        g7,
        ["gw-b"],
        "site A's 7-day window ended before site B's began"
    );
    assert_eq!(m7, site_rows(&mut c, "left", 7).await[1].1);
    let (m30, g30) = combined(&mut c, "left", 30).await;
    assert_eq!(g30, ["gw-a", "gw-b"], "the 30-day windows overlap");
    assert_eq!(m30.event_count, 48);
}

/// Many gateways writing consents of the same users at once (people who
/// move between sites) in different orders: each statement locks rows in key
/// order, so none waits on another in a cycle (SQLSTATE 40P01), and the
/// newest decision per user and purpose is what stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_users_write_consents_at_once_without_deadlocks() {
    let db = TestDatabase::create().await;
    let mut first = SyncClient::connect(db.url()).await.expect("connect");
    first.migrate().await.expect("migrate");
    const GATEWAYS: usize = 8;
    const USERS: usize = 300;
    const ROUNDS: usize = 6;
    let mut tasks = Vec::new();
    for g in 0..GATEWAYS {
        let url = db.url().to_owned();
        tasks.push(tokio::spawn(async move {
            let mut c = SyncClient::connect(&url).await.expect("connect");
            for round in 0..ROUNDS {
                let at = t() + Duration::milliseconds((round * GATEWAYS + g) as i64);
                let mut rows: Vec<Consent> = (0..USERS)
                    .flat_map(|u| {
                        ConsentPurpose::ALL.map(|purpose| Consent {
                            user_id: format!("user-{u}"),
                            purpose,
                            granted: (u + g) % 2 == 0,
                            updated_at: at,
                        })
                    })
                    .collect();
                rows.shuffle(&mut rand::rng());
                c.upsert_consents(&format!("gw-{g}"), &rows)
                    .await
                    .map_err(|e| {
                        format!("gw-{g}, round {round}: {e} (SQLSTATE {:?})", e.sqlstate())
                    })?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("no deadlock, no error");
    }
    // The newest decision: the last round of the last gateway.
    let last = format!("gw-{}", GATEWAYS - 1);
    let rows = first
        .client()
        .await
        .expect("connection")
        .query("SELECT gateway_id, count(*) FROM consents GROUP BY 1", &[])
        .await
        .expect("consents");
    let by: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(by, [(last, (USERS * 2) as i64)]);
}
