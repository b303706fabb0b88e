//! Simulated wearables driven by a journey: a heart-rate strap and an EDA
//! band. The same generators feed the serial frames ([`SerialDevice`]) and
//! the simulated BLE peripherals ([`JourneyPeripheral`]); they live in
//! `emotion_ble::journey` so that the gateway's simulated adapter plays
//! them too.

use std::time::Duration;

use emotion_wire::{Capabilities, FirmwareVersion, Frame, Hello, Payload};

pub use emotion_ble::journey::{
    BandGen, EDA_RATE_HZ, EdaSample, HeartSample, JourneyPeripheral, StrapGen, Wearable,
};
pub use emotion_common::journey::Script;

use crate::journey::Journey;

/// Firmware version the simulated devices report.
pub const FIRMWARE: FirmwareVersion = FirmwareVersion {
    major: 1,
    minor: 4,
    patch: 0,
};

/// A wearable speaking `emotion-wire` frames: it numbers them, starts with a
/// hello, and reports its battery now and then. Each boot has its own boot
/// id, carried in every frame (frame format 2), unless it plays firmware from
/// before boot ids ([`SerialDevice::without_boot_ids`], format 1).
#[derive(Debug, Clone)]
pub struct SerialDevice {
    pub device_id: u64,
    pub wearable: Wearable,
    /// The current boot's id; `None`: firmware without boot ids.
    boot_id: Option<u32>,
    seq: u32,
    battery: f64,
    since_battery_s: f64,
}

impl SerialDevice {
    pub fn strap(device_id: u64, script: Script, seed: u64) -> Self {
        Self::new(device_id, Wearable::Strap(StrapGen::new(script, seed)))
    }

    pub fn band(device_id: u64, script: Script, seed: u64) -> Self {
        Self::new(device_id, Wearable::Band(BandGen::new(script, seed)))
    }

    pub fn new(device_id: u64, wearable: Wearable) -> Self {
        Self {
            device_id,
            wearable,
            boot_id: Some(new_boot_id(None)),
            seq: 0,
            battery: 100.0,
            since_battery_s: f64::INFINITY,
        }
    }

    /// Play firmware from before boot ids: frames in format 1, a reboot shows
    /// only in the numbering.
    pub fn without_boot_ids(mut self) -> Self {
        self.boot_id = None;
        self
    }

    /// The current boot's id (`None` without boot ids).
    pub fn boot_id(&self) -> Option<u32> {
        self.boot_id
    }

    fn frame(&mut self, payload: Payload) -> Frame {
        let f = Frame {
            device_id: self.device_id,
            boot_id: self.boot_id,
            seq: self.seq,
            payload,
        };
        self.seq = self.seq.wrapping_add(1);
        f
    }

    /// The boot hello (sequence number 0 after a reboot).
    pub fn hello(&mut self) -> Frame {
        let (capabilities, model) = match self.wearable {
            Wearable::Strap(_) => (
                Capabilities::HEART_RATE | Capabilities::RR_INTERVALS | Capabilities::BATTERY,
                "EmoStrap HR-1 (sim)",
            ),
            Wearable::Band(_) => (
                Capabilities::SKIN_CONDUCTANCE
                    | Capabilities::SKIN_TEMPERATURE
                    | Capabilities::BATTERY,
                "EmoBand EDA-1 (sim)",
            ),
        };
        self.frame(Payload::Hello(Hello {
            firmware: FIRMWARE,
            capabilities,
            model: model.into(),
        }))
    }

    /// Reboot: numbering starts over at 0 under a new boot id (if the
    /// firmware has boot ids); the next frame should be a hello.
    pub fn reboot(&mut self) {
        self.seq = 0;
        self.boot_id = self.boot_id.map(|old| new_boot_id(Some(old)));
    }

