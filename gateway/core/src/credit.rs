//! Credit/risk summaries: what the central credit system may learn about a
//! user's emotional pattern, per window of days, with the adjustment of the
//! original system's credit impact table and its reasons in words.
//!
//! Pure: no I/O, no clock. The analyzer feeds every event into a per-user
//! [`CreditHistory`] (O(1) per event) and [`CreditHistory::summarize`] builds a
//! [`CreditSummary`] for a window in O(days) when asked, with `now` passed in.
//!
//! # Days and windows
//!
//! Events are counted on the UTC calendar day of `min(timestamp, ingested_at)`:
//! when the emotion happened, but never later than when the gateway received it
//! (a sender's clock running ahead cannot place an event in the future). A
//! window of `w` days ending at `now` covers the `w` UTC days up to and
//! including the day of `now` (so a 7-day window is six full days plus today so
//! far). Windows are clamped to `1..=`[`HISTORY_DAYS`]; a user's history keeps
//! the [`HISTORY_DAYS`] days up to their newest event, and an event older than
//! that when it arrives is not counted. The default windows are 7 and 30 days.
//!
//! # Aggregates
//!
//! Over the events of the window: `event_count`; `avg_valence`, `avg_arousal`
//! (means; `None` without events); `stability_score` = `1 − min((σv + σa)/2, 1)`
//! with population standard deviations, the analyzer's formula (1.0 with fewer
//! than two events); `avg_stress_level` (below); and `risk_score`, the
//! analyzer's formula ([`crate::analyzer::risk_from_aggregates`]) applied to
//! the window: stress (mean valence < −0.4 and mean arousal > 0.6) +0.4 or
//! depressive pattern (mean valence < −0.5, mean arousal < 0.3) +0.5;
//! volatility (σ valence > 0.6 or σ arousal > 0.5) +0.3; stability < 0.3 +0.2;
//! +0.1 per high-severity anomaly the analyzer found among the window's events,
//! at most +0.3; capped at 1.
//!
//! # Stress level
//!
//! The stress of one event is its position along Russell's *distress*
//! direction of the circumplex (135°: unpleasant and activated), scaled to
//! [0, 1]:
//!
//! ```text
//! stress(v, a) = max(0, ((2a − 1) − v) / 2)
//! ```
//!
//! where `2a − 1` puts arousal on the same [−1, 1] scale as valence. It is 1 at
//! the most distressed corner (v = −1, a = 1), 0 anywhere on the pleasant or
//! calm side of the line through the neutral centre (0, 0.5) perpendicular to
//! that direction, and 0.35 at the corner of the analyzer's high-stress region
//! (v = −0.3, a = 0.7). On the label table: stress 0.60, fear 0.57, anger 0.46,
//! disgust 0.49, anxiety 0.42, sadness 0.19, joy and calm 0. This replaces the
//! original's label count ("share of events labelled anxiety or stress-like")
//! with a continuous measure that also works for events that carry only
//! coordinates. `avg_stress_level` is its mean over the window's events.
//!
//! # Patterns (evaluated only with at least [`MIN_EVENTS`] events, except the crisis)
//!
//! - `emotional_crisis` — either (a) *acute distress*: in the last
//!   [`CRISIS_RECENT_DAYS`] days of the window at least [`CRISIS_MIN_ACUTE`]
//!   events, and at least half of those days' events, are acute (stress ≥
//!   [`ACUTE_STRESS`] or valence ≤ [`ACUTE_DESPAIR_VALENCE`]); or (b) with at
//!   least [`MIN_EVENTS`] events, the window's risk score reaches the
//!   analyzer's flag threshold (0.7).
//! - `chronic_stress` — `avg_stress_level` ≥ [`CHRONIC_STRESS_LEVEL`], on at
//!   least [`CHRONIC_MIN_DAYS`] active days, and on at least half of the active
//!   days the day's own average stress is ≥ [`CHRONIC_STRESS_LEVEL`] (stress
//!   that persists, not one bad afternoon).
//! - `emotional_volatility` — σ valence > 0.6 or σ arousal > 0.5 over the
//!   window (the analyzer's volatility rule).
//! - `recovery` — at least [`RECOVERY_MIN_DAYS`] active days; splitting them
//!   into the earlier ⌊k/2⌋ and the later ⌈k/2⌉, the earlier part's mean
//!   valence is ≤ [`RECOVERY_EARLY_VALENCE`], the later part's is at least
//!   [`RECOVERY_GAIN`] higher, and the later part's average stress is below
//!   [`CHRONIC_STRESS_LEVEL`].
//! - `high_stability` — `stability_score` ≥ [`HIGH_STABILITY`].
//!
//! Patterns are listed in that order; every pattern that holds is listed, even
//! when the precedence below waives its adjustment.
//!
//! # Adjustment and action (the original's credit impact table)
//!
//! The first rule that applies decides:
//!
//! 1. `emotional_crisis` → action `delay_and_support`, adjustment **0 %**:
//!    processing is delayed and support offered; a crisis is never penalized,
//!    so it overrides every penalty (each waived one is named in the reasons).
//! 2. fewer than [`MIN_EVENTS`] events → `insufficient_data`, 0 %.
//! 3. `recovery` → `standard_rates`, 0 %: a recovering user gets standard
//!    rates; the volatility a recovery itself produces, and earlier stress,
//!    are not penalized (waived penalties are named), nor is a discount given.
//! 4. penalties, added up: `emotional_volatility` +10 %, `chronic_stress`
//!    +15 % (both: +25 %) → `premium`. A user who is also highly stable gets no
//!    discount then (a steady state of stress is not a merit).
//! 5. `high_stability` → `discount`, −5 %, unless the window's average stress
//!    level is at or above [`CHRONIC_STRESS_LEVEL`] (stress on too few days to
//!    count as chronic still earns no discount): then `standard_rates`, 0 %.
//! 6. nothing → `standard_rates`, 0 %.
//!
//! Every summary carries at least one reason, and every non-zero adjustment,
//! waived adjustment and the decision itself is explained in words with the
//! numbers that triggered it.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analyzer::risk::{FLAG_THRESHOLD, RiskInputs, risk_from_aggregates};
use crate::analyzer::state::regions;
use crate::analyzer::trajectory::stability;
use crate::num::round3;

