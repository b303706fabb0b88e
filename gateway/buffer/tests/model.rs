//! A model check of the sled store, in the manner of Vector's `disk_v2`
//! model test: random sequences of appends (with re-sent copies), clean
//! reopens, crashes (the files as they are, no shutdown), retention, cursor
//! advances and erasures, run against the store and against a plain model.
//!
//! Invariants after every step: every acknowledged event is served exactly
//! once, in order, unless retention or an erasure removed it on purpose; no
//! loss is reported; a re-sent copy is refused; batch numbers strictly
//! increase, across crashes too.

mod common;

use std::path::PathBuf;

use common::{crash_image, event, of_user, opts};
use emotion_buffer::{EventPos, EventStore, SledStore};
use emotion_core::EmotionEvent;
use proptest::prelude::*;
use uuid::Uuid;

const USERS: [&str; 3] = ["ann", "bo", "cy"];

#[derive(Debug, Clone)]
enum Op {
    Append {
        user: usize,
        n: usize,
        resend: Option<usize>,
    },
    Reopen,
    Crash,
    Purge {
        upto: usize,
    },
    Advance {
        k: usize,
    },
    Erase {
        user: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 1..6usize, proptest::option::of(0..1000usize))
            .prop_map(|(user, n, resend)| Op::Append { user, n, resend }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => (0..1000usize).prop_map(|upto| Op::Purge { upto }),
        2 => (1..20usize).prop_map(|k| Op::Advance { k }),
        1 => (0..3usize).prop_map(|user| Op::Erase { user }),
    ]
}

#[derive(Debug, Clone)]
struct Ev {
    id: Uuid,
    user: &'static str,
    t: i64,
    erased: bool,
}

/// The model: batches in order, each with its events.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<(u64, Vec<Ev>)>,
    cursor: Option<EventPos>,
    highest: Option<u64>,
    clock: i64,
}

impl Model {
    fn live(&self) -> Vec<&Ev> {
        self.batches
            .iter()
            .flat_map(|(_, b)| b.iter())
            .filter(|e| !e.erased)
            .collect()
    }
}

struct Harness {
    root: tempfile::TempDir,
    dir: PathBuf,
    store: Option<SledStore>,
    generation: usize,
}

impl Harness {
    fn store(&self) -> &SledStore {
        self.store.as_ref().expect("open")
    }
}

