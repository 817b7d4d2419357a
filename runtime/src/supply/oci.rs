//! Components in OCI registries (`oci://REGISTRY/REPOSITORY:TAG` or `…@sha256:…`), in the
//! CNCF Wasm OCI artifact layout: an image manifest whose config is
//! `application/vnd.wasm.config.v0+json` and whose one layer is the component,
//! `application/wasm`. Pulled artifacts are cached by manifest digest, checked again on every
//! read, so a restart with the registry down serves what was pulled before.

use crate::core::redact::SecretValue;
use crate::supply::signature::{self, RegistrySignature};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The CNCF layout's config and layer media types, and the older wasm-to-oci layer type
/// (read, never written).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
const LEGACY_LAYER_MEDIA_TYPE: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
/// The largest manifest or signature blob believed (real ones are a few KiB).
const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// How Airlock reaches registries: credentials per registry host (from `[secrets]`), the
/// hosts spoken to over plain HTTP, and the time a whole pull may take.
#[derive(Clone, Default)]
pub struct Registries {
    pub credentials: BTreeMap<String, (String, SecretValue)>,
    pub plain_http: Vec<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("plain_http", &self.plain_http)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Registries {
    fn client(&self) -> Client {
        crate::supply::install_crypto();
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.plain_http.clone()),
            // The Mozilla roots (as the rest of Airlock's outbound TLS): nothing read from
            // the system's store, which confinement does not open.
            tls_certs_only: webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|c| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Der,
                    data: c.to_vec(),
                })
                .collect(),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            platform_resolver: None,
            ..ClientConfig::default()
        })
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        match self.credentials.get(reference.resolve_registry()) {
            Some((user, password)) => {
                RegistryAuth::Basic(user.clone(), password.expose().to_owned())
            }
            None => RegistryAuth::Anonymous,
        }
    }

    /// The registry's port, for confinement.
    pub fn port_of(&self, reference: &Reference) -> u16 {
        let registry = reference.resolve_registry();
        match registry.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
            Some(p) => p,
            None if self.plain_http.iter().any(|h| h == registry) => 80,
            None => 443,
        }
    }
}

/// `REGISTRY/REPOSITORY:TAG` or `…@sha256:HEX` (after `oci://`).
pub fn parse(spec: &str) -> Result<Reference, String> {
    // The registry is always named: a short name would silently mean Docker Hub.
    let first = spec.split('/').next().unwrap_or_default();
    let names_registry =
        spec.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !names_registry {
        return Err(format!(
            "\"oci://{spec}\" names no registry: write oci://REGISTRY/REPOSITORY:TAG \
             (the registry a host name, HOST:PORT or localhost)"
        ));
    }
    let reference: Reference = spec
        .parse()
        .map_err(|e| format!("\"oci://{spec}\" is not an OCI reference: {e}"))?;
    if let Some(d) = reference.digest()
        && !is_sha256(d)
    {
        return Err(format!(
            "\"oci://{spec}\": only sha256 digests are accepted"
        ));
    }
    if reference.tag().is_none() && reference.digest().is_none() {
        return Err(format!("\"oci://{spec}\" names neither a tag nor a digest"));
    }
    Ok(reference)
}

/// A registry host on this machine (`localhost`, `127.x.y.z`, `[::1]`, with or without a port).
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What a pull gave.
#[derive(Debug)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    /// The artifact's manifest digest, `sha256:HEX`.
    pub digest: String,
    /// Its cosign signatures, when asked for (empty: none in the registry; `Err`: the
    /// registry could not say).
    pub signatures: Result<Vec<RegistrySignature>, String>,
    /// Served from the cache without asking the registry.
    pub from_cache: bool,
}

fn err(reference: &Reference, what: &str, e: impl std::fmt::Display) -> String {
    format!("oci://{}: {what}: {e}", reference.whole())
}

