//! `EventStore` on sled.
//!
//! ```text
//! <storage.path>/ledger                 acknowledgements (ledger.rs)
//! <storage.path>/sled/                  the engine; its trees:
//!     batches   seq (u64 BE) → batch frame, or after compaction the frames
//!               of consecutive batches, keyed by the first one's number
//!     ids       seq (u64 BE) → the event ids of the value with that key,
//!               16 bytes each
//!     postings  kind, name, first seq → seqs of batches holding events of
//!               that user (kind u) or session (kind s)
//!     meta      key → meta frame
//!     state     counters and how far postings are written
//! <storage.path>/sled.damaged-<time>/   a damaged engine, moved aside
//! <storage.path>/needs-repair           left by a scrub that found damage
//! ```
//!
//! sled costs several microseconds per key written, so nothing is written per
//! event: one batch value, one ids value, and the postings of the last
//! `postings_flush_events` events gathered in RAM and appended to one value
//! per user and per session. A crash loses only those RAM postings, and the
//! next open rebuilds them from the batches after `state.postings_through`.
//!
//! sled keeps a boxed page and its log locations in RAM for every page it has
//! allocated, and a leaf holds at most 16 entries, so its memory grows with
//! the number of values, not their size. Values are therefore large (up to
//! `value_bytes`, 48 KiB, in 4 MiB segments), and the small values of
//! low-rate group commits are compacted into one as they are written
//! ([`SledStore::compact`]): about one value per 36 to 60 KiB of events at
//! any rate. A batch keeps its number inside a compacted value, so positions,
//! the sync cursor and the ledger do not change.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use emotion_core::EmotionEvent;
use hashbrown::{HashMap, HashSet};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dedup::DedupWindow;
use crate::ledger::{Ledger, LedgerFound, LedgerState};
use crate::record::{self, Batch, BatchHeader, Slot};
use crate::{
    DamageReport, EventPos, EventQuery, EventStore, RepairReport, ScanReport, ScrubReport,
    StallBeforeFlush, StoreError, StoreStats, fsperm, salvage,
};

const ENGINE_DIR: &str = "sled";
const LEDGER_FILE: &str = "ledger";
const REPAIR_MARKER: &str = "needs-repair";
const REPAIRS_KEY: &str = "buffer/repairs";
/// Meta keys under this prefix record the generation an erasure gave a batch,
/// so salvage never brings back a copy from before the erasure.
const GEN_PREFIX: &str = "buffer/gen/";
const STATE_KEY: &[u8] = b"state";
/// sled's segment size for a new store. sled keeps a boxed page and its log
/// locations in RAM for every page it ever allocated, and splits a leaf at 16
/// entries, so its memory grows with the number of entries. Fewer, larger
/// values need larger segments: sled keeps any log record over segment
/// size / 4 out of line, outside its cache's accounting. A store keeps the
/// segment size it was created with (see [`segment_size_of`]).
const SEGMENT_BYTES: usize = 4 << 20;
/// Largest batch value written (a single larger event gets a value of its
/// own): a leaf of 17 such values stays under SEGMENT_BYTES / 4.
const MAX_VALUE_BYTES: usize = 48 * 1024;
/// A user's or session's postings are appended to their newest value until it
/// is this large, so the postings tree grows by values of this size, not by a
/// value per user per flush.
const POSTINGS_VALUE_BYTES: usize = 4 * 1024;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The engine's page cache.
    pub cache_bytes: u64,
    /// Ids held by the duplicate window.
    pub dedup_window: usize,
    /// Events whose postings gather in RAM before they are written.
    pub postings_flush_events: usize,
    /// Largest value written: a group commit is cut into values of at most
    /// this size, and small values are compacted into values of ¾ of it
    /// and more. The default suits sled's segment size; tests make it small
    /// so that cutting and compaction happen within a few events.
    pub value_bytes: usize,
    /// Test-only: stall the writer between insert and flush.
    pub stall_before_flush: Option<StallBeforeFlush>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 16 << 20,
            dedup_window: 262_144,
            postings_flush_events: 65_536,
            value_bytes: MAX_VALUE_BYTES,
            stall_before_flush: None,
        }
    }
}

/// What an open found and did.
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    pub batches: u64,
    pub events: u64,
    /// Batches read at open to rebuild the postings kept in RAM.
    pub reindexed_batches: u64,
    pub took_ms: u64,
    /// Set when the store was damaged and rebuilt at this open.
    pub repaired: Option<RepairReport>,
    pub ledger_damaged: bool,
}

/// Counters persisted with every commit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct PersistState {
    /// Batches below this number have their postings on disk.
    postings_through: u64,
    live: u64,
    batches: u64,
    /// Acknowledged slots up to the newest batch.
    cum: u64,
    next_seq: u64,
    meta_version: u64,
}

/// Postings not yet written: user or session → batch numbers.
#[derive(Debug, Default)]
struct RecentPostings {
    users: HashMap<String, Vec<u64>>,
    sessions: HashMap<String, Vec<u64>>,
    events: usize,
}

impl RecentPostings {
    fn add<E: std::borrow::Borrow<EmotionEvent>>(&mut self, seq: u64, slots: &[Slot<E>]) {
        for slot in slots {
            if let Slot::Event(e) = slot {
                let e = e.borrow();
                for (map, key) in [
                    (&mut self.users, &e.user_id),
                    (&mut self.sessions, &e.session_id),
                ] {
                    let list = map.entry_ref(key.as_str()).or_default();
                    if list.last() != Some(&seq) {
                        list.push(seq);
                    }
                }
                self.events += 1;
            }
        }
    }
}

/// What readers share with the writer.
#[derive(Debug)]
struct Ram {
    recent: RecentPostings,
    dedup: DedupWindow,
    state: PersistState,
}

/// The writer's own state, held while a batch is written.
#[derive(Debug)]
struct Writer {
    ledger: Ledger,
    appended: u64,
    /// Small values written since the last large one, to be compacted into
    /// one (see [`SledStore::compact`]).
    run: Vec<u64>,
    run_bytes: usize,
}

/// The sled-backed buffer.
#[derive(Debug)]
pub struct SledStore {
    dir: PathBuf,
    /// Replaced by `compact_log` (a reopen); readers take it with
    /// `read_recursive`, so a waiting reopen never deadlocks a nested read.
    engine: RwLock<Engine>,
    ram: RwLock<Ram>,
    writer: Mutex<Writer>,
    /// Batches below this are durable and acknowledged (the high-water mark).
    durable: AtomicU64,
    corrupt_skipped: AtomicU64,
    /// Batches read at open to rebuild the RAM postings.
    reindexed: AtomicU64,
    /// Set when a reopen of the engine failed: the store refuses writes
    /// (nothing is acknowledged that is not durable) until the next start.
    broken: std::sync::atomic::AtomicBool,
    damage: Mutex<DamageReport>,
    opts: StoreOptions,
}

/// Run `f`, turning a panic of the storage engine into an error.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(operation = what, panic = %msg, "the storage engine panicked");
            Err(StoreError::Panicked(format!("{what}: {msg}")))
        }
    }
}

/// Entries visited per sled iterator. A long-lived sled iterator kept the
/// pages it passed in memory in a trial (a full scan grew with the store);
/// re-opening it every few entries lets them go.
const WALK_CHUNK: usize = 64;

/// A visitor of (key, value) entries; returns false to stop.
type VisitEntry<'a> = dyn FnMut(&[u8], sled::IVec) -> Result<bool, StoreError> + 'a;

/// Visit `tree`'s entries from `from` up to `until` (exclusive; `None`: the
/// end) in key order; `visit` returns false to stop.
fn walk(
    tree: &sled::Tree,
    from: &[u8],
    until: Option<&[u8]>,
    visit: &mut VisitEntry<'_>,
) -> Result<(), StoreError> {
    let mut start = from.to_vec();
    loop {
        type Items = Result<Vec<(sled::IVec, sled::IVec)>, sled::Error>;
        let items: Items = match until {
            Some(u) => tree.range(start.as_slice()..u).take(WALK_CHUNK).collect(),
            None => tree.range(start.as_slice()..).take(WALK_CHUNK).collect(),
        };
        let items = items?;
        let n = items.len();
        for (k, v) in items {
            if !visit(&k, v)? {
                return Ok(());
            }
            // The smallest key after `k`.
            start = k.to_vec();
            start.push(0);
        }
        if n < WALK_CHUNK {
            return Ok(());
        }
    }
}

