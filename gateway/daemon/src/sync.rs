//! The sync driver: ships the buffer to the central PostgreSQL, in order and
//! exactly once, together with consents, erasures and credit/risk summaries.
//!
//! Exactly once rests on the central cursor: every batch is written in one
//! transaction that also moves this gateway's cursor (the position after the
//! last event shipped). At start, and after every reconnect, the driver reads
//! the cursor back from the central database, so a crash between a commit and
//! anything local neither loses nor repeats a batch (and a re-sent batch would
//! change nothing anyway: rows are inserted with ON CONFLICT DO NOTHING).
//!
//! Each round, in this order: erasures (so nothing erased is shipped after),
//! consents, one batch of events (two, on two connections, when a backlog
//! holds two full batches), and the summaries when they are due. Events
//! leave only for users who consented to `analytics`, summaries only for
//! users who consented to `credit`. Failures are retried forever with
//! exponential back-off and jitter; meanwhile the gateway keeps ingesting
//! and the buffer simply grows (retention never removes unsynced batches).
//!
//! Except a batch the server refuses for its content (SQLSTATE class 22,
//! 23 or 54: a value it cannot store, a constraint a row breaks): retrying
//! it would fail forever and hold back every later event. It is split in
//! halves, written in order, recursively, down to single events
//! (`SyncClient::write_events_isolating`); an event refused on its own goes
//! to the dead-letter store (meta keys under `deadletter/`, durable before
//! the cursor passes it) and the cursor moves past it in a transaction of
//! its own, so the rest still arrives exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use emotion_core::{Analyzer, EmotionEvent};
use emotion_sync::{
    AuditRow, Backoff, Consent, ConsentPurpose, Cursor, Refused, SyncClient, SyncConfig, SyncError,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::buffer::{EventPos, EventStore};
use crate::privacy::Privacy;
use crate::privacy::Purpose;

/// How often an idle driver looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Meta-key prefix of the dead-letter store: one entry per event the central
/// database refused, keyed by buffer position (so the keys sort in buffer
/// order and a second refusal of the same event overwrites the first).
pub const DEAD_LETTER_PREFIX: &str = "deadletter/";

/// How often an erasure the central database refused for its content is
/// tried again (it stays pending; a tight loop would only flood the server's
/// log).
const REFUSED_ERASURE_RETRY: Duration = Duration::from_secs(60);

/// How many dead letters `GET /api/sync` lists (the newest).
const RECENT_DEAD_LETTERS: usize = 10;

/// An event the central database refused on its own, set aside so that the
/// events after it keep flowing. The event itself stays in the buffer (until
/// retention) under `position`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event_id: Uuid,
    pub user_id: String,
    /// Its position in the buffer.
    pub position: BufferPosition,
    /// The server's SQLSTATE (e.g. 23514 check violation, 22P05).
    pub sqlstate: String,
    /// The server's message.
    pub message: String,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
}

/// A buffer position as a dead letter records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferPosition {
    pub batch: u64,
    pub index: u32,
}

fn dead_letter_key(pos: BufferPosition) -> String {
    format!("{DEAD_LETTER_PREFIX}{:020}/{:010}", pos.batch, pos.index)
}

