//! Simulated wearables driven by a journey: a heart-rate strap and an EDA
//! band. The same generators feed the serial frames ([`SerialDevice`]) and
//! the simulated BLE peripherals ([`JourneyPeripheral`]).

use std::time::Duration;

use emotion_ble::PeripheralBehaviour;
use emotion_ble::uuids;
use emotion_wire::gatt::{HeartRateMeasurement, SensorContact, rr_1024_to_ms, rr_ms_to_1024};
use emotion_wire::vendor::EdaMeasurement;
use emotion_wire::{Capabilities, FirmwareVersion, Frame, Hello, Payload};
use uuid::Uuid;

use crate::journey::Journey;
use crate::physio::{Affect, EdaModel, HeartModel, SkinTemperatureModel, rng};

/// Firmware version the simulated devices report.
pub const FIRMWARE: FirmwareVersion = FirmwareVersion {
    major: 1,
    minor: 4,
    patch: 0,
};

/// A journey laid over a duration: affect at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Script {
    pub journey: Journey,
    /// Simulated length of the journey, s (affect stays at the end state after).
    pub duration_s: f64,
}

impl Script {
    pub fn new(journey: Journey, duration: Duration) -> Self {
        Self {
            journey,
            duration_s: duration.as_secs_f64().max(1.0),
        }
    }

    pub fn affect_at(&self, t_s: f64) -> Affect {
        self.journey.affect(t_s / self.duration_s)
    }
}

/// One heart-rate notification's worth of data, as sent (RR already in the
/// 1/1024 s units of the wire, so what is sent is exactly what decodes).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartSample {
    pub heart_rate_bpm: u16,
    pub rr_intervals_ms: Vec<f64>,
    pub measurement: HeartRateMeasurement,
}

/// The heart-rate strap's generator.
#[derive(Debug, Clone)]
pub struct StrapGen {
    script: Script,
    heart: HeartModel,
    t_s: f64,
    last_bpm: u16,
}

impl StrapGen {
    pub fn new(script: Script, seed: u64) -> Self {
        Self {
            script,
            heart: HeartModel::new(seed, script.affect_at(0.0)),
            t_s: 0.0,
            last_bpm: 0,
        }
    }

    pub fn elapsed_s(&self) -> f64 {
        self.t_s
    }

    /// Advance `dt_s` simulated seconds: the notifications a strap sends
    /// for the beats in that time, each with at most 9 RR intervals (what a
    /// default-MTU notification holds) and the mean rate over them. Empty
    /// when no beat fell in the time.
    pub fn step(&mut self, dt_s: f64) -> Vec<HeartSample> {
        self.t_s += dt_s;
        let affect = self.script.affect_at(self.t_s);
        let rr = self.heart.advance(dt_s, affect);
        rr.chunks(9)
            .map(|chunk| {
                let units: Vec<u16> = chunk.iter().map(|&ms| rr_ms_to_1024(ms)).collect();
                let sent_ms: Vec<f64> = units.iter().map(|&u| rr_1024_to_ms(u)).collect();
                let mean = sent_ms.iter().sum::<f64>() / sent_ms.len() as f64;
                let bpm = (60_000.0 / mean).round().clamp(1.0, 250.0) as u16;
                self.last_bpm = bpm;
                HeartSample {
                    heart_rate_bpm: bpm,
                    rr_intervals_ms: sent_ms,
                    measurement: HeartRateMeasurement {
                        heart_rate_bpm: bpm,
                        sensor_contact: SensorContact::Detected,
                        energy_expended_kj: None,
                        rr_intervals_1024: units,
                    },
                }
            })
            .collect()
    }
}

/// One EDA notification's worth of data.
#[derive(Debug, Clone, PartialEq)]
pub struct EdaSample {
    pub sample_rate_hz: f64,
    pub samples_us: Vec<f64>,
    pub skin_temperature_c: f64,
}

/// The EDA band's generator.
#[derive(Debug, Clone)]
pub struct BandGen {
    script: Script,
    eda: EdaModel,
    temperature: SkinTemperatureModel,
    t_s: f64,
}

/// Default EDA sample rate (Hz), as common wrist bands use.
pub const EDA_RATE_HZ: f64 = 4.0;

impl BandGen {
    pub fn new(script: Script, seed: u64) -> Self {
        let mut rng = rng(seed);
        let a0 = script.affect_at(0.0);
        Self {
            script,
            eda: EdaModel::new(rng.next_u64(), EDA_RATE_HZ, a0),
            temperature: SkinTemperatureModel::new(rng.next_u64(), a0),
            t_s: 0.0,
        }
    }

