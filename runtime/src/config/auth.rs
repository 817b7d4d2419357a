//! Who may call: `[auth]` and `[roles]`, resolved. Over HTTP Airlock is an OAuth 2.1 resource
//! server (bearer JWTs checked against a JWKS) and accepts hashed API keys for service
//! principals; client certificates (mutual TLS) can name service principals too. Tokens may be
//! sender-constrained: bound to a client certificate (RFC 8705) or to a DPoP key (RFC 9449).
//! stdio sessions are the configured local principal. A principal's roles decide which tools
//! it may list and call. Checking credentials is the gate layer's authenticator.

use crate::core::principal::{Access, Principal, RESERVED_PRINCIPALS};
use crate::core::units::Span;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    /// Client certificates (`[server.tls] client_ca`) that name service principals.
    #[serde(default)]
    client_certs: Vec<ClientCertSection>,
    /// Refuse tokens that are not bound to the sender (DPoP or a client certificate), and API
    /// keys (bearer credentials).
    #[serde(default)]
    require_sender_constraint: bool,
    /// Every JWT must come with a DPoP proof of the key it is bound to.
    #[serde(default)]
    require_dpop: bool,
    /// How old a DPoP proof may be (its `iat`), and how long its `jti` is remembered.
    dpop_proof_lifetime: Option<Span>,
    /// Most DPoP proofs remembered within that lifetime (replay detection); past it, new
    /// proofs are refused until old ones age out.
    dpop_max_proofs: Option<u32>,
    /// Most of them one principal may have (so that one caller cannot fill the store).
    dpop_max_proofs_per_principal: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertSection {
    principal: String,
    /// The certificate's subject, RFC 4514 (`CN=billing,O=Example Corp`).
    subject: Option<String>,
    /// The certificate's SPIFFE id (its one URI SAN).
    spiffe_id: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
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
    /// Client certificates only (`[[auth.client_certs]]`, over mutual TLS).
    ClientCert,
}

/// What in a client certificate names a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertName {
    /// The subject, as RFC 4514 renders it (the form a certificate's subject is compared in).
    Subject(String),
    /// The SPIFFE id: the certificate's only URI SAN.
    SpiffeId(String),
}

/// A client certificate's principal.
#[derive(Debug, Clone)]
pub struct ClientCertPrincipal {
    pub name: CertName,
    pub principal: Arc<str>,
    pub roles: Arc<[String]>,
}

/// DPoP (RFC 9449) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopSettings {
    /// Every JWT must be DPoP-bound and come with a proof.
    pub required: bool,
    pub proof_lifetime: Duration,
    pub max_proofs: usize,
    pub max_proofs_per_principal: usize,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub principal: Arc<str>,
    /// sha256 of the key.
    pub digest: [u8; 32],
    pub roles: Arc<[String]>,
}

