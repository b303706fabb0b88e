//! `[mqtt]`: the embedded broker, device credentials, limits, topics and the
//! upstream connection.
//!
//! Every key has a default: the `Default` impl equals the commented `[mqtt]`
//! block of `config/gateway.toml` (a unit test checks), and
//! [`MqttConfig::problems`] lists every problem at once, in the words of the
//! configuration keys.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use emotion_core::event::check_identifier;
use emotion_core::units::{ByteSize, Dur};
use serde::Deserialize;

/// The token of the development device in the embedded default. Like the
/// development API token it is refused unless every listener is on loopback.
pub const DEV_DEVICE_TOKEN: &str = "dev-device-token-change-me";

/// The `[mqtt]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Run the embedded broker.
    pub enabled: bool,
    /// MQTT 3.1.1 listener address, `""` for none.
    pub listen_v4: String,
    /// MQTT 5 listener address, `""` for none.
    pub listen_v5: String,
    pub tls: TlsListeners,
    pub limits: Limits,
    pub topics: Topics,
    pub upstream: UpstreamConfig,
    pub devices: Vec<DeviceCredential>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsListeners {
    pub listen_v4: String,
    pub listen_v5: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight_per_connection: usize,
    /// Messages per second one device may publish on average (0:
    /// unlimited), and at once.
    pub device_rate_per_second: f64,
    pub device_rate_burst: f64,
    pub connect_timeout: Dur,
    pub outbox_capacity: usize,
    pub subscriber_backlog: ByteSize,
}

/// The topic roots: one definition, shared with firmware-sim.
pub use emotion_wire::topics::TopicLayout as Topics;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub tls: bool,
    pub ca_file: String,
    pub client_cert: String,
    pub client_key: String,
    pub filters: Vec<String>,
    pub qos: u8,
    pub persistent_session: bool,
    pub keep_alive: Dur,
    pub reconnect_initial: Dur,
    pub reconnect_max: Dur,
    pub max_in_flight: usize,
    pub publish_results: bool,
}

/// One device's MQTT credentials.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCredential {
    pub device_id: String,
    /// The token in clear, or (`token_sha256`) its SHA-256 in hex so the
    /// configuration does not hold the secret.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_sha256: String,
    /// The user this device measures, if it is bound to one.
    #[serde(default)]
    pub user_id: Option<String>,
}

impl DeviceCredential {
    /// The SHA-256 the presented password must have (`None` only for a
    /// malformed `token_sha256`, which validation refuses).
    pub fn token_digest(&self) -> Option<[u8; 32]> {
        use sha2::Digest;
        if self.token_sha256.is_empty() {
            Some(sha2::Sha256::digest(self.token.as_bytes()).into())
        } else {
            emotion_tls::parse_fingerprint(&self.token_sha256)
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen_v4: "127.0.0.1:1884".into(),
            listen_v5: "127.0.0.1:1885".into(),
            tls: TlsListeners::default(),
            limits: Limits::default(),
            topics: Topics::default(),
            upstream: UpstreamConfig::default(),
            devices: vec![DeviceCredential {
                device_id: "dev-device".into(),
                token: DEV_DEVICE_TOKEN.into(),
                token_sha256: String::new(),
                user_id: Some("42".into()),
            }],
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 65536,
            max_connections: 1024,
            max_in_flight_per_connection: 256,
            device_rate_per_second: 200.0,
            device_rate_burst: 400.0,
            connect_timeout: Dur(Duration::from_secs(10)),
            outbox_capacity: 16384,
            subscriber_backlog: ByteSize(1 << 20),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "emotion-gateway".into(),
            username: String::new(),
            password: String::new(),
            tls: false,
            ca_file: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
            filters: Vec::new(),
            qos: 1,
            persistent_session: true,
            keep_alive: Dur(Duration::from_secs(30)),
            reconnect_initial: Dur(Duration::from_millis(500)),
            reconnect_max: Dur(Duration::from_secs(30)),
            max_in_flight: 1024,
            publish_results: true,
        }
    }
}

/// Largest payload setting accepted (the MQTT maximum packet is 256 MiB).
const MAX_PAYLOAD_LIMIT: usize = 256 << 20;

/// Protocol version a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    V4,
    V5,
}

/// One configured listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The configuration key, for messages (`mqtt.listen_v4`).
    pub key: &'static str,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub tls: bool,
}

