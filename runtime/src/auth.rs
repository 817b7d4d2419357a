//! Who is calling: `[auth]` and `[roles]`. Over HTTP airlock is an OAuth 2.1 resource server
//! (bearer JWTs checked against a JWKS) and accepts hashed API keys for service principals;
//! stdio sessions are the configured local principal. A principal's roles decide which tools it
//! may list and call.

use crate::units::Span;
use crate::verified_tokens::VerifiedTokens;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// `[auth]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    mode: Option<AuthMode>,
    /// This server's resource URI (RFC 8707): the audience tokens must name.
    resource: Option<String>,
    issuer: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    /// Least time between two fetches of `jwks_url` (a token with an unknown `kid` triggers one).
    jwks_refresh_min_interval: Option<Span>,
    #[serde(default)]
    algorithms: Vec<String>,
    leeway: Option<Span>,
    max_token_lifetime: Option<Span>,
    roles_claim: Option<String>,
    #[serde(default)]
    required_claims: Vec<String>,
    #[serde(default)]
    authorization_servers: Vec<String>,
    local_principal: Option<String>,
    #[serde(default)]
    api_keys: Vec<ApiKeySection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeySection {
    principal: String,
    /// sha256 of the key, hex; the key itself is never in the configuration.
    sha256: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// How HTTP callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Nobody is asked: HTTP only on loopback, every caller the anonymous principal.
    None,
    /// Bearer JWTs (and API keys, when configured).
    Jwt,
    /// API keys only.
    ApiKey,
}

/// What a principal may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every tool: the local principal, and everyone when `mode = "none"`.
    All,
    /// The tools of these roles (shared: a principal is cloned into every request).
    Roles(Arc<[String]>),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub access: Access,
}

impl Principal {
    /// May this principal use a component whose tools are granted to `roles`?
    pub fn may_use(&self, roles: &[String]) -> bool {
        match &self.access {
            Access::All => true,
            Access::Roles(mine) => mine.iter().any(|r| roles.contains(r)),
        }
    }
}

#[derive(Debug, Clone)]
struct ApiKey {
    principal: Arc<str>,
    digest: [u8; 32],
    roles: Arc<[String]>,
}

/// JWT settings, resolved.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub resource: String,
    pub issuer: String,
    keys: Arc<std::sync::RwLock<Arc<KeySet>>>,
    /// One validation per accepted algorithm (the allow-list), built at load.
    validations: Vec<(Algorithm, Validation)>,
    /// Where keys come from when not from a file.
    jwks_url: Option<String>,
    /// The file keys come from, when not from a URL.
    pub jwks_file: Option<PathBuf>,
    refresh_min_interval: Duration,
    last_fetch: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    max_token_lifetime: Duration,
    leeway: Duration,
    /// Tokens already verified, so a client's repeated token is not verified again.
    verified: Arc<VerifiedTokens>,
    pub roles_claim: String,
    required_claims: Vec<String>,
    pub authorization_servers: Vec<String>,
}

impl JwtSettings {
    /// The JWKS URL's host port, when keys come from a URL.
    pub fn jwks_port(&self) -> Option<u16> {
        let url: http::Uri = self.jwks_url.as_ref()?.parse().ok()?;
        url.port_u16().or(match url.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        })
    }

    /// Where this resource's RFC 9728 metadata is served: the resource URI's origin, then
    /// `/.well-known/oauth-protected-resource`, then the resource's path.
    pub fn metadata_url(&self) -> String {
        let (scheme, rest) = self
            .resource
            .split_once("://")
            .unwrap_or(("https", &self.resource));
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            format!("{scheme}://{authority}/.well-known/oauth-protected-resource")
        } else {
            format!("{scheme}://{authority}/.well-known/oauth-protected-resource/{path}")
        }
    }
}

/// `[auth]` and `[roles]`, resolved.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub jwt: Option<JwtSettings>,
    api_keys: Vec<ApiKey>,
    /// Role → the claim values that carry it.
    roles: BTreeMap<String, Vec<String>>,
    /// The principal of stdio sessions.
    pub local_principal: Principal,
}

