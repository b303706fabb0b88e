//! `EventStore` on sled: one tree of batches keyed by a big-endian sequence
//! number, a small tree of metadata, and in-memory indexes rebuilt at open.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use emotion_core::EmotionEvent;
use hashbrown::{HashMap, HashSet};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use super::record::{self, Batch, Slot};
use super::{EventPos, EventQuery, EventStore, ScanReport, StoreError, StoreStats};

/// Per-batch facts kept in memory so retention and lag need no decoding.
#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    newest_ingest: DateTime<Utc>,
    /// Events not erased.
    live: u32,
}

#[derive(Debug, Default)]
struct Index {
    by_user: HashMap<String, VecDeque<EventPos>>,
    by_session: HashMap<String, VecDeque<EventPos>>,
    /// Ids of every stored event, erased ones included (so a re-sent copy of an
    /// erased event is not stored again).
    ids: HashSet<Uuid>,
    batches: BTreeMap<u64, BatchMeta>,
    events: u64,
}

impl Index {
    fn add_batch<E: std::borrow::Borrow<EmotionEvent>>(&mut self, seq: u64, slots: &[Slot<E>]) {
        let mut live = 0;
        let mut newest_ingest = DateTime::UNIX_EPOCH;
        for (i, slot) in slots.iter().enumerate() {
            match slot {
                Slot::Event(e) => {
                    let e = e.borrow();
                    let pos = EventPos {
                        batch: seq,
                        index: i as u32,
                    };
                    self.by_user
                        .entry_ref(e.user_id.as_str())
                        .or_default()
                        .push_back(pos);
                    self.by_session
                        .entry_ref(e.session_id.as_str())
                        .or_default()
                        .push_back(pos);
                    self.ids.insert(e.event_id);
                    newest_ingest = newest_ingest.max(e.ingested_at);
                    live += 1;
                }
                Slot::Erased(id) => {
                    self.ids.insert(*id);
                }
            }
        }
        self.events += u64::from(live);
        self.batches.insert(
            seq,
            BatchMeta {
                newest_ingest,
                live,
            },
        );
    }

    /// Forget the positions of `events` (all from one batch `seq`).
    fn unlink(&mut self, seq: u64, events: &[&EmotionEvent]) {
        for e in events {
            for (map, key) in [
                (&mut self.by_user, &e.user_id),
                (&mut self.by_session, &e.session_id),
            ] {
                if let Some(list) = map.get_mut(key.as_str()) {
                    list.retain(|p| p.batch != seq);
                    if list.is_empty() {
                        map.remove(key.as_str());
                    }
                }
            }
        }
    }

    fn remove_batch(&mut self, seq: u64, batch: &Batch) {
        let events: Vec<&EmotionEvent> = batch.iter().filter_map(Slot::event).collect();
        self.unlink(seq, &events);
        for slot in batch {
            match slot {
                Slot::Event(e) => self.ids.remove(&e.event_id),
                Slot::Erased(id) => self.ids.remove(id),
            };
        }
        if let Some(meta) = self.batches.remove(&seq) {
            self.events -= u64::from(meta.live);
        }
    }
}

/// The sled-backed buffer.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    batches: sled::Tree,
    meta: sled::Tree,
    index: RwLock<Index>,
    /// Sequence number of the next batch. Held while a batch is written, which
    /// also serializes writers with erasure's batch rewrites.
    next_seq: Mutex<u64>,
    corrupt_skipped: AtomicU64,
}

