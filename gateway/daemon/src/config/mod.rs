//! Configuration: the embedded default (`config/gateway.toml`), a file merged
//! over it, and environment overrides, then validation that reports every
//! problem at once.
//!
//! This layer owns every configuration type: each section lives in a
//! submodule here (`devices`, `auth`) and the modules that run a section
//! import it from here. `config` imports no other module of the daemon, so it
//! sits at the bottom of the crate's dependency order. `[mqtt]` is the MQTT
//! crate's own ([`emotion_mqtt::config`], re-exported as `config::mqtt`), as
//! `[sync]` and `[plugins]` are their crates'; a build without the `mqtt`
//! feature accepts the section and warns that it does not run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use emotion_core::units::Dur;
use serde::Deserialize;
use toml::{Table, Value};

pub mod auth;
pub mod devices;
pub mod fusion;
pub mod http;
pub mod risk;
#[cfg(feature = "mqtt")]
pub use emotion_mqtt::config as mqtt;
#[cfg(not(feature = "mqtt"))]
#[path = "mqtt_off.rs"]
pub mod mqtt;

pub use auth::{AuthConfig, Scope, TokenConfig};
pub use devices::{BleAdapter, BleConfig, SerialPortConfig};
pub use fusion::FusionSettings;
pub use http::{HttpConfig, HttpLimits, HttpTlsConfig};
pub use mqtt::MqttConfig;
pub use risk::RiskSweepConfig;

/// The default configuration, compiled into the binary.
pub const EMBEDDED: &str = include_str!("../../../../config/gateway.toml");

/// Prefix of environment overrides: `EMOTION_GATEWAY__HTTP__LISTEN=…`.
pub const ENV_PREFIX: &str = "EMOTION_GATEWAY__";

/// Keys that are valid but have no value in the embedded default (unset
/// means "derive it"); the unknown-key check and environment overrides accept
/// them too.
const OPTIONAL_KEYS: &[&str] = &[
    "plugins.cache_dir",
    "sync.retry.max_attempts",
    "serial",
    "auth.certificates",
    "auth.tokens.token_sha256",
    "auth.tokens.user_ids",
    "auth.tokens.rate",
    "mqtt.devices.token_sha256",
];

/// The token shipped in the embedded default; refused off loopback.
pub const DEV_TOKEN: &str = "dev-token-change-me";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway_id: String,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub analyzer: AnalyzerSettings,
    pub plugins: emotion_plugin_host::HostConfig,
    pub sync: emotion_sync::SyncConfig,
    /// Serial wearables, one `[[serial]]` table per port (none by default).
    #[serde(default)]
    pub serial: Vec<SerialPortConfig>,
    pub ble: BleConfig,
    /// The embedded MQTT broker and the upstream broker client.
    pub mqtt: MqttConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub validation: ValidationConfig,
    pub risk_sweep: RiskSweepConfig,
    pub fusion: FusionSettings,
}

/// `[validation]`: how strictly client events are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    pub confidence: ConfidenceCheck,
}

