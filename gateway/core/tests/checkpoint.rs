//! Checkpoints and evicted users: a restored analyzer must behave exactly like
//! one that never stopped, and damaged or mismatched state must be refused.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use emotion_core::analyzer::{AnomalyRule, CheckpointError, EventOutcome};
use emotion_core::credit::CreditSummary;
use emotion_core::{Analyzer, AnalyzerConfig, EmotionEvent, EmotionLabel, Source};
use proptest::prelude::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

/// Small windows, so that they wrap, anomalies occur and the anomaly list and
/// high-anomaly flags fill within a short sequence.
fn small_cfg() -> AnalyzerConfig {
    AnalyzerConfig {
        session_window: 6,
        trajectory_window: 4,
        baseline_window: 8,
        anomaly: AnomalyRule {
            min_baseline: 4,
            ..AnomalyRule::default()
        },
        recent_anomalies: 3,
        fusion: Default::default(),
    }
}

const WINDOWS: [u32; 3] = [1, 7, 30];

/// One generated event: user, session of that user, seconds since the
/// previous event, coordinates, label choice, clock skew, source.
#[derive(Debug, Clone)]
struct Ev {
    user: u8,
    session: u8,
    gap: i64,
    v: f64,
    a: f64,
    label: Option<usize>,
    skew: i64,
    source: usize,
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    let coords = prop_oneof![
        3 => (-1.0f64..=1.0, 0.0f64..=1.0),
        2 => Just((0.2, 0.4)),
        1 => Just((-0.95, 0.97)),
    ];
    let gap = prop_oneof![8 => 0i64..90, 2 => 3_600i64..3 * 86_400];
    (
        0u8..4,
        0u8..3,
        gap,
        coords,
        proptest::option::of(0..EmotionLabel::COUNT),
        -3_600i64..3_600,
        0..Source::ALL.len(),
    )
        .prop_map(|(user, session, gap, (v, a), label, skew, source)| Ev {
            user,
            session,
            gap,
            v,
            a,
            label,
            skew,
            source,
        })
}

/// The events, with `ingested_at` never going back.
fn events(evs: &[Ev]) -> Vec<EmotionEvent> {
    let mut at = t0();
    evs.iter()
        .enumerate()
        .map(|(i, e)| {
            at += Duration::seconds(e.gap);
            EmotionEvent {
                event_id: Uuid::from_u128(i as u128 + 1),
                user_id: format!("user-{}", e.user),
                session_id: format!("user-{}-session-{}", e.user, e.session),
                source: Source::ALL[e.source],
                emotion_label: e
                    .label
                    .map_or_else(|| EmotionLabel::nearest(e.v, e.a), |i| EmotionLabel::ALL[i]),
                valence: e.v,
                arousal: e.a,
                confidence: Some(0.8),
                timestamp: at + Duration::seconds(e.skew),
                ingested_at: at,
                gateway_id: "gw".into(),
                producer: "client".into(),
                context: None,
                biometrics: None,
                location: None,
                device_info: None,
                raw_data: None,
            }
        })
        .collect()
}

/// A few `now`s to look at the state from: just after the last event, and
/// far enough later for credit windows and the minute rate to empty.
fn nows(evs: &[EmotionEvent]) -> Vec<DateTime<Utc>> {
    let last = evs.last().map_or(t0(), |e| e.ingested_at);
    vec![
        last,
        last + Duration::seconds(30),
        last + Duration::days(3),
        last + Duration::days(40),
    ]
}

