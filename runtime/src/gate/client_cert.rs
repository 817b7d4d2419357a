//! The client certificate of a mutual-TLS connection, as the auth layer uses it: its sha256
//! (what a certificate-bound token's `cnf.x5t#S256` names, RFC 8705), its subject and its
//! SPIFFE id (what `[[auth.client_certs]]` map to principals). The TLS layer has already
//! checked that the `[server.tls] client_ca` signed it.

use crate::config::auth::CertName;
use sha2::{Digest, Sha256};

/// A verified client certificate, read once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// sha256 of the certificate's DER.
    pub sha256: [u8; 32],
    /// The subject, rendered as RFC 4514 (empty when it could not be read).
    pub subject: String,
    /// The SPIFFE id: the certificate's URI SAN when it has exactly one and it is `spiffe://`.
    pub spiffe_id: Option<String>,
}

impl ClientCertificate {
    /// Read the leaf certificate a client showed (DER).
    pub fn from_der(der: &[u8]) -> ClientCertificate {
        use x509_cert::der::Decode as _;
        let sha256: [u8; 32] = Sha256::digest(der).into();
        let Ok(cert) = x509_cert::Certificate::from_der(der) else {
            // rustls accepted it, so this is a form this parser does not read: it still binds
            // tokens by its digest, and names no principal.
            return ClientCertificate {
                sha256,
                subject: String::new(),
                spiffe_id: None,
            };
        };
        let tbs = &cert.tbs_certificate;
        let mut uris = Vec::new();
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id != x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                continue;
            }
            let Ok(names) =
                x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes())
            else {
                continue;
            };
            for name in names.0 {
                if let x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(uri) =
                    name
                {
                    uris.push(uri.to_string());
                }
            }
        }
        // An SVID carries exactly one URI SAN (the SPIFFE X.509-SVID specification); a
        // certificate with several names no SPIFFE identity.
        let spiffe_id = match uris.as_slice() {
            [one] if one.starts_with("spiffe://") => Some(one.clone()),
            _ => None,
        };
        ClientCertificate {
            sha256,
            subject: tbs.subject.to_string(),
            spiffe_id,
        }
    }

    /// Does this certificate carry `name`?
    pub fn carries(&self, name: &CertName) -> bool {
        match name {
            CertName::Subject(s) => !self.subject.is_empty() && self.subject == *s,
            CertName::SpiffeId(id) => self.spiffe_id.as_ref() == Some(id),
        }
    }
}
