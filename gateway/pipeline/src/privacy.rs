//! Consent and erasure on the gateway.
//!
//! Consent is per user and purpose: `analytics` lets the user's events leave
//! the gateway for the central database, `credit` lets their credit/risk
//! summaries leave it. Without consent nothing of the user is synced (it stays
//! local, subject to retention). Consent is read when the sync ships data, so
//! events stored before a consent was given are shipped only if the sync has
//! not passed them yet.
//!
//! Erasure removes a user's events from the buffer and the analyzer, and
//! records a request the sync applies centrally. Events of that user that were
//! already queued when the erasure happened, or that arrive later but happened
//! before it (a broker redelivering, a device flushing its backlog), are
//! refused, so nothing erased comes back.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use emotion_core::EmotionEvent;
use hashbrown::HashMap;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use emotion_buffer::{EventStore, StoreError};

const CONSENT_PREFIX: &str = "consent/";
const ERASURE_PREFIX: &str = "erasure/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Analytics,
    Credit,
}

/// A user's consent, as last set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub analytics: bool,
    pub credit: bool,
    pub updated_at: DateTime<Utc>,
    /// Whether the central database has this version yet.
    #[serde(default)]
    pub synced: bool,
}

impl Consent {
    pub fn allows(&self, p: Purpose) -> bool {
        match p {
            Purpose::Analytics => self.analytics,
            Purpose::Credit => self.credit,
        }
    }
}

/// An erasure request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Erasure {
    pub request_id: Uuid,
    pub user_id: String,
    pub requested_at: DateTime<Utc>,
    /// Events erased from this gateway's buffer.
    pub erased_locally: u64,
    /// Whether the central database has applied it.
    #[serde(default)]
    pub applied_centrally: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored privacy record `{key}` is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Consents and erasures, kept in the buffer's metadata and cached in memory