/// Days of history kept per user, and the longest window.
pub const HISTORY_DAYS: u32 = 30;
/// The windows summaries are computed for unless configured otherwise.
pub const DEFAULT_WINDOWS: [u32; 2] = [7, 30];
/// Fewest events in a window for any pattern but the crisis, and for an adjustment.
pub const MIN_EVENTS: u64 = 5;
/// `high_stability`: stability score at or above this.
pub const HIGH_STABILITY: f64 = 0.8;
/// `chronic_stress`: average stress level (window and day) at or above this;
/// the stress of the corner of the high-stress region (v = −0.3, a = 0.7).
pub const CHRONIC_STRESS_LEVEL: f64 = 0.35;
/// `chronic_stress`: fewest active days.
pub const CHRONIC_MIN_DAYS: usize = 3;
/// `recovery`: fewest active days.
pub const RECOVERY_MIN_DAYS: usize = 3;
/// `recovery`: the earlier part's mean valence at or below this.
pub const RECOVERY_EARLY_VALENCE: f64 = -0.2;
/// `recovery`: the later part's mean valence at least this much higher.
pub const RECOVERY_GAIN: f64 = 0.3;
/// `emotional_crisis`: days (today included) the acute-distress rule looks at.
pub const CRISIS_RECENT_DAYS: u32 = 3;
/// `emotional_crisis`: fewest acute events in those days.
pub const CRISIS_MIN_ACUTE: u64 = 3;
/// An event is acute distress at or above this stress level…
pub const ACUTE_STRESS: f64 = 0.8;
/// …or at or below this valence (despair, whatever the arousal).
pub const ACUTE_DESPAIR_VALENCE: f64 = -0.85;
/// Risk-premium adjustments of the credit impact table, in percent.
pub const PCT_HIGH_STABILITY: f64 = -5.0;
pub const PCT_VOLATILITY: f64 = 10.0;
pub const PCT_CHRONIC_STRESS: f64 = 15.0;

const SECS_PER_DAY: i64 = 86_400;

/// The stress level of one event, in [0, 1] (see the module docs).
pub fn stress_level(valence: f64, arousal: f64) -> f64 {
    (((2.0 * arousal - 1.0) - valence) / 2.0).clamp(0.0, 1.0)
}

/// Acute distress, the event-level crisis indicator (see the module docs).
pub fn is_acute(valence: f64, arousal: f64) -> bool {
    stress_level(valence, arousal) >= ACUTE_STRESS || valence <= ACUTE_DESPAIR_VALENCE
}

/// A credit-relevant pattern of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditPattern {
    EmotionalCrisis,
    ChronicStress,
    EmotionalVolatility,
    Recovery,
    HighStability,
}

impl CreditPattern {
    pub const fn as_str(self) -> &'static str {
        match self {
            CreditPattern::EmotionalCrisis => "emotional_crisis",
            CreditPattern::ChronicStress => "chronic_stress",
            CreditPattern::EmotionalVolatility => "emotional_volatility",
            CreditPattern::Recovery => "recovery",
            CreditPattern::HighStability => "high_stability",
        }
    }
}

impl fmt::Display for CreditPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the credit system should do with the user's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditAction {
    /// No adjustment (0 %).
    StandardRates,
    /// A lower risk premium (negative adjustment).
    Discount,
    /// A higher risk premium (positive adjustment).
    Premium,
    /// Crisis indicators: delay processing and offer support; never a premium.
    DelayAndSupport,
    /// Too few events in the window to judge; standard rates.
    InsufficientData,
}

impl CreditAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            CreditAction::StandardRates => "standard_rates",
            CreditAction::Discount => "discount",
            CreditAction::Premium => "premium",
            CreditAction::DelayAndSupport => "delay_and_support",
            CreditAction::InsufficientData => "insufficient_data",
        }
    }
}

impl fmt::Display for CreditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user's credit/risk summary over one window (a row of the central
/// `credit_risk_summaries` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditSummary {
    pub user_id: String,
    /// The window actually used (requested value clamped to 1..=30).
    pub window_days: u32,
    pub event_count: u64,
    /// Mean valence in [−1, 1]; `None` without events.
    pub avg_valence: Option<f64>,
    /// Mean arousal in [0, 1]; `None` without events.
    pub avg_arousal: Option<f64>,
    /// In [0, 1]; 1.0 with fewer than two events.
    pub stability_score: f64,
    /// Mean stress level in [0, 1]; `None` without events.
    pub avg_stress_level: Option<f64>,
    pub patterns: Vec<CreditPattern>,
    /// In [0, 1].
    pub risk_score: f64,
    /// Risk-premium adjustment in percent: −5, 0, +10, +15 or +25.
    pub risk_premium_adjustment_pct: f64,
    pub action: CreditAction,
    /// Why, in words: every adjustment, every waived adjustment, the decision.
    pub reasons: Vec<String>,
    /// The `now` the summary was computed for.
    pub computed_at: DateTime<Utc>,
}

