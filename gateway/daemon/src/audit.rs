//! The audit trail: every read of a user's data, export, consent change,
//! erasure and administrative action, with who did it (the token's or
//! certificate's configured name), when, for which user and what came of it.
//!
//! Entries are append-only records in the buffer's metadata (`audit/<id>`,
//! ids are UUIDv7 so keys sort by time), written and flushed before the
//! response leaves. The sync ships them, in order, to the central
//! `audit_log` table; `GET /api/audit` (admin) pages through them. An
//! erasure does not remove them: they are the record that it happened.

use std::sync::Arc;

use chrono::Utc;
use emotion_sync::AuditRow;
use uuid::Uuid;

use crate::buffer::{EventStore, StoreError};

const PREFIX: &str = "audit/";
/// The id of the last entry the central database has.
const SYNCED_KEY: &str = "audit-synced";

/// The gateway's audit trail over its buffer.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Arc<dyn EventStore>,
}

fn key(id: &Uuid) -> String {
    format!("{PREFIX}{}", id.simple())
}

impl Audit {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Audit { store }
    }

    /// Append an entry. Blocking (one small durable write). A failure is
    /// logged and counted, and does not fail the action it describes.
    pub fn record(&self, principal: &str, action: &str, user_id: Option<&str>, outcome: &str) {
        let row = AuditRow {
            audit_id: Uuid::now_v7(),
            user_id: user_id.map(str::to_owned),
            at: Utc::now(),
            principal: principal.to_owned(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
        };
        let written = serde_json::to_vec(&row)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                self.store
                    .put_meta(&key(&row.audit_id), &v)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            metrics::counter!("emotion_gateway_audit_failures_total").increment(1);
            tracing::error!(error = %e, action, "an audit entry could not be written");
        }
    }

    /// Up to `limit` entries after `after` (oldest first), optionally only
    /// those of `user_id`.
    pub fn page(
        &self,
        after: Option<Uuid>,
        user_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = after.map(|a| key(&a));
        // Filtering by user may skip entries; page through until full.
        loop {
            let page = self
                .store
                .meta_page(PREFIX, cursor.as_deref(), limit.max(1) * 4)?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            cursor = Some(last.clone());
            for (_, v) in &page {
                let Ok(row) = serde_json::from_slice::<AuditRow>(v) else {
                    continue;
                };
                if user_id.is_none_or(|u| row.user_id.as_deref() == Some(u)) {
                    out.push(row);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// The entries the central database does not have yet (at most `limit`).
    pub fn unsynced(&self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let after = self
            .store
            .get_meta(SYNCED_KEY)?
            .and_then(|v| Uuid::from_slice(&v).ok());
        self.page(after, None, limit)
    }

    /// The central database has every entry up to `last`.
    pub fn synced_through(&self, last: Uuid) -> Result<(), StoreError> {
        self.store.put_meta(SYNCED_KEY, last.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_page_in_order_filter_by_user_and_track_the_sync() {
        let store: Arc<dyn EventStore> = Arc::new(crate::buffer::MemoryStore::new(16));
        let audit = Audit::new(store);
        for i in 0..10 {
            let user = (i % 2 == 0).then_some("42");
            audit.record("ops", "GET /api/users/{id}/summary", user, "200");
        }
        let all = audit.page(None, None, 100).expect("page");
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0].audit_id < w[1].audit_id));
        let first = audit.page(None, None, 4).expect("page");
        let rest = audit
            .page(Some(first[3].audit_id), None, 100)
            .expect("page");
        assert_eq!(first.len() + rest.len(), 10);
        assert_eq!(audit.page(None, Some("42"), 100).expect("page").len(), 5);
        assert_eq!(audit.unsynced(100).expect("unsynced").len(), 10);
        audit.synced_through(all[6].audit_id).expect("mark");
        let left = audit.unsynced(100).expect("unsynced");
        assert_eq!(left, all[7..].to_vec());
    }
}
