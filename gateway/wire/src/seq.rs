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
//!
//! # Reboots
//!
//! Numbers alone cannot tell a reboot from a retransmit: after a device
//! rebooted, its frames 5, 6, 7 look exactly like retransmits of the old
//! boot's 5, 6, 7, and would be dropped as duplicates (up to [`WINDOW`] of
//! them). [`SeqTracker::observe_frame`] therefore looks at the frame too:
//!
//! - a frame with a boot id (format version 2, see [`crate::frame`]) from
//!   another boot than the numbers tracked is a restart, whatever its number;
//!   within one boot, retransmits are duplicates as above. A switch between
//!   frames with and without boot ids (new firmware flashed, or an old one
//!   back) is a restart too.
//! - firmware without boot ids: a hello numbered 0 is a restart (the boot
//!   hello). Its hello is lost when the device reboots while unplugged, so
//!   the first frame after the link comes back ([`SeqTracker::reconnected`],
//!   e.g. a serial port reopened) is also taken as a restart when its number
//!   went back nearer to 0 than to the newest number seen: a rebooted device
//!   numbers from 0, while a device that resends what it sent just before
//!   the link went down resends numbers just below the newest.
//!
//! A restart reports the numbers of the new boot that never arrived
//! (`0 .. seq`): a device numbers from 0 at boot.

use alloc::collections::BTreeMap;

use crate::{Frame, Payload};

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
    /// The device restarted its numbering (it rebooted): tracking starts over
    /// from this frame, and the `missed` frames numbered before it in the new
    /// boot never arrived.
    Restart {
        missed: u32,
    },
}

impl SeqOutcome {
    /// Whether the frame should be processed (everything but duplicates).
    pub fn is_new(self) -> bool {
        !matches!(self, SeqOutcome::Duplicate)
    }

    /// Frames reported missing by this outcome.
    pub fn missed(self) -> u32 {
        match self {
            SeqOutcome::Gap { missed } | SeqOutcome::Restart { missed } => missed,
            _ => 0,
        }
    }
}

/// Counters over everything a tracker observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqStats {
    pub accepted: u64,
    pub duplicates: u64,
    /// Gap events (each one a gap marker), restarts that missed frames
    /// included.
    pub gaps: u64,
    /// Frames reported missing by gaps and restarts (late arrivals are not
    /// subtracted).
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
    /// The boot the tracked numbers belong to (`None`: frames without a boot
    /// id, or nothing seen yet).
    boot_id: Option<u32>,
    /// The link was down since the last frame (see [`Self::reconnected`]).
    reconnected: bool,
    stats: SeqStats,
}

impl SeqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> SeqStats {
        self.stats
    }

    /// The boot id of the numbers tracked, if the device sends boot ids.
    pub fn boot_id(&self) -> Option<u32> {
        self.boot_id
    }

    /// Forget the numbering (e.g. on a device hello after a reboot), keeping
    /// the counters.
    pub fn reset(&mut self) {
        self.newest = None;
        self.seen = 0;
        self.boot_id = None;
        self.reconnected = false;
    }

    /// The link to the device was down (a serial port reopened): the device
    /// may have rebooted meanwhile, its boot hello lost. The next frame
    /// without a boot id is judged with that in mind (see the module
    /// documentation).
    pub fn reconnected(&mut self) {
        self.reconnected = true;
    }

    /// Observe a bare sequence number (no boot information).
    pub fn observe(&mut self, seq: u32) -> SeqOutcome {
        let outcome = self.classify(seq);
        self.record(outcome)
    }

    /// Observe a frame: its number, within its boot (see the module
    /// documentation on reboots).
    pub fn observe_frame(&mut self, frame: &Frame) -> SeqOutcome {
        let reconnected = core::mem::take(&mut self.reconnected);
        let Some(newest) = self.newest else {
            self.boot_id = frame.boot_id;
            return self.observe(frame.seq);
        };
        let restart = match (self.boot_id, frame.boot_id) {
            (Some(known), Some(id)) => known != id,
            // Firmware with boot ids replaced one without, or the reverse.
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => {
                (frame.seq == 0 && matches!(frame.payload, Payload::Hello(_)))
                    || (reconnected && numbering_went_back(newest, frame.seq))
            }
        };
        if !restart {
            return self.observe(frame.seq);
        }
        self.boot_id = frame.boot_id;
        self.newest = Some(frame.seq);
        self.seen = 1;
        self.record(SeqOutcome::Restart { missed: frame.seq })
    }

    fn record(&mut self, outcome: SeqOutcome) -> SeqOutcome {
        match outcome {
            SeqOutcome::Duplicate => self.stats.duplicates += 1,
            SeqOutcome::Gap { missed } => {
                self.stats.gaps += 1;
                self.stats.missed += u64::from(missed);
            }
            SeqOutcome::Late => self.stats.late += 1,
            SeqOutcome::Restart { missed } => {
                self.stats.restarts += 1;
                if missed > 0 {
                    self.stats.gaps += 1;
                    self.stats.missed += u64::from(missed);
                }
            }
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
            SeqOutcome::Restart { missed: seq }
        }
    }
}