/// JWT settings, resolved.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub resource: String,
    pub issuer: String,
    /// The keys of `jwks_file`; empty with `jwks_url` (fetched when serving starts).
    pub keys: Arc<KeySet>,
    /// One validation per accepted algorithm (the allow-list), built at load.
    pub validations: Vec<(Algorithm, Validation)>,
    /// Where keys come from when not from a file.
    pub jwks_url: Option<String>,
    /// The file keys come from, when not from a URL.
    pub jwks_file: Option<PathBuf>,
    pub refresh_min_interval: Duration,
    pub max_token_lifetime: Duration,
    pub leeway: Duration,
    pub roles_claim: String,
    pub required_claims: Vec<String>,
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
    pub api_keys: Vec<ApiKey>,
    /// Role → the claim values that carry it.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Role → the data it may see (`[roles]` tables; the default clearance otherwise).
    pub clearances: BTreeMap<String, crate::config::safety::Clearance>,
    /// The principal of stdio sessions.
    pub local_principal: Principal,
    /// Client certificates that name principals.
    pub client_certs: Vec<ClientCertPrincipal>,
    /// Only sender-constrained tokens (and client certificates) are accepted.
    pub require_sender_constraint: bool,
    pub dpop: DpopSettings,
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
        if mode == AuthMode::None || mode == AuthMode::ClientCert {
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
    let mut client_certs: Vec<ClientCertPrincipal> = Vec::with_capacity(section.client_certs.len());
    for (i, c) in section.client_certs.iter().enumerate() {
        let at = format!("auth › client_certs[{i}]");
        if mode == AuthMode::None {
            return Err((
                at,
                "client certificates need mode = \"client-cert\", \"jwt\" or \"api-key\"".into(),
            ));
        }
        let name = match (&c.subject, &c.spiffe_id) {
            (Some(s), None) => {
                CertName::Subject(canonical_subject(s).map_err(|p| (format!("{at} › subject"), p))?)
            }
            (None, Some(id)) => {
                if !id.starts_with("spiffe://") || id.len() <= "spiffe://".len() {
                    return Err((
                        format!("{at} › spiffe_id"),
                        format!("\"{id}\" is not a SPIFFE id (spiffe://TRUST-DOMAIN/PATH)"),
                    ));
                }
                CertName::SpiffeId(id.clone())
            }
            _ => {
                return Err((at, "give exactly one of subject and spiffe_id".into()));
            }
        };
        if client_certs.iter().any(|o| o.name == name) {
            return Err((at, "another entry names the same certificate".into()));
        }
        let roles: Arc<[String]> = known_roles(&c.roles, format!("{at} › roles"))?.into();
        if client_certs
            .iter()
            .any(|o| *o.principal == *c.principal && o.roles != roles)
        {
            return Err((
                format!("{at} › roles"),
                format!(
                    "another entry gives principal \"{}\" other roles: one principal, one set of roles",
                    c.principal
                ),
            ));
        }
        if c.roles.is_empty() {
            return Err((
                format!("{at} › roles"),
                "a certificate without roles can call nothing".into(),
            ));
        }
        client_certs.push(ClientCertPrincipal {
            name,
            principal: Arc::from(c.principal.as_str()),
            roles,
        });
    }
    if mode == AuthMode::ClientCert && client_certs.is_empty() {
        return Err((
            key("mode"),
            "\"client-cert\" needs at least one [[auth.client_certs]]".into(),
        ));
    }
    if section.require_sender_constraint {
        if mode == AuthMode::None || mode == AuthMode::ApiKey {
            return Err((
                key("require_sender_constraint"),
                "needs mode = \"jwt\" or \"client-cert\": API keys are bearer credentials".into(),
            ));
        }
        if !api_keys.is_empty() {
            return Err((
                key("require_sender_constraint"),
                "API keys are bearer credentials, which this refuses: remove [[auth.api_keys]] \
                 or give those principals client certificates"
                    .into(),
            ));
        }
    }
    let dpop_keys = [
        ("require_dpop", section.require_dpop),
        ("dpop_proof_lifetime", section.dpop_proof_lifetime.is_some()),
        ("dpop_max_proofs", section.dpop_max_proofs.is_some()),
        (
            "dpop_max_proofs_per_principal",
            section.dpop_max_proofs_per_principal.is_some(),
        ),
    ];
    if let Some((name, _)) = dpop_keys.iter().find(|(_, set)| *set)
        && mode != AuthMode::Jwt
    {
        return Err((key(name), "DPoP binds JWTs: needs mode = \"jwt\"".into()));
    }
    if section.require_dpop && !api_keys.is_empty() {
        return Err((
            key("require_dpop"),
            "API keys are bearer credentials, which DPoP is meant to replace: remove \
             [[auth.api_keys]] (or use require_sender_constraint with client certificates)"
                .into(),
        ));
    }
    let proof_lifetime = section
        .dpop_proof_lifetime
        .map_or(Duration::from_secs(60), |s| s.0);
    if proof_lifetime < Duration::from_secs(1) || proof_lifetime > Duration::from_secs(600) {
        return Err((
            key("dpop_proof_lifetime"),
            "must be between 1s and 10m".into(),
        ));
    }
    let max_proofs = section.dpop_max_proofs.unwrap_or(100_000);
    if !(1..=1_000_000).contains(&max_proofs) {
        return Err((
            key("dpop_max_proofs"),
            "must be between 1 and 1000000".into(),
        ));
    }
    let max_proofs_per_principal = section
        .dpop_max_proofs_per_principal
        .unwrap_or(10_000)
        .min(max_proofs);
    if max_proofs_per_principal == 0
        || section
            .dpop_max_proofs_per_principal
            .is_some_and(|n| n > max_proofs)
    {
        return Err((
            key("dpop_max_proofs_per_principal"),
            format!("must be between 1 and dpop_max_proofs ({max_proofs})"),
        ));
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
    // One name, one principal: a name held by one source (the local principal, an API key,
    // Airlock itself) is refused to the others.
    if RESERVED_PRINCIPALS.contains(&local) {
        return Err((
            key("local_principal"),
            format!("\"{local}\" is a name Airlock gives to other callers; choose another"),
        ));
    }
    for (i, c) in client_certs.iter().enumerate() {
        if RESERVED_PRINCIPALS.contains(&&*c.principal)
            || *c.principal == *local
            || api_keys.iter().any(|k| k.principal == c.principal)
        {
            return Err((
                format!("auth › client_certs[{i}] › principal"),
                format!(
                    "\"{}\" is the name of the local principal, an API key's principal or one \
                     Airlock gives to other callers; a certificate's principal must be a name \
                     of its own",
                    c.principal
                ),
            ));
        }
    }
    for (i, k) in api_keys.iter().enumerate() {
        if RESERVED_PRINCIPALS.contains(&&*k.principal) || *k.principal == *local {
            return Err((
                format!("auth › api_keys[{i}] › principal"),
                format!(
                    "\"{}\" is the name of the local principal or one Airlock gives to other \
                     callers; an API key's principal must be a name of its own",
                    k.principal
                ),
            ));
        }
    }
    Ok(AuthSettings {
        mode,
        jwt,
        api_keys,
        roles: roles.clone(),
        clearances: BTreeMap::new(),
        local_principal: Principal {
            name: Arc::from(local),
            access: Access::All,
        },
        client_certs,
        require_sender_constraint: section.require_sender_constraint,
        dpop: DpopSettings {
            required: section.require_dpop,
            proof_lifetime,
            max_proofs: max_proofs as usize,
            max_proofs_per_principal: max_proofs_per_principal as usize,
        },
    })
}

/// A subject as written in the configuration, in the form a certificate's subject is
/// rendered in for comparison (RFC 4514; spaces after the commas allowed).
pub fn canonical_subject(written: &str) -> Result<String, String> {
    use std::str::FromStr as _;
    // RFC 4514 has no space after a separator, which people write anyway.
    let mut compact = String::with_capacity(written.len());
    let mut escaped = false;
    let mut after_comma = false;
    for c in written.trim().chars() {
        if after_comma && c == ' ' {
            continue;
        }
        after_comma = c == ',' && !escaped;
        escaped = c == '\\' && !escaped;
        compact.push(c);
    }
    let name = x509_cert::name::RdnSequence::from_str(&compact).map_err(|_| {
        format!(
            "\"{written}\" is not a distinguished name (RFC 4514, most specific first: \
             CN=billing,O=Example Corp)"
        )
    })?;
    if name.0.is_empty() {
        return Err("an empty subject names no certificate".into());
    }
    Ok(name.to_string())
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
            crate::core::files::trusted_file(&path)
                .map_err(|p| (key("jwks_file"), format!("the JWKS file {p}")))?;
            let keys = parse_jwks(&text)
                .map_err(|e| (key("jwks_file"), format!("{}: {e}", path.display())))?;
            (keys, None, Some(path))
        }
        (None, Some(url)) => {
            check_host_url(url).map_err(|e| (key("jwks_url"), e))?;
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
        keys: Arc::new(keys),
        jwks_url,
        jwks_file,
        refresh_min_interval,
        max_token_lifetime,
        leeway,
        roles_claim,
        required_claims: section.required_claims.clone(),
        authorization_servers,
    })
}

