//! `[auth]`: API tokens and their scopes (checked by [`crate::auth`]).

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs instead of the token itself.
    pub name: String,
    pub token: String,
    pub scopes: Vec<Scope>,
}
