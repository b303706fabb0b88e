//! The sled store's contract, one behaviour per test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use chrono::Duration as TimeDelta;
use common::{all, crash_image, event, of_user, open, opts};
use emotion_buffer::{
    EventPos, EventQuery, EventStore, MemoryStore, SledStore, StallBeforeFlush, StoreOptions,
};

#[test]
fn appended_batches_survive_reopen_in_order_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let a: Vec<_> = (0..120).map(|i| event("alice", i)).collect();
    let b: Vec<_> = (0..5).map(|i| event("bob", i)).collect();
    {
        let (s, _) = open(dir.path());
        for chunk in a.chunks(10) {
            assert_eq!(s.append(chunk).expect("append"), vec![true; chunk.len()]);
        }
        assert_eq!(s.append(&b).expect("append"), vec![true; 5]);
        assert_eq!(s.append(&a[..3]).expect("append"), vec![false; 3]);
        // Same id twice in one batch: stored once.
        let twice = [event("carol", 1), event("carol", 2)];
        let batch = vec![twice[0].clone(), twice[1].clone(), twice[0].clone()];
        assert_eq!(s.append(&batch).expect("append"), vec![true, true, false]);
    }
    let (s, report) = open(dir.path());
    assert!(report.repaired.is_none());
    assert_eq!(report.events, 127);
    assert_eq!(s.stats().events, 127);
    // Postings are on disk for the first batches and rebuilt for the rest.
    assert_eq!(of_user(&s, "alice"), a);
    assert_eq!(s.session_events("s-bob", 100).expect("q"), b);
    assert!(s.contains(&a[0].event_id));
    assert_eq!(s.append(&a[5..6]).expect("append"), vec![false]);
    let more = vec![event("alice", 500)];
    s.append(&more).expect("append");
    assert_eq!(of_user(&s, "alice").len(), 121);
}

#[test]
fn time_filters_limits_and_names_that_are_prefixes_of_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = open(dir.path());
    let u: Vec<_> = (0..10).map(|i| event("u", i)).collect();
    s.append(&u[..6]).expect("append");
    s.append(&u[6..]).expect("append");
    s.append(&[event("u2", 3)]).expect("append");
    s.flush().expect("flush");
    let q = EventQuery {
        from: Some(u[2].timestamp),
        to: Some(u[7].timestamp),
        limit: 4,
    };
    assert_eq!(s.user_events("u", &q).expect("q"), u[2..6].to_vec());
    assert_eq!(of_user(&s, "u").len(), 10, "u2's events are not u's");
    assert!(of_user(&s, "nobody").is_empty());
}

