//! The writer against a live server: exactly-once batches, the forward-only
//! cursor, summaries (newer wins, consent), consents, erasure without
//! resurrection, and the credit system's function.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{event_at, events, fresh, scalar, t0};
use emotion_core::credit::{CreditAction, CreditSummary, DEFAULT_WINDOWS};
use emotion_core::{Analyzer, EmotionEvent, EmotionLabel};
use emotion_sync::{Consent, ConsentPurpose, Cursor, SyncClient};
use uuid::Uuid;

async fn text(client: &mut SyncClient, sql: &str) -> Option<String> {
    client
        .client()
        .await
        .expect("connection")
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// Everything a re-sent batch could change, as one string.
async fn snapshot(client: &mut SyncClient) -> String {
    format!(
        "{:?} {:?} {}",
        text(client, "SELECT md5(string_agg(e::text, '|' ORDER BY event_id)) FROM emotional_events e").await,
        text(client, "SELECT string_agg(row_to_json(g)::text, '|' ORDER BY gateway_id) FROM gateway_sync_state g").await,
        scalar(client, "SELECT count(*) FROM emotional_events").await,
    )
}

#[tokio::test]
async fn a_batch_is_written_once_and_resending_it_changes_nothing() {
    let (_db, mut c) = fresh().await;
    let batch = events("u1", 0..500);
    let out = c
        .write_events("gw-1", &batch, Cursor::new(1, 500))
        .await
        .expect("write");
    assert_eq!(
        (
            out.submitted,
            out.inserted,
            out.skipped,
            out.cursor_advanced
        ),
        (500, 500, 0, true)
    );
    let before = snapshot(&mut c).await;

    // The same batch again (a retry after a lost commit acknowledgement), and
    // once more with an older cursor: no row, counter or timestamp moves.
    for cursor in [Cursor::new(1, 500), Cursor::new(0, 7)] {
        let out = c
            .write_events("gw-1", &batch, cursor)
            .await
            .expect("re-send");
        assert_eq!(
            (out.inserted, out.skipped, out.cursor_advanced),
            (0, 500, false)
        );
        assert_eq!(snapshot(&mut c).await, before);
    }
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(1, 500))
    );
    let state = c.sync_state("gw-1").await.expect("state").expect("row");
    assert_eq!((state.events_synced, state.batches_synced), (500, 1));
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(DISTINCT event_id) FROM emotional_events"
        )
        .await,
        500
    );
}

#[tokio::test]
async fn every_column_round_trips() {
    let (_db, mut c) = fresh().await;
    let e: EmotionEvent = event_at("user-7", 10, t0());
    c.write_events("gw-1", std::slice::from_ref(&e), Cursor::new(1, 1))
        .await
        .expect("write");
    let r = c
        .client()
        .await
        .expect("connection")
        .query_one(
            "SELECT user_id, event_id, session_id, source, emotion_label, valence, arousal, confidence,
                    context, raw_payload, biometrics, location, device_info, \"timestamp\", ingested_at,
                    gateway_id, producer
             FROM emotional_events",
            &[],
        )
        .await
        .expect("row");
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    assert_eq!(r.get::<_, String>(0), e.user_id);
    assert_eq!(r.get::<_, Uuid>(1), e.event_id);
    assert_eq!(r.get::<_, String>(2), e.session_id);
    assert_eq!(r.get::<_, String>(3), e.source.as_str());
    assert_eq!(r.get::<_, String>(4), e.emotion_label.as_str());
    assert_eq!(
        (r.get::<_, f64>(5), r.get::<_, f64>(6)),
        (e.valence, e.arousal)
    );
    assert_eq!(r.get::<_, Option<f64>>(7), e.confidence);
    let j = |o: &Option<emotion_core::Json>| o.clone().map(emotion_core::Json::into_value);
    assert_eq!(r.get::<_, Option<serde_json::Value>>(8), j(&e.context));
    assert_eq!(
        r.get::<_, Option<serde_json::Value>>(9),
        j(&e.raw_data),
        "raw_payload holds raw_data"
    );
    assert_eq!(r.get::<_, Option<serde_json::Value>>(10), j(&e.biometrics));
    assert_eq!(r.get::<_, Option<serde_json::Value>>(11), j(&e.location));
    assert_eq!(r.get::<_, Option<serde_json::Value>>(12), j(&e.device_info));
    assert_eq!(micros(r.get(13)), micros(e.timestamp));
    assert_eq!(micros(r.get(14)), micros(e.ingested_at));
    assert_eq!(r.get::<_, String>(15), e.gateway_id);
    assert_eq!(r.get::<_, String>(16), e.producer);
}

