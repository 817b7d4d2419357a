//! `[server.tls]`: TLS on the MCP listener. The certificate chain and key are PEM files; the
//! key is treated like a secret (readable by Airlock's user only, in no grant). Only TLS 1.3
//! and 1.2 are spoken. A change of either file reloads them; turning TLS on or off needs a
//! restart.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
}

/// `[server.tls]`, loaded.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// sha256 of each file as loaded, hex (a change of either is a reload).
    pub cert_sha256: String,
    pub key_sha256: String,
    /// What the listener hands each connection.
    pub config: Arc<rustls::ServerConfig>,
}

/// The same files with the same contents (the rustls configuration follows from them).
impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert, &self.key, &self.cert_sha256, &self.key_sha256)
            == (
                &other.cert,
                &other.key,
                &other.cert_sha256,
                &other.key_sha256,
            )
    }
}

impl Eq for TlsSettings {}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
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

/// Read and check `[server.tls]` (paths relative to `base`). Errors name the key.
pub(crate) fn resolve(s: &TlsSection, base: &Path) -> Result<TlsSettings, (String, String)> {
    use sha2::Digest as _;
    let cert = base.join(&s.cert);
    let key = base.join(&s.key);
    let at = |k: &str| format!("server › tls › {k}");
    crate::core::files::trusted_file(&cert)
        .map_err(|p| (at("cert"), format!("the certificate {p}")))?;
    crate::core::files::trusted_file(&key).map_err(|p| (at("key"), format!("the key {p}")))?;
    let cert_pem = read_pem(&cert, "certificate", false).map_err(|e| (at("cert"), e))?;
    let key_pem = read_pem(&key, "key", true).map_err(|e| (at("key"), e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                at("cert"),
                format!("{} is not PEM certificates: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            at("cert"),
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            at("key"),
            format!("{} is not a PEM private key: {e}", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| (at("cert"), e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
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
        config: Arc::new(config),
    })
}
