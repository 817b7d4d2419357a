//! `[fleet]`: replicas of Airlock on several machines sharing their operator state through a
//! Redis (or Valkey) store. Off unless configured: without it each server works on its own
//! machine as before.

use crate::config::secrets::SecretStore;
use crate::core::redact::SecretValue;
use crate::core::units::Span;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetSection {
    store: Option<String>,
    username: Option<String>,
    password_secret: Option<String>,
    prefix: Option<String>,
    max_staleness: Option<Span>,
    on_stale: Option<OnStale>,
    ack_timeout: Option<Span>,
    rate_lease: Option<u32>,
}

/// What a replica does once it cannot confirm, for longer than `max_staleness`, that it has
/// the fleet's current operator state (the store is unreachable, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Refuse new calls (`fleet_unavailable`) and report not ready, until it is current again.
    Refuse,
    /// Go on serving under the overrides it last had (a kill given meanwhile may not reach it).
    Serve,
}

/// `[fleet]`, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// `redis://host[:port][/db]` or `rediss://…` (TLS), without credentials.
    pub store: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub db: i64,
    pub username: Option<String>,
    /// From `[secrets]`: never in the URL, never logged.
    pub password: Option<SecretValue>,
    /// Prefix of every key and channel: fleets sharing a store keep apart by it.
    pub prefix: String,
    pub max_staleness: Duration,
    pub on_stale: OnStale,
    /// How long a change waits for every live replica to say it applied it.
    pub ack_timeout: Duration,
    /// Most tokens of a shared rate-limit bucket a replica takes from the store at once and
    /// spends locally (1: every call asks the store). See [`FleetSettings::lease_for`].
    pub rate_lease: u32,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("store", &self.store)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("prefix", &self.prefix)
            .field("max_staleness", &self.max_staleness)
            .field("on_stale", &self.on_stale)
            .field("ack_timeout", &self.ack_timeout)
            .field("rate_lease", &self.rate_lease)
            .finish()
    }
}

impl FleetSettings {
    /// Whether the store's host is a name (looked up over DNS).
    pub fn by_name(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }

    /// The tokens a replica leases at once from a shared bucket of `capacity` (its burst):
    /// at most `rate_lease`, and at most a sixteenth of the bucket, so that a small limit
    /// is never split into per-replica shares (a bucket under 32 is never leased from).
    pub fn lease_for(&self, capacity: u32) -> u32 {
        self.rate_lease.min(capacity / 16).max(1)
    }
}

