//! Batching: readings submitted one at a time are grouped per source into
//! batches of at most `batch_max_size`, each sent no later than
//! `batch_max_latency` after its oldest reading arrived. Crossing into a
//! plugin has a fixed cost; batches spread it.
//!
//! Worker threads per source (one unless `[plugins.workers]` says more) run
//! the batches of that source, so a slow or quarantined plugin delays only
//! its own sources. Several workers of one source share its queue: each
//! takes the next batch while the others' run.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use emotion_core::Source;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::error::{ReadingError, ReadingResult};
use crate::wit;

/// What runs a batch of one source's readings through its plugin (the host).
/// The batcher owns the queues and the worker threads, not the plugins.
pub(crate) trait RunBatch: Send + Sync + 'static {
    /// One result per reading, in order.
    fn run_batch(&self, source: Source, readings: &[wit::Reading]) -> Vec<ReadingResult>;
}

/// The result of a submitted reading, once its batch has run.
///
/// `.await` it from async code, or call [`PendingReading::wait`] from a
/// plain thread (not from inside an async runtime: it blocks).
#[derive(Debug)]
pub struct PendingReading(Receiver);

#[derive(Debug)]
enum Receiver {
    Waiting(oneshot::Receiver<ReadingResult>),
    // Boxed: an answer given at once is rare (overload, shutdown), and a
    // pending reading should stay small.
    Ready(Option<Box<ReadingResult>>),
}

impl PendingReading {
    fn ready(r: ReadingResult) -> Self {
        PendingReading(Receiver::Ready(Some(Box::new(r))))
    }

    /// Block until the result is there.
    pub fn wait(self) -> ReadingResult {
        match self.0 {
            Receiver::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(ReadingError::ShutDown)),
            Receiver::Ready(r) => r.map_or(Err(ReadingError::ShutDown), |r| *r),
        }
    }
}

impl Future for PendingReading {
    type Output = ReadingResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Receiver::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(ReadingError::ShutDown))),
            Receiver::Ready(r) => Poll::Ready(r.take().map_or(Err(ReadingError::ShutDown), |r| *r)),
        }
    }
}

struct Pending {
    reading: wit::Reading,
    arrived: Instant,
    reply: oneshot::Sender<ReadingResult>,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Pending>,
    closed: bool,
}

#[derive(Default)]
struct SourceQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

/// The per-source queues and their workers.
pub(crate) struct Queues {
    queues: [Arc<SourceQueue>; 8],
}

impl Queues {
    pub(crate) fn new() -> Self {
        Queues {
            queues: Default::default(),
        }
    }

    /// Start `workers[source.index()]` workers per source, each sending
    /// batches of at most `max` readings, no later than `latency` after the
    /// oldest arrived. Workers hold only a weak reference to the runner (the
    /// host), so dropping the last handle shuts them down.
    pub(crate) fn start<R: RunBatch>(
        &self,
        runner: &Arc<R>,
        max: usize,
        latency: Duration,
        workers: [usize; 8],
    ) {
        for source in Source::ALL {
            let mut started = 0;
            for i in 0..workers[source.index()].max(1) {
                let queue = self.queues[source.index()].clone();
                let weak = Arc::downgrade(runner);
                let name = if i == 0 {
                    format!("plugin-batch-{source}")
                } else {
                    format!("plugin-batch-{source}-{i}")
                };
                match std::thread::Builder::new()
                    .name(name)
                    .spawn(move || worker(source, &queue, &weak, max, latency))
                {
                    Ok(_) => started += 1,
                    Err(e) => tracing::error!(%source, error = %e, "cannot start a batch worker"),
                }
            }
            if started == 0 {
                // Without a worker, readings of this source would wait
                // forever: close its queue so `submit` answers at once.
                self.queues[source.index()].state.lock().closed = true;
            }
        }
    }

    pub(crate) fn submit(
        &self,
        source: Source,
        reading: wit::Reading,
        capacity: usize,
    ) -> PendingReading {
        let queue = &self.queues[source.index()];
        let mut st = queue.state.lock();
        if st.closed {
            return PendingReading::ready(Err(ReadingError::ShutDown));
        }
        if st.items.len() >= capacity {
            return PendingReading::ready(Err(ReadingError::Overloaded(st.items.len(), source)));
        }
        let (reply, rx) = oneshot::channel();
        st.items.push_back(Pending {
            reading,
            arrived: Instant::now(),
            reply,
        });
        // Wake the worker when the first reading arrives (it starts the
        // latency clock) and when a batch is full.
        queue.ready.notify_one();
        PendingReading(Receiver::Waiting(rx))
    }

    pub(crate) fn close(&self) {
        for q in &self.queues {
            q.state.lock().closed = true;
            q.ready.notify_all();
        }
    }
}

fn worker<R: RunBatch>(
    source: Source,
    queue: &SourceQueue,
    host: &Weak<R>,
    max: usize,
    latency: Duration,
) {
    loop {
        let batch: Vec<Pending> = {
            let mut st = queue.state.lock();
            while st.items.is_empty() {
                if st.closed {
                    return;
                }
                queue.ready.wait(&mut st);
            }
            // Wait for a full batch or for the oldest reading's deadline.
            while st.items.len() < max && !st.closed {
                let due = st
                    .items
                    .front()
                    .map_or_else(Instant::now, |p| p.arrived + latency);
                let now = Instant::now();
                if now >= due {
                    break;
                }
                queue.ready.wait_for(&mut st, due - now);
            }
            let n = st.items.len().min(max);
            let batch = st.items.drain(..n).collect();
            // More than a batch was waiting: another worker of this source
            // (if any) takes the next one now rather than at the next submit.
            if !st.items.is_empty() {
                queue.ready.notify_one();
            }
            batch
        };
        // Another worker of this source took what was waiting.
        if batch.is_empty() {
            continue;
        }
        let (readings, replies): (Vec<wit::Reading>, Vec<oneshot::Sender<ReadingResult>>) =
            batch.into_iter().map(|p| (p.reading, p.reply)).unzip();
        let results = match host.upgrade() {
            Some(inner) => inner.run_batch(source, &readings),
            None => readings
                .iter()
                .map(|_| Err(ReadingError::ShutDown))
                .collect(),
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // The submitter may have stopped waiting; that is its choice.
            let _ = reply.send(result);
        }
    }
}
