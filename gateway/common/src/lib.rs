//! Definitions shared by the gateway (`emotion-core`, `emotion-ble`), the
//! plugin SDK (`emotion-plugin-sdk`, built for `wasm32-unknown-unknown`) and
//! `firmware-sim`, declared once here because neither side can depend on the
//! other: plugins cannot link the gateway's core (clock, UUIDs), the pure
//! core should not link the WIT bindings, and the gateway cannot link the
//! simulator.
//!
//! - [`Source`]: the eight sources an emotion event comes from, and their names;
//! - [`Prosody`]: the voice prosody payload (which features, under which names);
//! - [`rng::SplitMix64`]: the deterministic generator of simulations and
//!   synthetic test data;
//! - [`journey`] and [`physio`]: the simulated wearer, emotional journeys
//!   (calm → stress → recovery, …) and the heart, skin-conductance and
//!   skin-temperature models that play them; firmware-sim's devices and the
//!   gateway's simulated BLE adapter both use them.
//!
//! No dependencies (serde only with the `serde` feature), no I/O.

pub mod journey;
pub mod physio;
pub mod prosody;
pub mod rng;
pub mod source;

pub use prosody::Prosody;
pub use rng::SplitMix64;
pub use source::{Source, UnknownSource};
