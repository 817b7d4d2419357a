//! Authentication: who is calling, from the `Authorization` header of an HTTP request and the
//! connection's client certificate, by the `[auth]` settings in force
//! ([`crate::config::auth`]): an API key, a JWT verified against the JWKS (fetched again, at a
//! bounded rate, when a token names an unknown key), or a client certificate. A JWT bound to
//! its sender (`cnf`) counts only with the client certificate (RFC 8705) or a DPoP proof of
//! the key (RFC 9449) it names.

use crate::config::auth::{AuthMode, AuthSettings, JwtSettings, KeySet, parse_jwks};
use crate::core::principal::{ANONYMOUS_PRINCIPAL, Access, Principal, RESERVED_PRINCIPALS};
use crate::gate::client_cert::ClientCertificate;
use crate::gate::dpop::{
    DPOP_ALGORITHMS, Proof, ProofCaps, ProofWindow, RequestTarget, Reuse, SeenProofs,
};
use crate::gate::verified_tokens::{Binding, VerifiedToken, VerifiedTokens};
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
    /// DPoP proofs already used (kept across reloads).
    seen_proofs: Arc<SeenProofs>,
}

/// What an HTTP request presents to be let in.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `DPoP` header; `Err` when there is more than one, or it is not text.
    pub dpop: Result<Option<&'a str>, ()>,
    /// The client certificate of the connection (mutual TLS).
    pub client_cert: Option<&'a ClientCertificate>,
    /// The request, for what a DPoP proof must name.
    pub target: RequestTarget<'a>,
}

impl<'a> Credentials<'a> {
    /// Only an `Authorization` header (tests, tools).
    pub fn header(authorization: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            authorization,
            dpop: Ok(None),
            client_cert: None,
            target: RequestTarget {
                method: "POST",
                scheme: "http",
                authority: "localhost",
                path: "/mcp",
            },
        }
    }
}

/// A request let in: its principal, and the DPoP proof it used (which a fleet also records,
/// so that no replica accepts it again).
#[derive(Debug)]
pub struct Admitted {
    pub principal: Principal,
    pub proof: Option<Proof>,
}

impl Authenticator {
    /// `seen_proofs`: those of the configuration this one replaces, so that a reload does not
    /// let a proof be used twice.
    pub fn new(settings: &AuthSettings, seen_proofs: Option<Arc<SeenProofs>>) -> Authenticator {
        let keys = settings
            .jwt
            .as_ref()
            .map_or_else(Arc::default, |j| j.keys.clone());
        Authenticator {
            settings: settings.clone(),
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(None),
            verified: VerifiedTokens::default(),
            seen_proofs: {
                let seen = seen_proofs.unwrap_or_default();
                if let Some(jwt) = &settings.jwt {
                    seen.widen(
                        settings
                            .dpop
                            .proof_lifetime
                            .saturating_add(jwt.leeway)
                            .as_secs(),
                    );
                }
                seen
            },
        }
    }

    /// The DPoP proofs used so far (for the configuration that replaces this one).
    pub fn seen_proofs(&self) -> Arc<SeenProofs> {
        self.seen_proofs.clone()
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
    /// A DPoP proof that is missing or does not hold (401 `invalid_dpop_proof`).
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(String),
    /// A client certificate, and no other credentials, that `[[auth.client_certs]]` does not
    /// map to a principal (401).
    #[error("the client certificate ({0}) names no principal in [[auth.client_certs]]")]
    UnknownCertificate(String),
    /// `dpop_max_proofs` proofs (or `dpop_max_proofs_per_principal` of this principal's) are
    /// within their lifetime: no new one can be remembered, so none is accepted (503, until
    /// some age out). Also: a fleet's store cannot be reached to record the proof.
    #[error("too many DPoP proofs within dpop_proof_lifetime ({0}); try again")]
    ProofsFull(&'static str),
}

impl AuthError {
    /// Every kind of refusal, as the metrics label it.
    pub const KINDS: [&'static str; 7] = [
        "missing",
        "invalid_token",
        "unknown_key",
        "insufficient_scope",
        "invalid_dpop_proof",
        "unknown_certificate",
        "proofs_full",
    ];

    /// The refusal's place in [`AuthError::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Self::Missing => 0,
            Self::InvalidToken(_) => 1,
            Self::UnknownKey => 2,
            Self::InsufficientScope => 3,
            Self::InvalidDpopProof(_) => 4,
            Self::UnknownCertificate(_) => 5,
            Self::ProofsFull(_) => 6,
        }
    }