    /// Advance `dt_s` simulated seconds: the frames to send, plus what they
    /// carry (for checking the other end).
    pub fn step(&mut self, dt_s: f64) -> (Vec<Frame>, StepData) {
        let mut frames = Vec::new();
        let data = match &mut self.wearable {
            Wearable::Strap(g) => {
                let samples = g.step(dt_s);
                StepData::Heart(samples)
            }
            Wearable::Band(g) => StepData::Eda(g.step(dt_s)),
        };
        match &data {
            StepData::Heart(samples) => {
                for s in samples {
                    let p = Payload::HeartRateMeasurement(s.measurement.encode());
                    frames.push(self.frame(p));
                }
            }
            StepData::Eda(e) => {
                // A frame holds at most ~100 samples: split longer steps.
                for chunk in e.samples_us.chunks(64) {
                    let p = Payload::SkinConductance {
                        sample_rate_hz: e.sample_rate_hz as f32,
                        samples_us: chunk.iter().map(|&x| x as f32).collect(),
                    };
                    frames.push(self.frame(p));
                }
                let p = Payload::SkinTemperature {
                    celsius: e.skin_temperature_c as f32,
                };
                frames.push(self.frame(p));
            }
        }
        // Battery: drains ~5 %/hour; reported once a minute.
        self.battery = (self.battery - dt_s * 5.0 / 3600.0).max(0.0);
        self.since_battery_s += dt_s;
        if self.since_battery_s >= 60.0 {
            self.since_battery_s = 0.0;
            let p = Payload::Battery {
                percent: self.battery.round() as u8,
            };
            frames.push(self.frame(p));
        }
        (frames, data)
    }
}

/// A boot id for a new boot, other than `previous`. Random, like firmware
/// drawing one from its RNG at boot, not from the run's seed: a simulator
/// started again with the same seed is a new boot too.
fn new_boot_id(previous: Option<u32>) -> u32 {
    loop {
        // The low bits of a UUIDv7 are random.
        let id = uuid::Uuid::now_v7().as_u128() as u32;
        if Some(id) != previous {
            return id;
        }
    }
}

/// What a step measured.
#[derive(Debug, Clone, PartialEq)]
pub enum StepData {
    Heart(Vec<HeartSample>),
    Eda(EdaSample),
}

/// Address of the demo strap in [`demo_ble_adapter`].
pub const DEMO_STRAP_ADDRESS: &str = "E0:00:00:00:A3:01";
/// Address of the demo EDA band in [`demo_ble_adapter`].
pub const DEMO_BAND_ADDRESS: &str = "E0:00:00:00:A3:02";

/// A simulated BLE adapter with a heart-rate strap and an EDA band on
/// `journey` (10 simulated minutes), ticking once a simulated second at
/// `speed`×: a stand-in radio for the daemon's tests and demos.
pub fn demo_ble_adapter(journey: Journey, speed: f64, seed: u64) -> emotion_ble::SimAdapter {
    let script = Script::new(journey, Duration::from_secs(600));
    let mut peripherals = Vec::new();
    if let Ok(a) = emotion_ble::Address::parse(DEMO_STRAP_ADDRESS) {
        peripherals.push(emotion_ble::SimPeripheral::heart_rate_strap(
            a,
            JourneyPeripheral::strap(script, seed, speed),
        ));
    }
    if let Ok(a) = emotion_ble::Address::parse(DEMO_BAND_ADDRESS) {
        peripherals.push(emotion_ble::SimPeripheral::eda_band(
            a,
            JourneyPeripheral::band(script, seed.wrapping_add(1), speed),
        ));
    }
    emotion_ble::SimAdapter::with_peripherals(peripherals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_adapter_advertises_a_strap_and_a_band() {
        use emotion_ble::BleTransport;
        let sim = demo_ble_adapter(Journey::Stable, 1.0, 1);
        let found = sim
            .scan(Duration::ZERO, &emotion_ble::uuids::SCAN_SERVICES)
            .await
            .expect("scan");
        let addresses: Vec<&str> = found.iter().map(|d| d.address.as_str()).collect();
        assert_eq!(addresses, [DEMO_STRAP_ADDRESS, DEMO_BAND_ADDRESS]);
    }
}
