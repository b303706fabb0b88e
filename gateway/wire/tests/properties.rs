//! Fuzz-style properties: arbitrary bytes never panic a decoder, every frame
//! round-trips, and damage costs exactly the damaged frame.

use emotion_wire::frame::{self, FrameDecoder, FrameError, MAX_ENCODED_LEN};
use emotion_wire::gatt::{BatteryLevel, HeartRateMeasurement, SensorContact};
use emotion_wire::vendor::EdaMeasurement;
use emotion_wire::{Capabilities, FirmwareVersion, Frame, Hello, Payload};
use proptest::prelude::*;

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            "[ -~]{0,40}"
        )
            .prop_map(|(major, minor, patch, caps, model)| Payload::Hello(Hello {
                firmware: FirmwareVersion {
                    major,
                    minor,
                    patch
                },
                capabilities: Capabilities(caps),
                model,
            })),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Payload::HeartRateMeasurement),
        (any::<f32>(), prop::collection::vec(any::<f32>(), 0..60)).prop_map(
            |(sample_rate_hz, samples_us)| Payload::SkinConductance {
                sample_rate_hz,
                samples_us
            }
        ),
        any::<f32>().prop_map(|celsius| Payload::SkinTemperature { celsius }),
        any::<u8>().prop_map(|percent| Payload::Battery { percent }),
    ]
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    (any::<u64>(), any::<Option<u32>>(), any::<u32>(), payload()).prop_map(
        |(device_id, boot_id, seq, payload)| Frame {
            device_id,
            boot_id,
            seq,
            payload,
        },
    )
}

/// Frames compare with NaN-safe equality: compare their encodings.
fn same(a: &Frame, b: &Frame) -> bool {
    frame::encode(a).ok() == frame::encode(b).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hrm_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(m) = HeartRateMeasurement::decode(&bytes) {
            // Whatever decodes re-decodes to the same thing from our encoding.
            prop_assert_eq!(HeartRateMeasurement::decode(&m.encode()), Ok(m));
        }
        let _ = BatteryLevel::decode(&bytes);
        let _ = EdaMeasurement::decode(&bytes);
    }

    #[test]
    fn frame_decoder_never_panics(chunks in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..300), 0..12)
    ) {
        let mut d = FrameDecoder::new();
        let mut items = 0u64;
        for c in &chunks {
            d.feed(c, |_| items += 1);
            prop_assert!(d.pending() <= chunks.iter().map(Vec::len).sum::<usize>());
        }
        let s = d.stats();
        prop_assert_eq!(items, s.frames + s.dropped());
    }

    #[test]
    fn frames_round_trip_through_any_chunking(
        frames in prop::collection::vec(frame_strategy(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for f in &frames {
            match frame::encode_into(f, &mut wire) {
                Ok(()) => sent.push(f.clone()),
                Err(FrameError::TooLarge { .. }) => {}
                Err(e) => prop_assert!(false, "encode failed: {e}"),
            }
        }
        let mut cut_at: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cut_at.sort_unstable();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        let mut start = 0;
        for c in cut_at.into_iter().chain([wire.len()]) {
            got.extend(d.push(&wire[start..c]));
            start = c;
        }
        prop_assert_eq!(got.len(), sent.len());
        for (g, s) in got.iter().zip(&sent) {
            match g {
                Ok(g) => prop_assert!(same(g, s)),
                Err(e) => prop_assert!(false, "lost a frame: {e}"),
            }
        }
    }

    /// Damage one frame in the middle of a stream in any way (flip bits,
    /// truncate it, inject garbage): exactly that frame is lost and every
    /// other frame arrives.
    #[test]
    fn damage_loses_exactly_the_damaged_frame(
        n in 3usize..10,
        victim in any::<prop::sample::Index>(),
        damage in 0u8..3,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        garbage in prop::collection::vec(any::<u8>(), 1..40),
        keep in any::<prop::sample::Index>(),
    ) {
        let frames: Vec<Frame> = (0..n as u32).map(|seq| Frame {
            device_id: 3,
            // Old and new firmware side by side.
            boot_id: (seq % 2 == 0).then_some(0xB007),
            seq,
            payload: Payload::HeartRateMeasurement(
                HeartRateMeasurement {
                    heart_rate_bpm: 60 + seq as u16,
                    sensor_contact: SensorContact::Detected,
                    energy_expended_kj: None,
                    rr_intervals_1024: vec![1000 + seq as u16, 990],
                }.encode()),
        }).collect();
        let victim = victim.index(n);
        let mut wire = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let mut bytes = frame::encode(f).expect("encodes");
            if i == victim {
                // Only the COBS block (between the delimiters) is damaged.
                let inner = bytes.len() - 2;
                match damage {
                    0 => {
                        // One flip per byte: two at one byte could cancel
                        // and leave the frame whole.
                        let mut at_byte = std::collections::BTreeMap::new();
                        for (at, x) in &flips {
                            at_byte.entry(1 + at.index(inner)).or_insert(*x);
                        }
                        for (at, x) in at_byte {
                            let before = bytes[at];
                            let v = before ^ x;
                            // Keep the damage zero-free (a zero would split
                            // the block into two bad ones: still
                            // resynchronized, but counted twice), and a
                            // change.
                            bytes[at] = match v {
                                0 if before == 0xA5 => 0x5A,
                                0 => 0xA5,
                                v => v,
                            };
                        }
                    }
                    1 => {
                        // Keep 1..inner-1 bytes of the block: an empty
                        // block is indistinguishable from a spare delimiter.
                        let keep = 2 + keep.index(inner - 2);
                        bytes.truncate(keep);
                        bytes.push(0);
                    }
                    _ => {
                        let at = 1 + keep.index(inner);
                        let g: Vec<u8> = garbage.iter().map(|&b| if b == 0 { 1 } else { b }).collect();
                        bytes.splice(at..at, g);
                    }
                }
            }
            wire.extend_from_slice(&bytes);
        }
        let mut d = FrameDecoder::new();
        let got = d.push(&wire);
        let ok: Vec<u32> = got.iter().filter_map(|r| r.as_ref().ok()).map(|f| f.seq).collect();
        let expected: Vec<u32> = (0..n as u32).filter(|&s| s as usize != victim).collect();
        // A flip that happens to leave a valid frame with a matching CRC is
        // astronomically unlikely; a truncation or injection never does.
        prop_assert_eq!(ok, expected);
        prop_assert_eq!(d.stats().dropped(), 1);
        prop_assert!(d.pending() == 0);
        prop_assert!(wire.len() < 2 * n * MAX_ENCODED_LEN);
    }
}
