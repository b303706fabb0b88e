//! firmware-sim: simulated devices with scripted emotional journeys.
//!
//! - [`physio`]: physiologically plausible signal generators: heart beats
//!   (RR intervals with respiratory sinus arrhythmia and noise, so HRV falls
//!   as arousal rises), skin conductance (tonic level plus phasic responses
//!   whose rate and amplitude rise with arousal), skin temperature; and the
//!   metrics to check them (mean HR, RMSSD, SCR count). Re-exported from
//!   `emotion_common::physio`, which the gateway's simulated BLE adapter
//!   plays too.
//! - [`journey`]: emotional journeys over time (calm → stress → recovery,
//!   recovery, crisis, volatile, stable) as arousal/valence trajectories
//!   (re-exported from `emotion_common::journey`).
//! - [`devices`]: a heart-rate strap and an EDA band driven by a journey,
//!   producing `emotion-wire` serial frames; their generators and the BLE
//!   peripheral ([`devices::JourneyPeripheral`], for `emotion_ble::SimAdapter`)
//!   come from `emotion_ble::journey`, where the gateway finds them too.
//! - [`serial`]: a pseudo-terminal pair the simulator writes frames to; the
//!   gateway opens the slave side as a serial port.
//! - [`ws`]: WebSocket clients speaking the original protocol.
//! - [`mqtt`]: MQTT devices (facial action units, voice features, chat text)
//!   and a rumqttc publisher (QoS 1).
//! - [`scenario`]: the original producer's scenarios and the run summary.
//! - [`load`]: the load tool (`firmware-sim load`): WebSocket or MQTT
//!   connections in closed or open loop, acknowledged events per second,
//!   ack latency percentiles, the gateway's CPU and memory.

pub mod devices;
pub mod load;
pub mod mqtt;
pub mod scenario;
pub mod serial;
pub mod ws;

// The journeys and the physiology live in emotion-common, shared with the
// gateway's simulated BLE adapter; these keep the simulator's paths.
pub use emotion_common::{journey, physio};

/// Seconds to a `Duration` without the panics of `Duration::from_secs_f64`
/// (negative, NaN or huge values come from options): NaN and negatives are
/// zero, huge values saturate.
pub fn secs(s: f64) -> std::time::Duration {
    if s.is_nan() || s <= 0.0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::try_from_secs_f64(s).unwrap_or(std::time::Duration::MAX)
}
