//! Serial frames.
//!
//! On the wire every frame is
//!
//! ```text
//! 0x00 | COBS( version u8 | postcard(header, payload) | CRC-32 LE u32 ) | 0x00
//!
//! version 2: header = device_id u64, boot_id u32, seq u32
//! version 1: header = device_id u64, seq u32            (firmware without boot ids)
//! ```
//!
//! - `version` is [`FORMAT_VERSION`] (2) for a frame with a boot id and
//!   [`LEGACY_FORMAT_VERSION`] (1) for one without; a receiver reads both and
//!   rejects (counts and skips) frames of a version it does not know. A
//!   frame without a boot id is written exactly as firmware from before boot
//!   ids writes it, so either kind of firmware works with this receiver.
//! - `boot_id` names the device's current boot: a value the firmware picks
//!   at boot that differs from its previous boot's (random, or a boot counter
//!   kept in flash). It is in every frame, not only in the hello, because the
//!   hello is exactly the frame a receiver misses when a device reboots while
//!   unplugged; with the boot id in every frame the first frame read after a
//!   reopen says whether the numbering started over (see [`crate::seq`]).
//! - the CRC is CRC-32/ISO-HDLC (the zlib/Ethernet one) over the version byte
//!   and the postcard bytes.
//! - the body (version + postcard + CRC) is at most [`MAX_FRAME_LEN`] bytes;
//!   a receiver drops longer blocks without buffering them.
//! - the leading 0x00 costs one byte per frame and makes each frame
//!   self-delimiting on both sides: bytes injected *between* frames (line
//!   noise, a half-written frame before an unplug) become their own bad block
//!   instead of swallowing the next good frame. Empty blocks (`00 00`) are
//!   ignored.
//!
//! [`Payload`] is a postcard enum: its variants are encoded by index, so new
//! variants are only ever appended (and bump nothing); changing an existing
//! variant, or the header, needs a new [`FORMAT_VERSION`].

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::cobs::{self, CobsError};

/// The frame format version this crate writes for frames with a boot id
/// (and the newest it reads).
pub const FORMAT_VERSION: u8 = 2;
/// The format of firmware without boot ids, written for frames without one
/// and still read.
pub const LEGACY_FORMAT_VERSION: u8 = 1;
/// Largest frame body (version byte + postcard bytes + CRC), in bytes.
pub const MAX_FRAME_LEN: usize = 512;
/// Largest COBS block on the wire, without its delimiters.
pub const MAX_ENCODED_LEN: usize = cobs::max_encoded_len(MAX_FRAME_LEN);
const CRC_LEN: usize = 4;

/// One frame from one device.
///
/// Not `Serialize` itself: its wire form depends on whether it has a boot id
/// (see the module documentation), which [`encode`] and the decoder handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The device's serial number. Readings name the device by this number in
    /// decimal unless the gateway's configuration names it otherwise.
    pub device_id: u64,
    /// The device's current boot (format version 2); `None` for firmware
    /// without boot ids (format version 1). Differs from one boot to the next;
    /// a retransmitted frame keeps it.
    pub boot_id: Option<u32>,
    /// Incremented by one per frame, wrapping; starts at 0 when the device
    /// boots (see [`crate::seq`]). A retransmitted frame keeps its number.
    pub seq: u32,
    pub payload: Payload,
}

/// The postcard body of a version 1 frame, for encoding (borrows the payload).
#[derive(Serialize)]
struct V1Out<'a> {
    device_id: u64,
    seq: u32,
    payload: &'a Payload,
}

/// The postcard body of a version 2 frame, for encoding.
#[derive(Serialize)]
struct V2Out<'a> {
    device_id: u64,
    boot_id: u32,
    seq: u32,
    payload: &'a Payload,
}

/// The postcard body of a version 1 frame, for decoding.
#[derive(Deserialize)]
struct V1In {
    device_id: u64,
    seq: u32,
    payload: Payload,
}

/// The postcard body of a version 2 frame, for decoding.
#[derive(Deserialize)]
struct V2In {
    device_id: u64,
    boot_id: u32,
    seq: u32,
    payload: Payload,
}