/// Everything the analyzers show must be identical.
fn assert_same_views(a: &Analyzer, b: &Analyzer, evs: &[EmotionEvent]) {
    let users: BTreeSet<&str> = evs.iter().map(|e| e.user_id.as_str()).collect();
    let sessions: BTreeSet<&str> = evs.iter().map(|e| e.session_id.as_str()).collect();
    for u in &users {
        assert_eq!(a.user_summary(u), b.user_summary(u), "user {u}");
    }
    for s in &sessions {
        assert_eq!(a.session_summary(s), b.session_summary(s), "session {s}");
    }
    for now in nows(evs) {
        assert_eq!(a.global_metrics(now), b.global_metrics(now), "at {now}");
        for u in &users {
            assert_eq!(
                a.credit_summaries(u, now, &WINDOWS),
                b.credit_summaries(u, now, &WINDOWS),
                "credit of {u} at {now}"
            );
        }
        assert_eq!(
            a.all_credit_summaries(now, &WINDOWS),
            b.all_credit_summaries(now, &WINDOWS)
        );
    }
    assert_eq!(a.live_sessions(), b.live_sessions());
    assert_eq!(a.resident_users(), b.resident_users());
}

/// The outcomes of `evs`, without fused estimates: those are not
/// checkpointed (they span seconds), so a restored analyzer differs from the
/// original in them alone, by design.
fn ingest_all(an: &mut Analyzer, evs: &[EmotionEvent]) -> Vec<EventOutcome> {
    evs.iter()
        .map(|e| EventOutcome {
            fused: None,
            ..an.ingest(e)
        })
        .collect()
}