/// Public keys by `kid`, decoded once when loaded.
#[derive(Clone, Default)]
pub struct KeySet(pub HashMap<String, DecodingKey>);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A JWK set with usable public keys only, each with a `kid`.
pub fn parse_jwks(text: &str) -> Result<KeySet, String> {
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

/// A URL the host itself fetches from (a JWKS, the content scanner): `https://…`, or
/// `http://` to a loopback address only.
pub(crate) fn check_host_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("\"{url}\" is not a URL"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "\"{url}\" carries user information; credentials do not belong in a URL"
        ));
    }
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

/// The port the host connects to for a URL `check_host_url` accepted (for the confinement
/// plan).
pub fn host_url_port(url: &str) -> u16 {
    let uri: Option<http::Uri> = url.parse().ok();
    uri.and_then(|u| {
        u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        })
    })
    .unwrap_or(443)
}

/// Whether a URL's host is a name (looked up over DNS) rather than an address.
pub fn host_url_by_name(url: &str) -> bool {
    let uri: Option<http::Uri> = url.parse().ok();
    uri.and_then(|u| {
        u.host().map(|h| {
            h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_err()
        })
    })
    .unwrap_or(true)
}

impl AuthSettings {
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

#[cfg(test)]
mod tests {
    use super::canonical_subject;

    #[test]
    fn subjects_are_compared_in_one_written_form() {
        // Spaces after commas are dropped; RFC 4514 order (most specific first) is kept.
        assert_eq!(
            canonical_subject("CN=billing, O=Example Corp").unwrap(),
            canonical_subject("CN=billing,O=Example Corp").unwrap()
        );
        assert_eq!(
            canonical_subject("CN=billing,O=Example Corp").unwrap(),
            "CN=billing,O=Example Corp"
        );
        // An escaped comma is part of the value.
        assert_eq!(
            canonical_subject("CN=Doe\\, Jane,O=Example").unwrap(),
            "CN=Doe\\, Jane,O=Example"
        );
        assert!(canonical_subject("billing").is_err());
        assert!(canonical_subject("").is_err());
    }
}
