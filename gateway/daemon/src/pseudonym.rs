//! Pseudonymization before sync (`[sync] pseudonymize = true`): everything
//! shipped to the central database carries `u-<HMAC>` instead of the user
//! id and `s-<HMAC>` instead of the session id (default session ids contain
//! the user id). The HMAC-SHA-256 key is generated on first use and kept in
//! the buffer's metadata (the data directory is private to the gateway's
//! user); it never leaves the gateway. The same user always gets the same
//! pseudonym, so central joins, summaries, consents, erasures and
//! `credit_emotion_adjustment(pseudonym, days)` keep working.
//!
//! Re-identification is for an operator with the gateway's `admin` token:
//! `GET /api/pseudonyms?user_ids=42,43` answers each id's pseudonym (and is
//! itself audited); matching a central pseudonym against a site's list of
//! user ids gives the user.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::buffer::{EventStore, StoreError};

const KEY_META: &str = "pseudonym-key";

/// Maps user and session ids to their pseudonyms, or leaves them as they
/// are when pseudonymization is off.
#[derive(Clone)]
pub struct Pseudonyms {
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Pseudonyms {
    // The key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonyms")
            .field("on", &self.key.is_some())
            .finish()
    }
}

impl Pseudonyms {
    /// Ids ship as they are.
    pub fn off() -> Self {
        Pseudonyms { key: None }
    }

    /// The store's key, created (randomly) if it has none yet.
    pub fn load_or_create(store: &dyn EventStore) -> Result<Self, StoreError> {
        if let Some(k) = store.get_meta(KEY_META)?
            && let Ok(key) = <[u8; 32]>::try_from(k.as_slice())
        {
            return Ok(Pseudonyms { key: Some(key) });
        }
        let key: [u8; 32] = rand::random();
        store.put_meta(KEY_META, &key)?;
        Ok(Pseudonyms { key: Some(key) })
    }

    pub fn is_on(&self) -> bool {
        self.key.is_some()
    }

    fn mac(&self, kind: &str, id: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        // Domain separation: a user id and a session id that are equal
        // strings get unrelated pseudonyms.
        m.update(kind.as_bytes());
        m.update(&[0]);
        m.update(id.as_bytes());
        let digest = m.finalize().into_bytes();
        // 128 bits: collisions are out of reach for any number of users.
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{}-{hex}", &kind[..1]))
    }

    /// The id a user has centrally.
    pub fn user(&self, user_id: &str) -> String {
        self.mac("user", user_id)
            .unwrap_or_else(|| user_id.to_owned())
    }

    /// The id a session has centrally.
    pub fn session(&self, session_id: &str) -> String {
        self.mac("session", session_id)
            .unwrap_or_else(|| session_id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_separated() {
        let store = crate::buffer::MemoryStore::new(16);
        let p = Pseudonyms::load_or_create(&store).expect("key");
        let again = Pseudonyms::load_or_create(&store).expect("same key");
        assert_eq!(p.user("42"), again.user("42"));
        // u- and 32 hex digits (the hex may contain "42" by chance, so the
        // shape is what is checked).
        let u = p.user("42");
        assert!(u.starts_with("u-") && u.len() == 34, "{u}");
        assert!(u[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{u}");
        assert_ne!(p.user("42"), p.user("43"));
        assert_ne!(p.user("x")[2..], p.session("x")[2..]);
        let other = Pseudonyms::load_or_create(&crate::buffer::MemoryStore::new(16)).expect("key");
        assert_ne!(p.user("42"), other.user("42"), "another gateway's key");
        assert_eq!(Pseudonyms::off().user("42"), "42");
        assert!(!format!("{p:?}").contains(&format!("{:?}", p.key)));
    }
}
