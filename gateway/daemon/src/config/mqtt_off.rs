//! `[mqtt]` in a gateway built without the `mqtt` cargo feature. The section
//! is still accepted (the embedded default has one, and a configuration file
//! should not stop working with a smaller build) but nothing runs it: a
//! warning says so when it asks for MQTT.

use serde::Deserialize;
use toml::{Table, Value};

/// The `[mqtt]` section, kept as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct MqttConfig(Table);

impl MqttConfig {
    /// Whether the section asks for the embedded broker or the upstream client.
    pub fn enabled_anything(&self) -> bool {
        let on = |t: &Table| matches!(t.get("enabled"), Some(Value::Boolean(true)));
        on(&self.0) || matches!(self.0.get("upstream"), Some(Value::Table(u)) if on(u))
    }

    /// Nothing here can be wrong: the section is not used.
    pub fn static_problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// The warning `check-config` prints and the start logs.
    pub fn problems(&self) -> Vec<String> {
        if self.enabled_anything() {
            vec![NOT_BUILT.to_owned()]
        } else {
            Vec::new()
        }
    }
}

/// Why MQTT does not run although `[mqtt]` turns it on.
pub const NOT_BUILT: &str = "[mqtt] turns MQTT on, but this gateway was built without the `mqtt` \
    cargo feature: MQTT is off (build with the default features to have it)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_asks_for_mqtt_and_gets_a_warning() {
        let table: Table = super::super::EMBEDDED.parse().expect("parses");
        let section = table.get("mqtt").cloned().expect("an [mqtt] block");
        let c: MqttConfig = section.try_into().expect("any [mqtt] parses");
        assert!(c.enabled_anything());
        assert_eq!(c.problems(), vec![NOT_BUILT.to_owned()]);
        let off: MqttConfig =
            toml::from_str("enabled = false\n[upstream]\nenabled = false\n").expect("parses");
        assert!(!off.enabled_anything() && off.problems().is_empty());
        let up: MqttConfig =
            toml::from_str("enabled = false\n[upstream]\nenabled = true\n").expect("parses");
        assert!(up.enabled_anything());
    }
}
