//! Topic names and the access rules of devices.
//!
//! | direction | topic | who |
//! |---|---|---|
//! | device → gateway | `{sensors}/{device_id}/{source}` | the device itself |
//! | device → gateway | `{emotions}/{user_id}/events` | a device bound to that user |
//! | gateway → device | `{emotions}/{user_id}/analysis` | a device bound to that user |
//! | gateway → device | `{alerts}/{user_id}` | a device bound to that user |
//! | gateway → device | `{devices}/{device_id}/errors` | the device itself |
//!
//! Anything else is refused: a device cannot publish as another device or for
//! another user, nor read anyone else's results. Subscriptions are exact
//! topics (no wildcards), which also keeps one user's analysis out of reach of
//! a `#` subscription.

use crate::config::mqtt::Topics;

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

/// The topic layout, from `[mqtt.topics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicScheme {
    sensors: String,
    emotions: String,
    alerts: String,
    devices: String,
}

impl TopicScheme {
    pub fn new(t: &Topics) -> Self {
        TopicScheme {
            sensors: t.sensors.clone(),
            emotions: t.emotions.clone(),
            alerts: t.alerts.clone(),
            devices: t.devices.clone(),
        }
    }

    pub fn analysis(&self, user_id: &str) -> String {
        format!("{}/{user_id}/analysis", self.emotions)
    }

    pub fn alerts(&self, user_id: &str) -> String {
        format!("{}/{user_id}", self.alerts)
    }

    pub fn errors(&self, device_id: &str) -> String {
        format!("{}/{device_id}/errors", self.devices)
    }

    pub fn reading(&self, device_id: &str, source: &str) -> String {
        format!("{}/{device_id}/{source}", self.sensors)
    }

    pub fn events(&self, user_id: &str) -> String {
        format!("{}/{user_id}/events", self.emotions)
    }

    /// Whether `topic` is some user's analysis topic.
    pub fn is_analysis(&self, topic: &str) -> bool {
        strip_root(topic, &self.emotions)
            .and_then(|rest| rest.strip_suffix("/analysis"))
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
            && (filter == self.analysis(u) || filter == self.alerts(u))
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

    fn scheme() -> TopicScheme {
        TopicScheme::new(&Topics::default())
    }

    #[test]
    fn inbound_topics_parse() {
        let s = scheme();
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
        let s = TopicScheme::new(&Topics {
            sensors: "site7/sensors".into(),
            ..Topics::default()
        });
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
        let s = scheme();
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
        // An unbound device sends no ready-made events for anyone.
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
        let s = scheme();
        for ok in ["emotions/1/analysis", "alerts/1", "devices/dev-a/errors"] {
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
        // Unbound: only its errors.
        assert!(
            s.authorize_subscribe("devices/dev-a/errors", "dev-a", None)
                .is_ok()
        );
        assert!(
            s.authorize_subscribe("emotions/1/analysis", "dev-a", None)
                .is_err()
        );
    }
}
