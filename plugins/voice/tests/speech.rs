//! The voice plugin on real synthesized speech: espeak-ng renders the same
//! sentences calm (low pitch, narrow range, slow, soft) and excited (high
//! pitch, wide range, fast, loud), sox converts them to mono 16-bit PCM, and
//! every excited rendering must get a higher arousal than its calm twin.
//!
//! Needs espeak-ng and sox (`scripts/install-voice-test-deps.sh`). Without
//! them these tests FAIL, naming that script: they never skip.

mod render;

use emotion_plugin_sdk::{Outcome, Payload, Pcm, Reading, Source, Voice as WitVoice};
use emotion_plugin_voice::{Settings, Voice, VoiceInput};

fn reading(user: &str, samples: Vec<i16>, rate: u32) -> Reading {
    Reading {
        user_id: user.into(),
        session_id: "s1".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Voice,
        payload: Payload::Voice(WitVoice::Pcm(Pcm {
            samples,
            sample_rate_hz: rate,
        })),
    }
}

#[derive(Debug, Clone)]
struct Scored {
    arousal: f64,
    confidence: f64,
    label: Option<String>,
}

fn score(voice: &mut Voice, user: &str, samples: Vec<i16>, rate: u32) -> Scored {
    match voice.normalize(reading(user, samples, rate)) {
        Outcome::Emotion(e) => {
            assert!((0.70..=0.90).contains(&e.confidence), "{e:?}");
            Scored {
                arousal: e.arousal,
                confidence: e.confidence,
                label: e.label.map(|l| l.as_str().to_owned()),
            }
        }
        other => panic!("expected an emotion, got {other:?}"),
    }
}

/// Sentences × voices used here (the quality example uses all of them).
const SENTENCES: usize = 8;
const VOICES: [&str; 2] = ["en-us", "en-us+f3"];

#[test]
fn every_excited_rendering_outranks_its_calm_twin() {
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut gaps = Vec::new();
    for voice in VOICES {
        for sentence in &render::SENTENCES[..SENTENCES] {
            let calm = render::render(dir.path(), sentence, &render::CALM, voice, 16000);
            let excited = render::render(dir.path(), sentence, &render::EXCITED, voice, 16000);
            // A fresh instance per reading: population norms only.
            let c = score(&mut Voice::default(), voice, calm, 16000);
            let e = score(&mut Voice::default(), voice, excited, 16000);
            gaps.push(e.arousal - c.arousal);
            if e.arousal <= c.arousal {
                failures.push(format!(
                    "{voice} {sentence:?}: excited {:.3} <= calm {:.3}",
                    e.arousal, c.arousal
                ));
            }
            assert_ne!(c.label.as_deref(), Some("excitement"), "{voice} {sentence}");
            assert_ne!(e.label.as_deref(), Some("calm"), "{voice} {sentence}");
        }
    }
    let mean_gap = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(
        failures.is_empty(),
        "misranked pairs:\n{}",
        failures.join("\n")
    );
    assert!(mean_gap > 0.3, "mean arousal gap {mean_gap:.3}");
}

#[test]
fn ranking_holds_with_warm_speaker_baselines() {
    // One instance for everything, one user per espeak voice, the renderings
    // of all three styles interleaved: each speaker's baseline warms up as
    // the test goes, and pairs are still ranked right.
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = Voice::new(Settings::default());
    let mut failures = Vec::new();
    for sentence in &render::SENTENCES[..SENTENCES] {
        for voice in VOICES {
            let calm = render::render(dir.path(), sentence, &render::CALM, voice, 16000);
            let neutral = render::render(dir.path(), sentence, &render::NEUTRAL, voice, 16000);
            let excited = render::render(dir.path(), sentence, &render::EXCITED, voice, 16000);
            let c = score(&mut v, voice, calm, 16000);
            let n = score(&mut v, voice, neutral, 16000);
            let e = score(&mut v, voice, excited, 16000);
            if !(c.arousal < n.arousal && n.arousal < e.arousal) {
                failures.push(format!(
                    "{voice} {sentence:?}: calm {:.3}, neutral {:.3}, excited {:.3}",
                    c.arousal, n.arousal, e.arousal
                ));
            }
        }
    }
    assert!(failures.is_empty(), "misordered:\n{}", failures.join("\n"));
    // Baselines are per speaker and warmed up.
    for voice in VOICES {
        let s = v.speakers().get(voice).expect("baseline");
        assert_eq!(s.readings, 3 * SENTENCES as u64);
    }
}

