//! Canary rollout: a replacement version first shadows the serving one on
//! live readings, and is promoted or rolled back on what it did with them.
//!
//! The serving version answers every reading as before. After its call,
//! the same batch (and how many of its readings the serving version failed)
//! is handed to one shadow thread per candidate through a bounded queue;
//! the thread runs the candidate on it and counts, per reading, errors
//! (traps, memory, garbage, wrong counts, error answers, unusable emotions)
//! and deadline misses of both versions. The candidate's answers go nowhere
//! else. Handing over costs the live path a copy of the batch and never a
//! wait: when the candidate is behind, the batch is skipped (and counted), so
//! a slow or looping candidate cannot slow the readings' senders.
//!
//! Once `min_readings` were compared, the candidate is promoted if neither
//! its error rate nor its deadline-miss rate exceeds the serving version's
//! by more than `margin`; otherwise it is rolled back. If `max_duration` ends
//! first, see [`CanaryConfig::max_duration`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use chrono::{DateTime, Utc};
use emotion_core::Source;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{CanaryConfig, MIN_READINGS_AT_TIME_LIMIT};
use crate::error::{CallFailure, ReadingError, ReadingResult};
use crate::runtime::LoadedPlugin;
use crate::wit;

/// Readings waiting for the candidate before further batches are skipped
/// (at least; never less than a few full batches): slack for bursts of small
/// batches, which the serving version, warm and on several workers, may
/// answer faster than the one shadow thread, at a bounded cost in memory.
const SHADOW_QUEUE_READINGS: u64 = 1000;

/// Where a canary stands, as `GET /api/plugins` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryState {
    /// Running beside the serving version; not yet decided.
    Shadowing,
    /// Now the serving version.
    Promoted,
    /// Dropped; the version it shadowed kept serving.
    RolledBack,
}

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryVersion {
    /// `name@version`.
    pub producer: String,
    /// Compared readings it answered with an error other than a deadline
    /// miss.
    pub errors: u64,
    /// Compared readings whose call ran out of its deadline.
    pub deadline_misses: u64,
    /// `errors / readings`; `None` before any reading was compared.
    pub error_rate: Option<f64>,
    pub deadline_miss_rate: Option<f64>,
}

/// A replacement version's trial: what it was compared with, on how many
/// readings, and the outcome with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryStatus {
    pub state: CanaryState,
    pub candidate: CanaryVersion,
    /// The version that was serving when the candidate arrived.
    pub current: CanaryVersion,
    /// SHA-256 of the candidate's component.
    pub sha256: String,
    /// Readings both versions ran.
    pub readings: u64,
    /// Readings the candidate did not run because it was still busy with
    /// earlier ones (not compared).
    pub skipped_readings: u64,
    pub min_readings: u64,
    pub margin: f64,
    pub started_at: DateTime<Utc>,
    /// When the trial ends at the latest (`max_duration` after its start).
    pub decide_by: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Why it was promoted or rolled back, in words and numbers.
    pub reason: Option<String>,
}

/// Per-reading failures of one version on the compared readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Failures {
    errors: u64,
    deadline_misses: u64,
}

impl Failures {
    /// Count what the readings' results say: a deadline miss is a reading
    /// of a call interrupted at its deadline, an error any other error.
    pub(crate) fn of(results: &[ReadingResult]) -> Self {
        let mut f = Failures::default();
        for r in results {
            match r {
                Ok(_) => {}
                Err(ReadingError::PluginFailed {
                    failure: CallFailure::Timeout(_),
                    ..
                }) => f.deadline_misses += 1,
                Err(_) => f.errors += 1,
            }
        }
        f
    }

    fn add(&mut self, other: Failures) {
        self.errors += other.errors;
        self.deadline_misses += other.deadline_misses;
    }
}

#[derive(Debug, Default)]
struct Tally {
    readings: u64,
    current: Failures,
    candidate: Failures,
}

