//! The analyzer's checkpoint in the buffer's metadata, so a start loads it and
//! replays only the batches stored after it (start-up time independent of
//! history), instead of replaying the whole buffer.
//!
//! Stored under [`KEY`]: the number of the first batch the checkpoint does not
//! cover (u64, little-endian), then `Analyzer::checkpoint()`, which carries its
//! own version and checksum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use emotion_core::{Analyzer, AnalyzerConfig};
use parking_lot::Mutex;
use serde::Serialize;

use emotion_buffer::{EventStore, StoreError};

pub const KEY: &str = "analyzer/checkpoint";
/// State of users evicted from RAM, one record per user under this prefix.
pub const USER_PREFIX: &str = "analyzer/user/";

fn user_key(user_id: &str) -> String {
    format!("{USER_PREFIX}{user_id}")
}

/// The stored state of an evicted user.
pub fn load_user(store: &dyn EventStore, user_id: &str) -> Option<Vec<u8>> {
    store.get_meta(&user_key(user_id)).ok().flatten()
}

/// Bring an evicted user back into RAM before anything reads or updates
/// them. A missing or refused record is logged: the user then starts afresh.
pub fn make_resident(an: &mut Analyzer, store: &dyn EventStore, user_id: &str) {
    if !an.is_evicted(user_id) {
        return;
    }
    let restored = match load_user(store, user_id) {
        Some(bytes) => an.restore_user(user_id, &bytes).map_err(|e| e.to_string()),
        None => Err("its stored state is missing".into()),
    };
    if let Err(why) = restored {
        tracing::error!(user = user_id, reason = %why, "could not bring an evicted user back; their analysis starts afresh");
    }
}

/// Move users idle since `cutoff` out of RAM: their state is stored first,
/// then a checkpoint that no longer holds them (a crash in between leaves the
/// old checkpoint, which still does). Returns the number evicted.
pub fn evict_idle(
    store: &dyn EventStore,
    analyzer: &Mutex<Analyzer>,
    analyzed: &AtomicU64,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<usize, StoreError> {
    let mut an = analyzer.lock();
    let evicted = an.evict_users_idle_since(cutoff);
    if evicted.is_empty() {
        return Ok(0);
    }
    for (user, bytes) in &evicted {
        store.put_meta(&user_key(user), bytes)?;
    }
    let mut record = analyzed.load(Ordering::Acquire).to_le_bytes().to_vec();
    record.extend_from_slice(&an.checkpoint());
    store.put_meta(KEY, &record)?;
    Ok(evicted.len())
}

/// Forget every stored evicted user (their checkpoint was refused, or the
/// analyzer was rebuilt from the buffer).
pub fn forget_evicted(store: &dyn EventStore) -> Result<(), StoreError> {
    for (k, _) in store.meta_with_prefix(USER_PREFIX)? {
        store.remove_meta(&k)?;
    }
    Ok(())
}

/// How the analyzer came back at start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Restored {
    /// The checkpoint was used (else the whole buffer was replayed).
    pub from_checkpoint: bool,
    /// Why a stored checkpoint was not used.
    pub refused: Option<String>,
    pub replayed_events: u64,
    /// First batch not yet analyzed, after the replay.
    pub through: u64,
    pub took_ms: u64,
}

/// Load the checkpoint (if usable) and replay the batches after it.
pub fn restore(
    store: &dyn EventStore,
    cfg: AnalyzerConfig,
) -> Result<(Analyzer, Restored), StoreError> {
    let began = Instant::now();
    let mut out = Restored::default();
    let mut from = 0u64;
    let mut analyzer = match store.get_meta(KEY) {
        Ok(Some(bytes)) if bytes.len() >= 8 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&bytes[..8]);
            match Analyzer::from_checkpoint(cfg.clone(), &bytes[8..]) {
                Ok(a) => {
                    from = u64::from_le_bytes(n);
                    out.from_checkpoint = true;
                    a
                }
                Err(e) => {
                    out.refused = Some(e.to_string());
                    forget_evicted(store)?;
                    Analyzer::new(cfg)
                }
            }
        }
        Ok(Some(_)) => {
            out.refused = Some("checkpoint record too short".into());
            Analyzer::new(cfg)
        }
        Ok(None) => Analyzer::new(cfg),
        Err(e) => {
            out.refused = Some(e.to_string());
            Analyzer::new(cfg)
        }
    };
    let through = store.durable_batches();
    let mut replayed = 0u64;
    store.scan(from, &mut |pos, e| {
        if pos.batch < through {
            make_resident(&mut analyzer, store, &e.user_id);
            analyzer.ingest(e);
            replayed += 1;
        }
    })?;
    out.replayed_events = replayed;
    out.through = through;
    out.took_ms = began.elapsed().as_millis() as u64;
    Ok((analyzer, out))
}