#[test]
fn ranking_holds_at_telephone_and_studio_rates() {
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    for rate in [8000, 44100] {
        for sentence in &render::SENTENCES[..3] {
            let calm = render::render(dir.path(), sentence, &render::CALM, "en-us", rate);
            let excited = render::render(dir.path(), sentence, &render::EXCITED, "en-us", rate);
            let c = score(&mut Voice::default(), "u", calm, rate);
            let e = score(&mut Voice::default(), "u", excited, rate);
            assert!(
                e.arousal > c.arousal,
                "{rate} Hz {sentence:?}: excited {:.3} <= calm {:.3}",
                e.arousal,
                c.arousal
            );
        }
    }
}

#[test]
fn the_same_speech_reads_alike_at_every_rate() {
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let sentence = render::SENTENCES[0];
    let at = |rate| {
        let pcm = render::render(dir.path(), sentence, &render::NEUTRAL, "en-us", rate);
        score(&mut Voice::default(), "u", pcm, rate)
    };
    let reference = at(16000);
    for rate in [8000, 22050, 44100, 48000] {
        let s = at(rate);
        assert!(
            (s.arousal - reference.arousal).abs() < 0.05,
            "{rate} Hz: arousal {:.3} vs {:.3} at 16 kHz",
            s.arousal,
            reference.arousal
        );
        assert!((s.confidence - reference.confidence).abs() < 0.03);
    }
}

/// Arousal of one rendering (fresh instance: population norms) and its
/// measured syllable rate, from one analysis.
fn arousal_and_rate(
    dir: &std::path::Path,
    sentence: &str,
    style: &render::Style,
    voice: &str,
) -> (f64, f64) {
    let samples = render::render(dir, sentence, style, voice, 16000);
    let out = Voice::default()
        .process(
            voice,
            VoiceInput::Pcm {
                samples,
                rate: 16000,
            },
        )
        .unwrap_or_else(|e| panic!("{voice} {style:?}: {e}"))
        .unwrap_or_else(|| panic!("{voice} {style:?}: no speech"));
    let rate = out
        .analysis
        .and_then(|a| a.speech_rate)
        .unwrap_or_else(|| panic!("{voice} {style:?}: no speech rate"));
    (out.estimate.arousal, rate)
}

/// A factor's steps: (name, arousal).
type Steps = Vec<(String, f64)>;

#[test]
fn arousal_never_falls_when_speed_range_or_amplitude_rises() {
    // Issue 16, item 3: espeak-ng at speed 240 used to measure slower than
    // at 175 (syllable nuclei merged and short low-voiced vowels failed the
    // voicing test), so arousal fell when speech got faster. espeak-ng also
    // narrows its F0 range and lowers its level a little as it speaks
    // faster, and the rate cue must outweigh that. Speed steps on all 16
    // sentences (the rate rising at every one), pitch range and amplitude
    // on every third: no factor may lower arousal at all.
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let style = |prosody: &'static str, pitch, speed, amplitude| render::Style {
        name: "grid",
        prosody,
        pitch,
        speed,
        amplitude,
    };
    // Every step that lowers arousal.
    let falls = |what: String, steps: &[(String, f64)]| -> Vec<String> {
        steps
            .windows(2)
            .filter(|w| w[1].1 < w[0].1)
            .map(|w| {
                format!(
                    "{what}: {} {:.4} -> {} {:.4}",
                    w[0].0, w[0].1, w[1].0, w[1].1
                )
            })
            .collect()
    };
    let (mut speed_falls, mut other_falls, mut rate_failures) =
        (Vec::new(), Vec::new(), Vec::new());
    for voice in VOICES {
        for (k, sentence) in render::SENTENCES.iter().enumerate() {
            for pitch in [20, 50, 80] {
                let what = |factor: &str| format!("{voice} -p {pitch} sentence {k}, {factor}");
                // Speed, 120 to 300 words per minute.
                let (mut by_speed, mut rates) = (Vec::new(), Vec::new());
                for speed in [120, 180, 240, 300] {
                    let (a, r) = arousal_and_rate(
                        dir.path(),
                        sentence,
                        &style("", pitch, speed, 100),
                        voice,
                    );
                    by_speed.push((format!("-s {speed}"), a));
                    rates.push((speed, r));
                }
                for w in rates.windows(2) {
                    if w[1].1 <= w[0].1 {
                        rate_failures.push(format!(
                            "{}: -s {} {:.2}/s -> -s {} {:.2}/s",
                            what("rate"),
                            w[0].0,
                            w[0].1,
                            w[1].0,
                            w[1].1
                        ));
                    }
                }
                speed_falls.extend(falls(what("speed"), &by_speed));
                let mut spans = vec![("speed", &by_speed)];
                // Pitch range (SSML: espeak-ng has no option for it) and
                // amplitude, on every third sentence.
                let (by_range, by_amplitude): (Steps, Steps);
                if k % 3 == 0 {
                    by_range = [r#"range="x-low""#, r#"range="medium""#, r#"range="x-high""#]
                        .into_iter()
                        .map(|r| {
                            let s = style(r, pitch, 175, 100);
                            (
                                r.to_string(),
                                arousal_and_rate(dir.path(), sentence, &s, voice).0,
                            )
                        })
                        .collect();
                    by_amplitude = [25, 100, 200]
                        .into_iter()
                        .map(|a| {
                            let s = style("", pitch, 175, a);
                            (
                                format!("-a {a}"),
                                arousal_and_rate(dir.path(), sentence, &s, voice).0,
                            )
                        })
                        .collect();
                    other_falls.extend(falls(what("range"), &by_range));
                    other_falls.extend(falls(what("amplitude"), &by_amplitude));
                    spans.extend([("range", &by_range), ("amplitude", &by_amplitude)]);
                }
                // And each factor's whole span moves arousal up clearly.
                for (name, seq) in spans {
                    let gain = seq[seq.len() - 1].1 - seq[0].1;
                    assert!(
                        gain > 0.03,
                        "{}: the span raises arousal by {gain:.3}",
                        what(name)
                    );
                }
            }
        }
    }
    assert!(
        rate_failures.is_empty(),
        "measured rate did not rise with speed:\n{}",
        rate_failures.join("\n")
    );
    assert!(
        other_falls.is_empty(),
        "arousal fell as the pitch range or amplitude rose:\n{}",
        other_falls.join("\n")
    );
    assert!(
        speed_falls.is_empty(),
        "arousal fell as the speed rose:\n{}",
        speed_falls.join("\n")
    );
}

