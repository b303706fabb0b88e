//! Row types of the central database and the outcomes of writes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, SyncError};

/// A position in a gateway's buffer: batch number, then index in the batch.
/// Ordered lexicographically; the central cursor only ever moves forward.
///
/// The gateway decides what the position means (the sync module only
/// compares and stores it); by convention it is the position *after* the
/// last event the write covered, so that a restart resumes from it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Cursor {
    pub batch: u64,
    pub index: u32,
}

impl Cursor {
    pub const fn new(batch: u64, index: u32) -> Self {
        Cursor { batch, index }
    }

    /// As stored: two bigint columns.
    pub(crate) fn to_db(self) -> Result<(i64, i64)> {
        let batch = i64::try_from(self.batch).map_err(|_| SyncError::OutOfRange {
            what: "cursor batch",
            value: self.batch.to_string(),
            why: "larger than the bigint column (2^63 − 1)",
        })?;
        Ok((batch, i64::from(self.index)))
    }

    pub(crate) fn from_db(batch: i64, index: i64) -> Result<Self> {
        let bad = |what: &'static str, v: i64| SyncError::OutOfRange {
            what,
            value: v.to_string(),
            why: "not a valid cursor position in the database",
        };
        Ok(Cursor {
            batch: u64::try_from(batch).map_err(|_| bad("cursor_batch", batch))?,
            index: u32::try_from(index).map_err(|_| bad("cursor_index", index))?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.batch, self.index)
    }
}

/// What a user may consent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentPurpose {
    /// The user's events may leave the gateway.
    Analytics,
    /// The user's credit/risk summaries may leave the gateway and be used by
    /// the credit system.
    Credit,
}

impl ConsentPurpose {
    pub const ALL: [ConsentPurpose; 2] = [ConsentPurpose::Analytics, ConsentPurpose::Credit];

    pub const fn as_str(self) -> &'static str {
        match self {
            ConsentPurpose::Analytics => "analytics",
            ConsentPurpose::Credit => "credit",
        }
    }
}

impl fmt::Display for ConsentPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A purpose name that is not `analytics` or `credit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consent purpose `{0}` (known: analytics, credit)")]
pub struct UnknownPurpose(pub String);

impl FromStr for ConsentPurpose {
    type Err = UnknownPurpose;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        ConsentPurpose::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPurpose(s.to_owned()))
    }
}

/// A user's decision for one purpose. The newest `updated_at` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub user_id: String,
    pub purpose: ConsentPurpose,
    pub granted: bool,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a gateway's audit trail (see migration 3, `audit_log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub audit_id: Uuid,
    /// The user whose data was touched; `None` for actions on no one user.
    pub user_id: Option<String>,
    pub at: DateTime<Utc>,
    /// The token's or certificate's configured name, never the secret.
    pub principal: String,
    /// `METHOD /route`, e.g. `GET /api/users/{id}/summary`.
    pub action: String,
    /// The HTTP status, or why the request was refused.
    pub outcome: String,
}

/// What [`crate::SyncClient::write_events`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    /// Events handed in.
    pub submitted: u64,
    /// Rows that are new in `emotional_events`.
    pub inserted: u64,
    /// Events not stored: already there (a re-sent batch) or of a user erased
    /// after they were ingested.
    pub skipped: u64,
    /// Whether the stored cursor moved (false when it was already at or past
    /// the given one: a re-sent batch).
    pub cursor_advanced: bool,
}

/// What [`crate::SyncClient::upsert_summaries`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SummaryOutcome {
    pub submitted: u64,
    /// Rows inserted or replaced by a newer summary.
    pub written: u64,
    /// Not written: older than (or as old as) the stored one, no consent to
    /// the credit purpose, or the user was erased after it was computed.
    pub skipped: u64,
}

/// What [`crate::SyncClient::upsert_consents`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConsentOutcome {
    pub submitted: u64,
    /// Consent rows inserted or replaced by a newer decision.
    pub written: u64,
    /// Summaries deleted because their user withdrew the credit consent.
    pub summaries_deleted: u64,
}

/// What [`crate::SyncClient::apply_erasure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErasureOutcome {
    /// False when this request had been applied before (a retry): the rows
    /// were deleted again if any had appeared, and the counts below are this
    /// run's.
    pub newly_recorded: bool,
    /// The request time in force: rows of the user with a time at or before
    /// it are gone and cannot come back.
    pub requested_at: DateTime<Utc>,
    pub events_deleted: u64,
    pub summaries_deleted: u64,
    pub consents_deleted: u64,
}

/// A gateway's row of `gateway_sync_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewaySyncState {
    pub gateway_id: String,
    pub cursor: Option<Cursor>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub events_synced: i64,
    pub batches_synced: i64,
    pub summaries_synced: i64,
    pub last_summary_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_by_batch_then_index() {
        assert!(Cursor::new(1, 9) < Cursor::new(2, 0));
        assert!(Cursor::new(2, 0) < Cursor::new(2, 1));
        assert_eq!(Cursor::new(3, 4).to_string(), "3:4");
    }

    #[test]
    fn cursor_storage_is_checked_both_ways() {
        assert_eq!(
            Cursor::new(5, u32::MAX).to_db().ok(),
            Some((5, i64::from(u32::MAX)))
        );
        assert!(Cursor::new(u64::MAX, 0).to_db().is_err());
        assert!(Cursor::from_db(-1, 0).is_err());
        assert!(Cursor::from_db(0, i64::from(u32::MAX) + 1).is_err());
        assert_eq!(Cursor::from_db(7, 8).ok(), Some(Cursor::new(7, 8)));
    }

    #[test]
    fn purposes_parse() {
        assert_eq!(
            "Credit".parse::<ConsentPurpose>(),
            Ok(ConsentPurpose::Credit)
        );
        assert!("marketing".parse::<ConsentPurpose>().is_err());
    }
}
