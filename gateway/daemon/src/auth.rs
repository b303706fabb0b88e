//! API tokens with scopes. Tokens are compared in constant time, through
//! fixed-length digests, so neither content nor length leaks through timing.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::auth::Scope;
use crate::config::auth::{AuthConfig, RateConfig};
use crate::edge::ConnInfo;
use crate::rate::TokenBucket;

/// Who a request is, once its token or client certificate checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    /// The users it is bound to; `None`: any user (a trusted back-end).
    pub users: Option<Arc<[String]>>,
    /// Shared by every connection of this principal.
    limiter: Option<Arc<TokenBucket>>,
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.users == other.users
    }
}

impl Principal {
    /// Whether this principal may act for `user_id`.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.users
            .as_ref()
            .is_none_or(|u| u.iter().any(|x| x == user_id))
    }

    /// The error message when it may not.
    pub fn bound_message(&self, user_id: &str) -> String {
        format!(
            "`{}` is bound to other users and may not act for user {user_id}",
            self.name
        )
    }

    /// Take `n` from this principal's rate limit; `Err(retry_after)` when
    /// over it.
    pub fn take(&self, n: f64) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l.take(n),
        }
    }
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
    /// SHA-256 of the token, or the certificate's fingerprint.
    digest: [u8; 32],
    scopes: Vec<Scope>,
    principal: Principal,
}

impl Entry {
    fn new(
        digest: [u8; 32],
        name: &str,
        scopes: &[Scope],
        users: &[String],
        rate: Option<RateConfig>,
        bound_rate: RateConfig,
    ) -> Self {
        let users: Option<Arc<[String]>> = (!users.is_empty()).then(|| users.into());
        let rate = rate.or((users.is_some()).then_some(bound_rate));
        Entry {
            digest,
            scopes: scopes.to_vec(),
            principal: Principal {
                name: name.to_owned(),
                users,
                limiter: rate
                    .and_then(|r| TokenBucket::new(r.per_second, r.burst))
                    .map(Arc::new),
            },
        }
    }
}

/// The configured tokens and client certificates.
#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Vec<Entry>,
    certificates: Vec<Entry>,
}

impl Tokens {
    pub fn new(cfg: &AuthConfig) -> Self {
        let tokens = cfg
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // Validated: a clear token, or 64 hex digits of its digest.
                let digest = if t.token.is_empty() {
                    emotion_tls::parse_fingerprint(&t.token_sha256).unwrap_or([0; 32])
                } else {
                    Sha256::digest(t.token.as_bytes()).into()
                };
                Entry::new(
                    digest,
                    &t.display_name(i),
                    &t.scopes,
                    &t.user_ids,
                    t.rate,
                    cfg.bound_rate,
                )
            })
            .collect();
        let certificates = cfg
            .certificates
            .iter()
            .filter_map(|c| {
                let fp = emotion_tls::parse_fingerprint(&c.fingerprint_sha256)?;
                Some(Entry::new(
                    fp,
                    &c.name,
                    &c.scopes,
                    &c.user_ids,
                    c.rate,
                    cfg.bound_rate,
                ))
            })
            .collect();
        Tokens {
            tokens,
            certificates,
        }
    }

    /// Check `presented` for `needed`. Every entry is compared, so the time
    /// taken does not depend on which one matches. `admin` grants every scope.
    pub fn authorize(
        &self,
        presented: Option<&str>,
        needed: Scope,
    ) -> Result<Principal, AuthError> {
        self.authorize_conn(presented, None, needed)
    }

    /// [`Tokens::authorize`], falling back to the connection's client
    /// certificate when no token is presented.
    pub fn authorize_conn(
        &self,
        presented: Option<&str>,
        conn: Option<&ConnInfo>,
        needed: Scope,
    ) -> Result<Principal, AuthError> {
        let presented = presented.filter(|t| !t.is_empty());
        let (entries, digest) = match (presented, conn.and_then(|c| c.client_cert)) {
            (Some(t), _) => (&self.tokens, Sha256::digest(t.as_bytes()).into()),
            (None, Some(fp)) => (&self.certificates, fp),
            (None, None) => return Err(AuthError::Missing),
        };
        let e = find(entries, &digest).ok_or(AuthError::Invalid)?;
        if e.scopes.contains(&needed) || e.scopes.contains(&Scope::Admin) {
            Ok(e.principal.clone())
        } else {
            Err(AuthError::Forbidden(needed))
        }
    }
}

/// The entry whose digest is `digest`, comparing every one in constant time.
fn find<'a>(entries: &'a [Entry], digest: &[u8; 32]) -> Option<&'a Entry> {
    let mut found = None;
    for e in entries {
        if bool::from(e.digest.ct_eq(digest)) {
            found = Some(e);
        }
    }
    found
}

/// Count a refusal for a rate limit, by transport, in `/metrics`.
pub fn count_rate_limited(transport: &'static str) {
    metrics::counter!("emotion_gateway_rate_limited_total", "transport" => transport).increment(1);
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
    use crate::config::TokenConfig;

    fn token(name: &str, token: &str, scopes: &[Scope], users: &[&str]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            token: token.into(),
            token_sha256: String::new(),
            scopes: scopes.to_vec(),
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            rate: None,
        }
    }

    fn config(tokens: Vec<TokenConfig>) -> AuthConfig {
        AuthConfig {
            tokens,
            certificates: vec![],
            bound_rate: RateConfig {
                per_second: 10.0,
                burst: 3.0,
            },
        }
    }

    fn tokens() -> Tokens {
        Tokens::new(&config(vec![
            token("dev", "reader-token-0123", &[Scope::Read], &[]),
            token("boss", "admin-token-01234", &[Scope::Admin], &[]),
        ]))
    }

    #[test]
    fn a_token_without_a_name_is_named_by_its_place() {
        let t = Tokens::new(&config(vec![
            token("dev", "reader-token-0123", &[Scope::Read], &[]),
            token("", "unnamed-token-0123", &[Scope::Read], &[]),
        ]));
        let p = t
            .authorize(Some("unnamed-token-0123"), Scope::Read)
            .expect("valid");
        assert_eq!(p.name, "token-2");
    }

    #[test]
    fn hashed_tokens_and_bound_users() {
        let hashed = TokenConfig {
            token: String::new(),
            token_sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08".into(),
            ..token("hashed", "", &[Scope::Ingest], &["42"])
        };
        let t = Tokens::new(&config(vec![hashed]));
        // sha256("test") is the digest above.
        let p = t
            .authorize(Some("test"), Scope::Ingest)
            .expect("hashed token");
        assert!(p.may_act_for("42"));
        assert!(!p.may_act_for("43"));
        // Bound principals get the bound rate: a burst of 3, then refused
        // with the time to wait.
        for _ in 0..3 {
            assert!(p.take(1.0).is_ok());
        }
        let wait = p.take(1.0).expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // The bucket is the principal's, shared by its connections.
        let again = t.authorize(Some("test"), Scope::Ingest).expect("again");
        assert!(again.take(1.0).is_err());
        // Unbound tokens are unlimited unless configured.
        let u = tokens()
            .authorize(Some("admin-token-01234"), Scope::Read)
            .expect("admin");
        assert!(u.may_act_for("anyone"));
        assert!((0..1000).all(|_| u.take(1.0).is_ok()));
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
