//! Tests of the plugin as a whole (the modules have their own).

use super::*;
use crate::synth::{Phase, Rng, State};

const T0: i64 = 1_723_732_200_000;

fn payload() -> Physiological {
    Physiological {
        heart_rate_bpm: None,
        rr_intervals_ms: Vec::new(),
        skin_conductance_us: Vec::new(),
        eda_sample_rate_hz: None,
        breathing_rate_bpm: None,
        skin_temperature_c: None,
    }
}

fn reading(user: &str, ts: i64, source: Source, p: Physiological) -> Reading {
    Reading {
        user_id: user.into(),
        session_id: "s1".into(),
        device_id: None,
        timestamp_ms: ts,
        source,
        payload: Payload::Physiological(p),
    }
}

fn extra(e: &Emotion, key: &str) -> Value {
    let fields: serde_json::Map<String, Value> = serde_json::from_str(&e.extra)
        .unwrap_or_else(|err| panic!("extra is not a JSON object: {}: {err}", e.extra));
    fields
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("no extra field `{key}` in {}", e.extra))
}

fn emotion(out: Outcome) -> Emotion {
    match out {
        Outcome::Emotion(e) => e,
        other => panic!("expected an emotion, got {other:?}"),
    }
}

#[test]
fn the_hrv_example_of_the_ble_vectors_is_reproduced_through_the_plugin() {
    let mut engine = Engine::new(Settings::default());
    let mut p = payload();
    p.rr_intervals_ms = vec![800.0, 810.0, 790.0, 860.0, 780.0, 800.0, 900.0, 820.0];
    let e = emotion(engine.process(&reading("u1", T0, Source::Physiological, p)));
    let hrv = extra(&e, "hrv");
    assert_eq!(hrv["mean_nn_ms"], 820.0);
    assert_eq!(hrv["sdnn_ms"], 40.36);
    assert_eq!(hrv["rmssd_ms"], 63.92);
    assert_eq!(hrv["pnn50_pct"], 57.14);
    assert_eq!(hrv["nn_count"], 8.0);
    assert_eq!(hrv["diff_count"], 7.0);
    assert_eq!(hrv["rejected_beats"], 0.0);
}