/// The frames of one stored value, in order, as (batch number, frame). A value
/// holds one frame, stored under its own number, or several consecutive ones
/// under the first one's number; either may be packed (compressed, see
/// `record.rs`). What cannot be split (a
/// damaged frame and everything after it in the value) is returned as one
/// frame numbered where the next was expected, so that decoding it reports the
/// damage; a value whose first frame is not the one its key names likewise.
fn split_frames(key_seq: u64, v: &sled::IVec) -> Vec<(u64, sled::IVec)> {
    let unpacked;
    let v = if v.starts_with(&record::PACKED_MAGIC) {
        match record::decode_packed(v) {
            Ok((frames, len)) if len == v.len() => {
                unpacked = sled::IVec::from(frames);
                &unpacked
            }
            // Decoding it as a frame reports the damage.
            _ => return vec![(key_seq, v.clone())],
        }
    } else {
        v
    };
    if v.first() != Some(&record::VERSION) {
        return vec![(key_seq, v.clone())];
    }
    let mut out: Vec<(u64, sled::IVec)> = Vec::new();
    let mut at = 0;
    while at < v.len() {
        let expected = out.last().map_or(key_seq, |(s, _)| s + 1);
        match record::check_batch_frame(&v[at..]) {
            Ok((h, len)) if (at > 0 && h.seq >= expected) || h.seq == key_seq => {
                out.push((h.seq, v.subslice(at, len)));
                at += len;
            }
            _ => {
                out.push((expected, v.subslice(at, v.len() - at)));
                break;
            }
        }
    }
    out
}

/// A stored value's key and its frames.
type Held = (u64, Vec<(u64, sled::IVec)>);

/// The stored value holding batch `seq` (its key and frames), if any.
fn value_holding(tree: &sled::Tree, seq: u64) -> Result<Option<Held>, StoreError> {
    let key = seq.to_be_bytes();
    let found = match tree.get(key)? {
        Some(v) => Some((seq, v)),
        // Not a value of its own: maybe inside a compacted one before it.
        None => match tree.range(..key).next_back() {
            None => None,
            Some(item) => {
                let (k, v) = item?;
                Some((seq_of(&k), v))
            }
        },
    };
    Ok(found
        .map(|(k, v)| (k, split_frames(k, &v)))
        .filter(|(_, frames)| frames.iter().any(|(s, _)| *s == seq)))
}

/// Visit the batches from `from` up to `until` (exclusive) in order, by point
/// reads: batch numbers are dense, and sled's cache accounts for point reads
/// but, in a trial, not for what an iterator loads (a full scan by iterator
/// grew with the store). A short iterator finds the next value across a gap.
fn walk_batches(
    engine: &RwLock<Engine>,
    from: u64,
    until: u64,
    visit: &mut dyn FnMut(u64, sled::IVec) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut seq = from;
    while seq < until {
        // The engine is taken for one value at a time, so a reopen
        // (`compact_log`) can slip in between two reads of a long walk.
        let (frames, next) = {
            let e = engine.read_recursive();
            match value_holding(&e.batches, seq)? {
                Some((_, frames)) => (frames, None),
                None => match e
                    .batches
                    .range(seq.to_be_bytes()..until.to_be_bytes())
                    .next()
                {
                    None => return Ok(()),
                    Some(item) => {
                        let (k, v) = item?;
                        let key = seq_of(&k);
                        (split_frames(key, &v), Some(key))
                    }
                },
            }
        };
        let mut moved = false;
        for (at, frame) in frames {
            if at < seq || at >= until {
                continue;
            }
            if !visit(at, frame)? {
                return Ok(());
            }
            seq = at + 1;
            moved = true;
        }
        if !moved {
            // A damaged value whose frames are numbered before its key.
            match next {
                Some(key) if key >= seq => seq = key + 1,
                _ => return Ok(()),
            }
        }
    }
    Ok(())
}

fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(b)
}

fn postings_prefix(kind: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + name.len() + 8);
    k.push(kind);
    k.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn encode_seqs(seqs: &[u64]) -> Vec<u8> {
    // Deltas are small, and postcard writes integers as varints.
    let mut prev = 0;
    let deltas: Vec<u64> = seqs
        .iter()
        .map(|s| {
            let d = s - prev;
            prev = *s;
            d
        })
        .collect();
    postcard::to_allocvec(&deltas).unwrap_or_default()
}

fn decode_seqs(bytes: &[u8]) -> Vec<u64> {
    let deltas: Vec<u64> = postcard::from_bytes(bytes).unwrap_or_default();
    let mut acc = 0u64;
    deltas
        .into_iter()
        .map(|d| {
            acc = acc.saturating_add(d);
            acc
        })
        .collect()
}

fn pack_ids<E: std::borrow::Borrow<EmotionEvent>>(slots: &[Slot<E>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slots.len() * 16);
    for s in slots {
        let id = match s {
            Slot::Event(e) => e.borrow().event_id,
            Slot::Erased(id) => *id,
        };
        out.extend_from_slice(id.as_bytes());
    }
    out
}

fn engine_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        // sled reports its file lock failing as an I/O error with this text.
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            StoreError::InUse {
                path: path.display().to_string(),
            }
        }
        other => StoreError::Engine(other),
    }
}

/// The engine and its trees.
#[derive(Debug)]
struct Engine {
    db: sled::Db,
    batches: sled::Tree,
    ids: sled::Tree,
    postings: sled::Tree,
    meta: sled::Tree,
    state_tree: sled::Tree,
}

