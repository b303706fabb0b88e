//! A token bucket: the rate limit of one principal (API token, client
//! certificate, MQTT device), shared by all of its connections.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    /// Tokens left, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `per_second` on average, `burst` at once; `None` when `per_second`
    /// is 0 (unlimited).
    pub fn new(per_second: f64, burst: f64) -> Option<Self> {
        (per_second > 0.0).then(|| TokenBucket {
            per_second,
            burst: burst.max(1.0),
            state: Mutex::new((burst.max(1.0), Instant::now())),
        })
    }

    /// Take `n`; `Err(wait)` (how long until `n` are there) when over the limit.
    pub fn take(&self, n: f64) -> Result<(), Duration> {
        let mut st = self.state.lock();
        let now = Instant::now();
        let (left, at) = *st;
        let left = (left + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst);
        if left >= n {
            *st = (left - n, now);
            Ok(())
        } else {
            *st = (left, now);
            Err(Duration::from_secs_f64((n - left) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_the_wait_then_refills() {
        let b = TokenBucket::new(1000.0, 3.0).expect("limited");
        assert!((0..3).all(|_| b.take(1.0).is_ok()));
        let wait = b.take(1.0).expect_err("empty");
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.take(1.0).is_ok());
        assert!(TokenBucket::new(0.0, 10.0).is_none());
    }
}
