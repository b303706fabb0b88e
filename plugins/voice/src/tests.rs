//! Unit tests on synthetic signals and prosody features. The tests on real
//! synthesized speech (espeak-ng) are in `tests/speech.rs`.

use emotion_plugin_sdk::{
    Facial, Label, Payload, Pcm, Prosody, Reading, Source, Text, Voice as WitVoice,
};

use crate::affect::{self, CONFIDENCE_MAX, CONFIDENCE_MIN};
use crate::features::{self, AnalysisError};
use crate::synth::{self, Utterance};
use crate::*;

fn reading(user: &str, payload: Payload) -> Reading {
    Reading {
        user_id: user.into(),
        session_id: "s1".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Voice,
        payload,
    }
}

fn pcm(samples: Vec<i16>, rate: u32) -> Payload {
    Payload::Voice(WitVoice::Pcm(Pcm {
        samples,
        sample_rate_hz: rate,
    }))
}

fn prosody(f: Features) -> Payload {
    Payload::Voice(WitVoice::Prosody(Prosody {
        f0_mean_hz: f.f0_mean_hz,
        f0_range_hz: f.f0_range_hz,
        loudness_db: f.loudness_db,
        speech_rate: f.speech_rate,
        jitter: f.jitter,
        shimmer: f.shimmer,
        hnr_db: f.hnr_db,
    }))
}

/// The emotion of one reading with population norms (a fresh instance).
fn emotion(payload: Payload) -> emotion_plugin_sdk::Emotion {
    match Voice::default().normalize(reading("u1", payload)) {
        Outcome::Emotion(e) => e,
        other => panic!("expected an emotion, got {other:?}"),
    }
}

