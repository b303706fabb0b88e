//! On-disk frames: one group-commit batch, or one metadata value.
//!
//! Every frame carries its own checksum and enough of a header to be found
//! and verified without the storage engine: salvage (`salvage.rs`) scans the
//! raw bytes of a damaged store for frames, so each frame starts with a
//! version byte and a three-byte magic, and says how long it is.
//!
//! ```text
//! batch frame (version 2):
//!   0  version = 2     1  magic "EMB"     4  crc32 of bytes 8..
//!   8  seq u64         16 generation u32  20 cum_before u64
//!   28 slots u32       32 newest_ingest (µs since 1970) i64
//!   40 body_len u32    44 body: postcard of the slots
//! meta frame (version 2):
//!   0  version = 2     1  magic "EMM"     4  crc32 of bytes 8..
//!   8  version counter u64  16 key_len u16  18 value_len u32 (u32::MAX: removed)
//!   22 key, then value
//! packed value (version 2): batch frames, concatenated and compressed
//!   0  version = 2     1  magic "EMZ"     4  crc32 of bytes 8..
//!   8  raw_len u32     12 body_len u32    16 body: LZ4 block of the frames
//! ```
//!
//! A stored value is one frame, or a packed value (see `sled_store.rs`):
//! events compress about fivefold, and sled's memory follows the number and
//! the size of its pages. Salvage unpacks packed values it finds.
//!
//! `cum_before` (acknowledged slots in all earlier batches) and `slots` let
//! anyone who holds two neighbouring batches, or the ledger, count exactly
//! what is missing between them. `generation` grows when a batch is
//! rewritten (erasure), so salvage keeps the newest copy of each batch.
//!
//! A slot holds an event, or, once its user has been erased, a tombstone that
//! keeps only the event id, so positions (and the sync cursor) stay stable.
//! Version-1 batch values (before the header existed) are still read.

use chrono::{DateTime, Utc};
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

/// What a batch frame says about itself, readable without decoding events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub seq: u64,
    pub generation: u32,
    /// Slots acknowledged in every batch before this one.
    pub cum_before: u64,
    /// Slots in this batch (events and tombstones).
    pub slots: u32,
    pub newest_ingest: DateTime<Utc>,
}

impl BatchHeader {
    /// Acknowledged slots up to and including this batch.
    pub fn cum_after(&self) -> u64 {
        self.cum_before + u64::from(self.slots)
    }
}

pub const VERSION_1: u8 = 1;
pub const VERSION: u8 = 2;
pub const BATCH_MAGIC: [u8; 4] = [VERSION, b'E', b'M', b'B'];
pub const META_MAGIC: [u8; 4] = [VERSION, b'E', b'M', b'M'];
pub const PACKED_MAGIC: [u8; 4] = [VERSION, b'E', b'M', b'Z'];
pub const BATCH_HEADER: usize = 44;
pub const PACKED_HEADER: usize = 16;
/// Largest unpacked size accepted, so a damaged length cannot ask for an
/// absurd allocation (values are written at up to a few hundred KiB).
const MAX_PACKED_RAW: usize = 64 << 20;
pub const META_HEADER: usize = 22;
const V1_HEADER: usize = 5;
/// A `value_len` meaning "this key was removed".
const REMOVED: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("record has format version {0}, this build reads versions 1 and 2")]
    Version(u8),
    #[error("record has no frame marker")]
    Magic,
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record length {declared} does not match its {actual} bytes")]
    Length { declared: usize, actual: usize },
    #[error("record body does not decode: {0}")]
    Decode(String),
    #[error("record says batch {found}, stored under {expected}")]
    WrongSeq { expected: u64, found: u64 },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn micros_to_time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Encode a batch. Generic so that slots of `&EmotionEvent` (no copies)
/// encode byte-for-byte like slots of `EmotionEvent`.
pub fn encode_batch<E: Serialize>(
    header: &BatchHeader,
    slots: &[Slot<E>],
) -> Result<Vec<u8>, postcard::Error> {
    let parts = slots
        .iter()
        .map(postcard::to_allocvec)
        .collect::<Result<Vec<_>, _>>()?;
    encode_batch_parts(header, &parts)
}