#[test]
fn the_sync_reads_only_durable_batches_and_numbers_are_never_reused() {
    let dir = tempfile::tempdir().expect("tmp");
    let image = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("stalled");
    let o = StoreOptions {
        stall_before_flush: Some(StallBeforeFlush {
            after_batches: 2,
            marker: marker.clone(),
        }),
        ..opts()
    };
    let (s, _) = SledStore::open(&dir.path().join("store"), o).expect("open");
    let s = std::sync::Arc::new(s);
    let start = s.durable_batches();
    s.append(&[event("u", 0)]).expect("append");
    s.append(&[event("u", 1)]).expect("append");
    let mark = s.durable_batches();
    assert_eq!(mark, start + 2);
    // The third batch is inserted, then the writer stalls before its flush.
    let writer = s.clone();
    std::thread::spawn(move || writer.append(&[event("u", 2), event("u", 3)]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the writer never stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        s.durable_batches(),
        mark,
        "the mark moves only after the flush"
    );
    let shipped = s.events_after(None, 100).expect("read");
    assert_eq!(
        shipped.len(),
        2,
        "nothing past the mark is read: {shipped:?}"
    );
    assert!(shipped.iter().all(|(p, _)| p.batch < mark));
    // Kill here: what is on disk now is what a restart finds.
    crash_image(&dir.path().join("store"), image.path());
    let (s2, report) = open(image.path());
    assert!(report.repaired.is_none(), "{report:?}");
    assert_eq!(s2.damage().acknowledged_lost, 0);
    s2.append(&[event("u", 4)]).expect("append");
    let after = s2.events_after(None, 100).expect("read");
    let last = after.last().expect("events").0;
    assert!(
        last.batch > mark,
        "the stalled batch's number {mark} is not given again: {after:?}"
    );
    let batches: Vec<u64> = after.iter().map(|(p, _)| p.batch).collect();
    assert!(batches.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn retention_purges_whole_old_batches_and_never_past_the_cursor() {
    let dir = tempfile::tempdir().expect("tmp");
    let a: Vec<_> = (0..6).map(|i| event("u", i)).collect();
    {
        let (s, _) = open(dir.path());
        s.append(&a[..3]).expect("append");
        s.append(&a[3..]).expect("append");
        let cursor = EventPos { batch: 0, index: 0 };
        assert_eq!(
            s.purge_ingested_before(a[5].ingested_at + TimeDelta::seconds(1), Some(cursor))
                .expect("purge"),
            0
        );
        let removed = s
            .purge_ingested_before(a[2].ingested_at + TimeDelta::milliseconds(1), None)
            .expect("purge");
        assert_eq!(removed, 3);
        assert_eq!(s.stats().events, 3);
        assert_eq!(of_user(&s, "u"), a[3..].to_vec());
    }
    let (s, report) = open(dir.path());
    assert!(report.repaired.is_none());
    assert_eq!(all(&s), a[3..].to_vec());
    assert_eq!(s.damage().acknowledged_lost, 0, "a purge is not a loss");
    assert_eq!(s.scrub(&|| false).expect("scrub").acknowledged_lost, 0);
}

#[test]
fn lag_counts_what_lies_after_the_cursor() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = open(dir.path());
    let a: Vec<_> = (0..7).map(|i| event("u", i)).collect();
    s.append(&a[..3]).expect("append");
    s.append(&a[3..]).expect("append");
    let read = s.events_after(None, 100).expect("read");
    assert_eq!(read.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), a);
    let cursor = read[1].0;
    assert_eq!(s.events_after(Some(cursor), 100).expect("read").len(), 5);
    assert_eq!(s.count_after(Some(cursor)).expect("count"), 5);
    assert_eq!(s.count_after(None).expect("count"), 7);
    // `max` stops at a batch boundary once reached.
    assert_eq!(s.events_after(None, 2).expect("read").len(), 3);
    let end = EventPos {
        batch: read[6].0.batch,
        index: u32::MAX,
    };
    assert_eq!(s.count_after(Some(end)).expect("count"), 0);
}

#[test]
fn erasing_a_user_keeps_positions_survives_reopen_and_salvage_never_brings_it_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let mixed: Vec<_> = (0..8)
        .map(|i| event(if i % 2 == 0 { "alice" } else { "bob" }, i))
        .collect();
    let bob_pos;
    {
        let (s, _) = open(dir.path());
        s.append(&mixed).expect("append");
        bob_pos = s
            .events_after(None, 100)
            .expect("read")
            .into_iter()
            .filter(|(_, e)| e.user_id == "bob")
            .map(|(p, _)| p)
            .collect::<Vec<_>>();
        assert_eq!(s.erase_user("alice").expect("erase"), 4);
        let after = s.events_after(None, 100).expect("read");
        assert_eq!(after.iter().map(|(p, _)| *p).collect::<Vec<_>>(), bob_pos);
        assert!(of_user(&s, "alice").is_empty());
        assert!(s.session_events("s-alice", 10).expect("q").is_empty());
        assert_eq!(s.append(&mixed[..1]).expect("append"), vec![false]);
    }
    let (s, _) = open(dir.path());
    assert!(all(&s).iter().all(|e| e.user_id == "bob"));
    assert_eq!(s.stats().events, 4);
    drop(s);
    // Even when the store must be rebuilt from its raw files, where the copy
    // from before the erasure still lies, alice does not come back.
    std::fs::write(dir.path().join("needs-repair"), b"test").expect("marker");
    let (s, report) = open(dir.path());
    let repair = report.repaired.expect("repaired");
    assert!(all(&s).iter().all(|e| e.user_id == "bob"), "{:?}", all(&s));
    assert_eq!(repair.acknowledged_lost, 0);
    assert_eq!(
        s.events_after(None, 100)
            .expect("read")
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>(),
        bob_pos
    );
}