    /// The refusal's kind, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }
}

/// How the `Authorization` header presents a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
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
    /// a token is taken from) or, without one, its client certificate.
    pub fn authenticate(&self, presented: &Credentials<'_>) -> Result<Admitted, AuthError> {
        if self.settings.mode == AuthMode::None {
            return Ok(Admitted {
                principal: Principal {
                    name: Arc::from(ANONYMOUS_PRINCIPAL),
                    access: Access::All,
                },
                proof: None,
            });
        }
        let Some((scheme, token)) = presented
            .authorization
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                let scheme = if scheme.eq_ignore_ascii_case("bearer") {
                    Scheme::Bearer
                } else if scheme.eq_ignore_ascii_case("dpop") {
                    Scheme::Dpop
                } else {
                    return None;
                };
                Some((scheme, rest.trim()))
            })
            .filter(|(_, t)| !t.is_empty())
        else {
            return match presented.client_cert {
                Some(cert) => self.certificate_principal(cert).map(|principal| Admitted {
                    principal,
                    proof: None,
                }),
                None => Err(AuthError::Missing),
            };
        };
        if self.settings.mode == AuthMode::ClientCert {
            return Err(AuthError::InvalidToken(
                "this server authenticates by client certificate only; it takes no tokens".into(),
            ));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.api_key(&digest) {
            if scheme == Scheme::Dpop {
                return Err(AuthError::InvalidToken(
                    "an API key is not DPoP-bound: send it as Authorization: Bearer".into(),
                ));
            }
            return Ok(Admitted {
                principal,
                proof: None,
            });
        }
        let jwt = self
            .settings
            .jwt
            .as_ref()
            .filter(|_| token.split('.').count() == 3)
            .ok_or_else(|| AuthError::InvalidToken("not a known API key or a JWT".into()))?;
        let verified = match self.verified.get(&digest) {
            Some(v) => v,
            None => {
                let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
                let (verified, exp) = self.check_jwt(jwt, &keys, token)?;
                let good_until = exp.saturating_add(jwt.leeway.as_secs());
                self.verified
                    .insert(digest, verified.clone(), good_until, || {
                        Arc::ptr_eq(&keys, &self.keys.read().unwrap_or_else(|p| p.into_inner()))
                    });
                verified
            }
        };
        let proof = self.check_binding(jwt, &verified.bound_to, scheme, token, presented)?;
        let principal = verified.principal;
        if let Access::Roles(r) = &principal.access
            && r.is_empty()
        {
            return Err(AuthError::InsufficientScope);
        }
        // Last: a proof is spent only by a request that is let in.
        if let Some(p) = &proof {
            let caps = ProofCaps {
                total: self.settings.dpop.max_proofs,
                per_principal: self.settings.dpop.max_proofs_per_principal,
            };
            self.seen_proofs
                .first_use(p, &principal.name, caps)
                .map_err(|e| match e {
                    Reuse::Replayed => {
                        AuthError::InvalidDpopProof("the proof was used before (jti)".into())
                    }
                    Reuse::Full => AuthError::ProofsFull("dpop_max_proofs"),
                    Reuse::PrincipalFull => AuthError::ProofsFull("dpop_max_proofs_per_principal"),
                })?;
        }
        Ok(Admitted { principal, proof })
    }

    /// Check that the sender holds what the token is bound to, and that the configuration's
    /// demands on binding are met; returns the DPoP proof checked, if any.
    fn check_binding(
        &self,
        jwt: &JwtSettings,
        bound_to: &Binding,
        scheme: Scheme,
        token: &str,
        presented: &Credentials<'_>,
    ) -> Result<Option<Proof>, AuthError> {
        let invalid = |m: &str| Err(AuthError::InvalidToken(m.to_owned()));
        if let Some(certificate) = &bound_to.certificate
            && presented.client_cert.map(|c| &c.sha256) != Some(certificate)
        {
            return invalid(
                "the token is bound to a client certificate (cnf.x5t#S256) this connection \
                 did not present",
            );
        }
        let proof = match (&bound_to.dpop_key, scheme) {
            (Some(key), Scheme::Dpop) => {
                let proof_header = presented.dpop.map_err(|()| {
                    AuthError::InvalidDpopProof("more than one DPoP header, or not text".into())
                })?;
                let proof_header = proof_header.ok_or_else(|| {
                    AuthError::InvalidDpopProof("no DPoP header with the request".into())
                })?;
                let window = ProofWindow {
                    lifetime: self.settings.dpop.proof_lifetime,
                    leeway: jwt.leeway,
                };
                let proof = crate::gate::dpop::verify(
                    proof_header,
                    presented.target,
                    token,
                    &DPOP_ALGORITHMS,
                    window,
                )
                .map_err(AuthError::InvalidDpopProof)?;
                if *proof.jkt != **key {
                    return invalid("the token is bound to another DPoP key (cnf.jkt)");
                }
                Some(proof)
            }
            (Some(_), Scheme::Bearer) => {
                return invalid(
                    "the token is DPoP-bound: send it as Authorization: DPoP, with a DPoP proof",
                );
            }
            (None, Scheme::Dpop) => return invalid("the token is not DPoP-bound (no cnf.jkt)"),
            (None, Scheme::Bearer) => None,
        };
        if self.settings.dpop.required && bound_to.dpop_key.is_none() {
            return invalid("DPoP is required: the token must be DPoP-bound (cnf.jkt)");
        }
        if self.settings.require_sender_constraint && !bound_to.is_bound() {
            return invalid(
                "only sender-constrained tokens are accepted: bound to a DPoP key or a client \
                 certificate (cnf)",
            );
        }
        Ok(proof)
    }

    /// The principal `[[auth.client_certs]]` maps a client certificate to: exactly one entry
    /// must name it (one that two entries name, by subject and by SPIFFE id, is ambiguous).
    fn certificate_principal(&self, cert: &ClientCertificate) -> Result<Principal, AuthError> {
        let mut named = self
            .settings
            .client_certs
            .iter()
            .filter(|c| cert.carries(&c.name));
        match (named.next(), named.next()) {
            (Some(c), None) => Ok(Principal {
                name: c.principal.clone(),
                access: Access::Roles(c.roles.clone()),
            }),
            (first, _) => {
                let shown = match &cert.spiffe_id {
                    Some(id) => format!("subject {}, SPIFFE id {id}", cert.subject),
                    None => format!("subject {}", cert.subject),
                };
                Err(AuthError::UnknownCertificate(match first {
                    None => shown,
                    Some(_) => format!("{shown}: named by more than one entry"),
                }))
            }
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

    /// Verify a JWT in full; returns its principal, what it is bound to, and `exp`.
    fn check_jwt(
        &self,
        jwt: &JwtSettings,
        keys: &KeySet,
        token: &str,
    ) -> Result<(VerifiedToken, u64), AuthError> {
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
            || self
                .settings
                .client_certs
                .iter()
                .any(|c| *c.principal == *sub)
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
        let bound_to = binding(&claims["cnf"])?;
        Ok((
            VerifiedToken {
                principal,
                bound_to,
            },
            exp,
        ))
    }
}

/// A token's `cnf` claim: what it is bound to. A confirmation method Airlock cannot check
/// makes the token invalid (it would otherwise be taken as a bearer token).
fn binding(cnf: &serde_json::Value) -> Result<Binding, AuthError> {
    use base64::Engine as _;
    let invalid = |m: &str| AuthError::InvalidToken(m.to_owned());
    let cnf = match cnf {
        serde_json::Value::Null => return Ok(Binding::default()),
        serde_json::Value::Object(o) => o,
        _ => return Err(invalid("the token's cnf claim is not an object")),
    };
    let mut bound = Binding::default();
    for (method, value) in cnf {
        match method.as_str() {
            "x5t#S256" => {
                let digest = value
                    .as_str()
                    .and_then(|v| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(v)
                            .ok()
                    })
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| invalid("the token's cnf.x5t#S256 is not a base64url sha256"))?;
                bound.certificate = Some(digest);
            }
            "jkt" => {
                let jkt = value
                    .as_str()
                    .filter(|v| v.len() == 43)
                    .ok_or_else(|| invalid("the token's cnf.jkt is not a base64url sha256"))?;
                bound.dpop_key = Some(Arc::from(jkt));
            }
            other => {
                return Err(invalid(&format!(
                    "the token is bound by a confirmation method Airlock cannot check (cnf.{})",
                    other.chars().take(32).collect::<String>()
                )));
            }
        }
    }
    Ok(bound)
}
