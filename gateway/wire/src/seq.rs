//! Per-device sequence tracking: pure, no clock.
//!
//! A device numbers its frames 0, 1, 2, … (wrapping at `u32::MAX`), starting
//! at 0 when it boots, and keeps a frame's number when it retransmits it.
//! The receiver feeds every frame's number to [`SeqTracker::observe`] and
//! gets back what it means:
//!
//! - the next number: [`SeqOutcome::InOrder`];
//! - further ahead: [`SeqOutcome::Gap`] with the count of numbers skipped
//!   (record a gap marker; the frame itself is good);
//! - a number already seen within the last [`WINDOW`]: [`SeqOutcome::Duplicate`]
//!   (a retransmit: drop it, it is stored already);
//! - a number within the window not seen before: [`SeqOutcome::Late`] (a
//!   retransmit filling an earlier gap: keep it);
//! - further behind than the window: [`SeqOutcome::Restart`] (the device
//!   rebooted; tracking starts over from this frame).
//!
//! "Ahead" and "behind" use wrapping arithmetic: a number up to 2³¹ − 1 ahead
//! is ahead, anything else is behind.

use alloc::collections::BTreeMap;

/// How many recent numbers are remembered for duplicate detection.
pub const WINDOW: u32 = 128;

/// What a frame's sequence number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// The first number seen from this device.
    First,
    InOrder,
    /// The frame is good, but `missed` frames before it never arrived.
    Gap {
        missed: u32,
    },
    /// Seen already: drop the frame.
    Duplicate,
    /// Behind the newest, not seen before: a retransmit that fills a gap.
    Late,
    /// Far behind the newest: the device restarted its numbering.
    Restart,
}

impl SeqOutcome {
    /// Whether the frame should be processed (everything but duplicates).
    pub fn is_new(self) -> bool {
        !matches!(self, SeqOutcome::Duplicate)
    }
}

/// Counters over everything a tracker observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqStats {
    pub accepted: u64,
    pub duplicates: u64,
    /// Gap events (each one a gap marker).
    pub gaps: u64,
    /// Frames reported missing by gaps (late arrivals are not subtracted).
    pub missed: u64,
    pub late: u64,
    pub restarts: u64,
}

/// The sequence state of one device.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    /// Newest number accepted.
    newest: Option<u32>,
    /// Bit `i` set: number `newest - i` has been seen.
    seen: u128,
    stats: SeqStats,
}

impl SeqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> SeqStats {
        self.stats
    }

    /// Forget the numbering (e.g. on a device hello after a reboot), keeping
    /// the counters.
    pub fn reset(&mut self) {
        self.newest = None;
        self.seen = 0;
    }

    pub fn observe(&mut self, seq: u32) -> SeqOutcome {
        let outcome = self.classify(seq);
        match outcome {
            SeqOutcome::Duplicate => self.stats.duplicates += 1,
            SeqOutcome::Gap { missed } => {
                self.stats.gaps += 1;
                self.stats.missed += u64::from(missed);
            }
            SeqOutcome::Late => self.stats.late += 1,
            SeqOutcome::Restart => self.stats.restarts += 1,
            SeqOutcome::First | SeqOutcome::InOrder => {}
        }
        if outcome.is_new() {
            self.stats.accepted += 1;
        }
        outcome
    }

    fn classify(&mut self, seq: u32) -> SeqOutcome {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            self.seen = 1;
            return SeqOutcome::First;
        };
        let ahead = seq.wrapping_sub(newest);
        if ahead == 0 {
            return SeqOutcome::Duplicate;
        }
        if ahead < 1 << 31 {
            self.seen = if ahead >= 128 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.newest = Some(seq);
            return match ahead - 1 {
                0 => SeqOutcome::InOrder,
                missed => SeqOutcome::Gap { missed },
            };
        }
        let behind = newest.wrapping_sub(seq);
        if behind < WINDOW {
            let bit = 1u128 << behind;
            if self.seen & bit != 0 {
                SeqOutcome::Duplicate
            } else {
                self.seen |= bit;
                SeqOutcome::Late
            }
        } else {
            self.newest = Some(seq);
            self.seen = 1;
            SeqOutcome::Restart
        }
    }
}

/// Trackers for many devices, keyed by device id.
#[derive(Debug, Clone, Default)]
pub struct SeqTrackers {
    devices: BTreeMap<u64, SeqTracker>,
}