fn run_session(engine: &mut Engine, user: &str, seed: u64) -> Vec<(Phase, Assessment)> {
    synth::scripted_session(seed, T0)
        .into_iter()
        .map(|(phase, ts, p)| {
            let a = engine
                .assess(user, ts, Source::Physiological, &p)
                .unwrap_or_else(|e| panic!("{e}"));
            (phase, a)
        })
        .collect()
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

#[test]
fn scripted_calm_stress_recovery_rises_and_falls_in_order() {
    for seed in 1..=5 {
        let mut engine = Engine::new(Settings::default());
        let session = run_session(&mut engine, "alice", seed);
        let phase_mean = |phase: Phase, f: fn(&Assessment) -> f64| {
            mean(
                session
                    .iter()
                    .filter(|(p, _)| *p == phase)
                    .map(|(_, a)| f(a)),
            )
        };
        for (what, f) in [
            (
                "arousal",
                (|a: &Assessment| a.arousal) as fn(&Assessment) -> f64,
            ),
            ("stress index", |a: &Assessment| a.stress_index),
        ] {
            let (calm, stress, recovery) = (
                phase_mean(Phase::Calm, f),
                phase_mean(Phase::Stress, f),
                phase_mean(Phase::Recovery, f),
            );
            assert!(
                calm + 0.2 < stress && recovery + 0.1 < stress,
                "seed {seed} {what}: calm {calm:.3} stress {stress:.3} recovery {recovery:.3}"
            );
            // Recovery falls: its last two minutes are below its first minute.
            let rec: Vec<f64> = session
                .iter()
                .filter(|(p, _)| *p == Phase::Recovery)
                .map(|(_, a)| f(a))
                .collect();
            let early = mean(rec[..4].iter().copied());
            let late = mean(rec[rec.len() - 8..].iter().copied());
            assert!(
                late < early,
                "seed {seed} {what}: recovery {early:.3} -> {late:.3}"
            );
        }
        // Labels: mostly calm at rest, stress or anxiety under the stressor.
        let share = |phase: Phase, labels: &[&str]| {
            let all: Vec<_> = session.iter().filter(|(p, _)| *p == phase).collect();
            all.iter()
                .filter(|(_, a)| labels.contains(&a.label.as_str()))
                .count() as f64
                / all.len() as f64
        };
        assert!(
            share(Phase::Calm, &["calm", "neutral"]) >= 0.8,
            "seed {seed}"
        );
        assert!(
            share(Phase::Stress, &["stress", "anxiety"]) >= 0.7,
            "seed {seed}"
        );
        // The stressed wearer's valence is below the calm one's (low weight).
        assert!(phase_mean(Phase::Stress, |a| a.valence) < phase_mean(Phase::Calm, |a| a.valence));
    }
}

#[test]
fn stress_is_a_departure_from_ones_own_baseline() {
    // Alice rests at 58 bpm with high HRV; Bob at 84 bpm with low HRV.
    let alice = State {
        hr_bpm: 58.0,
        rsa_ms: 55.0,
        ..State::CALM
    };
    let bob = State {
        hr_bpm: 84.0,
        rsa_ms: 15.0,
        noise_ms: 8.0,
        ..State::CALM
    };
    let mut engine = Engine::new(Settings::default());
    let mut rng = Rng::new(9);
    let mut ts = T0;
    for k in 0..40 {
        let t = k as f64 * 15.0;
        ts = T0 + (t as i64 + 15) * 1000;
        for (user, state) in [("alice", &alice), ("bob", &bob)] {
            let p = synth::window(&mut rng, t, 15.0, state);
            engine
                .assess(user, ts, Source::Physiological, &p)
                .expect("warm-up");
        }
    }
    // Now both show Bob's resting physiology, for a minute.
    ts += 60_000;
    let p = synth::window(&mut rng, 600.0, 60.0, &bob);
    let a = engine
        .assess("alice", ts, Source::Physiological, &p)
        .expect("alice");
    let b = engine
        .assess("bob", ts, Source::Physiological, &p)
        .expect("bob");
    assert!(
        a.stress_index > b.stress_index + 0.3,
        "alice {:.3} bob {:.3}",
        a.stress_index,
        b.stress_index
    );
    assert!(a.z[Channel::HeartRate.index()].expect("z") > 2.0);
    assert!(b.z[Channel::HeartRate.index()].expect("z").abs() < 1.0);
    assert!(a.warmth > 0.7 && b.warmth > 0.7);
}

#[test]
fn a_fresh_instance_falls_back_to_population_norms_with_lower_confidence() {
    let session = synth::scripted_session(3, T0);
    let mut warm = Engine::new(Settings::default());
    for (_, ts, p) in &session[..20] {
        warm.assess("u", *ts, Source::Physiological, p)
            .expect("warm");
    }
    // The host re-created the instance: a new engine sees the next reading.
    let (_, ts, p) = &session[20];
    let mut fresh = Engine::new(Settings::default());
    let cold = fresh
        .assess("u", *ts, Source::Physiological, p)
        .expect("cold");
    let warmed = warm
        .assess("u", *ts, Source::Physiological, p)
        .expect("warm");
    assert_eq!(cold.warmth, 0.0);
    assert!(warmed.warmth > 0.6);
    assert!(
        cold.confidence + 0.03 < warmed.confidence,
        "{} vs {}",
        cold.confidence,
        warmed.confidence
    );
    assert!((0.85..=0.98).contains(&cold.confidence));
    // Resting values read as unremarkable against population norms too.
    assert!(cold.stress_index < 0.5, "{cold:?}");
}

#[test]
fn ble_notifications_add_up_to_a_rolling_hrv_window() {
    let mut engine = Engine::new(Settings::default());
    let mut rng = Rng::new(4);
    let rr = synth::rr_series(&mut rng, 0.0, 120.0, 70.0, 30.0, 10.0, 12.0);
    let mut t_ms = T0;
    let mut last = None;
    for chunk in rr.chunks(2) {
        t_ms += chunk.iter().sum::<f64>() as i64;
        let mut p = payload();
        p.heart_rate_bpm = Some(70.0);
        p.rr_intervals_ms = chunk.to_vec();
        last = Some(emotion(engine.process(&reading(
            "strap",
            t_ms,
            Source::Physiological,
            p,
        ))));
    }
    let e = last.expect("readings");
    let hrv = extra(&e, "hrv");
    let n = hrv["nn_count"].as_f64().expect("count");
    assert!((60.0..=75.0).contains(&n), "{hrv}");
    assert_eq!(hrv["window"], "rolling_60s");
    let rmssd = hrv["rmssd_ms"].as_f64().expect("rmssd");
    assert!(rmssd > 10.0 && rmssd < 60.0, "{hrv}");
    // A gap breaks the window: the next reading starts a new one.
    let mut p = payload();
    p.rr_intervals_ms = vec![850.0, 860.0];
    let e = emotion(engine.process(&reading("strap", t_ms + 120_000, Source::Physiological, p)));
    assert_eq!(extra(&e, "hrv")["nn_count"], 2.0);
}

#[test]
fn shorter_and_poorer_input_gives_lower_confidence() {
    let mut rng = Rng::new(5);
    let full = synth::window(&mut rng, 0.0, 60.0, &State::CALM);
    let conf = |p: &Physiological| {
        Engine::new(Settings::default())
            .assess("u", T0, Source::Physiological, p)
            .expect("assessment")
            .confidence
    };
    let c_full = conf(&full);
    let mut short = full.clone();
    short.rr_intervals_ms.truncate(10);
    short.skin_conductance_us.truncate(40);
    let c_short = conf(&short);
    let mut hr_only = payload();
    hr_only.heart_rate_bpm = Some(72.0);
    let c_hr = conf(&hr_only);
    let mut noisy = full.clone();
    for i in (0..noisy.rr_intervals_ms.len()).step_by(4) {
        noisy.rr_intervals_ms[i] *= 1.6;
    }
    let c_noisy = conf(&noisy);
    assert!(
        c_full > c_short && c_short > c_hr,
        "{c_full} {c_short} {c_hr}"
    );
    assert!(c_noisy < c_full, "{c_noisy} {c_full}");
    for c in [c_full, c_short, c_hr, c_noisy] {
        assert!((0.85..=0.98).contains(&c));
    }
    let b = Engine::new(Settings::default())
        .assess("u", T0, Source::Biometric, &hr_only)
        .expect("biometric");
    assert!((0.90..=0.98).contains(&b.confidence));
}

#[test]
fn bad_input_is_a_per_reading_error_and_leaves_the_rest_alone() {
    let mut engine = Engine::new(Settings::default());
    let mut cases: Vec<(Payload, &str)> = Vec::new();
    let mut p = payload();
    p.rr_intervals_ms = vec![800.0, f64::NAN];
    cases.push((Payload::Physiological(p), "rr_intervals_ms entry 1"));
    let mut p = payload();
    p.skin_conductance_us = vec![2.0, f64::NAN, 2.1];
    p.eda_sample_rate_hz = Some(4.0);
    cases.push((Payload::Physiological(p), "skin_conductance sample 1"));
    let mut p = payload();
    p.skin_conductance_us = vec![2.0, 2.1];
    cases.push((Payload::Physiological(p), "eda_sample_rate_hz"));
    let mut p = payload();
    p.skin_conductance_us = vec![2.0, 2.1];
    p.eda_sample_rate_hz = Some(0.0);
    cases.push((Payload::Physiological(p), "eda_sample_rate_hz"));
    let mut p = payload();
    p.heart_rate_bpm = Some(f64::INFINITY);
    cases.push((Payload::Physiological(p), "heart_rate"));
    let mut p = payload();
    p.skin_temperature_c = Some(f64::NAN);
    cases.push((Payload::Physiological(p), "skin_temperature"));
    cases.push((Payload::Physiological(payload()), "empty reading"));
    let mut p = payload();
    p.eda_sample_rate_hz = Some(4.0);
    cases.push((Payload::Physiological(p), "empty reading"));
    let mut p = payload();
    p.rr_intervals_ms = vec![5000.0, 6000.0];
    cases.push((Payload::Physiological(p), "no usable measurement"));
    let mut p = payload();
    p.heart_rate_bpm = Some(0.5);
    p.breathing_rate_bpm = Some(150.0);
    cases.push((Payload::Physiological(p), "no usable measurement"));
    cases.push((
        Payload::Json("{\"hr\": 70}".into()),
        "expected a physiological payload",
    ));
    cases.push((
        Payload::Raw(vec![0x16, 0x48]),
        "expected a physiological payload",
    ));
    for (payload, expect) in cases {
        let out = engine.process(&Reading {
            payload: payload.clone(),
            ..reading(
                "u",
                T0,
                Source::Physiological,
                Physiological {
                    ..payload_default()
                },
            )
        });
        match out {
            Outcome::Error(m) => assert!(m.contains(expect), "{payload:?}: {m}"),
            other => panic!("{payload:?}: expected an error, got {other:?}"),
        }
    }
    // The engine still works.
    let mut p = payload();
    p.heart_rate_bpm = Some(70.0);
    emotion(engine.process(&reading("u", T0 + 1000, Source::Physiological, p)));
}

fn payload_default() -> Physiological {
    payload()
}

#[test]
fn the_wearer_map_is_bounded() {
    let settings = Settings {
        max_users: 16,
        ..Settings::default()
    };
    let mut engine = Engine::new(settings);
    let mut p = payload();
    p.heart_rate_bpm = Some(70.0);
    for i in 0..200 {
        engine
            .assess(&format!("user-{i}"), T0 + i, Source::Physiological, &p)
            .expect("assessment");
        assert!(engine.users() <= 16);
    }
    // Shrinking the setting shrinks the map.
    engine.set_settings(Settings {
        max_users: 4,
        ..settings
    });
    assert_eq!(engine.users(), 4);
}

#[test]
fn extra_fields_are_json_and_numbers_in_range() {
    let mut engine = Engine::new(Settings::default());
    for (_, ts, p) in synth::scripted_session(8, T0) {
        for source in [Source::Physiological, Source::Biometric] {
            let user = format!("{source:?}");
            let e = emotion(engine.process(&reading(&user, ts, source, p.clone())));
            assert!((-1.0..=1.0).contains(&e.valence) && (0.0..=1.0).contains(&e.arousal));
            let (lo, hi) = confidence_range(source);
            assert!((lo..=hi).contains(&e.confidence));
            serde_json::from_str::<serde_json::Map<String, Value>>(&e.extra)
                .unwrap_or_else(|err| panic!("{}: {err}", e.extra));
            assert!(
                e.label.is_some(),
                "every assessment label is a gateway label"
            );
            let si = extra(&e, "stress_index").as_f64().expect("number");
            assert!((0.0..=1.0).contains(&si));
            assert!(extra(&e, "eda")["scl_us"].as_f64().is_some());
        }
    }
}

#[test]
fn settings_are_read_and_bad_ones_reported() {
    let (s, problems) = Settings::parse(
        r#"{"scr_min_amplitude_us": 0.05, "max_users": 100, "baseline_half_life_min": 60}"#,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        s,
        Settings {
            scr_min_amplitude_us: 0.05,
            max_users: 100,
            baseline_half_life_min: 60.0
        }
    );
    let (s, problems) = Settings::parse(r#"{"max_users": 0.5, "colour": "blue"}"#);
    assert_eq!((s, problems.len()), (Settings::default(), 2));
}

#[test]
fn info_names_both_sources() {
    let info = PhysiologicalPlugin::info();
    assert_eq!(info.name, "physiological");
    assert_eq!(info.sources, vec![Source::Physiological, Source::Biometric]);
    serde_json::from_str::<Value>(&info.settings_schema).expect("schema is JSON");
}

#[test]
fn absurd_skin_conductance_across_readings_neither_panics_nor_leaks_between_wearers() {
    let mut engine = Engine::new(Settings::default());
    let windows: Vec<(Vec<f64>, f64)> = vec![
        (
            (0..60)
                .map(|i| if i % 2 == 0 { 0.0 } else { 100.0 })
                .collect(),
            4.0,
        ),
        (
            (0..60)
                .map(|i| if i % 2 == 0 { 0.0 } else { 100.0 })
                .collect(),
            4.0,
        ),
        (vec![0.0; 500], 100_000.0),
        (
            (0..60).map(|i| 2.0 + 0.5 * (i as f64).sin()).collect(),
            1e-3,
        ),
        (vec![5.0; 60], 4.0),
        (vec![5.0, f64::NAN, 5.0], 4.0),
        (vec![], 4.0),
    ];
    for (k, (samples, rate)) in windows.into_iter().enumerate() {
        let mut p = payload();
        p.skin_conductance_us = samples;
        p.eda_sample_rate_hz = Some(rate);
        // Contiguous 15-s windows for one wearer, so the carry is used.
        let ts = T0 + 15_000 * (k as i64 + 1);
        match engine.process(&reading("wrist", ts, Source::Physiological, p)) {
            Outcome::Emotion(e) => {
                let eda = extra(&e, "eda");
                assert!(eda["scr_count"].as_f64().is_some_and(f64::is_finite));
                assert!(eda["scr_threshold_us"].as_f64().is_some_and(|t| t >= 0.01));
            }
            Outcome::Error(_) => {}
            other => panic!("window {k}: {other:?}"),
        }
    }
    // Another wearer's window is read alone, whatever came before.
    let mut p = payload();
    p.skin_conductance_us = vec![3.0; 60];
    p.eda_sample_rate_hz = Some(4.0);
    let e = emotion(engine.process(&reading("other", T0 + 120_000, Source::Physiological, p)));
    assert_eq!(extra(&e, "eda")["scr_count"], 0.0);
}