fn check(h: &Harness, m: &Model) -> Result<(), TestCaseError> {
    let s = h.store();
    let served = s.events_after(None, usize::MAX).expect("read");
    let want = m.live();
    prop_assert_eq!(
        served.iter().map(|(_, e)| e.event_id).collect::<Vec<_>>(),
        want.iter().map(|e| e.id).collect::<Vec<_>>(),
        "served events differ from the model"
    );
    prop_assert!(served.windows(2).all(|w| w[0].0 < w[1].0));
    prop_assert_eq!(s.damage().acknowledged_lost, 0);
    prop_assert_eq!(s.count_after(None).expect("count"), want.len() as u64);
    for u in USERS {
        let got: Vec<Uuid> = of_user(s, u).iter().map(|e| e.event_id).collect();
        let exp: Vec<Uuid> = want.iter().filter(|e| e.user == u).map(|e| e.id).collect();
        prop_assert_eq!(got, exp, "listing of {}", u);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let root = tempfile::tempdir().expect("tmp");
    let dir = root.path().join("g0");
    let (store, _) = SledStore::open(&dir, opts()).expect("open");
    let mut h = Harness {
        root,
        dir,
        store: Some(store),
        generation: 0,
    };
    let mut m = Model::default();
    // Every event acknowledged, and whether retention removed it since.
    let mut sent: Vec<(EmotionEvent, bool)> = Vec::new();
    for op in ops {
        match op {
            Op::Append { user, n, resend } => {
                let mut events: Vec<_> = (0..n)
                    .map(|_| {
                        m.clock += 1;
                        event(USERS[user], m.clock)
                    })
                    .collect();
                // A copy of an earlier event (still stored, or erased) rides along.
                let copy = resend.and_then(|i| {
                    let live: Vec<_> = sent.iter().filter(|(_, gone)| !gone).collect();
                    (!live.is_empty()).then(|| live[i % live.len()].0.clone())
                });
                if let Some(c) = &copy {
                    events.push(c.clone());
                }
                let stored = h.store().append(&events).expect("append");
                if copy.is_some() {
                    prop_assert_eq!(stored.last(), Some(&false), "a re-sent copy was stored");
                }
                let fresh: Vec<_> = events
                    .iter()
                    .zip(&stored)
                    .filter(|(_, ok)| **ok)
                    .map(|(e, _)| e.clone())
                    .collect();
                prop_assert_eq!(fresh.len(), n);
                let all = h.store().events_after(None, usize::MAX).expect("read");
                let seq = all
                    .iter()
                    .rev()
                    .find(|(_, e)| e.event_id == fresh[0].event_id)
                    .map(|(p, _)| p.batch)
                    .expect("the new batch is served");
                prop_assert!(
                    m.highest.is_none_or(|hi| seq > hi),
                    "batch number {} reused",
                    seq
                );
                m.highest = Some(seq);
                m.batches.push((
                    seq,
                    fresh
                        .iter()
                        .map(|e| Ev {
                            id: e.event_id,
                            user: USERS[user],
                            t: (e.ingested_at - event("x", 0).ingested_at).num_seconds(),
                            erased: false,
                        })
                        .collect(),
                ));
                sent.extend(fresh.into_iter().map(|e| (e, false)));
            }
            Op::Reopen => {
                h.store = None;
                let (s, r) = SledStore::open(&h.dir, opts()).expect("reopen");
                prop_assert!(r.repaired.is_none());
                h.store = Some(s);
            }
            Op::Crash => {
                // The files as they are now, without a shutdown.
                h.generation += 1;
                let image = h.root.path().join(format!("g{}", h.generation));
                crash_image(&h.dir, &image);
                h.store = None;
                h.dir = image;
                let (s, r) = SledStore::open(&h.dir, opts()).expect("open after crash");
                prop_assert!(r.repaired.is_none(), "{:?}", r);
                h.store = Some(s);
            }
            Op::Purge { upto } => {
                let cutoff_t = if m.clock == 0 {
                    0
                } else {
                    (upto as i64) % (m.clock + 1)
                };
                let cutoff = event("x", cutoff_t).ingested_at;
                let removed = h
                    .store()
                    .purge_ingested_before(cutoff, m.cursor)
                    .expect("purge");
                let mut expect = 0u64;
                while let Some((seq, b)) = m.batches.first() {
                    let newest = b.iter().map(|e| e.t).max().unwrap_or(0);
                    if newest >= cutoff_t || m.cursor.is_some_and(|c| *seq >= c.batch) {
                        break;
                    }
                    expect += b.iter().filter(|e| !e.erased).count() as u64;
                    for e in b {
                        if let Some(s) = sent.iter_mut().find(|(c, _)| c.event_id == e.id) {
                            s.1 = true;
                        }
                    }
                    m.batches.remove(0);
                }
                prop_assert_eq!(removed, expect);
            }
            Op::Advance { k } => {
                let got = h.store().events_after(m.cursor, k).expect("read");
                if let Some((p, _)) = got.last() {
                    m.cursor = Some(*p);
                }
            }
            Op::Erase { user } => {
                let n = h.store().erase_user(USERS[user]).expect("erase");
                let mut expect = 0;
                for (_, b) in &mut m.batches {
                    for e in b.iter_mut().filter(|e| e.user == USERS[user] && !e.erased) {
                        e.erased = true;
                        expect += 1;
                    }
                }
                prop_assert_eq!(n, expect);
            }
        }
        check(&h, &m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
