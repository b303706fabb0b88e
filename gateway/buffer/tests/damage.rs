//! Damage: single-byte flips, truncations and zeroed pages at hundreds of
//! offsets spread over every file of a store, the middle included. Whatever
//! the damage, the store opens without a panic, serves what can be salvaged,
//! and reports a loss equal to acknowledged − served, exactly.

mod common;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::{all, crash_image, event, of_user, open};
use emotion_buffer::EventStore;

const USERS: [&str; 4] = ["u1", "u2", "u3", "u4"];

/// A closed store of 240 batches (1,200 events) and the ids acknowledged.
fn template(dir: &Path) -> HashSet<uuid::Uuid> {
    let (s, _) = open(dir);
    let mut acked = HashSet::new();
    for b in 0..240 {
        let events: Vec<_> = (0..5)
            .map(|i| event(USERS[(b + i) % USERS.len()], (b * 5 + i) as i64))
            .collect();
        let stored = s.append(&events).expect("append");
        for (e, ok) in events.iter().zip(stored) {
            assert!(ok);
            acked.insert(e.event_id);
        }
        if b % 60 == 0 {
            s.put_meta(&format!("consent/u{b}"), b"{}").expect("meta");
        }
    }
    acked
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip(u64),
    Truncate(u64),
    Zero4k(u64),
}

fn apply(path: &Path, d: Damage) {
    let mut bytes = std::fs::read(path).expect("read");
    match d {
        Damage::Flip(at) => {
            if let Some(b) = bytes.get_mut(at as usize) {
                *b ^= 0xFF;
            }
        }
        Damage::Truncate(at) => bytes.truncate(at as usize),
        Damage::Zero4k(at) => {
            let end = (at as usize + 4096).min(bytes.len());
            for b in &mut bytes[(at as usize).min(end)..end] {
                *b = 0;
            }
        }
    }
    std::fs::write(path, bytes).expect("write");
}

/// Open, scrub, and check the books; returns (served, reported lost).
fn check(dir: &Path, acked: &HashSet<uuid::Uuid>, what: &str) -> (usize, u64) {
    let (s, _) = open(dir);
    s.scrub(&|| false).expect("scrub");
    // Events the checks themselves added (user "after") are not counted.
    let served: Vec<_> = all(&s)
        .into_iter()
        .filter(|e| e.user_id != "after")
        .collect();
    let ids: HashSet<_> = served.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), served.len(), "{what}: an event is served twice");
    assert!(ids.is_subset(acked), "{what}: an event nobody sent");
    let lost = s.damage().acknowledged_lost;
    assert_eq!(
        lost,
        (acked.len() - served.len()) as u64,
        "{what}: reported loss {lost}, acknowledged {} − served {}",
        acked.len(),
        served.len()
    );
    // New events still go in, after every old batch number.
    let newest = s
        .events_after(None, usize::MAX)
        .expect("read")
        .last()
        .map(|(p, _)| p.batch);
    s.append(&[event("after", 1)]).expect("append after damage");
    let fresh = s.events_after(None, usize::MAX).expect("read");
    let last = fresh.last().expect("the new event").0.batch;
    assert!(
        newest.is_none_or(|n| last > n),
        "{what}: batch number reused"
    );
    let listed: usize = USERS.iter().map(|u| of_user(&s, u).len()).sum();
    assert_eq!(listed, served.len(), "{what}: per-user listings disagree");
    (served.len(), lost)
}

#[test]
fn every_damage_is_survived_and_counted_exactly() {
    let root = tempfile::tempdir().expect("tmp");
    let tpl = root.path().join("template");
    let acked = template(&tpl);
    let targets = files(&tpl);
    let mut cases = Vec::new();
    for f in &targets {
        let len = std::fs::metadata(f).expect("meta").len();
        if len == 0 {
            continue;
        }
        // Offsets spread evenly over the file: its start, middle and end.
        let per_file = if len > 4096 { 60 } else { 6 };
        for k in 0..per_file {
            let at = len * k / per_file + (k * 7919) % 13;
            let at = at.min(len - 1);
            cases.push((f.clone(), Damage::Flip(at)));
            cases.push((f.clone(), Damage::Truncate(at)));
            if len > 4096 {
                cases.push((f.clone(), Damage::Zero4k(at)));
            }
        }
    }
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let mut total_lost = 0;
    let mut repaired = 0;
    for (i, (file, damage)) in cases.iter().enumerate() {
        let case = root.path().join(format!("case-{i}"));
        crash_image(&tpl, &case);
        let rel = file.strip_prefix(&tpl).expect("inside");
        apply(&case.join(rel), *damage);
        let what = format!("{damage:?} of {}", rel.display());
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let first = check(&case, &acked, &what);
            // A scrub that found damage schedules a repair at the next open;
            // the repair may recover more, never less, and counts again.
            let second = check(&case, &acked, &format!("{what}, reopened"));
            assert!(second.0 >= first.0, "{what}: the repair lost events");
            second
        }));
        match outcome {
            Ok((_, lost)) => {
                total_lost += lost;
                if case.read_dir().expect("dir").any(|e| {
                    e.expect("entry")
                        .file_name()
                        .to_string_lossy()
                        .contains("damaged")
                }) {
                    repaired += 1;
                }
            }
            Err(_) => panic!("{what}: panicked"),
        }
        std::fs::remove_dir_all(&case).expect("clean");
    }
    println!(
        "{} damage cases over {} files: {repaired} repaired, {total_lost} acknowledged events lost in all",
        cases.len(),
        targets.len()
    );
}

#[test]
fn salvage_of_an_undamaged_store_finds_every_batch() {
    let root = tempfile::tempdir().expect("tmp");
    let acked = template(root.path());
    for f in files(root.path()) {
        println!(
            "{} {}",
            f.display(),
            std::fs::metadata(&f).expect("m").len()
        );
    }
    let s = emotion_buffer::salvage::scan_dir(&root.path().join("sled")).expect("scan");
    let events: u64 = s.batches.values().map(|(h, _)| u64::from(h.slots)).sum();
    assert_eq!(
        events as usize,
        acked.len(),
        "{} batches found",
        s.batches.len()
    );
}