pub(crate) fn resolve(
    s: &FleetSection,
    secrets: &SecretStore,
) -> Result<Option<FleetSettings>, (String, String)> {
    let err = |k: &str, p: String| (format!("fleet › {k}"), p);
    let Some(store) = &s.store else {
        let set = s.username.is_some()
            || s.password_secret.is_some()
            || s.prefix.is_some()
            || s.max_staleness.is_some()
            || s.on_stale.is_some()
            || s.ack_timeout.is_some()
            || s.rate_lease.is_some();
        if set {
            return Err(err(
                "store",
                "is missing: the other [fleet] keys mean nothing without it".into(),
            ));
        }
        return Ok(None);
    };
    let (tls, rest) = if let Some(r) = store.strip_prefix("redis://") {
        (false, r)
    } else if let Some(r) = store.strip_prefix("rediss://") {
        (true, r)
    } else {
        return Err(err(
            "store",
            "must be redis://HOST[:PORT][/DB] or rediss://… (TLS)".into(),
        ));
    };
    if rest.contains('?') || rest.contains('#') {
        return Err(err(
            "store",
            "must be redis://HOST[:PORT][/DB]: no query (set the user and password with \
             fleet › username and password_secret)"
                .into(),
        ));
    }
    if rest.contains('@') {
        return Err(err(
            "store",
            "must not hold credentials: declare the password in [secrets] and name it in \
             fleet › password_secret (and the user in fleet › username)"
                .into(),
        ));
    }
    let (authority, db) = match rest.split_once('/') {
        Some((a, "")) => (a, 0),
        Some((a, db)) => (
            a,
            db.parse::<i64>()
                .ok()
                .filter(|d| (0..=15).contains(d))
                .ok_or_else(|| err("store", "its database is not 0..=15".into()))?,
        ),
        None => (rest, 0),
    };
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or("bad"))),
            None => ("", None),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| err("store", "its port is not a port (1..=65535)".into()))?,
    };
    let host_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    // A bare IPv6 address must be in brackets (its colons would read as a port).
    if host.is_empty() || !host.chars().all(host_chars) {
        return Err(err(
            "store",
            "names no host (a name or an IP address; IPv6 in brackets)".into(),
        ));
    }
    let password = match &s.password_secret {
        None => None,
        Some(name) => Some(secrets.get(name).cloned().ok_or_else(|| {
            err(
                "password_secret",
                format!("names {name}, which [secrets] does not declare"),
            )
        })?),
    };
    let prefix = s.prefix.clone().unwrap_or_else(|| "airlock".into());
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(
            "prefix",
            "must be 1 to 64 letters, digits, - or _".into(),
        ));
    }
    let max_staleness = s.max_staleness.map_or(Duration::from_secs(2), |s| s.0);
    if !(Duration::from_millis(200)..=Duration::from_secs(60)).contains(&max_staleness) {
        return Err(err("max_staleness", "must be between 200ms and 60s".into()));
    }
    let on_stale = s.on_stale.unwrap_or(OnStale::Refuse);
    let ack_timeout = s
        .ack_timeout
        .map_or(max_staleness + Duration::from_millis(500), |s| s.0);
    if on_stale == OnStale::Refuse && ack_timeout < max_staleness {
        // A change returns naming the replicas that did not apply it; by then each of them
        // must already refuse calls (it has not been current for max_staleness).
        return Err(err(
            "ack_timeout",
            format!(
                "must be at least max_staleness ({} ms) with on_stale = \"refuse\": a replica \
                 that did not apply a kill in time must be refusing calls when the kill returns",
                max_staleness.as_millis()
            ),
        ));
    }
    if ack_timeout > Duration::from_secs(120) {
        return Err(err("ack_timeout", "must be at most 120s".into()));
    }
    let rate_lease = s.rate_lease.unwrap_or(DEFAULT_RATE_LEASE);
    if !(1..=1000).contains(&rate_lease) {
        return Err(err("rate_lease", "must be between 1 and 1000".into()));
    }
    Ok(Some(FleetSettings {
        store: store.clone(),
        host: host.to_owned(),
        port,
        tls,
        db,
        username: s.username.clone(),
        password,
        prefix,
        max_staleness,
        on_stale,
        ack_timeout,
        rate_lease,
    }))
}

/// `rate_lease` unless set: a busy principal asks the store once per 16 calls.
pub const DEFAULT_RATE_LEASE: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> FleetSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_store_url_is_checked_and_credentials_stay_out_of_it() {
        let none = SecretStore::default();
        let s = resolve(&section("store = \"redis://127.0.0.1:6380/2\""), &none)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.db, s.tls),
            ("127.0.0.1", 6380, 2, false)
        );
        assert_eq!(s.max_staleness, Duration::from_secs(2));
        assert_eq!(s.rate_lease, DEFAULT_RATE_LEASE);
        // A bucket is leased from by at most a sixteenth, never below one token.
        assert_eq!(
            (s.lease_for(10_000), s.lease_for(64), s.lease_for(20)),
            (16, 4, 1)
        );
        assert_eq!(s.on_stale, OnStale::Refuse);
        let s = resolve(&section("store = \"rediss://cache.internal\""), &none)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("cache.internal", 6379, true)
        );
        assert!(s.by_name());
        let s = resolve(&section("store = \"redis://[::1]\""), &none)
            .unwrap()
            .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 6379));
        assert!(!s.by_name());
        for (text, problem) in [
            (
                "store = \"redis://u:pw@h:6379\"",
                "must not hold credentials",
            ),
            ("store = \"http://h\"", "must be redis://"),
            ("store = \"redis://h:0\"", "is not a port"),
            ("store = \"redis://h/99\"", "is not 0..=15"),
            ("store = \"redis://h/0?pass=x\"", "no query"),
            ("store = \"redis://h\"\nrate_lease = 0", "rate_lease"),
            ("store = \"redis://h%20x\"", "names no host"),
            ("store = \"redis://::1\"", "is not a port"),
            ("prefix = \"x\"", "store"),
            (
                "store = \"redis://h\"\npassword_secret = \"NOPE\"",
                "[secrets] does not declare",
            ),
            (
                "store = \"redis://h\"\nmax_staleness = \"2s\"\nack_timeout = \"1s\"",
                "at least max_staleness",
            ),
        ] {
            let (key, p) = resolve(&section(text), &none).unwrap_err();
            assert!(
                p.contains(problem) || key.contains(problem),
                "{text}: {key}: {p}"
            );
        }
    }
}
