//! Quality report of the voice plugin on real synthesized speech:
//!
//!     scripts/install-voice-test-deps.sh      # espeak-ng and sox, once
//!     cargo run --release -p emotion-plugin-voice --example voice_quality
//!
//! espeak-ng renders 16 sentences with 3 voices (en-us, en-us+f3, en-gb+m3)
//! in 3 styles — calm (SSML range x-low, pitch low, rate slow, volume soft;
//! -p 30 -s 135 -a 60), neutral (espeak-ng's defaults) and excited (range
//! x-high, pitch high, rate fast, volume loud; -p 70 -s 220 -a 180) — and sox
//! converts each to mono 16-bit PCM, into a temporary directory. Every
//! rendering goes through the plugin's `normalize` as a PCM reading.
//!
//! 1. Ranking with population norms (a fresh instance per reading): how
//!    often the more aroused style of the same sentence and voice gets the
//!    higher arousal (twin pairs), whether all three styles come out in
//!    order, and the same across different sentences and voices (AUC).
//! 2. Ranking with warm speaker baselines: one instance, one user per
//!    voice, all renderings interleaved.
//! 3. Robustness: twins equalized to the same level (loudness cannot
//!    decide), telephone-band renderings (8 kHz), white noise at 10 dB SNR;
//!    then other espeak-ng voices and languages (en, en+f2, en+f4, en+m1,
//!    en+klatt, en+croak, de, fr, es), short phrases down to one word, and
//!    style variants (SSML only, options only, mild, extreme).
//! 4. Which cues carry the separation: per-cue twin agreement.
//! 5. Labels and confidence per style.
//! 6. Speed: analysis time per second of audio (native, release build),
//!    i.e. the real-time factor, at 8, 16 and 44.1 kHz.
//!
//! The espeak-ng voices are formant-synthesized, not acted emotional speech:
//! the figures say that the plugin's cues respond to the prosody a talker
//! uses for calm and excited speech, not how well it reads real emotions.

#[path = "../tests/render/mod.rs"]
mod render;

use std::time::Instant;

use emotion_plugin_sdk::{Outcome, Payload, Pcm, Reading, Source, Voice as WitVoice};
use emotion_plugin_voice::{Analysis, Voice, features, synth};

struct Clip {
    sentence: usize,
    voice: &'static str,
    style: usize,
    rate: u32,
    samples: Vec<i16>,
}

const STYLES: [render::Style; 3] = [render::CALM, render::NEUTRAL, render::EXCITED];

#[derive(Debug, Clone)]
struct Result1 {
    arousal: f64,
    valence: f64,
    confidence: f64,
    label: String,
}

fn reading(user: &str, samples: Vec<i16>, rate: u32) -> Reading {
    Reading {
        user_id: user.into(),
        session_id: "quality".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Voice,
        payload: Payload::Voice(WitVoice::Pcm(Pcm {
            samples,
            sample_rate_hz: rate,
        })),
    }
}

fn run(voice: &mut Voice, user: &str, samples: &[i16], rate: u32) -> Result1 {
    match voice.normalize(reading(user, samples.to_vec(), rate)) {
        Outcome::Emotion(e) => Result1 {
            arousal: e.arousal,
            valence: e.valence,
            confidence: e.confidence,
            label: e.label.map_or("-", |l| l.as_str()).into(),
        },
        other => panic!("{user}: expected an emotion, got {other:?}"),
    }
}

fn analyse(c: &Clip) -> Analysis {
    features::analyze(&c.samples, c.rate, 30.0).unwrap_or_else(|e| panic!("{e}"))
}

/// Twin statistics of (low, high) arousal pairs: agreement, mean gap, min gap.
fn twins(pairs: &[(f64, f64)]) -> (usize, usize, f64, f64) {
    let ok = pairs.iter().filter(|(lo, hi)| hi > lo).count();
    let gaps: Vec<f64> = pairs.iter().map(|(lo, hi)| hi - lo).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let min = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    (ok, pairs.len(), mean, min)
}

fn print_twins(name: &str, pairs: &[(f64, f64)]) -> f64 {
    let (ok, n, mean, min) = twins(pairs);
    println!(
        "   {name:<34} {ok:>3}/{n:<3} = {:6.1} %   mean gap {mean:+.3}   smallest gap {min:+.3}",
        100.0 * ok as f64 / n.max(1) as f64
    );
    ok as f64 / n.max(1) as f64
}

