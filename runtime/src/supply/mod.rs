//! Layer 2: where a component's bytes come from and who signed them: OCI registries (`oci`),
//! `https://` URLs (`https`), the cache of what was fetched, and signatures (`signature`).
//! Below the configuration (which names the sources and the trusted keys) and above only
//! `core`.

pub mod https;
pub mod oci;
pub mod signature;

use std::time::Duration;

/// Run `work` to its end on a runtime of its own (loading a configuration is synchronous,
/// and may happen on a thread of the server's runtime, which cannot block on a future).
/// `Err` when it takes longer than `timeout`.
pub fn block_on<F>(timeout: Duration, work: F) -> Result<F::Output, String>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            runtime
                .block_on(async { tokio::time::timeout(timeout, work).await })
                .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))
        })
        .join()
        .unwrap_or_else(|_| Err("the fetch failed unexpectedly".into()))
    })
}

/// ring as the process's TLS provider (what the HTTP clients of registries and `https://`
/// sources use; the rest of Airlock names ring explicitly).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
