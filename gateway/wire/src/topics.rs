//! The MQTT topic layout, defined once for the gateway (which makes the four
//! roots configurable under `[mqtt.topics]`) and for devices and simulators
//! (which use the defaults unless told otherwise).
//!
//! | direction | topic | who |
//! |---|---|---|
//! | device → gateway | `{sensors}/{device_id}/{source}` | the device itself |
//! | device → gateway | `{emotions}/{user_id}/events` | a device bound to that user |
//! | gateway → device | `{emotions}/{user_id}/analysis` | a device bound to that user |
//! | gateway → device | `{emotions}/{user_id}/fused` | a device bound to that user |
//! | gateway → device | `{alerts}/{user_id}` | a device bound to that user |
//! | gateway → device | `{devices}/{device_id}/errors` | the device itself |
//!
//! Anything else is refused: a device cannot publish as another device or for
//! another user, nor read anyone else's results. Subscriptions are exact
//! topics (no wildcards), which also keeps one user's analysis out of reach of
//! a `#` subscription.
//!
//! Pure: formatting and parsing only, no broker.

use alloc::format;
use alloc::string::String;

use serde::{Deserialize, Serialize};

/// The four topic roots. Each is one or more levels (`site7/sensors`); the
/// defaults are `sensors`, `emotions`, `alerts` and `devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicLayout {
    /// Root of raw readings: `{sensors}/{device_id}/{source}`.
    pub sensors: String,
    /// Root of ready-made events and analyses: `{emotions}/{user_id}/events`,
    /// `{emotions}/{user_id}/analysis`.
    pub emotions: String,
    /// Root of alerts: `{alerts}/{user_id}`.
    pub alerts: String,
    /// Root of per-device error reports: `{devices}/{device_id}/errors`.
    pub devices: String,
}

impl Default for TopicLayout {
    fn default() -> Self {
        TopicLayout {
            sensors: "sensors".into(),
            emotions: "emotions".into(),
            alerts: "alerts".into(),
            devices: "devices".into(),
        }
    }
}

/// Where an incoming message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A raw reading for the plugin of `source` (not yet checked to be a
    /// known source: an unknown one is bad input, reported to the device).
    Reading { device_id: &'a str, source: &'a str },
    /// A ready-made emotion event for `user_id`.
    Event { user_id: &'a str },
}

/// Why a device may not publish or subscribe somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not a topic the gateway takes messages on.
    UnknownTopic,
    /// Another device's sensor topic.
    OtherDevice,
    /// An events topic of a user the device is not bound to.
    OtherUser,
    /// A subscription the device may not have.
    NotItsResults,
}

impl Denied {
    pub fn message(&self, topic: &str) -> String {
        match self {
            Denied::UnknownTopic => format!(
                "`{topic}` is not a topic devices publish to (sensors/{{device_id}}/{{source}} or \
                 emotions/{{user_id}}/events)"
            ),
            Denied::OtherDevice => {
                format!("`{topic}` belongs to another device; publish under your own device id")
            }
            Denied::OtherUser => {
                format!("`{topic}` is the events topic of a user this device is not bound to")
            }
            Denied::NotItsResults => format!(
                "`{topic}`: a device may subscribe only to its own user's analysis and alerts and \
                 its own errors topic (exact topics, no wildcards)"
            ),
        }
    }
}

impl TopicLayout {
    /// Where `device_id` publishes its readings of `source` (a source name
    /// such as `"facial"`).
    pub fn reading(&self, device_id: &str, source: &str) -> String {
        format!("{}/{device_id}/{source}", self.sensors)
    }

    /// Where a device bound to `user_id` publishes ready-made events.
    pub fn events(&self, user_id: &str) -> String {
        format!("{}/{user_id}/events", self.emotions)
    }

    /// Where the gateway publishes `user_id`'s analyses.
    pub fn analysis(&self, user_id: &str) -> String {
        format!("{}/{user_id}/analysis", self.emotions)
    }

    /// Where the gateway publishes `user_id`'s fused estimates.
    pub fn fused(&self, user_id: &str) -> String {
        format!("{}/{user_id}/fused", self.emotions)
    }

