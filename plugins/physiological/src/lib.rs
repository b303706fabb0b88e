//! Physiological plugin: heart rate, RR intervals, skin conductance,
//! breathing rate and skin temperature to arousal, a stress index and a
//! label, each relative to the wearer's own rolling baseline.
//!
//! * [`hrv`]: artefact rejection and time-domain HRV (mean NN, SDNN, RMSSD,
//!   pNN50);
//! * [`eda`]: tonic skin-conductance level and phasic responses (SCRs);
//! * [`baseline`]: per-wearer robust rolling baselines that fall back to
//!   population norms while they warm up;
//! * [`synth`]: synthetic signals with known ground truth (tests, quality
//!   report: `cargo run --release -p emotion-plugin-physiological --example physiological_quality`).
//!
//! The plugin keeps per-wearer state inside its instance (a bounded map keyed
//! by user id: baselines and the last minute of RR intervals, so that BLE
//! notifications carrying one or two intervals each still add up to HRV).
//! The host may drop an instance at any time; a fresh one starts from
//! population norms and reports a lower confidence until the baselines warm
//! up again. See README.md.

pub mod baseline;
pub mod eda;
pub mod hrv;
pub mod synth;

use std::collections::HashMap;
use std::sync::Mutex;

use emotion_plugin_sdk::{
    Emotion, Info, Label, Outcome, Payload, Physiological, Plugin, Reading, Source, json,
};
use serde_json::{Map, Value};

use baseline::{Channel, Stat};

/// The plugin, as exported to the gateway.
#[derive(Debug)]
pub struct PhysiologicalPlugin;

/// The instance's state: one engine, created on first use.
static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

/// JSON Schema of the settings.
pub const SETTINGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "scr_min_amplitude_us": {
      "type": "number", "minimum": 0.005, "maximum": 1, "default": 0.01,
      "description": "Floor of the skin-conductance response threshold, µS (0.01 is the classic laboratory criterion); the threshold rises above it with the signal's own noise (5 SD of the smoothed signal)."
    },
    "max_users": {
      "type": "integer", "minimum": 1, "maximum": 100000, "default": 4096,
      "description": "Wearers whose baselines are kept; the least recently seen are forgotten first."
    },
    "baseline_half_life_min": {
      "type": "number", "minimum": 1, "maximum": 1440, "default": 30,
      "description": "Half-life of the rolling baselines, minutes of wear."
    }
  }
}"#;

impl Plugin for PhysiologicalPlugin {
    fn info() -> Info {
        Info::new(
            "physiological",
            env!("CARGO_PKG_VERSION"),
            [Source::Physiological, Source::Biometric],
        )
        .with_settings_schema(SETTINGS_SCHEMA)
    }

    fn normalize_one(reading: Reading) -> Outcome {
        Self::normalize(vec![reading])
            .pop()
            .unwrap_or_else(|| Outcome::error("no result"))
    }

    fn normalize(readings: Vec<Reading>) -> Vec<Outcome> {
        let settings = Settings::load();
        let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
        let engine = guard.get_or_insert_with(|| Engine::new(settings));
        engine.set_settings(settings);
        readings.iter().map(|r| engine.process(r)).collect()
    }
}

emotion_plugin_sdk::export_plugin!(PhysiologicalPlugin);

/// The plugin's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// SCR amplitude threshold, µS.
    pub scr_min_amplitude_us: f64,
    /// Most wearers kept.
    pub max_users: usize,
    /// Half-life of the baselines, minutes.
    pub baseline_half_life_min: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scr_min_amplitude_us: eda::DEFAULT_MIN_AMPLITUDE_US,
            max_users: 4096,
            baseline_half_life_min: 30.0,
        }
    }
}