/// Whether `seq` is behind `newest` and nearer to 0 than to it: numbering
/// that started over, not a resend of the last few frames.
fn numbering_went_back(newest: u32, seq: u32) -> bool {
    let behind = newest.wrapping_sub(seq);
    seq.wrapping_sub(newest) >= 1 << 31 && seq < behind
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

    /// Observe a frame (see [`SeqTracker::observe_frame`]): a new boot id, or
    /// without boot ids a hello numbered 0 or numbering that went back after
    /// [`reconnected`](Self::reconnected), restarts the numbering.
    pub fn observe_frame(&mut self, frame: &Frame) -> SeqOutcome {
        self.devices
            .entry(frame.device_id)
            .or_default()
            .observe_frame(frame)
    }

    /// The link to every device was down (e.g. their serial port reopened):
    /// see [`SeqTracker::reconnected`].
    pub fn reconnected(&mut self) {
        for t in self.devices.values_mut() {
            t.reconnected();
        }
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
    use crate::{Capabilities, FirmwareVersion, Hello};
    use alloc::vec::Vec;

    fn run(seqs: &[u32]) -> Vec<SeqOutcome> {
        let mut t = SeqTracker::new();
        seqs.iter().map(|&s| t.observe(s)).collect()
    }

    fn hello(boot_id: Option<u32>, seq: u32) -> Frame {
        Frame {
            device_id: 1,
            boot_id,
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
        }
    }

    fn batt(boot_id: Option<u32>, seq: u32) -> Frame {
        Frame {
            device_id: 1,
            boot_id,
            seq,
            payload: Payload::Battery { percent: 50 },
        }
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
        assert_eq!(
            run(&[1000, 1001, 3, 4]),
            [First, InOrder, Restart { missed: 3 }, InOrder]
        );
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
        let mut t = SeqTrackers::new();
        assert_eq!(t.observe_frame(&hello(None, 0)), SeqOutcome::First);
        assert_eq!(t.observe_frame(&batt(None, 1)), SeqOutcome::InOrder);
        assert_eq!(t.observe_frame(&batt(None, 2)), SeqOutcome::InOrder);
        // Rebooted after two frames: 0 and 1 are "seen" but must be new again.
        assert_eq!(
            t.observe_frame(&hello(None, 0)),
            SeqOutcome::Restart { missed: 0 }
        );
        assert_eq!(t.observe_frame(&batt(None, 1)), SeqOutcome::InOrder);
        assert_eq!(t.stats().restarts, 1);
        assert_eq!(t.observe(2, 0), SeqOutcome::First);
    }

    /// The case: rebooted while unplugged, the hello and the first
    /// frames of the new boot lost; the frames after the replug carry numbers
    /// the old boot used already, and none of them is a duplicate.
    #[test]
    fn a_new_boot_id_restarts_numbering_whatever_the_number() {
        let mut t = SeqTrackers::new();
        assert_eq!(t.observe_frame(&hello(Some(7), 0)), SeqOutcome::First);
        for s in 1..100 {
            assert_eq!(t.observe_frame(&batt(Some(7), s)), SeqOutcome::InOrder);
        }
        t.reconnected();
        assert_eq!(
            t.observe_frame(&batt(Some(8), 6)),
            SeqOutcome::Restart { missed: 6 }
        );
        for s in 7..120 {
            assert_eq!(t.observe_frame(&batt(Some(8), s)), SeqOutcome::InOrder);
        }
        // Without a reconnect too: the boot id alone says it.
        assert_eq!(
            t.observe_frame(&batt(Some(9), 3)),
            SeqOutcome::Restart { missed: 3 }
        );
        let s = t.stats();
        assert_eq!((s.restarts, s.duplicates, s.missed), (2, 0, 9));
        assert_eq!(t.get(1).and_then(SeqTracker::boot_id), Some(9));
    }

    #[test]
    fn within_a_boot_retransmits_are_still_duplicates() {
        let mut t = SeqTrackers::new();
        for s in 0..50 {
            assert!(t.observe_frame(&batt(Some(7), s)).is_new());
        }
        // A resend of the last frames, across a reconnect or not.
        t.reconnected();
        for s in 45..50 {
            assert_eq!(t.observe_frame(&batt(Some(7), s)), SeqOutcome::Duplicate);
        }
        // Even a resend of the boot hello: same boot, not a restart.
        assert_eq!(t.observe_frame(&hello(Some(7), 0)), SeqOutcome::Duplicate);
        assert_eq!(t.observe_frame(&batt(Some(7), 50)), SeqOutcome::InOrder);
        let s = t.stats();
        assert_eq!((s.duplicates, s.restarts), (6, 0));
    }

    #[test]
    fn switching_between_frames_with_and_without_boot_ids_is_a_restart() {
        let mut t = SeqTrackers::new();
        for s in 0..30 {
            t.observe_frame(&batt(None, s));
        }
        assert_eq!(
            t.observe_frame(&batt(Some(1), 2)),
            SeqOutcome::Restart { missed: 2 }
        );
        assert_eq!(t.observe_frame(&batt(Some(1), 3)), SeqOutcome::InOrder);
        assert_eq!(
            t.observe_frame(&batt(None, 1)),
            SeqOutcome::Restart { missed: 1 }
        );
    }

    /// Firmware without boot ids: after a reconnect, numbering that went back
    /// near 0 is a reboot; a resend just below the newest is not.
    #[test]
    fn without_boot_ids_a_reconnect_tells_a_reboot_from_a_resend() {
        let mut t = SeqTrackers::new();
        for s in 0..100 {
            t.observe_frame(&batt(None, s));
        }
        // Without a reconnect, a small number within the window is what it
        // always was: a duplicate.
        assert_eq!(t.observe_frame(&batt(None, 6)), SeqOutcome::Duplicate);
        // A resend of the tail after a reconnect: duplicates.
        t.reconnected();
        assert_eq!(t.observe_frame(&batt(None, 97)), SeqOutcome::Duplicate);
        assert_eq!(t.observe_frame(&batt(None, 98)), SeqOutcome::Duplicate);
        assert_eq!(t.observe_frame(&batt(None, 100)), SeqOutcome::InOrder);
        // Rebooted while unplugged, hello lost: frames 6, 7, … are new.
        t.reconnected();
        assert_eq!(
            t.observe_frame(&batt(None, 6)),
            SeqOutcome::Restart { missed: 6 }
        );
        for s in 7..60 {
            assert_eq!(t.observe_frame(&batt(None, s)), SeqOutcome::InOrder);
        }
        // Only the first frame after a reconnect is judged so: a resend in
        // the new boot is a duplicate, a frame of its lost start is late.
        assert_eq!(t.observe_frame(&batt(None, 10)), SeqOutcome::Duplicate);
        assert_eq!(t.observe_frame(&batt(None, 3)), SeqOutcome::Late);
        // A reconnect without a reboot: numbering goes on.
        t.reconnected();
        assert_eq!(
            t.observe_frame(&batt(None, 65)),
            SeqOutcome::Gap { missed: 5 }
        );
        let s = t.stats();
        assert_eq!((s.restarts, s.duplicates), (1, 4));
    }

    #[test]
    fn numbering_that_went_back_uses_wrapping_arithmetic() {
        assert!(numbering_went_back(5000, 30));
        assert!(!numbering_went_back(5000, 4990));
        assert!(!numbering_went_back(30, 5000));
        assert!(!numbering_went_back(30, 30));
        // Just past a wrap, the numbers just before it are a resend.
        assert!(!numbering_went_back(10, u32::MAX - 3));
        // Across the wrap a small number is ahead of one near the top: a gap
        // at worst, nothing dropped.
        assert!(!numbering_went_back(u32::MAX - 3, 10));
    }
}
