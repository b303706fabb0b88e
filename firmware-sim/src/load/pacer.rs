//! Open-loop pacing at sub-millisecond precision.
//!
//! tokio's timer rounds every deadline up to the next millisecond, so a
//! connection that slept until its next message was due wrote it 0–1 ms
//! late (0.85 ms at the median at 10,000 events/s), and a latency counted
//! from the due time measured the tool's timer as much as the gateway. One
//! thread sleeps until each message is due (the kernel's high-resolution
//! timer: tens of microseconds late, not a millisecond) and releases it to
//! its connection, whose writer task is waiting on a [`Notify`].
//!
//! The schedule is one sequence for the whole run: message `k` is due at
//! `base + k / rate` and belongs to connection `k mod n`, so connection `c`
//! sends messages `c, c + n, c + 2n, …` and the connections never all send
//! at once. A pacer that falls behind (descheduled) releases everything
//! overdue at once; each message keeps its due time, so the stall is
//! measured rather than hidden.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest the pacer thread sleeps before it looks at the cancel token.
const CANCEL_CHECK: Duration = Duration::from_millis(20);

/// One connection's share of the schedule.
#[derive(Debug, Default)]
struct Lane {
    /// Messages of this connection released so far.
    released: AtomicU64,
    notify: Notify,
}

/// The run's open-loop schedule and the thread that keeps it.
#[derive(Debug)]
pub(super) struct Pacer {
    base: Instant,
    rate: f64,
    end: Instant,
    lanes: Box<[Lane]>,
}

impl Pacer {
    /// Start the pacer's thread: `connections` lanes, `rate` messages per
    /// second in all from `base` until `end` (or until `cancel`).
    pub(super) fn start(
        base: Instant,
        rate: f64,
        connections: usize,
        end: Instant,
        cancel: CancellationToken,
    ) -> std::io::Result<(Arc<Pacer>, std::thread::JoinHandle<()>)> {
        let pacer = Arc::new(Pacer {
            base,
            rate,
            end,
            lanes: (0..connections).map(|_| Lane::default()).collect(),
        });
        let p = pacer.clone();
        let thread = std::thread::Builder::new()
            .name("load-pacer".into())
            .spawn(move || p.run(&cancel))?;
        Ok((pacer, thread))
    }

    /// When message `k` of the whole run is due.
    fn due_of(&self, k: u64) -> Instant {
        self.base + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// When connection `conn`'s `j`-th message (from 0) is due.
    pub(super) fn due(&self, conn: usize, j: u64) -> Instant {
        self.due_of(j * self.lanes.len() as u64 + conn as u64)
    }

    /// Whether connection `conn`'s `j`-th message has been released.
    pub(super) fn is_released(&self, conn: usize, j: u64) -> bool {
        self.lanes[conn].released.load(Ordering::Acquire) > j
    }

    /// Wait until connection `conn`'s `j`-th message is released.
    pub(super) async fn released(&self, conn: usize, j: u64) {
        let lane = &self.lanes[conn];
        loop {
            let notified = lane.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check
            // and the await is not missed.
            notified.as_mut().enable();
            if lane.released.load(Ordering::Acquire) > j {
                return;
            }
            notified.await;
        }
    }

    /// The thread: sleep until the next message is due, release it.
    fn run(&self, cancel: &CancellationToken) {
        let n = self.lanes.len() as u64;
        let mut k = 0u64;
        while !cancel.is_cancelled() {
            let due = self.due_of(k);
            if due >= self.end {
                break;
            }
            let now = Instant::now();
            if due > now {
                // std's sleep is nanosleep: the kernel's hrtimer, not
                // tokio's millisecond wheel.
                std::thread::sleep((due - now).min(CANCEL_CHECK));
                continue;
            }
            let lane = &self.lanes[(k % n) as usize];
            lane.released.fetch_add(1, Ordering::Release);
            lane.notify.notify_one();
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's messages are released in order and never before
    /// they are due, the connections interleave evenly, and nothing is
    /// released at or after the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn releases_each_message_when_due_and_stops_at_the_end() {
        let base = Instant::now();
        let (rate, conns) = (2_000.0, 4);
        let end = base + Duration::from_millis(200);
        let (pacer, thread) =
            Pacer::start(base, rate, conns, end, CancellationToken::new()).expect("thread");
        // Connection 1's messages are the run's messages 1, 5, 9, …
        assert_eq!(pacer.due(1, 2), base + Duration::from_secs_f64(9.0 / rate));
        for j in 0..100 {
            let due = pacer.due(1, j);
            pacer.released(1, j).await;
            assert!(
                Instant::now() >= due,
                "message {j} released before it was due"
            );
        }
        // 400 messages in 200 ms at 2,000/s: 100 per connection, then the
        // thread ends by itself.
        assert!(pacer.due(3, 99) < end && pacer.due(3, 100) >= end);
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joined")
            .expect("the pacer thread did not panic");
        for c in 0..conns {
            assert!(pacer.is_released(c, 99) && !pacer.is_released(c, 100));
        }
    }

    /// A cancelled run stops the thread without waiting for the end.
    #[test]
    fn cancel_stops_the_thread() {
        let base = Instant::now();
        let cancel = CancellationToken::new();
        let end = base + Duration::from_secs(3600);
        let (pacer, thread) = Pacer::start(base, 10.0, 1, end, cancel.clone()).expect("thread");
        cancel.cancel();
        thread.join().expect("joined");
        assert!(!pacer.is_released(0, 36_000));
    }
}
