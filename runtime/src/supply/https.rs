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

/// The component at `url`, whose sha256 must be `sha256`: from the cache if it is there,
/// else fetched (at most `max_bytes`, within `timeout`) and cached. With `signature`, the
/// detached signature at `URL.sig` too (`None`: there is none).
pub fn fetch(
    url: &str,
    sha256: &[u8; 32],
    cache_dir: &Path,
    timeout: Duration,
    max_bytes: u64,
    signature: bool,
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let path = cache_path(cache_dir, sha256);
    let sig_path = path.with_extension("wasm.sig");
    let cached = std::fs::read(&path)
        .ok()
        .filter(|b| <[u8; 32]>::from(sha2::Sha256::digest(b)) == *sha256);
    let bytes = match cached {
        Some(b) => b,
        None => {
            let bytes =
                get(url, timeout, max_bytes)?.ok_or_else(|| format!("{url}: not found (404)"))?;
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
    if !signature {
        return Ok((bytes, None));
    }
    if let Ok(sig) = crate::supply::signature::read_small(&sig_path) {
        return Ok((bytes, Some(sig)));
    }
    let sig = get(
        &format!("{url}.sig"),
        timeout,
        crate::supply::signature::MAX_SIGNATURE_BYTES,
    )?;
    if let Some(s) = &sig {
        crate::supply::oci::write_atomic(&sig_path, s)?;
    }
    Ok((bytes, sig))
}

/// The body at `url` (`None`: 404), at most `max_bytes`.
fn get(url: &str, timeout: Duration, max_bytes: u64) -> Result<Option<Vec<u8>>, String> {
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
        .map_err(|e| format!("{url}: {e}"))?;
    crate::supply::block_on(timeout, async {
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(format!("{url}: larger than {max_bytes} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    })
    .map_err(|e| format!("{url}: {e}"))?
}