/// What `/health` and `GET /api/sync` show.
#[derive(Debug, Default)]
pub struct SyncStatus {
    enabled: AtomicBool,
    connected: AtomicBool,
    /// Next position to ship (the central cursor, as last read or written).
    cursor: Mutex<Option<Cursor>>,
    /// Whether `cursor` has been read from the central database: only then
    /// does `None` mean "nothing shipped yet" rather than "not known".
    cursor_read: AtomicBool,
    lag_events: AtomicU64,
    /// Ingestion time of the oldest event not yet shipped.
    oldest_unsynced: Mutex<Option<DateTime<Utc>>>,
    events_shipped: AtomicU64,
    events_withheld: AtomicU64,
    summaries_shipped: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<(DateTime<Utc>, String)>>,
    last_success: Mutex<Option<DateTime<Utc>>>,
    /// Entries in the dead-letter store.
    dead_letters: AtomicU64,
    /// Events dead-lettered since the gateway started.
    dead_lettered: AtomicU64,
    /// The newest dead letters, oldest first.
    recent_dead_letters: Mutex<VecDeque<DeadLetter>>,
    /// Consents, summaries and erasures the central database refused for
    /// their content (logged and counted, not retried in a tight loop).
    other_refusals: AtomicU64,
    /// Erasure requests refused for their content, and when last tried.
    refused_erasures: Mutex<HashMap<Uuid, Instant>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncView {
    pub enabled: bool,
    pub connected: bool,
    pub cursor: Option<Cursor>,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub events_shipped: u64,
    /// Events passed over because their user has not consented to analytics.
    pub events_withheld: u64,
    pub summaries_shipped: u64,
    pub batches: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Events the central database refused for their content, set aside in
    /// the dead-letter store (the cursor moved past them).
    pub dead_letters: u64,
    /// Of those, how many since the gateway started.
    pub dead_lettered_since_start: u64,
    /// The newest dead letters (oldest first), at most ten.
    pub dead_letters_recent: Vec<DeadLetter>,
    /// Consents, summaries and erasures refused for their content.
    pub other_refusals: u64,
}

impl SyncStatus {
    /// The status as of `now`. The lag in events is counted in the buffer
    /// against the cursor at the time of the call (one batch header read,
    /// nothing decoded): the sync task's own figure dates from its last read
    /// and says 0 while new events wait for the next round. It includes
    /// events being written (not yet acknowledged). The lag in seconds is
    /// the task's: the age of the oldest event its last read found, 0 if it
    /// found none (then the oldest waiting event came after that read).
    pub fn view(&self, now: DateTime<Utc>, store: &dyn EventStore) -> SyncView {
        let err = self.last_error.lock().clone();
        let cursor = *self.cursor.lock();
        let lag_events = self
            .live_lag(cursor, store)
            .unwrap_or_else(|| self.lag_events.load(Ordering::Relaxed));
        SyncView {
            enabled: self.enabled.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            cursor,
            lag_events,
            lag_seconds: self
                .oldest_unsynced
                .lock()
                .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
            events_shipped: self.events_shipped.load(Ordering::Relaxed),
            events_withheld: self.events_withheld.load(Ordering::Relaxed),
            summaries_shipped: self.summaries_shipped.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error_at: err.as_ref().map(|e| e.0),
            last_error: err.map(|e| e.1),
            last_success_at: *self.last_success.lock(),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            dead_lettered_since_start: self.dead_lettered.load(Ordering::Relaxed),
            dead_letters_recent: self.recent_dead_letters.lock().iter().cloned().collect(),
            other_refusals: self.other_refusals.load(Ordering::Relaxed),
        }
    }

    /// Slots after `cursor`, counted in the buffer (all of them when the
    /// central database has no cursor for this gateway: nothing shipped
    /// yet); `None` while sync is off, before the central cursor has been
    /// read, or when the buffer cannot be read.
    fn live_lag(&self, cursor: Option<Cursor>, store: &dyn EventStore) -> Option<u64> {
        if !self.enabled.load(Ordering::Relaxed) || !self.cursor_read.load(Ordering::Acquire) {
            return None;
        }
        store.count_after(before(cursor)).ok()
    }

    /// Load the dead-letter store's count and newest entries (at start).
    fn load_dead_letters(&self, store: &dyn EventStore) -> Result<(), crate::buffer::StoreError> {
        let all = store.meta_with_prefix(DEAD_LETTER_PREFIX)?;
        self.dead_letters.store(all.len() as u64, Ordering::Relaxed);
        let skip = all.len().saturating_sub(RECENT_DEAD_LETTERS);
        let mut recent = self.recent_dead_letters.lock();
        recent.clear();
        recent.extend(
            all.iter()
                .skip(skip)
                .filter_map(|(_, v)| serde_json::from_slice::<DeadLetter>(v).ok()),
        );
        Ok(())
    }

