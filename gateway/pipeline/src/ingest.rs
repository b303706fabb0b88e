//! The ingest pipeline: group commit into the buffer, then analysis, then the
//! reply to the sender.
//!
//! ```text
//! senders ──mpsc──► writer thread ──────────────► analyzer thread ──oneshot──► senders
//!                   (drain queue, append batch,    (update analyzer in
//!                    one flush for all; a small     buffer order, reply)
//!                    batch when the analyzer is
//!                    idle: analyze and reply here)
//! ```
//!
//! An event is answered only after the flush that made it durable. While the
//! writer flushes one batch, the next one gathers in the queue, so one flush
//! serves everything that arrived meanwhile. Two stages let the next flush
//! start while the previous batch is being analyzed. A small batch finding
//! the analyzer stage idle is analyzed and answered by the writer itself:
//! at low rates handing it over cost a thread wake-up per commit (latency
//! and kernel time) to save microseconds of analysis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use emotion_core::analyzer::{EventOutcome, SessionMetrics};
use emotion_core::{Analyzer, EmotionEvent};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::live::Live;
use crate::privacy::Privacy;
use crate::telemetry::{Counters, Transport};
use emotion_buffer::EventStore;

/// The answer to one submitted event.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event: Arc<EmotionEvent>,
    /// `Some` for a newly stored event; `None` when its `event_id` was already
    /// stored (the earlier copy stands and nothing is analyzed twice).
    pub outcome: Option<EventOutcome>,
    /// For duplicates: the session's metrics as they are now.
    pub current_metrics: Option<SessionMetrics>,
}

impl Accepted {
    pub fn is_duplicate(&self) -> bool {
        self.outcome.is_none()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the buffer could not store the event")]
    Storage,
    #[error("the user's data was erased; events from before the erasure are refused")]
    Erased,
}

struct Job {
    event: EmotionEvent,
    transport: Transport,
    reply: oneshot::Sender<Result<Accepted, IngestError>>,
}

/// What the writer hands the analyzer stage: the batch and whether each
/// event was newly stored (or the storage error).
struct Written {
    events: Vec<EmotionEvent>,
    /// How each event came in (for the per-transport counters and the live feed).
    transports: Vec<Transport>,
    replies: Vec<oneshot::Sender<Result<Accepted, IngestError>>>,
    stored: Result<Vec<bool>, ()>,
    /// The buffer's high-water mark after this batch: once it is analyzed,
    /// the analyzer covers every batch below it (for its checkpoints).
    through: u64,
}

type Reply = oneshot::Sender<Result<Accepted, IngestError>>;

/// A cheap handle for submitting events.
#[derive(Debug, Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Job>,
}

/// The answer to an enqueued event, once it is durable and analyzed.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Accepted, IngestError>>);

impl Pending {
    pub async fn wait(self) -> Result<Accepted, IngestError> {
        self.0.await.unwrap_or(Err(IngestError::ShuttingDown))
    }
}

impl Ingest {
    /// Put one event in the queue (waiting while the queue is full). Events
    /// enqueued one after another are stored and analyzed in that order.
    pub async fn enqueue(&self, event: EmotionEvent) -> Result<Pending, IngestError> {
        self.enqueue_via(event, Transport::Other).await
    }

    /// [`Ingest::enqueue`], saying which transport the event came over (the
    /// `transport` label of `/metrics` and of the dashboard's live feed).
    pub async fn enqueue_via(
        &self,
        event: EmotionEvent,
        transport: Transport,
    ) -> Result<Pending, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                event,
                transport,
                reply,
            })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(Pending(rx))
    }

    /// Store and analyze one event; resolves once it is durable.
    pub async fn submit(&self, event: EmotionEvent) -> Result<Accepted, IngestError> {
        self.enqueue(event).await?.wait().await
    }

    /// Events waiting in the queue for the buffer writer (for `/metrics`).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// [`Ingest::submit`], saying which transport the event came over.
    pub async fn submit_via(
        &self,
        event: EmotionEvent,
        transport: Transport,
    ) -> Result<Accepted, IngestError> {
        self.enqueue_via(event, transport).await?.wait().await
    }
}

/// The running pipeline; `join` waits for it to drain after every `Ingest`
/// handle is dropped.
#[derive(Debug)]
pub struct Pipeline {
    writer: JoinHandle<()>,
    analyzer: JoinHandle<()>,
}