#[tokio::test]
async fn the_cursor_only_moves_forward() {
    let (_db, mut c) = fresh().await;
    assert_eq!(c.read_cursor("gw-1").await.expect("cursor"), None);
    c.write_events("gw-1", &events("u", 0..10), Cursor::new(5, 0))
        .await
        .expect("write");
    // Newer rows with an older cursor are stored, but the cursor stays.
    let out = c
        .write_events("gw-1", &events("u", 10..20), Cursor::new(3, 9))
        .await
        .expect("write");
    assert_eq!((out.inserted, out.cursor_advanced), (10, false));
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(5, 0))
    );
    // Forward within a batch, and an empty batch (nothing to ship) moves it too.
    assert!(
        c.write_events("gw-1", &events("u", 20..21), Cursor::new(5, 1))
            .await
            .expect("w")
            .cursor_advanced
    );
    assert!(
        c.write_events("gw-1", &[], Cursor::new(6, 0))
            .await
            .expect("w")
            .cursor_advanced
    );
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(6, 0))
    );
    // Gateways have separate cursors.
    c.write_events("gw-2", &[], Cursor::new(1, 0))
        .await
        .expect("w");
    assert_eq!(
        c.read_cursor("gw-2").await.expect("cursor"),
        Some(Cursor::new(1, 0))
    );
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(6, 0))
    );
    // Cursors beyond the bigint range are refused before anything is written.
    let err = c
        .write_events("gw-1", &events("u", 30..31), Cursor::new(u64::MAX, 0))
        .await
        .expect_err("out of range");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM emotional_events").await,
        21
    );
}

/// Pairs of batches on two connections: the same exactly-once guarantees,
/// and an event present in both batches of a pair neither deadlocks the two
/// transactions nor is stored twice.
#[tokio::test]
async fn batches_written_in_pairs_are_stored_exactly_once() {
    let (_db, mut c) = fresh().await;
    let batches: Vec<Vec<EmotionEvent>> = (0..5u64)
        .map(|b| events(&format!("u{b}"), b * 100..b * 100 + 100))
        .collect();
    let mut with_dup = batches.clone();
    with_dup[1].push(batches[0][7].clone());
    let arg: Vec<(&[EmotionEvent], Cursor)> = with_dup
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_slice(), Cursor::new(i as u64 + 1, 0)))
        .collect();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        c.write_event_batches("gw-1", &arg),
    )
    .await
    .expect("no deadlock")
    .expect("write");
    assert_eq!((out.submitted, out.inserted, out.skipped), (501, 500, 1));
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(5, 0))
    );
    let before = snapshot(&mut c).await;
    let again = c.write_event_batches("gw-1", &arg).await.expect("re-send");
    assert_eq!((again.inserted, again.cursor_advanced), (0, false));
    assert_eq!(snapshot(&mut c).await, before);
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(DISTINCT event_id) FROM emotional_events"
        )
        .await,
        500
    );
    let state = c.sync_state("gw-1").await.expect("state").expect("row");
    assert_eq!((state.events_synced, state.batches_synced), (500, 5));
}