/// Which `confidence` a client event may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceCheck {
    /// Within its source's documented range (`GET /api/sources`).
    SourceRange,
    /// Any value in [0, 1].
    Any,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub retention: Dur,
    pub max_batch_events: usize,
    pub queue_capacity: usize,
    pub cache_mb: u64,
    pub dedup_window: usize,
    pub scrub_interval: Dur,
    pub scrub_first_after: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzerSettings {
    pub session_window: usize,
    pub trajectory_window: usize,
    pub baseline_window: usize,
    pub min_baseline: usize,
    pub anomaly_z: f64,
    pub high_severity_z: f64,
    pub session_idle: Dur,
    pub checkpoint_interval: Dur,
    pub user_idle: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// The embedded default, merged with `file` if given, then with the
    /// `EMOTION_GATEWAY__…` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let defaults: Table = EMBEDDED.parse().map_err(|e| ConfigError {
            problems: vec![format!("embedded default does not parse: {e}")],
        })?;
        let mut merged = defaults.clone();

        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
                Ok(text) => match text.parse::<Table>() {
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                    Ok(user) => {
                        unknown_keys(&defaults, &user, "", &mut problems);
                        merge(&mut merged, user);
                    }
                },
            }
        }

        for (key, value) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if lookup(&defaults, &path).is_none()
                && !OPTIONAL_KEYS.contains(&path.join(".").as_str())
            {
                problems.push(format!(
                    "environment variable {key} names no configuration key (`{}`)",
                    path.join(".")
                ));
                continue;
            }
            set(&mut merged, &path, parse_env_value(&value));
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let config: Config = Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError {
                problems: vec![e.message().to_owned()],
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks, all of them, reported together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if let Err(m) = emotion_core::event::check_identifier(&self.gateway_id) {
            p.push(format!("gateway_id {m}"));
        }
        let listen = self.http.listen.parse::<SocketAddr>();
        if let Err(e) = &listen {
            p.push(format!(
                "http.listen `{}` is not an address like 127.0.0.1:8080: {e}",
                self.http.listen
            ));
        }
        if self.http.metrics_interval.0 < Duration::from_millis(100) {
            p.push("http.metrics_interval must be at least 100ms".into());
        }
        if self.http.max_message_bytes < 1024 {
            p.push("http.max_message_bytes must be at least 1024".into());
        }
        if self.http.max_in_flight_per_connection == 0 {
            p.push("http.max_in_flight_per_connection must be at least 1".into());
        }
        if let Ok(addr) = &listen {
            p.extend(self.http.problems(!addr.ip().is_loopback()));
        }
        if self.storage.path.as_os_str().is_empty() {
            p.push("storage.path must not be empty".into());
        }
        if self.storage.max_batch_events == 0 {
            p.push("storage.max_batch_events must be at least 1".into());
        }
        if self.storage.queue_capacity == 0 {
            p.push("storage.queue_capacity must be at least 1".into());
        }
        if self.storage.cache_mb == 0 {
            p.push("storage.cache_mb must be at least 1".into());
        }
        if self.storage.dedup_window == 0 {
            p.push("storage.dedup_window must be at least 1".into());
        }
        if self.analyzer.checkpoint_interval.0.is_zero() {
            p.push("analyzer.checkpoint_interval must be longer than 0s".into());
        }
        let (user_idle, session_idle) = (self.analyzer.user_idle.0, self.analyzer.session_idle.0);
        if !user_idle.is_zero() && user_idle < session_idle {
            p.push(format!(
                "analyzer.user_idle ({user_idle:?}) must be 0s or at least analyzer.session_idle ({session_idle:?})"
            ));
        }
        let a = &self.analyzer;
        for (name, v) in [
            ("session_window", a.session_window),
            ("trajectory_window", a.trajectory_window),
            ("baseline_window", a.baseline_window),
        ] {
            if !(2..=100_000).contains(&v) {
                p.push(format!(
                    "analyzer.{name} must be between 2 and 100000, got {v}"
                ));
            }
        }
        if a.min_baseline < 2 || a.min_baseline > a.baseline_window {
            p.push(format!(
                "analyzer.min_baseline must be between 2 and analyzer.baseline_window ({}), got {}",
                a.baseline_window, a.min_baseline
            ));
        }
        if !(a.anomaly_z.is_finite() && a.anomaly_z > 0.0) {
            p.push("analyzer.anomaly_z must be a positive number".into());
        }
        if !(a.high_severity_z.is_finite() && a.high_severity_z >= a.anomaly_z) {
            p.push("analyzer.high_severity_z must be a number at least analyzer.anomaly_z".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!(
                "log.level `{}` is not a valid filter (e.g. info, debug, emotion_gateway=debug)",
                self.log.level
            ));
        }
        if let Err(e) = self.plugins.validate() {
            p.extend(e.problems.into_iter().map(|m| format!("plugins: {m}")));
        }
        p.extend(self.sync.problems());
        p.extend(self.risk_sweep.problems());
        p.extend(self.fusion.problems());
        for (i, port) in self.serial.iter().enumerate() {
            if port.path.as_os_str().is_empty() {
                p.push(format!("serial[{i}].path must not be empty"));
            }
            if let Some(u) = &port.user_id
                && let Err(m) = emotion_core::event::check_identifier(u)
            {
                p.push(format!("serial[{i}].user_id {m}"));
            }
        }
        p.extend(self.ble.problems());
        // Ports in use are found when the listeners bind (naming their key).
        p.extend(self.mqtt.static_problems());
        p.extend(self.auth.problems());
        if !self.auth.certificates.is_empty() && self.http.tls.client_ca.as_os_str().is_empty() {
            p.push(
                "auth.certificates needs http.tls.client_ca (client certificates are asked for only with it)"
                    .into(),
            );
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.token == DEV_TOKEN && listen.as_ref().is_ok_and(|a| !a.ip().is_loopback()) {
                p.push(format!(
                    "auth.tokens[{i}] ({}): the development token from the embedded default may only be used on a loopback \
                     address; http.listen is {}. Set your own tokens.",
                    t.name, self.http.listen
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // Validated in `load`; the fallback only serves hand-built configs.
        self.http
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn analyzer_config(&self) -> emotion_core::AnalyzerConfig {
        let a = &self.analyzer;
        emotion_core::AnalyzerConfig {
            session_window: a.session_window,
            trajectory_window: a.trajectory_window,
            baseline_window: a.baseline_window,
            anomaly: emotion_core::analyzer::AnomalyRule {
                min_baseline: a.min_baseline,
                z_threshold: a.anomaly_z,
                high_z: a.high_severity_z,
                ..Default::default()
            },
            fusion: self.fusion.config(),
            ..Default::default()
        }
    }
}

/// Report keys of `user` that the defaults do not have. Arrays of tables are
/// checked against the first element of the default array, when there is one.
/// A table that is empty in the defaults is a free-form map (for example
/// `plugins.per_plugin`, keyed by plugin name): its keys are not checked here
/// (serde still checks their contents).
fn unknown_keys(defaults: &Table, user: &Table, prefix: &str, problems: &mut Vec<String>) {
    for (k, v) in user {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (defaults.get(k), v) {
            (None, _) if OPTIONAL_KEYS.contains(&without_indices(&path).as_str()) => {}
            (None, _) => problems.push(format!("unknown key `{path}`")),
            (Some(Value::Table(d)), Value::Table(_)) if d.is_empty() => {}
            (Some(Value::Table(d)), Value::Table(u)) => unknown_keys(d, u, &path, problems),
            (Some(Value::Array(d)), Value::Array(u)) => {
                if let Some(Value::Table(first)) = d.first() {
                    for (i, item) in u.iter().enumerate() {
                        if let Value::Table(t) = item {
                            unknown_keys(first, t, &format!("{path}[{i}]"), problems);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// `auth.tokens[2].rate` → `auth.tokens.rate`: optional keys inside arrays
/// of tables are listed once for every element.
fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut skipping = false;
    for c in path.chars() {
        match c {
            '[' => skipping = true,
            ']' => skipping = false,
            c if !skipping => out.push(c),
            _ => {}
        }
    }
    out
}

/// Deep-merge `over` into `base`: tables merge key by key, anything else
/// (including arrays) is replaced.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn lookup<'a>(t: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match v {
        Value::Table(inner) => lookup(inner, rest),
        _ => None,
    }
}

fn set(t: &mut Table, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        t.insert(first.clone(), value);
    } else if let Some(Value::Table(inner)) = t.get_mut(first) {
        set(inner, rest, value);
    }
}

/// Read an environment value as a TOML value if it is one (`8080`, `true`,
/// `["read"]`, `[{name="a", token="…", scopes=["read"]}]`), else as a string.
fn parse_env_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::load(None, no_env()).expect("valid");
        assert_eq!(c.gateway_id, "edge-gateway");
        assert_eq!(c.http.metrics_interval, Dur(Duration::from_secs(5)));
        assert_eq!(c.storage.retention, Dur(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            c.auth.tokens[0].scopes,
            [Scope::Ingest, Scope::Read, Scope::Admin]
        );
    }

    #[test]
    fn a_production_config_with_tls_hashed_secrets_and_bindings_loads() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("site.toml");
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let fp = ["AB"; 32].join(":");
        // The MQTT section checks that its files exist.
        let (cert, key) = (
            dir.path().join("fullchain.pem"),
            dir.path().join("privkey.pem"),
        );
        std::fs::write(&cert, "").expect("write");
        std::fs::write(&key, "").expect("write");
        let (cert, key) = (cert.display(), key.display());
        std::fs::write(
            &path,
            format!(
                r#"
gateway_id = "site-7"
[http]
listen = "0.0.0.0:8443"
[http.tls]
cert = "/etc/gw/fullchain.pem"
key = "/etc/gw/privkey.pem"
client_ca = "/etc/gw/devices-ca.pem"
[mqtt]
listen_v4 = ""
listen_v5 = ""
[mqtt.tls]
listen_v5 = "0.0.0.0:8884"
cert = "{cert}"
key = "{key}"
[[mqtt.devices]]
device_id = "strap-7"
token_sha256 = "{hash}"
user_id = "7"
[sync]
pseudonymize = true
[[auth.tokens]]
name = "app-user-7"
token_sha256 = "{hash}"
scopes = ["ingest", "read"]
user_ids = ["7"]
rate = {{ per_second = 50.0, burst = 100.0 }}
[[auth.certificates]]
name = "camera"
fingerprint_sha256 = "{fp}"
scopes = ["ingest"]
user_ids = ["7", "8"]
"#
            ),
        )
        .expect("write");
        let c = Config::load(Some(&path), no_env()).expect("valid");
        assert!(c.http.tls.enabled() && c.sync.pseudonymize);
        assert_eq!(c.auth.certificates.len(), 1);
        #[cfg(feature = "mqtt")]
        assert_eq!(c.mqtt.devices[0].token_digest().map(|d| d[0]), Some(0x9f));

        // Every problem of the new sections, reported at once.
        std::fs::write(
            &path,
            r#"
[http]
listen = "0.0.0.0:8080"
[http.tls]
client_ca = "/etc/ca.pem"
require_client_cert = true
[http.limits]
max_connections_per_source = 0
ws_ping_interval = "30s"
ws_idle_timeout = "10s"
[[auth.tokens]]
name = "both"
token = "a-long-enough-token-0123"
token_sha256 = "00"
scopes = ["read"]
user_ids = ["bad id"]
[[auth.certificates]]
name = "c"
fingerprint_sha256 = "nope"
scopes = ["ingest"]
"#,
        )
        .expect("write");
        let e = Config::load(Some(&path), no_env())
            .expect_err("invalid")
            .to_string();
        for needle in [
            "http.tls.client_ca needs http.tls.cert",
            "not a loopback address and [http.tls] is not set",
            "max_connections_per_source",
            "ws_idle_timeout",
            "set token or token_sha256, not both",
            "user_ids entry `bad id`",
            "fingerprint_sha256 must be 64 hex digits",
        ] {
            assert!(e.contains(needle), "missing `{needle}` in:\n{e}");
        }
    }

    #[test]
    fn tokens_written_with_the_documented_keys_only_load() {
        let env = vec![(
            "EMOTION_GATEWAY__AUTH__TOKENS".to_owned(),
            r#"[{token = "a-long-enough-token-0123", scopes = ["read"]}]"#.to_owned(),
        )];
        let c = Config::load(None, env).expect("a token without a name is valid");
        assert_eq!(c.auth.tokens[0].display_name(0), "token-1");
    }

    #[test]
    fn file_merges_over_defaults_and_env_over_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "gateway_id = \"site-7\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        )
        .expect("write");
        let env = vec![
            (
                "EMOTION_GATEWAY__HTTP__LISTEN".to_owned(),
                "127.0.0.1:9999".to_owned(),
            ),
            (
                "EMOTION_GATEWAY__STORAGE__MAX_BATCH_EVENTS".to_owned(),
                "17".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let c = Config::load(Some(&path), env).expect("valid");
        assert_eq!(c.gateway_id, "site-7");
        assert_eq!(c.http.listen, "127.0.0.1:9999");
        assert_eq!(c.storage.max_batch_events, 17);
        assert_eq!(
            c.analyzer.baseline_window, 50,
            "untouched keys keep their defaults"
        );
    }

    #[test]
    fn plugin_batch_workers_reach_the_host_and_bad_counts_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[plugins.workers]\ntext = 2\n").expect("write");
        let c = Config::load(Some(&path), no_env()).expect("valid");
        let workers = c.plugins.workers_per_source();
        assert_eq!(workers[emotion_core::Source::Text.index()], 2);
        assert_eq!(workers[emotion_core::Source::Voice.index()], 1);

        std::fs::write(&path, "[plugins.workers]\ntext = 0\nspeech = 2\n").expect("write");
        let text = Config::load(Some(&path), no_env())
            .expect_err("invalid")
            .to_string();
        for needle in [
            "plugins: workers.text must be between 1 and 64, got 0",
            "plugins: workers.speech: unknown source",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn env_can_replace_the_token_list() {
        let env = vec![(
            "EMOTION_GATEWAY__AUTH__TOKENS".to_owned(),
            r#"[{name = "ci", token = "0123456789abcdef-ci", scopes = ["read"]}]"#.to_owned(),
        )];
        let c = Config::load(None, env).expect("valid");
        assert_eq!(c.auth.tokens.len(), 1);
        assert_eq!(c.auth.tokens[0].scopes, [Scope::Read]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "gatway_id = \"x\"\n[http]\nlisen = \"a\"\n[storage]\nretension = \"1d\"\n[[auth.tokens]]\nname=\"a\"\ntoken=\"b\"\nscopes=[]\nextra=1\n",
        )
        .expect("write");
        let env = vec![("EMOTION_GATEWAY__HTTP__NOPE".to_owned(), "1".to_owned())];
        let e = Config::load(Some(&path), env).expect_err("invalid");
        let text = e.to_string();
        for needle in [
            "gatway_id",
            "http.lisen",
            "storage.retension",
            "auth.tokens[0].extra",
            "HTTP__NOPE",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }

        std::fs::write(
            &path,
            "gateway_id = \"bad id!\"\n[http]\nlisten = \"nowhere\"\n[analyzer]\nmin_baseline = 500\n[[auth.tokens]]\nname=\"a\"\ntoken=\"short\"\nscopes=[]\n",
        )
        .expect("write");
        let e = Config::load(Some(&path), no_env()).expect_err("invalid");
        assert!(e.problems.len() >= 5, "{e}");
    }

    #[test]
    fn dev_token_is_refused_off_loopback_and_bad_values_are_named() {
        let env = vec![(
            "EMOTION_GATEWAY__HTTP__LISTEN".to_owned(),
            "0.0.0.0:8080".to_owned(),
        )];
        let e = Config::load(None, env).expect_err("dev token on 0.0.0.0");
        assert!(e.to_string().contains("loopback"), "{e}");

        let env = vec![(
            "EMOTION_GATEWAY__HTTP__METRICS_INTERVAL".to_owned(),
            "soon".to_owned(),
        )];
        let e = Config::load(None, env).expect_err("bad duration");
        assert!(e.to_string().contains("soon"), "{e}");
    }
}