impl Settings {
    /// Parse settings JSON; unknown or invalid values are reported and the
    /// defaults kept.
    pub fn parse(text: &str) -> (Settings, Vec<String>) {
        let mut s = Settings::default();
        let mut problems = Vec::new();
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(m) => {
                for (k, v) in &m {
                    match (k.as_str(), v.as_f64()) {
                        ("scr_min_amplitude_us", Some(x)) if (0.005..=1.0).contains(&x) => {
                            s.scr_min_amplitude_us = x;
                        }
                        ("max_users", Some(x))
                            if x.fract() == 0.0 && (1.0..=100_000.0).contains(&x) =>
                        {
                            s.max_users = x as usize;
                        }
                        ("baseline_half_life_min", Some(x)) if (1.0..=1440.0).contains(&x) => {
                            s.baseline_half_life_min = x;
                        }
                        _ => problems.push(format!("ignoring setting `{k}`: {v}")),
                    }
                }
            }
            Err(e) => problems.push(format!("ignoring unreadable settings: {e}")),
        }
        (s, problems)
    }

    /// The settings from the host, parsed again (and problems logged) only
    /// when their text changes.
    #[cfg(target_family = "wasm")]
    fn load() -> Self {
        static LAST: Mutex<Option<(String, Settings)>> = Mutex::new(None);
        let text = emotion_plugin_sdk::settings();
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, s)) = last.as_ref()
            && *t == text
        {
            return *s;
        }
        let (s, problems) = Settings::parse(&text);
        for p in problems {
            emotion_plugin_sdk::warn(&p);
        }
        *last = Some((text, s));
        s
    }

    #[cfg(not(target_family = "wasm"))]
    fn load() -> Self {
        Settings::default()
    }
}

/// Most RR intervals kept per wearer (a minute at 180 bpm).
const MAX_BUFFERED_BEATS: usize = 180;
/// Span of the rolling RR window, ms.
const HRV_WINDOW_MS: f64 = 60_000.0;
/// A reading whose own accepted intervals cover this much is analysed alone.
const SELF_CONTAINED_MS: f64 = 30_000.0;

/// Per-wearer state.
#[derive(Debug, Clone)]
struct UserState {
    last_ts_ms: Option<i64>,
    last_used: u64,
    /// Recent accepted RR intervals and whether each follows the previous.
    nn: Vec<f64>,
    joined: Vec<bool>,
    stats: [Stat; Channel::COUNT],
    /// The last seconds of skin conductance, for a response that straddles
    /// two readings.
    eda_carry: Option<eda::Carry>,
}

impl UserState {
    fn new() -> Self {
        UserState {
            last_ts_ms: None,
            last_used: 0,
            nn: Vec::new(),
            joined: Vec::new(),
            stats: [Stat::default(); Channel::COUNT],
            eda_carry: None,
        }
    }
}

/// Where the HRV metrics were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HrvWindow {
    /// The reading's own intervals (at least 30 s of them).
    Reading,
    /// The wearer's last minute of intervals, this reading's included.
    Rolling,
}

/// Everything the plugin concluded from one reading.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// One of the gateway's labels (a type, not a name looked up per
    /// reading: comparing names was a visible cost in WebAssembly).
    pub label: Label,
    pub valence: f64,
    pub arousal: f64,
    pub confidence: f64,
    /// 0 (relaxed) … 1 (strongly stressed), relative to the wearer's baseline.
    pub stress_index: f64,
    pub hrv: Option<hrv::TimeDomain>,
    pub hrv_window: HrvWindow,
    /// Intervals of this reading rejected as artefacts.
    pub rejected_beats: usize,
    pub eda: Option<eda::Features>,
    /// The value each channel contributed (heart rate in bpm, ln RMSSD, ln
    /// SCL, SCR per minute, breaths per minute, °C).
    pub values: [Option<f64>; Channel::COUNT],
    /// z-scores against the wearer's baseline.
    pub z: [Option<f64>; Channel::COUNT],
    /// How personal the baselines are, 0 (population norms) … 1.
    pub warmth: f64,
    /// Measurements present but not used, and why.
    pub dropped: Vec<String>,
}

/// Weights of the channels in the stress index and in arousal, and the
/// direction of each (a rise of ln RMSSD or skin temperature lowers both).
///
/// Stress leans on vagal withdrawal (RMSSD down: Kim et al., *Stress and
/// heart rate variability: a meta-analysis and review of the literature*,
/// Psychiatry Investigation 15:235–245, 2018) with heart rate, electrodermal
/// activity, breathing and peripheral cooling (Vinkers et al., *The effect
/// of stress on core and peripheral body temperature in humans*, Stress
/// 16:520–530, 2013); arousal leans on electrodermal activity, the purest
/// sympathetic measure (Boucsein 2012), and heart rate.
const STRESS_WEIGHTS: [f64; Channel::COUNT] = [0.8, 1.4, 0.8, 0.8, 0.5, 0.4];
const AROUSAL_WEIGHTS: [f64; Channel::COUNT] = [1.0, 0.6, 1.2, 1.0, 0.6, 0.2];
const DIRECTION: [f64; Channel::COUNT] = [1.0, -1.0, 1.0, 1.0, 1.0, -1.0];

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The normalizer with its per-wearer state.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    users: HashMap<String, UserState>,
    tick: u64,
}

