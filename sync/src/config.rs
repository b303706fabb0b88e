//! The `[sync]` section of the gateway configuration.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryConfig;

/// Central sync settings. Every key has a default, so a configuration file
/// holds only what it changes; unknown keys are errors.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Off by default: the gateway works alone until told where to sync.
    pub enabled: bool,
    /// `postgres://user:password@host:port/dbname` or `host=… user=… dbname=…`.
    pub database_url: String,
    /// Most events per batch (one transaction).
    pub batch_max_events: usize,
    /// Ship a partial batch once its oldest event has waited this long.
    #[serde(with = "duration")]
    pub batch_max_age: Duration,
    /// Summary windows in days (each 1..=30).
    pub summary_windows: Vec<u32>,
    /// How often credit/risk summaries are computed and synced.
    #[serde(with = "duration")]
    pub summary_interval: Duration,
    /// Give up a connection attempt after this long.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Give up a statement or transaction after this long (the connection is
    /// dropped and the request retried; a half-done transaction rolls back).
    #[serde(with = "duration")]
    pub operation_timeout: Duration,
    pub retry: RetryConfig,
    /// Replace user and session ids with keyed pseudonyms (HMAC-SHA-256
    /// under a key that stays on the gateway) in everything synced.
    pub pseudonymize: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: false,
            database_url: "postgres://postgres@127.0.0.1:5432/emotion".to_owned(),
            batch_max_events: 5_000,
            batch_max_age: Duration::from_secs(1),
            summary_windows: emotion_core::credit::DEFAULT_WINDOWS.to_vec(),
            summary_interval: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(60),
            retry: RetryConfig::default(),
            pseudonymize: false,
        }
    }
}

impl fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncConfig")
            .field("enabled", &self.enabled)
            .field("database_url", &redact_url(&self.database_url))
            .field("batch_max_events", &self.batch_max_events)
            .field("batch_max_age", &self.batch_max_age)
            .field("summary_windows", &self.summary_windows)
            .field("summary_interval", &self.summary_interval)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Largest batch: a batch is one transaction and one COPY; beyond this the
/// staging table outgrows memory for no gain in throughput.
pub const MAX_BATCH_EVENTS: usize = 100_000;

impl SyncConfig {
    /// Every problem with the settings, in words (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.enabled && self.database_url.trim().is_empty() {
            p.push("sync.database_url is required when sync.enabled is true".to_owned());
        }
        if !self.database_url.trim().is_empty()
            && self.database_url.parse::<tokio_postgres::Config>().is_err()
        {
            p.push(format!(
                "sync.database_url `{}` is not a PostgreSQL connection string",
                redact_url(&self.database_url)
            ));
        }
        if !(1..=MAX_BATCH_EVENTS).contains(&self.batch_max_events) {
            p.push(format!(
                "sync.batch_max_events must be in 1..={MAX_BATCH_EVENTS}, got {}",
                self.batch_max_events
            ));
        }
        if self.batch_max_age.is_zero() {
            p.push("sync.batch_max_age must be greater than 0".to_owned());
        }
        if self.summary_windows.is_empty() {
            p.push("sync.summary_windows must list at least one window".to_owned());
        }
        let max = emotion_core::credit::HISTORY_DAYS;
        for w in &self.summary_windows {
            if !(1..=max).contains(w) {
                p.push(format!(
                    "sync.summary_windows: {w} is not in 1..={max} days"
                ));
            }
        }
        if self.summary_interval < Duration::from_secs(1) {
            p.push("sync.summary_interval must be at least 1s".to_owned());
        }
        if self.connect_timeout.is_zero() || self.operation_timeout.is_zero() {
            p.push(
                "sync.connect_timeout and sync.operation_timeout must be greater than 0".to_owned(),
            );
        }
        p.extend(
            self.retry
                .problems()
                .into_iter()
                .map(|s| format!("sync.{s}")),
        );
        p
    }
}

/// The connection string with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    // URL form: scheme://user:password@host…
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (userinfo, host) = rest.split_at(at);
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:***{host}", &userinfo[..colon]);
            }
        }
        return url.to_owned();
    }
    // key=value form.
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The duration syntax of every section (its own module, shared with
/// [`crate::retry`]).
pub use crate::duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let c = SyncConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.summary_windows, [7, 30]);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.retry.max_attempts, None, "retries forever by default");
    }

    #[test]
    fn durations_round_trip() {
        for (s, d) in [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("2m", Duration::from_secs(120)),
            ("3h", Duration::from_secs(3 * 3600)),
            ("30d", Duration::from_secs(30 * 86_400)),
        ] {
            assert_eq!(duration::parse(s), Ok(d));
            assert_eq!(duration::format(d), s);
        }
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("").is_err());
    }

    #[test]
    fn passwords_never_reach_debug_output() {
        let c = SyncConfig {
            database_url: "postgres://app:s3cret@db:5432/emotion".into(),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/emotion"));
        assert_eq!(
            redact_url("host=db user=app password=s3cret"),
            "host=db user=app password=***"
        );
    }

    #[test]
    fn toml_sections_may_be_partial_and_unknown_keys_are_errors() {
        let c: SyncConfig =
            toml::from_str("enabled = true\nbatch_max_age = \"250ms\"\n[retry]\nmax = \"1m\"\n")
                .expect("partial section");
        assert!(c.enabled);
        assert_eq!(c.batch_max_age, Duration::from_millis(250));
        assert_eq!(c.retry.max, Duration::from_secs(60));
        assert_eq!(c.retry.initial, RetryConfig::default().initial);
        assert_eq!(c.summary_windows, [7, 30]);
        let err = toml::from_str::<SyncConfig>("enabeld = true").expect_err("typo");
        assert!(err.to_string().contains("enabeld"), "{err}");
        assert!(toml::from_str::<SyncConfig>("[retry]\nfoo = 1").is_err());
        assert!(toml::from_str::<SyncConfig>("batch_max_age = \"soon\"").is_err());
        // And back: what is written reads the same.
        let text = toml::to_string(&c).expect("serialize");
        assert_eq!(toml::from_str::<SyncConfig>(&text).expect("read back"), c);
    }

    #[test]
    fn problems_are_all_reported() {
        let c = SyncConfig {
            enabled: true,
            database_url: String::new(),
            batch_max_events: 0,
            summary_windows: vec![0, 31],
            ..Default::default()
        };
        let p = c.problems();
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
