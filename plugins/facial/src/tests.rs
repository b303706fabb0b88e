//! Tests of the plugin as a whole (the modules have their own).

use super::*;
use crate::reference::{Encoding, frame};

fn analysis(f: &Facial) -> Analysis {
    match analyze(f, &Settings::default()) {
        Ok(Some(a)) => a,
        other => panic!("expected an analysis, got {other:?}"),
    }
}

fn units(list: &[(u8, f64)]) -> Facial {
    frame(
        &list.iter().map(|&(u, x)| (u, Some(x))).collect::<Vec<_>>(),
        Encoding::Intensity(0.0),
    )
}

fn reading(payload: Payload) -> Reading {
    Reading {
        user_id: "u1".into(),
        session_id: "s1".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Facial,
        payload,
    }
}

#[test]
fn every_prototype_of_prototypes_md_gives_its_emotion() {
    for case in reference::prototype_cases() {
        for enc in Encoding::ALL {
            let a = analysis(&frame(&case.units, enc));
            assert_eq!(
                a.label,
                Some(case.emotion),
                "{} [{}]: {a:?}",
                case.description,
                enc.name()
            );
            assert!(
                a.confidence >= 0.88,
                "{}: {}",
                case.description,
                a.confidence
            );
        }
    }
}

#[test]
fn near_misses_still_give_their_emotion() {
    let (mut ok, mut n) = (0, 0);
    let mut misses = Vec::new();
    for case in reference::near_miss_cases() {
        if !case.ambiguous_with.is_empty() {
            continue;
        }
        for enc in Encoding::ALL {
            let a = analysis(&frame(&case.units, enc));
            n += 1;
            if a.label == Some(case.emotion) {
                ok += 1;
            } else {
                misses.push(format!(
                    "{} [{}] -> {:?}",
                    case.description,
                    enc.name(),
                    a.label
                ));
            }
        }
    }
    // The few misses are documented in the README (a lone optional unit,
    // two-unit frames where each unit is another emotion's key unit).
    assert!(ok as f64 >= 0.98 * n as f64, "{ok}/{n}: {misses:#?}");
    // The plain cases, spelled out.
    for (list, emotion) in [
        (vec![(12, 3.0)], "joy"),                         // 6+12 without 6
        (vec![(6, 3.0), (12, 3.0), (4, 3.0)], "joy"),     // with an extra AU4
        (vec![(1, 3.0), (4, 3.0)], "sadness"),            // 1+4+15 without 15
        (vec![(1, 3.0), (2, 3.0), (5, 2.0)], "surprise"), // 1+2+5B+26 without 26
        (
            vec![(1, 3.0), (2, 3.0), (4, 3.0), (5, 3.0), (7, 3.0), (26, 3.0)],
            "fear",
        ), // without 20
        (vec![(5, 3.0), (7, 3.0), (23, 3.0)], "anger"),   // 4+5+7+23 without 4
        (vec![(9, 3.0), (15, 3.0), (16, 3.0), (45, 3.0)], "disgust"), // with a blink
    ] {
        assert_eq!(analysis(&units(&list)).label, Some(emotion), "{list:?}");
    }
}

#[test]
fn contempt_with_lower_face_units_and_disgust_with_brow_units_keep_their_labels() {
    // Issue 16, item 4: 14+15+17 was read as sadness (AU15) and 4+7+9 as
    // anger (4+7). AU14 is contempt's own unit and AU9 disgust's; the CK+
    // criteria (Lucey et al. 2010) name them so, and neither frame has what
    // sadness (1+4+15, 11, 6+15) or anger (23 and 24) needs.
    for (units, emotion) in [
        ("14+15+17", "contempt"),
        ("R14+15+17", "contempt"),
        ("R14A+15+17", "contempt"),
        ("4+7+9", "disgust"),
        ("4+7+9+25", "disgust"),
    ] {
        let parsed = reference::parse_units(units).expect(units);
        for enc in Encoding::ALL {
            let a = analysis(&frame(&parsed, enc));
            assert_eq!(a.label, Some(emotion), "{units} [{}]: {a:?}", enc.name());
        }
    }
    // Their neighbours keep theirs: sadness with an extra AU14, anger with
    // its lip units and an extra AU9.
    for (list, emotion) in [
        (vec![(6, 3.0), (15, 3.0), (14, 3.0)], "sadness"),
        (vec![(1, 3.0), (4, 3.0), (15, 3.0), (17, 3.0)], "sadness"),
        (
            vec![(4, 3.0), (5, 3.0), (7, 3.0), (23, 3.0), (9, 3.0)],
            "anger",
        ),
        (vec![(4, 3.0), (7, 3.0), (23, 3.0), (24, 3.0)], "anger"),
    ] {
        assert_eq!(analysis(&units(&list)).label, Some(emotion), "{list:?}");
    }
}