const ALLOWED_ALGORITHMS: [(&str, Algorithm); 3] = [
    ("RS256", Algorithm::RS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
];

/// Resolve `[auth]` and `[roles]`. Errors are (key, problem).
pub(crate) fn resolve(
    section: &AuthSection,
    roles: &BTreeMap<String, Vec<String>>,
    base: &Path,
) -> Result<AuthSettings, (String, String)> {
    let key = |k: &str| format!("auth › {k}");
    for (role, values) in roles {
        if values.is_empty() {
            return Err((
                format!("roles › {role}"),
                "lists no claim values, so no token can carry it".into(),
            ));
        }
    }
    let known_roles = |list: &[String], at: String| -> Result<Vec<String>, (String, String)> {
        for r in list {
            if !roles.contains_key(r) {
                return Err((at, format!("role \"{r}\" is not declared in [roles]")));
            }
        }
        Ok(list.to_vec())
    };
    let mode = section.mode.unwrap_or(AuthMode::None);
    let mut api_keys = Vec::with_capacity(section.api_keys.len());
    for (i, k) in section.api_keys.iter().enumerate() {
        let at = format!("auth › api_keys[{i}]");
        if mode == AuthMode::None {
            return Err((at, "API keys need mode = \"jwt\" or \"api-key\"".into()));
        }
        let digest: [u8; 32] = hex::decode(&k.sha256)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                (
                    format!("{at} › sha256"),
                    "must be 64 hex digits: the sha256 of the key (`printf %s KEY | sha256sum`)"
                        .to_owned(),
                )
            })?;
        if api_keys.iter().any(|a: &ApiKey| a.digest == digest) {
            return Err((
                format!("{at} › sha256"),
                "the same key is listed twice".into(),
            ));
        }
        if k.roles.is_empty() {
            return Err((
                format!("{at} › roles"),
                "a key without roles can call nothing".into(),
            ));
        }
        api_keys.push(ApiKey {
            principal: Arc::from(k.principal.as_str()),
            digest,
            roles: known_roles(&k.roles, format!("{at} › roles"))?.into(),
        });
    }
    if mode == AuthMode::ApiKey && api_keys.is_empty() {
        return Err((
            key("mode"),
            "\"api-key\" needs at least one [[auth.api_keys]]".into(),
        ));
    }
    let jwt = match mode {
        AuthMode::Jwt => Some(resolve_jwt(section, base)?),
        _ => {
            if section.issuer.is_some() || section.jwks_file.is_some() {
                return Err((
                    key("mode"),
                    "JWT settings are given but mode is not \"jwt\"".into(),
                ));
            }
            None
        }
    };
    let local = section.local_principal.as_deref().unwrap_or("local");
    Ok(AuthSettings {
        mode,
        jwt,
        api_keys,
        roles: roles.clone(),
        local_principal: Principal {
            name: Arc::from(local),
            access: Access::All,
        },
    })
}