impl Pipeline {
    /// `analyzed` is set, under the analyzer's lock, to the number of the
    /// first batch the analyzer has not seen yet.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Arc<dyn EventStore>,
        analyzer: Arc<Mutex<Analyzer>>,
        analyzed: Arc<AtomicU64>,
        privacy: Arc<Privacy>,
        counters: Arc<Counters>,
        live: Arc<Live>,
        max_batch: usize,
        queue_capacity: usize,
    ) -> std::io::Result<(Ingest, Pipeline)> {
        let (tx, rx) = mpsc::channel::<Job>(queue_capacity);
        // Two batches in flight between the stages is enough to overlap a flush
        // with analysis; more would only add latency.
        let (done_tx, done_rx) = std_mpsc::sync_channel::<Written>(2);
        let stage = Arc::new(AnalyzerStage {
            analyzer,
            analyzed,
            store: store.clone(),
            privacy,
            counters,
            live,
            handed_over: AtomicUsize::new(0),
        });
        let writer = {
            let stage = stage.clone();
            std::thread::Builder::new()
                .name("buffer-writer".into())
                .spawn(move || writer_loop(rx, done_tx, store, &stage, max_batch))?
        };
        let analyzer = std::thread::Builder::new()
            .name("analyzer".into())
            .spawn(move || analyzer_loop(done_rx, &stage))?;
        Ok((Ingest { tx }, Pipeline { writer, analyzer }))
    }

    /// Wait until both stages have finished (all `Ingest` handles dropped and
    /// the queue drained). Blocking: call from a blocking context.
    pub fn join(self) {
        if self.writer.join().is_err() {
            tracing::error!("buffer writer thread panicked");
        }
        if self.analyzer.join().is_err() {
            tracing::error!("analyzer thread panicked");
        }
    }
}

/// Batches of at most this many events are analyzed by the writer itself
/// when the analyzer stage is idle: their analysis takes microseconds, less
/// than waking the analyzer thread.
const ANALYZE_INLINE_MAX: usize = 16;

/// Stage 1: take everything queued (up to `max_batch`), store it with one
/// flush, hand it to the analyzer stage (or analyze a small batch here).
fn writer_loop(
    mut rx: mpsc::Receiver<Job>,
    done: std_mpsc::SyncSender<Written>,
    store: Arc<dyn EventStore>,
    stage: &AnalyzerStage,
    max_batch: usize,
) {
    let (privacy, counters) = (&stage.privacy, &stage.counters);
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::with_capacity(64);
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Events of a user erased meanwhile (queued before the erasure, or late
        // arrivals from before it) must not come back.
        let mut events = Vec::with_capacity(jobs.len());
        let mut transports = Vec::with_capacity(jobs.len());
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
        for j in jobs {
            if privacy.is_erased(&j.event) {
                counters.record_rejected();
                let _ = j.reply.send(Err(IngestError::Erased));
            } else {
                events.push(j.event);
                transports.push(j.transport);
                replies.push(j.reply);
            }
        }
        if events.is_empty() {
            continue;
        }
        let started = Instant::now();
        let stored = store.append(&events).map_err(|e| {
            tracing::error!(error = %e, events = events.len(), "group commit failed; senders get an error");
        });
        counters.record_flush(events.len(), started.elapsed());
        // Only this thread appends, so the mark now covers this batch.
        let through = store.durable_batches();
        let written = Written {
            events,
            transports,
            replies,
            stored,
            through,
        };
        // Nothing handed over is still unanswered, so analyzing here keeps
        // the buffer's order; only this thread hands batches over.
        if written.events.len() <= ANALYZE_INLINE_MAX
            && stage.handed_over.load(Ordering::Acquire) == 0
        {
            stage.analyze(written);
            continue;
        }
        stage.handed_over.fetch_add(1, Ordering::AcqRel);
        if done.send(written).is_err() {
            break;
        }
    }
    tracing::debug!("buffer writer drained and stopped");
}

/// What the analyzer stage holds.
struct AnalyzerStage {
    analyzer: Arc<Mutex<Analyzer>>,
    analyzed: Arc<AtomicU64>,
    /// Where evicted users' state is kept, to bring them back.
    store: Arc<dyn EventStore>,
    privacy: Arc<Privacy>,
    counters: Arc<Counters>,
    live: Arc<Live>,
    /// Batches sent to the analyzer thread and not yet answered: the writer
    /// analyzes a batch itself only when this is 0.
    handed_over: AtomicUsize,
}