#[test]
fn ambiguous_frames_get_low_confidence() {
    let clean = analysis(&units(&[(6, 3.0), (12, 3.0)])).confidence;
    for list in [
        // Each unit is the key of another emotion.
        vec![(9, 3.0), (14, 3.0)],
        // Lip corners pulled up and pressed down at once.
        vec![(12, 3.0), (15, 3.0)],
        // Surprise or fear: the fear brow without the fear mouth.
        vec![(1, 3.0), (2, 3.0), (4, 3.0), (5, 3.0), (26, 3.0)],
        // A faint smile: expression or neutral?
        vec![(6, 0.5), (12, 0.6)],
    ] {
        let a = analysis(&units(&list));
        assert!(
            a.confidence < 0.87 && a.confidence < clean - 0.07,
            "{list:?}: {a:?}"
        );
    }
}

#[test]
fn poorer_input_lowers_confidence() {
    let base = units(&[(1, 3.0), (4, 3.0), (15, 3.0)]);
    let conf = |f: Facial| analysis(&f).confidence;
    let mut last = f64::INFINITY;
    for q in [0.99, 0.85, 0.7, 0.5, 0.3, 0.15] {
        let mut f = base.clone();
        f.detection_quality = Some(q);
        let c = conf(f);
        assert!(c <= last && (0.80..=0.95).contains(&c), "quality {q}: {c}");
        last = c;
    }
    assert!(last < 0.83);
    let mut last = f64::INFINITY;
    for yaw in [0.0, 20.0, 30.0, 45.0, 60.0, 90.0] {
        let mut f = base.clone();
        f.head_pose = Some(HeadPose {
            pitch: 0.0,
            yaw: -yaw,
            roll: 0.0,
        });
        let c = conf(f);
        assert!(c <= last, "yaw {yaw}: {c}");
        last = c;
    }
    assert!(last < 0.85);
    let mut pitched = base.clone();
    pitched.head_pose = Some(HeadPose {
        pitch: 40.0,
        yaw: 0.0,
        roll: 0.0,
    });
    assert!(conf(pitched) < conf(base.clone()) - 0.05);
    // Presence only says less than intensities.
    let presence = frame(&[(1, None), (4, None), (15, None)], Encoding::Presence);
    assert!(conf(presence) < conf(base));
}

#[test]
fn valence_and_arousal_follow_the_units() {
    // Same label, different units: AU12 stronger -> more pleasant.
    let weak = analysis(&units(&[(6, 2.0), (12, 1.5)]));
    let strong = analysis(&units(&[(6, 2.0), (12, 4.5)]));
    assert_eq!((weak.label, strong.label), (Some("joy"), Some("joy")));
    assert!(strong.valence > weak.valence);
    // AU4 added to sadness lowers valence further.
    let sad = analysis(&units(&[(1, 3.0), (15, 3.0)]));
    let sadder = analysis(&units(&[(1, 3.0), (4, 3.0), (15, 3.0)]));
    assert!(sadder.valence < sad.valence);
    // Arousal: surprise with a wider jaw drop and lid raise is more aroused.
    let calm_surprise = analysis(&units(&[(1, 2.0), (2, 2.0), (5, 1.0), (26, 1.0)]));
    let big_surprise = analysis(&units(&[(1, 2.0), (2, 2.0), (5, 4.0), (27, 4.0)]));
    assert!(big_surprise.arousal > calm_surprise.arousal);
    // Quadrants: joy pleasant, sadness unpleasant and low, fear/anger high.
    assert!(strong.valence > 0.5);
    assert!(sadder.valence < -0.5 && sadder.arousal < 0.45);
    let fear = analysis(&units(&[
        (1, 3.0),
        (2, 3.0),
        (4, 3.0),
        (5, 3.0),
        (20, 3.0),
        (25, 3.0),
    ]));
    assert!(fear.valence < -0.3 && fear.arousal > 0.8, "{fear:?}");
    let anger = analysis(&units(&[(4, 3.0), (5, 3.0), (7, 3.0), (23, 3.0)]));
    assert!(anger.valence < -0.3 && anger.arousal > 0.75, "{anger:?}");
    // A still face is neutral.
    let still = analysis(&units(&[(1, 0.1), (12, 0.2), (45, 2.0)]));
    assert_eq!(still.label, Some("neutral"));
    assert!(still.valence.abs() < 0.1 && (still.arousal - 0.5).abs() < 0.1);
    assert!(still.confidence > 0.9);
}

