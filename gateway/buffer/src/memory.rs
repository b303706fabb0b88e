//! `EventStore` in RAM, for the tests of the layers above (the API, the
//! pipeline, the sync driver): the same contract as the store on disk,
//! without files, so those tests start in microseconds. Nothing survives a
//! drop.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use emotion_core::EmotionEvent;
use hashbrown::HashSet;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::dedup::DedupWindow;
use crate::record::{Batch, Slot};
use crate::{
    DamageReport, EventPos, EventQuery, EventStore, ScanReport, ScrubReport, StoreError, StoreStats,
};

#[derive(Debug)]
struct Inner {
    batches: BTreeMap<u64, Batch>,
    meta: BTreeMap<String, Vec<u8>>,
    dedup: DedupWindow,
    next_seq: u64,
    live: u64,
}

/// The buffer in RAM.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(262_144)
    }
}

impl MemoryStore {
    /// A store whose duplicate window holds `dedup_window` ids.
    pub fn new(dedup_window: usize) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                batches: BTreeMap::new(),
                meta: BTreeMap::new(),
                dedup: DedupWindow::new(dedup_window),
                next_seq: 0,
                live: 0,
            }),
        }
    }

    fn events_where(
        &self,
        mut keep: impl FnMut(&EmotionEvent) -> bool,
        limit: usize,
    ) -> Vec<EmotionEvent> {
        let inner = self.inner.lock();
        inner
            .batches
            .values()
            .flatten()
            .filter_map(Slot::event)
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }
}

fn live(batch: &Batch) -> u64 {
    batch.iter().filter(|s| s.event().is_some()).count() as u64
}

impl EventStore for MemoryStore {
    fn append(&self, events: &[EmotionEvent]) -> Result<Vec<bool>, StoreError> {
        let mut inner = self.inner.lock();
        let mut stored = vec![false; events.len()];
        let mut batch = Batch::new();
        let mut in_batch = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            if !inner.dedup.contains(&e.event_id) && in_batch.insert(e.event_id) {
                stored[i] = true;
                batch.push(Slot::Event(e.clone()));
            }
        }
        if batch.is_empty() {
            return Ok(stored);
        }
        for s in &batch {
            if let Slot::Event(e) = s {
                inner.dedup.insert(&e.event_id);
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.live += batch.len() as u64;
        inner.batches.insert(seq, batch);
        Ok(stored)
    }

    fn contains(&self, event_id: &Uuid) -> bool {
        self.inner.lock().dedup.contains(event_id)
    }

    fn user_events(&self, user_id: &str, q: &EventQuery) -> Result<Vec<EmotionEvent>, StoreError> {
        Ok(self.events_where(|e| q.matches(user_id, e), q.limit))
    }

    fn session_events(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<EmotionEvent>, StoreError> {
        Ok(self.events_where(|e| e.session_id == session_id, limit))
    }

    fn scan(
        &self,
        from_batch: u64,
        visit: &mut dyn FnMut(EventPos, &EmotionEvent),
    ) -> Result<ScanReport, StoreError> {
        let batches: Vec<(u64, Batch)> = self
            .inner
            .lock()
            .batches
            .range(from_batch..)
            .map(|(s, b)| (*s, b.clone()))
            .collect();
        let mut report = ScanReport::default();
        for (seq, batch) in batches {
            report.batches += 1;
            for (i, slot) in batch.iter().enumerate() {
                if let Slot::Event(e) = slot {
                    report.events += 1;
                    visit(
                        EventPos {
                            batch: seq,
                            index: i as u32,
                        },
                        e,
                    );
                }
            }
        }
        Ok(report)
    }

    fn events_after(
        &self,
        after: Option<EventPos>,
        max: usize,
    ) -> Result<Vec<(EventPos, EmotionEvent)>, StoreError> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        for (seq, batch) in inner.batches.range(after.map_or(0, |p| p.batch)..) {
            for (i, slot) in batch.iter().enumerate() {
                let pos = EventPos {
                    batch: *seq,
                    index: i as u32,
                };
                if after.is_some_and(|a| pos <= a) {
                    continue;
                }
                if let Slot::Event(e) = slot {
                    out.push((pos, e.clone()));
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    fn count_after(&self, after: Option<EventPos>) -> Result<u64, StoreError> {
        let inner = self.inner.lock();
        let Some(after) = after else {
            return Ok(inner.live);
        };
        Ok(inner
            .batches
            .range(after.batch..)
            .flat_map(|(seq, b)| {
                b.iter().enumerate().map(move |(i, _)| EventPos {
                    batch: *seq,
                    index: i as u32,
                })
            })
            .filter(|p| *p > after)
            .count() as u64)
    }

    fn durable_batches(&self) -> u64 {
        self.inner.lock().next_seq
    }

    fn erase_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock();
        let mut erased = 0;
        for batch in inner.batches.values_mut() {
            for slot in batch.iter_mut() {
                if let Slot::Event(e) = slot
                    && e.user_id == user_id
                {
                    *slot = Slot::Erased(e.event_id);
                    erased += 1;
                }
            }
        }
        inner.live -= erased;
        Ok(erased)
    }

    fn purge_ingested_before(
        &self,
        cutoff: DateTime<Utc>,
        keep_from: Option<EventPos>,
    ) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock();
        let mut removed = 0;
        while let Some((&seq, batch)) = inner.batches.first_key_value() {
            let newest = batch
                .iter()
                .filter_map(Slot::event)
                .map(|e| e.ingested_at)
                .max()
                .unwrap_or(DateTime::UNIX_EPOCH);
            if newest >= cutoff || keep_from.is_some_and(|k| seq >= k.batch) {
                break;
            }
            removed += live(batch);
            inner.batches.remove(&seq);
        }
        inner.live -= removed;
        Ok(removed)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner
            .lock()
            .meta
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.lock().meta.get(key).cloned())
    }

    fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        self.inner.lock().meta.remove(key);
        Ok(())
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .inner
            .lock()
            .meta
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn stats(&self) -> StoreStats {
        let inner = self.inner.lock();
        StoreStats {
            events: inner.live,
            batches: inner.batches.len() as u64,
            bytes_on_disk: 0,
            corrupt_batches_skipped: 0,
            durable_batches: inner.next_seq,
            dedup_window: inner.dedup.len() as u64,
        }
    }

    fn damage(&self) -> DamageReport {
        DamageReport::default()
    }

    fn scrub(&self, _stop: &dyn Fn() -> bool) -> Result<ScrubReport, StoreError> {
        let inner = self.inner.lock();
        Ok(ScrubReport {
            at: Utc::now(),
            batches: inner.batches.len() as u64,
            events: inner.live,
            complete: true,
            ..ScrubReport::default()
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
