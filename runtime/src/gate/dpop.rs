//! DPoP proofs (RFC 9449): a client proves, request by request, that it holds the private key
//! its access token is bound to (`cnf.jkt`), so a stolen token is useless without that key.
//!
//! A proof is a JWT in the `DPoP` header, signed by the key in its own `jwk` header, for one
//! request: `htm` and `htu` name the method and URL, `iat` says when it was made, `ath` is the
//! hash of the token it accompanies, and `jti` makes it single-use: every proof is remembered
//! until it is too old to be accepted anyway.

use crate::gate::verified_tokens::now_secs;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The algorithms a proof may be signed with: the client's key, whatever the issuer signs
/// tokens with.
pub const DPOP_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// The largest `DPoP` header read (an RSA-4096 key in a proof is about 1 KiB).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// The longest `jti` accepted (RFC 9449 suggests 96 bits of randomness; a UUID is 36).
const MAX_JTI_BYTES: usize = 256;

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    pub method: &'a str,
    /// `https` or `http`: how the client reached this server.
    pub scheme: &'a str,
    /// The `Host` the request named.
    pub authority: &'a str,
    pub path: &'a str,
}

/// A proof that holds, before its single use is checked.
#[derive(Debug)]
pub struct Proof {
    /// The RFC 7638 thumbprint of the proof's key (base64url): what `cnf.jkt` must name.
    pub jkt: String,
    /// What identifies this proof for replay detection.
    pub replay_key: [u8; 32],
    /// Until when (seconds since the epoch) the proof could still be accepted.
    pub live_until: u64,
}

/// How old a proof may be and how much clocks may differ.
#[derive(Debug, Clone, Copy)]
pub struct ProofWindow {
    pub lifetime: Duration,
    pub leeway: Duration,
}

/// Check a proof for `target`, accompanying `token`. The error says why it does not hold.
pub fn verify(
    proof: &str,
    target: RequestTarget<'_>,
    token: &str,
    algorithms: &[Algorithm],
    window: ProofWindow,
) -> Result<Proof, String> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(format!("the proof is larger than {MAX_PROOF_BYTES} bytes"));
    }
    let header = proof
        .split('.')
        .next()
        .and_then(|h| B64.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .ok_or("the proof is not a JWT")?;
    if header["typ"].as_str() != Some("dpop+jwt") {
        return Err("the proof's typ is not dpop+jwt".into());
    }
    let jwk = header["jwk"]
        .as_object()
        .ok_or("the proof carries no public key (jwk)")?;
    // A private key has no place in a proof: whoever sent one has given it away.
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk.contains_key(*m))
    {
        return Err("the proof's jwk holds private or symmetric key material".into());
    }
    let jkt = thumbprint(jwk).ok_or("the proof's jwk is not an EC, RSA or OKP public key")?;
    // The header already read gives the algorithm and the key (decode below checks that the
    // signed header is this one).
    let alg: Algorithm = serde_json::from_value(header["alg"].clone())
        .map_err(|_| "the proof's header is malformed or names an unsupported algorithm")?;
    if !algorithms.contains(&alg) {
        return Err(format!("the proof's algorithm {alg:?} is not accepted"));
    }
    let key = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(Value::Object(jwk.clone()))
        .ok()
        .and_then(|k| DecodingKey::from_jwk(&k).ok())
        .ok_or("the proof's jwk is not a usable public key")?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
        .map_err(|_| "the proof's signature does not verify with its jwk")?
        .claims;
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or("the proof has no jti (or one longer than 256 bytes)")?;
    if claims["htm"].as_str() != Some(target.method) {
        return Err(format!(
            "the proof is for another method (htm is not {})",
            target.method
        ));
    }
    let htu = claims["htu"].as_str().ok_or("the proof has no htu")?;
    if !same_url(htu, target) {
        return Err("the proof is for another URL (htu)".into());
    }
    let iat = claims["iat"]
        .as_u64()
        .or_else(|| claims["iat"].as_f64().map(|f| f as u64))
        .ok_or("the proof has no iat")?;
    let now = now_secs();
    let leeway = window.leeway.as_secs();
    if iat > now.saturating_add(leeway) {
        return Err("the proof was made in the future (iat)".into());
    }
    let live_until = iat
        .saturating_add(window.lifetime.as_secs())
        .saturating_add(leeway);
    if now > live_until {
        return Err(format!(
            "the proof is older than {} s (iat)",
            window.lifetime.as_secs()
        ));
    }
    let ath = B64.encode(Sha256::digest(token.as_bytes()));
    if claims["ath"].as_str() != Some(ath.as_str()) {
        return Err("the proof is not for this access token (ath)".into());
    }
    // One key's jti cannot use up another's.
    let mut replay = Sha256::new();
    replay.update(jkt.as_bytes());
    replay.update([0]);
    replay.update(jti.as_bytes());
    Ok(Proof {
        jkt,
        replay_key: replay.finalize().into(),
        live_until,
    })
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: its required members in
/// lexicographic order, without whitespace.
pub fn thumbprint(jwk: &serde_json::Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str).map(str::to_owned);
    let kty = member("kty")?;
    let names: &[&str] = match kty.as_str() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = serde_json::Map::new();
    for name in names {
        canonical.insert((*name).to_owned(), Value::String(member(name)?));
    }
    // serde_json's map is ordered by key, and writes no whitespace.
    let text = serde_json::to_string(&canonical).ok()?;
    Some(B64.encode(Sha256::digest(text.as_bytes())))
}