/// The daemon's loop with a crash after a commit whose acknowledgement never
/// reached the gateway: the restarted gateway asks the central database where
/// it stands and neither loses nor duplicates a thing.
#[tokio::test]
async fn a_crash_between_commit_and_local_ack_loses_and_duplicates_nothing() {
    let (db, mut c) = fresh().await;
    let buffer: Vec<Vec<EmotionEvent>> = (0..10u64)
        .map(|b| events(&format!("u{}", b % 3), b * 100..b * 100 + 100))
        .collect();
    // First run: ships batches 0..=4, "crashes" right after committing 4
    // (its local acknowledgement of 3 and 4 is lost).
    let mut local_ack = None;
    for (b, batch) in buffer.iter().enumerate().take(5) {
        c.write_events("gw-1", batch, Cursor::new(b as u64 + 1, 0))
            .await
            .expect("write");
        if b < 3 {
            local_ack = Some(Cursor::new(b as u64 + 1, 0));
        }
    }
    drop(c);
    assert_eq!(local_ack, Some(Cursor::new(3, 0)));

    // Restart: the central cursor, not the stale local one, says where to go on.
    let mut c = SyncClient::connect(db.url()).await.expect("reconnect");
    let from = c.read_cursor("gw-1").await.expect("cursor").expect("some");
    assert_eq!(from, Cursor::new(5, 0));
    for (b, batch) in buffer.iter().enumerate().skip(from.batch as usize) {
        c.write_events("gw-1", batch, Cursor::new(b as u64 + 1, 0))
            .await
            .expect("write");
    }
    // A gateway that trusts its stale local ack instead re-sends 3 and 4: harmless.
    for (b, batch) in buffer.iter().enumerate().skip(3).take(2) {
        let out = c
            .write_events("gw-1", batch, Cursor::new(b as u64 + 1, 0))
            .await
            .expect("w");
        assert_eq!((out.inserted, out.cursor_advanced), (0, false));
    }
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM emotional_events").await,
        1000
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(DISTINCT event_id) FROM emotional_events"
        )
        .await,
        1000
    );
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(10, 0))
    );
}

fn consent(user: &str, purpose: ConsentPurpose, granted: bool, at: DateTime<Utc>) -> Consent {
    Consent {
        user_id: user.to_owned(),
        purpose,
        granted,
        updated_at: at,
    }
}

/// Credit summaries of scripted users, as the analyzer computes them.
fn summaries(now: DateTime<Utc>) -> Vec<CreditSummary> {
    let mut an = Analyzer::default();
    let stress = EmotionLabel::Stress.coordinates().expect("placed");
    let calm = EmotionLabel::Contentment.coordinates().expect("placed");
    let mut n = 0;
    for day in 0..7 {
        for i in 0..6 {
            for (user, c) in [("stressed", stress), ("stable", calm)] {
                n += 1;
                let mut e = event_at(user, n, now - Duration::days(day) - Duration::hours(i));
                e.ingested_at = now - Duration::days(day) - Duration::hours(i);
                e.timestamp = e.ingested_at;
                (e.valence, e.arousal) = (c.valence, c.arousal);
                an.ingest(&e);
            }
        }
    }
    an.all_credit_summaries(now, &DEFAULT_WINDOWS)
}