/// What a frame carries. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Sent first after boot (with `seq` 0) and whenever the device likes.
    Hello(Hello),
    /// A Heart Rate Measurement exactly as the GATT characteristic 0x2A37
    /// would carry it; decode with [`crate::gatt::HeartRateMeasurement::decode`].
    HeartRateMeasurement(Vec<u8>),
    /// Skin conductance samples, evenly spaced at `sample_rate_hz`, the last
    /// one taken when the frame was sent.
    SkinConductance {
        sample_rate_hz: f32,
        /// µS.
        samples_us: Vec<f32>,
    },
    /// Skin temperature, °C.
    SkinTemperature { celsius: f32 },
    /// Battery charge, 0–100 %.
    Battery { percent: u8 },
}

/// A device introducing itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub firmware: FirmwareVersion,
    pub capabilities: Capabilities,
    /// Free text, e.g. `"EmoStrap HR-1"`.
    pub model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FirmwareVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl core::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What a device can measure: a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Capabilities(pub u32);

impl Capabilities {
    pub const HEART_RATE: Self = Self(1);
    pub const RR_INTERVALS: Self = Self(1 << 1);
    pub const SKIN_CONDUCTANCE: Self = Self(1 << 2);
    pub const SKIN_TEMPERATURE: Self = Self(1 << 3);
    pub const BATTERY: Self = Self(1 << 4);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Encoding: the frame's body would exceed [`MAX_FRAME_LEN`].
    #[error("frame body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// Encoding: postcard refused the value.
    #[error("cannot encode frame: {0}")]
    Encode(postcard::Error),
    /// Decoding: more than [`MAX_ENCODED_LEN`] bytes without a delimiter.
    #[error("more than {MAX_ENCODED_LEN} bytes without a delimiter ({len} skipped)")]
    Oversized { len: usize },
    #[error("bad COBS block: {0}")]
    Cobs(CobsError),
    #[error("frame of {len} bytes is too short")]
    TooShort { len: usize },
    #[error("CRC mismatch: frame says {expected:#010x}, computed {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error(
        "unsupported frame format version {0} (this build reads {LEGACY_FORMAT_VERSION} and {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u8),
    /// The CRC matched but the body is not a `Frame` (e.g. an unknown payload
    /// variant from newer firmware).
    #[error("malformed frame body: {0}")]
    Malformed(postcard::Error),
    #[error("{0} unexpected bytes after the frame body")]
    TrailingBytes(usize),
    /// The bytes before the first delimiter after a (re)start did not form a
    /// frame: the reader joined the stream mid-frame. Expected, not damage.
    #[error("partial frame before the first delimiter")]
    PartialAtStart,
}

/// Encode `frame` and append its wire form (both delimiters included) to `out`.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut body = Vec::with_capacity(64);
    let body = match frame.boot_id {
        Some(boot_id) => {
            body.push(FORMAT_VERSION);
            let v2 = V2Out {
                device_id: frame.device_id,
                boot_id,
                seq: frame.seq,
                payload: &frame.payload,
            };
            postcard::to_extend(&v2, body)
        }
        None => {
            body.push(LEGACY_FORMAT_VERSION);
            let v1 = V1Out {
                device_id: frame.device_id,
                seq: frame.seq,
                payload: &frame.payload,
            };
            postcard::to_extend(&v1, body)
        }
    };
    let mut body = body.map_err(FrameError::Encode)?;
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    out.push(0);
    cobs::encode_into(&body, out);
    out.push(0);
    Ok(())
}

/// Encode `frame` into a new buffer (both delimiters included).
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(72);
    encode_into(frame, &mut out)?;
    Ok(out)
}

/// Decode one COBS block (without delimiters) into a frame.
pub fn decode_block(block: &[u8]) -> Result<Frame, FrameError> {
    let mut body = Vec::with_capacity(block.len());
    decode_block_with(block, &mut body)
}