impl MqttConfig {
    /// Whether anything MQTT runs (the embedded broker or the upstream client).
    pub fn enabled_anything(&self) -> bool {
        self.enabled || self.upstream.enabled
    }

    /// The listeners of the embedded broker (empty when it is off). Invalid
    /// addresses are skipped here; `problems` reports them.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (key, value, protocol, tls) in self.listener_keys() {
            if let Ok(addr) = value.trim().parse::<SocketAddr>() {
                out.push(ListenerSpec {
                    key,
                    addr,
                    protocol,
                    tls,
                });
            }
        }
        out
    }

    fn listener_keys(&self) -> [(&'static str, &str, Protocol, bool); 4] {
        [
            ("mqtt.listen_v4", &self.listen_v4, Protocol::V4, false),
            ("mqtt.listen_v5", &self.listen_v5, Protocol::V5, false),
            (
                "mqtt.tls.listen_v4",
                &self.tls.listen_v4,
                Protocol::V4,
                true,
            ),
            (
                "mqtt.tls.listen_v5",
                &self.tls.listen_v5,
                Protocol::V5,
                true,
            ),
        ]
    }

    /// The upstream topic filters: the configured ones, or those derived from
    /// the topic roots.
    pub fn upstream_filters(&self) -> Vec<String> {
        if self.upstream.filters.is_empty() {
            vec![self.topics.readings_filter(), self.topics.events_filter()]
        } else {
            self.upstream.filters.clone()
        }
    }

    /// Every problem, each naming its key. Includes a check that each
    /// listener's port is free (a port held by another process is the most
    /// common start-up failure; it is named here with its key).
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.static_problems();
        if self.enabled {
            p.extend(port_problems(&self.listeners()));
        }
        p
    }

    /// Every problem that can be found without touching the network.
    pub fn static_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        self.listener_problems(&mut p);
        self.device_problems(&mut p);
        self.limit_problems(&mut p);
        self.topic_problems(&mut p);
        self.upstream_problems(&mut p);
        p
    }

    fn listener_problems(&self, p: &mut Vec<String>) {
        let mut seen: HashSet<SocketAddr> = HashSet::new();
        let mut any = false;
        let mut any_tls = false;
        let mut all_loopback = true;
        for (key, value, _, tls) in self.listener_keys() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match value.parse::<SocketAddr>() {
                Err(e) => p.push(format!(
                    "{key} `{value}` is not an address like 127.0.0.1:1884 (or \"\" to turn it off): {e}"
                )),
                Ok(addr) => {
                    any = true;
                    any_tls |= tls;
                    all_loopback &= addr.ip().is_loopback();
                    if addr.port() != 0 && !seen.insert(addr) {
                        p.push(format!(
                            "{key} {addr} is the address of another MQTT listener too"
                        ));
                    }
                }
            }
        }
        if self.enabled && !any {
            p.push(
                "mqtt.enabled is true but every listener is off (mqtt.listen_v4, mqtt.listen_v5, \
                 mqtt.tls.listen_v4, mqtt.tls.listen_v5): set one, or mqtt.enabled = false"
                    .into(),
            );
        }
        if any_tls || !self.tls.cert.is_empty() || !self.tls.key.is_empty() {
            for (key, path) in [
                ("mqtt.tls.cert", &self.tls.cert),
                ("mqtt.tls.key", &self.tls.key),
            ] {
                if path.trim().is_empty() {
                    if any_tls {
                        p.push(format!("{key} is required when a TLS listener is set"));
                    }
                } else if !PathBuf::from(path).is_file() {
                    p.push(format!("{key}: no such file `{path}`"));
                }
            }
        }
        if self.enabled && !all_loopback && self.devices.iter().any(|d| d.token == DEV_DEVICE_TOKEN)
        {
            p.push(
                "mqtt.devices: the development device from the embedded default may only be used when \
                 every MQTT listener is on a loopback address. Set your own [[mqtt.devices]]."
                    .into(),
            );
        }
    }

    fn device_problems(&self, p: &mut Vec<String>) {
        let mut ids = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let at = format!("mqtt.devices[{i}] ({})", d.device_id);
            if let Err(m) = check_identifier(&d.device_id) {
                p.push(format!("{at}: device_id {m}"));
            }
            if !ids.insert(d.device_id.as_str()) {
                p.push(format!("{at}: device_id is listed twice"));
            }
            match (d.token.is_empty(), d.token_sha256.is_empty()) {
                (false, false) => p.push(format!("{at}: set token or token_sha256, not both")),
                (true, true) => p.push(format!("{at}: token (or token_sha256) is required")),
                (false, true) if d.token.chars().count() < 16 => {
                    p.push(format!("{at}: token must be at least 16 characters"))
                }
                (true, false) if d.token_digest().is_none() => p.push(format!(
                    "{at}: token_sha256 must be 64 hex digits (printf %s TOKEN | sha256sum)"
                )),
                _ => {}
            }
            if let Some(u) = &d.user_id
                && let Err(m) =
                    emotion_core::event::parse_user_id(&serde_json::Value::String(u.clone()))
            {
                p.push(format!("{at}: user_id {m}"));
            }
        }
    }

    fn limit_problems(&self, p: &mut Vec<String>) {
        let l = &self.limits;
        if !(64..=MAX_PAYLOAD_LIMIT).contains(&l.max_payload_bytes) {
            p.push(format!(
                "mqtt.limits.max_payload_bytes must be between 64 and {MAX_PAYLOAD_LIMIT}, got {}",
                l.max_payload_bytes
            ));
        }
        if !(1..=1_000_000).contains(&l.max_connections) {
            p.push(format!(
                "mqtt.limits.max_connections must be between 1 and 1000000, got {}",
                l.max_connections
            ));
        }
        if !(l.device_rate_per_second.is_finite() && l.device_rate_per_second >= 0.0) {
            p.push("mqtt.limits.device_rate_per_second must be 0 (unlimited) or more".into());
        }
        if l.device_rate_per_second > 0.0
            && !(l.device_rate_burst.is_finite() && l.device_rate_burst >= 1.0)
        {
            p.push("mqtt.limits.device_rate_burst must be at least 1".into());
        }
        if !(1..=65_535).contains(&l.max_in_flight_per_connection) {
            p.push(format!(
                "mqtt.limits.max_in_flight_per_connection must be between 1 and 65535, got {}",
                l.max_in_flight_per_connection
            ));
        }
        if l.connect_timeout.0 < Duration::from_millis(100)
            || l.connect_timeout.0 > Duration::from_secs(600)
        {
            p.push("mqtt.limits.connect_timeout must be between 100ms and 10m".into());
        }
        if !(1..=10_000_000).contains(&l.outbox_capacity) {
            p.push(format!(
                "mqtt.limits.outbox_capacity must be between 1 and 10000000, got {}",
                l.outbox_capacity
            ));
        }
        if l.subscriber_backlog.0 < 4096 || l.subscriber_backlog.0 > (1 << 30) {
            p.push("mqtt.limits.subscriber_backlog must be between 4KiB and 1GiB".into());
        }
    }

    fn topic_problems(&self, p: &mut Vec<String>) {
        let t = &self.topics;
        let roots = [
            ("mqtt.topics.sensors", &t.sensors),
            ("mqtt.topics.emotions", &t.emotions),
            ("mqtt.topics.alerts", &t.alerts),
            ("mqtt.topics.devices", &t.devices),
        ];
        let mut seen = HashSet::new();
        for (key, root) in roots {
            if let Err(m) = check_topic_root(root) {
                p.push(format!("{key} `{root}` {m}"));
            }
            if !seen.insert(root.as_str()) {
                p.push(format!(
                    "{key} `{root}` is also used by another topic root; each must differ"
                ));
            }
        }
        // A root that is a level prefix of another would make topics ambiguous.
        for (ka, a) in roots {
            for (kb, b) in roots {
                if ka != kb && b.starts_with(&format!("{a}/")) {
                    p.push(format!(
                        "{kb} `{b}` starts with {ka} `{a}`; topic roots must not nest"
                    ));
                }
            }
        }
    }

    fn upstream_problems(&self, p: &mut Vec<String>) {
        let u = &self.upstream;
        if !u.enabled {
            return;
        }
        if u.host.trim().is_empty() {
            p.push("mqtt.upstream.host is required when mqtt.upstream.enabled is true".into());
        }
        if u.port == 0 {
            p.push("mqtt.upstream.port must not be 0".into());
        }
        if u.client_id.is_empty() && u.persistent_session {
            p.push(
                "mqtt.upstream.client_id is required for a persistent session (the broker keeps \
                 the session under it)"
                    .into(),
            );
        }
        if u.client_id.len() > 256 || u.client_id.chars().any(|c| c.is_control()) {
            p.push("mqtt.upstream.client_id must be at most 256 printable characters".into());
        }
        if u.username.is_empty() && !u.password.is_empty() {
            p.push("mqtt.upstream.password is set but mqtt.upstream.username is empty".into());
        }
        if u.qos > 2 {
            p.push(format!(
                "mqtt.upstream.qos must be 0, 1 or 2, got {}",
                u.qos
            ));
        }
        if u.keep_alive.0 < Duration::from_secs(1) || u.keep_alive.0 > Duration::from_secs(65_535) {
            p.push("mqtt.upstream.keep_alive must be between 1s and 65535s".into());
        }
        if u.reconnect_initial.0.is_zero() {
            p.push("mqtt.upstream.reconnect_initial must be greater than 0".into());
        }
        if u.reconnect_max.0 < u.reconnect_initial.0 {
            p.push(
                "mqtt.upstream.reconnect_max must not be less than mqtt.upstream.reconnect_initial"
                    .into(),
            );
        }
        if !(1..=65_535).contains(&u.max_in_flight) {
            p.push(format!(
                "mqtt.upstream.max_in_flight must be between 1 and 65535, got {}",
                u.max_in_flight
            ));
        }
        for f in &u.filters {
            if let Err(m) = check_filter(f) {
                p.push(format!("mqtt.upstream.filters: `{f}` {m}"));
            }
        }
        if !u.tls
            && (!u.ca_file.is_empty() || !u.client_cert.is_empty() || !u.client_key.is_empty())
        {
            p.push(
                "mqtt.upstream.ca_file, client_cert and client_key need mqtt.upstream.tls = true"
                    .into(),
            );
        }
        for (key, path) in [
            ("mqtt.upstream.ca_file", &u.ca_file),
            ("mqtt.upstream.client_cert", &u.client_cert),
            ("mqtt.upstream.client_key", &u.client_key),
        ] {
            if !path.is_empty() && !PathBuf::from(path).is_file() {
                p.push(format!("{key}: no such file `{path}`"));
            }
        }
        if u.client_cert.is_empty() != u.client_key.is_empty() {
            p.push(
                "mqtt.upstream.client_cert and mqtt.upstream.client_key go together: set both or neither"
                    .into(),
            );
        }
    }

    /// The device credential for `device_id`.
    pub fn device(&self, device_id: &str) -> Option<&DeviceCredential> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }
}

