//! One factor at a time: does arousal rise (or at least never fall) when
//! espeak-ng speaks faster, with a wider pitch range or louder, the rest
//! fixed? And does the measured syllable rate follow the speed?
//!
//!     scripts/install-voice-test-deps.sh      # espeak-ng and sox, once
//!     cargo run --release -p emotion-plugin-voice --example voice_monotonicity [-- --verbose]
//!
//! The grid: voices en-us and en-us+f3, four sentences;
//!
//! 1. speed (`-s`) 120, 150, 175, 210, 240, 270, 300 words/min at each pitch
//!    (`-p`) 20, 35, 50, 65, 80: measured syllable rate and arousal per step;
//! 2. pitch range (SSML `<prosody range>` x-low … x-high) at speeds 135, 175,
//!    240 and pitches 20, 50, 80;
//! 3. amplitude (`-a`) 25, 50, 100, 150, 200 at the same speeds and pitches.
//!
//! 4. the grid of `tests/speech.rs` (speeds 120, 180, 240, 300; ranges
//!    x-low, medium, x-high and amplitudes 25, 100, 200 at speed 175;
//!    pitches 20, 50, 80) on all 16 sentences instead of the test's two.
//!
//! Every reading goes to a fresh instance (population norms). A "fall" is a
//! step up in the factor that lowers the value; the report counts them and
//! names the worst.

#[path = "../tests/render/mod.rs"]
mod render;

use emotion_plugin_sdk::{Outcome, Payload, Pcm, Reading, Source, Voice as WitVoice};
use emotion_plugin_voice::{Voice, features};

const VOICES: [&str; 2] = ["en-us", "en-us+f3"];
const SENTENCES: [usize; 4] = [0, 3, 6, 11];
const SPEEDS: [u32; 7] = [120, 150, 175, 210, 240, 270, 300];
const PITCHES: [u32; 5] = [20, 35, 50, 65, 80];
const RANGES: [&str; 5] = [
    r#"range="x-low""#,
    r#"range="low""#,
    r#"range="medium""#,
    r#"range="high""#,
    r#"range="x-high""#,
];
const AMPLITUDES: [u32; 5] = [25, 50, 100, 150, 200];
const FIXED_SPEEDS: [u32; 3] = [135, 175, 240];
const FIXED_PITCHES: [u32; 3] = [20, 50, 80];
const RATE: u32 = 16000;

fn style(prosody: &'static str, pitch: u32, speed: u32, amplitude: u32) -> render::Style {
    render::Style {
        name: "grid",
        prosody,
        pitch,
        speed,
        amplitude,
    }
}

/// Measured syllable rate and arousal (fresh instance) of one rendering.
fn measure(dir: &std::path::Path, sentence: usize, voice: &str, s: &render::Style) -> (f64, f64) {
    let pcm = render::render(dir, render::SENTENCES[sentence], s, voice, RATE);
    let rate = features::analyze(&pcm, RATE, 30.0)
        .unwrap_or_else(|e| panic!("{voice} {s:?}: {e}"))
        .speech_rate
        .unwrap_or(0.0);
    let reading = Reading {
        user_id: voice.into(),
        session_id: "grid".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Voice,
        payload: Payload::Voice(WitVoice::Pcm(Pcm {
            samples: pcm,
            sample_rate_hz: RATE,
        })),
    };
    match Voice::default().normalize(reading) {
        Outcome::Emotion(e) => (rate, e.arousal),
        other => panic!("{voice} {s:?}: expected an emotion, got {other:?}"),
    }
}

/// Steps, falls and the worst fall (size, description) of a sequence.
#[derive(Default)]
struct Falls {
    steps: usize,
    falls: usize,
    worst: (f64, String),
}

impl Falls {
    fn add(&mut self, seq: &[f64], what: &str, names: &[String]) {
        for k in 1..seq.len() {
            self.steps += 1;
            let drop = seq[k - 1] - seq[k];
            if drop > 0.0 {
                self.falls += 1;
                if verbose() {
                    println!(
                        "      fall {drop:.3} {what}: {} {:.3} -> {} {:.3}",
                        names[k - 1],
                        seq[k - 1],
                        names[k],
                        seq[k]
                    );
                }
                if drop > self.worst.0 {
                    self.worst = (
                        drop,
                        format!(
                            "{what}: {} {:.3} -> {} {:.3}",
                            names[k - 1],
                            seq[k - 1],
                            names[k],
                            seq[k]
                        ),
                    );
                }
            }
        }
    }

    fn print(&self, name: &str) {
        print!(
            "   {name:<28} {:>3} falls in {:>3} steps",
            self.falls, self.steps
        );
        if self.falls > 0 {
            print!("; worst {:.3} ({})", self.worst.0, self.worst.1);
        }
        println!();
    }
}

/// `--verbose`: list every fall.
fn verbose() -> bool {
    std::env::args().any(|a| a == "--verbose" || a == "-v")
}