/// The digest the tag of `reference` names now, asked of the registry.
pub fn resolve_tag(reference: &Reference, registries: &Registries) -> Result<String, String> {
    let client = registries.client();
    let auth = registries.auth(reference);
    let digest = crate::supply::block_on(registries.timeout, async {
        client.fetch_manifest_digest(reference, &auth).await
    })
    .map_err(|e| err(reference, "cannot resolve the tag", e))?
    .map_err(|e| err(reference, "cannot resolve the tag", e))?;
    if !is_sha256(&digest) {
        return Err(err(
            reference,
            "the registry answered a digest that is not sha256",
            digest,
        ));
    }
    Ok(digest)
}

/// The artifact `digest` of `reference`'s repository: from the cache in `cache_dir` if it
/// is there and intact, else from the registry (then cached). With `signatures`, its cosign
/// signatures too: the cached ones if one of them verifies with `keys`, else the registry's
/// (cached when found; the cached ones when the registry cannot be reached). No larger than
/// `max_bytes`.
pub fn pull(
    reference: &Reference,
    digest: &str,
    cache_dir: &Path,
    registries: &Registries,
    signatures: Option<&[signature::TrustedKey]>,
    max_bytes: u64,
) -> Result<Pulled, String> {
    let dir = cache_path(cache_dir, digest);
    let pinned = reference.clone_with_digest(digest.to_owned());
    let cached = read_cache(&dir, digest);
    let (bytes, from_cache) = match cached {
        Some(bytes) => (bytes, true),
        None => (fetch(&pinned, digest, &dir, registries, max_bytes)?, false),
    };
    let found = match signatures {
        None => Ok(Vec::new()),
        Some(keys) => signatures_of(&pinned, digest, &dir, registries, keys),
    };
    Ok(Pulled {
        bytes,
        digest: digest.to_owned(),
        signatures: found,
        from_cache,
    })
}

/// The cached signatures of artifact `digest` if one of them verifies with `keys`, else the
/// registry's (cached when there are any), else, when the registry cannot say, the cached ones
/// (which then fail verification with their reason) or the error.
fn signatures_of(
    pinned: &Reference,
    digest: &str,
    dir: &Path,
    registries: &Registries,
    keys: &[signature::TrustedKey],
) -> Result<Vec<RegistrySignature>, String> {
    let file = dir.join("signatures.json");
    let cached = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<RegistrySignature>>(&b).ok())
        .unwrap_or_default();
    if signature::verify_registry(keys, digest, &cached).is_ok() {
        return Ok(cached);
    }
    match fetch_signatures(pinned, digest, registries) {
        Ok(s) => {
            if !s.is_empty() {
                let text = serde_json::to_vec(&s).map_err(|e| e.to_string())?;
                write_atomic(&file, &text)?;
            }
            Ok(s)
        }
        Err(e) if !cached.is_empty() => {
            tracing::warn!(reference = %pinned.whole(), error = %e, "cannot fetch signatures; checking the cached ones");
            Ok(cached)
        }
        Err(e) => Err(e),
    }
}