impl Engine {
    pub fn new(settings: Settings) -> Self {
        Engine {
            settings,
            users: HashMap::new(),
            tick: 0,
        }
    }

    /// Wearers currently kept.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
        if self.users.len() > settings.max_users {
            self.evict(settings.max_users);
        }
    }

    /// Forget the least recently seen wearers until `keep` remain.
    fn evict(&mut self, keep: usize) {
        let mut ages: Vec<(u64, String)> = self
            .users
            .iter()
            .map(|(k, s)| (s.last_used, k.clone()))
            .collect();
        ages.sort_unstable();
        let excess = self.users.len().saturating_sub(keep);
        for (_, k) in ages.into_iter().take(excess) {
            self.users.remove(&k);
        }
    }

    /// Normalize one reading.
    pub fn process(&mut self, reading: &Reading) -> Outcome {
        match &reading.payload {
            Payload::Physiological(p) => {
                match self.assess(&reading.user_id, reading.timestamp_ms, reading.source, p) {
                    Ok(a) => Outcome::Emotion(a.to_emotion()),
                    Err(e) => Outcome::Error(e),
                }
            }
            other => Outcome::error(format!(
                "expected a physiological payload (heart_rate, rr_intervals_ms, skin_conductance + eda_sample_rate_hz, breathing_rate, skin_temperature), got a {} payload",
                match other {
                    Payload::Facial(_) => "facial",
                    Payload::Voice(_) => "voice",
                    Payload::Text(_) => "text",
                    Payload::Physiological(_) => "physiological",
                    Payload::Json(_) => "json",
                    Payload::Raw(_) => "raw",
                }
            )),
        }
    }

    /// Assess one reading of `user` taken at `ts_ms`, and learn from it.
    pub fn assess(
        &mut self,
        user: &str,
        ts_ms: i64,
        source: Source,
        p: &Physiological,
    ) -> Result<Assessment, String> {
        validate(p)?;
        let settings = self.settings;
        self.tick += 1;
        if !self.users.contains_key(user) {
            if self.users.len() >= settings.max_users {
                let keep = settings.max_users - (settings.max_users / 8).max(1);
                self.evict(keep);
            }
            self.users.insert(user.to_owned(), UserState::new());
        }
        let Some(state) = self.users.get_mut(user) else {
            return Err("internal error: wearer state missing".into());
        };
        state.last_used = self.tick;

        // Forget with time.
        let dt_ms = state.last_ts_ms.map(|last| ts_ms.saturating_sub(last));
        if let Some(dt) = dt_ms {
            let gap_s = (dt as f64 / 1000.0).clamp(0.0, baseline::MAX_GAP_S);
            let factor = 0.5f64.powf(gap_s / (settings.baseline_half_life_min * 60.0));
            state.stats.iter_mut().for_each(|s| s.decay(factor));
        }

        let mut dropped = Vec::new();
        let mut values = [None; Channel::COUNT];
        let mut quality = [0.0f64; Channel::COUNT];

        // Heart: RR intervals into the rolling window.
        let rr_sum_ms: f64 = p.rr_intervals_ms.iter().sum();
        let continues = !state.nn.is_empty()
            && dt_ms.is_some_and(|dt| dt >= 0 && (dt as f64) <= rr_sum_ms + 5_000.0);
        let cleaned = hrv::clean(&p.rr_intervals_ms, &state.nn, continues);
        let own_ms: f64 = cleaned.nn.iter().sum();
        let hrv_window = if own_ms >= SELF_CONTAINED_MS {
            HrvWindow::Reading
        } else {
            HrvWindow::Rolling
        };
        if !continues || hrv_window == HrvWindow::Reading {
            state.nn.clear();
            state.joined.clear();
        }
        if !p.rr_intervals_ms.is_empty() {
            state.nn.extend_from_slice(&cleaned.nn);
            state.joined.extend_from_slice(&cleaned.joined);
            trim_window(&mut state.nn, &mut state.joined);
        }
        let hrv = if p.rr_intervals_ms.is_empty() {
            None
        } else {
            match hrv_window {
                HrvWindow::Reading => hrv::time_domain(&cleaned.nn, &cleaned.joined),
                HrvWindow::Rolling => hrv::time_domain(&state.nn, &state.joined),
            }
        };
        let artefacts = if p.rr_intervals_ms.is_empty() {
            0.0
        } else {
            cleaned.rejected() as f64 / p.rr_intervals_ms.len() as f64
        };
        if !p.rr_intervals_ms.is_empty() && cleaned.nn.is_empty() {
            dropped.push(format!(
                "rr_intervals_ms (all {} rejected as artefacts)",
                p.rr_intervals_ms.len()
            ));
        }
        let reported_hr = match p.heart_rate_bpm {
            Some(hr) if (25.0..=250.0).contains(&hr) => Some(hr),
            Some(hr) => {
                dropped.push(format!("heart_rate (implausible: {hr})"));
                None
            }
            None => None,
        };
        match hrv {
            Some(t) if t.n >= 3 || reported_hr.is_none() => {
                values[Channel::HeartRate.index()] = Some(t.mean_hr_bpm());
                quality[Channel::HeartRate.index()] = (t.n as f64 / 3.0).min(1.0);
                if let Some(rmssd) = t.rmssd_ms.filter(|_| t.n_diffs >= 5) {
                    values[Channel::LnRmssd.index()] = Some(rmssd.max(1.0).ln());
                    quality[Channel::LnRmssd.index()] =
                        (t.n_diffs as f64 / 30.0).min(1.0) * (1.0 - artefacts);
                }
            }
            _ => {
                if let Some(hr) = reported_hr {
                    values[Channel::HeartRate.index()] = Some(hr);
                    quality[Channel::HeartRate.index()] = 0.8;
                }
            }
        }

        // Skin.
        let eda = if p.skin_conductance_us.len() >= 2 {
            let rate = p.eda_sample_rate_hz.unwrap_or(1.0);
            // The reading's timestamp is the end of its window.
            let span_ms = (p.skin_conductance_us.len() as f64 / rate * 1000.0).round() as i64;
            let (f, carry) = eda::analyze_continued(
                state.eda_carry.as_ref(),
                &p.skin_conductance_us,
                rate,
                settings.scr_min_amplitude_us,
                ts_ms.saturating_sub(span_ms),
            );
            state.eda_carry = Some(carry);
            if f.scl_us < 0.05 {
                dropped.push(format!(
                    "skin_conductance (level {:.3} µS: no skin contact)",
                    f.scl_us
                ));
                None
            } else {
                let q = (f.duration_s / 60.0).min(1.0);
                values[Channel::LnScl.index()] = Some(f.scl_us.ln());
                quality[Channel::LnScl.index()] = q.max(0.2);
                if f.duration_s >= 10.0 {
                    values[Channel::ScrRate.index()] = Some(f.scr_rate_per_min());
                    quality[Channel::ScrRate.index()] = q;
                }
                Some(f)
            }
        } else {
            if p.skin_conductance_us.len() == 1 {
                dropped.push("skin_conductance (a single sample)".into());
            }
            None
        };

        match p.breathing_rate_bpm {
            Some(b) if (3.0..=70.0).contains(&b) => {
                values[Channel::Breathing.index()] = Some(b);
                quality[Channel::Breathing.index()] = 1.0;
            }
            Some(b) => dropped.push(format!("breathing_rate (implausible: {b})")),
            None => {}
        }
        match p.skin_temperature_c {
            Some(t) if (20.0..=42.0).contains(&t) => {
                values[Channel::SkinTemp.index()] = Some(t);
                quality[Channel::SkinTemp.index()] = 1.0;
            }
            Some(t) => dropped.push(format!("skin_temperature (implausible: {t})")),
            None => {}
        }

        if values.iter().all(Option::is_none) {
            state.last_ts_ms = Some(ts_ms);
            return Err(format!(
                "no usable measurement in this reading: {}",
                if dropped.is_empty() {
                    "nothing to read".to_owned()
                } else {
                    dropped.join("; ")
                }
            ));
        }

        // Against the wearer's baseline.
        let mut z = [None; Channel::COUNT];
        let (mut zs, mut ws, mut za, mut wa) = (0.0, 0.0, 0.0, 0.0);
        let (mut warm, mut warm_w) = (0.0, 0.0);
        let mut baselines = [None; Channel::COUNT];
        for ch in Channel::ALL {
            let i = ch.index();
            let Some(x) = values[i] else { continue };
            let prior = ch.prior();
            let b = state.stats[i].baseline(&prior);
            let zi = b.z(x);
            z[i] = Some(zi);
            baselines[i] = Some(b);
            let trust = quality[i] * (prior.informative + (1.0 - prior.informative) * b.warmth);
            zs += STRESS_WEIGHTS[i] * trust * DIRECTION[i] * zi;
            ws += STRESS_WEIGHTS[i] * trust;
            za += AROUSAL_WEIGHTS[i] * trust * DIRECTION[i] * zi;
            wa += AROUSAL_WEIGHTS[i] * trust;
            warm += STRESS_WEIGHTS[i] * b.warmth;
            warm_w += STRESS_WEIGHTS[i];
        }
        let warmth = if warm_w > 0.0 { warm / warm_w } else { 0.0 };
        // A departure from population norms says less than one from one's
        // own baseline: shrink towards "as usual" while the baseline is cold.
        let shrink = 0.75 + 0.25 * warmth;
        let z_stress = if ws > 0.0 { shrink * zs / ws } else { 0.0 };
        let z_arousal = if wa > 0.0 { shrink * za / wa } else { 0.0 };
        let stress_index = logistic(1.6 * z_stress - 1.0);
        let arousal = logistic(1.3 * z_arousal - 0.6);
        let valence = (0.1 - 0.55 * (stress_index - 0.27)).clamp(-0.35, 0.2);
        let label = if stress_index >= 0.7 {
            Label::Stress
        } else if stress_index >= 0.5 {
            Label::Anxiety
        } else if arousal >= 0.62 {
            Label::Excitement
        } else if arousal < 0.42 && stress_index < 0.35 {
            Label::Calm
        } else {
            Label::Neutral
        };

        // Learn: seconds of signal this reading covers.
        let covered_s = (rr_sum_ms / 1000.0)
            .max(eda.as_ref().map_or(0.0, |f| f.duration_s))
            .max(dt_ms.map_or(5.0, |dt| (dt as f64 / 1000.0).clamp(1.0, 10.0)))
            .clamp(1.0, 300.0);
        for ch in Channel::ALL {
            let i = ch.index();
            if let (Some(x), Some(b)) = (values[i], baselines[i]) {
                state.stats[i].update(x, covered_s, &b);
            }
        }
        state.last_ts_ms = Some(ts_ms);

        // Confidence: signal coverage and length, and how personal the
        // baselines are.
        let cardiac = match hrv {
            Some(t) if t.n_diffs >= 2 => (t.n as f64 / 60.0).min(1.0) * (1.0 - artefacts),
            _ if values[Channel::HeartRate.index()].is_some() => 0.4,
            _ => 0.0,
        };
        let skin = eda.as_ref().map_or(0.0, |f| (f.duration_s / 60.0).min(1.0));
        let signal = 0.45 * cardiac
            + 0.35 * skin
            + 0.1 * f64::from(u8::from(values[Channel::Breathing.index()].is_some()))
            + 0.1 * f64::from(u8::from(values[Channel::SkinTemp.index()].is_some()));
        let q = signal * (0.35 + 0.65 * warmth);
        let (lo, hi) = confidence_range(source);
        Ok(Assessment {
            label,
            valence,
            arousal,
            confidence: lo + (hi - lo) * q.clamp(0.0, 1.0),
            stress_index,
            hrv,
            hrv_window,
            rejected_beats: cleaned.rejected(),
            eda,
            values,
            z,
            warmth,
            dropped,
        })
    }
}

