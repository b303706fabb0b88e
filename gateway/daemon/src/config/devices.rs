//! `[[serial]]` ports and the `[ble]` section (run by [`crate::devices`]).

use std::path::PathBuf;

use emotion_common::journey::Journey;
use emotion_core::units::Dur;
use serde::{Deserialize, Serialize};

/// One `[[serial]]` port.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// The device id readings carry (default: the frames' device id).
    pub device_id: Option<String>,
    /// The user the readings belong to; without one nothing is stored.
    pub user_id: Option<String>,
}

fn default_baud() -> u32 {
    115_200
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BleAdapter {
    /// The machine's Bluetooth radio (BlueZ over D-Bus).
    Radio,
    /// An in-process simulated heart-rate strap and EDA band (demos, tests),
    /// playing `[ble.simulated]`.
    Simulated,
}

/// The `[ble]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BleConfig {
    pub enabled: bool,
    pub adapter: BleAdapter,
    pub max_connections: usize,
    pub scan_duration: Dur,
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    pub connect_timeout: Dur,
    pub simulated: SimulatedBleConfig,
}

/// `[ble.simulated]`: what the simulated adapter's strap and band play, so
/// that someone without a wearable (or a test) sees heart rate follow an
/// emotional journey and the reconnect after a link drop.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedBleConfig {
    /// The wearer's journey (firmware-sim's), started over after each pass.
    pub journey: Journey,
    /// Simulated length of one pass.
    pub journey_duration: Dur,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Each link drops this long after it was made (`0s`: never).
    pub link_drop_every: Dur,
    /// How long a dropped device stays out of reach, periodic drops and
    /// `POST /api/ble/devices/{address}/drop` without a duration alike.
    pub link_down_for: Dur,
}

/// Fastest simulated journey: beyond it a tick (one simulated second) comes
/// more often than every millisecond.
const MAX_SPEED: f64 = 1000.0;

impl BleConfig {
    /// Semantic problems of the section, all of them.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_connections > 64 {
            p.push(format!(
                "ble.max_connections must be at most 64, got {}",
                self.max_connections
            ));
        }
        let sim = &self.simulated;
        if !(sim.speed.is_finite() && sim.speed > 0.0 && sim.speed <= MAX_SPEED) {
            p.push(format!(
                "ble.simulated.speed must be above 0 and at most {MAX_SPEED}, got {}",
                sim.speed
            ));
        }
        if sim.journey_duration.0 < std::time::Duration::from_secs(1) {
            p.push(format!(
                "ble.simulated.journey_duration must be at least 1s, got {}",
                sim.journey_duration
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Config;
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, super::super::ConfigError> {
        Config::load(
            None,
            env.iter()
                .map(|(k, v)| (format!("EMOTION_GATEWAY__BLE__{k}"), (*v).to_owned())),
        )
    }

    #[test]
    fn the_simulated_adapter_plays_a_journey_and_drops_links_on_request() {
        let c = load(&[]).expect("embedded default");
        let sim = &c.ble.simulated;
        assert_eq!(sim.journey, Journey::CalmStressRecovery);
        assert_eq!(sim.journey_duration, Dur(Duration::from_secs(600)));
        assert_eq!(sim.speed, 1.0);
        assert_eq!(sim.link_drop_every, Dur(Duration::ZERO), "no drops unasked");

        // What scripts/run.sh sets; an integer speed is a number too.
        let c = load(&[
            ("SIMULATED__JOURNEY", "volatile"),
            ("SIMULATED__SPEED", "10"),
            ("SIMULATED__LINK_DROP_EVERY", "100s"),
        ])
        .expect("valid");
        assert_eq!(c.ble.simulated.journey, Journey::Volatile);
        assert_eq!(c.ble.simulated.speed, 10.0);
        assert_eq!(
            c.ble.simulated.link_drop_every,
            Dur(Duration::from_secs(100))
        );
    }

    #[test]
    fn bad_simulation_settings_are_reported_by_name() {
        let e = load(&[("SIMULATED__JOURNEY", "panic")]).expect_err("unknown journey");
        assert!(e.problems.iter().any(|p| p.contains("panic")), "{e:?}");
        let e = load(&[
            ("SIMULATED__SPEED", "0"),
            ("SIMULATED__JOURNEY_DURATION", "0s"),
            ("MAX_CONNECTIONS", "65"),
        ])
        .expect_err("invalid");
        for key in [
            "ble.simulated.speed",
            "ble.simulated.journey_duration",
            "ble.max_connections",
        ] {
            assert!(e.problems.iter().any(|p| p.contains(key)), "{key}: {e:?}");
        }
    }
}