#[test]
fn on_a_fine_grid_arousal_never_falls_with_speed_or_pitch_range() {
    // The fine grid of `examples/voice_monotonicity.rs` on its four
    // sentences: seven speeds at five pitches, and five pitch ranges at
    // three speeds and pitches. Small steps are where measurement noise
    // shows: with the F0 range read at the 10th and 90th percentiles, a
    // creaky phrase end voiced in one rendering and not the next lowered
    // arousal in 7 of the 240 speed steps (en-us+f3 sentence 6 at -p 20,
    // -s 270 -> -s 300, by 0.048).
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let style = |prosody: &'static str, pitch, speed| render::Style {
        name: "fine",
        prosody,
        pitch,
        speed,
        amplitude: 100,
    };
    let mut falls = Vec::new();
    let mut check = |what: String, steps: Vec<(String, f64)>| {
        for w in steps.windows(2).filter(|w| w[1].1 < w[0].1) {
            falls.push(format!(
                "{what}: {} {:.4} -> {} {:.4}",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
        // Not flat either: the whole span moves arousal up.
        let gain = steps[steps.len() - 1].1 - steps[0].1;
        assert!(gain > 0.03, "{what}: the span raises arousal by {gain:.3}");
    };
    for voice in VOICES {
        for k in [0, 3, 6, 11] {
            let sentence = render::SENTENCES[k];
            for pitch in [20, 35, 50, 65, 80] {
                let by_speed = [120, 150, 175, 210, 240, 270, 300]
                    .into_iter()
                    .map(|speed| {
                        let a =
                            arousal_and_rate(dir.path(), sentence, &style("", pitch, speed), voice);
                        (format!("-s {speed}"), a.0)
                    })
                    .collect();
                check(format!("{voice} sentence {k} -p {pitch}, speed"), by_speed);
            }
            for pitch in [20, 50, 80] {
                for speed in [135, 175, 240] {
                    let by_range = [
                        ("x-low", r#"range="x-low""#),
                        ("low", r#"range="low""#),
                        ("medium", r#"range="medium""#),
                        ("high", r#"range="high""#),
                        ("x-high", r#"range="x-high""#),
                    ]
                    .into_iter()
                    .map(|(name, prosody)| {
                        let s = style(prosody, pitch, speed);
                        let a = arousal_and_rate(dir.path(), sentence, &s, voice).0;
                        (name.to_string(), a)
                    })
                    .collect();
                    check(
                        format!("{voice} sentence {k} -p {pitch} -s {speed}, range"),
                        by_range,
                    );
                }
            }
        }
    }
    assert!(
        falls.is_empty(),
        "arousal fell as the speed or the pitch range rose:\n{}",
        falls.join("\n")
    );
}
