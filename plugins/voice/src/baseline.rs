//! Each speaker's own baseline, and the population norms it starts from.
//!
//! Vocal arousal is a departure from how a person usually sounds: 200 Hz is
//! a raised voice for most men and an ordinary one for many women, and a
//! device's gain moves every level reading by a constant. So every cue is
//! read as a z-score against a *reference* that starts at population norms
//! and moves towards the speaker's own running mean as their readings come
//! in:
//!
//! ```text
//! w      = min(n / (n + N0), W_MAX)          n = the speaker's readings with this cue
//! centre = w·mean_speaker + (1 − w)·centre_population
//! scale  = w·scale_within_speaker + (1 − w)·scale_population
//! z      = (value − centre) / scale
//! ```
//!
//! `W_MAX` < 1 keeps some population anchoring: a speaker who is always
//! shouting still reads as somewhat aroused. The population scale is wider
//! than the within-speaker one (it also spans differences between speakers
//! and devices), so a cold reference gives smaller z-scores, and the
//! confidence is a little lower until the baseline warms up.
//!
//! The speaker mean is an exponentially weighted mean (plain mean for the
//! first [`HORIZON`] readings, then weight 1/HORIZON), updated robustly:
//! values more than 2.5 scales from the reference are clipped first, so one
//! shouted reading cannot drag the baseline. A reading is scored against the
//! reference *before* it is added.
//!
//! Baselines live in the plugin instance, in a map bounded to `max_speakers`
//! (least recently heard speaker evicted). The host may drop the instance at
//! any time; baselines then restart from population norms — they are a
//! cache, never the truth.

use std::collections::HashMap;

/// Readings worth of prior: after N0 readings the speaker weighs half.
pub const N0: f64 = 5.0;
/// Largest weight of the speaker's own mean.
pub const W_MAX: f64 = 0.8;
/// Memory of the running mean, readings.
pub const HORIZON: f64 = 50.0;
/// Updates clip values this many scales from the reference.
const CLIP_Z: f64 = 2.5;

/// The cues that have norms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// Median (or mean) F0, semitones re 1 Hz.
    F0Level,
    /// F0 range (10th–90th percentile), semitones.
    F0Range,
    /// Level, dB re full scale (recordings).
    LoudnessDbfs,
    /// Level, dB SPL (calibrated front ends).
    LoudnessSpl,
    /// Syllables per second of speaking time.
    SpeechRate,
    /// Energy above 1 kHz over energy below, dB.
    AlphaRatio,
    /// Local jitter, fraction.
    Jitter,
    /// Local shimmer, fraction.
    Shimmer,
    /// Harmonics-to-noise ratio, dB.
    Hnr,
}

/// A cue's population norm: centre, the population scale (between speakers
/// and devices) and the within-speaker scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    pub centre: f64,
    pub population_scale: f64,
    pub speaker_scale: f64,
}

impl Cue {
    pub const ALL: [Cue; 9] = [
        Cue::F0Level,
        Cue::F0Range,
        Cue::LoudnessDbfs,
        Cue::LoudnessSpl,
        Cue::SpeechRate,
        Cue::AlphaRatio,
        Cue::Jitter,
        Cue::Shimmer,
        Cue::Hnr,
    ];
    pub const COUNT: usize = 9;

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Cue::F0Level => "f0_level",
            Cue::F0Range => "f0_range",
            Cue::LoudnessDbfs => "loudness_dbfs",
            Cue::LoudnessSpl => "loudness_spl",
            Cue::SpeechRate => "speech_rate",
            Cue::AlphaRatio => "alpha_ratio",
            Cue::Jitter => "jitter",
            Cue::Shimmer => "shimmer",
            Cue::Hnr => "hnr",
        }
    }

    /// Population norms; sources in the README ("Norms").
    pub fn norm(self) -> Norm {
        let (centre, population_scale, speaker_scale) = match self {
            // 150 Hz: between typical adult male (~120 Hz) and female
            // (~210 Hz) speaking F0; the population scale spans both.
            Cue::F0Level => (12.0 * 150f64.log2(), 4.5, 2.5),
            Cue::F0Range => (6.0, 3.0, 2.5),
            // ITU-T P.56 active speech level convention: −26 dBov.
            Cue::LoudnessDbfs => (-26.0, 8.0, 5.0),
            // Conversational speech at 1 m.
            Cue::LoudnessSpl => (60.0, 8.0, 5.0),
            Cue::SpeechRate => (4.5, 1.2, 1.0),
            // The long-term average speech spectrum (Byrne et al. 1994)
            // summed over 50–1000 Hz and 1–3.6 kHz gives about −12 dB.
            Cue::AlphaRatio => (-12.0, 5.0, 3.5),
            Cue::Jitter => (0.01, 0.006, 0.004),
            Cue::Shimmer => (0.05, 0.025, 0.015),
            Cue::Hnr => (15.0, 5.0, 3.0),
        };
        Norm {
            centre,
            population_scale,
            speaker_scale,
        }
    }
}