    /// Where the gateway publishes `user_id`'s alerts.
    pub fn alerts(&self, user_id: &str) -> String {
        format!("{}/{user_id}", self.alerts)
    }

    /// Where the gateway reports `device_id`'s rejected messages.
    pub fn errors(&self, device_id: &str) -> String {
        format!("{}/{device_id}/errors", self.devices)
    }

    /// The filter matching every reading topic (`{sensors}/+/+`).
    pub fn readings_filter(&self) -> String {
        format!("{}/+/+", self.sensors)
    }

    /// The filter matching every events topic (`{emotions}/+/events`).
    pub fn events_filter(&self) -> String {
        format!("{}/+/events", self.emotions)
    }

    /// Whether `topic` is some user's analysis or fused-estimate topic
    /// (both are fed by the analysis stream).
    pub fn is_analysis(&self, topic: &str) -> bool {
        strip_root(topic, &self.emotions)
            .and_then(|rest| {
                rest.strip_suffix("/analysis")
                    .or_else(|| rest.strip_suffix("/fused"))
            })
            .is_some_and(valid_level)
    }

    /// What a published topic is, if the gateway takes messages on it. The
    /// variable levels must be non-empty and free of wildcards.
    pub fn parse_inbound<'a>(&self, topic: &'a str) -> Option<Inbound<'a>> {
        if let Some(rest) = strip_root(topic, &self.sensors)
            && let Some((device_id, source)) = rest.split_once('/')
            && valid_level(device_id)
            && valid_level(source)
        {
            return Some(Inbound::Reading { device_id, source });
        }
        if let Some(rest) = strip_root(topic, &self.emotions) {
            let (user_id, tail) = rest.split_once('/')?;
            if tail == "events" && valid_level(user_id) {
                return Some(Inbound::Event { user_id });
            }
        }
        None
    }

    /// May `device_id` (bound to `user`, if any) publish on `topic`?
    pub fn authorize_publish<'a>(
        &self,
        topic: &'a str,
        device_id: &str,
        user: Option<&str>,
    ) -> Result<Inbound<'a>, Denied> {
        match self.parse_inbound(topic) {
            None => Err(Denied::UnknownTopic),
            Some(Inbound::Reading { device_id: d, .. }) if d != device_id => {
                Err(Denied::OtherDevice)
            }
            Some(Inbound::Event { user_id }) if Some(user_id) != user => Err(Denied::OtherUser),
            Some(ok) => Ok(ok),
        }
    }

    /// May `device_id` (bound to `user`, if any) subscribe to `filter`? Only
    /// its exact result topics.
    pub fn authorize_subscribe(
        &self,
        filter: &str,
        device_id: &str,
        user: Option<&str>,
    ) -> Result<(), Denied> {
        if filter == self.errors(device_id) {
            return Ok(());
        }
        if let Some(u) = user
            && (filter == self.analysis(u) || filter == self.fused(u) || filter == self.alerts(u))
        {
            return Ok(());
        }
        Err(Denied::NotItsResults)
    }
}

fn strip_root<'a>(topic: &'a str, root: &str) -> Option<&'a str> {
    topic.strip_prefix(root)?.strip_prefix('/')
}

