//! `[auth]`: API tokens and client certificates, their scopes, the users
//! they are bound to and their rate limits (checked by [`crate::auth`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events and readings.
    Ingest,
    /// Read analysis, events, metrics; open the dashboard.
    Read,
    /// Everything, including administrative actions.
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// Client certificates (mutual TLS on the HTTP listener) that
    /// authenticate a connection without a token.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    /// The rate limit of principals bound to users (devices, wearers'
    /// apps), unless their entry sets its own; unbound ones are unlimited
    /// unless their entry sets one.
    pub bound_rate: RateConfig,
}

/// A token bucket: `per_second` on average, `burst` at once. `per_second =
/// 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs and the audit trail instead of the token itself;
    /// `token-<n>` (its place in the list, from 1) when not given.
    #[serde(default)]
    pub name: String,
    /// The token in clear, or (`token_sha256`) its SHA-256 in hex, so the
    /// configuration file does not hold the secret.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_sha256: String,
    pub scopes: Vec<Scope>,
    /// The users this token may write (and read) for; empty: any user (a
    /// trusted back-end).
    #[serde(default)]
    pub user_ids: Vec<String>,
    #[serde(default)]
    pub rate: Option<RateConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub name: String,
    /// SHA-256 of the certificate (DER), hex with or without colons, as
    /// `openssl x509 -noout -fingerprint -sha256` prints it.
    pub fingerprint_sha256: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub user_ids: Vec<String>,
    #[serde(default)]
    pub rate: Option<RateConfig>,
}

impl TokenConfig {
    /// Its name, or `token-<i+1>` for the `i`-th token without one.
    pub fn display_name(&self, i: usize) -> String {
        if self.name.is_empty() {
            format!("token-{}", i + 1)
        } else {
            self.name.clone()
        }
    }
}

impl RateConfig {
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.per_second.is_finite() && self.per_second >= 0.0) {
            p.push(format!("{at}.per_second must be 0 (unlimited) or more"));
        }
        if self.per_second > 0.0 && !(self.burst.is_finite() && self.burst >= 1.0) {
            p.push(format!("{at}.burst must be at least 1"));
        }
        p
    }
}

impl AuthConfig {
    /// Every problem of `[auth]` (the development token's loopback rule is
    /// checked with `[http]`).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.tokens.is_empty() && self.certificates.is_empty() {
            p.push(
                "auth.tokens is empty: no client could connect; add at least one [[auth.tokens]]"
                    .into(),
            );
        }
        p.extend(self.bound_rate.problems("auth.bound_rate"));
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("auth.tokens[{i}] ({})", t.display_name(i));
            match (t.token.is_empty(), t.token_sha256.is_empty()) {
                (false, false) => p.push(format!("{at}: set token or token_sha256, not both")),
                (true, true) => p.push(format!("{at}: token (or token_sha256) is required")),
                (false, true) if t.token.len() < 16 => {
                    p.push(format!("{at}: token must be at least 16 characters"))
                }
                (true, false) if emotion_tls::parse_fingerprint(&t.token_sha256).is_none() => p
                    .push(format!(
                        "{at}: token_sha256 must be 64 hex digits (printf %s TOKEN | sha256sum)"
                    )),
                _ => {}
            }
            if t.scopes.is_empty() {
                p.push(format!("{at}: scopes must not be empty"));
            }
            let key = if t.token.is_empty() {
                t.token_sha256.to_ascii_lowercase()
            } else {
                t.token.clone()
            };
            if !seen.insert(key) {
                p.push(format!("{at}: the same token is listed twice"));
            }
            p.extend(user_problems(&at, &t.user_ids));
            if let Some(r) = &t.rate {
                p.extend(r.problems(&format!("{at}.rate")));
            }
        }
        for (i, c) in self.certificates.iter().enumerate() {
            let at = format!("auth.certificates[{i}] ({})", c.name);
            if emotion_tls::parse_fingerprint(&c.fingerprint_sha256).is_none() {
                p.push(format!(
                    "{at}: fingerprint_sha256 must be 64 hex digits (openssl x509 -noout -fingerprint -sha256 -in CERT)"
                ));
            }
            if c.scopes.is_empty() {
                p.push(format!("{at}: scopes must not be empty"));
            }
            p.extend(user_problems(&at, &c.user_ids));
            if let Some(r) = &c.rate {
                p.extend(r.problems(&format!("{at}.rate")));
            }
        }
        p
    }
}

fn user_problems(at: &str, users: &[String]) -> Vec<String> {
    users
        .iter()
        .filter_map(|u| {
            emotion_core::event::check_identifier(u)
                .err()
                .map(|m| format!("{at}: user_ids entry `{u}` {m}"))
        })
        .collect()
}