/// A speaker's running mean of one cue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Running {
    /// Readings seen (capped at [`HORIZON`] for the weight).
    pub n: f64,
    pub mean: f64,
}

/// The reference a cue is read against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub centre: f64,
    pub scale: f64,
    /// Weight of the speaker's own mean (0 = population norms only).
    pub warmth: f64,
}

impl Reference {
    pub fn z(&self, value: f64) -> f64 {
        (value - self.centre) / self.scale
    }
}

/// One speaker's baselines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Speaker {
    pub cues: [Running; Cue::COUNT],
    /// Readings seen (any cue).
    pub readings: u64,
    last_heard: u64,
}

impl Speaker {
    /// The reference for `cue`.
    pub fn reference(&self, cue: Cue) -> Reference {
        reference(Some(&self.cues[cue.index()]), cue)
    }
}

/// The reference for `cue` given a speaker's running mean (or none).
pub fn reference(running: Option<&Running>, cue: Cue) -> Reference {
    let norm = cue.norm();
    let warmth = match running {
        Some(r) if r.n > 0.0 => (r.n / (r.n + N0)).min(W_MAX),
        _ => 0.0,
    };
    let mean = running.map_or(norm.centre, |r| r.mean);
    Reference {
        centre: warmth * mean + (1.0 - warmth) * norm.centre,
        scale: warmth * norm.speaker_scale + (1.0 - warmth) * norm.population_scale,
        warmth,
    }
}

/// Baselines of many speakers, bounded.
#[derive(Debug, Clone, Default)]
pub struct Speakers {
    map: HashMap<String, Speaker>,
    clock: u64,
}

impl Speakers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The speaker's baselines, if any.
    pub fn get(&self, user: &str) -> Option<&Speaker> {
        self.map.get(user)
    }

    /// Add a reading's cues (`(cue, value)`) to the speaker's baselines,
    /// creating it (and evicting the least recently heard speaker beyond
    /// `max_speakers`) as needed.
    pub fn update(&mut self, user: &str, cues: &[(Cue, f64)], max_speakers: usize) {
        self.clock += 1;
        let clock = self.clock;
        if !self.map.contains_key(user) {
            self.shrink_to(max_speakers.max(1) - 1);
            self.map.insert(user.to_owned(), Speaker::default());
        }
        let Some(speaker) = self.map.get_mut(user) else {
            return;
        };
        speaker.last_heard = clock;
        speaker.readings += 1;
        for &(cue, value) in cues {
            if !value.is_finite() {
                continue;
            }
            let reference = speaker.reference(cue);
            let lim = CLIP_Z * reference.scale;
            let value = value.clamp(reference.centre - lim, reference.centre + lim);
            let r = &mut speaker.cues[cue.index()];
            if r.n == 0.0 {
                r.mean = value;
                r.n = 1.0;
            } else {
                r.n = (r.n + 1.0).min(HORIZON);
                r.mean += (value - r.mean) / r.n;
            }
        }
    }

    /// Keep at most `max_speakers` (least recently heard evicted first).
    pub fn shrink_to(&mut self, max_speakers: usize) {
        while self.map.len() > max_speakers {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_heard)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.map.remove(&oldest);
        }
    }
}