/// The aggregates of one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct DayBucket {
    /// Days since the Unix epoch (UTC).
    day: i64,
    count: u64,
    sum_v: f64,
    sum_a: f64,
    sq_v: f64,
    sq_a: f64,
    sum_stress: f64,
    /// Events in the analyzer's high-stress region.
    high_stress: u64,
    /// Acute-distress events (crisis indicator).
    acute: u64,
    /// Events the analyzer judged high-severity anomalies.
    high_anomalies: u64,
}

impl DayBucket {
    fn new(day: i64) -> Self {
        DayBucket {
            day,
            ..Default::default()
        }
    }

    fn add(&mut self, v: f64, a: f64, high_anomaly: bool) {
        self.count += 1;
        self.sum_v += v;
        self.sum_a += a;
        self.sq_v += v * v;
        self.sq_a += a * a;
        self.sum_stress += stress_level(v, a);
        self.high_stress += u64::from(regions::high_stress(v, a));
        self.acute += u64::from(is_acute(v, a));
        self.high_anomalies += u64::from(high_anomaly);
    }

    fn merge(&mut self, o: &DayBucket) {
        self.count += o.count;
        self.sum_v += o.sum_v;
        self.sum_a += o.sum_a;
        self.sq_v += o.sq_v;
        self.sq_a += o.sq_a;
        self.sum_stress += o.sum_stress;
        self.high_stress += o.high_stress;
        self.acute += o.acute;
        self.high_anomalies += o.high_anomalies;
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            sum / self.count as f64
        }
    }

    fn std(&self, sum: f64, sq: f64) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let m = self.mean(sum);
        (sq / self.count as f64 - m * m).max(0.0).sqrt()
    }
}

/// One UTC day of a user's history, for reports (see
/// [`CreditHistory::daily`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayAggregate {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: chrono::NaiveDate,
    pub events: u64,
    pub avg_valence: f64,
    pub avg_arousal: f64,
    /// Mean stress level (see the module docs).
    pub avg_stress_level: f64,
    /// Events in the analyzer's high-stress region.
    pub high_stress_events: u64,
    /// Acute-distress events (the crisis indicator).
    pub acute_events: u64,
    /// Events the analyzer judged high-severity anomalies.
    pub high_severity_anomalies: u64,
}

/// One user's daily aggregates for the last [`HISTORY_DAYS`] days.
///
/// Sparse: only days with events are stored, oldest first, so a user seen on
/// one day costs one bucket. Adding an event is O(1) (amortized) for events in
/// order, O(log days) for a late one; a summary is O(days).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreditHistory {
    days: VecDeque<DayBucket>,
}

fn day_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(SECS_PER_DAY)
}