/// Probability that a random `hi` item outranks a random `lo` item (AUC;
/// ties count half).
fn auc(lo: &[f64], hi: &[f64]) -> f64 {
    let mut s = 0.0;
    for &h in hi {
        for &l in lo {
            s += if h > l {
                1.0
            } else if h == l {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (lo.len() * hi.len()).max(1) as f64
}

/// Index of a clip by (sentence, voice, style).
fn find<'a>(clips: &'a [Clip], sentence: usize, voice: &str, style: usize) -> &'a Clip {
    clips
        .iter()
        .find(|c| c.sentence == sentence && c.voice == voice && c.style == style)
        .expect("rendered")
}

/// "label n, label n, …", most frequent first.
fn label_counts<'a>(labels: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for l in labels {
        match counts.iter_mut().find(|(x, _)| *x == l) {
            Some((_, n)) => *n += 1,
            None => counts.push((l, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .map(|(l, n)| format!("{l} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scaled(samples: &[i16], gain: f64) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| synth::to_i16(f64::from(s) / 32767.0 * gain))
        .collect()
}

fn main() {
    render::require_tools();
    println!(
        "voice plugin quality (emotion-plugin-voice {})",
        env!("CARGO_PKG_VERSION")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let mut clips = Vec::new();
    let mut phone = Vec::new();
    for (si, sentence) in render::SENTENCES.iter().enumerate() {
        for voice in render::VOICES {
            for (k, style) in STYLES.iter().enumerate() {
                clips.push(Clip {
                    sentence: si,
                    voice,
                    style: k,
                    rate: 16000,
                    samples: render::render(dir.path(), sentence, style, voice, 16000),
                });
                phone.push(Clip {
                    sentence: si,
                    voice,
                    style: k,
                    rate: 8000,
                    samples: render::render(dir.path(), sentence, style, voice, 8000),
                });
            }
        }
    }
    let audio_s: f64 = clips
        .iter()
        .map(|c| c.samples.len() as f64 / f64::from(c.rate))
        .sum();
    println!(
        "rendered {} clips at 16 kHz and {} at 8 kHz ({} sentences x {} voices x {} styles, {:.0} s of speech at 16 kHz) in {:.1} s with espeak-ng + sox\n",
        clips.len(),
        phone.len(),
        render::SENTENCES.len(),
        render::VOICES.len(),
        STYLES.len(),
        audio_s,
        t.elapsed().as_secs_f64()
    );

    // 1. Population norms.
    let fresh: Vec<Result1> = clips
        .iter()
        .map(|c| run(&mut Voice::default(), c.voice, &c.samples, c.rate))
        .collect();
    let idx = |s: usize, v: &str, k: usize| {
        clips
            .iter()
            .position(|c| c.sentence == s && c.voice == v && c.style == k)
            .expect("rendered")
    };
    let pairs_of = |res: &[Result1], lo: usize, hi: usize| -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for s in 0..render::SENTENCES.len() {
            for v in render::VOICES {
                out.push((res[idx(s, v, lo)].arousal, res[idx(s, v, hi)].arousal));
            }
        }
        out
    };
    let ordered = |res: &[Result1]| -> (usize, usize) {
        let mut ok = 0;
        let mut n = 0;
        for s in 0..render::SENTENCES.len() {
            for v in render::VOICES {
                let a = [0, 1, 2].map(|k| res[idx(s, v, k)].arousal);
                n += 1;
                if a[0] < a[1] && a[1] < a[2] {
                    ok += 1;
                }
            }
        }
        (ok, n)
    };
    println!("1. ranking with population norms (fresh instance per reading)");
    let headline = print_twins("excited > calm (twins)", &pairs_of(&fresh, 0, 2));
    print_twins("neutral > calm (twins)", &pairs_of(&fresh, 0, 1));
    print_twins("excited > neutral (twins)", &pairs_of(&fresh, 1, 2));
    let (ok, n) = ordered(&fresh);
    println!(
        "   calm < neutral < excited             {ok:>3}/{n:<3} = {:6.1} %",
        100.0 * ok as f64 / n as f64
    );
    let by_style = |res: &[Result1], k: usize| -> Vec<f64> {
        clips
            .iter()
            .zip(res)
            .filter(|(c, _)| c.style == k)
            .map(|(_, r)| r.arousal)
            .collect()
    };
    println!(
        "   across sentences and voices (AUC): excited vs calm {:.3}, neutral vs calm {:.3}, excited vs neutral {:.3}",
        auc(&by_style(&fresh, 0), &by_style(&fresh, 2)),
        auc(&by_style(&fresh, 0), &by_style(&fresh, 1)),
        auc(&by_style(&fresh, 1), &by_style(&fresh, 2)),
    );
    println!("   mean arousal by voice and style:");
    for v in render::VOICES {
        let m = |k: usize| {
            let xs: Vec<f64> = clips
                .iter()
                .zip(&fresh)
                .filter(|(c, _)| c.voice == v && c.style == k)
                .map(|(_, r)| r.arousal)
                .collect();
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        println!(
            "     {v:<9} calm {:.3}   neutral {:.3}   excited {:.3}",
            m(0),
            m(1),
            m(2)
        );
    }

    // 2. Warm baselines.
    let mut shared = Voice::default();
    let mut warm = vec![None; clips.len()];
    for s in 0..render::SENTENCES.len() {
        for v in render::VOICES {
            for k in 0..3 {
                let i = idx(s, v, k);
                warm[i] = Some(run(&mut shared, v, &clips[i].samples, 16000));
            }
        }
    }
    let warm: Vec<Result1> = warm.into_iter().map(|r| r.expect("scored")).collect();
    println!(
        "\n2. ranking with warm speaker baselines (one instance, one user per voice, interleaved)"
    );
    print_twins("excited > calm (twins)", &pairs_of(&warm, 0, 2));
    print_twins("neutral > calm (twins)", &pairs_of(&warm, 0, 1));
    print_twins("excited > neutral (twins)", &pairs_of(&warm, 1, 2));
    let (ok, n) = ordered(&warm);
    println!(
        "   calm < neutral < excited             {ok:>3}/{n:<3} = {:6.1} %",
        100.0 * ok as f64 / n as f64
    );
    for (k, style) in STYLES.iter().enumerate() {
        let rs: Vec<&Result1> = clips
            .iter()
            .zip(&warm)
            .filter(|(c, _)| c.style == k)
            .map(|(_, r)| r)
            .collect();
        println!(
            "   {:<8} mean arousal {:.3}, valence {:+.3}, labels: {}",
            style.name,
            rs.iter().map(|r| r.arousal).sum::<f64>() / rs.len() as f64,
            rs.iter().map(|r| r.valence).sum::<f64>() / rs.len() as f64,
            label_counts(rs.iter().map(|r| r.label.as_str()))
        );
    }

    // 3. Robustness (population norms, calm vs excited twins).
    println!("\n3. robustness (population norms, excited > calm twins)");
    let analyses: Vec<Analysis> = clips.iter().map(analyse).collect();
    let mut equal = Vec::new();
    let mut noisy = Vec::new();
    let mut noisy_conf = Vec::new();
    let mut short_conf = Vec::new();
    let mut tel = Vec::new();
    for s in 0..render::SENTENCES.len() {
        for v in render::VOICES {
            let (ci, ei) = (idx(s, v, 0), idx(s, v, 2));
            let level = |i: usize| analyses[i].loudness_dbfs;
            let eq = |i: usize| {
                let gain = 10f64.powf((-26.0 - level(i)) / 20.0);
                run(
                    &mut Voice::default(),
                    v,
                    &scaled(&clips[i].samples, gain),
                    16000,
                )
                .arousal
            };
            equal.push((eq(ci), eq(ei)));
            let with_noise = |i: usize, seed: u64| {
                let secs = clips[i].samples.len() as f64 / 16000.0 + 0.1;
                let rms = 10f64.powf((level(i) - 10.0) / 20.0);
                let n = synth::noise(16000, secs, rms, seed);
                run(
                    &mut Voice::default(),
                    v,
                    &synth::mix(&clips[i].samples, &n),
                    16000,
                )
            };
            let (cn, en) = (with_noise(ci, 11), with_noise(ei, 12));
            noisy.push((cn.arousal, en.arousal));
            noisy_conf.extend([cn.confidence, en.confidence]);
            // The first 0.6 s of each twin.
            for i in [ci, ei] {
                let head = &clips[i].samples[..9600.min(clips[i].samples.len())];
                if let Outcome::Emotion(e) =
                    Voice::default().normalize(reading(v, head.to_vec(), 16000))
                {
                    short_conf.push(e.confidence);
                }
            }
            let c8 = find(&phone, s, v, 0);
            let e8 = find(&phone, s, v, 2);
            tel.push((
                run(&mut Voice::default(), v, &c8.samples, 8000).arousal,
                run(&mut Voice::default(), v, &e8.samples, 8000).arousal,
            ));
        }
    }
    print_twins("same level (-26 dBFS) for both twins", &equal);
    print_twins("telephone band (8 kHz renderings)", &tel);
    print_twins("white noise at 10 dB SNR", &noisy);
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
    println!(
        "   mean confidence: clean {:.3}, 10 dB SNR {:.3}, first 0.6 s only {:.3} ({} of {} short clips answered)",
        mean(&fresh.iter().map(|r| r.confidence).collect::<Vec<_>>()),
        mean(&noisy_conf),
        mean(&short_conf),
        short_conf.len(),
        2 * noisy.len()
    );

    // 3b. Other voices, languages, style variants and short phrases.
    println!(
        "\n   other voices, languages, style variants and short phrases (population norms, excited > calm twins):"
    );
    let other_voices = [
        "en", "en+f2", "en+f4", "en+m1", "en+klatt", "en+croak", "de", "fr", "es",
    ];
    let phrases = [
        "Yes.",
        "Hello there.",
        "I need to talk to you about the meeting.",
        "Wait for me at the corner, I will be there in five minutes.",
    ];
    let variants: [(&str, render::Style, render::Style); 4] = [
        (
            "SSML only (default -p -s -a)",
            render::Style {
                pitch: 50,
                speed: 175,
                amplitude: 100,
                ..render::CALM
            },
            render::Style {
                pitch: 50,
                speed: 175,
                amplitude: 100,
                ..render::EXCITED
            },
        ),
        (
            "options only (no SSML)",
            render::Style {
                prosody: "",
                ..render::CALM
            },
            render::Style {
                prosody: "",
                ..render::EXCITED
            },
        ),
        (
            "mild (pitch, rate ±10 %)",
            render::Style {
                name: "mild calm",
                prosody: r#"pitch="-10%" rate="-10%""#,
                pitch: 45,
                speed: 160,
                amplitude: 90,
            },
            render::Style {
                name: "mild excited",
                prosody: r#"pitch="+10%" rate="+10%" range="+20%""#,
                pitch: 55,
                speed: 190,
                amplitude: 110,
            },
        ),
        (
            "extreme (x-low/x-high everything)",
            render::Style {
                name: "extreme calm",
                prosody: r#"range="x-low" pitch="x-low" rate="x-slow" volume="x-soft""#,
                pitch: 10,
                speed: 100,
                amplitude: 30,
            },
            render::Style {
                name: "extreme excited",
                prosody: r#"range="x-high" pitch="x-high" rate="x-fast" volume="x-loud""#,
                pitch: 90,
                speed: 320,
                amplitude: 200,
            },
        ),
    ];
    let mut all_pairs = Vec::new();
    let mut refused = Vec::new();
    for (name, calm, excited) in &variants {
        let mut pairs = Vec::new();
        for v in other_voices {
            for p in phrases {
                let mut score = |style: &render::Style| {
                    let pcm = render::render(dir.path(), p, style, v, 16000);
                    match Voice::default().normalize(reading(v, pcm, 16000)) {
                        Outcome::Emotion(e) => Some(e.arousal),
                        other => {
                            refused.push(format!("{} {v} {p:?}: {other:?}", style.name));
                            None
                        }
                    }
                };
                if let (Some(c), Some(e)) = (score(calm), score(excited)) {
                    pairs.push((c, e));
                }
            }
        }
        print_twins(name, &pairs);
        all_pairs.extend(pairs);
    }
    print_twins("all of these", &all_pairs);
    println!(
        "   ({} voices x {} phrases x {} variants; readings refused: {})",
        other_voices.len(),
        phrases.len(),
        variants.len(),
        refused.len()
    );
    for r in &refused {
        println!("     refused: {r}");
    }

    // 4. Per-cue agreement.
    println!("\n4. which cues separate the twins (excited value > calm value)");
    let cue = |name: &str, f: &dyn Fn(&Analysis) -> Option<f64>| {
        let mut ok = 0;
        let mut n = 0;
        for s in 0..render::SENTENCES.len() {
            for v in render::VOICES {
                if let (Some(c), Some(e)) = (f(&analyses[idx(s, v, 0)]), f(&analyses[idx(s, v, 2)]))
                {
                    n += 1;
                    if e > c {
                        ok += 1;
                    }
                }
            }
        }
        let mean = |k: usize| {
            let xs: Vec<f64> = clips
                .iter()
                .zip(&analyses)
                .filter(|(c, _)| c.style == k)
                .filter_map(|(_, a)| f(a))
                .collect();
            xs.iter().sum::<f64>() / xs.len().max(1) as f64
        };
        println!(
            "   {name:<28} {ok:>3}/{n:<3}   mean calm {:8.2}   neutral {:8.2}   excited {:8.2}",
            mean(0),
            mean(1),
            mean(2)
        );
    };
    cue("F0 median (Hz)", &|a| Some(a.f0_median_hz));
    cue("F0 range p10-p90 (st)", &|a| Some(a.f0_range_st));
    cue("level (dBFS)", &|a| Some(a.loudness_dbfs));
    cue("speech rate (syllables/s)", &|a| a.speech_rate);
    cue("alpha ratio (dB)", &|a| Some(a.alpha_ratio_db));
    cue("voiced fraction", &|a| Some(a.voiced_fraction));

    // 5. Labels and confidence.
    println!("\n5. labels and confidence by style (population norms)");
    for (k, style) in STYLES.iter().enumerate() {
        let mut conf = Vec::new();
        let mut val = Vec::new();
        let mut labels = Vec::new();
        for (c, r) in clips.iter().zip(&fresh) {
            if c.style != k {
                continue;
            }
            conf.push(r.confidence);
            val.push(r.valence);
            labels.push(r.label.as_str());
        }
        println!(
            "   {:<8} labels: {:<34} confidence {:.3}-{:.3} (mean {:.3}), valence mean {:+.3}",
            style.name,
            label_counts(labels.into_iter()),
            conf.iter().copied().fold(f64::INFINITY, f64::min),
            conf.iter().copied().fold(0.0, f64::max),
            conf.iter().sum::<f64>() / conf.len() as f64,
            val.iter().sum::<f64>() / val.len() as f64
        );
    }
    let mean_conf =
        |res: &[Result1]| res.iter().map(|r| r.confidence).sum::<f64>() / res.len() as f64;
    println!(
        "   mean confidence: clean {:.3}, warm baselines {:.3}",
        mean_conf(&fresh),
        mean_conf(&warm)
    );

    // 6. Speed.
    println!("\n6. speed (native, this build; analysis of every rendering, best of 3 rounds)");
    let mut rates = vec![(
        8000u32,
        phone.iter().map(|c| c.samples.clone()).collect::<Vec<_>>(),
    )];
    rates.push((16000, clips.iter().map(|c| c.samples.clone()).collect()));
    let studio: Vec<Vec<i16>> = render::SENTENCES
        .iter()
        .take(6)
        .map(|s| render::render(dir.path(), s, &render::NEUTRAL, "en-us", 44100))
        .collect();
    rates.push((44100, studio));
    for (rate, set) in &rates {
        let secs: f64 = set.iter().map(|s| s.len() as f64 / f64::from(*rate)).sum();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let mut v = Voice::default();
            let t = Instant::now();
            for s in set {
                std::hint::black_box(v.normalize(reading("u", s.clone(), *rate)));
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "   {:>5} Hz: {:6.1} s of audio in {:7.1} ms = {:.3} ms per second of audio (real-time factor {:.5})",
            rate,
            secs,
            best * 1e3,
            best * 1e3 / secs,
            best / secs
        );
    }
    let t = Instant::now();
    let _ = emotion_plugin_voice::resample::Resampler::new(44100);
    println!(
        "   first reading at a new rate also builds its resampling table: {:.2} ms at 44.1 kHz (cached after)",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "\nsummary: voice ranking agreement (excited > calm twins, population norms) {:.1} %",
        100.0 * headline
    );
}