fn main() {
    render::require_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();

    println!("1. speed (-s), pitch (-p) fixed: mean measured syllables/s and arousal");
    print!("   {:>8}", "pitch");
    for s in SPEEDS {
        print!(" {s:>11}");
    }
    println!();
    let speed_names: Vec<String> = SPEEDS.iter().map(|s| format!("-s {s}")).collect();
    let (mut rate_falls, mut arousal_falls) = (Falls::default(), Falls::default());
    for pitch in PITCHES {
        let mut mean_rate = [0.0; SPEEDS.len()];
        let mut mean_arousal = [0.0; SPEEDS.len()];
        let n = (VOICES.len() * SENTENCES.len()) as f64;
        for voice in VOICES {
            for sentence in SENTENCES {
                let (rates, arousals): (Vec<f64>, Vec<f64>) = SPEEDS
                    .iter()
                    .map(|&speed| measure(dir, sentence, voice, &style("", pitch, speed, 100)))
                    .unzip();
                let what = format!("{voice} sentence {sentence} -p {pitch}");
                rate_falls.add(&rates, &what, &speed_names);
                arousal_falls.add(&arousals, &what, &speed_names);
                for k in 0..SPEEDS.len() {
                    mean_rate[k] += rates[k] / n;
                    mean_arousal[k] += arousals[k] / n;
                }
            }
        }
        print!("   {pitch:>8}");
        for k in 0..SPEEDS.len() {
            print!("  {:>4.2} {:>4.2}", mean_rate[k], mean_arousal[k]);
        }
        println!();
    }
    rate_falls.print("measured rate vs speed");
    arousal_falls.print("arousal vs speed");

    println!("2. pitch range (SSML range x-low..x-high) and 3. amplitude (-a), the rest fixed");
    let range_names: Vec<String> = RANGES.iter().map(|r| r.to_string()).collect();
    let amp_names: Vec<String> = AMPLITUDES.iter().map(|a| format!("-a {a}")).collect();
    let (mut range_falls, mut amp_falls) = (Falls::default(), Falls::default());
    let (mut range_gain, mut amp_gain, mut cells) = (0.0, 0.0, 0.0);
    for voice in VOICES {
        for sentence in SENTENCES {
            for speed in FIXED_SPEEDS {
                for pitch in FIXED_PITCHES {
                    let what = format!("{voice} sentence {sentence} -p {pitch} -s {speed}");
                    let by_range: Vec<f64> = RANGES
                        .iter()
                        .map(|&r| measure(dir, sentence, voice, &style(r, pitch, speed, 100)).1)
                        .collect();
                    range_falls.add(&by_range, &what, &range_names);
                    let by_amp: Vec<f64> = AMPLITUDES
                        .iter()
                        .map(|&a| measure(dir, sentence, voice, &style("", pitch, speed, a)).1)
                        .collect();
                    amp_falls.add(&by_amp, &what, &amp_names);
                    range_gain += by_range[RANGES.len() - 1] - by_range[0];
                    amp_gain += by_amp[AMPLITUDES.len() - 1] - by_amp[0];
                    cells += 1.0;
                }
            }
        }
    }
    range_falls.print("arousal vs pitch range");
    println!("   mean arousal x-high - x-low: {:+.3}", range_gain / cells);
    amp_falls.print("arousal vs amplitude");
    println!("   mean arousal -a 200 - -a 25: {:+.3}", amp_gain / cells);

    println!("4. the test's grid (tests/speech.rs) on all 16 sentences");
    let test_speeds = [120, 180, 240, 300];
    let test_ranges = [r#"range="x-low""#, r#"range="medium""#, r#"range="x-high""#];
    let test_amps = [25, 100, 200];
    let speed_names: Vec<String> = test_speeds.iter().map(|s| format!("-s {s}")).collect();
    let range_names: Vec<String> = test_ranges.iter().map(|r| r.to_string()).collect();
    let amp_names: Vec<String> = test_amps.iter().map(|a| format!("-a {a}")).collect();
    let (mut rate_f, mut speed_f, mut range_f, mut amp_f) = (
        Falls::default(),
        Falls::default(),
        Falls::default(),
        Falls::default(),
    );
    for voice in VOICES {
        for sentence in 0..render::SENTENCES.len() {
            for pitch in FIXED_PITCHES {
                let what = format!("{voice} sentence {sentence} -p {pitch}");
                let (rates, arousals): (Vec<f64>, Vec<f64>) = test_speeds
                    .iter()
                    .map(|&speed| measure(dir, sentence, voice, &style("", pitch, speed, 100)))
                    .unzip();
                rate_f.add(&rates, &what, &speed_names);
                speed_f.add(&arousals, &what, &speed_names);
                let by_range: Vec<f64> = test_ranges
                    .iter()
                    .map(|&r| measure(dir, sentence, voice, &style(r, pitch, 175, 100)).1)
                    .collect();
                range_f.add(&by_range, &what, &range_names);
                let by_amp: Vec<f64> = test_amps
                    .iter()
                    .map(|&a| measure(dir, sentence, voice, &style("", pitch, 175, a)).1)
                    .collect();
                amp_f.add(&by_amp, &what, &amp_names);
            }
        }
    }
    rate_f.print("measured rate vs speed");
    speed_f.print("arousal vs speed");
    range_f.print("arousal vs pitch range");
    amp_f.print("arousal vs amplitude");
}