fn resolve_jwt(section: &AuthSection, base: &Path) -> Result<JwtSettings, (String, String)> {
    let key = |k: &str| format!("auth › {k}");
    let need = |v: &Option<String>, k: &str| {
        v.clone()
            .ok_or_else(|| (key(k), "required when mode = \"jwt\"".to_owned()))
    };
    let resource = need(&section.resource, "resource")?;
    let issuer = need(&section.issuer, "issuer")?;
    let (keys, jwks_url, jwks_file) = match (&section.jwks_file, &section.jwks_url) {
        (Some(file), None) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| (key("jwks_file"), format!("{}: {e}", path.display())))?;
            let keys = parse_jwks(&text)
                .map_err(|e| (key("jwks_file"), format!("{}: {e}", path.display())))?;
            (keys, None, Some(path))
        }
        (None, Some(url)) => {
            check_jwks_url(url).map_err(|e| (key("jwks_url"), e))?;
            // Fetched when the server starts; nothing is accepted before that.
            (KeySet::default(), Some(url.clone()), None)
        }
        _ => {
            return Err((
                key("jwks_file"),
                "give exactly one of jwks_file and jwks_url when mode = \"jwt\"".to_owned(),
            ));
        }
    };
    let algorithms = if section.algorithms.is_empty() {
        ALLOWED_ALGORITHMS.iter().map(|(_, a)| *a).collect()
    } else {
        section
            .algorithms
            .iter()
            .map(|name| {
                ALLOWED_ALGORITHMS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, a)| *a)
                    .ok_or_else(|| {
                        (
                            key("algorithms"),
                            format!("\"{name}\" is not one of RS256, ES256, EdDSA"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let leeway = section.leeway.map_or(Duration::from_secs(30), |s| s.0);
    if leeway > Duration::from_secs(300) {
        return Err((key("leeway"), "must be at most 5m".into()));
    }
    let max_token_lifetime = section
        .max_token_lifetime
        .map_or(Duration::from_secs(3600), |s| s.0);
    let roles_claim = section
        .roles_claim
        .clone()
        .unwrap_or_else(|| "roles".into());
    if !matches!(roles_claim.as_str(), "roles" | "groups" | "scope" | "scp") {
        return Err((
            key("roles_claim"),
            format!("\"{roles_claim}\" is not one of roles, groups, scope, scp"),
        ));
    }
    let authorization_servers = if section.authorization_servers.is_empty() {
        vec![issuer.clone()]
    } else {
        section.authorization_servers.clone()
    };
    let refresh_min_interval = section
        .jwks_refresh_min_interval
        .map_or(Duration::from_secs(30), |s| s.0);
    let validations = algorithms
        .iter()
        .map(|&alg| {
            let mut v = Validation::new(alg);
            v.set_issuer(&[&issuer]);
            v.set_audience(&[&resource]);
            v.leeway = leeway.as_secs();
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            (alg, v)
        })
        .collect();
    Ok(JwtSettings {
        validations,
        resource,
        issuer,
        keys: Arc::new(std::sync::RwLock::new(Arc::new(keys))),
        jwks_url,
        jwks_file,
        refresh_min_interval,
        last_fetch: Arc::new(std::sync::Mutex::new(None)),
        max_token_lifetime,
        leeway,
        verified: Arc::default(),
        roles_claim,
        required_claims: section.required_claims.clone(),
        authorization_servers,
    })
}

/// Public keys by `kid`, decoded once when loaded.
#[derive(Clone, Default)]
struct KeySet(HashMap<String, DecodingKey>);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A JWK set with usable public keys only, each with a `kid`.
fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWK set: {e}"))?;
    if set.keys.is_empty() {
        return Err("the JWK set holds no keys".into());
    }
    let mut keys = HashMap::with_capacity(set.keys.len());
    for (i, k) in set.keys.iter().enumerate() {
        let kid = k
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("key {i} has no `kid`"))?;
        if let AlgorithmParameters::OctetKey(_) = k.algorithm {
            return Err(format!(
                "key {i} is a symmetric (oct) key; only public keys are accepted"
            ));
        }
        let key = DecodingKey::from_jwk(k).map_err(|e| format!("key {i}: {e}"))?;
        keys.insert(kid, key);
    }
    Ok(KeySet(keys))
}

/// `https://…`, or `http://` to a loopback address only.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("\"{url}\" is not a URL"))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http")
            if host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "\"{url}\" must be https:// (http:// only to a loopback address)"
        )),
    }
}

/// GET the JWK set at `url` (10 s, 1 MiB at most).
async fn fetch_jwks(url: &str) -> Result<KeySet, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let io: Box<dyn AsyncIo> = if https {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(crate::egress::tls_config())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = http::Request::get(path)
            .header(
                http::header::HOST,
                uri.authority().map_or("", |a| a.as_str()),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        parse_jwks(std::str::from_utf8(&body).map_err(|e| e.to_string())?)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out after 10 s".to_owned())?
}

trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncIo for T {}

impl JwtSettings {
    /// Fetch the keys from `jwks_url` (no-op for a file), at most once per
    /// `jwks_refresh_min_interval` unless `force`. Returns whether new keys were installed.
    pub async fn refresh_keys(&self, force: bool) -> Result<bool, String> {
        let Some(url) = &self.jwks_url else {
            return Ok(false);
        };
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < self.refresh_min_interval) {
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

impl AuthSettings {
    /// Identify the caller of an HTTP request from its `Authorization` header (the only place
    /// a token is taken from).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Principal {
                name: Arc::from(crate::mcp::ANONYMOUS_PRINCIPAL),
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
            .jwt
            .as_ref()
            .filter(|_| token.split('.').count() == 3)
            .ok_or_else(|| AuthError::InvalidToken("not a known API key or a JWT".into()))?;
        let principal = match jwt.verified.get(&digest) {
            Some(p) => p,
            None => {
                let keys = jwt.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
                let (principal, exp) = self.check_jwt(jwt, &keys, token)?;
                let good_until = exp.saturating_add(jwt.leeway.as_secs());
                jwt.verified
                    .insert(digest, principal.clone(), good_until, || {
                        Arc::ptr_eq(&keys, &jwt.keys.read().unwrap_or_else(|p| p.into_inner()))
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
        for k in &self.api_keys {
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
        let values: Vec<&str> = match &claims[jwt.roles_claim.as_str()] {
            serde_json::Value::String(s) => s.split_whitespace().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let roles = self
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

    /// Every claim value that carries a role, for `scopes_supported`.
    pub fn claim_values(&self) -> Vec<String> {
        let mut v: Vec<String> = self.roles.values().flatten().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// Is `role` declared in `[roles]`?
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }
}