/// A user's summaries as seen by a resident analyzer, for comparison with
/// what the encoded state gives.
fn user_views(
    an: &Analyzer,
    user: &str,
    now: DateTime<Utc>,
) -> (
    Option<emotion_core::analyzer::UserSummary>,
    Vec<CreditSummary>,
) {
    (
        an.user_summary(user),
        an.credit_summaries(user, now, &WINDOWS),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A ← everything; B ← a prefix, checkpoint, restore as B', the rest.
    #[test]
    fn a_restored_checkpoint_continues_like_the_original(
        evs in proptest::collection::vec(ev_strategy(), 1..160),
        split in any::<proptest::sample::Index>(),
        small in any::<bool>(),
    ) {
        let cfg = if small { small_cfg() } else { AnalyzerConfig::default() };
        let evs = events(&evs);
        let k = split.index(evs.len() + 1);
        let mut a = Analyzer::new(cfg.clone());
        let expected = ingest_all(&mut a, &evs);

        let mut b = Analyzer::new(cfg.clone());
        ingest_all(&mut b, &evs[..k]);
        let bytes = b.checkpoint();
        let mut restored = Analyzer::from_checkpoint(cfg.clone(), &bytes).expect("restores");
        // The restored state encodes to the very same bytes.
        prop_assert_eq!(restored.checkpoint(), bytes);
        assert_same_views(&b, &restored, &evs[..k]);

        let outcomes = ingest_all(&mut restored, &evs[k..]);
        prop_assert_eq!(&outcomes[..], &expected[k..]);
        assert_same_views(&a, &restored, &evs);
    }

    /// A ← everything; B ← the same events, with users evicted now and then
    /// (and checkpoints taken) and restored when their next event comes. Both
    /// drop idle sessions at the same points.
    #[test]
    fn evicted_users_come_back_as_they_left(
        evs in proptest::collection::vec(ev_strategy(), 1..160),
        ops in proptest::collection::vec((0u8..10, 0i64..2 * 86_400), 160),
        small in any::<bool>(),
    ) {
        let cfg = if small { small_cfg() } else { AnalyzerConfig::default() };
        let evs = events(&evs);
        let mut a = Analyzer::new(cfg.clone());
        let mut b = Analyzer::new(cfg.clone());
        let mut stored: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (i, e) in evs.iter().enumerate() {
            let (op, idle) = ops[i];
            let now = e.ingested_at;
            if op < 2 {
                // Evict users idle for `idle` seconds.
                let before_global = b.global_metrics(now);
                let known = b.resident_users() + b.evicted_users();
                let views: BTreeMap<String, _> = b
                    .user_ids()
                    .map(|u| (u.to_owned(), user_views(&b, u, now)))
                    .collect();
                let out = b.evict_users_idle_since(now - Duration::seconds(idle));
                prop_assert_eq!(b.global_metrics(now), before_global);
                prop_assert_eq!(b.resident_users() + b.evicted_users(), known);
                for (u, bytes) in out {
                    prop_assert!(!b.is_resident(&u) && b.is_evicted(&u));
                    let (summary, credit) = &views[&u];
                    let from_bytes = b.user_summary_from_encoded(&u, &bytes).expect("decodes");
                    prop_assert_eq!(Some(from_bytes), summary.clone());
                    let credit_bytes = Analyzer::credit_summaries_from_encoded(&bytes, &u, now, &WINDOWS)
                        .expect("decodes");
                    prop_assert_eq!(&credit_bytes, credit);
                    stored.insert(u, bytes);
                }
            } else if op == 2 {
                let bytes = b.checkpoint();
                b = Analyzer::from_checkpoint(cfg.clone(), &bytes).expect("restores");
            } else if op == 3 {
                // B may hold some of these sessions in evicted users' state,
                // so only the outcome, not the count, is compared.
                let cutoff = now - Duration::seconds(idle / 4);
                a.evict_sessions_idle_since(cutoff);
                b.evict_sessions_idle_since(cutoff);
            }
            if b.is_evicted(&e.user_id) {
                let bytes = stored.remove(&e.user_id).expect("stored at eviction");
                let before_global = b.global_metrics(now);
                b.restore_user(&e.user_id, &bytes).expect("restores");
                prop_assert_eq!(b.global_metrics(now), before_global);
                prop_assert!(b.is_resident(&e.user_id));
            }
            // Fused estimates are neither checkpointed nor kept for evicted
            // users (see `ingest_all`).
            let expected = EventOutcome { fused: None, ..a.ingest(e) };
            let got = EventOutcome { fused: None, ..b.ingest(e) };
            prop_assert_eq!(&got, &expected, "event {}", i);
        }

        // Resident and evicted users' credit summaries together are everyone's.
        for now in nows(&evs) {
            let mut all = b.all_credit_summaries(now, &WINDOWS);
            for u in b.evicted_credit_candidates(now) {
                all.extend(
                    Analyzer::credit_summaries_from_encoded(&stored[u], u, now, &WINDOWS)
                        .expect("decodes"),
                );
            }
            all.sort_by(|x, y| x.user_id.cmp(&y.user_id));
            let everyone = a.all_credit_summaries(now, &WINDOWS);
            prop_assert_eq!(&all, &everyone);
            let (merged, failed) =
                b.all_credit_summaries_with_evicted(now, &WINDOWS, |u| stored.get(u).cloned());
            prop_assert!(failed.is_empty());
            prop_assert_eq!(&merged, &everyone);
            prop_assert_eq!(b.global_metrics(now), a.global_metrics(now));
        }
        for (u, bytes) in &stored {
            b.restore_user(u, bytes).expect("restores");
        }
        prop_assert_eq!(b.evicted_users(), 0);
        assert_same_views(&a, &b, &evs);
    }

    /// Arbitrary bytes, and arbitrary bodies under a valid header and
    /// checksum, are refused without a panic.
    #[test]
    fn garbage_is_refused(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        kind in 0u8..3,
    ) {
        let cfg = small_cfg();
        let mut an = seeded(&cfg);
        let user = evicted_user(&mut an);
        prop_assert!(Analyzer::from_checkpoint(cfg.clone(), &body).is_err());
        prop_assert!(an.restore_user(&user, &body).is_err());

        let mut framed = vec![1u8, 0, 0, 0, 0, kind];
        framed.extend_from_slice(&body);
        let crc = crc32fast::hash(&framed[5..]);
        framed[1..5].copy_from_slice(&crc.to_le_bytes());
        prop_assert!(Analyzer::from_checkpoint(cfg.clone(), &framed).is_err());
        prop_assert!(an.restore_user(&user, &framed).is_err());
        prop_assert!(an.user_summary_from_encoded(&user, &framed).is_err());
        prop_assert!(
            Analyzer::credit_summaries_from_encoded(&framed, &user, t0(), &WINDOWS).is_err()
        );
        prop_assert!(an.is_evicted(&user));
    }
}

/// An analyzer with three users, sessions, anomalies and a few days of credit.
fn seeded(cfg: &AnalyzerConfig) -> Analyzer {
    let mut an = Analyzer::new(cfg.clone());
    let evs: Vec<Ev> = (0..60)
        .map(|i| Ev {
            user: (i % 3) as u8,
            session: (i % 2) as u8,
            gap: if i % 20 == 19 { 86_400 } else { 30 },
            v: if i % 11 == 10 { -0.95 } else { 0.2 },
            a: if i % 11 == 10 { 0.97 } else { 0.4 },
            label: None,
            skew: 0,
            source: i % 3,
        })
        .collect();
    for e in events(&evs) {
        an.ingest(&e);
    }
    an
}

/// Evict the users of `an` and hand back the id of one of them.
fn evicted_user(an: &mut Analyzer) -> String {
    let out = an.evict_users_idle_since(t0() + Duration::days(30));
    let (u, _) = out.into_iter().next().expect("someone to evict");
    u
}

fn assert_every_flip_and_truncation_refused(bytes: &[u8], mut refused: impl FnMut(&[u8]) -> bool) {
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.to_vec();
            b[i] ^= 1 << bit;
            assert!(refused(&b), "flip at byte {i} bit {bit} accepted");
        }
    }
    for len in 0..bytes.len() {
        assert!(refused(&bytes[..len]), "truncation to {len} accepted");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(refused(&longer), "a trailing byte accepted");
}

