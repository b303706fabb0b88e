//! Wire formats of the emotion gateway's devices, defined once and shared by
//! the gateway, `firmware-sim` and (if they like) real firmware.
//!
//! - [`frame`]: serial frames. `0x00 | COBS(version | postcard(Frame) | CRC-32 LE) | 0x00`,
//!   each naming its device, the device's boot and its sequence number; an
//!   [`Encoder`](frame::encode) and a streaming [`FrameDecoder`] that takes
//!   arbitrary byte chunks, counts and skips corrupt or truncated frames and
//!   resynchronizes at the next delimiter.
//! - [`seq`]: a pure per-device sequence tracker: gaps (with the number
//!   missed), duplicates after a retransmit, device restarts (a new boot id,
//!   or numbering that starts over).
//! - [`gatt`]: Bluetooth GATT decoders (and encoders, for simulators): Heart
//!   Rate Measurement 0x2A37 and Battery Level 0x2A19.
//! - [`vendor`]: the vendor skin-conductance (EDA) service and its
//!   measurement characteristic.
//! - [`topics`]: the MQTT topic layout ([`TopicLayout`]): the four roots,
//!   the topic of each message kind, parsing and per-device access rules.
//!
//! `#![no_std]` with `alloc`; the `std` feature (default) only forwards to the
//! dependencies. Nothing here panics on input bytes: every decoder returns an
//! error instead.

#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod cobs;
pub mod frame;
pub mod gatt;
pub mod seq;
pub mod topics;
pub mod vendor;

pub use frame::{
    Capabilities, DecoderStats, FirmwareVersion, Frame, FrameDecoder, FrameError, Hello, Payload,
    encode, encode_into,
};
pub use gatt::{BatteryLevel, GattError, HeartRateMeasurement, SensorContact};
pub use seq::{SeqOutcome, SeqStats, SeqTracker, SeqTrackers};
pub use topics::{Denied, Inbound, TopicLayout};
pub use vendor::EdaMeasurement;