/// A candidate on trial, shared by the plugin's slot, the live path that
/// feeds it and its shadow thread.
pub(crate) struct Canary {
    pub(crate) candidate: Arc<LoadedPlugin>,
    /// `name@version` of the version it shadows.
    pub(crate) current: String,
    /// The slot's name, for errors and logs.
    plugin: String,
    config: CanaryConfig,
    started: Instant,
    started_at: DateTime<Utc>,
    tally: Mutex<Tally>,
    skipped: AtomicU64,
    /// Readings handed over and not yet run, and their bound.
    queued: AtomicU64,
    queue_limit: u64,
}

/// A batch for the candidate, with how the serving version fared on it.
pub(crate) struct ShadowBatch {
    readings: Vec<wit::Reading>,
    current: Failures,
}

/// The live path's end of a trial. The slot holds it while the trial runs;
/// dropping it (a newer replacement, the plugin's removal, the decision)
/// disconnects the queue and ends the shadow thread.
pub(crate) struct Shadow {
    pub(crate) canary: Arc<Canary>,
    tx: Sender<ShadowBatch>,
}

/// The outcome of a trial.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) promote: bool,
    pub(crate) reason: String,
}

impl Shadow {
    /// Hand a batch the serving version has answered to the candidate,
    /// unless the candidate does not handle its source or is still busy.
    /// Never blocks.
    pub(crate) fn offer(
        &self,
        source: Source,
        readings: &[wit::Reading],
        served: &[ReadingResult],
    ) {
        if !self.canary.candidate.info.sources.contains(&source) {
            return;
        }
        let c = &self.canary;
        let n = readings.len() as u64;
        if c.queued.fetch_add(n, Ordering::Relaxed) + n > c.queue_limit {
            c.queued.fetch_sub(n, Ordering::Relaxed);
            c.skipped.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let batch = ShadowBatch {
            readings: readings.to_vec(),
            current: Failures::of(served),
        };
        // Disconnected: the trial has just been decided; nothing to do.
        let _ = self.tx.send(batch);
    }
}

impl Canary {
    /// Start a trial: the live path's end, and the shadow thread's.
    /// `batch_max_size` sizes the queue between them.
    pub(crate) fn start(
        plugin: &str,
        candidate: Arc<LoadedPlugin>,
        current: String,
        config: CanaryConfig,
        batch_max_size: usize,
    ) -> (Shadow, Arc<Canary>, Receiver<ShadowBatch>) {
        let canary = Arc::new(Canary {
            candidate,
            current,
            plugin: plugin.to_owned(),
            config,
            started: Instant::now(),
            started_at: Utc::now(),
            tally: Mutex::new(Tally::default()),
            skipped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queue_limit: SHADOW_QUEUE_READINGS.max((batch_max_size as u64).saturating_mul(4)),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        (
            Shadow {
                canary: canary.clone(),
                tx,
            },
            canary,
            rx,
        )
    }

    /// The shadow thread's body: run the candidate on every batch handed
    /// over until the trial can be decided, then hand the verdict to
    /// `conclude`. Returns without a verdict when the live end is dropped.
    pub(crate) fn shadow(
        &self,
        rx: &Receiver<ShadowBatch>,
        gateway_id: &str,
        conclude: impl FnOnce(Verdict),
    ) {
        let limit = self.started + self.config.max_duration.0;
        let verdict = loop {
            let wait = limit.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(batch) => {
                    let n = batch.readings.len() as u64;
                    let answer = self
                        .candidate
                        .answer(&self.plugin, &batch.readings, gateway_id);
                    let mut t = self.tally.lock();
                    self.queued.fetch_sub(n, Ordering::Relaxed);
                    t.readings += n;
                    t.current.add(batch.current);
                    t.candidate.add(Failures::of(&answer.results));
                    let at_limit = Instant::now() >= limit;
                    if t.readings >= self.config.min_readings || at_limit {
                        break self.judge(&t);
                    }
                }
                Err(RecvTimeoutError::Timeout) => break self.judge(&self.tally.lock()),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        conclude(verdict);
    }

    fn judge(&self, t: &Tally) -> Verdict {
        judge(
            t,
            &self.config,
            &self.current,
            self.skipped.load(Ordering::Relaxed),
        )
    }

    /// The trial as `GET /api/plugins` shows it.
    pub(crate) fn status(
        &self,
        state: CanaryState,
        decided: Option<(DateTime<Utc>, String)>,
    ) -> CanaryStatus {
        let t = self.tally.lock();
        let n = t.readings;
        let rate = |x: u64| (n > 0).then(|| x as f64 / n as f64);
        let version = |producer: &str, f: Failures| CanaryVersion {
            producer: producer.to_owned(),
            errors: f.errors,
            deadline_misses: f.deadline_misses,
            error_rate: rate(f.errors),
            deadline_miss_rate: rate(f.deadline_misses),
        };
        let decide_by = chrono::Duration::from_std(self.config.max_duration.0)
            .ok()
            .and_then(|d| self.started_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let (decided_at, reason) = decided.unzip();
        CanaryStatus {
            state,
            candidate: version(&self.candidate.producer, t.candidate),
            current: version(&self.current, t.current),
            sha256: crate::cache::hex(&self.candidate.sha256),
            readings: n,
            skipped_readings: self.skipped.load(Ordering::Relaxed),
            min_readings: self.config.min_readings,
            margin: self.config.margin,
            started_at: self.started_at,
            decide_by,
            decided_at,
            reason,
        }
    }
}

/// The decision on what was compared: on rates once `min_readings` were
/// compared, otherwise (the time limit is over) by [`judge_at_limit`].
fn judge(t: &Tally, config: &CanaryConfig, current: &str, skipped: u64) -> Verdict {
    if t.readings < config.min_readings {
        return judge_at_limit(t, config, current, skipped);
    }
    let n = t.readings;
    let margin = config.margin;
    // On counts, not on rates: the same readings, so the rates differ
    // by the difference of counts over n, without rounding surprises.
    let allowed = margin * n as f64 + 1e-9;
    let worse = |cand: u64, cur: u64| cand as f64 - cur as f64 > allowed;
    let rates = format!(
        "error rate {} ({} of {n} readings) against {} ({}) for {}, deadline-miss rate {} ({}) against {} ({})",
        pct(t.candidate.errors, n),
        t.candidate.errors,
        pct(t.current.errors, n),
        t.current.errors,
        current,
        pct(t.candidate.deadline_misses, n),
        t.candidate.deadline_misses,
        pct(t.current.deadline_misses, n),
        t.current.deadline_misses,
    );
    let margin_text = format!("{:.1}%", margin * 100.0);
    if worse(t.candidate.errors, t.current.errors) {
        Verdict {
            promote: false,
            reason: format!("error rate worse by more than the margin of {margin_text}: {rates}"),
        }
    } else if worse(t.candidate.deadline_misses, t.current.deadline_misses) {
        Verdict {
            promote: false,
            reason: format!(
                "deadline-miss rate worse by more than the margin of {margin_text}: {rates}"
            ),
        }
    } else {
        Verdict {
            promote: true,
            reason: format!(
                "no worse than the serving version within the margin of {margin_text}: {rates}"
            ),
        }
    }
}

/// The rule when `max_duration` ends before `min_readings` were compared:
/// promote only on a few readings with no more failures than the serving
/// version had on them.
fn judge_at_limit(t: &Tally, config: &CanaryConfig, current: &str, skipped: u64) -> Verdict {
    let seen = format!(
        "only {} readings compared in {}{} (deciding on rates needs {})",
        t.readings,
        config.max_duration,
        if skipped > 0 {
            format!(", {skipped} skipped while the candidate was busy")
        } else {
            String::new()
        },
        config.min_readings,
    );
    let counts = format!(
        "{} errors and {} deadline misses against {} and {} for {}",
        t.candidate.errors,
        t.candidate.deadline_misses,
        t.current.errors,
        t.current.deadline_misses,
        current
    );
    if t.readings < MIN_READINGS_AT_TIME_LIMIT {
        Verdict {
            promote: false,
            reason: format!(
                "{seen}: too few to promote at the time limit (at least {MIN_READINGS_AT_TIME_LIMIT}, with no more failures than the serving version)"
            ),
        }
    } else if t.candidate.errors > t.current.errors
        || t.candidate.deadline_misses > t.current.deadline_misses
    {
        Verdict {
            promote: false,
            reason: format!(
                "{seen}, with {counts}: at the time limit a candidate must not fail more often at all"
            ),
        }
    } else {
        Verdict {
            promote: true,
            reason: format!("{seen}, with {counts}: no more failures at the time limit"),
        }
    }
}

/// `x` of `n` as a percentage with one decimal.
fn pct(x: u64, n: u64) -> String {
    if n == 0 {
        return "–".into();
    }
    format!("{:.1}%", x as f64 * 100.0 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(readings: u64, current: (u64, u64), candidate: (u64, u64)) -> Tally {
        Tally {
            readings,
            current: Failures {
                errors: current.0,
                deadline_misses: current.1,
            },
            candidate: Failures {
                errors: candidate.0,
                deadline_misses: candidate.1,
            },
        }
    }

    fn config() -> CanaryConfig {
        CanaryConfig {
            min_readings: 500,
            margin: 0.01,
            ..CanaryConfig::default()
        }
    }

    #[test]
    fn rates_within_the_margin_promote_and_beyond_it_roll_back() {
        let c = config();
        let v = judge(&tally(500, (3, 0), (8, 0)), &c, "p@1", 0);
        assert!(v.promote, "5 more errors in 500 is exactly 1 %: {v:?}");
        let v = judge(&tally(500, (3, 0), (9, 0)), &c, "p@1", 0);
        assert!(!v.promote);
        assert!(
            v.reason
                .starts_with("error rate worse by more than the margin of 1.0%")
                && v.reason
                    .contains("1.8% (9 of 500 readings) against 0.6% (3) for p@1"),
            "{}",
            v.reason
        );
        let v = judge(&tally(500, (0, 1), (0, 12)), &c, "p@1", 0);
        assert!(!v.promote);
        assert!(
            v.reason.starts_with("deadline-miss rate worse"),
            "{}",
            v.reason
        );
        // Fewer failures than the serving version: promoted.
        assert!(judge(&tally(600, (50, 5), (0, 0)), &c, "p@1", 0).promote);
        // No margin at all: one more error is too many.
        let strict = CanaryConfig {
            margin: 0.0,
            ..config()
        };
        assert!(judge(&tally(500, (2, 0), (2, 0)), &strict, "p@1", 0).promote);
        assert!(!judge(&tally(500, (2, 0), (3, 0)), &strict, "p@1", 0).promote);
    }

    #[test]
    fn at_the_time_limit_a_few_clean_readings_promote_and_less_rolls_back() {
        let c = config();
        let v = judge(&tally(0, (0, 0), (0, 0)), &c, "p@1", 0);
        assert!(!v.promote);
        assert!(
            v.reason
                .starts_with("only 0 readings compared in 300s (deciding on rates needs 500)"),
            "{}",
            v.reason
        );
        let v = judge(&tally(9, (0, 0), (0, 0)), &c, "p@1", 4);
        assert!(!v.promote);
        assert!(
            v.reason.contains("4 skipped while the candidate was busy"),
            "{}",
            v.reason
        );
        let v = judge(&tally(40, (1, 0), (1, 0)), &c, "p@1", 0);
        assert!(v.promote, "{v:?}");
        let v = judge(&tally(40, (1, 0), (2, 0)), &c, "p@1", 0);
        assert!(!v.promote);
        assert!(
            v.reason
                .contains("2 errors and 0 deadline misses against 1 and 0 for p@1"),
            "{}",
            v.reason
        );
        assert!(!judge(&tally(40, (0, 0), (0, 1)), &c, "p@1", 0).promote);
    }

    #[test]
    fn failures_are_counted_per_reading() {
        let timeout = Err(ReadingError::PluginFailed {
            plugin: "p".into(),
            failure: CallFailure::Timeout(std::time::Duration::from_millis(5)),
        });
        let trap = Err(ReadingError::PluginFailed {
            plugin: "p".into(),
            failure: CallFailure::Trap("boom".into()),
        });
        let answer = Err(ReadingError::Plugin {
            plugin: "p".into(),
            message: "no".into(),
        });
        let f = Failures::of(&[Ok(None), timeout.clone(), timeout, trap, answer]);
        assert_eq!(
            f,
            Failures {
                errors: 2,
                deadline_misses: 2
            }
        );
    }
}
