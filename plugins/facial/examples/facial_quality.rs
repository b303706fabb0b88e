//! Quality report of the facial plugin:
//!
//!     cargo run --release -p emotion-plugin-facial --example facial_quality [-- --verbose]
//!
//! 1. Prototype accuracy: every configuration of shared/data/facs/PROTOTYPES.md
//!    (EMFACS-7, FACS 2002 Investigator's Guide variants, Du et al. 2014),
//!    each as presence booleans, at intensity C (3.0) and at E (5.0).
//! 2. Near-miss accuracy: each configuration with one unit left out and with
//!    one extra unit added. Near-misses that are also within one unit of
//!    another emotion's prototype are ambiguous by construction: they are
//!    counted apart, and their confidence is reported instead.
//! 3. Direction checks: valence sign of the prototypes against their labels'
//!    side of the gateway's circumplex, AU12/AU4/AU5/AU26 monotonicity.
//! 4. Confidence: clean prototypes vs ambiguous frames, poor detection, yaw.
//! 5. Speed: native µs per reading (the plugin's `normalize`, batch 100).

use std::time::Instant;

use emotion_plugin_facial::reference::{self, Case, Encoding};
use emotion_plugin_facial::{Settings, analyze, facs::Emotion};
use emotion_plugin_sdk::{
    ActionUnit, AuValue, Facial, HeadPose, Outcome, Payload, Plugin, Reading, Source,
};