/// Save the analyzer's state now, with `analyzed` (the first batch it has
/// not seen). Blocking: run on a blocking thread.
pub fn save(
    store: &dyn EventStore,
    analyzer: &Mutex<Analyzer>,
    analyzed: &AtomicU64,
) -> Result<usize, StoreError> {
    let record = {
        let an = analyzer.lock();
        // Read under the lock: the analyzer stage moves the mark under it.
        let through = analyzed.load(Ordering::Acquire);
        let mut record = through.to_le_bytes().to_vec();
        record.extend_from_slice(&an.checkpoint());
        record
    };
    store.put_meta(KEY, &record)?;
    Ok(record.len())
}

#[cfg(test)]
mod tests {
    use emotion_buffer::MemoryStore;
    use emotion_buffer::testing::sample_events;

    use super::*;

    fn summaries(a: &Analyzer) -> Vec<String> {
        let mut ids: Vec<_> = a.user_ids().map(str::to_owned).collect();
        ids.sort();
        ids.iter()
            .map(|u| format!("{:?}", a.user_summary(u)))
            .collect()
    }

    #[test]
    fn a_checkpoint_plus_the_batches_after_it_equals_a_full_replay() {
        let store = MemoryStore::default();
        store.append(&sample_events(30, "a")).expect("append");
        store.append(&sample_events(20, "b")).expect("append");
        let (first, r) = restore(&store, AnalyzerConfig::default()).expect("restore");
        assert!(!r.from_checkpoint);
        assert_eq!(r.replayed_events, 50);
        let mut record = r.through.to_le_bytes().to_vec();
        record.extend_from_slice(&first.checkpoint());
        store.put_meta(KEY, &record).expect("put");
        store.append(&sample_events(10, "a")).expect("append");
        let (second, r) = restore(&store, AnalyzerConfig::default()).expect("restore");
        assert!(r.from_checkpoint, "{r:?}");
        assert_eq!(r.replayed_events, 10, "only the batch after the checkpoint");
        store.put_meta(KEY, b"garbage!garbage").expect("put");
        let (full, r) = restore(&store, AnalyzerConfig::default()).expect("restore");
        assert!(r.refused.is_some());
        assert_eq!(r.replayed_events, 60);
        assert_eq!(summaries(&second), summaries(&full));
    }

    #[test]
    fn evicted_users_come_back_on_demand_and_across_a_restart() {
        let store = MemoryStore::default();
        let (an, r) = restore(&store, AnalyzerConfig::default()).expect("restore");
        let analyzed = AtomicU64::new(r.through);
        let analyzer = Mutex::new(an);
        let a = sample_events(30, "a");
        store.append(&a).expect("append");
        for e in &a {
            analyzer.lock().ingest(e);
        }
        analyzed.store(store.durable_batches(), Ordering::Release);
        let before = format!("{:?}", analyzer.lock().user_summary("a"));
        let cutoff = a[29].ingested_at + chrono::Duration::seconds(1);
        assert_eq!(
            evict_idle(&store, &analyzer, &analyzed, cutoff).expect("evict"),
            1
        );
        assert!(analyzer.lock().is_evicted("a"));
        assert!(load_user(&store, "a").is_some());
        // A restart: the checkpoint no longer holds "a"; a new event brings it back.
        let (mut an, r) = restore(&store, AnalyzerConfig::default()).expect("restore");
        assert!(r.from_checkpoint, "{r:?}");
        assert!(an.is_evicted("a"));
        make_resident(&mut an, &store, "a");
        assert_eq!(format!("{:?}", an.user_summary("a")), before);
    }
}