#[tokio::test]
async fn summaries_need_credit_consent_and_newer_wins() {
    let (_db, mut c) = fresh().await;
    let t = Utc
        .with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("valid");
    let s1 = summaries(t);
    assert_eq!(s1.len(), 4);

    // No consent at all, then analytics only: nothing is stored.
    let out = c.upsert_summaries("gw-1", &s1).await.expect("upsert");
    assert_eq!((out.submitted, out.written), (4, 0));
    c.upsert_consents(
        "gw-1",
        &[consent("stressed", ConsentPurpose::Analytics, true, t)],
    )
    .await
    .expect("consent");
    assert_eq!(
        c.upsert_summaries("gw-1", &s1)
            .await
            .expect("upsert")
            .written,
        0
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM credit_risk_summaries").await,
        0
    );

    // Credit consent for one user: only theirs are stored.
    c.upsert_consents(
        "gw-1",
        &[consent("stressed", ConsentPurpose::Credit, true, t)],
    )
    .await
    .expect("consent");
    assert_eq!(
        c.upsert_summaries("gw-1", &s1)
            .await
            .expect("upsert")
            .written,
        2
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM credit_risk_summaries WHERE user_id = 'stressed'"
        )
        .await,
        2
    );

    // Older and equally old summaries never replace a stored one; newer do.
    let older = summaries(t - Duration::hours(1));
    assert_eq!(
        c.upsert_summaries("gw-1", &older)
            .await
            .expect("older")
            .written,
        0
    );
    assert_eq!(
        c.upsert_summaries("gw-1", &s1).await.expect("same").written,
        0
    );
    let stored = async |c: &mut SyncClient| {
        text(
            c,
            "SELECT max(computed_at)::text FROM credit_risk_summaries",
        )
        .await
    };
    assert_eq!(
        stored(&mut c).await.as_deref(),
        Some("2025-06-01 12:00:00+00")
    );
    let newer = summaries(t + Duration::hours(1));
    // Two generations in one call: the newest of each (user, window) is kept.
    let mut both = newer.clone();
    both.extend(older.clone());
    assert_eq!(
        c.upsert_summaries("gw-1", &both)
            .await
            .expect("newer")
            .written,
        2
    );
    assert_eq!(
        stored(&mut c).await.as_deref(),
        Some("2025-06-01 13:00:00+00")
    );
    let row = c
        .client()
        .await
        .expect("connection")
        .query_one(
            "SELECT risk_premium_adjustment_pct, action, patterns, jsonb_array_length(reasons), event_count
             FROM credit_risk_summaries WHERE user_id = 'stressed' AND window_days = 7",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, f64>(0), 15.0);
    assert_eq!(row.get::<_, String>(1), CreditAction::Premium.as_str());
    assert!(
        row.get::<_, Vec<String>>(2)
            .contains(&"chronic_stress".to_owned())
    );
    assert!(row.get::<_, i32>(3) >= 1);
    assert_eq!(row.get::<_, i64>(4), 42);

    // Withdrawing the credit consent removes the summaries and keeps new ones out.
    let out = c
        .upsert_consents(
            "gw-1",
            &[consent(
                "stressed",
                ConsentPurpose::Credit,
                false,
                t + Duration::hours(2),
            )],
        )
        .await
        .expect("withdraw");
    assert_eq!((out.written, out.summaries_deleted), (1, 2));
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM credit_risk_summaries").await,
        0
    );
    assert_eq!(
        c.upsert_summaries("gw-1", &summaries(t + Duration::hours(3)))
            .await
            .expect("u")
            .written,
        0
    );
}

#[tokio::test]
async fn consents_newest_decision_wins() {
    let (_db, mut c) = fresh().await;
    let t = t0();
    let out = c
        .upsert_consents(
            "gw-1",
            &[
                consent("a", ConsentPurpose::Credit, true, t),
                consent("a", ConsentPurpose::Credit, false, t - Duration::minutes(1)),
                consent("a", ConsentPurpose::Analytics, false, t),
                consent("b", ConsentPurpose::Credit, true, t),
            ],
        )
        .await
        .expect("consents");
    assert_eq!((out.submitted, out.written), (4, 3));
    // A late, older decision does not override.
    c.upsert_consents(
        "gw-2",
        &[consent(
            "a",
            ConsentPurpose::Credit,
            false,
            t - Duration::hours(1),
        )],
    )
    .await
    .expect("older");
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM consents WHERE user_id = 'a' AND purpose = 'credit' AND granted"
        )
        .await,
        1
    );
    c.upsert_consents(
        "gw-2",
        &[consent(
            "a",
            ConsentPurpose::Credit,
            false,
            t + Duration::hours(1),
        )],
    )
    .await
    .expect("newer");
    assert_eq!(
        text(&mut c, "SELECT gateway_id || ':' || granted FROM consents WHERE user_id = 'a' AND purpose = 'credit'").await.as_deref(),
        Some("gw-2:false")
    );
}