impl SeqTrackers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&mut self, device_id: u64, seq: u32) -> SeqOutcome {
        self.devices.entry(device_id).or_default().observe(seq)
    }

    /// Observe a frame, treating a hello with sequence number 0 as a reboot
    /// (numbering starts over even if the old numbers were small).
    pub fn observe_frame(&mut self, frame: &crate::Frame) -> SeqOutcome {
        let tracker = self.devices.entry(frame.device_id).or_default();
        if frame.seq == 0 && matches!(frame.payload, crate::Payload::Hello(_)) {
            let had_state = tracker.newest.is_some();
            tracker.reset();
            let outcome = tracker.observe(0);
            if had_state {
                tracker.stats.restarts += 1;
                return SeqOutcome::Restart;
            }
            return outcome;
        }
        tracker.observe(frame.seq)
    }

    pub fn get(&self, device_id: u64) -> Option<&SeqTracker> {
        self.devices.get(&device_id)
    }

    pub fn reset(&mut self, device_id: u64) {
        if let Some(t) = self.devices.get_mut(&device_id) {
            t.reset();
        }
    }

    /// Counters summed over every device.
    pub fn stats(&self) -> SeqStats {
        self.devices
            .values()
            .fold(SeqStats::default(), |mut acc, t| {
                let s = t.stats;
                acc.accepted += s.accepted;
                acc.duplicates += s.duplicates;
                acc.gaps += s.gaps;
                acc.missed += s.missed;
                acc.late += s.late;
                acc.restarts += s.restarts;
                acc
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(seqs: &[u32]) -> Vec<SeqOutcome> {
        let mut t = SeqTracker::new();
        seqs.iter().map(|&s| t.observe(s)).collect()
    }

    #[test]
    fn in_order_gap_duplicate_late() {
        use SeqOutcome::*;
        assert_eq!(
            run(&[5, 6, 7, 10, 10, 9, 9, 8, 11]),
            [
                First,
                InOrder,
                InOrder,
                Gap { missed: 2 },
                Duplicate,
                Late,
                Duplicate,
                Late,
                InOrder
            ]
        );
    }

    #[test]
    fn a_retransmitted_burst_is_stored_once() {
        let mut t = SeqTracker::new();
        for s in 0..20 {
            assert!(t.observe(s).is_new());
        }
        for s in 15..20 {
            assert_eq!(t.observe(s), SeqOutcome::Duplicate);
        }
        assert_eq!(t.observe(20), SeqOutcome::InOrder);
        assert_eq!(t.stats().duplicates, 5);
        assert_eq!(t.stats().accepted, 21);
    }

    #[test]
    fn numbering_wraps() {
        use SeqOutcome::*;
        assert_eq!(
            run(&[u32::MAX - 1, u32::MAX, 0, 2, u32::MAX]),
            [First, InOrder, InOrder, Gap { missed: 1 }, Duplicate]
        );
    }

    #[test]
    fn far_behind_is_a_restart() {
        use SeqOutcome::*;
        assert_eq!(run(&[1000, 1001, 3, 4]), [First, InOrder, Restart, InOrder]);
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        use SeqOutcome::*;
        assert_eq!(
            run(&[0, 500, 499, 500]),
            [First, Gap { missed: 499 }, Late, Duplicate]
        );
    }

    #[test]
    fn hello_at_zero_restarts_numbering() {
        use crate::{Capabilities, FirmwareVersion, Frame, Hello, Payload};
        let hello = |seq| Frame {
            device_id: 1,
            seq,
            payload: Payload::Hello(Hello {
                firmware: FirmwareVersion {
                    major: 1,
                    minor: 0,
                    patch: 0,
                },
                capabilities: Capabilities::HEART_RATE,
                model: "x".into(),
            }),
        };
        let batt = |seq| Frame {
            device_id: 1,
            seq,
            payload: Payload::Battery { percent: 50 },
        };
        let mut t = SeqTrackers::new();
        assert_eq!(t.observe_frame(&hello(0)), SeqOutcome::First);
        assert_eq!(t.observe_frame(&batt(1)), SeqOutcome::InOrder);
        assert_eq!(t.observe_frame(&batt(2)), SeqOutcome::InOrder);
        // Rebooted after two frames: 0 and 1 are "seen" but must be new again.
        assert_eq!(t.observe_frame(&hello(0)), SeqOutcome::Restart);
        assert_eq!(t.observe_frame(&batt(1)), SeqOutcome::InOrder);
        assert_eq!(t.stats().restarts, 1);
        assert_eq!(t.observe(2, 0), SeqOutcome::First);
    }
}
