//! Writing a batch whose rows the server may refuse: the refused rows are
//! isolated by bisection and handed to the caller (its dead-letter store),
//! everything else is written exactly once, in order.

use emotion_core::EmotionEvent;

use crate::client::SyncClient;
use crate::error::{Result, SyncError};
use crate::rows::{Cursor, WriteOutcome};

/// An event the central database refused on its own: a write of just this
/// event, with nothing else in the transaction, failed for its content.
#[derive(Debug)]
pub struct Refused<'a> {
    pub event: &'a EmotionEvent,
    /// The cursor just past the event (what the caller gave for it).
    pub after: Cursor,
    /// The server's refusal ([`SyncError::is_row_content`] holds).
    pub error: &'a SyncError,
}

/// What [`SyncClient::write_events_isolating`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolatedOutcome {
    /// The rows written, over every transaction (`skipped` counts re-sent
    /// and erased events, not refused ones).
    pub written: WriteOutcome,
    /// Events refused and handed to the caller.
    pub refused: u64,
    /// Transactions attempted (1 when nothing was refused).
    pub attempts: u64,
}

impl SyncClient {
    /// Write `events` and move the cursor to `end`, like
    /// [`write_events`](Self::write_events), but when the server refuses the
    /// batch for its rows' content ([`SyncError::is_row_content`]: a value it
    /// cannot store, a constraint a row breaks), split it in halves and write them
    /// in order, recursively, down to single events. A single event the
    /// server refuses is handed to `refused` (which must record it durably
    /// before returning `Ok`), and then the cursor alone moves past it, in a
    /// transaction of zero rows.
    ///
    /// `after[i]` is the cursor just past `events[i]`: ascending, and at most
    /// `end`. Every transaction still carries its rows and its cursor
    /// together, and the cursors committed only ascend, so a failure at any
    /// point (a transient error, a crash) leaves a committed prefix and the
    /// central cursor says where to resume; resuming may hand the same event
    /// to `refused` again, so recording it must be idempotent.
    ///
    /// Any other error is returned as is (retry later from the central
    /// cursor); so is an error of `refused`, before the cursor passes the
    /// event. A batch without refused rows costs one transaction, as
    /// `write_events`; `k` refused rows in `n` cost about `2·k·log2(n)`.
    pub async fn write_events_isolating<F>(
        &mut self,
        gateway_id: &str,
        events: &[EmotionEvent],
        after: &[Cursor],
        end: Cursor,
        mut refused: F,
    ) -> Result<IsolatedOutcome>
    where
        F: FnMut(Refused<'_>) -> std::result::Result<(), String>,
    {
        if after.len() != events.len() {
            return Err(SyncError::OutOfRange {
                what: "event positions",
                value: format!("{} for {} events", after.len(), events.len()),
                why: "one position per event is required",
            });
        }
        let mut out = IsolatedOutcome {
            written: WriteOutcome {
                submitted: events.len() as u64,
                inserted: 0,
                skipped: 0,
                cursor_advanced: false,
            },
            refused: 0,
            attempts: 0,
        };
        // Ranges still to write, the next one on top: a stack instead of
        // recursion (an async fn cannot recurse without boxing), popped in
        // buffer order.
        let mut todo: Vec<(usize, usize, Cursor)> = vec![(0, events.len(), end)];
        while let Some((lo, hi, to)) = todo.pop() {
            out.attempts += 1;
            let e = match self.write_events(gateway_id, &events[lo..hi], to).await {
                Ok(w) => {
                    out.written.inserted += w.inserted;
                    out.written.cursor_advanced |= w.cursor_advanced;
                    continue;
                }
                Err(e) if e.is_row_content() && hi > lo => e,
                Err(e) => return Err(e),
            };
            if hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi, to));
                todo.push((lo, mid, after[mid - 1]));
                continue;
            }
            tracing::warn!(
                event = %events[lo].event_id,
                user = %events[lo].user_id,
                position = %after[lo],
                error = %e,
                "sync: the central database refuses this event; dead-lettering it"
            );
            refused(Refused {
                event: &events[lo],
                after: after[lo],
                error: &e,
            })
            .map_err(SyncError::DeadLetter)?;
            out.refused += 1;
            // Past it with no rows: the cursor alone, so the rest goes on.
            out.attempts += 1;
            let w = self.write_events(gateway_id, &[], to).await?;
            out.written.cursor_advanced |= w.cursor_advanced;
        }
        out.written.skipped = out
            .written
            .submitted
            .saturating_sub(out.written.inserted + out.refused);
        Ok(out)
    }
}
