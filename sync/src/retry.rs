//! Exponential back-off with jitter, forever by default.
//!
//! [`Backoff`] is the schedule, for a caller's own loop — the form to use
//! with a `&mut SyncClient` inside a spawned task:
//!
//! ```no_run
//! # async fn demo(client: &mut emotion_sync::SyncClient, events: &[emotion_core::EmotionEvent])
//! # -> Result<(), emotion_sync::SyncError> {
//! use emotion_sync::{Backoff, Cursor, RetryConfig};
//! let mut backoff = Backoff::new(&RetryConfig::default());
//! let outcome = loop {
//!     match client.write_events("gw-1", events, Cursor::new(7, 0)).await {
//!         Ok(o) => break o,
//!         Err(e) => match backoff.next_delay() {
//!             Some(delay) => tokio::time::sleep(delay).await, // log `e` here
//!             None => return Err(e), // only with max_attempts set
//!         },
//!     }
//! };
//! backoff.reset();
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! [`retry`] and [`retry_if`] wrap that loop for operations that own what
//! they use (`FnMut() -> impl Future`). A closure cannot hand out a future
//! that borrows its own captured `&mut` (and stable Rust cannot yet prove an
//! async closure's future `Send` for `tokio::spawn`), hence the loop above for
//! a borrowed client.

use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::duration;

/// Bounds of the back-off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delay before the first retry (before jitter).
    #[serde(with = "duration")]
    pub initial: Duration,
    /// Largest delay between attempts.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Give up after this many failed attempts; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: None,
        }
    }
}

impl RetryConfig {
    /// Problems with the bounds, in words (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.initial.is_zero() {
            p.push("retry.initial must be greater than 0".to_owned());
        }
        if self.max < self.initial {
            p.push(format!(
                "retry.max ({:?}) must not be less than retry.initial ({:?})",
                self.max, self.initial
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            p.push(format!(
                "retry.multiplier must be a number ≥ 1, got {}",
                self.multiplier
            ));
        }
        if self.max_attempts == Some(0) {
            p.push("retry.max_attempts must be at least 1 (omit it to retry forever)".to_owned());
        }
        p
    }
}

/// The delays of successive retries: `initial · multiplier^n`, capped at
/// `max`, with "equal jitter" — each delay is drawn uniformly from
/// [d/2, d] — so that many gateways that lost the same server do not come
/// back in lockstep, while a delay never collapses to nothing.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: RetryConfig,
    failures: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Self {
        Backoff {
            cfg: cfg.clone(),
            failures: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    /// A reproducible schedule (tests).
    pub fn with_seed(cfg: &RetryConfig, seed: u64) -> Self {
        Backoff {
            cfg: cfg.clone(),
            failures: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Record a failure and return how long to wait before the next attempt,
    /// or `None` when `max_attempts` failures have been reached.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.cfg.max_attempts.is_some_and(|m| self.failures >= m) {
            return None;
        }
        let cap = self.cfg.max.as_secs_f64();
        let exp = i32::try_from(self.failures - 1).unwrap_or(i32::MAX);
        let base =
            (self.cfg.initial.as_secs_f64() * self.cfg.multiplier.max(1.0).powi(exp)).min(cap);
        let base = if base.is_finite() { base } else { cap };
        let d = base / 2.0 + self.rng.random_range(0.0..=base / 2.0);
        Some(Duration::from_secs_f64(d.max(0.0)))
    }

    /// Failed attempts since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Run `op` until it succeeds, sleeping per [`Backoff`] between attempts and
/// calling `on_retry(error, failures, delay)` before each sleep. Returns the
/// last error only if `max_attempts` is set and reached.
pub async fn retry<T, E, F, Fut>(
    cfg: &RetryConfig,
    op: F,
    on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_if(cfg, op, |_| true, on_retry).await
}

/// As [`retry`], but an error for which `should_retry` is false is returned
/// at once (e.g. `|e: &SyncError| e.is_transient()`).
pub async fn retry_if<T, E, F, Fut>(
    cfg: &RetryConfig,
    mut op: F,
    should_retry: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(cfg);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                if !should_retry(&e) {
                    return Err(e);
                }
                match backoff.next_delay() {
                    Some(d) => {
                        on_retry(&e, backoff.failures(), d);
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            max_attempts: None,
        }
    }

    #[test]
    fn delays_grow_exponentially_within_jitter_and_cap() {
        let mut b = Backoff::with_seed(&cfg(), 7);
        for n in 0..40u32 {
            let d = b.next_delay().expect("forever").as_secs_f64();
            let base = (0.1 * 2f64.powi(n as i32)).min(2.0);
            assert!(
                d >= base / 2.0 - 1e-9 && d <= base + 1e-9,
                "{n}: {d} vs {base}"
            );
        }
        assert_eq!(b.failures(), 40);
        b.reset();
        assert!(b.next_delay().expect("forever") <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            let mut b = Backoff::with_seed(&cfg(), seed);
            b.next_delay();
            seen.insert(b.next_delay().expect("forever").as_micros());
        }
        assert!(seen.len() > 10, "{seen:?}");
    }

    #[test]
    fn max_attempts_stops() {
        let c = RetryConfig {
            max_attempts: Some(3),
            ..cfg()
        };
        let mut b = Backoff::with_seed(&c, 1);
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_none());
    }

    #[test]
    fn bad_bounds_are_reported() {
        let c = RetryConfig {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 0.5,
            max_attempts: Some(0),
        };
        assert_eq!(c.problems().len(), 3, "{:?}", c.problems());
        assert!(cfg().problems().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_runs_until_success_and_stops_on_permanent_errors() {
        let calls = std::cell::Cell::new(0);
        let mut retries = Vec::new();
        let out: Result<u32, &str> = retry(
            &cfg(),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 5 { Err("down") } else { Ok(n) } }
            },
            |e, n, _| retries.push((e.to_string(), n)),
        )
        .await;
        assert_eq!(out, Ok(5));
        assert_eq!(retries.len(), 4);
        assert_eq!(retries[3], ("down".to_owned(), 4));

        let calls = std::cell::Cell::new(0);
        let out: Result<(), &str> = retry_if(
            &cfg(),
            || {
                calls.set(calls.get() + 1);
                async { Err("bad data") }
            },
            |e| *e != "bad data",
            |_, _, _| {},
        )
        .await;
        assert_eq!((out, calls.get()), (Err("bad data"), 1));
    }
}