#[tokio::test]
async fn the_credit_function_returns_the_latest_consented_adjustment() {
    let (_db, mut c) = fresh().await;
    let t = Utc
        .with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("valid");
    for user in ["stressed", "stable"] {
        c.upsert_consents("gw-1", &[consent(user, ConsentPurpose::Credit, true, t)])
            .await
            .expect("consent");
    }
    c.upsert_summaries("gw-1", &summaries(t))
        .await
        .expect("gw-1");
    // A second gateway reports the same user later (a user at two sites,
    // the same pattern at both): one row per window combines the two
    // (migration 4; the rule is tested in combined.rs).
    c.upsert_summaries("gw-2", &summaries(t + Duration::hours(1)))
        .await
        .expect("gw-2");
    let rows = c
        .client()
        .await
        .expect("connection")
        .query(
            "SELECT window_days, risk_premium_adjustment_pct, action, reasons, gateway_id, gateways, event_count
             FROM credit_emotion_adjustment('stressed') ORDER BY window_days",
            &[],
        )
        .await
        .expect("function");
    assert_eq!(rows.len(), 2);
    for (r, w) in rows.iter().zip([7, 30]) {
        assert_eq!(r.get::<_, i32>(0), w);
        assert_eq!(r.get::<_, f64>(1), 15.0);
        assert_eq!(r.get::<_, String>(2), "premium");
        let reasons: serde_json::Value = r.get(3);
        assert!(
            reasons[0]
                .as_str()
                .is_some_and(|s| s.starts_with("combined over 2 gateways")),
            "{reasons}"
        );
        for gw in ["gw-1", "gw-2"] {
            assert!(
                reasons.as_array().is_some_and(|a| a.iter().any(|x| x
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{gw}: chronic stress"))))),
                "{reasons}"
            );
        }
        assert_eq!(r.get::<_, String>(4), "gw-2", "the newest row's gateway");
        assert_eq!(r.get::<_, Vec<String>>(5), ["gw-1", "gw-2"]);
        assert_eq!(r.get::<_, i64>(6), 2 * 42, "both sites' events");
    }
    assert_eq!(
        text(&mut c, "SELECT action || ' ' || risk_premium_adjustment_pct FROM credit_emotion_adjustment('stable', 7)").await.as_deref(),
        Some("discount -5")
    );
    // Without a standing consent the function returns nothing, even if rows exist.
    scalar(&mut c, "WITH u AS (UPDATE consents SET granted = false WHERE user_id = 'stable' RETURNING 1) SELECT count(*) FROM u").await;
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM credit_emotion_adjustment('stable')"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM credit_emotion_adjustment('nobody')"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn erasure_removes_the_user_everywhere_and_late_data_does_not_bring_them_back() {
    let (_db, mut c) = fresh().await;
    let t = t0();
    // Two users' events, consents and summaries.
    let mut batch = events("gone", 0..300);
    batch.extend(events("kept", 0..300));
    c.write_events("gw-1", &batch, Cursor::new(1, 0))
        .await
        .expect("write");
    for user in ["gone", "kept"] {
        c.upsert_consents(
            "gw-1",
            &[
                consent(user, ConsentPurpose::Credit, true, t),
                consent(user, ConsentPurpose::Analytics, true, t),
            ],
        )
        .await
        .expect("consent");
    }
    let mut sums = summaries(t + Duration::minutes(30));
    for s in &mut sums {
        s.user_id = if s.user_id == "stressed" {
            "gone".into()
        } else {
            "kept".into()
        };
    }
    assert_eq!(
        c.upsert_summaries("gw-1", &sums)
            .await
            .expect("sums")
            .written,
        4
    );

    let requested_at = t + Duration::hours(1);
    let request = Uuid::now_v7();
    let out = c
        .apply_erasure("gw-1", "gone", request, requested_at)
        .await
        .expect("erase");
    assert!(out.newly_recorded);
    assert_eq!(
        (
            out.events_deleted,
            out.summaries_deleted,
            out.consents_deleted
        ),
        (300, 2, 2)
    );
    for table in ["emotional_events", "credit_risk_summaries", "consents"] {
        assert_eq!(
            scalar(
                &mut c,
                &format!("SELECT count(*) FROM {table} WHERE user_id = 'gone'")
            )
            .await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM emotional_events WHERE user_id = 'kept'"
        )
        .await,
        300
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM credit_risk_summaries WHERE user_id = 'kept'"
        )
        .await,
        2
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT events_deleted FROM erasure_requests WHERE user_id = 'gone'"
        )
        .await,
        300
    );

    // In flight or late: the same batch again, more events ingested before the
    // request, a summary and a consent computed before it. None comes back.
    let out = c
        .write_events("gw-1", &batch, Cursor::new(2, 0))
        .await
        .expect("late batch");
    assert_eq!((out.inserted, out.skipped), (0, 600));
    let late: Vec<EmotionEvent> = events("gone", 1000..1100);
    assert_eq!(
        c.write_events("gw-2", &late, Cursor::new(1, 0))
            .await
            .expect("late")
            .inserted,
        0
    );
    let late_sums: Vec<CreditSummary> = sums
        .iter()
        .filter(|s| s.user_id == "gone")
        .cloned()
        .collect();
    assert_eq!(
        c.upsert_summaries("gw-1", &late_sums)
            .await
            .expect("late sums")
            .written,
        0
    );
    c.upsert_consents(
        "gw-1",
        &[consent(
            "gone",
            ConsentPurpose::Credit,
            true,
            t + Duration::minutes(59),
        )],
    )
    .await
    .expect("late consent");
    for table in ["emotional_events", "credit_risk_summaries", "consents"] {
        assert_eq!(
            scalar(
                &mut c,
                &format!("SELECT count(*) FROM {table} WHERE user_id = 'gone'")
            )
            .await,
            0,
            "{table} after late data"
        );
    }

    // Applying the same request again (a retry) is harmless.
    let again = c
        .apply_erasure("gw-1", "gone", request, requested_at + Duration::days(9))
        .await
        .expect("again");
    assert!(!again.newly_recorded);
    assert_eq!(again.requested_at, requested_at, "the recorded time stays");
    assert_eq!(again.events_deleted, 0);

    // The user coming back after the erasure (new consent, new events) is new data.
    let after = requested_at + Duration::minutes(1);
    c.upsert_consents(
        "gw-1",
        &[consent("gone", ConsentPurpose::Analytics, true, after)],
    )
    .await
    .expect("new consent");
    let fresh_events: Vec<EmotionEvent> = (0..5).map(|n| event_at("gone", n, after)).collect();
    assert_eq!(
        c.write_events("gw-1", &fresh_events, Cursor::new(3, 0))
            .await
            .expect("new")
            .inserted,
        5
    );
}

/// Writers on other connections run while the erasure is applied: whatever
/// the interleaving, no event ingested before the request survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_racing_writers_leaves_nothing_behind() {
    let (db, mut c) = fresh().await;
    let requested_at = t0() + Duration::days(1);
    let mut writers = Vec::new();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for w in 0..2u64 {
        let url = db.url().to_owned();
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut wc = SyncClient::connect(&url).await.expect("connect");
            for b in 0..30u64 {
                let first = (w * 1_000 + b) * 50;
                let mut batch = events("racer", first..first + 50);
                batch.extend(events(&format!("other{w}"), first..first + 50));
                wc.write_events(&format!("gw-{w}"), &batch, Cursor::new(b + 1, 0))
                    .await
                    .expect("write");
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    // Erase once batches are going in, so it lands among the writes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while written.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writers wrote nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let out = c
        .apply_erasure("gw-x", "racer", Uuid::now_v7(), requested_at)
        .await
        .expect("erase");
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM emotional_events WHERE user_id = 'racer'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM emotional_events WHERE user_id <> 'racer'"
        )
        .await,
        3_000
    );
    eprintln!(
        "erasure deleted {} racer events written before it",
        out.events_deleted
    );
}