impl CreditHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether decoded history keeps the invariants `record` relies on: days
    /// strictly increasing, spanning less than [`HISTORY_DAYS`], each the day
    /// of a representable timestamp.
    pub(crate) fn is_well_formed(&self) -> bool {
        let ordered = self
            .days
            .iter()
            .zip(self.days.iter().skip(1))
            .all(|(a, b)| a.day < b.day);
        // Days of representable timestamps, so that no day arithmetic overflows.
        let min_day = day_of(DateTime::<Utc>::MIN_UTC);
        let max_day = day_of(DateTime::<Utc>::MAX_UTC);
        let span = match (self.days.front(), self.days.back()) {
            (Some(f), Some(l)) => {
                f.day >= min_day && l.day <= max_day && l.day - f.day < i64::from(HISTORY_DAYS)
            }
            _ => true,
        };
        ordered && span
    }

    /// True when no day is stored.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// The newest day with events, as the start of that UTC day.
    pub fn last_active(&self) -> Option<DateTime<Utc>> {
        self.days
            .back()
            .and_then(|b| DateTime::from_timestamp(b.day.saturating_mul(SECS_PER_DAY), 0))
    }

    /// Count one event at `at` (the caller passes `min(timestamp, ingested_at)`).
    /// `high_anomaly`: the analyzer judged it a high-severity anomaly.
    pub fn record(&mut self, at: DateTime<Utc>, valence: f64, arousal: f64, high_anomaly: bool) {
        let day = day_of(at);
        let horizon = i64::from(HISTORY_DAYS);
        match self.days.back_mut() {
            Some(last) if last.day == day => last.add(valence, arousal, high_anomaly),
            Some(last) if day < last.day => {
                // A late event: too old for the history, or into its day's bucket.
                if day <= last.day - horizon {
                    return;
                }
                match self.days.binary_search_by_key(&day, |b| b.day) {
                    Ok(i) => {
                        if let Some(b) = self.days.get_mut(i) {
                            b.add(valence, arousal, high_anomaly);
                        }
                    }
                    Err(i) => {
                        let mut b = DayBucket::new(day);
                        b.add(valence, arousal, high_anomaly);
                        self.days.insert(i, b);
                    }
                }
            }
            _ => {
                let mut b = DayBucket::new(day);
                b.add(valence, arousal, high_anomaly);
                self.days.push_back(b);
                while self.days.front().is_some_and(|f| f.day <= day - horizon) {
                    self.days.pop_front();
                }
            }
        }
    }

    /// The days with events among the `window_days` days ending with the day
    /// of `now` (clamped like [`CreditHistory::summarize`]), oldest first.
    /// O(days).
    pub fn daily(&self, now: DateTime<Utc>, window_days: u32) -> Vec<DayAggregate> {
        let w = window_days.clamp(1, HISTORY_DAYS);
        let today = day_of(now);
        let first = today - i64::from(w) + 1;
        self.days
            .iter()
            .filter(|b| (first..=today).contains(&b.day))
            .filter_map(|b| {
                let date =
                    DateTime::from_timestamp(b.day.saturating_mul(SECS_PER_DAY), 0)?.date_naive();
                Some(DayAggregate {
                    date,
                    events: b.count,
                    avg_valence: round3(b.mean(b.sum_v)),
                    avg_arousal: round3(b.mean(b.sum_a)),
                    avg_stress_level: round3(b.mean(b.sum_stress)),
                    high_stress_events: b.high_stress,
                    acute_events: b.acute,
                    high_severity_anomalies: b.high_anomalies,
                })
            })
            .collect()
    }

    /// The summary of the `window_days` days ending with the day of `now`.
    pub fn summarize(&self, user_id: &str, now: DateTime<Utc>, window_days: u32) -> CreditSummary {
        let w = window_days.clamp(1, HISTORY_DAYS);
        let today = day_of(now);
        let first = today - i64::from(w) + 1;
        let days: Vec<&DayBucket> = self
            .days
            .iter()
            .filter(|b| (first..=today).contains(&b.day))
            .collect();
        let mut total = DayBucket::new(today);
        for b in &days {
            total.merge(b);
        }
        let recent_first = today - i64::from(CRISIS_RECENT_DAYS) + 1;
        let mut recent = DayBucket::new(today);
        for b in days.iter().filter(|b| b.day >= recent_first) {
            recent.merge(b);
        }
        judge(user_id, now, w, &days, &total, &recent)
    }
}

/// Everything measured over a window, before the table is applied.
struct Measures {
    n: u64,
    mean_v: f64,
    mean_a: f64,
    std_v: f64,
    std_a: f64,
    stability: f64,
    stress: f64,
    risk: crate::analyzer::risk::RiskScore,
}

fn fmt_pct(p: f64) -> String {
    if p > 0.0 {
        format!("+{p:.0} %")
    } else if p < 0.0 {
        format!("−{:.0} %", -p)
    } else {
        "0 %".into()
    }
}

/// Signed number with a true minus sign, for reasons.
fn num(x: f64) -> String {
    if x < 0.0 {
        format!("−{:.2}", -x)
    } else {
        format!("{x:.2}")
    }
}

/// Apply the credit impact table to one window: measure it, find its
/// patterns, then decide the adjustment, explaining every step in words.
fn judge(
    user_id: &str,
    now: DateTime<Utc>,
    w: u32,
    days: &[&DayBucket],
    total: &DayBucket,
    recent: &DayBucket,
) -> CreditSummary {
    let window = Window {
        m: measure(total),
        w,
        days,
        total,
        recent,
        span: if w == 1 {
            "today".to_owned()
        } else {
            format!("the last {w} days")
        },
    };
    let found = window.find_patterns();
    let penalties = window.penalties(&found);
    let mut reasons: Vec<String> = Vec::new();
    let (pct, action) = window.decide(&found, &penalties, &mut reasons);

    let m = &window.m;
    let avg = |x: f64| (m.n > 0).then(|| round3(x));
    CreditSummary {
        user_id: user_id.to_owned(),
        window_days: w,
        event_count: m.n,
        avg_valence: avg(m.mean_v),
        avg_arousal: avg(m.mean_a),
        stability_score: round3(m.stability),
        avg_stress_level: avg(m.stress),
        patterns: found.patterns(),
        risk_score: m.risk.score,
        risk_premium_adjustment_pct: pct,
        action,
        reasons,
        computed_at: now,
    }
}

/// Means, spreads, stability, stress and the analyzer's risk score of a window.
fn measure(total: &DayBucket) -> Measures {
    let n = total.count;
    let std_v = total.std(total.sum_v, total.sq_v);
    let std_a = total.std(total.sum_a, total.sq_a);
    let stab = if n < 2 { 1.0 } else { stability(std_v, std_a) };
    Measures {
        n,
        mean_v: total.mean(total.sum_v),
        mean_a: total.mean(total.sum_a),
        std_v,
        std_a,
        stability: stab,
        stress: total.mean(total.sum_stress),
        risk: risk_from_aggregates(&RiskInputs {
            count: usize::try_from(n).unwrap_or(usize::MAX),
            mean_valence: total.mean(total.sum_v),
            mean_arousal: total.mean(total.sum_a),
            std_valence: std_v,
            std_arousal: std_a,
            stability: stab,
            high_anomalies: usize::try_from(total.high_anomalies).unwrap_or(usize::MAX),
        }),
    }
}