#[test]
fn every_bit_flip_and_truncation_of_a_checkpoint_is_refused() {
    let cfg = small_cfg();
    let an = seeded(&cfg);
    let bytes = an.checkpoint();
    assert!(Analyzer::from_checkpoint(cfg.clone(), &bytes).is_ok());
    assert_every_flip_and_truncation_refused(&bytes, |b| {
        Analyzer::from_checkpoint(cfg.clone(), b).is_err()
    });
}

#[test]
fn every_bit_flip_and_truncation_of_an_evicted_user_is_refused() {
    let cfg = small_cfg();
    let mut an = seeded(&cfg);
    let later = t0() + Duration::days(30);
    let mut out = an.evict_users_idle_since(later);
    assert_eq!(out.len(), 3);
    let (user, bytes) = out.remove(0);
    assert_every_flip_and_truncation_refused(&bytes, |b| {
        an.user_summary_from_encoded(&user, b).is_err()
            && Analyzer::credit_summaries_from_encoded(b, &user, later, &WINDOWS).is_err()
            && an.restore_user(&user, b).is_err()
    });
    assert!(an.is_evicted(&user), "no failed restore changed anything");
    an.restore_user(&user, &bytes)
        .expect("the intact state restores");
}

#[test]
fn a_configuration_change_is_refused() {
    let cfg = small_cfg();
    let mut an = seeded(&cfg);
    let bytes = an.checkpoint();
    let other = AnalyzerConfig {
        baseline_window: 9,
        ..cfg.clone()
    };
    let err = Analyzer::from_checkpoint(other.clone(), &bytes).expect_err("refused");
    assert!(
        matches!(&err, CheckpointError::ConfigMismatch(m) if m.contains("baseline_window 8 saved, 9 now")),
        "{err}"
    );
    let rule = AnalyzerConfig {
        anomaly: AnomalyRule {
            z_threshold: 2.6,
            ..cfg.anomaly
        },
        ..cfg.clone()
    };
    assert!(matches!(
        Analyzer::from_checkpoint(rule, &bytes),
        Err(CheckpointError::ConfigMismatch(_))
    ));
    let fewer = AnalyzerConfig {
        recent_anomalies: 2,
        ..cfg.clone()
    };
    assert!(Analyzer::from_checkpoint(fewer, &bytes).is_err());

    let out = an.evict_users_idle_since(t0() + Duration::days(30));
    let (user, blob) = &out[0];
    let elsewhere = Analyzer::new(other);
    assert!(matches!(
        elsewhere.user_summary_from_encoded(user, blob),
        Err(CheckpointError::ConfigMismatch(_))
    ));
    // Credit summaries do not depend on the configuration.
    assert!(Analyzer::credit_summaries_from_encoded(blob, user, t0(), &WINDOWS).is_ok());
}

