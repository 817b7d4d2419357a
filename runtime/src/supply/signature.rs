//! Component signatures, in cosign's formats with cosign's default key type (ECDSA P-256 with
//! SHA-256, keys in PEM):
//!
//! - a *detached* signature of a file is what `cosign sign-blob --key` writes: the base64 of a
//!   DER signature over the file's bytes, in `FILE.sig`;
//! - a signature in a registry is what `cosign sign --key` pushes: a "simple signing" payload
//!   naming the artifact's manifest digest, signed, stored as a layer of the tag
//!   `sha256-<hex>.sig` beside the artifact, the signature in the layer's
//!   `dev.cosignproject.cosign/signature` annotation.
//!
//! `airlock sign` writes both; cosign 2.x verifies them with `--key` and
//! `--insecure-ignore-tlog=true` (Airlock does not consult a transparency log). Cosign 3's
//! bundle format is not read.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use std::path::Path;

/// The media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation of that layer holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The largest signature file, payload or key read: real ones are well under 4 KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;

/// A public key allowed to sign components (`[trust.keys]`).
#[derive(Clone)]
pub struct TrustedKey {
    /// Its name in the configuration: what call records and `verify-component` show as the
    /// signer.
    pub name: String,
    key: VerifyingKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({})", self.name)
    }
}

impl TrustedKey {
    /// The key `name` from the PEM public key (`-----BEGIN PUBLIC KEY-----`, a P-256 key as
    /// `cosign generate-key-pair` and `airlock sign keygen` write) in `path`.
    pub fn read(name: &str, path: &Path) -> Result<TrustedKey, String> {
        let text = read_small(path)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| format!("{} is not a PEM public key", path.display()))?;
        let key = VerifyingKey::from_public_key_pem(text).map_err(|e| {
            format!(
                "{} is not a PEM ECDSA P-256 public key ({e}); cosign's default keys and \
                 `airlock sign keygen` keys are",
                path.display()
            )
        })?;
        Ok(TrustedKey {
            name: name.to_owned(),
            key,
        })
    }

    fn verifies(&self, message: &[u8], signature: &Signature) -> bool {
        self.key.verify(message, signature).is_ok()
    }
}

/// Why a component is not signed by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsigned {
    /// No signature was found where it would be.
    Missing(String),
    /// Signatures exist, but none verifies with a trusted key: signed by another key, or the
    /// artifact was changed after it was signed.
    Untrusted(usize),
    /// A signature names another artifact (a signature copied from elsewhere).
    OtherDigest(String),
    /// A signature that cannot be read at all.
    Malformed(String),
    /// Where the signatures are could not be asked (a registry or server down or refusing).
    Unavailable(String),
}

impl std::fmt::Display for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsigned::Missing(at) => write!(f, "no signature ({at})"),
            Unsigned::Untrusted(n) => write!(
                f,
                "{n} signature(s), none verifying with a key in [trust.keys] (signed by an \
                 untrusted key, or the artifact was changed after signing)"
            ),
            Unsigned::OtherDigest(d) => {
                write!(f, "the signature is for another artifact ({d})")
            }
            Unsigned::Malformed(why) => write!(f, "unreadable signature: {why}"),
            Unsigned::Unavailable(why) => write!(f, "the signatures could not be fetched: {why}"),
        }
    }
}

/// The trusted key whose detached signature `signature_b64` (a `cosign sign-blob` file) of
/// `bytes` verifies.
pub fn verify_detached<'k>(
    keys: &'k [TrustedKey],
    bytes: &[u8],
    signature_b64: &[u8],
) -> Result<&'k TrustedKey, Unsigned> {
    let signature = decode_signature(signature_b64)?;
    keys.iter()
        .find(|k| k.verifies(bytes, &signature))
        .ok_or(Unsigned::Untrusted(1))
}

/// One signature of an artifact in a registry: a simple-signing payload and its signature.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegistrySignature {
    /// The payload's bytes, base64 (as signed).
    pub payload: String,
    /// The annotation's base64 DER signature.
    pub signature: String,
}

/// The trusted key that signed the artifact whose manifest digest is `digest`
/// (`sha256:<hex>`), among `signatures`.
pub fn verify_registry<'k>(
    keys: &'k [TrustedKey],
    digest: &str,
    signatures: &[RegistrySignature],
) -> Result<&'k TrustedKey, Unsigned> {
    use base64::Engine as _;
    if signatures.is_empty() {
        return Err(Unsigned::Missing(format!(
            "no cosign signature tag {} in the registry",
            signature_tag(digest)
        )));
    }
    // Every signature is tried: a junk one must not hide a good one after it.
    let mut other = None;
    let mut malformed = None;
    let mut untrusted = 0;
    for s in signatures {
        let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&s.payload) else {
            malformed = Some(Unsigned::Malformed("a payload is not base64".into()));
            continue;
        };
        let signature = match decode_signature(s.signature.as_bytes()) {
            Ok(sig) => sig,
            Err(e) => {
                malformed = Some(e);
                continue;
            }
        };
        let Some(key) = keys.iter().find(|k| k.verifies(&payload, &signature)) else {
            untrusted += 1;
            continue;
        };
        // Only a verified payload is believed about what it names.
        match payload_digest(&payload) {
            Some(d) if d == digest => return Ok(key),
            Some(d) => other = Some(d),
            None => {
                malformed = Some(Unsigned::Malformed(
                    "a signed payload is not a cosign simple-signing document".into(),
                ));
            }
        }
    }
    Err(match (other, malformed) {
        (Some(d), _) => Unsigned::OtherDigest(d),
        (None, Some(m)) if untrusted == 0 => m,
        _ => Unsigned::Untrusted(untrusted),
    })
}