    fn note_dead_letter(&self, d: DeadLetter, new: bool) {
        let mut recent = self.recent_dead_letters.lock();
        recent.retain(|r| r.position != d.position);
        recent.push_back(d);
        while recent.len() > RECENT_DEAD_LETTERS {
            recent.pop_front();
        }
        if new {
            self.dead_letters.fetch_add(1, Ordering::Relaxed);
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The position retention must not purge past (`None`: nothing to keep).
    pub fn keep_from(&self) -> Option<EventPos> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        // Before the cursor is known, keep everything.
        Some(
            self.cursor
                .lock()
                .map_or(EventPos { batch: 0, index: 0 }, |c| EventPos {
                    batch: c.batch,
                    index: c.index,
                }),
        )
    }
}

/// The buffer position just before `next` (the argument of `events_after`).
fn before(next: Option<Cursor>) -> Option<EventPos> {
    match next {
        None => None,
        Some(c) if c.index > 0 => Some(EventPos {
            batch: c.batch,
            index: c.index - 1,
        }),
        Some(c) if c.batch > 0 => Some(EventPos {
            batch: c.batch - 1,
            index: u32::MAX,
        }),
        Some(_) => None,
    }
}

fn after(pos: EventPos) -> Cursor {
    Cursor::new(pos.batch, pos.index.saturating_add(1))
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Central(#[from] SyncError),
    #[error("local: {0}")]
    Local(String),
}

impl RoundError {
    fn is_transient(&self) -> bool {
        match self {
            RoundError::Central(e) => e.is_transient(),
            RoundError::Local(_) => false,
        }
    }
}

/// What the sync driver reads: nothing else of the gateway.
#[derive(Debug, Clone)]
pub struct SyncHandles {
    /// Shipped in order; dead letters are kept in its metadata.
    pub store: Arc<dyn EventStore>,
    /// Consents decide what leaves; erasures are shipped first.
    pub privacy: Arc<Privacy>,
    /// The audit trail, shipped to `audit_log` in order.
    pub audit: crate::audit::Audit,
    /// User and session ids as they leave (pseudonyms with `[sync] pseudonymize`).
    pub pseudonyms: crate::pseudonym::Pseudonyms,
    /// Source of the credit/risk summaries.
    pub analyzer: Arc<Mutex<Analyzer>>,
    /// Names this gateway's rows and cursor centrally.
    pub gateway_id: String,
}

/// Run the driver until `shutdown`.
pub async fn run(
    state: SyncHandles,
    cfg: SyncConfig,
    status: Arc<SyncStatus>,
    shutdown: CancellationToken,
) {
    status.enabled.store(true, Ordering::Relaxed);
    if let Err(e) = status.load_dead_letters(state.store.as_ref()) {
        tracing::error!(error = %e, "sync: cannot read the dead-letter store");
    }
    let gateway = state.gateway_id.clone();
    let mut backoff = Backoff::new(&cfg.retry);
    let mut summaries_due = Instant::now();
    loop {
        let mut client = match SyncClient::from_config(&cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "sync: bad database_url; sync stays off");
                return;
            }
        };
        let result = session(
            &state,
            &cfg,
            &gateway,
            &mut client,
            &status,
            &mut backoff,
            &mut summaries_due,
            &shutdown,
        )
        .await;
        status.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return, // shutdown
            Err(e) => {
                status.failures.fetch_add(1, Ordering::Relaxed);
                *status.last_error.lock() = Some((Utc::now(), e.to_string()));
                // The lag keeps growing while the database is away: show it.
                refresh_lag(&state, &status).await;
                let delay = backoff.next_delay().unwrap_or(cfg.retry.max);
                if e.is_transient() {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "sync: transient failure (database away, serialization conflict or deadlock); will retry");
                } else {
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "sync: round failed; will retry");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Recompute the lag (events after the cursor, and the oldest one's age)
/// without the central database.
async fn refresh_lag(state: &SyncHandles, status: &SyncStatus) {
    let from = before(*status.cursor.lock());
    let res = read_after(state, from, 1)
        .await
        .map(|r| r.map(|(first, lag)| (lag, first.first().map(|(_, e)| e.ingested_at))));
    if let Ok(Ok((lag, oldest))) = res {
        status.lag_events.store(lag, Ordering::Relaxed);
        *status.oldest_unsynced.lock() = oldest;
    }
}

/// One connection's life: migrate, read the cursor, then ship rounds until
/// an error or shutdown.
#[allow(clippy::too_many_arguments)]
async fn session(
    state: &SyncHandles,
    cfg: &SyncConfig,
    gateway: &str,
    client: &mut SyncClient,
    status: &SyncStatus,
    backoff: &mut Backoff,
    summaries_due: &mut Instant,
    shutdown: &CancellationToken,
) -> Result<(), RoundError> {
    client.ensure_connected().await?;
    client.migrate().await?;
    let mut next = client.read_cursor(gateway).await?;
    *status.cursor.lock() = next;
    status.cursor_read.store(true, Ordering::Release);
    status.connected.store(true, Ordering::Relaxed);
    tracing::info!(cursor = ?next, "sync: connected to the central database");
    let mut read_ahead = None;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        ship_erasures(state, gateway, client, status).await?;
        ship_consents(state, gateway, client, status).await?;
        ship_audit(state, gateway, client).await?;
        let shipped = ship_events(
            state,
            cfg,
            gateway,
            client,
            status,
            &mut next,
            &mut read_ahead,
        )
        .await?;
        if Instant::now() >= *summaries_due {
            ship_summaries(state, cfg, gateway, client, status).await?;
            *summaries_due = Instant::now() + cfg.summary_interval;
        }
        backoff.reset();
        *status.last_success.lock() = Some(Utc::now());
        if shipped == 0 {
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// An event as it leaves: with pseudonymization, its user and session ids
/// replaced (the rest of the event is shipped as it is).
fn pseudonymized(p: &crate::pseudonym::Pseudonyms, mut e: EmotionEvent) -> EmotionEvent {
    if p.is_on() {
        e.user_id = p.user(&e.user_id);
        e.session_id = p.session(&e.session_id);
    }
    e
}

/// Audit entries per round.
const AUDIT_PAGE: usize = 1000;

/// Ship the audit entries the central database does not have, a page a
/// round (re-sending a page after a lost answer writes nothing twice).
async fn ship_audit(
    state: &SyncHandles,
    gateway: &str,
    client: &mut SyncClient,
) -> Result<(), RoundError> {
    let audit = state.audit.clone();
    let rows = match tokio::task::spawn_blocking(move || audit.unsynced(AUDIT_PAGE)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "sync: reading the audit trail failed");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(error = %e, "sync: audit task failed");
            return Ok(());
        }
    };
    let Some(last) = rows.last().map(|r| r.audit_id) else {
        return Ok(());
    };
    let rows: Vec<AuditRow> = rows
        .into_iter()
        .map(|mut r| {
            r.user_id = r.user_id.map(|u| state.pseudonyms.user(&u));
            r
        })
        .collect();
    let written = client.write_audit(gateway, &rows).await?;
    tracing::debug!(entries = rows.len(), written, "sync: audit entries shipped");
    let audit = state.audit.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || audit.synced_through(last)).await {
        tracing::warn!(error = %e, "sync: recording the audit sync position failed");
    }
    Ok(())
}

async fn ship_erasures(
    state: &SyncHandles,
    gateway: &str,
    client: &mut SyncClient,
    status: &SyncStatus,
) -> Result<(), RoundError> {
    for e in state.privacy.pending_erasures() {
        let tried = status.refused_erasures.lock().get(&e.request_id).copied();
        if tried.is_some_and(|t| t.elapsed() < REFUSED_ERASURE_RETRY) {
            continue;
        }
        let out = match client
            .apply_erasure(
                gateway,
                &state.pseudonyms.user(&e.user_id),
                e.request_id,
                e.requested_at,
            )
            .await
        {
            Ok(out) => out,
            // Refused for its content (a constraint added centrally, say):
            // it stays pending and is tried again now and then, but must not
            // hold up everything after it. The user's events are withheld
            // locally meanwhile (`is_erased`). Logged once per request.
            Err(err) if err.is_content() => {
                let first = status
                    .refused_erasures
                    .lock()
                    .insert(e.request_id, Instant::now())
                    .is_none();
                if first {
                    status.other_refusals.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(user = %e.user_id, request = %e.request_id, error = %err, "sync: the central database refuses this erasure; it stays pending");
                }
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        status.refused_erasures.lock().remove(&e.request_id);
        tracing::info!(user = %e.user_id, request = %e.request_id, outcome = ?out, "sync: erasure applied centrally");
        // Before the request is marked done, so a failure here leaves it
        // pending (applying it again centrally changes nothing).
        forget_dead_letters(state.store.as_ref(), status, &e.user_id)
            .map_err(|e| RoundError::Local(e.to_string()))?;
        state
            .privacy
            .erasure_applied(&e.user_id, e.request_id)
            .map_err(|e| RoundError::Local(e.to_string()))?;
    }
    Ok(())
}

/// An erased user's dead letters go too: they name the user and their events.
fn forget_dead_letters(
    store: &dyn EventStore,
    status: &SyncStatus,
    user: &str,
) -> Result<(), crate::buffer::StoreError> {
    let mut removed = false;
    for (key, value) in store.meta_with_prefix(DEAD_LETTER_PREFIX)? {
        let theirs = serde_json::from_slice::<DeadLetter>(&value).is_ok_and(|d| d.user_id == user);
        if theirs {
            store.remove_meta(&key)?;
            removed = true;
        }
    }
    if removed {
        // The count and the newest entries as they now are on disk.
        status.load_dead_letters(store)?;
    }
    Ok(())
}

async fn ship_consents(
    state: &SyncHandles,
    gateway: &str,
    client: &mut SyncClient,
    status: &SyncStatus,
) -> Result<(), RoundError> {
    let pending = state.privacy.unsynced_consents();
    if pending.is_empty() {
        return Ok(());
    }
    let rows: Vec<Consent> = pending
        .iter()
        .flat_map(|(user, c)| {
            [
                (ConsentPurpose::Analytics, c.analytics),
                (ConsentPurpose::Credit, c.credit),
            ]
            .map(|(purpose, granted)| Consent {
                user_id: state.pseudonyms.user(user),
                purpose,
                granted,
                updated_at: c.updated_at,
            })
        })
        .collect();
    match client.upsert_consents(gateway, &rows).await {
        Ok(_) => {}
        // Refused for their content: the same rows would be refused every
        // round, ahead of the events. Given up on (marked synced below), and
        // counted; the local consent still governs what leaves the gateway.
        Err(e) if e.is_content() => {
            status.other_refusals.fetch_add(1, Ordering::Relaxed);
            tracing::error!(consents = rows.len(), error = %e, "sync: the central database refuses these consents; not retried");
        }
        Err(e) => return Err(e.into()),
    }
    for (user, c) in pending {
        state
            .privacy
            .consent_synced(&user, c.updated_at)
            .map_err(|e| RoundError::Local(e.to_string()))?;
    }
    Ok(())
}

/// Events after a position and how many there are (the lag), read on the
/// blocking pool.
fn read_after(
    state: &SyncHandles,
    from: Option<EventPos>,
    max: usize,
) -> tokio::task::JoinHandle<ReadResult> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        Ok((store.events_after(from, max)?, store.count_after(from)?))
    })
}

type ReadResult = Result<(Vec<(EventPos, EmotionEvent)>, u64), crate::buffer::StoreError>;

/// A read of the buffer started while the previous batches were written.
struct ReadAhead {
    /// The position it reads after; used only if the next round starts there.
    from: Option<EventPos>,
    task: tokio::task::JoinHandle<ReadResult>,
}

/// Ship what the buffer holds after the cursor: two full batches at once on
/// two connections when there is a backlog (after an outage, say), else one
/// batch (waiting up to `batch_max_age` for a partial one to fill). Returns
/// how many events the cursor passed.
async fn ship_events(
    state: &SyncHandles,
    cfg: &SyncConfig,
    gateway: &str,
    client: &mut SyncClient,
    status: &SyncStatus,
    next: &mut Option<Cursor>,
    read_ahead: &mut Option<ReadAhead>,
) -> Result<u64, RoundError> {
    let from = before(*next);
    let max = cfg.batch_max_events;
    let (mut read, lag) = match read_ahead.take() {
        Some(ahead) if ahead.from == from => ahead.task.await,
        _ => read_after(state, from, 2 * max).await,
    }
    .map_err(|e| RoundError::Local(e.to_string()))?
    .map_err(|e| RoundError::Local(e.to_string()))?;
    status.lag_events.store(lag, Ordering::Relaxed);
    let Some((_, first)) = read.first() else {
        *status.oldest_unsynced.lock() = None;
        return Ok(0);
    };
    *status.oldest_unsynced.lock() = Some(first.ingested_at);
    // A small batch of recent events waits a little to grow.
    let age = Utc::now() - first.ingested_at;
    if read.len() < max && age.to_std().unwrap_or_default() < cfg.batch_max_age {
        return Ok(0);
    }
    // A backlog: two full batches, each its own transaction with its own
    // cursor, written concurrently and committed in order. Whatever was read
    // beyond them is read again next round.
    let rest = if read.len() >= 2 * max {
        read.truncate(2 * max);
        read.split_off(max)
    } else {
        read.truncate(max);
        Vec::new()
    };
    let mut passed = 0u64;
    let mut withheld = 0u64;
    let mut batches: Vec<Batch> = Vec::with_capacity(2);
    for group in [read, rest] {
        let Some(&(last_pos, _)) = group.last() else {
            continue;
        };
        let n = group.len() as u64;
        let (positions, events): (Vec<EventPos>, Vec<EmotionEvent>) = group
            .into_iter()
            .filter(|(_, e)| {
                state.privacy.allows(&e.user_id, Purpose::Analytics) && !state.privacy.is_erased(e)
            })
            .map(|(pos, e)| (pos, pseudonymized(&state.pseudonyms, e)))
            .unzip();
        passed += n;
        withheld += n - events.len() as u64;
        batches.push(Batch {
            events,
            positions,
            end: after(last_pos),
        });
    }
    let Some(new_cursor) = batches.last().map(|b| b.end) else {
        return Ok(0);
    };
    // Still a backlog: read the next two batches while these are written, so
    // decoding the buffer overlaps the database's work instead of idling it.
    if batches.len() == 2 {
        let from = before(Some(new_cursor));
        *read_ahead = Some(ReadAhead {
            from,
            task: read_after(state, from, 2 * max),
        });
    }
    let inserted = match batches.as_slice() {
        [one] => write_isolating(state, gateway, client, status, one).await?,
        _ => {
            let pairs: Vec<(&[EmotionEvent], Cursor)> = batches
                .iter()
                .map(|b| (b.events.as_slice(), b.end))
                .collect();
            match client.write_event_batches(gateway, &pairs).await {
                Ok(out) => out.inserted,
                // A row of the pair is refused: write each batch not yet
                // committed on its own, isolating the refused rows. Only a
                // prefix of the pair can have committed; the central cursor
                // says which.
                Err(e) if e.is_row_content() => {
                    tracing::warn!(error = %e, "sync: the central database refuses a row of this backlog; isolating it");
                    let done = client.read_cursor(gateway).await?;
                    let mut inserted = 0;
                    for b in batches.iter().filter(|b| done < Some(b.end)) {
                        inserted += write_isolating(state, gateway, client, status, b).await?;
                    }
                    inserted
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    *next = Some(new_cursor);
    *status.cursor.lock() = *next;
    status.events_shipped.fetch_add(inserted, Ordering::Relaxed);
    status
        .events_withheld
        .fetch_add(withheld, Ordering::Relaxed);
    status
        .batches
        .fetch_add(batches.len() as u64, Ordering::Relaxed);
    status
        .lag_events
        .store(lag.saturating_sub(passed), Ordering::Relaxed);
    tracing::debug!(
        events = passed,
        batches = batches.len(),
        inserted,
        withheld,
        "sync: events shipped"
    );
    Ok(passed)
}

/// One batch of events to ship: the events with their buffer positions, and
/// the cursor after the last position read (withheld events included).
struct Batch {
    events: Vec<EmotionEvent>,
    positions: Vec<EventPos>,
    end: Cursor,
}

/// Write a batch; events the central database refuses on their own are
/// recorded in the dead-letter store (durably, before the cursor passes
/// them) and the rest is written exactly once. Returns the rows inserted.
async fn write_isolating(
    state: &SyncHandles,
    gateway: &str,
    client: &mut SyncClient,
    status: &SyncStatus,
    batch: &Batch,
) -> Result<u64, RoundError> {
    let past: Vec<Cursor> = batch.positions.iter().map(|&p| after(p)).collect();
    let store = state.store.as_ref();
    let out = client
        .write_events_isolating(gateway, &batch.events, &past, batch.end, |r| {
            dead_letter(store, status, &r)
        })
        .await?;
    if out.refused > 0 {
        tracing::error!(
            refused = out.refused,
            written = out.written.inserted,
            transactions = out.attempts,
            "sync: events refused by the central database were dead-lettered; the rest went through"
        );
    }
    Ok(out.written.inserted)
}

/// Record a refused event in the dead-letter store. Idempotent: a batch
/// retried after a crash refuses the same event at the same position again.
fn dead_letter(store: &dyn EventStore, status: &SyncStatus, r: &Refused<'_>) -> Result<(), String> {
    // `after` is the cursor just past the event; its own position is one
    // before (events are never at index u32::MAX, see `after`).
    let position = BufferPosition {
        batch: r.after.batch,
        index: r.after.index.saturating_sub(1),
    };
    let entry = DeadLetter {
        event_id: r.event.event_id,
        user_id: r.event.user_id.clone(),
        position,
        sqlstate: r.error.sqlstate().unwrap_or_default().to_owned(),
        message: r
            .error
            .server_message()
            .map_or_else(|| r.error.to_string(), str::to_owned),
        at: Utc::now(),
    };
    let key = dead_letter_key(position);
    let known = store.get_meta(&key).map_err(|e| e.to_string())?.is_some();
    let value = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    // put_meta flushes: the entry is on disk before the cursor moves past it.
    store.put_meta(&key, &value).map_err(|e| e.to_string())?;
    status.note_dead_letter(entry, !known);
    Ok(())
}

async fn ship_summaries(
    state: &SyncHandles,
    cfg: &SyncConfig,
    gateway: &str,
    client: &mut SyncClient,
    status: &SyncStatus,
) -> Result<(), RoundError> {
    let now = Utc::now();
    let (all, unreadable) = state.analyzer.lock().all_credit_summaries_with_evicted(
        now,
        &cfg.summary_windows,
        |user| crate::checkpoint::load_user(state.store.as_ref(), user),
    );
    for (user, e) in unreadable {
        tracing::warn!(user, error = %e, "sync: an evicted user's stored state is unreadable; no summary");
    }
    let summaries: Vec<_> = all
        .into_iter()
        .filter(|s| state.privacy.allows(&s.user_id, Purpose::Credit))
        .map(|mut s| {
            s.user_id = state.pseudonyms.user(&s.user_id);
            s
        })
        .collect();
    if summaries.is_empty() {
        return Ok(());
    }
    let out = match client.upsert_summaries(gateway, &summaries).await {
        Ok(out) => out,
        // Refused for their content: counted and logged, and recomputed
        // (and tried again) when the next summaries are due; events go on.
        Err(e) if e.is_content() => {
            status.other_refusals.fetch_add(1, Ordering::Relaxed);
            tracing::error!(summaries = summaries.len(), error = %e, "sync: the central database refuses these summaries");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    status
        .summaries_shipped
        .fetch_add(summaries.len() as u64, Ordering::Relaxed);
    tracing::debug!(summaries = summaries.len(), outcome = ?out, "sync: summaries shipped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_and_buffer_positions_line_up() {
        assert_eq!(before(None), None);
        assert_eq!(before(Some(Cursor::new(0, 0))), None);
        assert_eq!(
            before(Some(Cursor::new(3, 2))),
            Some(EventPos { batch: 3, index: 1 })
        );
        assert_eq!(
            before(Some(Cursor::new(3, 0))),
            Some(EventPos {
                batch: 2,
                index: u32::MAX
            })
        );
        assert_eq!(after(EventPos { batch: 3, index: 1 }), Cursor::new(3, 2));
    }

    /// `n` valid events of user `u1`, ingested now.
    fn events(n: usize) -> Vec<EmotionEvent> {
        (0..n)
            .map(|_| {
                let body =
                    serde_json::json!({"user_id": "u1", "source": "text", "emotion_label": "joy"});
                let ctx = emotion_core::IngestContext {
                    user_id: None,
                    session_id: None,
                    gateway_id: "gw",
                    producer: "client",
                    now: Utc::now(),
                    event_id: Uuid::now_v7(),
                    confidence_in_source_range: false,
                };
                let serde_json::Value::Object(m) = body else {
                    unreachable!("an object literal")
                };
                emotion_core::event::validate(&m, &ctx).expect("valid")
            })
            .collect()
    }

    #[test]
    fn the_lag_is_counted_when_read_not_when_the_sync_last_looked() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) =
            crate::buffer::SledStore::open(dir.path(), crate::buffer::StoreOptions::default())
                .expect("open");
        let status = SyncStatus::default();
        let first = events(3);
        let second = events(2);
        store.append(&first).expect("append");
        let b1 = store.events_after(None, 10).expect("read")[0].0.batch;
        // The sync task's own figures, from before the second batch came.
        status.enabled.store(true, Ordering::Relaxed);
        *status.cursor.lock() = Some(Cursor::new(b1, 3));
        status.cursor_read.store(true, Ordering::Relaxed);
        status.lag_events.store(0, Ordering::Relaxed);
        *status.oldest_unsynced.lock() = None;
        let v = status.view(Utc::now(), &store);
        assert_eq!((v.lag_events, v.lag_seconds), (0, 0.0));

        store.append(&second).expect("append");
        let later = Utc::now() + chrono::Duration::seconds(5);
        let v = status.view(later, &store);
        assert_eq!(v.lag_events, 2, "the second batch waits");
        // The age is the task's figure, from its own reads.
        assert_eq!(v.lag_seconds, 0.0);
        *status.oldest_unsynced.lock() = Some(second[0].ingested_at);
        let expected = (later - second[0].ingested_at).num_milliseconds() as f64 / 1000.0;
        assert_eq!(status.view(later, &store).lag_seconds, expected);

        // Part of a batch passed.
        let b2 = store
            .events_after(
                Some(EventPos {
                    batch: b1,
                    index: 2,
                }),
                10,
            )
            .expect("read")[0]
            .0
            .batch;
        *status.cursor.lock() = Some(Cursor::new(b2, 1));
        assert_eq!(status.view(later, &store).lag_events, 1);
        *status.cursor.lock() = Some(Cursor::new(b2, 2));
        assert_eq!(status.view(later, &store).lag_events, 0);

        // The central database has no cursor for this gateway: nothing was
        // shipped, everything waits, whatever the task's last read found
        // (a stale 0 here once let a caller see "drained" too early).
        *status.cursor.lock() = None;
        status.lag_events.store(0, Ordering::Relaxed);
        assert_eq!(status.view(later, &store).lag_events, 5);

        // The central cursor not read yet, or sync off: the task's own
        // figure stands (the whole buffer may long have been shipped).
        status.cursor_read.store(false, Ordering::Relaxed);
        status.lag_events.store(7, Ordering::Relaxed);
        assert_eq!(status.view(later, &store).lag_events, 7);
        status.cursor_read.store(true, Ordering::Relaxed);
        *status.cursor.lock() = Some(Cursor::new(b1, 0));
        status.enabled.store(false, Ordering::Relaxed);
        assert_eq!(status.view(later, &store).lag_events, 7);
    }

    #[test]
    fn dead_letters_are_durable_idempotent_ordered_and_erased_with_their_user() {
        let dir = tempfile::tempdir().expect("tmp");
        let open = || {
            crate::buffer::SledStore::open(dir.path(), crate::buffer::StoreOptions::default())
                .expect("open")
                .0
        };
        let store = open();
        let status = SyncStatus::default();
        let events = events(2);
        let err = SyncError::DeadLetter("stand-in for a server refusal".into());
        // Positions chosen so that string order would differ from buffer order.
        let refuse = |i: usize, after: Cursor| {
            dead_letter(
                &store,
                &status,
                &Refused {
                    event: &events[i],
                    after,
                    error: &err,
                },
            )
            .expect("recorded")
        };
        refuse(0, Cursor::new(10, 1));
        refuse(1, Cursor::new(9, 300));
        // The same event refused again (a batch resumed after a crash).
        refuse(1, Cursor::new(9, 300));
        let v = status.view(Utc::now(), &store);
        assert_eq!((v.dead_letters, v.dead_lettered_since_start), (2, 2));
        assert_eq!(v.dead_letters_recent.len(), 2);

        // Reloaded from disk: in buffer order, with what was recorded.
        drop(store);
        let store = open();
        let reloaded = SyncStatus::default();
        reloaded.load_dead_letters(&store).expect("load");
        let v = reloaded.view(Utc::now(), &store);
        assert_eq!(v.dead_letters, 2);
        let got: Vec<(Uuid, BufferPosition)> = v
            .dead_letters_recent
            .iter()
            .map(|d| (d.event_id, d.position))
            .collect();
        assert_eq!(
            got,
            [
                (
                    events[1].event_id,
                    BufferPosition {
                        batch: 9,
                        index: 299
                    }
                ),
                (
                    events[0].event_id,
                    BufferPosition {
                        batch: 10,
                        index: 0
                    }
                ),
            ]
        );
        assert_eq!(v.dead_letters_recent[0].user_id, "u1");
        assert!(v.dead_letters_recent[0].message.contains("stand-in"));

        // An erasure of the user takes their dead letters along.
        forget_dead_letters(&store, &reloaded, "someone-else").expect("forget");
        assert_eq!(reloaded.view(Utc::now(), &store).dead_letters, 2);
        forget_dead_letters(&store, &reloaded, "u1").expect("forget");
        let v = reloaded.view(Utc::now(), &store);
        assert_eq!((v.dead_letters, v.dead_letters_recent.len()), (0, 0));
        assert!(
            store
                .meta_with_prefix(DEAD_LETTER_PREFIX)
                .expect("scan")
                .is_empty()
        );
    }
}