fn decode_block_with(block: &[u8], body: &mut Vec<u8>) -> Result<Frame, FrameError> {
    if block.len() > MAX_ENCODED_LEN {
        return Err(FrameError::Oversized { len: block.len() });
    }
    body.clear();
    cobs::decode_into(block, body).map_err(FrameError::Cobs)?;
    if body.len() < 1 + CRC_LEN {
        return Err(FrameError::TooShort { len: body.len() });
    }
    let (content, crc) = body.split_at(body.len() - CRC_LEN);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(content);
    if expected != actual {
        return Err(FrameError::Crc { expected, actual });
    }
    let (&version, rest) = content
        .split_first()
        .ok_or(FrameError::TooShort { len: body.len() })?;
    let (frame, trailing) = match version {
        FORMAT_VERSION => {
            let (f, trailing) =
                postcard::take_from_bytes::<V2In>(rest).map_err(FrameError::Malformed)?;
            let frame = Frame {
                device_id: f.device_id,
                boot_id: Some(f.boot_id),
                seq: f.seq,
                payload: f.payload,
            };
            (frame, trailing)
        }
        LEGACY_FORMAT_VERSION => {
            let (f, trailing) =
                postcard::take_from_bytes::<V1In>(rest).map_err(FrameError::Malformed)?;
            let frame = Frame {
                device_id: f.device_id,
                boot_id: None,
                seq: f.seq,
                payload: f.payload,
            };
            (frame, trailing)
        }
        other => return Err(FrameError::UnsupportedVersion(other)),
    };
    if !trailing.is_empty() {
        return Err(FrameError::TrailingBytes(trailing.len()));
    }
    Ok(frame)
}

/// What a [`FrameDecoder`] has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecoderStats {
    /// Frames decoded.
    pub frames: u64,
    /// Blocks dropped because they were damaged: bad COBS, CRC mismatch, too
    /// short, malformed body, trailing bytes.
    pub corrupt: u64,
    /// Blocks dropped because their format version is unknown.
    pub unsupported_version: u64,
    /// Blocks dropped because they exceeded [`MAX_ENCODED_LEN`].
    pub oversized: u64,
    /// Partial frames dropped before the first delimiter after a (re)start.
    pub partial_at_start: u64,
    /// Bytes in every dropped block.
    pub bytes_dropped: u64,
}

impl DecoderStats {
    /// Every block dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.corrupt + self.unsupported_version + self.oversized + self.partial_at_start
    }
}

