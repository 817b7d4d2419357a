//! `[server.tls]`: TLS on the MCP listener. The certificate chain and key are PEM files; the
//! key is treated like a secret (readable by Airlock's user only, in no grant). Only TLS 1.3
//! and 1.2 are spoken. A change of either file reloads them; turning TLS on or off needs a
//! restart.
//!
//! With `client_ca`, clients may (`client_auth = "optional"`) or must (`"required"`, the
//! default) show a certificate that CA signed: it can name a service principal
//! (`[[auth.client_certs]]`) and binds certificate-bound tokens (RFC 8705).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    /// The certificate chain, leaf first (PEM).
    cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    key: PathBuf,
    /// The CA certificates (PEM) that sign client certificates: mutual TLS.
    client_ca: Option<PathBuf>,
    /// Whether a client must show a certificate; only with `client_ca`.
    client_auth: Option<ClientAuth>,
    /// Certificate revocation lists (PEM) of the client CA: a revoked client certificate gets
    /// no handshake.
    client_crl: Option<PathBuf>,
}

/// `[server.tls] client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// A client without a certificate is let through the handshake (and authenticates
    /// otherwise); one with a certificate the CA did not sign is refused.
    Optional,
    /// The handshake fails without a certificate the CA signed.
    Required,
}

/// `[server.tls]`, loaded.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// sha256 of each file as loaded, hex (a change of either is a reload).
    pub cert_sha256: String,
    pub key_sha256: String,
    /// `client_ca`, the sha256 of what was loaded from it, and `client_auth`.
    pub client_ca: Option<(PathBuf, String, ClientAuth)>,
    /// `client_crl`, and the sha256 of what was loaded from it.
    pub client_crl: Option<(PathBuf, String)>,
    /// What the listener hands each connection.
    pub config: Arc<rustls::ServerConfig>,
}

/// The same files with the same contents (the rustls configuration follows from them).
impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.files() == other.files()
            && self.client_ca == other.client_ca
            && self.client_crl == other.client_crl
    }
}

impl TlsSettings {
    /// Every file read, and the sha256 of what was loaded from it (a change is a reload).
    pub fn files(&self) -> Vec<(&PathBuf, &String)> {
        let mut files = vec![
            (&self.cert, &self.cert_sha256),
            (&self.key, &self.key_sha256),
        ];
        files.extend(self.client_ca.iter().map(|(p, sha, _)| (p, sha)));
        files.extend(self.client_crl.iter().map(|(p, sha)| (p, sha)));
        files
    }
}

impl Eq for TlsSettings {}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

/// The largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Read a PEM file; with `private`, only if the file opened (not the path looked up again)
/// belongs to this process's user or root and no one else may read it.
fn read_pem(path: &Path, what: &str, private: bool) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if private {
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "{} belongs to uid {}, not to this process (uid {me}) or root",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{} may be read by other users (mode {:o}): make it readable by its owner \
                 only (chmod 600)",
                path.display(),
                meta.mode() & 0o777
            ));
        }
    }
    crate::core::files::read_at_most(file, MAX_PEM_BYTES, path)
        .map_err(|e| format!("the {what} {e}"))
}

/// The PEM objects (certificates, revocation lists) of a trusted file read for `[server.tls]
/// key`: its path, its text (for the digest) and the objects, at least one. `what` names one
/// in errors, `plural` several.
#[allow(clippy::type_complexity)]
fn read_pem_objects<T: PemObject>(
    path: PathBuf,
    key: &str,
    what: &str,
    plural: &str,
) -> Result<(PathBuf, Vec<u8>, Vec<T>), (String, String)> {
    let at = format!("server › tls › {key}");
    crate::core::files::trusted_file(&path).map_err(|p| (at.clone(), format!("the {what} {p}")))?;
    let pem = read_pem(&path, what, false).map_err(|e| (at.clone(), e))?;
    let objects: Vec<T> = T::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                at.clone(),
                format!("{} is not PEM {plural}: {e}", path.display()),
            )
        })?;
    if objects.is_empty() {
        return Err((at, format!("{} holds no {what}", path.display())));
    }
    Ok((path, pem, objects))
}

/// Read and check `[server.tls]` (paths relative to `base`). Errors name the key.
pub(crate) fn resolve(s: &TlsSection, base: &Path) -> Result<TlsSettings, (String, String)> {
    use sha2::Digest as _;
    let cert = base.join(&s.cert);
    let key = base.join(&s.key);
    let at = |k: &str| format!("server › tls › {k}");
    crate::core::files::trusted_file(&key).map_err(|p| (at("key"), format!("the key {p}")))?;
    let (cert, cert_pem, chain) =
        read_pem_objects::<CertificateDer<'static>>(cert, "cert", "certificate", "certificates")?;
    let key_pem = read_pem(&key, "key", true).map_err(|e| (at("key"), e))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            at("key"),
            format!("{} is not a PEM private key: {e}", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| (at("cert"), e.to_string()))?;
    let client_ca = match (&s.client_ca, s.client_auth) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err((
                at("client_auth"),
                "needs client_ca: the CA certificates that sign client certificates".into(),
            ));
        }
        (Some(ca), auth) => {
            let (path, pem, roots) = read_pem_objects::<CertificateDer<'static>>(
                base.join(ca),
                "client_ca",
                "client CA certificate",
                "certificates",
            )?;
            Some((path, pem, roots, auth.unwrap_or(ClientAuth::Required)))
        }
    };
    let client_crl = match (&s.client_crl, &client_ca) {
        (None, _) => None,
        (Some(_), None) => {
            return Err((
                at("client_crl"),
                "needs client_ca: the revocation lists are the client CA's".into(),
            ));
        }
        (Some(crl), Some(_)) => Some(read_pem_objects::<CertificateRevocationListDer<'static>>(
            base.join(crl),
            "client_crl",
            "client revocation list (X509 CRL)",
            "revocation lists",
        )?),
    };
    let builder = match &client_ca {
        None => builder.with_no_client_auth(),
        Some((path, _, certificates, auth)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates {
                roots.add(c.clone()).map_err(|e| {
                    (
                        at("client_ca"),
                        format!(
                            "{} holds a certificate that is not a CA's: {e}",
                            path.display()
                        ),
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            // Revocation is checked for the client's certificate: the CA's list says whether
            // it was revoked (intermediates' status is not asked for).
            let verifier = match &client_crl {
                Some((_, _, crls)) => verifier
                    .with_crls(crls.iter().cloned())
                    .only_check_end_entity_revocation(),
                None => verifier,
            };
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            }
            .build()
            .map_err(|e| (at("client_ca"), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| {
        (
            at("key"),
            format!("the key does not fit the certificate, or is unusable: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSettings {
        cert,
        key,
        cert_sha256: hex::encode(sha2::Sha256::digest(&cert_pem)),
        key_sha256: hex::encode(sha2::Sha256::digest(&key_pem)),
        client_ca: client_ca
            .map(|(path, pem, _, auth)| (path, hex::encode(sha2::Sha256::digest(&pem)), auth)),
        client_crl: client_crl
            .map(|(path, pem, _)| (path, hex::encode(sha2::Sha256::digest(&pem)))),
        config: Arc::new(config),
    })
}