/// Keep the last minute (and at most [`MAX_BUFFERED_BEATS`]) of intervals.
fn trim_window(nn: &mut Vec<f64>, joined: &mut Vec<bool>) {
    let mut span = 0.0;
    let mut keep = 0;
    for &x in nn.iter().rev() {
        if keep == MAX_BUFFERED_BEATS || span + x > HRV_WINDOW_MS {
            break;
        }
        span += x;
        keep += 1;
    }
    let cut = nn.len() - keep;
    nn.drain(..cut);
    joined.drain(..cut);
}

/// The gateway's confidence range for the source, within this plugin's
/// 0.85–0.98 (`biometric` producers report 0.90–0.99 in the gateway).
pub fn confidence_range(source: Source) -> (f64, f64) {
    match source {
        Source::Biometric => (0.90, 0.98),
        _ => (0.85, 0.98),
    }
}

/// Reject what cannot be read: non-finite or negative numbers, skin
/// conductance without a usable sample rate, an empty reading.
pub fn validate(p: &Physiological) -> Result<(), String> {
    if let Some(hr) = p.heart_rate_bpm
        && !(hr.is_finite() && hr > 0.0)
    {
        return Err(format!(
            "heart_rate must be a positive number of bpm, got {hr}"
        ));
    }
    if let Some((i, x)) = p
        .rr_intervals_ms
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x > 0.0))
    {
        return Err(format!(
            "rr_intervals_ms entry {i} must be a positive number of ms, got {x}"
        ));
    }
    if !p.skin_conductance_us.is_empty() {
        eda::validate(&p.skin_conductance_us, p.eda_sample_rate_hz)?;
    }
    if let Some(b) = p.breathing_rate_bpm
        && !(b.is_finite() && b >= 0.0)
    {
        return Err(format!(
            "breathing_rate must be a non-negative number of breaths per minute, got {b}"
        ));
    }
    if let Some(t) = p.skin_temperature_c
        && !t.is_finite()
    {
        return Err(format!("skin_temperature must be a number of °C, got {t}"));
    }
    if p.heart_rate_bpm.is_none()
        && p.rr_intervals_ms.is_empty()
        && p.skin_conductance_us.is_empty()
        && p.breathing_rate_bpm.is_none()
        && p.skin_temperature_c.is_none()
    {
        return Err(
            "empty reading: no heart_rate, rr_intervals_ms, skin_conductance, breathing_rate or skin_temperature"
                .into(),
        );
    }
    Ok(())
}