/// Stage 2: update the analyzer in buffer order and answer each sender.
fn analyzer_loop(done: std_mpsc::Receiver<Written>, stage: &AnalyzerStage) {
    for written in done {
        stage.analyze(written);
        stage.handed_over.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AnalyzerStage {
    /// Update the analyzer with one written batch and answer its senders.
    fn analyze(&self, written: Written) {
        let AnalyzerStage {
            analyzer,
            analyzed,
            store,
            privacy,
            counters,
            live,
            handed_over: _,
        } = self;
        let Written {
            events,
            transports,
            replies,
            stored,
            through,
        } = written;
        let Ok(stored) = stored else {
            for reply in replies {
                let _ = reply.send(Err(IngestError::Storage));
            }
            return;
        };
        // Replies go out after the whole batch is analyzed, in a tight loop
        // once the lock is released: a connection then wakes to find all of
        // its replies of this batch ready and writes them with one send,
        // where replies handed out one by one during the analysis woke it
        // for each (one syscall per reply was a fifth of the gateway's CPU).
        let mut answers: Vec<(Reply, Result<Accepted, IngestError>)> =
            Vec::with_capacity(replies.len());
        let mut an = analyzer.lock();
        for (((event, transport), reply), fresh) in
            events.into_iter().zip(transports).zip(replies).zip(stored)
        {
            // Erased after it was written: the erasure removed it from the
            // buffer, so the analyzer must not learn it either.
            if fresh && privacy.is_erased(&event) {
                answers.push((reply, Err(IngestError::Erased)));
                continue;
            }
            let event = Arc::new(event);
            let accepted = if fresh {
                counters.record_event(transport, &event);
                crate::checkpoint::make_resident(&mut an, store.as_ref(), &event.user_id);
                let outcome = an.ingest(&event);
                // Alerts and the dashboard's feed; cheap when nobody listens.
                live.publish(&event, &outcome, transport);
                Accepted {
                    outcome: Some(outcome),
                    current_metrics: None,
                    event,
                }
            } else {
                counters.record_duplicate();
                Accepted {
                    outcome: None,
                    current_metrics: an.session_summary(&event.session_id).map(|s| s.metrics),
                    event,
                }
            };
            answers.push((reply, Ok(accepted)));
        }
        analyzed.fetch_max(through, Ordering::Release);
        drop(an);
        for (reply, answer) in answers {
            // The sender may have gone away; the event is stored regardless.
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emotion_buffer::MemoryStore;
    use emotion_core::analyzer::AnalyzerConfig;

    fn event(session: &str) -> EmotionEvent {
        let body = serde_json::json!({"user_id": "u1", "session_id": session,
            "source": "text", "emotion_label": "joy"});
        let ctx = emotion_core::IngestContext {
            user_id: None,
            session_id: None,
            gateway_id: "gw",
            producer: "client",
            now: chrono::Utc::now(),
            event_id: uuid::Uuid::now_v7(),
            confidence_in_source_range: false,
        };
        let serde_json::Value::Object(m) = body else {
            unreachable!("an object literal")
        };
        emotion_core::event::validate(&m, &ctx).expect("valid")
    }

    /// Small batches analyzed by the writer and large ones handed to the
    /// analyzer thread, mixed: the analyzer still sees every event once, in
    /// the order they were stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn analysis_follows_the_buffer_order_whichever_thread_does_it() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::default());
        let analyzer = Arc::new(Mutex::new(Analyzer::new(AnalyzerConfig::default())));
        let analyzed = Arc::new(AtomicU64::new(0));
        let (ingest, pipeline) = Pipeline::start(
            store.clone(),
            analyzer.clone(),
            analyzed.clone(),
            Arc::new(Privacy::load(store.clone()).expect("privacy")),
            Arc::new(Counters::default()),
            Arc::new(Live::default()),
            256,
            10_000,
        )
        .expect("start");
        let mut counts = Vec::new();
        // Bursts of 1 (waited for: the stages are idle, the writer analyzes
        // it) up to 400 (batches over the inline size, handed over while
        // the next ones are written).
        for burst in [1, 1, 3, 400, 1, 17, 2, 300, 16, 1, 250, 5] {
            let mut pending = Vec::new();
            for _ in 0..burst {
                pending.push(ingest.enqueue(event("s1")).await.expect("queued"));
            }
            for p in pending {
                let accepted = p.wait().await.expect("stored");
                let outcome = accepted.outcome.expect("fresh");
                counts.push(outcome.metrics.event_count);
            }
        }
        let n = counts.len() as u64;
        assert_eq!(counts, (1..=n).collect::<Vec<_>>(), "in buffer order");
        assert_eq!(analyzed.load(Ordering::Acquire), store.durable_batches());
        drop(ingest);
        tokio::task::spawn_blocking(move || pipeline.join())
            .await
            .expect("joined");
        assert_eq!(
            analyzer
                .lock()
                .session_summary("s1")
                .map(|s| s.metrics.event_count),
            Some(n)
        );
    }
}