/// A streaming frame decoder: feed it byte chunks of any size, as they come
/// off a port, and it yields each frame once its closing delimiter arrives.
///
/// Memory is bounded: a block that grows past [`MAX_ENCODED_LEN`] without a
/// delimiter is dropped as it streams by (not buffered) and reported once its
/// delimiter finally comes. Every damaged block is counted in
/// [`stats`](Self::stats) and reported as an `Err` item; decoding goes on
/// with the next block.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    block: Vec<u8>,
    /// Bytes of the current block beyond `MAX_ENCODED_LEN` (dropped).
    overflow: usize,
    /// No delimiter seen since creation or [`reset`](Self::reset).
    at_start: bool,
    body: Vec<u8>,
    stats: DecoderStats,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self {
            block: Vec::with_capacity(MAX_ENCODED_LEN),
            overflow: 0,
            at_start: true,
            body: Vec::with_capacity(MAX_FRAME_LEN),
            stats: DecoderStats::default(),
        }
    }

    /// Forget a partly received block, e.g. after reopening a port: the next
    /// bytes may start mid-frame again. Statistics are kept.
    pub fn reset(&mut self) {
        self.block.clear();
        self.overflow = 0;
        self.at_start = true;
    }

    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes of an unfinished block held, waiting for its delimiter.
    pub fn pending(&self) -> usize {
        self.block.len() + self.overflow
    }

    /// Feed a chunk; `sink` gets each completed frame or the reason a block
    /// was dropped, in stream order.
    pub fn feed<F>(&mut self, chunk: &[u8], mut sink: F)
    where
        F: FnMut(Result<Frame, FrameError>),
    {
        let mut rest = chunk;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == 0) {
                Some(i) => {
                    self.append(&rest[..i]);
                    rest = &rest[i + 1..];
                    if let Some(item) = self.finish_block() {
                        sink(item);
                    }
                }
                None => {
                    self.append(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Feed a chunk and collect what it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Frame, FrameError>> {
        let mut out = Vec::new();
        self.feed(chunk, |item| out.push(item));
        out
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_ENCODED_LEN.saturating_sub(self.block.len());
        if self.overflow == 0 && bytes.len() <= room {
            self.block.extend_from_slice(bytes);
        } else {
            // Past the limit: stop buffering, only count.
            let take = room.min(bytes.len());
            self.overflow += bytes.len() - take;
            self.block.extend_from_slice(&bytes[..take]);
        }
    }

    fn finish_block(&mut self) -> Option<Result<Frame, FrameError>> {
        let at_start = core::mem::replace(&mut self.at_start, false);
        let len = self.block.len() + self.overflow;
        if len == 0 {
            return None;
        }
        let result = if self.overflow > 0 {
            Err(FrameError::Oversized { len })
        } else {
            decode_block_with(&self.block, &mut self.body)
        };
        self.block.clear();
        self.overflow = 0;
        Some(match result {
            Ok(frame) => {
                self.stats.frames += 1;
                Ok(frame)
            }
            Err(e) => {
                self.stats.bytes_dropped += len as u64;
                if at_start {
                    self.stats.partial_at_start += 1;
                    Err(FrameError::PartialAtStart)
                } else {
                    match e {
                        FrameError::Oversized { .. } => self.stats.oversized += 1,
                        FrameError::UnsupportedVersion(_) => self.stats.unsupported_version += 1,
                        _ => self.stats.corrupt += 1,
                    }
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn hr(seq: u32) -> Frame {
        Frame {
            device_id: 7,
            boot_id: Some(0xB007),
            seq,
            payload: Payload::HeartRateMeasurement(vec![0x16, 72, 0x00, 0x04]),
        }
    }

    #[test]
    fn every_payload_round_trips() {
        let payloads = [
            Payload::Hello(Hello {
                firmware: FirmwareVersion {
                    major: 1,
                    minor: 2,
                    patch: 3,
                },
                capabilities: Capabilities::HEART_RATE | Capabilities::RR_INTERVALS,
                model: "EmoStrap HR-1".into(),
            }),
            Payload::HeartRateMeasurement(vec![0x10, 60, 0, 4, 0x55, 3]),
            Payload::SkinConductance {
                sample_rate_hz: 4.0,
                samples_us: vec![2.5, 2.51, 0.0, 2.6],
            },
            Payload::SkinTemperature { celsius: 33.2 },
            Payload::Battery { percent: 87 },
        ];
        for (i, payload) in payloads.into_iter().enumerate() {
            for boot_id in [None, Some(0), Some(u32::MAX)] {
                let frame = Frame {
                    device_id: u64::MAX - i as u64,
                    boot_id,
                    seq: u32::MAX - 1,
                    payload: payload.clone(),
                };
                let bytes = encode(&frame).expect("encodes");
                assert_eq!(bytes.first(), Some(&0));
                assert_eq!(bytes.last(), Some(&0));
                assert!(!bytes[1..bytes.len() - 1].contains(&0));
                let mut d = FrameDecoder::new();
                let got = d.push(&bytes);
                assert_eq!(got, vec![Ok(frame)]);
                assert_eq!(d.stats().frames, 1);
                assert_eq!(d.stats().dropped(), 0);
            }
        }
    }

    #[test]
    fn too_large_frames_are_refused_when_encoding() {
        let frame = Frame {
            device_id: 1,
            boot_id: Some(1),
            seq: 0,
            payload: Payload::SkinConductance {
                sample_rate_hz: 32.0,
                samples_us: vec![1.0; 200],
            },
        };
        assert!(matches!(encode(&frame), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn byte_at_a_time_feeding_works() {
        let mut bytes = Vec::new();
        for s in 0..5 {
            encode_into(&hr(s), &mut bytes).expect("encodes");
        }
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(core::slice::from_ref(b), |f| got.push(f));
        }
        assert_eq!(got, (0..5).map(|s| Ok(hr(s))).collect::<Vec<_>>());
    }

    #[test]
    fn a_flipped_bit_loses_exactly_that_frame() {
        let frames: Vec<Vec<u8>> = (0..3).map(|s| encode(&hr(s)).expect("encodes")).collect();
        let mut bad = frames[1].clone();
        // Damage a CRC byte, keeping it non-zero so the block stays one block.
        let at = bad.len() - 3;
        bad[at] = if bad[at] == 0x10 {
            0x20
        } else {
            bad[at] ^ 0x10
        };
        let mut d = FrameDecoder::new();
        let mut got = d.push(&frames[0]);
        got.extend(d.push(&bad));
        got.extend(d.push(&frames[2]));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(hr(0)));
        assert!(
            matches!(got[1], Err(FrameError::Crc { .. })),
            "{:?}",
            got[1]
        );
        assert_eq!(got[2], Ok(hr(2)));
        assert_eq!(d.stats().corrupt, 1);
    }

    #[test]
    fn joining_mid_frame_is_a_partial_not_corruption() {
        let bytes = encode(&hr(1)).expect("encodes");
        let mut d = FrameDecoder::new();
        let got = d.push(&bytes[5..]);
        assert_eq!(got, vec![Err(FrameError::PartialAtStart)]);
        assert_eq!(d.push(&encode(&hr(2)).expect("encodes")), vec![Ok(hr(2))]);
        let s = d.stats();
        assert_eq!((s.partial_at_start, s.corrupt, s.frames), (1, 0, 1));
    }

    #[test]
    fn oversized_blocks_are_dropped_without_buffering() {
        let mut d = FrameDecoder::new();
        d.push(&[0]);
        let junk = vec![0x55u8; MAX_ENCODED_LEN * 3];
        assert!(d.push(&junk).is_empty());
        assert!(d.pending() > MAX_ENCODED_LEN);
        assert!(d.block.capacity() <= MAX_ENCODED_LEN * 2);
        let got = d.push(&encode(&hr(9)).expect("encodes"));
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Err(FrameError::Oversized { .. })));
        assert_eq!(got[1], Ok(hr(9)));
        assert_eq!(d.stats().oversized, 1);
    }

    #[test]
    fn unknown_versions_are_counted_separately() {
        let f = hr(0);
        let mut body = vec![FORMAT_VERSION + 1];
        let v2 = V2Out {
            device_id: f.device_id,
            boot_id: 1,
            seq: f.seq,
            payload: &f.payload,
        };
        body = postcard::to_extend(&v2, body).expect("encodes");
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let mut wire = vec![0];
        cobs::encode_into(&body, &mut wire);
        wire.push(0);
        let mut d = FrameDecoder::new();
        assert_eq!(
            d.push(&wire),
            vec![Err(FrameError::UnsupportedVersion(FORMAT_VERSION + 1))]
        );
        assert_eq!(d.stats().unsupported_version, 1);
    }

    /// Firmware from before boot ids writes version 1 frames; these are its
    /// bytes (taken from the encoder of that time), and they still decode,
    /// while a frame without a boot id is still written exactly so.
    #[test]
    fn version_1_frames_are_what_firmware_without_boot_ids_sends() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        };
        let battery = Frame {
            device_id: 7,
            boot_id: None,
            seq: 300,
            payload: Payload::Battery { percent: 87 },
        };
        let hello = Frame {
            device_id: 1,
            boot_id: None,
            seq: 0,
            payload: Payload::Hello(Hello {
                firmware: FirmwareVersion {
                    major: 1,
                    minor: 4,
                    patch: 0,
                },
                capabilities: Capabilities(0x13),
                model: "S".into(),
            }),
        };
        for (frame, wire) in [
            (battery, "000b0107ac02045796dde45d00"),
            (hello, "000301010103010408130153484ef6d000"),
        ] {
            let wire = hex(wire);
            assert_eq!(encode(&frame).expect("encodes"), wire);
            assert_eq!(FrameDecoder::new().push(&wire), vec![Ok(frame)]);
        }
    }

    #[test]
    fn version_2_carries_the_boot_id() {
        let mut f = hr(3);
        f.boot_id = Some(0xDEAD_BEEF);
        let bytes = encode(&f).expect("encodes");
        let mut body = Vec::new();
        cobs::decode_into(&bytes[1..bytes.len() - 1], &mut body).expect("cobs");
        assert_eq!(body[0], FORMAT_VERSION);
        assert_eq!(FrameDecoder::new().push(&bytes), vec![Ok(f.clone())]);
        // Without a boot id the same frame is a version 1 frame, and smaller.
        f.boot_id = None;
        let legacy = encode(&f).expect("encodes");
        assert!(legacy.len() < bytes.len());
        body.clear();
        cobs::decode_into(&legacy[1..legacy.len() - 1], &mut body).expect("cobs");
        assert_eq!(body[0], LEGACY_FORMAT_VERSION);
    }
}