fn open_engine(path: &Path, cache_bytes: u64) -> Result<Engine, StoreError> {
    fsperm::private_dir(path).map_err(|source| StoreError::Dir {
        path: path.display().to_string(),
        source,
    })?;
    let config = sled::Config::new()
        .path(path)
        .segment_size(segment_size_of(path))
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        // We flush explicitly in every group commit; no background timer.
        .flush_every_ms(None);
    // A store closed a moment ago in this process releases its file lock from
    // a background thread; wait briefly before calling the store in use.
    let deadline = Instant::now() + Duration::from_secs(3);
    let db = loop {
        match config.open().map_err(|e| engine_error(path, e)) {
            Err(StoreError::InUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    let engine = Engine {
        batches: db.open_tree("batches")?,
        ids: db.open_tree("ids")?,
        postings: db.open_tree("postings")?,
        meta: db.open_tree("meta")?,
        state_tree: db.open_tree("state")?,
        db,
    };
    // sled creates its files with the process umask.
    fsperm::tighten_tree(path).map_err(|source| StoreError::Dir {
        path: path.display().to_string(),
        source,
    })?;
    Ok(engine)
}

/// The segment size of the store at `path`: sled refuses to open a store with
/// another one than it was created with, so a store from before
/// [`SEGMENT_BYTES`] keeps its own (sled writes it in the text file `conf` as
/// `segment_size: <bytes>`). A new store, or an unreadable `conf` (sled then
/// writes a new one), gets [`SEGMENT_BYTES`].
fn segment_size_of(path: &Path) -> usize {
    let Ok(conf) = std::fs::read(path.join("conf")) else {
        return SEGMENT_BYTES;
    };
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        // The bounds sled itself accepts.
        .filter(|n| n.is_power_of_two() && (256..=1 << 24).contains(n))
        .unwrap_or(SEGMENT_BYTES)
}

/// Why an opened engine cannot be used as it is.
fn check_against_ledger(
    first: Option<BatchHeader>,
    last: Option<BatchHeader>,
    ledger: &LedgerState,
    found: LedgerFound,
) -> Option<String> {
    if matches!(found, LedgerFound::Missing | LedgerFound::Unreadable) {
        return None;
    }
    let store_cum = last.map_or(ledger.floor_cum, |h| h.cum_after());
    if ledger.acked_total > store_cum {
        return Some(format!(
            "{} acknowledged events are missing at the end of the store (ledger {}, store {})",
            ledger.acked_total - store_cum,
            ledger.acked_total,
            store_cum
        ));
    }
    if let Some(f) = first
        && f.seq > ledger.floor_seq
        && f.cum_before > ledger.floor_cum
    {
        return Some(format!(
            "{} acknowledged events are missing at the start of the store",
            f.cum_before - ledger.floor_cum
        ));
    }
    None
}

impl SledStore {
    /// How many values the engine holds for batches (a full read of the
    /// tree: for tests and benchmarks). sled's memory grows with it.
    pub fn stored_values(&self) -> Result<u64, StoreError> {
        Ok(self.engine.read_recursive().batches.len() as u64)
    }

    /// Open (or create) the buffer in `dir`. A damaged store is moved aside
    /// and rebuilt from what can be salvaged; only a store in use by another
    /// process, or a directory that cannot be written, is an error.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(SledStore, OpenReport), StoreError> {
        let began = Instant::now();
        fsperm::private_dir(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let ledger_path = dir.join(LEDGER_FILE);
        let (ledger, found) = Ledger::open(&ledger_path).map_err(StoreError::Ledger)?;
        if found == LedgerFound::OneSlotDamaged || found == LedgerFound::Unreadable {
            tracing::warn!(state = ?found, "the acknowledgement ledger is damaged; losses in the newest batches may be undercounted");
        }
        let lstate = ledger.state();
        let engine_dir = dir.join(ENGINE_DIR);
        let marker = dir.join(REPAIR_MARKER);
        let engine_len = std::fs::metadata(engine_dir.join("db")).map_or(0, |m| m.len());
        let reason = if marker.exists() {
            drop(ledger);
            "a scrub found damage".to_owned()
        } else if engine_len < lstate.engine_len {
            // sled's recovery zeroes what follows damage it reads; a file cut
            // short is salvaged before sled sees it.
            drop(ledger);
            format!(
                "the store's main file is {engine_len} bytes, {} at the last commit",
                lstate.engine_len
            )
        } else {
            match guard("open", || {
                Self::open_checked(dir, &engine_dir, &opts, ledger, found)
            }) {
                Ok(Ok(store)) => return store.finish_open(found, began, None),
                Ok(Err(reason)) => reason,
                Err(e @ StoreError::InUse { .. }) => return Err(e),
                Err(e @ StoreError::Dir { .. }) => return Err(e),
                Err(e) => format!("the store does not open: {e}"),
            }
        };
        tracing::error!(%reason, path = %engine_dir.display(), "the buffer is damaged; moving it aside and salvaging");
        // The ledger went into the failed attempt; nothing was written to it.
        let (ledger, _) = Ledger::open(&ledger_path).map_err(StoreError::Ledger)?;
        let (store, repair) =
            Self::repair(dir, &engine_dir, &opts, ledger, lstate, found, &reason)?;
        let _ = std::fs::remove_file(&marker);
        store.finish_open(found, began, Some(repair))
    }

    /// Open the engine and compare it with the ledger. `Ok(Err(reason))`: the
    /// store opened but lost acknowledged batches.
    fn open_checked(
        dir: &Path,
        engine_dir: &Path,
        opts: &StoreOptions,
        ledger: Ledger,
        found: LedgerFound,
    ) -> Result<Result<SledStore, String>, StoreError> {
        let lstate = ledger.state();
        let engine = open_engine(engine_dir, opts.cache_bytes)?;
        let store = SledStore::from_engine(dir, engine, opts.clone(), ledger);
        // Migrate a store of version-1 batches (no headers) once.
        if let Some((k, v)) = store.engine.read_recursive().batches.first()?
            && v.first() == Some(&record::VERSION_1)
        {
            store.migrate_v1(seq_of(&k))?;
        }
        let first = store.edge_header(true)?;
        let last = store.edge_header(false)?;
        if let Some(reason) = check_against_ledger(first, last, &lstate, found) {
            return Ok(Err(reason));
        }
        store.load_state(last)?;
        Ok(Ok(store))
    }

    fn from_engine(dir: &Path, e: Engine, opts: StoreOptions, ledger: Ledger) -> SledStore {
        SledStore {
            dir: dir.to_owned(),
            engine: RwLock::new(e),
            ram: RwLock::new(Ram {
                recent: RecentPostings::default(),
                dedup: DedupWindow::new(opts.dedup_window),
                state: PersistState::default(),
            }),
            writer: Mutex::new(Writer {
                ledger,
                appended: 0,
                run: Vec::new(),
                run_bytes: 0,
            }),
            reindexed: AtomicU64::new(0),
            broken: std::sync::atomic::AtomicBool::new(false),
            durable: AtomicU64::new(0),
            corrupt_skipped: AtomicU64::new(0),
            damage: Mutex::new(DamageReport::default()),
            opts,
        }
    }

    /// The header of the first (or last) batch; an unreadable one is an error.
    fn edge_header(&self, first: bool) -> Result<Option<BatchHeader>, StoreError> {
        let item = if first {
            self.engine.read_recursive().batches.first()?
        } else {
            self.engine.read_recursive().batches.last()?
        };
        let Some((k, v)) = item else {
            return Ok(None);
        };
        let frames = split_frames(seq_of(&k), &v);
        let edge = if first { frames.first() } else { frames.last() };
        match edge {
            None => Ok(None),
            Some((seq, frame)) => record::batch_header(*seq, frame)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { seq: *seq, source }),
        }
    }

    /// Read the persisted counters and rebuild the RAM postings and the
    /// duplicate window from the newest batches.
    fn load_state(&self, last: Option<BatchHeader>) -> Result<(), StoreError> {
        let mut state: PersistState =
            match self.engine.read_recursive().state_tree.get(STATE_KEY)? {
                Some(v) => postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt {
                    seq: 0,
                    source: record::RecordError::Decode(format!("store state: {e}")),
                })?,
                None => PersistState::default(),
            };
        let store_next = last.map_or(0, |h| h.seq + 1);
        // Batches written after the state (a crash between the two) are
        // counted here; postings of everything after `postings_through` are
        // rebuilt below.
        let mut ram_recent = RecentPostings::default();
        let mut reindexed = 0u64;
        let from = state.postings_through.min(store_next);
        walk_batches(&self.engine, from, u64::MAX, &mut |seq, v| {
            match record::decode_batch(seq, &v) {
                Ok((h, batch)) => {
                    ram_recent.add(seq, &batch);
                    if seq >= state.next_seq {
                        state.live += batch.iter().filter(|s| s.event().is_some()).count() as u64;
                        state.batches += 1;
                        state.cum = h.cum_after();
                        state.next_seq = seq + 1;
                    }
                    reindexed += 1;
                }
                Err(e) => {
                    self.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(batch = seq, error = %e, "skipping an unreadable batch while rebuilding postings");
                }
            }
            Ok(true)
        })?;
        if let Some(h) = last {
            state.cum = state.cum.max(h.cum_after());
            state.next_seq = state.next_seq.max(h.seq + 1);
        }
        let mut ram = self.ram.write();
        ram.recent = ram_recent;
        ram.state = state;
        drop(ram);
        self.reload_dedup()?;
        self.reindexed.store(reindexed, Ordering::Relaxed);
        Ok(())
    }

    /// Fill the duplicate window with the ids of the newest batches.
    fn reload_dedup(&self) -> Result<(), StoreError> {
        let cap = self.opts.dedup_window;
        let mut chunks: Vec<sled::IVec> = Vec::new();
        let mut held = 0usize;
        for item in self.engine.read_recursive().ids.iter().rev() {
            let (_, v) = item?;
            held += v.len() / 16;
            chunks.push(v);
            if held >= cap {
                break;
            }
        }
        let mut ram = self.ram.write();
        for v in chunks.iter().rev() {
            for id in v.chunks_exact(16) {
                if let Ok(b) = <[u8; 16]>::try_from(id) {
                    ram.dedup.insert(&Uuid::from_bytes(b));
                }
            }
        }
        Ok(())
    }

    fn finish_open(
        self,
        found: LedgerFound,
        began: Instant,
        repaired: Option<RepairReport>,
    ) -> Result<(SledStore, OpenReport), StoreError> {
        let state = self.ram.read().state;
        let ledger_damaged = matches!(found, LedgerFound::OneSlotDamaged | LedgerFound::Unreadable);
        {
            // Bring the ledger up to what the store holds: batches flushed
            // just before a crash, a ledger that is new, missing or damaged.
            let mut w = self.writer.lock();
            let mut l = w.ledger.state();
            if repaired.is_none()
                && (found == LedgerFound::Missing || found == LedgerFound::Unreadable)
            {
                let first = self.edge_header(true).ok().flatten();
                l.floor_seq = first.map_or(state.next_seq, |h| h.seq);
                l.floor_cum = first.map_or(state.cum, |h| h.cum_before);
            }
            l.acked_total = l.acked_total.max(state.cum);
            // One number is skipped at every open: a batch inserted but not
            // made durable before a crash may have had the next one, and a
            // number is never given to two batches.
            let next_seq = l.next_seq.max(state.next_seq) + 1;
            l.next_seq = next_seq;
            l.engine_len = self.engine_len();
            w.ledger.commit(l).map_err(StoreError::Ledger)?;
            let mut ram = self.ram.write();
            ram.state.next_seq = next_seq;
            ram.state.cum = ram.state.cum.max(l.acked_total);
            self.durable.store(next_seq, Ordering::Release);
        }
        let mut damage = DamageReport {
            ledger_damaged,
            ..DamageReport::default()
        };
        if let Ok(Some(v)) = self.get_meta(REPAIRS_KEY)
            && let Ok(list) = serde_json::from_slice::<Vec<RepairReport>>(&v)
        {
            damage.acknowledged_lost = list.iter().map(|r| r.acknowledged_lost).sum();
            damage.repairs = list;
        }
        *self.damage.lock() = damage;
        let state = self.ram.read().state;
        let report = OpenReport {
            batches: state.batches,
            events: state.live,
            reindexed_batches: self.reindexed.load(Ordering::Relaxed),
            took_ms: began.elapsed().as_millis() as u64,
            repaired,
            ledger_damaged,
        };
        Ok((self, report))
    }

    /// Rewrite version-1 batches with headers (cumulative counts from 0).
    fn migrate_v1(&self, first_seq: u64) -> Result<(), StoreError> {
        tracing::info!("migrating the buffer to batch format 2 (one pass)");
        let mut cum = 0u64;
        for item in self
            .engine
            .read_recursive()
            .batches
            .range(first_seq.to_be_bytes()..)
        {
            let (k, v) = item?;
            let seq = seq_of(&k);
            let Ok((mut h, batch)) = record::decode_batch(seq, &v) else {
                self.engine.read_recursive().batches.remove(&k)?;
                continue;
            };
            h.cum_before = cum;
            cum = h.cum_after();
            self.engine
                .read_recursive()
                .batches
                .insert(&k, record::encode_batch(&h, &batch)?)?;
            self.engine
                .read_recursive()
                .ids
                .insert(&k, pack_ids(&batch))?;
        }
        // Old metadata values were plain bytes: frame them.
        let mut version = 0u64;
        for item in self.engine.read_recursive().meta.iter() {
            let (k, v) = item?;
            if record::decode_meta(&v).is_err() {
                version += 1;
                let key = String::from_utf8_lossy(&k).into_owned();
                self.engine
                    .read_recursive()
                    .meta
                    .insert(&k, record::encode_meta(version, &key, Some(&v)))?;
            }
        }
        let state = PersistState {
            meta_version: version,
            ..PersistState::default()
        };
        self.engine
            .read_recursive()
            .state_tree
            .insert(STATE_KEY, postcard::to_allocvec(&state)?)?;
        self.engine.read_recursive().db.flush()?;
        Ok(())
    }

    /// Move the damaged engine aside, salvage every frame whose checksum
    /// verifies, and build a fresh store from them.
    fn repair(
        dir: &Path,
        engine_dir: &Path,
        opts: &StoreOptions,
        ledger_file: Ledger,
        ledger: LedgerState,
        found: LedgerFound,
        reason: &str,
    ) -> Result<(SledStore, RepairReport), StoreError> {
        let now = Utc::now();
        let mut moved = dir.join(format!(
            "{ENGINE_DIR}.damaged-{}",
            now.format("%Y%m%dT%H%M%S")
        ));
        let mut n = 1;
        while moved.exists() {
            n += 1;
            moved = dir.join(format!(
                "{ENGINE_DIR}.damaged-{}-{n}",
                now.format("%Y%m%dT%H%M%S")
            ));
        }
        let found_frames = if engine_dir.exists() {
            std::fs::rename(engine_dir, &moved).map_err(|source| StoreError::Dir {
                path: moved.display().to_string(),
                source,
            })?;
            salvage::scan_dir(&moved).map_err(|source| StoreError::Dir {
                path: moved.display().to_string(),
                source,
            })?
        } else {
            salvage::Salvaged::default()
        };
        let engine = open_engine(engine_dir, opts.cache_bytes)?;
        let store = SledStore::from_engine(dir, engine, opts.clone(), ledger_file);
        let ledger_known = !matches!(found, LedgerFound::Missing | LedgerFound::Unreadable);
        let outcome = store.rebuild_from(found_frames, ledger, ledger_known)?;
        let report = RepairReport {
            at: now,
            reason: reason.to_owned(),
            moved_to: moved.display().to_string(),
            salvaged_batches: outcome.batches,
            salvaged_events: outcome.events,
            acknowledged_lost: outcome.lost,
        };
        let mut list: Vec<RepairReport> = store
            .get_meta(REPAIRS_KEY)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        list.push(report.clone());
        store.put_meta(REPAIRS_KEY, &serde_json::to_vec(&list).unwrap_or_default())?;
        tracing::error!(
            acknowledged_lost = report.acknowledged_lost,
            salvaged_batches = report.salvaged_batches,
            salvaged_events = report.salvaged_events,
            moved_to = %report.moved_to,
            "buffer repaired"
        );
        Ok((store, report))
    }

    /// Write salvaged frames into this (fresh) store and count the loss.
    fn rebuild_from(
        &self,
        s: salvage::Salvaged,
        ledger: LedgerState,
        ledger_known: bool,
    ) -> Result<RebuildOutcome, StoreError> {
        // Metadata first: the generations erasures gave batches decide which
        // salvaged copies may be used.
        let mut max_version = 0;
        for (key, (version, value)) in &s.meta {
            max_version = max_version.max(*version);
            self.engine.read_recursive().meta.insert(
                key.as_bytes(),
                record::encode_meta(*version, key, value.as_deref()),
            )?;
        }
        let mut state = PersistState {
            meta_version: max_version,
            ..PersistState::default()
        };
        let min_seq = if ledger_known { ledger.floor_seq } else { 0 };
        let mut recent = RecentPostings::default();
        let mut outcome = RebuildOutcome::default();
        let mut present_acked = 0u64;
        let mut prev_cum: Option<u64> = None;
        let mut gaps = 0u64;
        // The rebuilt store is whole by definition: cumulative counts are
        // renumbered without the lost batches (the loss is recorded in the
        // repair report), so a later scrub counts only new damage.
        let mut running: Option<u64> = ledger_known.then_some(ledger.floor_cum);
        for (seq, (header, bytes)) in s.batches.range(min_seq..) {
            let required_gen = s
                .meta
                .get(&format!("{GEN_PREFIX}{seq:016x}"))
                .and_then(|(_, v)| v.as_ref())
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map_or(0, u32::from_le_bytes);
            if header.generation < required_gen {
                tracing::warn!(
                    batch = seq,
                    "only a copy from before an erasure survived; dropping the batch"
                );
                continue;
            }
            let Ok((_, batch)) = record::decode_batch(*seq, bytes) else {
                continue;
            };
            if let Some(p) = prev_cum {
                gaps += header.cum_before.saturating_sub(p);
            }
            prev_cum = Some(header.cum_after());
            if !ledger_known || *seq < ledger.next_seq {
                present_acked += u64::from(header.slots);
            }
            let cum_before = *running.get_or_insert(header.cum_before);
            let frame = record::with_cum_before(bytes, cum_before);
            running = Some(cum_before + u64::from(header.slots));
            self.engine
                .read_recursive()
                .batches
                .insert(seq.to_be_bytes(), record::encode_packed(&frame))?;
            self.engine
                .read_recursive()
                .ids
                .insert(seq.to_be_bytes(), pack_ids(&batch))?;
            recent.add(*seq, &batch);
            if recent.events >= self.opts.postings_flush_events {
                self.write_postings(&recent)?;
                recent = RecentPostings::default();
                state.postings_through = seq + 1;
            }
            let live = batch.iter().filter(|s| s.event().is_some()).count() as u64;
            outcome.batches += 1;
            outcome.events += live;
            state.live += live;
            state.batches += 1;
            state.next_seq = seq + 1;
        }
        outcome.lost = if ledger_known {
            ledger
                .acked_total
                .saturating_sub(ledger.floor_cum)
                .saturating_sub(present_acked)
        } else {
            gaps
        };
        state.cum = running.unwrap_or(ledger.floor_cum);
        state.next_seq = state.next_seq.max(ledger.next_seq);
        {
            let mut w = self.writer.lock();
            let first = s.batches.range(min_seq..).next().map(|(k, _)| *k);
            let l = LedgerState {
                next_seq: state.next_seq,
                acked_total: state.cum,
                floor_seq: if ledger_known {
                    ledger.floor_seq
                } else {
                    first.unwrap_or(state.next_seq)
                },
                floor_cum: if ledger_known {
                    ledger.floor_cum
                } else {
                    s.batches
                        .range(min_seq..)
                        .next()
                        .map_or(state.cum, |(_, (h, _))| h.cum_before)
                },
                engine_len: 0,
            };
            w.ledger.commit(l).map_err(StoreError::Ledger)?;
        }
        self.engine
            .read_recursive()
            .state_tree
            .insert(STATE_KEY, postcard::to_allocvec(&state)?)?;
        self.engine.read_recursive().db.flush()?;
        let mut ram = self.ram.write();
        ram.recent = recent;
        ram.state = state;
        drop(ram);
        self.reload_dedup()?;
        Ok(outcome)
    }

    /// Write the RAM postings to disk: appended to the newest value of each
    /// user and session while it is under POSTINGS_VALUE_BYTES, else as a new
    /// value keyed by its first batch number.
    fn write_postings(&self, recent: &RecentPostings) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let engine = self.engine.read_recursive();
        for (kind, map) in [(b'u', &recent.users), (b's', &recent.sessions)] {
            for (name, seqs) in map {
                let Some(&first) = seqs.first() else { continue };
                let prefix = postings_prefix(kind, name);
                let newest = match engine.postings.scan_prefix(&prefix).next_back() {
                    Some(item) => Some(item?),
                    None => None,
                };
                let (key, merged) = match newest {
                    Some((k, v))
                        if k.len() == prefix.len() + 8 && v.len() < POSTINGS_VALUE_BYTES =>
                    {
                        let mut all = decode_seqs(&v);
                        // A rebuild after a crash may write the same seqs again.
                        let last = all.last().copied();
                        all.extend(seqs.iter().copied().filter(|s| Some(*s) > last));
                        (k.to_vec(), all)
                    }
                    _ => {
                        let mut key = prefix;
                        key.extend_from_slice(&first.to_be_bytes());
                        (key, seqs.clone())
                    }
                };
                batch.insert(key, encode_seqs(&merged));
            }
        }
        engine.postings.apply_batch(batch)?;
        Ok(())
    }

    /// Write the RAM postings to disk, then clear them: a reader sees every
    /// posting on one side or the other throughout. Call with the writer lock.
    fn move_postings_to_disk(&self, through: u64) -> Result<(), StoreError> {
        {
            let ram = self.ram.read();
            self.write_postings(&ram.recent)?;
        }
        let mut ram = self.ram.write();
        ram.recent = RecentPostings::default();
        ram.state.postings_through = through;
        Ok(())
    }

    fn persist_state(&self, state: &PersistState) -> Result<(), StoreError> {
        self.engine
            .read_recursive()
            .state_tree
            .insert(STATE_KEY, postcard::to_allocvec(state)?)?;
        Ok(())
    }

    fn read_batch(&self, seq: u64) -> Result<Option<(BatchHeader, Batch)>, StoreError> {
        let frame = value_holding(&self.engine.read_recursive().batches, seq)?
            .and_then(|(_, frames)| frames.into_iter().find(|(s, _)| *s == seq));
        match frame {
            None => Ok(None),
            Some((_, v)) => record::decode_batch(seq, &v)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { seq, source }),
        }
    }

    /// Batch numbers holding events of `name` (kind u: user, s: session).
    fn positions(&self, kind: u8, name: &str) -> Result<Vec<u64>, StoreError> {
        let prefix = postings_prefix(kind, name);
        // Held while both halves are read, so a concurrent postings write
        // (disk first, then RAM cleared) is seen on one side or the other.
        let ram = self.ram.read();
        let mut seqs = BTreeSet::new();
        for item in self.engine.read_recursive().postings.scan_prefix(&prefix) {
            let (k, v) = item?;
            // Another name that merely starts like this one has a longer key.
            if k.len() == prefix.len() + 8 {
                seqs.extend(decode_seqs(&v));
            }
        }
        let recent = if kind == b'u' {
            &ram.recent.users
        } else {
            &ram.recent.sessions
        };
        if let Some(list) = recent.get(name) {
            seqs.extend(list.iter().copied());
        }
        Ok(seqs.into_iter().collect())
    }

    /// Events at `seqs` for which `keep` holds, at most `limit`; unreadable
    /// batches are skipped (and counted).
    fn load(
        &self,
        seqs: &[u64],
        mut keep: impl FnMut(&EmotionEvent) -> bool,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError> {
        let mut out = Vec::new();
        for &seq in seqs {
            if out.len() >= limit {
                break;
            }
            let batch = match self.read_batch(seq) {
                Ok(Some((_, b))) => b,
                Ok(None) => continue,
                Err(e @ StoreError::Corrupt { .. }) => {
                    self.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "skipping an unreadable batch");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for slot in batch {
                if out.len() >= limit {
                    break;
                }
                if let Slot::Event(e) = slot
                    && keep(&e)
                {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Batches from `from` up to (not including) `until`, in order; corrupt
    /// ones are logged, counted and skipped. `visit` returns false to stop.
    fn scan_range(
        &self,
        from: u64,
        until: u64,
        visit: &mut dyn FnMut(u64, Batch) -> bool,
    ) -> Result<ScanReport, StoreError> {
        let mut report = ScanReport::default();
        if from >= until {
            return Ok(report);
        }
        walk_batches(
            &self.engine,
            from,
            until,
            &mut |seq, v| match record::decode_batch(seq, &v) {
                Ok((_, batch)) => {
                    report.batches += 1;
                    report.events += batch.iter().filter(|s| s.event().is_some()).count() as u64;
                    Ok(visit(seq, batch))
                }
                Err(e) => {
                    report.corrupt_batches += 1;
                    self.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(batch = seq, error = %e, "skipping an unreadable batch in the buffer");
                    Ok(true)
                }
            },
        )?;
        Ok(report)
    }

    fn engine_len(&self) -> u64 {
        std::fs::metadata(self.dir.join(ENGINE_DIR).join("db")).map_or(0, |m| m.len())
    }

    /// The test-only stall: never returns once reached.
    fn maybe_stall(&self, appended: u64) {
        if let Some(f) = &self.opts.stall_before_flush
            && f.after_batches == appended
        {
            tracing::warn!(marker = %f.marker.display(), "test fault: stalling between insert and flush");
            let _ = std::fs::write(&f.marker, b"stalled");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    fn append_inner(&self, events: &[EmotionEvent]) -> Result<Vec<bool>, StoreError> {
        let mut w = self.writer.lock();
        if self.broken.load(Ordering::Acquire) {
            return Err(StoreError::Panicked(
                "the storage engine could not be reopened; restart the gateway".into(),
            ));
        }
        let mut stored = vec![false; events.len()];
        let mut fresh: Vec<Slot<&EmotionEvent>> = Vec::with_capacity(events.len());
        let (seq, cum_before) = {
            let ram = self.ram.read();
            let mut in_batch = HashSet::with_capacity(events.len());
            for (i, e) in events.iter().enumerate() {
                if !ram.dedup.contains(&e.event_id) && in_batch.insert(e.event_id) {
                    stored[i] = true;
                    fresh.push(Slot::Event(e));
                }
            }
            (ram.state.next_seq, ram.state.cum)
        };
        let first_seq = seq;
        if fresh.is_empty() {
            return Ok(stored);
        }
        // One group commit becomes as many values as keep each under
        // MAX_VALUE_BYTES: sled keeps larger values out of line, and does not
        // count them against its cache, whose memory then grows with history.
        let mut seq = first_seq;
        let mut cum = cum_before;
        let mut start = 0;
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(fresh.len());
        for slot in &fresh {
            // Sized like the slot before: growing from empty copied each
            // event's bytes several times (perf: memmove in the encoding).
            let hint = parts.last().map_or(512, |p: &Vec<u8>| p.len() + 64);
            parts.push(postcard::to_extend(slot, Vec::with_capacity(hint))?);
        }
        let mut ram_adds: Vec<(u64, usize, usize)> = Vec::new();
        while start < fresh.len() {
            let mut end = start;
            let mut size = 0;
            while end < fresh.len()
                && (end == start || size + parts[end].len() <= self.opts.value_bytes)
            {
                size += parts[end].len();
                end += 1;
            }
            let slots = &fresh[start..end];
            let header = BatchHeader {
                seq,
                generation: 0,
                cum_before: cum,
                slots: slots.len() as u32,
                newest_ingest: slots
                    .iter()
                    .filter_map(Slot::event)
                    .map(|e| e.ingested_at)
                    .max()
                    .unwrap_or(DateTime::UNIX_EPOCH),
            };
            let key = seq.to_be_bytes();
            let frame = record::encode_batch_parts(&header, &parts[start..end])?;
            let value_len = frame.len();
            self.engine
                .read_recursive()
                .batches
                .insert(key, record::encode_packed(&frame))?;
            self.engine
                .read_recursive()
                .ids
                .insert(key, pack_ids(slots))?;
            self.compact(&mut w, seq, value_len)?;
            ram_adds.push((seq, start, end));
            cum = header.cum_after();
            seq += 1;
            start = end;
        }
        let next_seq = seq;
        let mut state = {
            let mut ram = self.ram.write();
            for (seq, a, b) in &ram_adds {
                ram.recent.add(*seq, &fresh[*a..*b]);
            }
            ram.state.next_seq = next_seq;
            ram.state.cum = cum;
            ram.state.live += fresh.len() as u64;
            ram.state.batches += ram_adds.len() as u64;
            ram.state
        };
        if self.ram.read().recent.events >= self.opts.postings_flush_events {
            self.move_postings_to_disk(next_seq)?;
            state.postings_through = next_seq;
        }
        self.persist_state(&state)?;
        self.maybe_stall(w.appended);
        self.engine.read_recursive().db.flush()?;
        w.appended += 1;
        let mut l = w.ledger.state();
        l.next_seq = next_seq;
        l.acked_total = cum;
        l.engine_len = self.engine_len();
        w.ledger.commit(l).map_err(StoreError::Ledger)?;
        self.durable.store(next_seq, Ordering::Release);
        let mut ram = self.ram.write();
        for s in &fresh {
            if let Slot::Event(e) = s {
                ram.dedup.insert(&e.event_id);
            }
        }
        Ok(stored)
    }

    /// Note a value just written; when the small values written since the
    /// last large one reach ¾ of a value's size, merge them into one. At a
    /// low rate every group commit is a value of an event or two, and sled's
    /// memory grows with the number of values: compaction keeps it to about
    /// one per ¾ `value_bytes` whatever the rate. Called by the writer
    /// before the commit's flush, which makes the merge durable with it.
    fn compact(&self, w: &mut Writer, seq: u64, value_len: usize) -> Result<(), StoreError> {
        let half = self.opts.value_bytes / 2;
        if value_len >= half {
            // A large value ends the run (values must stay in order).
            return self.compact_now(w);
        }
        w.run.push(seq);
        w.run_bytes += value_len;
        // A run of ¾ of a value plus one more small value stays under
        // 1¼ values: what a leaf of 17 (before compression) can hold.
        if w.run_bytes >= self.opts.value_bytes / 4 * 3 {
            self.compact_now(w)?;
        }
        Ok(())
    }

    /// Merge the pending run of small values into one, under the first one's
    /// number. Each tree changes in one atomic batch; a crash between the two
    /// leaves ids split, which their readers accept.
    fn compact_now(&self, w: &mut Writer) -> Result<(), StoreError> {
        let run = std::mem::take(&mut w.run);
        w.run_bytes = 0;
        let Some(&first) = run.first() else {
            return Ok(());
        };
        if run.len() < 2 {
            return Ok(());
        }
        let e = self.engine.read_recursive();
        let mut values = Vec::new();
        let mut ids = Vec::new();
        let mut batches = sled::Batch::default();
        let mut id_batch = sled::Batch::default();
        for &seq in &run {
            let key = seq.to_be_bytes();
            let Some(v) = e.batches.get(key)? else {
                continue;
            };
            // Only sound frames are merged (version-1 values are not
            // frames): a damaged value stays as it is, for the scrub to find.
            let frames = split_frames(seq, &v);
            if frames.iter().any(|(s, f)| {
                f.first() != Some(&record::VERSION) || record::batch_header(*s, f).is_err()
            }) {
                return Ok(());
            }
            for (_, f) in &frames {
                values.extend_from_slice(f);
            }
            if let Some(i) = e.ids.get(key)? {
                ids.extend_from_slice(&i);
            }
            if seq != first {
                batches.remove(&key);
                id_batch.remove(&key);
            }
        }
        batches.insert(&first.to_be_bytes(), record::encode_packed(&values));
        id_batch.insert(&first.to_be_bytes(), ids);
        e.batches.apply_batch(batches)?;
        e.ids.apply_batch(id_batch)?;
        Ok(())
    }

    /// Store `frame` in place of batch `seq`'s; a compacted value holding it
    /// is rewritten whole.
    fn replace_frame(&self, seq: u64, frame: &[u8]) -> Result<(), StoreError> {
        let e = self.engine.read_recursive();
        let Some((key, frames)) = value_holding(&e.batches, seq)? else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(frames.iter().map(|(_, f)| f.len()).sum());
        for (s, f) in &frames {
            out.extend_from_slice(if *s == seq { frame } else { f });
        }
        e.batches
            .insert(key.to_be_bytes(), record::encode_packed(&out))?;
        Ok(())
    }

    /// Remove batches `seqs` (ascending) and their ids. A compacted value
    /// holding some of them is rewritten with the rest, under the first
    /// remaining number. Returns how many events were removed.
    fn remove_frames(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let gone: HashSet<u64> = seqs.iter().copied().collect();
        let mut removed = 0u64;
        let mut i = 0;
        while let Some(&seq) = seqs.get(i) {
            let e = self.engine.read_recursive();
            let Some((key, frames)) = value_holding(&e.batches, seq)? else {
                e.ids.remove(seq.to_be_bytes())?;
                i += 1;
                continue;
            };
            let last = frames.last().map_or(key, |(s, _)| *s).max(seq);
            let mut kept = Vec::new();
            let mut kept_ids = Vec::new();
            let mut kept_first = None;
            for (s, f) in &frames {
                let decoded = record::decode_batch(*s, f).ok();
                if gone.contains(s) {
                    if let Some((_, b)) = decoded {
                        removed += b.iter().filter(|x| x.event().is_some()).count() as u64;
                    }
                } else {
                    kept_first.get_or_insert(*s);
                    kept.extend_from_slice(f);
                    if let Some((_, b)) = decoded {
                        kept_ids.extend_from_slice(&pack_ids(&b));
                    }
                }
            }
            let mut batches = sled::Batch::default();
            batches.remove(&key.to_be_bytes());
            let mut id_batch = sled::Batch::default();
            for item in e.ids.range(key.to_be_bytes()..=last.to_be_bytes()) {
                let (k, _) = item?;
                id_batch.remove(k);
            }
            if let Some(k) = kept_first {
                batches.insert(&k.to_be_bytes(), record::encode_packed(&kept));
                id_batch.insert(&k.to_be_bytes(), kept_ids);
            }
            e.batches.apply_batch(batches)?;
            e.ids.apply_batch(id_batch)?;
            while seqs.get(i).is_some_and(|s| *s <= last) {
                i += 1;
            }
        }
        Ok(removed)
    }

    fn erase_inner(&self, user_id: &str) -> Result<u64, StoreError> {
        // Writers wait while batches are rewritten, so no append interleaves.
        let mut w = self.writer.lock();
        self.compact_now(&mut w)?;
        let seqs = self.positions(b'u', user_id)?;
        let mut erased = 0u64;
        for seq in seqs {
            let Some((mut header, mut batch)) = (match self.read_batch(seq) {
                Ok(b) => b,
                Err(StoreError::Corrupt { .. }) => None,
                Err(e) => return Err(e),
            }) else {
                continue;
            };
            let mut gone = 0u64;
            for slot in batch.iter_mut() {
                if let Slot::Event(e) = slot
                    && e.user_id == user_id
                {
                    *slot = Slot::Erased(e.event_id);
                    gone += 1;
                }
            }
            if gone == 0 {
                continue;
            }
            header.generation += 1;
            self.put_meta_nosync(
                &format!("{GEN_PREFIX}{seq:016x}"),
                Some(&header.generation.to_le_bytes()),
            )?;
            self.replace_frame(seq, &record::encode_batch(&header, &batch)?)?;
            erased += gone;
        }
        // The user's postings go; sessions' postings may now point at
        // tombstones, which readers skip.
        let prefix = postings_prefix(b'u', user_id);
        for item in self.engine.read_recursive().postings.scan_prefix(&prefix) {
            let (k, _) = item?;
            if k.len() == prefix.len() + 8 {
                self.engine.read_recursive().postings.remove(k)?;
            }
        }
        let state = {
            let mut ram = self.ram.write();
            ram.recent.users.remove(user_id);
            ram.state.live = ram.state.live.saturating_sub(erased);
            ram.state
        };
        self.persist_state(&state)?;
        self.engine.read_recursive().db.flush()?;
        Ok(erased)
    }

    fn purge_inner(
        &self,
        cutoff: DateTime<Utc>,
        keep_from: Option<EventPos>,
    ) -> Result<u64, StoreError> {
        let mut w = self.writer.lock();
        self.compact_now(&mut w)?;
        let mut removed = 0u64;
        let mut purged_batches = 0u64;
        let mut last_purged: Option<u64> = None;
        // In rounds of a bounded number of batches, oldest first.
        loop {
            let mut old: Vec<(u64, Option<BatchHeader>)> = Vec::new();
            let mut first_kept: Option<BatchHeader> = None;
            walk_batches(&self.engine, 0, u64::MAX, &mut |seq, v| {
                if keep_from.is_some_and(|p| seq >= p.batch) {
                    first_kept = record::batch_header(seq, &v).ok();
                    return Ok(false);
                }
                match record::batch_header(seq, &v) {
                    Ok(h) if h.newest_ingest < cutoff => old.push((seq, Some(h))),
                    Ok(h) => {
                        first_kept = Some(h);
                        return Ok(false);
                    }
                    // Unreadable: its age is unknown, but it is garbage anyway.
                    Err(_) => old.push((seq, None)),
                }
                Ok(old.len() < 4096)
            })?;
            let Some(&(last_seq, _)) = old.last() else {
                break;
            };
            // The ledger learns of the purge first: a crash after this point
            // leaves batches below the floor, which are simply purged again,
            // never a purge counted as a loss.
            let mut l = w.ledger.state();
            l.floor_seq = last_seq + 1;
            l.floor_cum = match (first_kept, old.last()) {
                (Some(h), _) => h.cum_before,
                (None, Some((_, Some(h)))) => h.cum_after(),
                _ => l.acked_total,
            };
            w.ledger.commit(l).map_err(StoreError::Ledger)?;
            let seqs: Vec<u64> = old.iter().map(|(seq, _)| *seq).collect();
            removed += self.remove_frames(&seqs)?;
            for seq in &seqs {
                self.engine
                    .read_recursive()
                    .meta
                    .remove(format!("{GEN_PREFIX}{seq:016x}").as_bytes())?;
            }
            purged_batches += old.len() as u64;
            last_purged = Some(last_seq);
            if first_kept.is_some() {
                break;
            }
        }
        let Some(last_seq) = last_purged else {
            return Ok(0);
        };
        // Postings that only point below the floor go too.
        walk(
            &self.engine.read_recursive().postings,
            &[],
            None,
            &mut |k, v| {
                if decode_seqs(&v).last().is_none_or(|s| *s <= last_seq) {
                    self.engine.read_recursive().postings.remove(k)?;
                }
                Ok(true)
            },
        )?;
        let state = {
            let mut ram = self.ram.write();
            ram.state.live = ram.state.live.saturating_sub(removed);
            ram.state.batches = ram.state.batches.saturating_sub(purged_batches);
            for list in ram.recent.users.values_mut() {
                list.retain(|s| *s > last_seq);
            }
            for list in ram.recent.sessions.values_mut() {
                list.retain(|s| *s > last_seq);
            }
            ram.recent.users.retain(|_, l| !l.is_empty());
            ram.recent.sessions.retain(|_, l| !l.is_empty());
            ram.state
        };
        self.persist_state(&state)?;
        self.engine.read_recursive().db.flush()?;
        Ok(removed)
    }

    fn put_meta_nosync(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let version = {
            let mut ram = self.ram.write();
            ram.state.meta_version += 1;
            ram.state.meta_version
        };
        self.engine
            .read_recursive()
            .meta
            .insert(key.as_bytes(), record::encode_meta(version, key, value))?;
        Ok(())
    }

    fn scrub_inner(&self, stop: &dyn Fn() -> bool) -> Result<ScrubReport, StoreError> {
        let ledger = self.writer.lock().ledger.state();
        let until = self.durable.load(Ordering::Acquire);
        let mut report = ScrubReport {
            at: Utc::now(),
            ..ScrubReport::default()
        };
        let mut prev_cum: Option<u64> = None;
        let mut lost = 0u64;
        let mut stopped = false;
        let read = guard("scrub", || {
            walk_batches(&self.engine, 0, until, &mut |seq, v| {
                if stop() {
                    stopped = true;
                    return Ok(false);
                }
                match record::decode_batch(seq, &v) {
                    Ok((h, batch)) => {
                        report.batches += 1;
                        report.events +=
                            batch.iter().filter(|s| s.event().is_some()).count() as u64;
                        let expected = prev_cum.unwrap_or(if seq >= ledger.floor_seq {
                            ledger.floor_cum
                        } else {
                            h.cum_before
                        });
                        lost += h.cum_before.saturating_sub(expected);
                        prev_cum = Some(h.cum_after());
                    }
                    Err(e) => {
                        report.corrupt_batches += 1;
                        tracing::error!(batch = seq, error = %e, "scrub: unreadable batch");
                    }
                }
                Ok(true)
            })
        });
        if stopped {
            return Ok(report);
        }
        report.complete = true;
        let end = prev_cum.unwrap_or(ledger.floor_cum);
        lost += ledger.acked_total.saturating_sub(end);
        if let Err(e) = read {
            // The rest could not be read: the repair at the next start counts it.
            tracing::error!(error = %e, "scrub stopped by the storage engine");
            report.corrupt_batches += 1;
        }
        report.acknowledged_lost = lost;
        report.repair_scheduled = lost > 0 || report.corrupt_batches > 0;
        if report.repair_scheduled {
            let marker = self.dir.join(REPAIR_MARKER);
            if let Err(e) = std::fs::write(&marker, b"scrub found damage\n") {
                tracing::error!(error = %e, "could not schedule the repair");
            }
            tracing::error!(
                acknowledged_lost = lost,
                corrupt_batches = report.corrupt_batches,
                "scrub found damage in the buffer; it is repaired at the next start"
            );
        }
        let mut d = self.damage.lock();
        d.corrupt_batches = d.corrupt_batches.max(report.corrupt_batches);
        let repaired: u64 = d.repairs.iter().map(|r| r.acknowledged_lost).sum();
        d.acknowledged_lost = repaired + lost;
        d.last_scrub = Some(report.clone());
        Ok(report)
    }
}

impl SledStore {
    /// Close and reopen the engine. sled writes its snapshot only when it
    /// opens, and at the next open replays, and holds in memory, every log
    /// record written since: reopening now and then keeps the next start's
    /// time and memory bounded by what was written since, not by history.
    /// Writers and readers wait meanwhile (about as long as that replay).
    pub fn compact_log(&self) -> Result<Duration, StoreError> {
        let began = Instant::now();
        let _w = self.writer.lock();
        if self.broken.load(Ordering::Acquire) {
            return Ok(began.elapsed());
        }
        self.engine.read_recursive().db.flush()?;
        let path = self.dir.join(ENGINE_DIR);
        let mut engine = self.engine.write();
        // A throw-away engine holds the place while the files are reopened.
        let placeholder = Engine::temporary()?;
        drop(std::mem::replace(&mut *engine, placeholder));
        match open_engine(&path, self.opts.cache_bytes) {
            Ok(e) => {
                *engine = e;
                Ok(began.elapsed())
            }
            Err(e) => {
                self.broken.store(true, Ordering::Release);
                tracing::error!(error = %e, "reopening the storage engine failed; writes are refused until a restart");
                Err(e)
            }
        }
    }
}

impl Engine {
    fn temporary() -> Result<Engine, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(Engine {
            batches: db.open_tree("batches")?,
            ids: db.open_tree("ids")?,
            postings: db.open_tree("postings")?,
            meta: db.open_tree("meta")?,
            state_tree: db.open_tree("state")?,
            db,
        })
    }
}

#[derive(Debug, Default)]
struct RebuildOutcome {
    batches: u64,
    events: u64,
    lost: u64,
}

impl EventStore for SledStore {
    fn append(&self, events: &[EmotionEvent]) -> Result<Vec<bool>, StoreError> {
        guard("append", || self.append_inner(events))
    }

    fn contains(&self, event_id: &Uuid) -> bool {
        self.ram.read().dedup.contains(event_id)
    }

    fn user_events(&self, user_id: &str, q: &EventQuery) -> Result<Vec<EmotionEvent>, StoreError> {
        guard("user_events", || {
            let seqs = self.positions(b'u', user_id)?;
            self.load(&seqs, |e| q.matches(user_id, e), q.limit)
        })
    }

    fn session_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError> {
        guard("session_events", || {
            let seqs = self.positions(b's', session_id)?;
            self.load(&seqs, |e| e.session_id == session_id, limit)
        })
    }

    fn scan(
        &self,
        from_batch: u64,
        visit: &mut dyn FnMut(EventPos, &EmotionEvent),
    ) -> Result<ScanReport, StoreError> {
        guard("scan", || {
            self.scan_range(from_batch, u64::MAX, &mut |seq, batch| {
                for (i, slot) in batch.iter().enumerate() {
                    if let Slot::Event(e) = slot {
                        visit(
                            EventPos {
                                batch: seq,
                                index: i as u32,
                            },
                            e,
                        );
                    }
                }
                true
            })
        })
    }

    fn events_after(
        &self,
        after: Option<EventPos>,
        max: usize,
    ) -> Result<Vec<(EventPos, EmotionEvent)>, StoreError> {
        guard("events_after", || {
            let mut out = Vec::new();
            let from = after.map_or(0, |p| p.batch);
            // Never past the high-water mark: what is not durable is not shipped.
            let until = self.durable.load(Ordering::Acquire);
            self.scan_range(from, until, &mut |seq, batch| {
                for (i, slot) in batch.into_iter().enumerate() {
                    let pos = EventPos {
                        batch: seq,
                        index: i as u32,
                    };
                    if after.is_some_and(|a| pos <= a) {
                        continue;
                    }
                    if let Slot::Event(e) = slot {
                        out.push((pos, e));
                    }
                }
                out.len() < max
            })?;
            Ok(out)
        })
    }

    fn count_after(&self, after: Option<EventPos>) -> Result<u64, StoreError> {
        let (live, cum) = {
            let ram = self.ram.read();
            (ram.state.live, ram.state.cum)
        };
        let Some(after) = after else {
            return Ok(live);
        };
        guard("count_after", || {
            // The header of the batch at `after`, or else of the next one.
            let mut h = None;
            let mut any = false;
            walk_batches(&self.engine, after.batch, u64::MAX, &mut |seq, v| {
                any = true;
                h = record::batch_header(seq, &v).ok();
                Ok(false)
            })?;
            if !any {
                return Ok(0);
            }
            Ok(match h {
                Some(h) if h.seq == after.batch => {
                    let passed = h.cum_before
                        + u64::from(after.index.saturating_add(1)).min(u64::from(h.slots));
                    cum.saturating_sub(passed)
                }
                Some(h) => cum.saturating_sub(h.cum_before),
                None => 0,
            })
        })
    }

    fn durable_batches(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError> {
        guard("erase_user", || self.erase_inner(user_id))
    }

    fn purge_ingested_before(
        &self,
        cutoff: DateTime<Utc>,
        keep_from: Option<EventPos>,
    ) -> Result<u64, StoreError> {
        guard("purge", || self.purge_inner(cutoff, keep_from))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        guard("put_meta", || {
            self.put_meta_nosync(key, Some(value))?;
            let state = self.ram.read().state;
            self.persist_state(&state)?;
            self.engine.read_recursive().db.flush()?;
            Ok(())
        })
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        guard("get_meta", || {
            Ok(
                match self.engine.read_recursive().meta.get(key.as_bytes())? {
                    None => None,
                    Some(v) => {
                        record::decode_meta(&v)
                            .map_err(|source| StoreError::Corrupt { seq: 0, source })?
                            .value
                    }
                },
            )
        })
    }

    fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        // A removal is written as a frame too, so salvage cannot bring the
        // old value back.
        guard("remove_meta", || {
            self.put_meta_nosync(key, None)?;
            let state = self.ram.read().state;
            self.persist_state(&state)?;
            self.engine.read_recursive().db.flush()?;
            Ok(())
        })
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        guard("meta_with_prefix", || {
            let mut out = Vec::new();
            for item in self
                .engine
                .read_recursive()
                .meta
                .scan_prefix(prefix.as_bytes())
            {
                let (k, v) = item?;
                match record::decode_meta(&v) {
                    Ok(f) => {
                        if let Some(value) = f.value {
                            out.push((f.key, value));
                        }
                    }
                    Err(e) => tracing::error!(
                        key = %String::from_utf8_lossy(&k),
                        error = %e,
                        "skipping an unreadable metadata record"
                    ),
                }
            }
            Ok(out)
        })
    }

    fn meta_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        guard("meta_page", || {
            let mut out = Vec::new();
            let engine = self.engine.read_recursive();
            let start = after.unwrap_or(prefix).as_bytes().to_vec();
            for item in engine.meta.range(start..) {
                let (k, v) = item?;
                if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                    break;
                }
                if after.is_some_and(|a| k.as_ref() == a.as_bytes()) {
                    continue;
                }
                match record::decode_meta(&v) {
                    Ok(f) => {
                        if let Some(value) = f.value {
                            out.push((f.key, value));
                        }
                    }
                    Err(e) => tracing::error!(
                        key = %String::from_utf8_lossy(&k),
                        error = %e,
                        "skipping an unreadable metadata record"
                    ),
                }
            }
            Ok(out)
        })
    }

    fn stats(&self) -> StoreStats {
        let ram = self.ram.read();
        StoreStats {
            events: ram.state.live,
            batches: ram.state.batches,
            bytes_on_disk: self.engine.read_recursive().db.size_on_disk().unwrap_or(0),
            corrupt_batches_skipped: self.corrupt_skipped.load(Ordering::Relaxed),
            durable_batches: self.durable.load(Ordering::Acquire),
            dedup_window: ram.dedup.len() as u64,
        }
    }

    fn damage(&self) -> DamageReport {
        self.damage.lock().clone()
    }

    fn scrub(&self, stop: &dyn Fn() -> bool) -> Result<ScrubReport, StoreError> {
        self.scrub_inner(stop)
    }

    fn maintain(&self) -> Result<(), StoreError> {
        let took = self.compact_log()?;
        tracing::debug!(took_ms = took.as_millis() as u64, "storage engine reopened");
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        guard("flush", || {
            // Postings in RAM are written so the next open rebuilds nothing.
            let _w = self.writer.lock();
            let through = self.ram.read().state.next_seq;
            self.move_postings_to_disk(through)?;
            let state = self.ram.read().state;
            self.persist_state(&state)?;
            self.engine.read_recursive().db.flush()?;
            Ok(())
        })
    }
}