/// `<cache>/oci/sha256/<hex>`.
fn cache_path(cache_dir: &Path, digest: &str) -> PathBuf {
    cache_dir
        .join("oci")
        .join("sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The cached component of manifest `digest`, if the manifest's digest and the layer's are
/// still right.
fn read_cache(dir: &Path, digest: &str) -> Option<Vec<u8>> {
    let manifest = std::fs::read(dir.join("manifest.json")).ok()?;
    if sha256_of(&manifest) != digest {
        return None;
    }
    let layer = component_layer(&manifest).ok()?;
    let bytes = std::fs::read(dir.join("component.wasm")).ok()?;
    (sha256_of(&bytes) == layer.digest).then_some(bytes)
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The one component layer of a CNCF Wasm artifact's manifest.
fn component_layer(manifest: &[u8]) -> Result<oci_client::manifest::OciDescriptor, String> {
    let m: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("its manifest is not an OCI image manifest ({e})"))?;
    let wasm: Vec<_> = m
        .layers
        .iter()
        .filter(|l| {
            l.media_type == WASM_LAYER_MEDIA_TYPE || l.media_type == LEGACY_LAYER_MEDIA_TYPE
        })
        .collect();
    match (wasm.as_slice(), m.layers.len()) {
        ([one], 1) => Ok((*one).clone()),
        _ => Err(format!(
            "it is not a Wasm component artifact: one layer of type {WASM_LAYER_MEDIA_TYPE} \
             expected, found [{}] (config {})",
            m.layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            m.config.media_type
        )),
    }
}

fn fetch(
    pinned: &Reference,
    digest: &str,
    dir: &Path,
    registries: &Registries,
    max_bytes: u64,
) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt as _;
    let client = registries.client();
    let auth = registries.auth(pinned);
    let (manifest, bytes) = crate::supply::block_on(registries.timeout, async {
        let (manifest, got) = client
            .pull_manifest_raw(
                pinned,
                &auth,
                &[
                    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
                ],
            )
            .await
            .map_err(|e| err(pinned, "cannot pull the manifest", e))?;
        if manifest.len() > MAX_MANIFEST_BYTES {
            return Err(err(pinned, "the manifest is too large", manifest.len()));
        }
        // The registry's word is not enough: the bytes must hash to the digest asked for.
        let actual = sha256_of(&manifest);
        if actual != digest {
            return Err(err(
                pinned,
                "the registry served a manifest of another digest",
                format!("{actual} (got {got})"),
            ));
        }
        let layer =
            component_layer(&manifest).map_err(|e| format!("oci://{}: {e}", pinned.whole()))?;
        if layer.size < 0 || layer.size as u64 > max_bytes {
            return Err(err(
                pinned,
                "the component is too large",
                format!("{} bytes; the limit is {max_bytes}", layer.size),
            ));
        }
        let mut stream = client
            .pull_blob_stream(pinned, &layer)
            .await
            .map_err(|e| err(pinned, "cannot pull the component", e))?
            .stream;
        // Grown as bytes arrive, not sized by what the registry claims.
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| err(pinned, "cannot pull the component", e))?;
            if (bytes.len() + chunk.len()) as u64 > layer.size as u64 {
                return Err(err(
                    pinned,
                    "the component is larger than its manifest says",
                    layer.size,
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        if sha256_of(&bytes) != layer.digest {
            return Err(err(
                pinned,
                "the component does not match its layer digest",
                &layer.digest,
            ));
        }
        Ok::<_, String>((manifest, bytes))
    })
    .map_err(|e| err(pinned, "cannot pull", e))??;
    check_component(&bytes).map_err(|e| format!("oci://{}: {e}", pinned.whole()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The component first: a manifest in the cache means its component is whole.
    write_atomic(&dir.join("component.wasm"), &bytes)?;
    write_atomic(&dir.join("manifest.json"), &manifest)?;
    Ok(bytes)
}

/// A Wasm component's header: `\0asm`, then the component layer's version.
pub fn check_component(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => {
            Err("it is a core Wasm module, not a component".into())
        }
        _ => Err("it is not a Wasm component".into()),
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// The tag cosign keeps the signatures of artifact `digest` under, in `reference`'s repository.
fn signature_reference(reference: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        signature::signature_tag(digest),
    )
}

/// The manifest of the signature tag `tag` (`None`: there is none). Either manifest media
/// type: older cosign writes Docker's.
async fn signature_manifest(
    client: &Client,
    auth: &RegistryAuth,
    tag: &Reference,
) -> Result<Option<OciImageManifest>, String> {
    let manifest = match client
        .pull_manifest_raw(
            tag,
            auth,
            &[
                oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
            ],
        )
        .await
    {
        Ok((m, _)) => m,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(err(tag, "cannot fetch the signatures", e)),
    };
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(err(
            tag,
            "the signature manifest is too large",
            manifest.len(),
        ));
    }
    serde_json::from_slice(&manifest)
        .map(Some)
        .map_err(|e| err(tag, "the signature manifest is not an image manifest", e))
}

/// A blob of at most `max` bytes whose sha256 is `layer`'s digest (`None`: it is not).
async fn small_blob(
    client: &Client,
    reference: &Reference,
    layer: &oci_client::manifest::OciDescriptor,
    max: u64,
) -> Result<Option<Vec<u8>>, String> {
    use futures_util::StreamExt as _;
    if layer.size < 0 || layer.size as u64 > max {
        return Ok(None);
    }
    let mut stream = client
        .pull_blob_stream(reference, layer)
        .await
        .map_err(|e| err(reference, "cannot fetch a blob", e))?
        .stream;
    let mut bytes = Vec::with_capacity(layer.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| err(reference, "cannot fetch a blob", e))?;
        if (bytes.len() + chunk.len()) as u64 > layer.size as u64 {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((sha256_of(&bytes) == layer.digest).then_some(bytes))
}

/// The cosign signatures stored beside artifact `digest` (none: an empty list). Layers that
/// are not simple-signing ones, or whose blob does not match, are passed over.
pub fn fetch_signatures(
    reference: &Reference,
    digest: &str,
    registries: &Registries,
) -> Result<Vec<RegistrySignature>, String> {
    use base64::Engine as _;
    let client = registries.client();
    let auth = registries.auth(reference);
    let tag = signature_reference(reference, digest);
    crate::supply::block_on(registries.timeout, async {
        let Some(m) = signature_manifest(&client, &auth, &tag).await? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        // The newest 64 (a signature is appended): a tag grown past that cannot hide a new
        // one, and cannot make a load fetch without end.
        for layer in m.layers.iter().rev().take(64) {
            if layer.media_type != signature::SIMPLE_SIGNING_MEDIA_TYPE {
                continue;
            }
            let Some(sig) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(signature::SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            let Some(payload) =
                small_blob(&client, &tag, layer, signature::MAX_SIGNATURE_BYTES).await?
            else {
                continue;
            };
            found.push(RegistrySignature {
                payload: base64::engine::general_purpose::STANDARD.encode(&payload),
                signature: sig.clone(),
            });
        }
        Ok(found)
    })
    .map_err(|e| err(&tag, "cannot fetch the signatures", e))?
}

/// Push `blobs` then the manifest `manifest` (serialized here, so its digest is computed
/// here, not taken from the registry) to `reference`; the manifest's digest.
async fn push_manifest(
    client: &Client,
    auth: &RegistryAuth,
    reference: &Reference,
    blobs: Vec<(Vec<u8>, String)>,
    manifest: &OciImageManifest,
) -> Result<String, String> {
    client
        .store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    for (bytes, digest) in blobs {
        client
            .push_blob(reference, bytes, &digest)
            .await
            .map_err(|e| err(reference, "cannot push a blob", e))?;
    }
    let body = serde_json::to_vec(manifest).map_err(|e| e.to_string())?;
    let digest = sha256_of(&body);
    let content_type = manifest
        .media_type
        .as_deref()
        .unwrap_or(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE)
        .parse()
        .map_err(|_| "a manifest media type is a header value".to_owned())?;
    client
        .push_manifest_raw(reference, body, content_type)
        .await
        .map_err(|e| err(reference, "cannot push the manifest", e))?;
    Ok(digest)
}

fn descriptor(
    media_type: &str,
    bytes: &[u8],
    annotations: Option<BTreeMap<String, String>>,
) -> oci_client::manifest::OciDescriptor {
    oci_client::manifest::OciDescriptor {
        media_type: media_type.to_owned(),
        digest: sha256_of(bytes),
        size: bytes.len() as i64,
        urls: None,
        annotations,
        artifact_type: None,
    }
}

/// Push `component` to `reference` (a tag) in the CNCF layout; the digest of the manifest
/// pushed (what a signature must name).
pub fn push(
    reference: &Reference,
    component: &[u8],
    registries: &Registries,
) -> Result<String, String> {
    check_component(component)?;
    let client = registries.client();
    let auth = registries.auth(reference);
    let layer = descriptor(WASM_LAYER_MEDIA_TYPE, component, None);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.digest],
    }))
    .map_err(|e| e.to_string())?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.into()),
        config: descriptor(WASM_CONFIG_MEDIA_TYPE, &config, None),
        layers: vec![layer.clone()],
        subject: None,
        artifact_type: Some(WASM_CONFIG_MEDIA_TYPE.into()),
        annotations: None,
    };
    let config_digest = manifest.config.digest.clone();
    crate::supply::block_on(registries.timeout, async {
        push_manifest(
            &client,
            &auth,
            reference,
            vec![
                (component.to_vec(), layer.digest.clone()),
                (config, config_digest),
            ],
            &manifest,
        )
        .await
    })
    .map_err(|e| err(reference, "cannot push", e))?
}

