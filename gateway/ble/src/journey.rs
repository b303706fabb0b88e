//! Simulated wearables that play an emotional journey: a heart-rate strap
//! and an EDA band whose signals come from `emotion_common::physio` driven
//! by a [`Script`] (calm → stress → recovery, …).
//!
//! They live here, beside the simulated adapter, because both the gateway
//! (`ble.adapter = "simulated"`) and firmware-sim need them and the gateway
//! cannot link the simulator. The generators ([`StrapGen`], [`BandGen`]) are
//! pure: firmware-sim wraps them in serial frames, [`JourneyPeripheral`] in
//! GATT notifications for [`crate::SimAdapter`].

use std::time::Duration;

use emotion_common::journey::Script;
use emotion_common::physio::{EdaModel, HeartModel, SkinTemperatureModel, rng};
use emotion_wire::gatt::{HeartRateMeasurement, SensorContact, rr_1024_to_ms, rr_ms_to_1024};
use emotion_wire::vendor::EdaMeasurement;
use uuid::Uuid;

use crate::sim::PeripheralBehaviour;
use crate::uuids;

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
}

impl StrapGen {
    pub fn new(script: Script, seed: u64) -> Self {
        Self {
            script,
            heart: HeartModel::new(seed, script.affect_at(0.0)),
            t_s: 0.0,
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

/// A journey-driven BLE peripheral for [`crate::SimAdapter`].
///
/// Ticked by the adapter every `interval` of real time, it advances its
/// generator by `interval × speed` simulated seconds; with no interval
/// (manual ticks) each tick is one simulated second. The wearer's journey
/// runs on while the link is down; what was measured meanwhile is not sent
/// when the link comes back (a strap keeps no backlog), so a drop leaves a
/// real gap in the data.
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
            // At absurd speeds the period rounds to nothing; the adapter's
            // ticker floors it at a millisecond.
            interval: Some(Duration::try_from_secs_f64(1.0 / speed).unwrap_or(Duration::ZERO)),
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

    /// Simulated seconds of the journey played so far.
    pub fn elapsed_s(&self) -> f64 {
        self.t_s
    }

    /// The simulated time at `elapsed` real time since the first connection.
    fn target(&self, elapsed: Duration) -> f64 {
        elapsed.as_secs_f64() * self.speed
    }

    /// Advance the generator by `dt` simulated seconds; its notifications.
    fn advance(&mut self, dt: f64) -> Vec<(Uuid, Vec<u8>)> {
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
            Some(_) => self.target(elapsed),
            None => self.t_s + 1.0,
        };
        let dt = (target - self.t_s).max(0.0);
        self.t_s = target;
        self.advance(dt)
    }

    fn resume(&mut self, elapsed: Duration) {
        // Manual ticks have no real-time clock: nothing was missed.
        if self.interval.is_none() {
            return;
        }
        let target = self.target(elapsed);
        let dt = (target - self.t_s).max(0.0);
        self.t_s = target;
        // Lived through, never sent.
        let _ = self.advance(dt);
    }

    fn read(&mut self, characteristic: Uuid) -> Option<Vec<u8>> {
        (characteristic == uuids::BATTERY_LEVEL).then(|| vec![self.battery])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emotion_common::journey::Journey;
    use emotion_wire::gatt::HeartRateMeasurement;

    fn rr_of(notifications: &[(Uuid, Vec<u8>)]) -> Vec<f64> {
        notifications
            .iter()
            .filter_map(|(_, v)| HeartRateMeasurement::decode(v).ok())
            .flat_map(|m| m.rr_intervals_1024.into_iter().map(rr_1024_to_ms))
            .collect()
    }

    #[test]
    fn the_strap_follows_the_journey() {
        let script = Script::new(Journey::CalmStressRecovery, Duration::from_secs(600));
        let mut strap = JourneyPeripheral::strap(script, 3, 1.0);
        let mut by_phase = [Vec::new(), Vec::new()];
        for s in 1..=600u64 {
            let rr = rr_of(&strap.tick(Duration::from_secs(s)));
            match s {
                30..=170 => by_phase[0].extend(rr),
                270..=380 => by_phase[1].extend(rr),
                _ => {}
            }
        }
        let hr = |rr: &[f64]| emotion_common::physio::mean_hr(rr).expect("beats");
        let (calm, stress) = (hr(&by_phase[0]), hr(&by_phase[1]));
        assert!(
            stress > calm + 20.0,
            "calm {calm:.0} bpm, stress {stress:.0} bpm"
        );
    }

    #[test]
    fn what_happened_while_the_link_was_down_is_not_sent() {
        let script = Script::new(Journey::Stable, Duration::from_secs(600));
        let mut strap = JourneyPeripheral::strap(script, 5, 1.0);
        let before = rr_of(&strap.tick(Duration::from_secs(10)));
        assert!(before.len() >= 5, "{before:?}");
        // Down from 10 s to 70 s: the next tick, a second after the link is
        // back, carries one second of beats, not a minute's backlog.
        strap.resume(Duration::from_secs(70));
        assert_eq!(strap.elapsed_s(), 70.0);
        let after = rr_of(&strap.tick(Duration::from_secs(71)));
        let covered: f64 = after.iter().sum::<f64>() / 1000.0;
        assert!(covered <= 2.5, "{covered} s of beats after the gap");
    }
}