#[test]
fn frames_without_a_face_carry_no_emotion_and_empty_frames_are_errors() {
    let s = Settings::default();
    let mut f = units(&[(6, 3.0), (12, 3.0)]);
    f.detection_quality = Some(0.0);
    assert!(matches!(analyze(&f, &s), Ok(None)));
    f.detection_quality = Some(0.05);
    assert!(matches!(analyze(&f, &s), Ok(None)));
    // Nothing at all, and the detector says there is no face: no face.
    let mut empty = Facial {
        action_units: Vec::new(),
        landmarks: Vec::new(),
        head_pose: None,
        detection_quality: Some(0.0),
    };
    let out = normalize_with(&s, reading(Payload::Facial(empty.clone())));
    assert!(matches!(out, Outcome::None), "{out:?}");
    // Nothing at all from a detector that claims a face: bad input.
    empty.detection_quality = Some(0.9);
    let out = normalize_with(&s, reading(Payload::Facial(empty.clone())));
    assert!(
        matches!(&out, Outcome::Error(m) if m.contains("action_units or landmarks")),
        "{out:?}"
    );
    empty.detection_quality = None;
    assert!(analyze(&empty, &s).is_err());
    // All units reported absent: a face, and a neutral one.
    let absent = frame(&[(6, None), (12, None)], Encoding::Presence);
    let absent = Facial {
        action_units: absent
            .action_units
            .into_iter()
            .map(|u| ActionUnit {
                number: u.number,
                value: AuValue::Presence(false),
            })
            .collect(),
        ..absent
    };
    assert_eq!(analysis(&absent).label, Some("neutral"));
}

