//! Tokens whose signature and claims were checked, remembered until they expire.
//!
//! Verifying a JWT's signature is the largest single cost of an authenticated request (an
//! Ed25519 verification is about 50 µs here), and a client sends the same token on every
//! request. A token that passed every check is remembered by its sha256 (the token itself is
//! not kept) with the principal it yields; a later request with the same token is let in
//! while `exp` (plus leeway) has not passed. Whatever does not depend on time was checked once
//! and cannot change for the same bytes; the key set changing clears the cache.

use crate::core::principal::Principal;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most tokens remembered; past it, expired entries are dropped, then all of them.
const CAPACITY: usize = 4096;

/// Who a verified token names, and what it is bound to.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub principal: Principal,
    pub bound_to: Binding,
}

/// A token's confirmation (`cnf`): what the sender must also show for the token to count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// `x5t#S256`: the sha256 of the client certificate (RFC 8705).
    pub certificate: Option<[u8; 32]>,
    /// `jkt`: the thumbprint of the DPoP key (RFC 9449), base64url.
    pub dpop_key: Option<std::sync::Arc<str>>,
}

impl Binding {
    /// Is the token bound to its sender at all?
    pub fn is_bound(&self) -> bool {
        self.certificate.is_some() || self.dpop_key.is_some()
    }
}

struct Entry {
    token: VerifiedToken,
    /// `exp` plus the leeway, in seconds since the epoch.
    good_until: u64,
}

#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedTokens")
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl VerifiedTokens {
    /// A token verified before and not yet expired.
    pub fn get(&self, digest: &[u8; 32]) -> Option<VerifiedToken> {
        let mut entries = self.lock();
        let entry = entries.get(digest)?;
        if now_secs() > entry.good_until {
            // Expired: the full check runs again and says so.
            entries.remove(digest);
            return None;
        }
        Some(entry.token.clone())
    }

    /// Remember a verified token, if `keys_unchanged` still holds once the cache is locked: a
    /// token verified with keys that were replaced meanwhile is not remembered (the
    /// replacement clears the cache under the same lock, before or after this).
    pub fn insert(
        &self,
        digest: [u8; 32],
        token: VerifiedToken,
        good_until: u64,
        keys_unchanged: impl FnOnce() -> bool,
    ) {
        let mut entries = self.lock();
        if !keys_unchanged() {
            return;
        }
        if entries.len() >= CAPACITY {
            let now = now_secs();
            entries.retain(|_, e| e.good_until >= now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest, Entry { token, good_until });
    }

    /// Forget every token (the keys they were verified with may be gone).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::principal::Access;
    use std::sync::Arc;

    fn principal(name: &str) -> VerifiedToken {
        VerifiedToken {
            principal: Principal {
                name: Arc::from(name),
                access: Access::Roles(Arc::from(vec!["r".to_owned()])),
            },
            bound_to: Binding::default(),
        }
    }

    #[test]
    fn remembers_until_expiry() {
        let cache = VerifiedTokens::default();
        cache.insert([1; 32], principal("alice"), now_secs() + 60, || true);
        cache.insert([2; 32], principal("bob"), now_secs() - 1, || true);
        cache.insert([4; 32], principal("eve"), now_secs() + 60, || false);
        assert!(cache.get(&[4; 32]).is_none(), "verified with replaced keys");
        assert_eq!(&*cache.get(&[1; 32]).unwrap().principal.name, "alice");
        assert!(cache.get(&[2; 32]).is_none(), "expired entry is not used");
        assert!(cache.get(&[3; 32]).is_none());
        cache.clear();
        assert!(cache.get(&[1; 32]).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedTokens::default();
        let later = now_secs() + 60;
        for i in 0..(CAPACITY as u32 + 10) {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(d, principal("p"), later, || true);
        }
        assert!(cache.lock().len() <= CAPACITY);
    }
}