impl SledStore {
    /// Open (or create) the buffer at `path`, rebuild the indexes, and hand every
    /// stored event to `replay` in storage order.
    pub fn open(
        path: &Path,
        cache_bytes: u64,
        replay: &mut dyn FnMut(EventPos, &EmotionEvent),
    ) -> Result<(SledStore, ScanReport), StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Dir {
            path: path.display().to_string(),
            source,
        })?;
        let db = sled::Config::new()
            .path(path.join("sled"))
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            // We flush explicitly in every group commit; no background timer.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
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
            })?;
        let batches = db.open_tree("batches")?;
        let meta = db.open_tree("meta")?;
        let store = SledStore {
            db,
            batches,
            meta,
            index: RwLock::new(Index::default()),
            next_seq: Mutex::new(0),
            corrupt_skipped: AtomicU64::new(0),
        };
        let mut index = Index::default();
        let mut next = 0;
        let report = store.scan_raw(&mut |seq, batch| {
            index.add_batch(seq, &batch);
            for (i, slot) in batch.iter().enumerate() {
                if let Slot::Event(e) = slot {
                    replay(
                        EventPos {
                            batch: seq,
                            index: i as u32,
                        },
                        e,
                    );
                }
            }
            next = seq + 1;
        })?;
        // A damaged last batch was skipped above; never reuse its key.
        if let Some((k, _)) = store.batches.last()? {
            next = next.max(seq_of(&k) + 1);
        }
        *store.index.write() = index;
        *store.next_seq.lock() = next;
        store
            .corrupt_skipped
            .store(report.corrupt_batches, Ordering::Relaxed);
        Ok((store, report))
    }

    /// Batches from `from` on, in order; corrupt ones are logged, counted and
    /// skipped. `visit` returns false to stop.
    fn scan_from(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, Batch) -> bool,
    ) -> Result<ScanReport, StoreError> {
        let mut report = ScanReport::default();
        for item in self.batches.range(from.to_be_bytes()..) {
            let (k, v) = item?;
            let seq = seq_of(&k);
            match record::decode(&v) {
                Ok(batch) => {
                    report.batches += 1;
                    report.events += batch.iter().filter(|s| s.event().is_some()).count() as u64;
                    if !visit(seq, batch) {
                        break;
                    }
                }
                Err(e) => {
                    report.corrupt_batches += 1;
                    tracing::error!(batch = seq, error = %e, "skipping an unreadable batch in the buffer");
                }
            }
        }
        Ok(report)
    }

    fn scan_raw(&self, visit: &mut dyn FnMut(u64, Batch)) -> Result<ScanReport, StoreError> {
        self.scan_from(0, &mut |seq, batch| {
            visit(seq, batch);
            true
        })
    }

    fn read_batch(&self, seq: u64) -> Result<Option<Batch>, StoreError> {
        match self.batches.get(seq.to_be_bytes())? {
            None => Ok(None),
            Some(v) => record::decode(&v)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { seq, source }),
        }
    }

    /// Load the events at `positions` (in order), decoding each batch once.
    fn load(
        &self,
        positions: impl Iterator<Item = EventPos>,
        mut keep: impl FnMut(&EmotionEvent) -> bool,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError> {
        let mut out = Vec::new();
        let mut current: Option<(u64, Batch)> = None;
        for pos in positions {
            if out.len() >= limit {
                break;
            }
            if current.as_ref().is_none_or(|(s, _)| *s != pos.batch) {
                current = self.read_batch(pos.batch)?.map(|b| (pos.batch, b));
            }
            if let Some((_, batch)) = &current
                && let Some(Slot::Event(e)) = batch.get(pos.index as usize)
                && keep(e)
            {
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    fn positions(map: &HashMap<String, VecDeque<EventPos>>, key: &str) -> Vec<EventPos> {
        map.get(key)
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn seq_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(b)
}

impl EventStore for SledStore {
    fn append(&self, events: &[EmotionEvent]) -> Result<Vec<bool>, StoreError> {
        let mut stored = vec![false; events.len()];
        let mut fresh: Vec<Slot<&EmotionEvent>> = Vec::with_capacity(events.len());
        {
            let index = self.index.read();
            let mut in_batch = HashSet::with_capacity(events.len());
            for (i, e) in events.iter().enumerate() {
                if !index.ids.contains(&e.event_id) && in_batch.insert(e.event_id) {
                    stored[i] = true;
                    fresh.push(Slot::Event(e));
                }
            }
        }
        if fresh.is_empty() {
            return Ok(stored);
        }
        let bytes = record::encode(&fresh)?;
        let mut next = self.next_seq.lock();
        let seq = *next;
        self.batches.insert(seq.to_be_bytes(), bytes)?;
        self.db.flush()?;
        *next = seq + 1;
        self.index.write().add_batch(seq, &fresh);
        Ok(stored)
    }

    fn contains(&self, event_id: &Uuid) -> bool {
        self.index.read().ids.contains(event_id)
    }

    fn user_events(&self, user_id: &str, q: &EventQuery) -> Result<Vec<EmotionEvent>, StoreError> {
        let positions = Self::positions(&self.index.read().by_user, user_id);
        self.load(
            positions.into_iter(),
            |e| q.from.is_none_or(|f| e.timestamp >= f) && q.to.is_none_or(|t| e.timestamp <= t),
            q.limit,
        )
    }

    fn session_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError> {
        let positions = Self::positions(&self.index.read().by_session, session_id);
        self.load(positions.into_iter(), |_| true, limit)
    }

    fn scan(
        &self,
        visit: &mut dyn FnMut(EventPos, &EmotionEvent),
    ) -> Result<ScanReport, StoreError> {
        self.scan_raw(&mut |seq, batch| {
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
        })
    }

    fn events_after(
        &self,
        after: Option<EventPos>,
        max: usize,
    ) -> Result<Vec<(EventPos, EmotionEvent)>, StoreError> {
        let mut out = Vec::new();
        let from = after.map_or(0, |p| p.batch);
        self.scan_from(from, &mut |seq, batch| {
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
    }

    fn count_after(&self, after: Option<EventPos>) -> Result<u64, StoreError> {
        let Some(after) = after else {
            return Ok(self.index.read().events);
        };
        let later: u64 = self
            .index
            .read()
            .batches
            .range(after.batch + 1..)
            .map(|(_, m)| u64::from(m.live))
            .sum();
        let partial = match self.read_batch(after.batch)? {
            Some(batch) => batch
                .iter()
                .enumerate()
                .filter(|(i, s)| *i as u32 > after.index && s.event().is_some())
                .count() as u64,
            None => 0,
        };
        Ok(later + partial)
    }

    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError> {
        // Writers wait while batches are rewritten, so no append interleaves.
        let _writer = self.next_seq.lock();
        let positions = Self::positions(&self.index.read().by_user, user_id);
        let mut erased = 0u64;
        let mut i = 0;
        while i < positions.len() {
            let seq = positions[i].batch;
            let mut j = i;
            while j < positions.len() && positions[j].batch == seq {
                j += 1;
            }
            if let Some(mut batch) = self.read_batch(seq)? {
                let mut gone: Vec<EmotionEvent> = Vec::new();
                for pos in &positions[i..j] {
                    if let Some(slot) = batch.get_mut(pos.index as usize)
                        && let Slot::Event(e) = slot
                        && e.user_id == user_id
                    {
                        let id = e.event_id;
                        if let Slot::Event(e) = std::mem::replace(slot, Slot::Erased(id)) {
                            gone.push(e);
                        }
                    }
                }
                self.batches
                    .insert(seq.to_be_bytes(), record::encode(&batch)?)?;
                let mut index = self.index.write();
                let refs: Vec<&EmotionEvent> = gone.iter().collect();
                index.unlink(seq, &refs);
                if let Some(m) = index.batches.get_mut(&seq) {
                    m.live -= gone.len() as u32;
                }
                index.events -= gone.len() as u64;
                erased += gone.len() as u64;
            }
            i = j;
        }
        self.db.flush()?;
        Ok(erased)
    }

    fn purge_ingested_before(
        &self,
        cutoff: DateTime<Utc>,
        keep_from: Option<EventPos>,
    ) -> Result<u64, StoreError> {
        let old: Vec<u64> = self
            .index
            .read()
            .batches
            .iter()
            .take_while(|(s, m)| {
                m.newest_ingest < cutoff && keep_from.is_none_or(|k| **s < k.batch)
            })
            .map(|(s, _)| *s)
            .collect();
        let mut removed = 0;
        for seq in old {
            let batch = match self.read_batch(seq) {
                Ok(b) => b.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(batch = seq, error = %e, "purging an unreadable batch");
                    Vec::new()
                }
            };
            self.batches.remove(seq.to_be_bytes())?;
            removed += batch.iter().filter(|s| s.event().is_some()).count() as u64;
            self.index.write().remove_batch(seq, &batch);
        }
        if removed > 0 {
            self.db.flush()?;
        }
        Ok(removed)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value)?;
        self.meta.flush()?;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        self.meta.remove(key.as_bytes())?;
        self.meta.flush()?;
        Ok(())
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.meta
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn stats(&self) -> StoreStats {
        let index = self.index.read();
        StoreStats {
            events: index.events,
            batches: index.batches.len() as u64,
            bytes_on_disk: self.db.size_on_disk().unwrap_or(0),
            corrupt_batches_skipped: self.corrupt_skipped.load(Ordering::Relaxed),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::buffer::tests::sample_events;

    fn open(dir: &Path) -> (SledStore, Vec<EmotionEvent>) {
        let mut seen = Vec::new();
        let (s, _) = SledStore::open(dir, 8 << 20, &mut |_, e| seen.push(e.clone())).expect("open");
        (s, seen)
    }

    #[test]
    fn appended_batches_survive_reopen_in_order_and_dedup_holds() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = sample_events(10, "alice");
        let b = sample_events(5, "bob");
        {
            let (s, seen) = open(dir.path());
            assert!(seen.is_empty());
            assert_eq!(s.append(&a).expect("append"), vec![true; 10]);
            assert_eq!(s.append(&b).expect("append"), vec![true; 5]);
            // Re-sending the same events stores nothing new.
            assert_eq!(s.append(&a[..3]).expect("append"), vec![false; 3]);
        }
        let (s, seen) = open(dir.path());
        let expected: Vec<_> = a.iter().chain(&b).cloned().collect();
        assert_eq!(seen, expected);
        assert_eq!(s.stats().events, 15);
        assert!(s.contains(&a[0].event_id));
        let q = EventQuery {
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.user_events("alice", &q).expect("query"), a);
        assert_eq!(s.session_events("s-bob", 100).expect("query"), b);
        // Later appends continue the sequence after a reopen.
        let c = sample_events(2, "alice");
        assert_eq!(s.append(&c).expect("append"), vec![true; 2]);
        assert_eq!(s.user_events("alice", &q).expect("query").len(), 12);
    }

    #[test]
    fn duplicate_ids_inside_one_batch_are_stored_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = open(dir.path());
        let a = sample_events(2, "u");
        let batch = vec![a[0].clone(), a[1].clone(), a[0].clone()];
        assert_eq!(s.append(&batch).expect("append"), vec![true, true, false]);
        assert_eq!(s.stats().events, 2);
    }

    #[test]
    fn time_filters_and_limits() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = open(dir.path());
        let a = sample_events(10, "u");
        s.append(&a[..6]).expect("append");
        s.append(&a[6..]).expect("append");
        let q = EventQuery {
            from: Some(a[2].timestamp),
            to: Some(a[7].timestamp),
            limit: 4,
        };
        assert_eq!(s.user_events("u", &q).expect("query"), a[2..6].to_vec());
        assert!(s.user_events("nobody", &q).expect("query").is_empty());
    }

    #[test]
    fn retention_purges_whole_old_batches_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = sample_events(6, "u");
        {
            let (s, _) = open(dir.path());
            s.append(&a[..3]).expect("append");
            s.append(&a[3..]).expect("append");
            // The first batch's newest event is a[2]; cut just after it.
            let removed = s
                .purge_ingested_before(a[2].ingested_at + Duration::milliseconds(1), None)
                .expect("purge");
            assert_eq!(removed, 3);
            assert!(!s.contains(&a[0].event_id));
            assert_eq!(s.stats().events, 3);
        }
        let (_, seen) = open(dir.path());
        assert_eq!(seen, a[3..].to_vec());
    }

    #[test]
    fn a_damaged_batch_is_skipped_and_counted_and_the_rest_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = sample_events(4, "u");
        {
            let (s, _) = open(dir.path());
            s.append(&a[..2]).expect("append");
            s.append(&a[2..]).expect("append");
            // Damage the first batch's value behind the store's back.
            let mut v = s
                .batches
                .get(0u64.to_be_bytes())
                .expect("get")
                .expect("present")
                .to_vec();
            let last = v.len() - 1;
            v[last] ^= 0xFF;
            s.batches.insert(0u64.to_be_bytes(), v).expect("insert");
            s.db.flush().expect("flush");
        }
        let mut seen = Vec::new();
        let (s, report) =
            SledStore::open(dir.path(), 8 << 20, &mut |_, e| seen.push(e.clone())).expect("open");
        assert_eq!(report.corrupt_batches, 1);
        assert_eq!(seen, a[2..].to_vec());
        assert_eq!(s.stats().corrupt_batches_skipped, 1);
        // New batches never reuse the damaged batch's key.
        s.append(&sample_events(1, "v")).expect("append");
        assert!(s.batches.get(0u64.to_be_bytes()).expect("get").is_some());
    }

    #[test]
    fn reading_after_a_cursor_and_counting_lag() {
        let dir = tempfile::tempdir().expect("tmp");
        let (s, _) = open(dir.path());
        let a = sample_events(7, "u");
        s.append(&a[..3]).expect("append");
        s.append(&a[3..]).expect("append");
        let all = s.events_after(None, 100).expect("read");
        assert_eq!(all.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), a);
        let cursor = all[1].0;
        let rest = s.events_after(Some(cursor), 100).expect("read");
        assert_eq!(rest.len(), 5);
        assert_eq!(rest[0].1, a[2]);
        assert_eq!(s.count_after(Some(cursor)).expect("count"), 5);
        assert_eq!(s.count_after(None).expect("count"), 7);
        // `max` stops at a batch boundary once reached.
        assert_eq!(s.events_after(None, 2).expect("read").len(), 3);
        // Retention never removes what the cursor has not passed.
        assert_eq!(
            s.purge_ingested_before(Utc::now(), Some(cursor))
                .expect("purge"),
            0
        );
    }

    #[test]
    fn erasing_a_user_keeps_positions_and_refuses_resent_copies() {
        let dir = tempfile::tempdir().expect("tmp");
        let alice = sample_events(4, "alice");
        let bob = sample_events(3, "bob");
        let mixed: Vec<_> = alice
            .iter()
            .zip(bob.iter().chain(std::iter::once(&bob[0])))
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect();
        {
            let (s, _) = open(dir.path());
            s.append(&mixed).expect("append");
            let before = s.events_after(None, 100).expect("read");
            let bob_pos: Vec<_> = before
                .iter()
                .filter(|(_, e)| e.user_id == "bob")
                .map(|(p, _)| *p)
                .collect();
            assert_eq!(s.erase_user("alice").expect("erase"), 4);
            let after = s.events_after(None, 100).expect("read");
            assert!(after.iter().all(|(_, e)| e.user_id == "bob"));
            assert_eq!(
                after.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                bob_pos,
                "positions are stable"
            );
            assert!(
                s.user_events(
                    "alice",
                    &EventQuery {
                        limit: 10,
                        ..Default::default()
                    }
                )
                .expect("q")
                .is_empty()
            );
            assert_eq!(s.session_events("s-alice", 10).expect("q").len(), 0);
            assert_eq!(
                s.append(&alice[..1]).expect("append"),
                vec![false],
                "an erased event is not stored again"
            );
            assert_eq!(s.stats().events, 3);
        }
        let (s, seen) = open(dir.path());
        assert!(seen.iter().all(|e| e.user_id == "bob"));
        assert_eq!(seen.len(), 3);
        assert!(s.contains(&alice[0].event_id));
        assert_eq!(s.append(&alice[1..2]).expect("append"), vec![false]);
    }

    #[test]
    fn metadata_round_trips() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (s, _) = open(dir.path());
            s.put_meta("consent/u1", b"yes").expect("put");
            s.put_meta("consent/u2", b"no").expect("put");
            s.put_meta("other", b"x").expect("put");
        }
        let (s, _) = open(dir.path());
        assert_eq!(
            s.get_meta("consent/u1").expect("get"),
            Some(b"yes".to_vec())
        );
        let all = s.meta_with_prefix("consent/").expect("scan");
        assert_eq!(all.len(), 2);
    }
}