/// Encode a batch from slots already encoded one by one with postcard: the
/// same bytes as [`encode_batch`], without encoding the events twice.
pub fn encode_batch_parts(
    header: &BatchHeader,
    parts: &[Vec<u8>],
) -> Result<Vec<u8>, postcard::Error> {
    let size: usize = parts.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(BATCH_HEADER + 5 + size);
    out.resize(BATCH_HEADER, 0);
    out[..4].copy_from_slice(&BATCH_MAGIC);
    out[8..16].copy_from_slice(&header.seq.to_le_bytes());
    out[16..20].copy_from_slice(&header.generation.to_le_bytes());
    out[20..28].copy_from_slice(&header.cum_before.to_le_bytes());
    out[28..32].copy_from_slice(&header.slots.to_le_bytes());
    out[32..40].copy_from_slice(&header.newest_ingest.timestamp_micros().to_le_bytes());
    // postcard writes a sequence as its length (a varint), then the items.
    let mut out = postcard::to_extend(&parts.len(), out)?;
    for p in parts {
        out.extend_from_slice(p);
    }
    let body = (out.len() - BATCH_HEADER) as u32;
    out[40..44].copy_from_slice(&body.to_le_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Check a version-2 batch frame's checksum and length; `bytes` may extend
/// past the frame (salvage). Returns the header and the frame's length.
pub fn check_batch_frame(bytes: &[u8]) -> Result<(BatchHeader, usize), RecordError> {
    if bytes.len() < BATCH_HEADER {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[..4] != BATCH_MAGIC {
        return Err(RecordError::Magic);
    }
    let len = BATCH_HEADER + u32_at(bytes, 40) as usize;
    if len > bytes.len() {
        return Err(RecordError::Length {
            declared: len,
            actual: bytes.len(),
        });
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32fast::hash(&bytes[8..len]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let header = BatchHeader {
        seq: u64_at(bytes, 8),
        generation: u32_at(bytes, 16),
        cum_before: u64_at(bytes, 20),
        slots: u32_at(bytes, 28),
        newest_ingest: micros_to_time(u64_at(bytes, 32) as i64),
    };
    Ok((header, len))
}

/// Pack batch frames (concatenated) into one compressed, checksummed value.
pub fn encode_packed(frames: &[u8]) -> Vec<u8> {
    let body = lz4_flex::block::compress(frames);
    let mut out = Vec::with_capacity(PACKED_HEADER + body.len());
    out.extend_from_slice(&PACKED_MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Check a packed value's checksum and length; `bytes` may extend past it
/// (salvage). Returns the unpacked frames and the packed value's length.
pub fn decode_packed(bytes: &[u8]) -> Result<(Vec<u8>, usize), RecordError> {
    if bytes.len() < PACKED_HEADER {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[..4] != PACKED_MAGIC {
        return Err(RecordError::Magic);
    }
    let raw_len = u32_at(bytes, 8) as usize;
    let len = PACKED_HEADER + u32_at(bytes, 12) as usize;
    if len > bytes.len() {
        return Err(RecordError::Length {
            declared: len,
            actual: bytes.len(),
        });
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32fast::hash(&bytes[8..len]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    if raw_len > MAX_PACKED_RAW {
        return Err(RecordError::Decode(format!(
            "packed value of {raw_len} bytes"
        )));
    }
    let frames = lz4_flex::block::decompress(&bytes[PACKED_HEADER..len], raw_len)
        .map_err(|e| RecordError::Decode(format!("packed value: {e}")))?;
    Ok((frames, len))
}

/// Decode a stored batch value (version 1 or 2). Version-1 values carry no
/// header; theirs is made up from `seq` (cumulative count unknown: 0).
pub fn decode_batch(seq: u64, bytes: &[u8]) -> Result<(BatchHeader, Batch), RecordError> {
    match bytes.first() {
        None => Err(RecordError::Truncated(0)),
        Some(&VERSION_1) => {
            let batch = decode_v1(bytes)?;
            let newest_ingest = batch
                .iter()
                .filter_map(Slot::event)
                .map(|e| e.ingested_at)
                .max()
                .unwrap_or(DateTime::UNIX_EPOCH);
            let header = BatchHeader {
                seq,
                generation: 0,
                cum_before: 0,
                slots: batch.len() as u32,
                newest_ingest,
            };
            Ok((header, batch))
        }
        Some(&VERSION) => {
            let header = stored_frame_header(seq, bytes)?;
            let batch: Batch = postcard::from_bytes(&bytes[BATCH_HEADER..])
                .map_err(|e| RecordError::Decode(e.to_string()))?;
            if batch.len() != header.slots as usize {
                return Err(RecordError::Decode(format!(
                    "{} slots, header says {}",
                    batch.len(),
                    header.slots
                )));
            }
            Ok((header, batch))
        }
        Some(&v) => Err(RecordError::Version(v)),
    }
}

/// A copy of a verified version-2 batch frame with another `cum_before`
/// (and its checksum recomputed), without decoding the events.
pub fn with_cum_before(frame: &[u8], cum_before: u64) -> Vec<u8> {
    let mut out = frame.to_vec();
    if out.len() >= BATCH_HEADER {
        out[20..28].copy_from_slice(&cum_before.to_le_bytes());
        let crc = crc32fast::hash(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// The header alone (checksum verified over the whole value).
pub fn batch_header(seq: u64, bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    if bytes.first() == Some(&VERSION) {
        return stored_frame_header(seq, bytes);
    }
    decode_batch(seq, bytes).map(|(h, _)| h)
}

/// A stored value is exactly one verified frame, stored under its own number.
fn stored_frame_header(seq: u64, bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    let (header, len) = check_batch_frame(bytes)?;
    if len != bytes.len() {
        return Err(RecordError::Length {
            declared: len,
            actual: bytes.len(),
        });
    }
    if header.seq != seq {
        return Err(RecordError::WrongSeq {
            expected: seq,
            found: header.seq,
        });
    }
    Ok(header)
}

fn decode_v1(bytes: &[u8]) -> Result<Batch, RecordError> {
    if bytes.len() < V1_HEADER {
        return Err(RecordError::Truncated(bytes.len()));
    }
    let stored = u32_at(bytes, 1);
    let computed = crc32fast::hash(&bytes[V1_HEADER..]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    postcard::from_bytes(&bytes[V1_HEADER..]).map_err(|e| RecordError::Decode(e.to_string()))
}

/// Encode a metadata value (`None`: the key was removed). `version` orders
/// writes of one key, so salvage keeps the newest.
pub fn encode_meta(version: u64, key: &str, value: Option<&[u8]>) -> Vec<u8> {
    let k = key.as_bytes();
    let v = value.unwrap_or(&[]);
    let mut out = Vec::with_capacity(META_HEADER + k.len() + v.len());
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(k.len() as u16).to_le_bytes());
    let vlen = value.map_or(REMOVED, |v| v.len() as u32);
    out.extend_from_slice(&vlen.to_le_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(v);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A decoded metadata frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFrame {
    pub version: u64,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Check and decode a metadata frame at the start of `bytes` (which may
/// extend past it). Returns the frame and its length.
pub fn check_meta_frame(bytes: &[u8]) -> Result<(MetaFrame, usize), RecordError> {
    if bytes.len() < META_HEADER {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[..4] != META_MAGIC {
        return Err(RecordError::Magic);
    }
    let klen = usize::from(u16::from_le_bytes([bytes[16], bytes[17]]));
    let vlen = u32_at(bytes, 18);
    let body = klen + if vlen == REMOVED { 0 } else { vlen as usize };
    let len = META_HEADER + body;
    if len > bytes.len() {
        return Err(RecordError::Length {
            declared: len,
            actual: bytes.len(),
        });
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32fast::hash(&bytes[8..len]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let key = std::str::from_utf8(&bytes[META_HEADER..META_HEADER + klen])
        .map_err(|e| RecordError::Decode(e.to_string()))?
        .to_owned();
    let value = (vlen != REMOVED).then(|| bytes[META_HEADER + klen..len].to_vec());
    Ok((
        MetaFrame {
            version: u64_at(bytes, 8),
            key,
            value,
        },
        len,
    ))
}

/// Decode a stored metadata value. Values written before frames existed
/// (plain bytes) are returned as they are.
pub fn decode_meta(bytes: &[u8]) -> Result<MetaFrame, RecordError> {
    let (frame, len) = check_meta_frame(bytes)?;
    if len != bytes.len() {
        return Err(RecordError::Length {
            declared: len,
            actual: bytes.len(),
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_events;

    fn slots(n: usize) -> Batch {
        sample_events(n, "u1")
            .into_iter()
            .map(Slot::Event)
            .collect()
    }

    fn header(seq: u64, n: usize) -> BatchHeader {
        BatchHeader {
            seq,
            generation: 3,
            cum_before: 1234,
            slots: n as u32,
            newest_ingest: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
        }
    }

    #[test]
    fn round_trip_and_borrowed_slots_encode_alike() {
        let mut batch = slots(5);
        batch[2] = Slot::Erased(Uuid::now_v7());
        let h = header(7, 5);
        let bytes = encode_batch(&h, &batch).expect("encode");
        assert_eq!(decode_batch(7, &bytes).expect("decode"), (h, batch.clone()));
        assert_eq!(batch_header(7, &bytes).expect("header"), h);
        let borrowed: Vec<Slot<&EmotionEvent>> = batch
            .iter()
            .map(|s| match s {
                Slot::Event(e) => Slot::Event(e),
                Slot::Erased(id) => Slot::Erased(*id),
            })
            .collect();
        assert_eq!(encode_batch(&h, &borrowed).expect("encode"), bytes);
        let parts: Vec<Vec<u8>> = batch
            .iter()
            .map(|s| postcard::to_allocvec(s).expect("slot"))
            .collect();
        assert_eq!(encode_batch_parts(&h, &parts).expect("encode"), bytes);
        assert_eq!(
            decode_batch(8, &bytes),
            Err(RecordError::WrongSeq {
                expected: 8,
                found: 7
            })
        );
    }

    #[test]
    fn version_1_values_are_still_read() {
        let batch = slots(3);
        let mut v1 = postcard::to_extend(&batch, vec![VERSION_1, 0, 0, 0, 0]).expect("encode");
        let crc = crc32fast::hash(&v1[V1_HEADER..]);
        v1[1..5].copy_from_slice(&crc.to_le_bytes());
        let (h, b) = decode_batch(4, &v1).expect("decode");
        assert_eq!(b, batch);
        assert_eq!((h.seq, h.slots), (4, 3));
    }

    #[test]
    fn packed_values_round_trip_and_every_flip_and_truncation_is_detected() {
        let mut frames = encode_batch(&header(1, 3), &slots(3)).expect("encode");
        frames.extend(encode_batch(&header(2, 2), &slots(2)).expect("encode"));
        let packed = encode_packed(&frames);
        assert!(packed.len() < frames.len(), "events compress");
        assert_eq!(
            decode_packed(&packed).expect("decode"),
            (frames, packed.len())
        );
        for i in 0..packed.len() {
            for bit in 0..8 {
                let mut b = packed.clone();
                b[i] ^= 1 << bit;
                assert!(decode_packed(&b).is_err(), "flip at byte {i} bit {bit}");
            }
        }
        for len in 0..packed.len() {
            assert!(
                decode_packed(&packed[..len]).is_err(),
                "truncation to {len}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_and_every_truncation_is_detected() {
        let bytes = encode_batch(&header(1, 3), &slots(3)).expect("encode");
        let meta = encode_meta(9, "consent/u1", Some(b"{\"analytics\":true}"));
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode_batch(1, &b).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(
                decode_batch(1, &bytes[..len]).is_err(),
                "truncation to {len}"
            );
        }
        for i in 0..meta.len() {
            for bit in 0..8 {
                let mut b = meta.clone();
                b[i] ^= 1 << bit;
                assert!(decode_meta(&b).is_err(), "meta flip at {i} bit {bit}");
            }
        }
        for len in 0..meta.len() {
            assert!(
                decode_meta(&meta[..len]).is_err(),
                "meta truncation to {len}"
            );
        }
    }

    #[test]
    fn meta_frames_round_trip_removals_included() {
        let f = decode_meta(&encode_meta(5, "k", Some(b"v"))).expect("decode");
        assert_eq!(
            (f.version, f.key.as_str(), f.value),
            (5, "k", Some(b"v".to_vec()))
        );
        let r = decode_meta(&encode_meta(6, "k", None)).expect("decode");
        assert_eq!(r.value, None);
        // A frame is found inside a longer buffer, and says how long it is.
        let mut buf = encode_meta(1, "a", Some(b"xyz"));
        let len = buf.len();
        buf.extend_from_slice(b"trailing");
        assert_eq!(check_meta_frame(&buf).expect("frame").1, len);
    }
}