/// One window being judged.
struct Window<'a> {
    m: Measures,
    w: u32,
    /// Its active days, oldest first.
    days: &'a [&'a DayBucket],
    total: &'a DayBucket,
    /// The last [`CRISIS_RECENT_DAYS`] days of it.
    recent: &'a DayBucket,
    /// "today" or "the last N days", for reasons.
    span: String,
}

/// The patterns a window shows.
struct Found {
    /// Acute distress in the recent days.
    acute_crisis: bool,
    /// The risk score reaches the flag threshold.
    flagged: bool,
    /// Enough events to judge anything but a crisis.
    enough: bool,
    /// Chronic stress, with its number of stressed days.
    chronic: Option<usize>,
    volatile: bool,
    recovery: Option<Recovery>,
    high_stability: bool,
}

/// A recovery: the earlier active days against the later ones.
struct Recovery {
    early_days: usize,
    late_days: usize,
    early_valence: f64,
    late_valence: f64,
    late_stress: f64,
}

impl Found {
    fn crisis(&self) -> bool {
        self.acute_crisis || self.flagged
    }

    /// In the table's order.
    fn patterns(&self) -> Vec<CreditPattern> {
        [
            (self.crisis(), CreditPattern::EmotionalCrisis),
            (self.chronic.is_some(), CreditPattern::ChronicStress),
            (self.volatile, CreditPattern::EmotionalVolatility),
            (self.recovery.is_some(), CreditPattern::Recovery),
            (self.high_stability, CreditPattern::HighStability),
        ]
        .into_iter()
        .filter_map(|(holds, p)| holds.then_some(p))
        .collect()
    }
}

