//! API tokens with scopes. Tokens are compared in constant time, through
//! fixed-length digests, so neither content nor length leaks through timing.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::TokenConfig;
pub use crate::config::auth::Scope;

/// Who a request is, once its token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send it as ?token=, an x-auth-token header or Authorization: Bearer")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("this token lacks the `{0:?}` scope")]
    Forbidden(Scope),
}

#[derive(Debug, Clone)]
struct Entry {
    digest: [u8; 32],
    name: String,
    scopes: Vec<Scope>,
}

/// The configured tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    pub fn new(cfg: &[TokenConfig]) -> Self {
        Tokens {
            entries: cfg
                .iter()
                .map(|t| Entry {
                    digest: Sha256::digest(t.token.as_bytes()).into(),
                    name: t.name.clone(),
                    scopes: t.scopes.clone(),
                })
                .collect(),
        }
    }

    /// Check `presented` for `needed`. Every entry is compared, so the time
    /// taken does not depend on which one matches. `admin` grants every scope.
    pub fn authorize(
        &self,
        presented: Option<&str>,
        needed: Scope,
    ) -> Result<Principal, AuthError> {
        let presented = presented
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        let e = found.ok_or(AuthError::Invalid)?;
        if e.scopes.contains(&needed) || e.scopes.contains(&Scope::Admin) {
            Ok(Principal {
                name: e.name.clone(),
            })
        } else {
            Err(AuthError::Forbidden(needed))
        }
    }
}

/// The token a request carries: `?token=`, then `x-auth-token`, then
/// `Authorization: Bearer`.
pub fn presented_token<'a>(
    query_token: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    query_token
        .or_else(|| headers.get("x-auth-token").and_then(|v| v.to_str().ok()))
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
        })
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[
            TokenConfig {
                name: "dev".into(),
                token: "reader-token-0123".into(),
                scopes: vec![Scope::Read],
            },
            TokenConfig {
                name: "boss".into(),
                token: "admin-token-01234".into(),
                scopes: vec![Scope::Admin],
            },
        ])
    }

    #[test]
    fn scopes_are_enforced_and_admin_grants_all() {
        let t = tokens();
        assert_eq!(
            t.authorize(Some("reader-token-0123"), Scope::Read)
                .map(|p| p.name),
            Ok("dev".into())
        );
        assert_eq!(
            t.authorize(Some("reader-token-0123"), Scope::Ingest),
            Err(AuthError::Forbidden(Scope::Ingest))
        );
        assert!(
            t.authorize(Some("admin-token-01234"), Scope::Ingest)
                .is_ok()
        );
        assert_eq!(
            t.authorize(Some("reader-token-012"), Scope::Read),
            Err(AuthError::Invalid)
        );
        assert_eq!(t.authorize(None, Scope::Read), Err(AuthError::Missing));
        assert_eq!(t.authorize(Some(""), Scope::Read), Err(AuthError::Missing));
    }

    #[test]
    fn token_sources_in_order() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(None, &h), None);
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer b-token".parse().expect("header"),
        );
        assert_eq!(presented_token(None, &h), Some("b-token"));
        h.insert("x-auth-token", "x-token".parse().expect("header"));
        assert_eq!(presented_token(None, &h), Some("x-token"));
        assert_eq!(presented_token(Some("q-token"), &h), Some("q-token"));
    }
}