/// (the ingest path checks erasures for every event).
#[derive(Debug)]
pub struct Privacy {
    store: Arc<dyn EventStore>,
    consents: RwLock<HashMap<String, Consent>>,
    erasures: RwLock<HashMap<String, Erasure>>,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, PrivacyError> {
    serde_json::from_slice(bytes).map_err(|e| PrivacyError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // These types serialize infallibly (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

impl Privacy {
    pub fn load(store: Arc<dyn EventStore>) -> Result<Privacy, PrivacyError> {
        let mut consents = HashMap::new();
        for (k, v) in store.meta_with_prefix(CONSENT_PREFIX)? {
            consents.insert(k[CONSENT_PREFIX.len()..].to_owned(), decode(&k, &v)?);
        }
        let mut erasures = HashMap::new();
        for (k, v) in store.meta_with_prefix(ERASURE_PREFIX)? {
            erasures.insert(k[ERASURE_PREFIX.len()..].to_owned(), decode(&k, &v)?);
        }
        Ok(Privacy {
            store,
            consents: RwLock::new(consents),
            erasures: RwLock::new(erasures),
        })
    }

    pub fn consent(&self, user_id: &str) -> Option<Consent> {
        self.consents.read().get(user_id).cloned()
    }

    pub fn allows(&self, user_id: &str, p: Purpose) -> bool {
        self.consents
            .read()
            .get(user_id)
            .is_some_and(|c| c.allows(p))
    }

    /// Record a consent (durably) and mark it for the central database.
    pub fn set_consent(
        &self,
        user_id: &str,
        analytics: bool,
        credit: bool,
        now: DateTime<Utc>,
    ) -> Result<Consent, PrivacyError> {
        let c = Consent {
            analytics,
            credit,
            updated_at: now,
            synced: false,
        };
        self.store
            .put_meta(&format!("{CONSENT_PREFIX}{user_id}"), &encode(&c))?;
        self.consents.write().insert(user_id.to_owned(), c.clone());
        Ok(c)
    }

    /// Consents the central database does not have yet.
    pub fn unsynced_consents(&self) -> Vec<(String, Consent)> {
        self.consents
            .read()
            .iter()
            .filter(|(_, c)| !c.synced)
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect()
    }

    /// Mark `user_id`'s consent as synced, unless it changed since `version`.
    pub fn consent_synced(
        &self,
        user_id: &str,
        version: DateTime<Utc>,
    ) -> Result<(), PrivacyError> {
        let mut map = self.consents.write();
        if let Some(c) = map.get_mut(user_id)
            && c.updated_at == version
        {
            c.synced = true;
            self.store
                .put_meta(&format!("{CONSENT_PREFIX}{user_id}"), &encode(&*c))?;
        }
        Ok(())
    }

    /// Erase `user_id` from the buffer and record the request. The caller
    /// rebuilds the analyzer.
    pub fn erase(&self, user_id: &str, now: DateTime<Utc>) -> Result<Erasure, PrivacyError> {
        // Record first: from here on the writer refuses the user's queued and
        // late events, so nothing slips in between the two steps.
        let mut e = Erasure {
            request_id: Uuid::now_v7(),
            user_id: user_id.to_owned(),
            requested_at: now,
            erased_locally: 0,
            applied_centrally: false,
        };
        self.erasures.write().insert(user_id.to_owned(), e.clone());
        e.erased_locally = self.store.erase_user(user_id)?;
        self.store
            .put_meta(&format!("{ERASURE_PREFIX}{user_id}"), &encode(&e))?;
        self.erasures.write().insert(user_id.to_owned(), e.clone());
        Ok(e)
    }

    /// Erasures the central database has not applied yet.
    pub fn pending_erasures(&self) -> Vec<Erasure> {
        self.erasures
            .read()
            .values()
            .filter(|e| !e.applied_centrally)
            .cloned()
            .collect()
    }

    pub fn erasure_applied(&self, user_id: &str, request_id: Uuid) -> Result<(), PrivacyError> {
        let mut map = self.erasures.write();
        if let Some(e) = map.get_mut(user_id)
            && e.request_id == request_id
        {
            e.applied_centrally = true;
            self.store
                .put_meta(&format!("{ERASURE_PREFIX}{user_id}"), &encode(&*e))?;
        }
        Ok(())
    }

    /// Would storing `e` bring back something erased? True when its user was
    /// erased at or after the moment the event happened or was accepted.
    pub fn is_erased(&self, e: &EmotionEvent) -> bool {
        self.erasures
            .read()
            .get(e.user_id.as_str())
            .is_some_and(|er| e.timestamp <= er.requested_at || e.ingested_at <= er.requested_at)
    }

    /// The erasure of a user, if any.
    pub fn erasure(&self, user_id: &str) -> Option<Erasure> {
        self.erasures.read().get(user_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use emotion_buffer::testing::sample_events;
    use emotion_buffer::{SledStore, StoreOptions};

    fn open(dir: &std::path::Path) -> (Arc<dyn EventStore>, Privacy) {
        let (s, _) = SledStore::open(dir, StoreOptions::default()).expect("open");
        let s: Arc<dyn EventStore> = Arc::new(s);
        let p = Privacy::load(s.clone()).expect("load");
        (s, p)
    }

    #[test]
    fn consent_is_durable_and_tracked_until_synced() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = Utc::now();
        {
            let (_, p) = open(dir.path());
            assert!(!p.allows("u", Purpose::Analytics));
            p.set_consent("u", true, false, now).expect("set");
            assert!(p.allows("u", Purpose::Analytics) && !p.allows("u", Purpose::Credit));
            assert_eq!(p.unsynced_consents().len(), 1);
            // A stale acknowledgement does not mark a newer version synced.
            p.consent_synced("u", now - Duration::seconds(1))
                .expect("ack");
            assert_eq!(p.unsynced_consents().len(), 1);
            p.consent_synced("u", now).expect("ack");
            assert!(p.unsynced_consents().is_empty());
        }
        let (_, p) = open(dir.path());
        assert_eq!(
            p.consent("u").map(|c| (c.analytics, c.synced)),
            Some((true, true))
        );
    }

    #[test]
    fn erasure_removes_events_and_refuses_late_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let evs = sample_events(5, "gone");
        let (store, p) = open(dir.path());
        store.append(&evs).expect("append");
        let now = Utc::now();
        let e = p.erase("gone", now).expect("erase");
        assert_eq!(e.erased_locally, 5);
        assert_eq!(store.stats().events, 0);
        // Happened before the erasure: refused, even if accepted just now.
        let mut late = sample_events(1, "gone").remove(0);
        late.ingested_at = now + Duration::seconds(5);
        assert!(p.is_erased(&late));
        // A new event after the erasure is the user's new life: accepted.
        late.timestamp = now + Duration::seconds(5);
        assert!(!p.is_erased(&late));
        assert_eq!(p.pending_erasures().len(), 1);
        p.erasure_applied("gone", e.request_id).expect("ack");
        assert!(p.pending_erasures().is_empty());
        drop(p);
        drop(store);
        let (_, p) = open(dir.path());
        assert!(p.erasure("gone").is_some_and(|e| e.applied_centrally));
    }
}