#[test]
fn metadata_round_trips_and_a_removal_survives_salvage() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (s, _) = open(dir.path());
        s.put_meta("consent/u1", b"yes").expect("put");
        s.put_meta("consent/u2", b"no").expect("put");
        s.put_meta("consent/u2", b"maybe").expect("put");
        s.put_meta("consent/u3", b"x").expect("put");
        s.remove_meta("consent/u3").expect("remove");
        s.put_meta("other", b"x").expect("put");
    }
    for repair in [false, true] {
        if repair {
            std::fs::write(dir.path().join("needs-repair"), b"test").expect("marker");
        }
        let (s, report) = open(dir.path());
        assert_eq!(report.repaired.is_some(), repair);
        assert_eq!(
            s.get_meta("consent/u1").expect("get"),
            Some(b"yes".to_vec())
        );
        assert_eq!(s.get_meta("consent/u3").expect("get"), None);
        let all = s.meta_with_prefix("consent/").expect("scan");
        assert_eq!(
            all,
            vec![
                ("consent/u1".to_owned(), b"yes".to_vec()),
                ("consent/u2".to_owned(), b"maybe".to_vec())
            ]
        );
    }
}

#[test]
fn storage_is_private_to_its_user() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("data");
    let (s, _) = open(&root);
    s.append(&[event("u", 1)]).expect("append");
    s.flush().expect("flush");
    fn check(p: &std::path::Path) {
        let m = std::fs::metadata(p).expect("meta");
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            for e in std::fs::read_dir(p).expect("dir") {
                check(&e.expect("entry").path());
            }
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
    check(&root);
}

#[test]
fn a_missing_ledger_is_rebuilt_and_a_cut_store_is_counted_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let (s, _) = open(dir.path());
        for i in 0..10 {
            s.append(&[event("u", 2 * i), event("u", 2 * i + 1)])
                .expect("append");
        }
    }
    std::fs::remove_file(dir.path().join("ledger")).expect("rm");
    let (s, report) = open(dir.path());
    assert!(report.repaired.is_none());
    assert_eq!(s.stats().events, 20);
    // The ledger now knows of 20 acknowledged events: lose the engine's files
    // entirely and every one of them is counted.
    drop(s);
    std::fs::remove_dir_all(dir.path().join("sled")).expect("rm");
    let (s, report) = open(dir.path());
    let repair = report.repaired.expect("repaired");
    assert_eq!(repair.acknowledged_lost, 20);
    assert_eq!(s.damage().acknowledged_lost, 20);
    // New batches continue after the lost ones.
    s.append(&[event("u", 99)]).expect("append");
    assert!(s.events_after(None, 10).expect("read")[0].0.batch > 10);
}

#[test]
fn reopening_the_engine_in_place_keeps_everything_and_writes_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let a: Vec<_> = (0..40).map(|i| event("u", i)).collect();
    {
        let (s, _) = open(dir.path());
        s.append(&a[..20]).expect("append");
        s.compact_log().expect("reopen");
        assert_eq!(all(&s), a[..20].to_vec());
        assert_eq!(s.append(&a[..1]).expect("append"), vec![false]);
        s.append(&a[20..]).expect("append");
        s.compact_log().expect("reopen");
        assert_eq!(of_user(&s, "u"), a);
    }
    let (s, report) = open(dir.path());
    assert!(report.repaired.is_none());
    assert_eq!(all(&s), a);
}