fn error(payload: Payload) -> String {
    match Voice::default().normalize(reading("u1", payload)) {
        Outcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn analyze(samples: &[i16], rate: u32) -> Analysis {
    features::analyze(samples, rate, 30.0).unwrap_or_else(|e| panic!("{e}"))
}

fn calm() -> Utterance {
    Utterance {
        f0_hz: 105.0,
        swing_st: 2.0,
        syllables_per_s: 3.0,
        peak: 0.08,
        tilt_db_per_octave: -15.0,
        seconds: 3.0,
    }
}

fn excited() -> Utterance {
    Utterance {
        f0_hz: 170.0,
        swing_st: 9.0,
        syllables_per_s: 6.0,
        peak: 0.6,
        tilt_db_per_octave: -8.0,
        seconds: 3.0,
    }
}

// --- Pitch -------------------------------------------------------------------

#[test]
fn pure_tone_f0_is_within_one_percent() {
    for rate in [8000, 16000, 44100] {
        for f in [52.0, 62.0, 80.0, 110.0, 150.0, 220.0, 330.0, 440.0, 490.0] {
            let a = analyze(&synth::tone(f, rate, 1.0, 0.3), rate);
            let err = (a.f0_median_hz - f).abs() / f;
            assert!(
                err < 0.01,
                "{f} Hz at {rate} Hz: got {:.2} Hz ({:.2} %)",
                a.f0_median_hz,
                err * 100.0
            );
            assert!(a.voiced_fraction > 0.9, "{f} Hz: {a:?}");
            assert!(a.f0_range_st < 0.1, "{f} Hz: range {}", a.f0_range_st);
        }
    }
}

#[test]
fn vowel_pitch_follows_its_contour() {
    // A 120 Hz vowel with a 6-semitone swing: median near 120 Hz, every
    // frame of the steady vowel voiced, and the range what the estimator
    // makes of a sine: its 15th–85th percentiles lie at ±3·sin(0.35π) st,
    // scaled by z(0.90)/z(0.85) as for a normal spread, 6.61 st (a sine's
    // own 10th–90th range is 5.71).
    let u = Utterance {
        syllables_per_s: 0.0,
        swing_st: 6.0,
        seconds: 2.0 / 0.7, // two whole cycles of the 0.7 Hz swing
        ..Utterance::default()
    };
    let a = analyze(&synth::utterance(&u, 16000), 16000);
    assert!((a.f0_median_hz - 120.0).abs() < 3.0, "{}", a.f0_median_hz);
    let expected = 6.0 * (0.35 * std::f64::consts::PI).sin() * 1.281_551_6 / 1.036_433_4;
    assert!(
        (a.f0_range_st - expected).abs() < 0.5,
        "{} against {expected}",
        a.f0_range_st
    );
    assert!(a.voiced_fraction > 0.95, "{}", a.voiced_fraction);
}

#[test]
fn a_short_run_an_octave_below_both_neighbours_is_dropped() {
    // Voiced runs (Hz, frames) separated by two unvoiced frames.
    let track = |runs: &[(f64, usize)]| {
        let mut f0 = Vec::new();
        for &(hz, n) in runs {
            f0.extend([0.0, 0.0]);
            f0.extend(std::iter::repeat_n(hz, n));
        }
        f0.extend([0.0, 0.0]);
        f0
    };
    let voiced = |f0: &[f64]| f0.iter().filter(|&&f| f > 0.0).count();
    // Half the period between two runs at 200 Hz: a tracking error.
    let mut f0 = track(&[(200.0, 20), (100.0, 5), (205.0, 20)]);
    features::drop_subharmonic_runs(&mut f0);
    assert_eq!(voiced(&f0), 40, "{f0:?}");
    // Kept: a long low run, a run only 7 semitones down, a final low run
    // with nothing voiced after it, and a low run far from its neighbours.
    for runs in [
        vec![(200.0, 20), (100.0, 11), (205.0, 20)],
        vec![(200.0, 20), (133.0, 5), (205.0, 20)],
        vec![(200.0, 20), (100.0, 5)],
    ] {
        let mut f0 = track(&runs);
        let before = voiced(&f0);
        features::drop_subharmonic_runs(&mut f0);
        assert_eq!(voiced(&f0), before, "{runs:?}");
    }
    let mut f0 = track(&[(200.0, 20)]);
    f0.extend(std::iter::repeat_n(0.0, 20));
    f0.extend(std::iter::repeat_n(100.0, 5));
    f0.extend([0.0, 0.0]);
    f0.extend(std::iter::repeat_n(205.0, 20));
    features::drop_subharmonic_runs(&mut f0);
    assert_eq!(
        voiced(&f0),
        45,
        "a gap of 200 ms leaves time to fall and rise"
    );
}

// --- Silence, noise, quality ---------------------------------------------------

#[test]
fn silence_is_no_speech() {
    for samples in [vec![0i16; 16000], synth::noise(16000, 1.0, 0.0001, 7)] {
        match features::analyze(&samples, 16000, 30.0) {
            Err(AnalysisError::NoSpeech(m)) => assert!(m.contains("no speech"), "{m}"),
            other => panic!("expected no speech, got {other:?}"),
        }
    }
    // An error answer by default, no emotion when configured so.
    let e = error(pcm(vec![0; 16000], 16000));
    assert!(e.contains("silence"), "{e}");
    let mut v = Voice::new(Settings {
        silence_as_none: true,
        ..Settings::default()
    });
    assert!(matches!(
        v.normalize(reading("u1", pcm(vec![0; 16000], 16000))),
        Outcome::None
    ));
}

#[test]
fn noise_has_little_or_no_voicing() {
    let n = synth::noise(16000, 2.0, 0.1, 42);
    match features::analyze(&n, 16000, 30.0) {
        Err(AnalysisError::NoSpeech(_)) => {}
        Ok(a) => assert!(a.voiced_fraction < 0.1, "{a:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn confidence_falls_with_poorer_input() {
    let conf = |samples: Vec<i16>| emotion(pcm(samples, 16000)).confidence;
    let clean = synth::utterance(&Utterance::default(), 16000);
    let c_clean = conf(clean.clone());

    // Short audio.
    let short = synth::utterance(
        &Utterance {
            seconds: 0.6,
            ..Utterance::default()
        },
        16000,
    );
    let c_short = conf(short);
    // Clipping: the same utterance driven 4x into the rails.
    let clipped: Vec<i16> = clean
        .iter()
        .map(|&s| (i32::from(s) * 4).clamp(-32768, 32767) as i16)
        .collect();
    let c_clipped = conf(clipped);
    // Noise at about 6 dB SNR.
    let noisy = synth::mix(&clean, &synth::noise(16000, 2.0, 0.05, 3));
    let c_noisy = conf(noisy);
    // Short bursts of vowel in faint noise: little speech time, lower SNR.
    let sparse: Vec<i16> = synth::mix(
        &clean
            .iter()
            .enumerate()
            .map(|(i, &s)| if (i / 1600) % 5 == 0 { s } else { 0 })
            .collect::<Vec<_>>(),
        &synth::noise(16000, 2.0, 0.03, 9),
    );
    let c_sparse = conf(sparse);
    // Little voicing: 100 ms of vowel, then 400 ms of equally loud noise
    // (frication-like), over and over.
    let steady = synth::utterance(
        &Utterance {
            syllables_per_s: 0.0,
            seconds: 3.0,
            ..Utterance::default()
        },
        16000,
    );
    let hiss = synth::noise(16000, 3.0, 0.1, 5);
    let unvoiced: Vec<i16> = steady
        .iter()
        .zip(&hiss)
        .enumerate()
        .map(|(i, (&v, &n))| if (i / 1600) % 5 == 0 { v } else { n })
        .collect();
    let a = analyze(&unvoiced, 16000);
    assert!(a.voiced_fraction < 0.3, "{}", a.voiced_fraction);
    let c_unvoiced = conf(unvoiced);

    for (what, c) in [
        ("clean", c_clean),
        ("short", c_short),
        ("clipped", c_clipped),
        ("noisy", c_noisy),
        ("short bursts in noise", c_sparse),
        ("little voicing", c_unvoiced),
    ] {
        assert!(
            (CONFIDENCE_MIN..=CONFIDENCE_MAX).contains(&c),
            "{what}: confidence {c}"
        );
    }
    assert!(c_clean > 0.85, "clean {c_clean}");
    for (what, c) in [
        ("short", c_short),
        ("clipped", c_clipped),
        ("noisy", c_noisy),
        ("short bursts in noise", c_sparse),
        ("little voicing", c_unvoiced),
    ] {
        assert!(c < c_clean - 0.02, "{what}: {c} vs clean {c_clean}");
    }
}

// --- Resampling ----------------------------------------------------------------

#[test]
fn features_do_not_depend_on_the_sample_rate() {
    let u = Utterance::default();
    let at = |rate| analyze(&synth::utterance(&u, rate), rate);
    let reference = at(16000);
    for rate in [8000, 11025, 22050, 44100, 48000] {
        let a = at(rate);
        let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-9);
        assert!(
            rel(a.f0_median_hz, reference.f0_median_hz) < 0.01,
            "{rate}: F0 {} vs {}",
            a.f0_median_hz,
            reference.f0_median_hz
        );
        assert!(
            (a.f0_range_st - reference.f0_range_st).abs() < 0.3,
            "{rate}: range {} vs {}",
            a.f0_range_st,
            reference.f0_range_st
        );
        assert!(
            (a.loudness_dbfs - reference.loudness_dbfs).abs() < 0.5,
            "{rate}: level {} vs {}",
            a.loudness_dbfs,
            reference.loudness_dbfs
        );
        assert!(
            (a.alpha_ratio_db - reference.alpha_ratio_db).abs() < 1.0,
            "{rate}: alpha {} vs {}",
            a.alpha_ratio_db,
            reference.alpha_ratio_db
        );
        assert!(
            (a.voiced_fraction - reference.voiced_fraction).abs() < 0.05,
            "{rate}: voiced {} vs {}",
            a.voiced_fraction,
            reference.voiced_fraction
        );
        assert_eq!(
            a.speech_rate.is_some(),
            reference.speech_rate.is_some(),
            "{rate}"
        );
        let ea = emotion(pcm(synth::utterance(&u, rate), rate));
        let er = emotion(pcm(synth::utterance(&u, 16000), 16000));
        assert!(
            (ea.arousal - er.arousal).abs() < 0.02,
            "{rate}: arousal {} vs {}",
            ea.arousal,
            er.arousal
        );
    }
}

// --- Syllable rate -------------------------------------------------------------

#[test]
fn syllable_rate_tracks_the_modulation() {
    for rate_in in [2.5, 4.0, 6.0] {
        let u = Utterance {
            syllables_per_s: rate_in,
            seconds: 4.0,
            ..Utterance::default()
        };
        let a = analyze(&synth::utterance(&u, 16000), 16000);
        let got = a.speech_rate.expect("speech rate");
        assert!(
            (got - rate_in).abs() / rate_in < 0.2,
            "{rate_in} syllables/s: estimated {got} ({} nuclei in {} s)",
            a.nuclei,
            a.speaking_s
        );
    }
}

// --- Arousal from PCM ------------------------------------------------------------

#[test]
fn synthetic_excited_voice_is_more_aroused_than_calm() {
    let c = emotion(pcm(synth::utterance(&calm(), 16000), 16000));
    let e = emotion(pcm(synth::utterance(&excited(), 16000), 16000));
    assert!(
        e.arousal > c.arousal + 0.3,
        "{} vs {}",
        e.arousal,
        c.arousal
    );
    assert!(c.arousal < 0.4 && e.arousal > 0.6, "{c:?} {e:?}");
    // Each cue alone moves arousal the right way.
    let base = calm();
    let a0 = emotion(pcm(synth::utterance(&base, 16000), 16000)).arousal;
    let variants = [
        (
            "higher F0",
            Utterance {
                f0_hz: 160.0,
                ..base
            },
        ),
        (
            "wider range",
            Utterance {
                swing_st: 8.0,
                ..base
            },
        ),
        ("louder", Utterance { peak: 0.5, ..base }),
        (
            "faster",
            Utterance {
                syllables_per_s: 6.0,
                ..base
            },
        ),
        (
            "flatter spectrum",
            Utterance {
                tilt_db_per_octave: -6.0,
                ..base
            },
        ),
    ];
    for (what, u) in variants {
        let a = emotion(pcm(synth::utterance(&u, 16000), 16000)).arousal;
        assert!(a > a0 + 0.02, "{what}: {a} vs {a0}");
    }
}

/// The PCM path reports `f0_range_hz` as the prosody input reads it, so an
/// event replayed as prosody gives the same F0 range cue.
#[test]
fn a_reported_range_replayed_as_prosody_gives_the_same_cue() {
    let u = Utterance {
        swing_st: 6.0,
        ..Utterance::default()
    };
    let out = Voice::default()
        .process(
            "u1",
            VoiceInput::Pcm {
                samples: synth::utterance(&u, 16000),
                rate: 16000,
            },
        )
        .expect("analysed")
        .expect("speech");
    let analysed = out.analysis.as_ref().expect("pcm analysis").f0_range_st;
    let extra = out.extra();
    let field = |k: &str| -> f64 {
        extra
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {extra:?}"))
    };
    let replayed = Features {
        f0_mean_hz: Some(field("f0_mean_hz")),
        f0_range_hz: Some(field("f0_range_hz")),
        loudness_db: None,
        speech_rate: None,
        jitter: None,
        shimmer: None,
        hnr_db: None,
    };
    let cue = prosody_cues(&replayed)
        .into_iter()
        .find(|(c, _)| *c == Cue::F0Range)
        .map(|(_, v)| v)
        .expect("a range cue");
    // The fields are rounded to 0.1 Hz.
    assert!(
        (cue - analysed).abs() < 0.02,
        "replayed {cue} st against analysed {analysed} st"
    );
}

// --- Prosody features -------------------------------------------------------------

fn neutral_features() -> Features {
    Features {
        f0_mean_hz: Some(150.0),
        f0_range_hz: Some(60.0),
        loudness_db: Some(-26.0),
        speech_rate: Some(4.5),
        jitter: None,
        shimmer: None,
        hnr_db: None,
    }
}

#[test]
fn prosody_cues_raise_arousal() {
    let a0 = emotion(prosody(neutral_features())).arousal;
    assert!((a0 - 0.5).abs() < 0.1, "population-typical voice: {a0}");
    let variants = [
        (
            // The same range in semitones: 60 Hz at 150 Hz is 88 Hz at 220 Hz.
            "higher F0",
            Features {
                f0_mean_hz: Some(220.0),
                f0_range_hz: Some(88.0),
                ..neutral_features()
            },
        ),
        (
            "wider F0 range",
            Features {
                f0_range_hz: Some(140.0),
                ..neutral_features()
            },
        ),
        (
            "louder",
            Features {
                loudness_db: Some(-14.0),
                ..neutral_features()
            },
        ),
        (
            "faster",
            Features {
                speech_rate: Some(6.5),
                ..neutral_features()
            },
        ),
    ];
    for (what, f) in variants {
        let a = emotion(prosody(f)).arousal;
        assert!(a > a0 + 0.03, "{what}: {a} vs {a0}");
    }
    // And the reverse.
    let lower = Features {
        f0_mean_hz: Some(100.0),
        loudness_db: Some(-36.0),
        speech_rate: Some(3.0),
        f0_range_hz: Some(20.0),
        ..neutral_features()
    };
    let a = emotion(prosody(lower)).arousal;
    assert!(a < 0.25, "subdued voice: {a}");
    // Monotonic in each cue over its range.
    let mut last = 0.0;
    for f0 in [80.0, 110.0, 150.0, 200.0, 260.0, 330.0] {
        let a = emotion(prosody(Features {
            f0_mean_hz: Some(f0),
            ..Features::default()
        }))
        .arousal;
        assert!(a >= last, "F0 {f0}: {a} < {last}");
        last = a;
    }
    // SPL loudness is read on its own scale.
    let quiet = emotion(prosody(Features {
        loudness_db: Some(50.0),
        ..Features::default()
    }));
    let loud = emotion(prosody(Features {
        loudness_db: Some(75.0),
        ..Features::default()
    }));
    assert!(loud.arousal > quiet.arousal + 0.3, "{loud:?} {quiet:?}");
}

#[test]
fn prosody_voice_quality_moves_valence_only() {
    let regular = Features {
        jitter: Some(0.004),
        shimmer: Some(0.025),
        hnr_db: Some(22.0),
        ..neutral_features()
    };
    let rough = Features {
        jitter: Some(0.025),
        shimmer: Some(0.11),
        hnr_db: Some(7.0),
        ..neutral_features()
    };
    let r = emotion(prosody(regular));
    let g = emotion(prosody(rough));
    assert!(r.valence > 0.1 && g.valence < -0.1, "{r:?} {g:?}");
    assert!(r.valence.abs() <= affect::VALENCE_MAX && g.valence.abs() <= affect::VALENCE_MAX);
    assert!((r.arousal - g.arousal).abs() < 1e-9);
}

#[test]
fn fewer_features_give_lower_confidence() {
    let full = emotion(prosody(neutral_features())).confidence;
    let one = emotion(prosody(Features {
        f0_mean_hz: Some(150.0),
        ..Features::default()
    }))
    .confidence;
    assert!(one < full, "{one} vs {full}");
    assert!((CONFIDENCE_MIN..=CONFIDENCE_MAX).contains(&one));
    assert!((CONFIDENCE_MIN..=CONFIDENCE_MAX).contains(&full));
}

// --- Speaker baselines ------------------------------------------------------------

#[test]
fn a_speaker_becomes_their_own_reference() {
    // A high-voiced speaker: population norms read her ordinary voice as
    // somewhat aroused; her own baseline brings it back to the middle, and
    // her raised voice still reads above her ordinary one.
    let ordinary = Features {
        f0_mean_hz: Some(230.0),
        f0_range_hz: Some(90.0),
        loudness_db: Some(-22.0),
        speech_rate: Some(5.0),
        ..Features::default()
    };
    let raised = Features {
        f0_mean_hz: Some(290.0),
        f0_range_hz: Some(160.0),
        loudness_db: Some(-15.0),
        speech_rate: Some(6.0),
        ..Features::default()
    };
    let mut v = Voice::default();
    let first = match v.normalize(reading("ann", prosody(ordinary))) {
        Outcome::Emotion(e) => e,
        o => panic!("{o:?}"),
    };
    let mut last = first.clone();
    for _ in 0..40 {
        last = match v.normalize(reading("ann", prosody(ordinary))) {
            Outcome::Emotion(e) => e,
            o => panic!("{o:?}"),
        };
    }
    assert!(first.arousal > 0.6, "cold: {}", first.arousal);
    assert!(
        (last.arousal - 0.5).abs() < (first.arousal - 0.5).abs() - 0.1,
        "warm {} vs cold {}",
        last.arousal,
        first.arousal
    );
    assert!(last.confidence > first.confidence, "{last:?} {first:?}");
    let up = match v.normalize(reading("ann", prosody(raised))) {
        Outcome::Emotion(e) => e,
        o => panic!("{o:?}"),
    };
    assert!(
        up.arousal > last.arousal + 0.2,
        "{} vs {}",
        up.arousal,
        last.arousal
    );
    // Another speaker is unaffected by Ann's baseline.
    let bob = match v.normalize(reading("bob", prosody(ordinary))) {
        Outcome::Emotion(e) => e,
        o => panic!("{o:?}"),
    };
    assert!((bob.arousal - first.arousal).abs() < 1e-9);
}

#[test]
fn speaker_map_is_bounded_and_optional() {
    let mut v = Voice::new(Settings {
        max_speakers: 3,
        ..Settings::default()
    });
    for i in 0..10 {
        let _ = v.normalize(reading(&format!("user-{i}"), prosody(neutral_features())));
    }
    assert_eq!(v.speakers().len(), 3);
    // The most recent ones are kept.
    assert!(v.speakers().get("user-9").is_some());
    assert!(v.speakers().get("user-0").is_none());
    v.set_settings(Settings {
        max_speakers: 1,
        ..Settings::default()
    });
    assert_eq!(v.speakers().len(), 1);

    let mut off = Voice::new(Settings {
        speaker_adaptation: false,
        ..Settings::default()
    });
    for _ in 0..5 {
        let _ = off.normalize(reading("u", prosody(neutral_features())));
    }
    assert!(off.speakers().is_empty());
}

#[test]
fn poor_audio_does_not_teach_the_baseline() {
    let mut v = Voice::default();
    let short = synth::utterance(
        &Utterance {
            seconds: 0.3,
            ..Utterance::default()
        },
        16000,
    );
    let _ = v.normalize(reading("u", pcm(short, 16000)));
    assert!(v.speakers().get("u").is_none());
    let good = synth::utterance(&Utterance::default(), 16000);
    let _ = v.normalize(reading("u", pcm(good, 16000)));
    assert!(v.speakers().get("u").is_some());
}

// --- Output ------------------------------------------------------------------------

#[test]
fn emotion_carries_label_and_features() {
    let e = emotion(pcm(synth::utterance(&Utterance::default(), 16000), 16000));
    assert!((0.0..=1.0).contains(&e.arousal));
    assert!((-1.0..=1.0).contains(&e.valence));
    assert!(matches!(
        e.label.map(Label::as_str),
        Some("calm" | "neutral" | "excitement" | "anger" | "sadness")
    ));
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&e.extra).expect("one JSON object");
    assert!(fields.len() <= 64);
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    for k in [
        "input",
        "f0_mean_hz",
        "f0_range_st",
        "f0_range_hz",
        "loudness_db",
        "voiced_fraction",
        "speech_rate",
        "alpha_ratio_db",
        "snr_db",
        "cue_z",
        "quality",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    for (k, v) in &fields {
        assert!(!v.is_null(), "{k} is null");
    }
    assert!(e.extra.len() < 64 * 1024);

    let no_labels = Voice::new(Settings {
        labels: false,
        ..Settings::default()
    })
    .normalize(reading(
        "u",
        pcm(synth::utterance(&Utterance::default(), 16000), 16000),
    ));
    assert!(matches!(no_labels, Outcome::Emotion(e) if e.label.is_none()));
}

#[test]
fn labels_follow_the_circumplex() {
    assert_eq!(affect::label(0.9, 0.1), "excitement");
    assert_eq!(affect::label(0.9, -0.2), "anger");
    assert_eq!(affect::label(0.1, 0.0), "calm");
    assert_eq!(affect::label(0.1, -0.2), "sadness");
    assert_eq!(affect::label(0.5, -0.3), "neutral");
}

// --- Other input forms -------------------------------------------------------------

fn wav_bytes(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
    let data_len = (samples.len() * 2 * usize::from(channels)) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    b.extend_from_slice(&(2 * channels).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"LIST");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(b"abc\0"); // odd chunk, padded
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        for _ in 0..channels {
            b.extend_from_slice(&s.to_le_bytes());
        }
    }
    b
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn wav_and_json_forms_read_like_pcm() {
    let samples = synth::utterance(&Utterance::default(), 22050);
    let direct = emotion(pcm(samples.clone(), 22050));
    let mono = emotion(Payload::Raw(wav_bytes(&samples, 22050, 1)));
    let stereo = emotion(Payload::Raw(wav_bytes(&samples, 22050, 2)));
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let json = emotion(Payload::Json(
        serde_json::json!({"pcm_base64": base64(&bytes), "sample_rate": 22050}).to_string(),
    ));
    for other in [&mono, &stereo, &json] {
        assert_eq!(other.arousal, direct.arousal);
        assert_eq!(other.confidence, direct.confidence);
    }
    let pros = emotion(Payload::Json(
        r#"{"f0_mean_hz": 150, "loudness_db": -26, "jitter": null}"#.into(),
    ));
    assert!((pros.arousal - 0.5).abs() < 0.05, "{pros:?}");
}

// --- Bad input ----------------------------------------------------------------------

#[test]
fn bad_input_is_an_error_answer() {
    let tone = synth::tone(200.0, 16000, 1.0, 0.3);
    let cases: Vec<(&str, Payload, &str)> = vec![
        ("empty audio", pcm(Vec::new(), 16000), "empty"),
        ("zero rate", pcm(tone.clone(), 0), "must not be 0"),
        ("rate below 8 kHz", pcm(tone.clone(), 7999), "below"),
        ("absurd rate", pcm(tone.clone(), 1_000_000), "above"),
        ("too short", pcm(tone[..800].to_vec(), 16000), "too short"),
        (
            "NaN prosody",
            prosody(Features {
                f0_mean_hz: Some(f64::NAN),
                ..Features::default()
            }),
            "f0_mean_hz must be a finite number",
        ),
        (
            "infinite loudness",
            prosody(Features {
                loudness_db: Some(f64::INFINITY),
                ..Features::default()
            }),
            "loudness_db",
        ),
        (
            "negative F0",
            prosody(Features {
                f0_mean_hz: Some(-3.0),
                ..Features::default()
            }),
            "f0_mean_hz must be between",
        ),
        (
            "jitter in percent",
            prosody(Features {
                jitter: Some(1.5),
                f0_mean_hz: Some(120.0),
                ..Features::default()
            }),
            "jitter",
        ),
        ("no features", prosody(Features::default()), "no features"),
        (
            "no arousal cue",
            prosody(Features {
                jitter: Some(0.01),
                ..Features::default()
            }),
            "arousal cue",
        ),
        (
            "odd byte count (JSON)",
            Payload::Json(r#"{"pcm_base64": "AAEC", "sample_rate": 16000}"#.into()),
            "even number of bytes",
        ),
        (
            "odd byte count (WAV)",
            Payload::Raw({
                let mut w = wav_bytes(&tone, 16000, 1);
                w.push(0);
                let len = (tone.len() * 2 + 1) as u32;
                let at = w.len() - tone.len() * 2 - 1 - 4;
                w[at..at + 4].copy_from_slice(&len.to_le_bytes());
                w
            }),
            "even number of bytes",
        ),
        (
            "JSON rate missing",
            Payload::Json(r#"{"pcm_base64": "AAAA"}"#.into()),
            "sample_rate is required",
        ),
        (
            "JSON low rate",
            Payload::Json(r#"{"pcm_base64": "AAAAAA==", "sample_rate": 4000}"#.into()),
            "below",
        ),
        (
            "JSON not base64",
            Payload::Json(r#"{"pcm_base64": "@@@@", "sample_rate": 16000}"#.into()),
            "base64",
        ),
        (
            "JSON unknown key",
            Payload::Json(r#"{"pitch": 120}"#.into()),
            "unknown key",
        ),
        (
            "JSON string value",
            Payload::Json(r#"{"f0_mean_hz": "high"}"#.into()),
            "must be a number",
        ),
        (
            "JSON garbage",
            Payload::Json("[1, 2".into()),
            "not a JSON object",
        ),
        ("raw non-WAV", Payload::Raw(vec![1, 2, 3]), "WAV"),
        (
            "text payload",
            Payload::Text(Text {
                content: "hello".into(),
                language: None,
            }),
            "got a text payload",
        ),
        (
            "facial payload",
            Payload::Facial(Facial {
                action_units: Vec::new(),
                landmarks: Vec::new(),
                head_pose: None,
                detection_quality: None,
            }),
            "got a facial payload",
        ),
    ];
    for (what, payload, expect) in cases {
        let e = error(payload);
        assert!(e.contains(expect), "{what}: {e}");
    }
    // A non-voice source is refused as well.
    let mut r = reading("u1", prosody(neutral_features()));
    r.source = Source::Text;
    assert!(matches!(Voice::default().normalize(r), Outcome::Error(_)));
}

#[test]
fn extreme_audio_never_panics() {
    let mut v = Voice::default();
    let cases: Vec<(Vec<i16>, u32)> = vec![
        (vec![i16::MAX; 16000], 16000),
        (vec![i16::MIN; 16000], 16000),
        (
            (0..16000)
                .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
                .collect(),
            16000,
        ),
        (synth::tone(3999.0, 8000, 1.0, 1.0), 8000),
        (synth::tone(20.0, 16000, 1.0, 1.0), 16000),
        (synth::tone(1000.0, 384_000, 0.2, 0.5), 384_000),
        (synth::noise(8000, 0.1, 0.5, 1), 8000),
        (vec![0; 800], 8000),
        (vec![1; 800], 8000),
    ];
    for (samples, rate) in cases {
        match v.normalize(reading("u", pcm(samples, rate))) {
            Outcome::Emotion(e) => {
                assert!((CONFIDENCE_MIN..=CONFIDENCE_MAX).contains(&e.confidence));
                assert!((0.0..=1.0).contains(&e.arousal));
            }
            Outcome::Error(_) | Outcome::None => {}
        }
    }
}

#[test]
fn long_audio_is_truncated_to_max_seconds() {
    let u = Utterance {
        seconds: 8.0,
        ..Utterance::default()
    };
    let a = features::analyze(&synth::utterance(&u, 8000), 8000, 3.0).expect("analysis");
    assert!((a.analysed_s - 3.0).abs() < 1e-9 && (a.duration_s - 8.0).abs() < 1e-9);
}

#[test]
fn settings_parse_with_defaults() {
    let (s, w) = Settings::from_json(
        r#"{"speaker_adaptation": false, "max_speakers": 10, "max_seconds": 5, "labels": false, "silence": "none"}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        s,
        Settings {
            speaker_adaptation: false,
            max_speakers: 10,
            max_seconds: 5.0,
            labels: false,
            silence_as_none: true,
        }
    );
    let (s, w) = Settings::from_json(r#"{"max_speakers": 0, "bogus": 1}"#);
    assert_eq!(s, Settings::default());
    assert_eq!(w.len(), 2);
    let (s, w) = Settings::from_json("not json");
    assert_eq!(s, Settings::default());
    assert_eq!(w.len(), 1);
}

#[test]
fn info_names_the_voice_source() {
    let info = VoicePlugin::info();
    assert_eq!(info.name, "voice");
    assert_eq!(info.sources, vec![Source::Voice]);
    let _: serde_json::Value = serde_json::from_str(&info.settings_schema).expect("schema JSON");
}

#[test]
fn resampler_has_unit_gain_and_rejects_above_the_band() {
    // 1 kHz passes at full level; 5 kHz (above the analysis band) is
    // attenuated, at every input rate.
    for rate in [16000u32, 44100, 48000] {
        let pass = crate::resample::to_analysis_rate(&synth::tone(1000.0, rate, 0.5, 0.5), rate);
        let stop = crate::resample::to_analysis_rate(&synth::tone(5000.0, rate, 0.5, 0.5), rate);
        let rms = |x: &[f32]| {
            let m = &x[400..x.len() - 400];
            (m.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / m.len() as f64).sqrt()
        };
        let gain = rms(&pass) / (0.5 / 2f64.sqrt());
        assert!((gain - 1.0).abs() < 0.01, "{rate}: pass gain {gain}");
        let rejection = 20.0 * (rms(&stop) / (0.5 / 2f64.sqrt())).log10();
        assert!(rejection < -50.0, "{rate}: 5 kHz at {rejection} dB");
    }
}
