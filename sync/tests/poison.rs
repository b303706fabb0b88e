//! Rows the central database refuses for their content: the batch is bisected
//! down to the refused rows, which go to the caller's dead-letter store, and
//! everything else is written exactly once with the cursor past all of it.

mod common;

use std::collections::HashSet;

use common::{events, fresh, scalar};
use emotion_core::{EmotionEvent, Json};
use emotion_sync::{Cursor, SyncClient};
use serde_json::json;
use uuid::Uuid;

/// The central table refuses events whose `context` carries `"poison"`.
async fn poison_constraint(c: &mut SyncClient) {
    c.client()
        .await
        .expect("connection")
        .batch_execute(
            "ALTER TABLE emotional_events ADD CONSTRAINT no_poison \
             CHECK (context->>'poison' IS NULL)",
        )
        .await
        .expect("add constraint");
}

fn poisoned(mut e: EmotionEvent) -> EmotionEvent {
    e.context = Some(Json::new(json!({"poison": true})));
    e
}

/// Cursors past each event of one buffer batch `b`.
fn positions(b: u64, n: usize) -> Vec<Cursor> {
    (0..n).map(|i| Cursor::new(b, i as u32 + 1)).collect()
}

async fn central_ids(c: &mut SyncClient) -> Vec<Uuid> {
    c.client()
        .await
        .expect("connection")
        .query("SELECT event_id FROM emotional_events", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Write with the isolating writer, collecting what it refuses.
async fn write(
    c: &mut SyncClient,
    batch: &[EmotionEvent],
    after: &[Cursor],
    end: Cursor,
) -> (emotion_sync::IsolatedOutcome, Vec<(Uuid, Cursor, String)>) {
    let mut dead = Vec::new();
    let out = c
        .write_events_isolating("gw-1", batch, after, end, |r| {
            assert!(r.error.is_row_content(), "{}", r.error);
            dead.push((
                r.event.event_id,
                r.after,
                r.error.sqlstate().unwrap_or_default().to_owned(),
            ));
            Ok(())
        })
        .await
        .expect("isolating write");
    (out, dead)
}

#[tokio::test]
async fn two_refused_rows_anywhere_in_a_batch_are_exactly_the_ones_dead_lettered() {
    // Positions at the edges, adjacent, and in the middle, in batches of
    // various sizes (odd and even halves).
    let cases: [(usize, [usize; 2]); 5] = [
        (200, [0, 199]),
        (200, [57, 58]),
        (137, [3, 120]),
        (2, [0, 1]),
        (301, [150, 151]),
    ];
    for (n, bad) in cases {
        let (_db, mut c) = fresh().await;
        poison_constraint(&mut c).await;
        let mut batch = events("u1", 0..n as u64 / 2);
        batch.extend(events("u2", n as u64 / 2..n as u64));
        for &i in &bad {
            batch[i] = poisoned(batch[i].clone());
        }
        let after = positions(4, n);
        let end = Cursor::new(5, 0);
        let (out, dead) = write(&mut c, &batch, &after, end).await;

        let want: Vec<(Uuid, Cursor, String)> = bad
            .iter()
            .map(|&i| (batch[i].event_id, after[i], "23514".to_owned()))
            .collect();
        assert_eq!(dead, want, "n={n} bad={bad:?}");
        assert_eq!(out.refused, 2);
        assert_eq!(out.written.inserted, n as u64 - 2);
        assert!(out.attempts > 1);

        // Every other row exactly once, and the cursor past the whole batch.
        let ids = central_ids(&mut c).await;
        assert_eq!(ids.len(), n - 2, "no row twice");
        let got: HashSet<Uuid> = ids.into_iter().collect();
        let expected: HashSet<Uuid> = batch
            .iter()
            .enumerate()
            .filter(|(i, _)| !bad.contains(i))
            .map(|(_, e)| e.event_id)
            .collect();
        assert_eq!(got, expected, "n={n} bad={bad:?}");
        assert_eq!(c.read_cursor("gw-1").await.expect("cursor"), Some(end));
        let state = c.sync_state("gw-1").await.expect("state").expect("row");
        assert_eq!(state.events_synced, n as i64 - 2);
    }
}

#[tokio::test]
async fn a_clean_batch_is_one_transaction_and_a_resent_one_changes_nothing() {
    let (_db, mut c) = fresh().await;
    poison_constraint(&mut c).await;
    let batch = events("u1", 0..100);
    let after = positions(0, 100);
    let (out, dead) = write(&mut c, &batch, &after, Cursor::new(1, 0)).await;
    assert!(dead.is_empty());
    assert_eq!((out.attempts, out.written.inserted), (1, 100));

    // A batch with a refused row, written twice (a crash after the commit
    // and before the driver learnt of it): the second time the row is
    // refused again (the caller's store must be idempotent) and nothing else
    // changes.
    let mut second = events("u3", 100..164);
    second[10] = poisoned(second[10].clone());
    let after = positions(1, second.len());
    let (first, dead1) = write(&mut c, &second, &after, Cursor::new(2, 0)).await;
    assert_eq!((first.refused, first.written.inserted), (1, 63));
    let (again, dead2) = write(&mut c, &second, &after, Cursor::new(2, 0)).await;
    assert_eq!(dead1, dead2);
    assert_eq!(
        (again.written.inserted, again.written.cursor_advanced),
        (0, false)
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM emotional_events").await,
        163
    );
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(Cursor::new(2, 0))
    );
}

#[tokio::test]
async fn a_nul_the_validation_would_have_refused_is_dead_lettered_with_22p05() {
    // Events in the buffer from before validation refused U+0000 still sync.
    let (_db, mut c) = fresh().await;
    let mut batch = events("u1", 0..50);
    batch[20].context = Some(Json::new(json!({"notes": ["a", "b\u{0}c"]})));
    batch[33].user_id = "u\u{0}1".to_owned();
    let after = positions(9, batch.len());
    let (out, dead) = write(&mut c, &batch, &after, Cursor::new(10, 0)).await;
    assert_eq!(out.refused, 2, "{dead:?}");
    assert_eq!(dead[0].0, batch[20].event_id);
    assert_eq!(dead[0].2, "22P05", "jsonb refuses \\u0000");
    assert_eq!(dead[1].0, batch[33].event_id);
    assert!(dead[1].2.starts_with("22"), "{dead:?}");
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM emotional_events").await,
        48
    );
}