fn run(case: &Case, enc: Encoding) -> (Option<&'static str>, f64) {
    match analyze(&reference::frame(&case.units, enc), &Settings::default()) {
        Ok(Some(a)) => (a.label, a.confidence),
        other => panic!("{}: {other:?}", case.description),
    }
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        100.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

fn main() {
    let verbose = std::env::args().any(|a| a == "--verbose" || a == "-v");
    println!(
        "facial plugin quality (emotion-plugin-facial {})",
        env!("CARGO_PKG_VERSION")
    );
    println!("reference: shared/data/facs/PROTOTYPES.md, written out in src/reference.rs\n");

    // 1. Prototypes.
    let protos = reference::prototype_cases();
    let (mut ok, mut n) = (0, 0);
    let mut confs = Vec::new();
    for case in &protos {
        for enc in Encoding::ALL {
            let (label, conf) = run(case, enc);
            n += 1;
            if label == Some(case.emotion) {
                ok += 1;
                confs.push(conf);
            } else {
                println!(
                    "  MISS {} [{}] -> {:?}",
                    case.description,
                    enc.name(),
                    label
                );
            }
        }
    }
    println!(
        "1. prototype accuracy: {ok}/{n} = {:.1} % ({} configurations x {} encodings); mean confidence {:.3}",
        pct(ok, n),
        protos.len(),
        Encoding::ALL.len(),
        confs.iter().sum::<f64>() / confs.len().max(1) as f64
    );

    // 1b. Configurations outside PROTOTYPES.md that were misread (issue 16,
    // item 4): contempt with AU14 and lower-face units, disgust with the
    // brow and lid units a nose wrinkle brings.
    let extra = [
        ("contempt", "14+15+17"),
        ("contempt", "R14A+15+17"),
        ("disgust", "4+7+9"),
    ];
    let (mut ok, mut n) = (0, 0);
    for (emotion, units) in extra {
        let case = Case {
            emotion,
            units: reference::parse_units(units).unwrap_or_default(),
            description: format!("{emotion} {units}"),
            ambiguous_with: Vec::new(),
        };
        for enc in Encoding::ALL {
            let (label, _) = run(&case, enc);
            n += 1;
            if label == Some(emotion) {
                ok += 1;
            } else {
                println!(
                    "  MISS {} [{}] -> {:?}",
                    case.description,
                    enc.name(),
                    label
                );
            }
        }
    }
    println!(
        "   contempt 14+15+17 (also R14A), disgust 4+7+9 (CK+ criteria): {ok}/{n} (x {} encodings)",
        Encoding::ALL.len()
    );

    // 2. Near-misses.
    let near = reference::near_miss_cases();
    let (mut ok, mut n, mut amb_n, mut amb_low, mut amb_one_of) = (0, 0, 0, 0, 0);
    let mut amb_conf = Vec::new();
    let mut by_kind = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    for case in &near {
        let kind = if case.description.contains(" without ") {
            "one unit missing"
        } else {
            "one extra unit"
        };
        for enc in Encoding::ALL {
            let (label, conf) = run(case, enc);
            if case.ambiguous_with.is_empty() {
                n += 1;
                let e = by_kind.entry(kind).or_default();
                e.1 += 1;
                if label == Some(case.emotion) {
                    ok += 1;
                    e.0 += 1;
                } else if verbose {
                    println!(
                        "  MISS {} [{}] -> {:?} ({conf:.3})",
                        case.description,
                        enc.name(),
                        label
                    );
                }
            } else {
                amb_n += 1;
                amb_conf.push(conf);
                if conf < 0.875 {
                    amb_low += 1;
                } else if verbose {
                    println!(
                        "  confident on an ambiguous case: {} [{}] -> {:?} ({conf:.3}), also {:?}",
                        case.description,
                        enc.name(),
                        label,
                        case.ambiguous_with
                    );
                }
                if label.is_some_and(|l| l == case.emotion || case.ambiguous_with.contains(&l)) {
                    amb_one_of += 1;
                }
            }
        }
    }
    println!(
        "2. near-miss accuracy: {ok}/{n} = {:.1} % (unambiguous near-misses x {} encodings)",
        pct(ok, n),
        Encoding::ALL.len()
    );
    for (kind, (k, m)) in &by_kind {
        println!("     {kind:<18} {k}/{m} = {:.1} %", pct(*k, *m));
    }
    amb_conf.sort_by(f64::total_cmp);
    println!(
        "   ambiguous by construction (within one unit of another emotion's prototype): {amb_n}; \
         label is one of the candidates in {:.1} %, confidence < 0.875 in {:.1} % (median {:.3})",
        pct(amb_one_of, amb_n),
        pct(amb_low, amb_n),
        amb_conf
            .get(amb_conf.len() / 2)
            .copied()
            .unwrap_or(f64::NAN)
    );

    // 3. Directions.
    let (mut ok, mut n) = (0, 0);
    for case in &protos {
        let e = Emotion::from_label(case.emotion).expect("prototype emotion");
        let (lv, _) = e.coordinates();
        let a = analyze(
            &reference::frame(&case.units, Encoding::Intensity(3.0)),
            &Settings::default(),
        )
        .ok()
        .flatten()
        .expect("analysis");
        n += 1;
        if a.valence.signum() == lv.signum() {
            ok += 1;
        } else {
            println!(
                "  valence sign {} ({:.2}) vs label {:.2}",
                case.description, a.valence, lv
            );
        }
    }
    println!(
        "3. valence on the label's side of the circumplex: {ok}/{n} prototypes (at intensity C)"
    );
    let single = |u: u8, x: f64| {
        let a = analyze(
            &reference::frame(&[(u, Some(x))], Encoding::Intensity(x)),
            &Settings::default(),
        )
        .ok()
        .flatten()
        .expect("analysis");
        (a.valence, a.arousal)
    };
    let mono = |u: u8, pick: fn((f64, f64)) -> f64, up: bool| {
        (1..=5)
            .map(|x| pick(single(u, x as f64)))
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| if up { w[1] > w[0] } else { w[1] < w[0] })
    };
    println!(
        "   AU12 raises valence: {}; AU4 lowers valence: {}; AU5 raises arousal: {}; AU26 raises arousal: {}",
        mono(12, |p| p.0, true),
        mono(4, |p| p.0, false),
        mono(5, |p| p.1, true),
        mono(26, |p| p.1, true)
    );

    // 4. Confidence.
    let joy = [(6, None), (12, None)];
    let conf_of = |f: Facial| {
        analyze(&f, &Settings::default())
            .ok()
            .flatten()
            .map(|a| a.confidence)
            .unwrap_or(f64::NAN)
    };
    let base = reference::frame(&joy, Encoding::Intensity(3.0));
    println!("4. confidence, joy 6+12 at C:");
    print!("   detection quality");
    for q in [0.95, 0.8, 0.6, 0.4, 0.2] {
        let mut f = base.clone();
        f.detection_quality = Some(q);
        print!("  {q}: {:.3}", conf_of(f));
    }
    print!("\n   yaw (degrees)    ");
    for yaw in [0.0, 20.0, 35.0, 50.0, 70.0] {
        let mut f = base.clone();
        f.head_pose = Some(HeadPose {
            pitch: 0.0,
            yaw,
            roll: 0.0,
        });
        print!("  {yaw}: {:.3}", conf_of(f));
    }
    let blend = reference::frame(&[(9, None), (14, None)], Encoding::Intensity(3.0));
    let faint = reference::frame(&[(6, Some(0.5)), (12, Some(0.6))], Encoding::Intensity(0.6));
    println!(
        "\n   ambiguous 9+14 (disgust or contempt): {:.3}; faint 6+12 at 0.5/0.6: {:.3}",
        conf_of(blend),
        conf_of(faint)
    );

    // 5. Speed.
    let cases: Vec<Reading> = protos
        .iter()
        .chain(near.iter())
        .take(100)
        .enumerate()
        .map(|(i, c)| Reading {
            user_id: format!("u{}", i % 10),
            session_id: "s".into(),
            device_id: None,
            timestamp_ms: 1_723_732_200_000 + i as i64,
            source: Source::Facial,
            payload: Payload::Facial(Facial {
                action_units: c
                    .units
                    .iter()
                    .map(|&(number, x)| ActionUnit {
                        number,
                        value: AuValue::Intensity(x.unwrap_or(2.0 + (i % 3) as f64)),
                    })
                    .chain((!c.units.iter().any(|u| u.0 == 45)).then_some(ActionUnit {
                        number: 45,
                        value: AuValue::Intensity(0.3),
                    }))
                    .collect(),
                landmarks: Vec::new(),
                head_pose: Some(HeadPose {
                    pitch: 3.0,
                    yaw: -8.0,
                    roll: 1.0,
                }),
                detection_quality: Some(0.9),
            }),
        })
        .collect();
    let mut per_batch = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_millis() < 1500 {
        let batch = cases.clone();
        let t = Instant::now();
        let out = emotion_plugin_facial::FacialPlugin::normalize(batch);
        per_batch.push(t.elapsed().as_secs_f64() * 1e6 / out.len() as f64);
        assert!(out.iter().all(|o| matches!(o, Outcome::Emotion(_))));
    }
    per_batch.sort_by(f64::total_cmp);
    println!(
        "5. native speed: {:.2} µs per reading in the fastest batch of 100 ({:.2} in the median batch)",
        per_batch[0],
        per_batch[per_batch.len() / 2]
    );
}