/// One variable topic level: non-empty, no further `/`, no wildcard.
fn valid_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topics_are_the_gateways() {
        let s = TopicLayout::default();
        assert_eq!(s.reading("cam-1", "facial"), "sensors/cam-1/facial");
        assert_eq!(s.events("42"), "emotions/42/events");
        assert_eq!(s.analysis("42"), "emotions/42/analysis");
        assert_eq!(s.alerts("42"), "alerts/42");
        assert_eq!(s.errors("cam-1"), "devices/cam-1/errors");
        assert_eq!(s.readings_filter(), "sensors/+/+");
        assert_eq!(s.events_filter(), "emotions/+/events");
        assert!(s.is_analysis("emotions/42/analysis"));
        assert!(s.is_analysis("emotions/42/fused"));
        assert_eq!(s.fused("42"), "emotions/42/fused");
        assert!(!s.is_analysis("emotions/42/events"));
        assert!(!s.is_analysis("emotions//analysis"));
    }

    #[test]
    fn inbound_topics_parse() {
        let s = TopicLayout::default();
        assert_eq!(
            s.parse_inbound("sensors/cam-1/facial"),
            Some(Inbound::Reading {
                device_id: "cam-1",
                source: "facial"
            })
        );
        assert_eq!(
            s.parse_inbound("emotions/42/events"),
            Some(Inbound::Event { user_id: "42" })
        );
        for bad in [
            "sensors/cam-1",
            "sensors/cam-1/facial/extra",
            "sensors//facial",
            "sensors/cam-1/",
            "sensorsx/cam-1/facial",
            "emotions/42/analysis",
            "emotions/42",
            "emotions//events",
            "alerts/42",
            "",
            "/sensors/a/b",
        ] {
            assert_eq!(s.parse_inbound(bad), None, "{bad}");
        }
    }

    #[test]
    fn roots_with_several_levels_work() {
        let s = TopicLayout {
            sensors: "site7/sensors".into(),
            ..TopicLayout::default()
        };
        assert_eq!(
            s.parse_inbound("site7/sensors/a/text"),
            Some(Inbound::Reading {
                device_id: "a",
                source: "text"
            })
        );
        assert_eq!(s.parse_inbound("sensors/a/text"), None);
        assert_eq!(s.reading("a", "text"), "site7/sensors/a/text");
    }

    #[test]
    fn devices_publish_only_under_their_own_topics() {
        let s = TopicLayout::default();
        assert!(
            s.authorize_publish("sensors/dev-a/survey", "dev-a", None)
                .is_ok()
        );
        assert_eq!(
            s.authorize_publish("sensors/dev-b/survey", "dev-a", Some("1")),
            Err(Denied::OtherDevice)
        );
        assert!(
            s.authorize_publish("emotions/1/events", "dev-a", Some("1"))
                .is_ok()
        );
        assert_eq!(
            s.authorize_publish("emotions/2/events", "dev-a", Some("1")),
            Err(Denied::OtherUser)
        );
        assert_eq!(
            s.authorize_publish("emotions/1/events", "dev-a", None),
            Err(Denied::OtherUser)
        );
        assert_eq!(
            s.authorize_publish("emotions/1/analysis", "dev-a", Some("1")),
            Err(Denied::UnknownTopic)
        );
        assert_eq!(
            s.authorize_publish("alerts/1", "dev-a", Some("1")),
            Err(Denied::UnknownTopic)
        );
    }

    #[test]
    fn devices_subscribe_only_to_their_own_results() {
        let s = TopicLayout::default();
        for ok in [
            "emotions/1/analysis",
            "emotions/1/fused",
            "alerts/1",
            "devices/dev-a/errors",
        ] {
            assert!(
                s.authorize_subscribe(ok, "dev-a", Some("1")).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "emotions/2/analysis",
            "alerts/2",
            "devices/dev-b/errors",
            "emotions/+/analysis",
            "emotions/#",
            "#",
            "alerts/+",
            "sensors/dev-a/survey",
            "emotions/1/events",
        ] {
            assert_eq!(
                s.authorize_subscribe(bad, "dev-a", Some("1")),
                Err(Denied::NotItsResults),
                "{bad}"
            );
        }
        assert!(
            s.authorize_subscribe("devices/dev-a/errors", "dev-a", None)
                .is_ok()
        );
        assert!(
            s.authorize_subscribe("emotions/1/analysis", "dev-a", None)
                .is_err()
        );
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_keys() {
        let s: TopicLayout =
            serde_json::from_str(r#"{"sensors": "site7/sensors"}"#).expect("valid");
        assert_eq!(s.sensors, "site7/sensors");
        assert_eq!(s.emotions, "emotions");
        assert!(serde_json::from_str::<TopicLayout>(r#"{"sensor": "x"}"#).is_err());
    }
}