#[tokio::test]
async fn a_failing_dead_letter_store_stops_before_the_cursor_passes() {
    let (_db, mut c) = fresh().await;
    poison_constraint(&mut c).await;
    let mut batch = events("u1", 0..40);
    batch[25] = poisoned(batch[25].clone());
    let after = positions(0, 40);
    let err = c
        .write_events_isolating("gw-1", &batch, &after, Cursor::new(1, 0), |_| {
            Err("disk full".to_owned())
        })
        .await
        .expect_err("store failed");
    assert!(err.to_string().contains("disk full"), "{err}");
    // The rows before it are committed, the cursor stops just before it.
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM emotional_events").await,
        25
    );
    assert_eq!(
        c.read_cursor("gw-1").await.expect("cursor"),
        Some(after[24])
    );
}

#[tokio::test]
async fn a_content_error_no_row_is_to_blame_for_is_returned_not_bisected() {
    // The cursor update itself is refused (a constraint on the sync state):
    // bisecting would blame, and dead-letter, every row.
    let (_db, mut c) = fresh().await;
    c.client()
        .await
        .expect("connection")
        .batch_execute(
            "ALTER TABLE gateway_sync_state ADD CONSTRAINT low_cursor CHECK (cursor_batch < 100)",
        )
        .await
        .expect("add constraint");
    let batch = events("u1", 0..30);
    let after = positions(200, 30);
    let mut dead = 0;
    let err = c
        .write_events_isolating("gw-1", &batch, &after, Cursor::new(201, 0), |_| {
            dead += 1;
            Ok(())
        })
        .await
        .expect_err("refused");
    assert_eq!(dead, 0, "no row was to blame");
    assert_eq!(err.sqlstate(), Some("23514"), "{err}");
    assert!(err.is_content() && !err.is_row_content(), "{err}");
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM emotional_events").await,
        0
    );
}
