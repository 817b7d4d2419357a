//! Components from `https://` URLs. The configuration must pin their sha256: the server that
//! serves the file is not trusted with what it contains. A fetched component is cached by that
//! digest, so a restart does not fetch it again, and a server that is down does not matter
//! once it has been fetched.

use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `<cache>/https/sha256/<hex>.wasm`.
fn cache_path(cache_dir: &Path, sha256: &[u8; 32]) -> PathBuf {
    cache_dir
        .join("https")
        .join("sha256")
        .join(format!("{}.wasm", hex::encode(sha256)))
}

/// A detached signature as found: `Ok(None)` when there is none, `Err` when the server could
/// not say.
pub type DetachedSignature = Result<Option<Vec<u8>>, String>;

/// Refuse a URL that is not `https://`, or that carries credentials (they would be in every
/// log line and error that names the source).
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    // The URL itself is not repeated in errors: it could hold the credentials refused here.
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("an https:// source is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err("only https:// URLs are fetched".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "\"{}\": no credentials in the URL (they would be logged)",
            parsed.host_str().unwrap_or_default()
        ));
    }
    Ok(parsed)
}

/// The component at `url`, whose sha256 must be `sha256`: from the cache if it is there,
/// else fetched (at most `max_bytes`, within `timeout`) and cached. With `keys`, also its
/// detached signature at the URL with `.sig` added to the path (`Ok(None)`: there is none;
/// `Err`: the server could not say): the cached one if it verifies with `keys`, else the
/// server's (cached), else the cached one to fail verification with its reason.
pub fn fetch(
    url: &str,
    sha256: &[u8; 32],
    cache_dir: &Path,
    timeout: Duration,
    max_bytes: u64,
    keys: Option<&[crate::supply::signature::TrustedKey]>,
) -> Result<(Vec<u8>, DetachedSignature), String> {
    let parsed = check_url(url)?;
    let url = &shown(&parsed);
    let path = cache_path(cache_dir, sha256);
    let sig_path = path.with_extension("wasm.sig");
    let cached = std::fs::read(&path)
        .ok()
        .filter(|b| <[u8; 32]>::from(sha2::Sha256::digest(b)) == *sha256);
    let bytes = match cached {
        Some(b) => b,
        None => {
            let bytes = get(&parsed, timeout, max_bytes)?
                .ok_or_else(|| format!("{url}: not found (404)"))?;
            let actual: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            if actual != *sha256 {
                return Err(format!(
                    "{url} serves a file whose sha256 is {}, not the pinned {}",
                    hex::encode(actual),
                    hex::encode(sha256)
                ));
            }
            crate::supply::oci::check_component(&bytes).map_err(|e| format!("{url}: {e}"))?;
            std::fs::create_dir_all(path.parent().expect("a cache file has a parent"))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            crate::supply::oci::write_atomic(&path, &bytes)?;
            bytes
        }
    };
    let Some(keys) = keys else {
        return Ok((bytes, Ok(None)));
    };
    let cached_sig = crate::supply::signature::read_small(&sig_path).ok();
    if let Some(sig) = &cached_sig
        && crate::supply::signature::verify_detached(keys, &bytes, sig).is_ok()
    {
        return Ok((bytes, Ok(cached_sig)));
    }
    let mut sig_url = parsed.clone();
    sig_url.set_path(&format!("{}.sig", parsed.path()));
    let fetched = match get(
        &sig_url,
        timeout,
        crate::supply::signature::MAX_SIGNATURE_BYTES,
    ) {
        Ok(Some(sig)) => {
            // The cache is a convenience: a signature that cannot be kept is still checked.
            if let Err(e) = crate::supply::oci::write_atomic(&sig_path, &sig) {
                tracing::warn!(error = %e, "cannot cache a component signature");
            }
            Ok(Some(sig))
        }
        Ok(None) => Ok(cached_sig),
        Err(_) if cached_sig.is_some() => Ok(cached_sig),
        Err(e) => Err(e),
    };
    Ok((bytes, fetched))
}

/// `url` as logs and errors show it: without its query, which may carry a token.
pub fn shown(url: &reqwest::Url) -> String {
    let mut shown = format!(
        "https://{}{}",
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?…");
    }
    shown
}

/// The body at `url` (`None`: 404), at most `max_bytes`. Errors name the host only (the
/// path and query may carry a token).
fn get(url: &reqwest::Url, timeout: Duration, max_bytes: u64) -> Result<Option<Vec<u8>>, String> {
    let shown = format!("https://{}", url.host_str().unwrap_or_default());
    let url = url.clone();
    crate::supply::install_crypto();
    let mut roots = Vec::new();
    for c in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        roots.push(reqwest::Certificate::from_der(c).map_err(|e| e.to_string())?);
    }
    let client = reqwest::Client::builder()
        .https_only(true)
        .tls_certs_only(roots)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| format!("{shown}: {e}"))?;
    crate::supply::block_on(timeout, async {
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{shown}: {}", e.without_url()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("{shown}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{shown}: {}", e.without_url()))?
        {
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(format!("{shown}: larger than {max_bytes} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    })
    .map_err(|e| format!("{shown}: {e}"))?
}