#[test]
fn bad_input_is_a_per_reading_error() {
    let s = Settings::default();
    let err = |f: Facial| {
        let out = normalize_with(&s, reading(Payload::Facial(f)));
        match out {
            Outcome::Error(m) => m,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let good = units(&[(6, 3.0), (12, 3.0)]);
    let mut f = good.clone();
    f.action_units[0].value = AuValue::Intensity(f64::NAN);
    assert!(err(f).contains("AU6"));
    let mut f = good.clone();
    f.action_units[1].value = AuValue::Intensity(7.0);
    assert!(err(f).contains("AU12"));
    let mut f = good.clone();
    f.action_units.push(ActionUnit {
        number: 12,
        value: AuValue::Presence(true),
    });
    assert!(err(f).contains("twice"));
    let mut f = good.clone();
    f.action_units[0].number = 0;
    assert!(err(f).contains("AU0"));
    let mut f = good.clone();
    f.detection_quality = Some(f64::NAN);
    assert!(err(f).contains("detection_quality"));
    let mut f = good.clone();
    f.head_pose = Some(HeadPose {
        pitch: 0.0,
        yaw: f64::INFINITY,
        roll: 0.0,
    });
    assert!(err(f).contains("yaw"));
    let mut f = good.clone();
    f.landmarks = vec![Point {
        x: 1.0,
        y: f64::NAN,
    }];
    assert!(err(f).contains("landmarks"));
    // Landmarks in a layout the plugin cannot read, and no units.
    let f = Facial {
        action_units: Vec::new(),
        landmarks: vec![Point { x: 1.0, y: 2.0 }; 5],
        head_pose: None,
        detection_quality: None,
    };
    assert!(err(f).contains("68"));
    // Wrong payload kinds.
    for p in [
        Payload::Raw(vec![1, 2]),
        Payload::Text(emotion_plugin_sdk::Text {
            content: "hi".into(),
            language: None,
        }),
        Payload::Json("[1, 2]".into()),
        Payload::Json("{\"frame\": 1}".into()),
        Payload::Json("{\"AU12_r\": \"high\"}".into()),
    ] {
        assert!(
            matches!(normalize_with(&s, reading(p.clone())), Outcome::Error(_)),
            "{p:?}"
        );
    }
}

#[test]
fn landmarks_alone_give_a_low_confidence_reading() {
    use crate::landmarks::tests::{neutral_face, to_points};
    let mut face = neutral_face();
    face[48].1 -= 0.12;
    face[54].1 -= 0.12;
    let f = Facial {
        action_units: Vec::new(),
        landmarks: to_points(&face, 60.0, 8.0, (320.0, 240.0)),
        head_pose: None,
        detection_quality: Some(0.9),
    };
    let a = analysis(&f);
    assert_eq!(a.input, InputKind::Landmarks);
    assert_eq!(a.label, Some("joy"));
    assert!(a.valence > 0.3);
    assert!(a.confidence < 0.88);
    let neutral = Facial {
        landmarks: to_points(&neutral_face(), 60.0, 0.0, (320.0, 240.0)),
        ..f
    };
    assert_eq!(analysis(&neutral).label, Some("neutral"));
}

#[test]
fn openface_rows_are_read() {
    let s = Settings::default();
    let row = r#"{"frame": 12, " face_id": 0, " timestamp": 0.4, " confidence": 0.97, " success": 1,
        " pose_Rx": 0.05, " pose_Ry": -0.1, " pose_Rz": 0.0,
        " AU01_r": 0.0, " AU06_r": 2.8, " AU12_r": 3.1, " AU45_r": 0.2,
        " AU06_c": 1, " AU12_c": 1, " AU28_c": 0}"#;
    let Outcome::Emotion(e) = normalize_with(&s, reading(Payload::Json(row.into()))) else {
        panic!("expected an emotion");
    };
    assert_eq!(e.label.map(Label::as_str), Some("joy"));
    assert!(e.confidence > 0.9);
    let lost = r#"{"confidence": 0.1, "success": 0, "AU12_r": 0.0}"#;
    assert!(matches!(
        normalize_with(&s, reading(Payload::Json(lost.into()))),
        Outcome::None
    ));
}

#[test]
fn openface_values_out_of_range_are_errors_not_clamped() {
    // OpenFace writes AUxx_r in 0–5, AUxx_c and success as 0/1, confidence
    // in 0–1 and pose in radians: a value outside is a broken front end, and
    // clamping it would read 9 as a full smile and drop −3 without a word.
    let s = Settings::default();
    let outcome = |row: &str| normalize_with(&s, reading(Payload::Json(row.into())));
    let error = |row: &str| match outcome(row) {
        Outcome::Error(m) => m,
        other => panic!("{row}: expected an error, got {other:?}"),
    };
    for (value, shown) in [
        ("9", "9"),
        ("1e308", "1e308"),
        ("-3", "-3"),
        ("5.0001", "5.0001"),
        ("-0.01", "-0.01"),
    ] {
        let m = error(&format!(r#"{{"AU06_r": 2.8, " AU12_r": {value}}}"#));
        assert!(
            m.contains("AU12_r") && m.contains("between 0 and 5") && m.contains(shown),
            "{value}: {m}"
        );
    }
    // NaN is not JSON, and as a string it is not a number: both are errors.
    assert!(error(r#"{"AU12_r": NaN}"#).contains("OpenFace row"));
    assert!(error(r#"{"AU12_r": "NaN"}"#).contains("finite number"));
    assert!(error(r#"{"AU12_r": 3.0, "AU12_c": 2}"#).contains("AU12_c"));
    assert!(error(r#"{"AU12_r": 3.0, "AU04_c": -1}"#).contains("AU04_c"));
    assert!(error(r#"{"AU12_r": 3.0, "confidence": 1.5}"#).contains("confidence"));
    assert!(error(r#"{"AU12_r": 3.0, "success": 7}"#).contains("success"));
    assert!(
        error(r#"{"AU12_r": 3.0, "pose_Rx": 0, "pose_Ry": 4, "pose_Rz": 0}"#).contains("pose_Ry")
    );
    // The ends of the scale are fine, and read as what they are.
    let Outcome::Emotion(e) = outcome(r#"{"AU06_r": 5, "AU12_r": 5, "AU04_r": 0}"#) else {
        panic!("the ends of the scale must be accepted");
    };
    assert_eq!(e.label.map(Label::as_str), Some("joy"));
    let Outcome::Emotion(e) = outcome(r#"{"AU06_r": 0, "AU12_r": 0}"#) else {
        panic!("zero intensities are a face at rest");
    };
    assert_eq!(e.label.map(Label::as_str), Some("neutral"));
    // The wire form says the same about a huge intensity, briefly.
    let mut f = units(&[(6, 3.0), (12, 3.0)]);
    f.action_units[1].value = AuValue::Intensity(1e308);
    match normalize_with(&s, reading(Payload::Facial(f))) {
        Outcome::Error(m) => assert!(m.contains("AU12") && m.contains("1e308"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn extra_fields_are_json_and_confidence_stays_in_range() {
    let s = Settings::default();
    let mut cases = reference::prototype_cases();
    cases.extend(reference::near_miss_cases());
    for case in cases {
        for enc in Encoding::ALL {
            let out = normalize_with(&s, reading(Payload::Facial(frame(&case.units, enc))));
            let Outcome::Emotion(e) = out else {
                panic!("{}: {out:?}", case.description);
            };
            assert!((0.80..=0.95).contains(&e.confidence));
            assert!((-1.0..=1.0).contains(&e.valence) && (0.0..=1.0).contains(&e.arousal));
            // One JSON object, four fields.
            let fields = serde_json::from_str::<Map<String, Value>>(&e.extra)
                .unwrap_or_else(|err| panic!("{}: {err}", e.extra));
            assert_eq!(
                fields.keys().map(String::as_str).collect::<Vec<_>>(),
                ["active_units", "facs_match", "quality", "runner_up"]
            );
        }
    }
}

#[test]
fn settings_are_read_and_bad_ones_reported() {
    let (s, problems) = Settings::parse(r#"{"min_detection_quality": 0.4, "intensity_max": 1}"#);
    assert_eq!((s.min_detection_quality, s.intensity_max), (0.4, 1.0));
    assert!(problems.is_empty());
    // A 0-1 detector: 0.6 is read as 3.0 on the FACS scale.
    let unit = Settings {
        intensity_max: 1.0,
        ..Settings::default()
    };
    let a = analyze(&units(&[(6, 0.6), (12, 0.6)]), &unit)
        .ok()
        .flatten()
        .expect("analysis");
    assert_eq!(a.label, Some("joy"));
    assert!(a.confidence > 0.93);
    assert!(analyze(&units(&[(12, 1.5)]), &unit).is_err());
    let (s, problems) = Settings::parse(r#"{"min_detection_quality": 4, "x": 1}"#);
    assert_eq!(s, Settings::default());
    assert_eq!(problems.len(), 2);
    let mut f = units(&[(6, 3.0), (12, 3.0)]);
    f.detection_quality = Some(0.3);
    let strict = Settings {
        min_detection_quality: 0.4,
        ..Settings::default()
    };
    assert!(matches!(analyze(&f, &strict), Ok(None)));
    assert!(matches!(analyze(&f, &Settings::default()), Ok(Some(_))));
}

#[test]
fn info_names_the_plugin_and_its_source() {
    let info = FacialPlugin::info();
    assert_eq!(info.name, "facial");
    assert_eq!(info.sources, vec![Source::Facial]);
    serde_json::from_str::<Value>(&info.settings_schema).expect("schema is JSON");
}

#[test]
fn every_facs_label_is_a_gateway_label() {
    // `to_emotion` maps the analysis' label by name: none may be lost.
    for emotion in facs::Emotion::ALL {
        assert_eq!(
            Label::from_name(emotion.label()).map(Label::as_str),
            Some(emotion.label())
        );
    }
}