#[test]
fn the_memory_store_keeps_the_same_contract() {
    let s = MemoryStore::new(100);
    let a: Vec<_> = (0..5).map(|i| event("u", i)).collect();
    assert_eq!(s.append(&a).expect("append"), vec![true; 5]);
    assert_eq!(s.append(&a[..2]).expect("append"), vec![false; 2]);
    assert_eq!(of_user(&s, "u"), a);
    assert_eq!(s.erase_user("u").expect("erase"), 5);
    assert!(all(&s).is_empty());
    assert_eq!(s.count_after(None).expect("count"), 0);
}

#[test]
fn small_commits_are_compacted_and_read_erased_and_purged_alike() {
    // At a low rate every group commit is an event or two; compaction keeps
    // the number of stored values (sled's memory) to a few per value size.
    let dir = tempfile::tempdir().expect("tmp");
    let users = ["a", "b", "c"];
    let events: Vec<_> = (0..240).map(|i| event(users[i as usize % 3], i)).collect();
    let (s, _) = open(dir.path());
    for e in &events {
        s.append(std::slice::from_ref(e)).expect("append");
    }
    let values = s.stored_values().expect("values");
    assert!(
        values * 3 < events.len() as u64,
        "{values} values for {} single-event commits",
        events.len()
    );
    // Every position is still its own batch, in order, and a cursor in the
    // middle of a compacted value reads on from there.
    let read = s.events_after(None, usize::MAX).expect("read");
    assert_eq!(
        read.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        events
    );
    assert!(read.windows(2).all(|w| w[0].0.batch < w[1].0.batch));
    let cursor = read[100].0;
    let rest = s.events_after(Some(cursor), usize::MAX).expect("read");
    assert_eq!(rest.len(), 139);
    assert_eq!(rest[0].1, events[101]);
    assert_eq!(s.count_after(Some(cursor)).expect("count"), 139);
    assert_eq!(of_user(&s, "b").len(), 80);

    // Erasure rewrites the compacted values it touches; positions stay.
    assert_eq!(s.erase_user("b").expect("erase"), 80);
    assert!(of_user(&s, "b").is_empty());
    let kept: Vec<_> = events
        .iter()
        .filter(|e| e.user_id != "b")
        .cloned()
        .collect();
    assert_eq!(all(&s), kept);
    let after_erase = s.events_after(None, usize::MAX).expect("read");
    assert!(
        after_erase
            .iter()
            .all(|(p, e)| read.iter().any(|(q, f)| p == q && e == f))
    );

    // Retention cuts through a compacted value: the rest of it stays.
    let cutoff = events[120].ingested_at;
    let removed = s.purge_ingested_before(cutoff, None).expect("purge");
    let expected: Vec<_> = kept
        .iter()
        .filter(|e| e.ingested_at >= cutoff)
        .cloned()
        .collect();
    assert_eq!(removed as usize, kept.len() - expected.len());
    assert_eq!(all(&s), expected);
    assert_eq!(of_user(&s, "a").len(), 40);
    assert_eq!(s.stats().events, expected.len() as u64);
    drop(s);

    let (s, report) = open(dir.path());
    assert!(report.repaired.is_none());
    assert_eq!(all(&s), expected);
    assert_eq!(of_user(&s, "c").len(), 40);
    let scrub = s.scrub(&|| false).expect("scrub");
    assert_eq!(scrub.acknowledged_lost, 0);
    assert_eq!(scrub.corrupt_batches, 0);
    // Appends go on after the reopen, and duplicates are still refused.
    assert_eq!(
        s.append(&[events[239].clone()]).expect("append"),
        vec![false]
    );
    let more = event("a", 1000);
    assert_eq!(
        s.append(std::slice::from_ref(&more)).expect("append"),
        vec![true]
    );
    assert_eq!(all(&s).last(), Some(&more));
}
