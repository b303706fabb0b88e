//! Event ids for MQTT messages.
//!
//! A QoS 1 or 2 message can arrive twice: the broker redelivers what it sent
//! but saw no acknowledgement for (the gateway crashed after storing it, the
//! connection dropped before the PUBACK went out). The buffer stores an
//! `event_id` once, so a redelivered copy must carry the same id as the first:
//!
//! - an `event_id` in the payload is used as is (the sender decides);
//! - otherwise, for QoS 1 and 2, the id is **derived** from the message: a
//!   UUIDv8 (RFC 9562 custom layout) whose bits are the SHA-256 of a domain
//!   tag, the sender's scope (the authenticated device for the embedded
//!   broker, `upstream` for the upstream broker), the topic and the payload
//!   bytes. Redeliveries are byte-identical, so they get the same id.
//! - QoS 0 messages are never redelivered; they get a fresh UUIDv7.
//!
//! The consequence, documented for device makers: two QoS 1 messages with the
//! same bytes on the same topic from the same sender are one event. Readings
//! and events that carry a `timestamp` (or a sequence number in `context`)
//! never collide; a sender that really repeats identical payloads should add
//! an `event_id`.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Versioned, so a future change of the recipe cannot collide with ids
/// derived by this one.
const DOMAIN: &[u8] = b"emotion-gateway/mqtt-message/v1\0";

/// The id of a message that can be redelivered (QoS 1 or 2).
pub fn derive_event_id(scope: &str, topic: &str, payload: &[u8]) -> Uuid {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    // Lengths first, so that no two different (scope, topic, payload)
    // triples hash the same bytes.
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope.as_bytes());
    h.update((topic.len() as u64).to_be_bytes());
    h.update(topic.as_bytes());
    h.update(payload);
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Sets the version (8) and variant bits.
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The id for a message of `qos` that carries none of its own.
pub fn event_id_for(qos: u8, scope: &str, topic: &str, payload: &[u8]) -> Uuid {
    if qos == 0 {
        Uuid::now_v7()
    } else {
        derive_event_id(scope, topic, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let a = derive_event_id("dev-a", "emotions/1/events", br#"{"valence":0.1}"#);
        assert_eq!(
            a,
            derive_event_id("dev-a", "emotions/1/events", br#"{"valence":0.1}"#)
        );
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        // Any difference gives another id.
        assert_ne!(
            a,
            derive_event_id("dev-b", "emotions/1/events", br#"{"valence":0.1}"#)
        );
        assert_ne!(
            a,
            derive_event_id("dev-a", "emotions/2/events", br#"{"valence":0.1}"#)
        );
        assert_ne!(
            a,
            derive_event_id("dev-a", "emotions/1/events", br#"{"valence":0.2}"#)
        );
        // Moving bytes between fields does not collide.
        assert_ne!(
            derive_event_id("ab", "c", b""),
            derive_event_id("a", "bc", b"")
        );
        assert_ne!(
            derive_event_id("a", "b", b"c"),
            derive_event_id("a", "bc", b"")
        );
    }

    #[test]
    fn qos0_gets_fresh_time_ordered_ids() {
        let x = event_id_for(0, "s", "t", b"p");
        let y = event_id_for(0, "s", "t", b"p");
        assert_ne!(x, y);
        assert_eq!(x.get_version_num(), 7);
        assert_eq!(
            event_id_for(1, "s", "t", b"p"),
            event_id_for(2, "s", "t", b"p")
        );
    }
}