/// Add a cosign signature (`payload` signed as `signature`) beside artifact `digest`,
/// keeping every layer the signature tag already has as it is.
pub fn push_signature(
    reference: &Reference,
    digest: &str,
    payload: &[u8],
    signature_b64: &str,
    registries: &Registries,
) -> Result<(), String> {
    let client = registries.client();
    let auth = registries.auth(reference);
    let tag = signature_reference(reference, digest);
    crate::supply::block_on(registries.timeout, async {
        let existing = signature_manifest(&client, &auth, &tag).await?;
        let mut layers = existing.as_ref().map(|m| m.layers.clone()).unwrap_or_default();
        let new = descriptor(
            signature::SIMPLE_SIGNING_MEDIA_TYPE,
            payload,
            Some(BTreeMap::from([(
                signature::SIGNATURE_ANNOTATION.to_owned(),
                signature_b64.to_owned(),
            )])),
        );
        if layers.iter().any(|l| l.digest == new.digest && l.annotations == new.annotations) {
            return Ok(());
        }
        layers.push(new.clone());
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        }))
        .map_err(|e| e.to_string())?;
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.into()),
            config: descriptor(oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE, &config, None),
            layers,
            subject: None,
            artifact_type: None,
            annotations: existing.and_then(|m| m.annotations),
        };
        let config_digest = manifest.config.digest.clone();
        push_manifest(
            &client,
            &auth,
            &tag,
            vec![(payload.to_vec(), new.digest), (config, config_digest)],
            &manifest,
        )
        .await
        .map(|_| ())
    })
    .map_err(|e| err(&tag, "cannot push the signature", e))?
}

/// Write `bytes` to `path` through a temporary file beside it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.{}.tmp",
        std::process::id(),
        crate::core::ids::random_id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry_and_only_sha256_digests() {
        let r = parse("registry.example/team/tool:1.2.0").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("registry.example", "team/tool", Some("1.2.0"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("127.0.0.1:5000/tool@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert!(parse("localhost/tool:1").is_ok());
        // A short name would mean Docker Hub.
        for short in ["team/tool:1", "tool:1"] {
            assert!(
                parse(short).unwrap_err().contains("names no registry"),
                "{short}"
            );
        }
        assert!(parse(&format!("r.example/t@sha512:{}", "a".repeat(128))).is_err());
        assert!(is_sha256(&d));
        assert!(!is_sha256(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256("sha256:abc"));
    }

    #[test]
    fn loopback_registries() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "localhost.evil:5000",
            "10.0.0.1:5000",
            "registry.example",
            "::1",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn component_headers() {
        assert!(check_component(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(
            check_component(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core Wasm module")
        );
        assert!(check_component(b"PK\x03\x04").is_err());
    }
}