#[test]
fn restore_refuses_the_wrong_state_and_resident_users() {
    let cfg = small_cfg();
    let mut an = seeded(&cfg);
    let later = t0() + Duration::days(30);
    let out = an.evict_users_idle_since(later);
    let (u0, b0) = &out[0];
    let (u1, b1) = &out[1];

    // Kinds are not interchangeable.
    assert!(matches!(
        Analyzer::from_checkpoint(cfg.clone(), b0),
        Err(CheckpointError::WrongKind { .. })
    ));
    let ckpt = an.checkpoint();
    assert!(matches!(
        an.restore_user(u0, &ckpt),
        Err(CheckpointError::WrongKind { .. })
    ));
    // Another user's state.
    assert!(matches!(
        an.restore_user(u0, b1),
        Err(CheckpointError::OtherUser { .. })
    ));
    assert!(matches!(
        an.restore_user("nobody", b0),
        Err(CheckpointError::NotEvicted(_))
    ));
    an.restore_user(u0, b0).expect("restores");
    assert!(matches!(
        an.restore_user(u0, b0),
        Err(CheckpointError::AlreadyResident(_))
    ));

    // A stale copy: u1 comes back, gets an event, leaves again.
    an.restore_user(u1, b1).expect("restores");
    let mut e = events(&[Ev {
        user: 1,
        session: 0,
        gap: 0,
        v: 0.1,
        a: 0.5,
        label: None,
        skew: 0,
        source: 0,
    }])
    .remove(0);
    e.user_id = u1.clone();
    e.ingested_at = later;
    e.timestamp = later;
    an.ingest(&e);
    let again = an.evict_users_idle_since(later + Duration::days(30));
    let fresh = again
        .iter()
        .find(|(u, _)| u == u1)
        .map(|(_, b)| b.clone())
        .expect("evicted again");
    assert!(matches!(
        an.restore_user(u1, b1),
        Err(CheckpointError::Stale(_))
    ));
    an.restore_user(u1, &fresh)
        .expect("the latest state restores");
}

#[test]
fn missing_or_damaged_stored_state_is_reported_not_summarized() {
    let cfg = small_cfg();
    let mut an = seeded(&cfg);
    let now = t0() + Duration::days(5);
    let expected = an.all_credit_summaries(now, &WINDOWS);
    let mut out = an.evict_users_idle_since(now);
    assert_eq!(out.len(), 3);
    assert!(an.all_credit_summaries(now, &WINDOWS).is_empty());
    out[1].1[7] ^= 0x10;
    let load = |u: &str| {
        out.iter()
            .find(|(id, _)| id == u && id != "user-2")
            .map(|(_, b)| b.clone())
    };
    let (summaries, failed) = an.all_credit_summaries_with_evicted(now, &WINDOWS, load);
    let kept: Vec<_> = expected
        .into_iter()
        .filter(|s| s.user_id == "user-0")
        .collect();
    assert_eq!(summaries, kept);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(matches!(&failed[0], (u, CheckpointError::Checksum { .. }) if u == "user-1"));
    assert!(matches!(&failed[1], (u, CheckpointError::Missing(_)) if u == "user-2"));
}