/// The tag cosign stores the signatures of manifest `digest` under.
pub fn signature_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
}

/// The simple-signing payload cosign signs for the manifest `digest` of `repository`
/// (`registry/path`, no tag).
pub fn simple_signing_payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .expect("a JSON value serializes")
}

fn payload_digest(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = v.get("critical")?;
    if critical.get("type")?.as_str()? != "cosign container image signature" {
        return None;
    }
    Some(
        critical
            .get("image")?
            .get("docker-manifest-digest")?
            .as_str()?
            .to_owned(),
    )
}

fn decode_signature(b64: &[u8]) -> Result<Signature, Unsigned> {
    use base64::Engine as _;
    let text: Vec<u8> = b64
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| Unsigned::Malformed("not base64".into()))?;
    Signature::from_der(&der).map_err(|_| Unsigned::Malformed("not a DER ECDSA signature".into()))
}

/// A signing key for `airlock sign`.
pub struct SignerKey(SigningKey);

impl SignerKey {
    /// A new random key.
    pub fn generate() -> Result<SignerKey, String> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
            // A value outside the curve's order is rare; draw again.
            if let Ok(k) = SigningKey::from_bytes(&bytes.into()) {
                return Ok(SignerKey(k));
            }
        }
    }

    /// The PKCS#8 PEM private key in `path` (`-----BEGIN PRIVATE KEY-----`).
    pub fn read(path: &Path) -> Result<SignerKey, String> {
        let text = read_small(path)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| format!("{} is not a PEM private key", path.display()))?;
        SigningKey::from_pkcs8_pem(text)
            .map(SignerKey)
            .map_err(|e| {
                format!(
                    "{} is not a PKCS#8 PEM ECDSA P-256 private key ({e}); `airlock sign keygen` \
                 writes one",
                    path.display()
                )
            })
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> Result<String, String> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }

    /// The public key as PEM (what `[trust.keys]` names).
    pub fn public_pem(&self) -> Result<String, String> {
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string())
    }

    /// The base64 DER signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        use base64::Engine as _;
        let signature: Signature = self.0.sign(message);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

/// A small file, whole (keys and signatures; a larger one is not what it claims to be).
pub fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::core::files::read_at_most(file, MAX_SIGNATURE_BYTES, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair(name: &str) -> (SignerKey, TrustedKey) {
        let k = SignerKey::generate().unwrap();
        let public = VerifyingKey::from_public_key_pem(&k.public_pem().unwrap()).unwrap();
        (
            k,
            TrustedKey {
                name: name.into(),
                key: public,
            },
        )
    }

    #[test]
    fn detached_signatures() {
        let (signer, trusted) = key_pair("team");
        let (_, other) = key_pair("other");
        let sig = signer.sign(b"component");
        let keys = [other.clone(), trusted];
        assert_eq!(
            verify_detached(&keys, b"component", sig.as_bytes())
                .unwrap()
                .name,
            "team"
        );
        assert_eq!(
            verify_detached(&keys, b"componenT", sig.as_bytes()).unwrap_err(),
            Unsigned::Untrusted(1)
        );
        assert_eq!(
            verify_detached(&[other], b"component", sig.as_bytes()).unwrap_err(),
            Unsigned::Untrusted(1)
        );
        assert!(matches!(
            verify_detached(&keys, b"component", b"%%%").unwrap_err(),
            Unsigned::Malformed(_)
        ));
    }

    #[test]
    fn registry_signatures() {
        use base64::Engine as _;
        let (signer, trusted) = key_pair("team");
        let keys = [trusted];
        let d = format!("sha256:{}", "a".repeat(64));
        let payload = simple_signing_payload("reg/x", &d);
        let good = RegistrySignature {
            payload: base64::engine::general_purpose::STANDARD.encode(&payload),
            signature: signer.sign(&payload),
        };
        assert_eq!(
            verify_registry(&keys, &d, std::slice::from_ref(&good))
                .unwrap()
                .name,
            "team"
        );
        let other = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            verify_registry(&keys, &other, &[good]).unwrap_err(),
            Unsigned::OtherDigest(d.clone())
        );
        assert!(matches!(
            verify_registry(&keys, &d, &[]).unwrap_err(),
            Unsigned::Missing(_)
        ));
        // Junk before a good signature does not hide it; junk alone is named as such.
        let junk = RegistrySignature {
            payload: "%%%".into(),
            signature: "%%%".into(),
        };
        let good_again = RegistrySignature {
            payload: base64::engine::general_purpose::STANDARD.encode(&payload),
            signature: signer.sign(&payload),
        };
        assert_eq!(
            verify_registry(&keys, &d, &[junk.clone(), good_again])
                .unwrap()
                .name,
            "team"
        );
        assert!(matches!(
            verify_registry(&keys, &d, &[junk]).unwrap_err(),
            Unsigned::Malformed(_)
        ));
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "a".repeat(64)));
        // A private key round-trips through PEM.
        let pem = signer.private_pem().unwrap();
        let dir = std::env::temp_dir().join(format!("airlock-sig-{}", std::process::id()));
        std::fs::write(&dir, pem).unwrap();
        let again = SignerKey::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(again.public_pem().unwrap(), signer.public_pem().unwrap());
    }
}