/// Check that each listener's port can be bound now, naming the key of each
/// that cannot. Port 0 always can.
fn port_problems(listeners: &[ListenerSpec]) -> Vec<String> {
    let mut p = Vec::new();
    for l in listeners {
        if l.addr.port() == 0 {
            continue;
        }
        if let Err(e) = std::net::TcpListener::bind(l.addr) {
            p.push(bind_message(l.key, l.addr, &e));
        }
    }
    p
}

/// The message for a listener that cannot bind.
pub(crate) fn bind_message(key: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{key}: port {} ({addr}) is already in use by another process; set {key} to a free \
             address, \"\" to turn this listener off, or mqtt.enabled = false",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{key}: not permitted to listen on port {} ({addr}); ports below 1024 need privileges",
            addr.port()
        ),
        _ => format!("{key}: cannot listen on {addr}: {e}"),
    }
}

/// A topic root: one or more levels, no wildcards, no empty level, not a
/// `$` system topic.
fn check_topic_root(root: &str) -> Result<(), String> {
    if root.is_empty() {
        return Err("must not be empty".into());
    }
    if root.starts_with('$') {
        return Err("must not start with `$` (reserved for broker topics)".into());
    }
    if root.contains(['+', '#', '\0']) {
        return Err("must not contain wildcards (+ #) or NUL".into());
    }
    if root.split('/').any(str::is_empty) {
        return Err("must not have an empty level (leading, trailing or double /)".into());
    }
    if root.len() > 1024 {
        return Err("is too long (at most 1024 bytes)".into());
    }
    Ok(())
}