#[test]
fn an_event_for_an_evicted_user_not_restored_starts_them_afresh() {
    let cfg = small_cfg();
    let mut an = seeded(&cfg);
    let now = t0() + Duration::days(5);
    let users_before = an.global_metrics(now).unique_users;
    let out = an.evict_users_idle_since(now);
    let (u, bytes) = &out[0];
    let mut e = events(&[Ev {
        user: 0,
        session: 0,
        gap: 0,
        v: 0.1,
        a: 0.5,
        label: None,
        skew: 0,
        source: 0,
    }])
    .remove(0);
    e.user_id = u.clone();
    e.ingested_at = now;
    e.timestamp = now;
    an.ingest(&e);
    assert!(an.is_resident(u) && !an.is_evicted(u));
    assert_eq!(an.user_summary(u).map(|s| s.event_count), Some(1));
    assert_eq!(an.global_metrics(now).unique_users, users_before);
    assert!(matches!(
        an.restore_user(u, bytes),
        Err(CheckpointError::AlreadyResident(_))
    ));
}

#[test]
fn erasing_an_evicted_user_forgets_them() {
    let cfg = small_cfg();
    let mut an = seeded(&cfg);
    let now = t0() + Duration::days(30);
    let users_before = an.global_metrics(now).unique_users;
    let out = an.evict_users_idle_since(now);
    let (u, bytes) = &out[0];
    assert!(an.erase_user(u));
    assert!(!an.is_evicted(u));
    assert_eq!(an.global_metrics(now).unique_users, users_before - 1);
    assert!(matches!(
        an.restore_user(u, bytes),
        Err(CheckpointError::NotEvicted(_))
    ));
}

/// A typical user: a few weeks of daily use, a handful of events a day in
/// one session a day; the latest session still live.
#[test]
fn checkpoint_size_per_typical_user() {
    let cfg = AnalyzerConfig::default();
    let users = 200u32;
    let mut an = Analyzer::new(cfg.clone());
    let empty = an.checkpoint().len();
    let mut n = 0u128;
    for day in 0..30i64 {
        for u in 0..users {
            for i in 0..8i64 {
                n += 1;
                let at = t0() + Duration::days(day) + Duration::minutes(i64::from(u) + 3 * i);
                let x = ((n * 7919) % 200) as f64 / 200.0;
                let (v, a) = (x * 1.6 - 0.8, (x * 3.7).fract());
                an.ingest(&EmotionEvent {
                    event_id: Uuid::from_u128(n),
                    user_id: format!("user-{u:06}"),
                    session_id: format!("user-{u:06}-day-{day}"),
                    source: Source::Text,
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
                });
            }
        }
        // The daemon drops sessions idle for a while.
        an.evict_sessions_idle_since(t0() + Duration::days(day) - Duration::hours(12));
    }
    let started = std::time::Instant::now();
    let bytes = an.checkpoint();
    let encoding = started.elapsed();
    let started = std::time::Instant::now();
    let back = Analyzer::from_checkpoint(cfg.clone(), &bytes).expect("restores");
    let decoding = started.elapsed();
    assert_eq!(back.resident_users(), users as usize);
    println!("checkpoint of {users} users: encoded in {encoding:?}, decoded in {decoding:?}");
    let per_user = (bytes.len() - empty) as f64 / f64::from(users);
    let evicted = an.evict_users_idle_since(t0() + Duration::days(60));
    let blob = evicted.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / evicted.len() as f64;
    let after = an.checkpoint().len();
    // What stays is the global state, mostly the 8-byte hashes of the session
    // ids ever seen, and a record per evicted user.
    let session_hashes = 8 * 30 * users as usize;
    let record = (after - empty - session_hashes) as f64 / f64::from(users);
    println!(
        "checkpoint: {} bytes for {users} users: {per_user:.0} bytes per user (30 days of 8 \
         events a day: baseline of 50, 30 days of credit, the day's session live); an evicted \
         user's state: {blob:.0} bytes; all users evicted, the checkpoint is {after} bytes: \
         {session_hashes} of session-id hashes (8 per session ever seen), {record:.0} bytes per \
         evicted user",
        bytes.len()
    );
    assert!(per_user < 4_096.0, "{per_user} bytes per user");
    assert!(blob < 4_096.0, "{blob} bytes per evicted user");
    assert!(
        record < 64.0,
        "{record} bytes per evicted user in the checkpoint"
    );
}