/// A JSON object writer for the extra fields (numbers are finite here; a
/// non-finite one is written as null all the same).
struct Obj(String);

impl Obj {
    fn new() -> Self {
        let mut s = String::with_capacity(160);
        s.push('{');
        Obj(s)
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(k);
        self.0.push_str("\":");
    }

    fn num(&mut self, k: &str, x: f64, decimals: u32) -> &mut Self {
        self.key(k);
        json::push_fixed(&mut self.0, x, decimals);
        self
    }

    fn opt(&mut self, k: &str, x: Option<f64>, decimals: u32) -> &mut Self {
        if let Some(x) = x {
            self.num(k, x, decimals);
        }
        self
    }

    fn raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.key(k);
        self.0.push_str(json);
        self
    }

    fn done(&mut self) -> String {
        self.0.push('}');
        std::mem::take(&mut self.0)
    }
}

impl Assessment {
    /// The emotion, with the stress index, HRV, EDA and baseline figures in
    /// its extra fields.
    pub fn to_emotion(&self) -> Emotion {
        let mut e = Emotion::new(self.valence, self.arousal, self.confidence);
        e.label = Some(self.label);
        // One object text for every field (the host parses it once).
        e.extra.reserve(512);
        e.push_extra_with("stress_index", |o| {
            json::push_fixed(o, self.stress_index, 3)
        });
        if let Some(hr) = self.values[Channel::HeartRate.index()] {
            e.push_extra_with("heart_rate_bpm", |o| json::push_fixed(o, hr, 1));
        }
        if let Some(t) = &self.hrv {
            let mut o = Obj::new();
            o.num("mean_nn_ms", t.mean_nn_ms, 1)
                .opt("sdnn_ms", t.sdnn_ms, 2)
                .opt("rmssd_ms", t.rmssd_ms, 2)
                .opt("pnn50_pct", t.pnn50_pct, 2)
                .num("nn_count", t.n as f64, 0)
                .num("diff_count", t.n_diffs as f64, 0)
                .num("rejected_beats", self.rejected_beats as f64, 0)
                .raw(
                    "window",
                    match self.hrv_window {
                        HrvWindow::Reading => "\"reading\"",
                        HrvWindow::Rolling => "\"rolling_60s\"",
                    },
                );
            e.push_extra("hrv", &o.done());
        }
        if let Some(f) = &self.eda {
            let mut o = Obj::new();
            o.num("scl_us", f.scl_us, 3)
                .num("scr_count", f.scrs.len() as f64, 0)
                .num("scr_per_min", f.scr_rate_per_min(), 2)
                .opt("scr_mean_amplitude_us", f.mean_amplitude_us(), 3)
                .num("scr_threshold_us", f.threshold_us, 4)
                .num("noise_us", f.noise_us, 4)
                .num("duration_s", f.duration_s, 1);
            e.push_extra("eda", &o.done());
        }
        let mut zs = Obj::new();
        for ch in Channel::ALL {
            zs.opt(ch.name(), self.z[ch.index()], 2);
        }
        let mut b = Obj::new();
        b.num("warmth", self.warmth, 2).raw("z", &zs.done());
        e.push_extra("baseline", &b.done());
        if !self.dropped.is_empty() {
            let list: Vec<String> = self
                .dropped
                .iter()
                .map(|d| Value::String(d.clone()).to_string())
                .collect();
            e.push_extra("dropped", &format!("[{}]", list.join(",")));
        }
        e
    }
}

#[cfg(test)]
mod tests;
