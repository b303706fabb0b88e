//! On-disk form of one group-commit batch: a version byte, a CRC-32 of the
//! body, then the postcard-encoded slots.
//!
//! A slot holds an event, or, once its user has been erased, a tombstone that
//! keeps only the event id. Tombstones keep every other event's position (and
//! so the sync cursor) stable, and keep a re-sent copy of an erased event from
//! being stored again.
//!
//! The checksum is ours, on top of whatever the storage engine does, so a value
//! damaged on disk is detected, reported and skipped rather than decoded into
//! garbage.

use emotion_core::EmotionEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One position in a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Slot<E = EmotionEvent> {
    Event(E),
    /// The event of an erased user; only its id remains.
    Erased(Uuid),
}

impl<E> Slot<E> {
    pub fn event(&self) -> Option<&E> {
        match self {
            Slot::Event(e) => Some(e),
            Slot::Erased(_) => None,
        }
    }
}

/// A decoded batch.
pub type Batch = Vec<Slot>;

/// Format version of a batch value. Bump on any change to the encoding.
pub const RECORD_VERSION: u8 = 1;
const HEADER: usize = 1 + 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("record has format version {0}, this build reads version {RECORD_VERSION}")]
    Version(u8),
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record body does not decode: {0}")]
    Decode(String),
}

/// Encode a batch. Generic so that slots of `&EmotionEvent` (no copies)
/// encode byte-for-byte like slots of `EmotionEvent`.
pub fn encode<E: Serialize>(slots: &[Slot<E>]) -> Result<Vec<u8>, postcard::Error> {
    let mut out = postcard::to_extend(slots, vec![RECORD_VERSION, 0, 0, 0, 0])?;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Batch, RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[0] != RECORD_VERSION {
        return Err(RecordError::Version(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let computed = crc32fast::hash(&bytes[HEADER..]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    postcard::from_bytes(&bytes[HEADER..]).map_err(|e| RecordError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::tests::sample_events;

    fn slots(n: usize) -> Batch {
        sample_events(n, "u1")
            .into_iter()
            .map(Slot::Event)
            .collect()
    }

    #[test]
    fn round_trip_and_borrowed_slots_encode_alike() {
        let mut batch = slots(5);
        batch[2] = Slot::Erased(Uuid::now_v7());
        let bytes = encode(&batch).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), batch);
        let borrowed: Vec<Slot<&EmotionEvent>> = batch
            .iter()
            .map(|s| match s {
                Slot::Event(e) => Slot::Event(e),
                Slot::Erased(id) => Slot::Erased(*id),
            })
            .collect();
        assert_eq!(encode(&borrowed).expect("encode"), bytes);
    }

    #[test]
    fn every_single_bit_flip_and_every_truncation_is_detected() {
        let bytes = encode(&slots(3)).expect("encode");
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode(&b).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
    }
}