    /// SCR onsets generated so far (ground truth).
    pub fn scr_onsets(&self) -> u64 {
        self.eda.scr_count
    }

    pub fn step(&mut self, dt_s: f64) -> EdaSample {
        self.t_s += dt_s;
        let affect = self.script.affect_at(self.t_s);
        EdaSample {
            sample_rate_hz: self.eda.rate_hz,
            samples_us: self.eda.advance(dt_s, affect),
            skin_temperature_c: self.temperature.advance(dt_s, affect),
        }
    }
}

/// What kind of wearable.
#[derive(Debug, Clone)]
pub enum Wearable {
    Strap(StrapGen),
    Band(BandGen),
}

/// A wearable speaking `emotion-wire` frames: it numbers them, starts with a
/// hello, and reports its battery now and then.
#[derive(Debug, Clone)]
pub struct SerialDevice {
    pub device_id: u64,
    pub wearable: Wearable,
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
            seq: 0,
            battery: 100.0,
            since_battery_s: f64::INFINITY,
        }
    }

    fn frame(&mut self, payload: Payload) -> Frame {
        let f = Frame {
            device_id: self.device_id,
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

    /// Restart numbering, as a reboot does; the next frame should be a hello.
    pub fn reboot(&mut self) {
        self.seq = 0;
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

/// What a step measured.
#[derive(Debug, Clone, PartialEq)]
pub enum StepData {
    Heart(Vec<HeartSample>),
    Eda(EdaSample),
}

/// A journey-driven BLE peripheral for `emotion_ble::SimAdapter`.
///
/// Ticked by the adapter every `interval` of real time, it advances its
/// generator by `interval × speed` simulated seconds; with no interval
/// (manual ticks) each tick is one simulated second.
#[derive(Debug, Clone)]
pub struct JourneyPeripheral {
    wearable: Wearable,
    interval: Option<Duration>,
    speed: f64,
    /// Simulated seconds generated so far.
    t_s: f64,
    battery: u8,
}

impl JourneyPeripheral {
    /// A strap ticking once a simulated second at `speed`× real time.
    pub fn strap(script: Script, seed: u64, speed: f64) -> Self {
        Self::new(Wearable::Strap(StrapGen::new(script, seed)), speed)
    }

    /// A band ticking once a simulated second at `speed`× real time.
    pub fn band(script: Script, seed: u64, speed: f64) -> Self {
        Self::new(Wearable::Band(BandGen::new(script, seed)), speed)
    }

    fn new(wearable: Wearable, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Self {
            wearable,
            interval: Some(crate::secs(1.0 / speed)),
            speed,
            t_s: 0.0,
            battery: 95,
        }
    }

    /// Only ticked by `SimAdapter::tick`; one simulated second per tick.
    pub fn manual(mut self) -> Self {
        self.interval = None;
        self
    }
}

impl PeripheralBehaviour for JourneyPeripheral {
    fn characteristics(&self) -> Vec<Uuid> {
        match self.wearable {
            Wearable::Strap(_) => vec![uuids::HEART_RATE_MEASUREMENT, uuids::BATTERY_LEVEL],
            Wearable::Band(_) => vec![uuids::EDA_MEASUREMENT, uuids::BATTERY_LEVEL],
        }
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn tick(&mut self, elapsed: Duration) -> Vec<(Uuid, Vec<u8>)> {
        let target = match self.interval {
            Some(_) => elapsed.as_secs_f64() * self.speed,
            None => self.t_s + 1.0,
        };
        let dt = (target - self.t_s).max(0.0);
        self.t_s = target;
        match &mut self.wearable {
            Wearable::Strap(g) => g
                .step(dt)
                .into_iter()
                .map(|s| (uuids::HEART_RATE_MEASUREMENT, s.measurement.encode()))
                .collect(),
            Wearable::Band(g) => {
                let e = g.step(dt);
                // 7 samples with temperature fit the default ATT MTU.
                let chunks: Vec<&[f64]> = if e.samples_us.is_empty() {
                    vec![&[]]
                } else {
                    e.samples_us.chunks(7).collect()
                };
                chunks
                    .into_iter()
                    .map(|chunk| {
                        let m = EdaMeasurement {
                            sample_rate_hz: e.sample_rate_hz,
                            skin_temperature_c: Some(e.skin_temperature_c),
                            samples_us: chunk.to_vec(),
                        };
                        (uuids::EDA_MEASUREMENT, m.encode())
                    })
                    .collect()
            }
        }
    }

    fn read(&mut self, characteristic: Uuid) -> Option<Vec<u8>> {
        (characteristic == uuids::BATTERY_LEVEL).then(|| vec![self.battery])
    }
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
