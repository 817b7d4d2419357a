//! Authentication: who is calling, from the `Authorization` header of an HTTP request, by
//! the `[auth]` settings in force ([`crate::config::auth`]): an API key, or a JWT verified
//! against the JWKS (fetched again, at a bounded rate, when a token names an unknown key).

use crate::config::auth::{AuthMode, AuthSettings, JwtSettings, KeySet, parse_jwks};
use crate::core::principal::{ANONYMOUS_PRINCIPAL, Access, Principal, RESERVED_PRINCIPALS};
use crate::gate::verified_tokens::VerifiedTokens;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Checks credentials against one configuration's `[auth]`: its settings, the keys in force
/// (replaced when the JWKS is fetched again) and the tokens already verified.
pub struct Authenticator {
    settings: AuthSettings,
    keys: RwLock<Arc<KeySet>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Tokens already verified, so a client's repeated token is not verified again.
    verified: VerifiedTokens,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Authenticator {
        let keys = settings
            .jwt
            .as_ref()
            .map_or_else(Arc::default, |j| j.keys.clone());
        Authenticator {
            settings: settings.clone(),
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(None),
            verified: VerifiedTokens::default(),
        }
    }

    /// The settings this authenticator checks by.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }
}

/// GET the JWK set at `url` (10 s, 1 MiB at most).
async fn fetch_jwks(url: &str) -> Result<KeySet, String> {
    let body = crate::gate::host_http::send(crate::gate::host_http::HostRequest {
        url,
        json: None,
        timeout: Duration::from_secs(10),
        max_answer_bytes: 1 << 20,
    })
    .await?;
    parse_jwks(std::str::from_utf8(&body).map_err(|e| e.to_string())?)
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials (401 without an error code).
    #[error("no bearer token in the Authorization header")]
    Missing,
    /// Credentials that do not hold (401 `invalid_token`).
    #[error("{0}")]
    InvalidToken(String),
    /// A token naming a key the JWKS does not hold (401 `invalid_token`; with a JWKS URL the
    /// keys are fetched again, at a bounded rate, and the token checked once more).
    #[error("the token's key (kid) is unknown")]
    UnknownKey,
    /// A valid token that carries none of the roles any tool is granted to (403).
    #[error("the token carries no role that grants any tool")]
    InsufficientScope,
}

impl Authenticator {
    /// Fetch the keys from `jwks_url` (no-op for a file), at most once per
    /// `jwks_refresh_min_interval` unless `force`. Returns whether new keys were installed.
    pub async fn refresh_keys(&self, force: bool) -> Result<bool, String> {
        let Some(jwt) = &self.settings.jwt else {
            return Ok(false);
        };
        let Some(url) = &jwt.jwks_url else {
            return Ok(false);
        };
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < jwt.refresh_min_interval) {
                return Ok(false);
            }
            *last = Some(std::time::Instant::now());
        }
        let keys = fetch_jwks(url).await.map_err(|e| format!("{url}: {e}"))?;
        tracing::info!(target: "airlock::auth", url, keys = keys.0.len(), "JWKS fetched");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        // A remembered token may have been signed by a key that is gone now.
        self.verified.clear();
        Ok(true)
    }

    /// Identify the caller of an HTTP request from its `Authorization` header (the only place
    /// a token is taken from).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if self.settings.mode == AuthMode::None {
            return Ok(Principal {
                name: Arc::from(ANONYMOUS_PRINCIPAL),
                access: Access::All,
            });
        }
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(p) = self.api_key(&digest) {
            return Ok(p);
        }
        let jwt = self
            .settings
            .jwt
            .as_ref()
            .filter(|_| token.split('.').count() == 3)
            .ok_or_else(|| AuthError::InvalidToken("not a known API key or a JWT".into()))?;
        let principal = match self.verified.get(&digest) {
            Some(p) => p,
            None => {
                let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
                let (principal, exp) = self.check_jwt(jwt, &keys, token)?;
                let good_until = exp.saturating_add(jwt.leeway.as_secs());
                self.verified
                    .insert(digest, principal.clone(), good_until, || {
                        Arc::ptr_eq(&keys, &self.keys.read().unwrap_or_else(|p| p.into_inner()))
                    });
                principal
            }
        };
        match &principal.access {
            Access::Roles(r) if r.is_empty() => Err(AuthError::InsufficientScope),
            _ => Ok(principal),
        }
    }

    /// The principal whose key hashes to the token's digest, compared in constant time.
    fn api_key(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut found = None;
        // Every key is compared, so the time taken does not tell which one matched.
        for k in &self.settings.api_keys {
            if bool::from(k.digest.ct_eq(digest)) {
                found = Some(k);
            }
        }
        found.map(|k| Principal {
            name: k.principal.clone(),
            access: Access::Roles(k.roles.clone()),
        })
    }

    /// Verify a JWT in full; returns its principal and `exp`.
    fn check_jwt(
        &self,
        jwt: &JwtSettings,
        keys: &KeySet,
        token: &str,
    ) -> Result<(Principal, u64), AuthError> {
        let invalid = |m: &str| AuthError::InvalidToken(m.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("malformed token or unsupported algorithm"))?;
        let (_, v) = jwt
            .validations
            .iter()
            .find(|(a, _)| *a == header.alg)
            .ok_or_else(|| invalid(&format!("algorithm {:?} is not accepted", header.alg)))?;
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token names no key (kid)"))?;
        let key = keys.0.get(&kid).ok_or(AuthError::UnknownKey)?;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet",
                K::InvalidIssuer => "wrong issuer",
                K::InvalidAudience => "the token is not for this resource (audience)",
                K::InvalidSignature => "bad signature",
                K::InvalidAlgorithm => "the key does not fit the token's algorithm",
                K::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "invalid token",
            })
        })?;
        let claims = data.claims;
        let iat = claims["iat"]
            .as_u64()
            .ok_or_else(|| invalid("a required claim is missing (iat)"))?;
        let exp = claims["exp"].as_u64().unwrap_or(0);
        if exp.saturating_sub(iat) > jwt.max_token_lifetime.as_secs() {
            return Err(invalid(&format!(
                "the token lives longer than the {} s allowed",
                jwt.max_token_lifetime.as_secs()
            )));
        }
        for c in &jwt.required_claims {
            if claims.get(c).is_none_or(serde_json::Value::is_null) {
                return Err(invalid(&format!("a required claim is missing ({c})")));
            }
        }
        let sub = claims["sub"]
            .as_str()
            .ok_or_else(|| invalid("`sub` is not a string"))?;
        // A subject may not take the name of a principal from another source (an API key, the
        // local principal, Airlock's own names): it would share their kills, rate limits,
        // approvals and audit trail.
        if RESERVED_PRINCIPALS.contains(&sub)
            || *self.settings.local_principal.name == *sub
            || self.settings.api_keys.iter().any(|k| *k.principal == *sub)
        {
            return Err(invalid(
                "the token's subject (sub) is the name of a principal that is not a JWT subject",
            ));
        }
        let values: Vec<&str> = match &claims[jwt.roles_claim.as_str()] {
            serde_json::Value::String(s) => s.split_whitespace().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let roles = self
            .settings
            .roles
            .iter()
            .filter(|(_, carried_by)| carried_by.iter().any(|c| values.contains(&c.as_str())))
            .map(|(r, _)| r.clone())
            .collect::<Vec<_>>()
            .into();
        let principal = Principal {
            name: Arc::from(sub),
            access: Access::Roles(roles),
        };
        Ok((principal, exp))
    }
}