/// Is `htu` the URL of `target` (scheme, host and port, path; query and fragment ignored)?
fn same_url(htu: &str, target: RequestTarget<'_>) -> bool {
    let Ok(uri) = htu.parse::<http::Uri>() else {
        return false;
    };
    let Some(scheme) = uri.scheme_str() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    let default_port = |s: &str| {
        if s.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        }
    };
    let Ok(requested) = target.authority.parse::<http::uri::Authority>() else {
        return false;
    };
    let path = |p: &str| {
        if p.is_empty() {
            "/".to_owned()
        } else {
            p.to_owned()
        }
    };
    scheme.eq_ignore_ascii_case(target.scheme)
        && authority.host().eq_ignore_ascii_case(requested.host())
        && authority.port_u16().unwrap_or(default_port(scheme))
            == requested.port_u16().unwrap_or(default_port(target.scheme))
        && path(uri.path()) == path(target.path)
}

/// Why a proof's single use could not be recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Reuse {
    /// The proof was presented before.
    Replayed,
    /// `dpop_max_proofs` proofs are live: none can be remembered until some age out.
    Full,
    /// This principal has `dpop_max_proofs_per_principal` proofs live (one caller cannot take
    /// the store from the others).
    PrincipalFull,
}

/// How many proofs may be live at once.
#[derive(Debug, Clone, Copy)]
pub struct ProofCaps {
    pub total: usize,
    pub per_principal: usize,
}

/// The proofs seen and still within their lifetime. Shared by every configuration a process
/// runs (a reload must not forget them).
#[derive(Default)]
pub struct SeenProofs {
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    /// Each live proof: until when it is remembered, and whose it is.
    proofs: HashMap<[u8; 32], (u64, Arc<str>)>,
    /// The same, soonest expiry first: expired proofs are dropped from the front, with no
    /// scan of the rest.
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 32])>>,
    per_principal: HashMap<Arc<str>, usize>,
    /// The widest acceptance window (proof lifetime plus leeway, in seconds) of any
    /// configuration so far.
    window: u64,
}

impl Live {
    fn expire(&mut self, now: u64) {
        while let Some(Reverse((until, key))) = self.by_expiry.peek().copied() {
            if until >= now {
                break;
            }
            self.by_expiry.pop();
            if let Some((_, principal)) = self.proofs.remove(&key)
                && let Some(n) = self.per_principal.get_mut(&principal)
            {
                *n -= 1;
                if *n == 0 {
                    self.per_principal.remove(&principal);
                }
            }
        }
    }
}

impl std::fmt::Debug for SeenProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeenProofs")
    }
}