/// An MQTT topic filter: `#` only as the last level, wildcards only as whole
/// levels.
pub(crate) fn check_filter(f: &str) -> Result<(), String> {
    if f.is_empty() || f.len() > 65_535 {
        return Err("must be 1 to 65535 bytes".into());
    }
    if f.contains('\0') {
        return Err("must not contain NUL".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` must be a whole level and the last one".into());
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        mqtt: MqttConfig,
    }

    fn parse(text: &str) -> Result<MqttConfig, toml::de::Error> {
        toml::from_str::<Wrapper>(text).map(|w| w.mqtt)
    }

    /// The documented defaults (the `[mqtt]` block of the embedded
    /// configuration) and `MqttConfig::default()` cannot drift apart.
    #[test]
    fn embedded_block_equals_default_and_is_valid() {
        let table: toml::Table = include_str!("../../../config/gateway.toml")
            .parse()
            .expect("parses");
        let section = table.get("mqtt").cloned().expect("an [mqtt] block");
        let parsed: MqttConfig = section.try_into().expect("[mqtt] parses");
        assert_eq!(parsed, MqttConfig::default());
        assert!(
            parsed.static_problems().is_empty(),
            "{:?}",
            parsed.static_problems()
        );
        assert_eq!(
            parsed.upstream_filters(),
            ["sensors/+/+", "emotions/+/events"]
        );
        assert!(parsed.enabled_anything());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse("[mqtt]\nlisten = \"x\"\n").expect_err("unknown key");
        assert!(e.to_string().contains("listen"), "{e}");
        let e = parse("[mqtt.upstream]\nhots = \"x\"\n").expect_err("unknown key");
        assert!(e.to_string().contains("hots"), "{e}");
        let e = parse("[[mqtt.devices]]\ndevice_id = \"a\"\ntoken = \"b\"\nuser = \"1\"\n")
            .expect_err("unknown key");
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn every_problem_is_listed_with_its_key() {
        let mut c = MqttConfig {
            listen_v4: "nowhere".into(),
            listen_v5: "0.0.0.0:1885".into(),
            ..MqttConfig::default()
        };
        c.tls.listen_v5 = "127.0.0.1:8883".into();
        c.devices.push(DeviceCredential {
            device_id: "bad/id".into(),
            token: "short".into(),
            token_sha256: String::new(),
            user_id: Some("-3".into()),
        });
        c.limits.max_payload_bytes = 1;
        c.limits.max_in_flight_per_connection = 0;
        c.topics.alerts = "a/+".into();
        c.topics.devices = "sensors".into();
        c.upstream.enabled = true;
        c.upstream.qos = 3;
        c.upstream.client_id.clear();
        c.upstream.filters = vec!["a/#/b".into()];
        c.upstream.client_cert = "/nonexistent.pem".into();
        c.upstream.tls = true;
        let p = c.static_problems().join("\n");
        for needle in [
            "mqtt.listen_v4 `nowhere`",
            "mqtt.tls.cert is required",
            "development device",
            "device_id may contain only",
            "token must be at least 16",
            "user_id must be a positive integer",
            "mqtt.limits.max_payload_bytes",
            "mqtt.limits.max_in_flight_per_connection",
            "mqtt.topics.alerts",
            "mqtt.topics.devices `sensors` is also used",
            "mqtt.upstream.qos",
            "mqtt.upstream.client_id is required",
            "mqtt.upstream.filters: `a/#/b`",
            "mqtt.upstream.client_cert: no such file",
            "go together",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
    }

    #[test]
    fn a_port_in_use_is_named_with_its_key() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let c = MqttConfig {
            listen_v4: "127.0.0.1:0".into(),
            listen_v5: format!("127.0.0.1:{port}"),
            ..MqttConfig::default()
        };
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("mqtt.listen_v5") && p[0].contains(&format!("port {port}")),
            "{p:?}"
        );
        // Off: nothing is bound, nothing is reported.
        let off = MqttConfig {
            enabled: false,
            ..c
        };
        assert!(off.problems().is_empty());
    }

    #[test]
    fn all_listeners_off_while_enabled_is_a_problem() {
        let c = MqttConfig {
            listen_v4: String::new(),
            listen_v5: String::new(),
            ..MqttConfig::default()
        };
        assert!(
            c.static_problems()
                .iter()
                .any(|m| m.contains("every listener is off"))
        );
    }

    #[test]
    fn filters_are_checked() {
        assert!(check_filter("sensors/+/+").is_ok());
        assert!(check_filter("#").is_ok());
        assert!(check_filter("a/b#").is_err());
        assert!(check_filter("a/#/c").is_err());
        assert!(check_filter("a/b+/c").is_err());
        assert!(check_filter("").is_err());
    }
}