impl Window<'_> {
    fn find_patterns(&self) -> Found {
        let (m, days, recent) = (&self.m, self.days, self.recent);
        let enough = m.n >= MIN_EVENTS;
        // Crisis indicators are judged even with few events (safety first).
        let mut found = Found {
            acute_crisis: recent.acute >= CRISIS_MIN_ACUTE && recent.acute * 2 >= recent.count,
            flagged: enough && m.risk.score >= FLAG_THRESHOLD,
            enough,
            chronic: None,
            volatile: false,
            recovery: None,
            high_stability: false,
        };
        if !enough {
            return found;
        }
        let stressed_days = days
            .iter()
            .filter(|b| b.mean(b.sum_stress) >= CHRONIC_STRESS_LEVEL)
            .count();
        if m.stress >= CHRONIC_STRESS_LEVEL
            && days.len() >= CHRONIC_MIN_DAYS
            && stressed_days * 2 >= days.len()
        {
            found.chronic = Some(stressed_days);
        }
        found.volatile = regions::volatile(m.std_v, m.std_a);
        found.recovery = self.recovery();
        found.high_stability = m.stability >= HIGH_STABILITY;
        found
    }

    /// Valence rising from a low first half of the active days to a clearly
    /// better, unstressed second half.
    fn recovery(&self) -> Option<Recovery> {
        let days = self.days;
        if days.len() < RECOVERY_MIN_DAYS {
            return None;
        }
        let k_early = days.len() / 2;
        let mut early = DayBucket::default();
        let mut late = DayBucket::default();
        for (i, b) in days.iter().enumerate() {
            if i < k_early {
                early.merge(b);
            } else {
                late.merge(b);
            }
        }
        let (ev, lv) = (early.mean(early.sum_v), late.mean(late.sum_v));
        let ls = late.mean(late.sum_stress);
        (ev <= RECOVERY_EARLY_VALENCE && lv - ev >= RECOVERY_GAIN && ls < CHRONIC_STRESS_LEVEL)
            .then_some(Recovery {
                early_days: k_early,
                late_days: days.len() - k_early,
                early_valence: ev,
                late_valence: lv,
                late_stress: ls,
            })
    }

    /// The penalty patterns that hold, in words with their premium; used
    /// whether they apply or are waived.
    fn penalties(&self, found: &Found) -> Vec<(String, f64)> {
        let (m, span) = (&self.m, &self.span);
        let mut penalties = Vec::new();
        if let Some(stressed) = found.chronic {
            penalties.push((
                format!(
                    "chronic stress: average stress level {} ≥ {:.2} over {span}, stressed on {stressed} of {} active days, {} of {} events in the high-stress region",
                    num(m.stress),
                    CHRONIC_STRESS_LEVEL,
                    self.days.len(),
                    self.total.high_stress,
                    m.n
                ),
                PCT_CHRONIC_STRESS,
            ));
        }
        if found.volatile {
            penalties.push((
                format!(
                    "emotional volatility: valence σ {} (limit 0.60) and arousal σ {} (limit 0.50) over {span}",
                    num(m.std_v),
                    num(m.std_a)
                ),
                PCT_VOLATILITY,
            ));
        }
        penalties
    }

    /// The adjustment and action, in the table's order of precedence:
    /// crisis, too little data, recovery, penalties, stability.
    fn decide(
        &self,
        found: &Found,
        penalties: &[(String, f64)],
        reasons: &mut Vec<String>,
    ) -> (f64, CreditAction) {
        let (m, span, n) = (&self.m, &self.span, self.m.n);
        if found.crisis() {
            self.crisis(found, penalties, reasons)
        } else if !found.enough {
            reasons.push(format!(
                "only {n} events over {span} (at least {MIN_EVENTS} needed to judge): standard rates (0 %)"
            ));
            (0.0, CreditAction::InsufficientData)
        } else if let Some(r) = &found.recovery {
            self.recovering(r, found.high_stability, penalties, reasons)
        } else if !penalties.is_empty() {
            self.premium(found.high_stability, penalties, reasons)
        } else if found.high_stability && m.stress >= CHRONIC_STRESS_LEVEL {
            // Steady, but steadily stressed (not yet on enough days to be
            // chronic): that is no merit either.
            reasons.push(format!(
                "high stability (stability score {}): {} not applied, the average stress level {} is at or above {:.2}",
                num(m.stability),
                fmt_pct(PCT_HIGH_STABILITY),
                num(m.stress),
                CHRONIC_STRESS_LEVEL
            ));
            (0.0, CreditAction::StandardRates)
        } else if found.high_stability {
            reasons.push(format!(
                "high stability: stability score {} ≥ {:.2} over {span} ({n} events): risk premium {}",
                num(m.stability),
                HIGH_STABILITY,
                fmt_pct(PCT_HIGH_STABILITY)
            ));
            (PCT_HIGH_STABILITY, CreditAction::Discount)
        } else {
            reasons.push(format!(
                "no pattern of the credit impact table over {span} ({n} events, stability score {}, stress level {}): standard rates (0 %)",
                num(m.stability),
                num(m.stress)
            ));
            (0.0, CreditAction::StandardRates)
        }
    }

    /// A crisis: support, never a penalty; every waived adjustment named.
    fn crisis(
        &self,
        found: &Found,
        penalties: &[(String, f64)],
        reasons: &mut Vec<String>,
    ) -> (f64, CreditAction) {
        let (m, span, recent) = (&self.m, &self.span, self.recent);
        if found.acute_crisis {
            reasons.push(format!(
                "emotional crisis: {} of {} events in the last {} days show acute distress (stress level ≥ {:.2} or valence ≤ {})",
                recent.acute,
                recent.count,
                CRISIS_RECENT_DAYS.min(self.w),
                ACUTE_STRESS,
                num(ACUTE_DESPAIR_VALENCE)
            ));
        }
        if found.flagged {
            reasons.push(format!(
                "emotional crisis: risk score {} over {span} reaches the flag threshold {:.2} ({})",
                num(m.risk.score),
                FLAG_THRESHOLD,
                m.risk.factors.join("; ")
            ));
        }
        for (words, p) in penalties {
            reasons.push(format!(
                "{words}: {} waived, a crisis is never penalized",
                fmt_pct(*p)
            ));
        }
        if found.high_stability {
            reasons.push(format!(
                "high stability (stability score {}): {} not applied during a crisis",
                num(m.stability),
                fmt_pct(PCT_HIGH_STABILITY)
            ));
        }
        reasons.push(
            "crisis indicators: processing delayed and support offered, no risk premium (0 %)"
                .to_owned(),
        );
        (0.0, CreditAction::DelayAndSupport)
    }

    /// A recovery: standard rates; the penalties of the period left behind waived.
    fn recovering(
        &self,
        r: &Recovery,
        high_stability: bool,
        penalties: &[(String, f64)],
        reasons: &mut Vec<String>,
    ) -> (f64, CreditAction) {
        reasons.push(format!(
            "recovery: average valence rose from {} (first {} active days) to {} (last {}), stress level now {}: standard rates (0 %)",
            num(r.early_valence),
            r.early_days,
            num(r.late_valence),
            r.late_days,
            num(r.late_stress)
        ));
        for (words, p) in penalties {
            reasons.push(format!(
                "{words}: {} waived, it belongs to the period the user is recovering from",
                fmt_pct(*p)
            ));
        }
        if high_stability {
            reasons.push(format!(
                "high stability (stability score {}): {} not applied during a recovery",
                num(self.m.stability),
                fmt_pct(PCT_HIGH_STABILITY)
            ));
        }
        (0.0, CreditAction::StandardRates)
    }

    /// Penalty patterns: their premiums add up; no stability discount.
    fn premium(
        &self,
        high_stability: bool,
        penalties: &[(String, f64)],
        reasons: &mut Vec<String>,
    ) -> (f64, CreditAction) {
        let mut sum = 0.0;
        for (words, p) in penalties {
            sum += p;
            reasons.push(format!("{words}: risk premium {}", fmt_pct(*p)));
        }
        if high_stability {
            reasons.push(format!(
                "high stability (stability score {}): {} not applied while a penalty pattern holds",
                num(self.m.stability),
                fmt_pct(PCT_HIGH_STABILITY)
            ));
        }
        if penalties.len() > 1 {
            reasons.push(format!("penalties add up: risk premium {}", fmt_pct(sum)));
        }
        (sum, CreditAction::Premium)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::EmotionLabel;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 31, 18, 0, 0)
            .single()
            .expect("valid")
    }

    fn coords(l: EmotionLabel) -> (f64, f64) {
        let c = l.coordinates().expect("placed");
        (c.valence, c.arousal)
    }

    /// `per_day` events on each of the last `days` days, from `f(day, i)`.
    fn scripted(days: i64, per_day: i64, f: impl Fn(i64, i64) -> (f64, f64)) -> CreditHistory {
        let mut h = CreditHistory::new();
        for d in 0..days {
            for i in 0..per_day {
                let at = now() - Duration::days(days - 1 - d) - Duration::minutes(per_day - i);
                let (v, a) = f(d, i);
                h.record(at, v, a, false);
            }
        }
        h
    }

    fn has(reasons: &[String], needle: &str) -> bool {
        reasons.iter().any(|r| r.contains(needle))
    }

    #[test]
    fn stress_level_matches_the_documented_points() {
        assert_eq!(stress_level(-1.0, 1.0), 1.0);
        assert_eq!(stress_level(0.5, 0.3), 0.0);
        assert!((stress_level(-0.3, 0.7) - 0.35).abs() < 1e-12);
        let s = |l| {
            let (v, a) = coords(l);
            round3(stress_level(v, a))
        };
        assert!((s(EmotionLabel::Stress) - 0.60).abs() < 0.01);
        assert!((s(EmotionLabel::Anxiety) - 0.42).abs() < 0.01);
        assert!((s(EmotionLabel::Sadness) - 0.19).abs() < 0.01);
        assert_eq!(s(EmotionLabel::Joy), 0.0);
        assert!(!is_acute(-0.628, 0.787), "the stress label is not acute");
        assert!(is_acute(-0.9, 0.95));
        assert!(is_acute(-0.9, 0.1), "despair");
    }

    #[test]
    fn stable_user_gets_the_high_stability_discount() {
        let (v, a) = coords(EmotionLabel::Contentment);
        let h = scripted(7, 6, |_, i| (v + 0.02 * (i % 3) as f64, a));
        let s = h.summarize("stable", now(), 7);
        assert_eq!(s.event_count, 42);
        assert_eq!(s.patterns, [CreditPattern::HighStability]);
        assert_eq!(s.risk_premium_adjustment_pct, -5.0);
        assert_eq!(s.action, CreditAction::Discount);
        assert!(
            has(&s.reasons, "high stability: stability score"),
            "{:?}",
            s.reasons
        );
        assert!(has(&s.reasons, "−5 %"));
        assert_eq!(s.risk_score, 0.0);
    }

    #[test]
    fn volatile_user_pays_ten_percent() {
        let (jv, ja) = coords(EmotionLabel::Joy);
        let (sv, sa) = coords(EmotionLabel::Sadness);
        let h = scripted(7, 6, |_, i| if i % 2 == 0 { (jv, ja) } else { (sv, sa) });
        let s = h.summarize("volatile", now(), 7);
        assert_eq!(s.patterns, [CreditPattern::EmotionalVolatility], "{s:?}");
        assert_eq!(s.risk_premium_adjustment_pct, 10.0);
        assert_eq!(s.action, CreditAction::Premium);
        assert!(has(&s.reasons, "emotional volatility: valence σ"));
        assert!(has(&s.reasons, "+10 %"));
    }

    #[test]
    fn chronically_stressed_user_pays_fifteen_percent_and_no_discount() {
        let (v, a) = coords(EmotionLabel::Stress);
        let h = scripted(7, 6, |_, _| (v, a));
        let s = h.summarize("stressed", now(), 7);
        assert_eq!(
            s.patterns,
            [CreditPattern::ChronicStress, CreditPattern::HighStability],
            "{s:?}"
        );
        assert_eq!(s.risk_premium_adjustment_pct, 15.0);
        assert_eq!(s.action, CreditAction::Premium);
        assert!(has(&s.reasons, "chronic stress: average stress level 0.60"));
        assert!(has(&s.reasons, "stressed on 7 of 7 active days"));
        assert!(has(&s.reasons, "not applied while a penalty pattern holds"));
        assert_eq!(s.risk_score, 0.4, "the analyzer's stress component");
        assert!((s.avg_stress_level.expect("events") - 0.601).abs() < 0.002);
    }

    #[test]
    fn recovering_user_gets_standard_rates_and_volatility_is_waived() {
        let neg = coords(EmotionLabel::Sadness);
        let pos = coords(EmotionLabel::Contentment);
        let h = scripted(7, 6, |d, _| if d < 3 { neg } else { pos });
        let s = h.summarize("recovering", now(), 7);
        assert!(s.patterns.contains(&CreditPattern::Recovery), "{s:?}");
        assert!(s.patterns.contains(&CreditPattern::EmotionalVolatility));
        assert_eq!(s.risk_premium_adjustment_pct, 0.0);
        assert_eq!(s.action, CreditAction::StandardRates);
        assert!(
            has(&s.reasons, "recovery: average valence rose from −0.80"),
            "{:?}",
            s.reasons
        );
        assert!(has(&s.reasons, "+10 % waived"));
    }

    #[test]
    fn user_in_crisis_is_delayed_and_supported_never_charged() {
        // A stressed week that turns into acute distress in the last two days.
        let (v, a) = coords(EmotionLabel::Stress);
        let h = scripted(7, 6, |d, _| if d >= 5 { (-0.9, 0.95) } else { (v, a) });
        let s = h.summarize("crisis", now(), 7);
        assert_eq!(s.patterns[0], CreditPattern::EmotionalCrisis, "{s:?}");
        assert!(s.patterns.contains(&CreditPattern::ChronicStress));
        assert_eq!(s.risk_premium_adjustment_pct, 0.0);
        assert_eq!(s.action, CreditAction::DelayAndSupport);
        assert!(
            has(
                &s.reasons,
                "12 of 18 events in the last 3 days show acute distress"
            ),
            "{:?}",
            s.reasons
        );
        assert!(has(&s.reasons, "+15 % waived, a crisis is never penalized"));
        assert!(has(&s.reasons, "no risk premium (0 %)"));
    }

    #[test]
    fn flagged_risk_is_a_crisis_indicator() {
        // Stressed on average (not acutely) with elated spikes: the analyzer's
        // stress (+0.4) and volatility (+0.3) components reach 0.7.
        let h = scripted(
            7,
            5,
            |_, i| if i % 5 == 4 { (0.8, 0.9) } else { (-0.8, 0.85) },
        );
        let s = h.summarize("flagged", now(), 7);
        assert!(s.risk_score >= FLAG_THRESHOLD, "{s:?}");
        assert!(!has(&s.reasons, "acute distress"), "{:?}", s.reasons);
        assert_eq!(s.action, CreditAction::DelayAndSupport);
        assert!(has(&s.reasons, "reaches the flag threshold"));
    }

    #[test]
    fn few_events_are_insufficient_but_acute_distress_still_counts() {
        let h = scripted(1, 2, |_, _| (0.5, 0.3));
        let s = h.summarize("new", now(), 7);
        assert_eq!(s.action, CreditAction::InsufficientData);
        assert!(s.patterns.is_empty());
        assert!(has(&s.reasons, "only 2 events"));

        let h = scripted(1, 3, |_, _| (-0.95, 0.95));
        let s = h.summarize("new", now(), 7);
        assert_eq!(s.action, CreditAction::DelayAndSupport);

        let empty = CreditHistory::new().summarize("nobody", now(), 30);
        assert_eq!((empty.event_count, empty.avg_valence), (0, None));
        assert_eq!(empty.action, CreditAction::InsufficientData);
    }

    #[test]
    fn windows_cover_calendar_days_and_old_days_fall_out() {
        let h = scripted(30, 2, |d, _| if d < 23 { (-0.5, 0.5) } else { (0.5, 0.5) });
        let s7 = h.summarize("u", now(), 7);
        let s30 = h.summarize("u", now(), 30);
        assert_eq!((s7.event_count, s30.event_count), (14, 60));
        assert_eq!(s7.avg_valence, Some(0.5));
        assert_eq!(h.summarize("u", now(), 400).window_days, 30);
        assert_eq!(h.summarize("u", now(), 0).window_days, 1);
        // Thirty days later nothing is left in a 7-day window.
        let later = h.summarize("u", now() + Duration::days(30), 7);
        assert_eq!(later.event_count, 0);
    }

    #[test]
    fn late_and_too_old_events() {
        let mut h = CreditHistory::new();
        h.record(now(), 0.1, 0.5, false);
        h.record(now() - Duration::days(3), 0.2, 0.5, false);
        h.record(now() - Duration::days(1), 0.3, 0.5, true);
        h.record(now() - Duration::days(3), 0.2, 0.5, false);
        h.record(now() - Duration::days(30), 0.9, 0.5, false);
        assert_eq!(h.days.len(), 3);
        assert!(
            h.days
                .iter()
                .zip(h.days.iter().skip(1))
                .all(|(a, b)| a.day < b.day)
        );
        let s = h.summarize("u", now(), 30);
        assert_eq!(s.event_count, 4);
        // A new day far ahead drops everything older than the history.
        h.record(now() + Duration::days(40), 0.0, 0.5, false);
        assert_eq!(h.days.len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn summaries_are_finite_and_in_range(
                evs in proptest::collection::vec(
                    (-1.0f64..=1.0, 0.0f64..=1.0, 0i64..45 * 86_400, any::<bool>()), 0..300),
                window in 0u32..40,
            ) {
                let mut h = CreditHistory::new();
                for (v, a, back, anomaly) in &evs {
                    h.record(now() - Duration::seconds(*back), *v, *a, *anomaly);
                }
                let s = h.summarize("p", now(), window);
                let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
                prop_assert!((1..=HISTORY_DAYS).contains(&s.window_days));
                prop_assert!(s.event_count <= evs.len() as u64);
                if let Some(v) = s.avg_valence { prop_assert!(v.is_finite() && (-1.0..=1.0).contains(&v)); }
                if let Some(a) = s.avg_arousal { prop_assert!(unit(a)); }
                if let Some(x) = s.avg_stress_level { prop_assert!(unit(x)); }
                prop_assert_eq!(s.avg_valence.is_some(), s.event_count > 0);
                prop_assert!(unit(s.stability_score));
                prop_assert!(unit(s.risk_score));
                prop_assert!([-5.0, 0.0, 10.0, 15.0, 25.0].contains(&s.risk_premium_adjustment_pct));
                prop_assert!(!s.reasons.is_empty());
                if s.patterns.contains(&CreditPattern::EmotionalCrisis) {
                    prop_assert_eq!(s.action, CreditAction::DelayAndSupport);
                    prop_assert_eq!(s.risk_premium_adjustment_pct, 0.0);
                }
                match s.action {
                    CreditAction::Premium => prop_assert!(s.risk_premium_adjustment_pct > 0.0),
                    CreditAction::Discount => prop_assert!(s.risk_premium_adjustment_pct < 0.0),
                    _ => prop_assert_eq!(s.risk_premium_adjustment_pct, 0.0),
                }
            }
        }
    }
}