impl SeenProofs {
    /// Record the first use of `proof` by `principal`, or say why it cannot be used.
    pub fn first_use(
        &self,
        proof: &Proof,
        principal: &Arc<str>,
        caps: ProofCaps,
    ) -> Result<(), Reuse> {
        let mut live = self.lock();
        live.expire(now_secs());
        if live.proofs.contains_key(&proof.replay_key) {
            return Err(Reuse::Replayed);
        }
        if live.proofs.len() >= caps.total {
            return Err(Reuse::Full);
        }
        let mine = live.per_principal.get(principal).copied().unwrap_or(0);
        if mine >= caps.per_principal {
            return Err(Reuse::PrincipalFull);
        }
        live.proofs
            .insert(proof.replay_key, (proof.live_until, principal.clone()));
        live.by_expiry
            .push(Reverse((proof.live_until, proof.replay_key)));
        *live.per_principal.entry(principal.clone()).or_insert(0) += 1;
        Ok(())
    }

    /// A configuration accepts proofs for `window` seconds (lifetime plus leeway). When a
    /// reload widens it, the proofs remembered are kept that much longer: each stays
    /// remembered for as long as it could be accepted again.
    pub fn widen(&self, window: u64) {
        let mut live = self.lock();
        if window <= live.window {
            return;
        }
        let more = window - live.window;
        live.window = window;
        if live.proofs.is_empty() {
            return;
        }
        let Live {
            proofs, by_expiry, ..
        } = &mut *live;
        by_expiry.clear();
        for (key, (until, _)) in proofs.iter_mut() {
            *until = until.saturating_add(more);
            by_expiry.push(Reverse((*until, *key)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_the_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk: Value = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn urls_compare_by_scheme_host_port_and_path() {
        let target = RequestTarget {
            method: "POST",
            scheme: "https",
            authority: "MCP.example.com",
            path: "/mcp",
        };
        assert!(same_url("https://mcp.example.com/mcp", target));
        assert!(same_url("https://mcp.example.com:443/mcp?x=1#f", target));
        assert!(!same_url("http://mcp.example.com/mcp", target));
        assert!(!same_url("https://mcp.example.com:8443/mcp", target));
        assert!(!same_url("https://other.example.com/mcp", target));
        assert!(!same_url("https://mcp.example.com/mcp/x", target));
        assert!(!same_url("/mcp", target));
    }

    #[test]
    fn a_proof_is_used_once_and_the_store_stays_bounded() {
        let seen = SeenProofs::default();
        let proof = |n: u8, until: u64| Proof {
            jkt: String::new(),
            replay_key: [n; 32],
            live_until: until,
        };
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        let caps = ProofCaps {
            total: 3,
            per_principal: 2,
        };
        let later = now_secs() + 60;
        assert_eq!(seen.first_use(&proof(1, later), &alice, caps), Ok(()));
        assert_eq!(
            seen.first_use(&proof(1, later), &bob, caps),
            Err(Reuse::Replayed)
        );
        assert_eq!(
            seen.first_use(&proof(2, now_secs() - 5), &alice, caps),
            Ok(())
        );
        // The expired one makes room, for alice too.
        assert_eq!(seen.first_use(&proof(3, later), &alice, caps), Ok(()));
        assert_eq!(
            seen.first_use(&proof(4, later), &alice, caps),
            Err(Reuse::PrincipalFull)
        );
        assert_eq!(seen.first_use(&proof(5, later), &bob, caps), Ok(()));
        assert_eq!(
            seen.first_use(&proof(6, later), &bob, caps),
            Err(Reuse::Full)
        );
    }

    #[test]
    fn a_wider_window_keeps_proofs_longer() {
        let seen = SeenProofs::default();
        seen.widen(90);
        let alice: Arc<str> = Arc::from("alice");
        let caps = ProofCaps {
            total: 10,
            per_principal: 10,
        };
        // Remembered under the 90 s window until 1 s ago: forgotten.
        let old = Proof {
            jkt: String::new(),
            replay_key: [1; 32],
            live_until: now_secs() - 1,
        };
        seen.first_use(&old, &alice, caps).unwrap();
        seen.widen(600);
        // Kept 510 s longer under the wider window: still a replay.
        assert_eq!(seen.first_use(&old, &alice, caps), Err(Reuse::Replayed));
    }
}
