//! The policy in force and how it is replaced while serving (hot reload). A reload parses,
//! validates and compiles the new configuration off the request path, then swaps it in with
//! one atomic store; calls already running keep the [`Airlock`] they started with. A
//! configuration that does not load leaves the running one in place and says why.

use crate::config::confine::Plan;
use crate::config::policy::{ComponentSource, Dirs, Policy};
use crate::gate::audit::AuditLog;
use crate::gate::overrides::Overrides;
use crate::pipeline::call::Airlock;
use crate::pipeline::catalog::Catalog;
use crate::pipeline::operator_state::OperatorState;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Where the configuration comes from, as given on the command line.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file (`None`: the embedded default, which cannot change).
    pub config: Option<PathBuf>,
    pub dirs: Dirs,
}

impl Source {
    /// The same with the audit and cache directories replaced where given.
    pub fn with_dirs(mut self, audit_dir: Option<PathBuf>, cache_dir: Option<PathBuf>) -> Source {
        self.dirs.audit_dir = audit_dir;
        self.dirs.cache_dir = cache_dir;
        self
    }

    pub fn load(&self) -> anyhow::Result<Policy> {
        Ok(match &self.config {
            Some(path) => Policy::load(path, &self.dirs)?,
            None => Policy::embedded_default(&self.dirs)?,
        })
    }
}

/// Record in `airlock.lock` the digests of the `oci://` tags `policy` resolved and the lock
/// does not name yet, and take the lock as written into `policy` (so that its own write is
/// not seen as a change). Best effort: a lock that cannot be written (a read-only
/// configuration directory, confinement) is logged, and the tag is resolved again at the
/// next start.
pub fn record_tags(policy: &mut Policy) {
    match crate::config::lock::record_tags(&policy.trust) {
        Ok(false) => {}
        Ok(true) => match policy
            .trust
            .lock_file
            .as_deref()
            .map(crate::config::lock::read)
        {
            Some(Ok(Some((lock, sha256)))) => {
                policy.trust.lock = Some(lock);
                policy.trust.lock_sha256 = Some(sha256);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "cannot read the lock back"),
            _ => {}
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot record the digests of oci:// tags in the lock (run `airlock lock`)")
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reloaded {
    pub origin: String,
    pub components: usize,
    pub tools: usize,
    /// Tools held for review (`airlock.lock`): not listed, not called.
    #[serde(default)]
    pub held: Vec<String>,
}

/// The serving process's policy and what outlives it.
pub struct Live {
    current: ArcSwap<Airlock>,
    source: Source,
    audit: AuditLog,
    operator: Arc<OperatorState>,
    /// The HTTP listener (`None`: stdio), for the `mode = "none"` rule and the confinement plan.
    listen: Option<SocketAddr>,
    /// The landlock plan in force, if any: a reload may not need more.
    confined: Option<Plan>,
    /// Bumped whenever the tools a caller may see can have changed (reload, kill, revive).
    tools_changed: watch::Sender<u64>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    pub fn new(
        airlock: Airlock,
        source: Source,
        listen: Option<SocketAddr>,
        confined: Option<Plan>,
    ) -> Arc<Live> {
        crate::gate::notify::configure(airlock.catalog().policy.notify.as_ref());
        Arc::new(Live {
            audit: airlock.audit().clone(),
            operator: airlock.operator().clone(),
            current: ArcSwap::from_pointee(airlock),
            source,
            listen,
            confined,
            tools_changed: watch::channel(0).0,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The policy in force now. A call keeps the one it started with.
    pub fn current(&self) -> Arc<Airlock> {
        self.current.load_full()
    }

    pub fn operator(&self) -> &Arc<OperatorState> {
        &self.operator
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Why this process should be sent no calls now, if so: the audit log cannot be written
    /// (every call would be refused until it recovers). The components and the confinement
    /// were checked before the process started serving (either failing stops the start), and
    /// a reload only puts a configuration in force that loaded whole.
    pub fn not_ready(&self) -> Option<String> {
        if let Err(e) = self.audit.healthy() {
            return Some(format!("the audit log cannot be written: {}", e.0));
        }
        let fleet = self.operator.fleet.get()?;
        fleet.admits().err().map(|e| e.0)
    }

    /// Tell every listening client that the tool list may have changed.
    pub fn tools_changed(&self) {
        self.tools_changed.send_modify(|n| *n += 1);
    }

    /// Changes of the tool list, for `list_changed` notifications.
    pub fn watch_tools(&self) -> watch::Receiver<u64> {
        self.tools_changed.subscribe()
    }

    /// Load the configuration again and, if it is good, put it in force. `by` says who asked
    /// (`uid:… pid:…`, `sighup`, `file-change`); the attempt is recorded in the audit log, and
    /// a new policy is put in force only once its record is durable.
    pub async fn reload(&self, by: &str) -> anyhow::Result<Reloaded> {
        let _one = self.reloading.lock().await;
        let running = self.current();
        let result = self.prepare(running.clone()).await;
        let record = ReloadRecord {
            by,
            action: "reload",
            ok: result.is_ok(),
            config: result
                .as_ref()
                .map(|a| a.catalog().policy.origin.as_str())
                .unwrap_or(running.catalog().policy.origin.as_str()),
            sha256: result
                .as_ref()
                .ok()
                .map(|a| a.catalog().policy.sha256.as_str()),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            tiers: result
                .as_ref()
                .map(|next| tier_changes(&running, next))
                .unwrap_or_default(),
            held: result
                .as_ref()
                .map(|next| next.catalog().held().keys().map(String::as_str).collect())
                .unwrap_or_default(),
            lock_sha256: result
                .as_ref()
                .ok()
                .and_then(|next| next.catalog().policy.trust.lock_sha256.as_deref()),
        };
        self.audit
            .append("operator", &record)
            .await
            .map_err(|e| anyhow::anyhow!("{e}; nothing was reloaded"))?;
        let airlock = result?;
        let done = Reloaded {
            origin: airlock.catalog().policy.origin.clone(),
            components: airlock.catalog().components.len(),
            tools: airlock.tools().len(),
            held: airlock.catalog().held().keys().cloned().collect(),
        };
        crate::gate::notify::configure(airlock.catalog().policy.notify.as_ref());
        airlock.take_over_from(&running);
        self.current.store(Arc::new(airlock));
        self.operator()
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.tools_changed();
        tracing::info!(by, origin = %done.origin, components = done.components, tools = done.tools, "configuration reloaded");
        Ok(done)
    }

    /// Parse, check and compile the configuration, on a blocking thread: compiling must not
    /// hold up the runtime's workers, which serve calls meanwhile.
    async fn prepare(&self, running: Arc<Airlock>) -> anyhow::Result<Airlock> {
        let mut policy = self.source.load()?;
        for warning in policy.grants_beside_audit_log() {
            tracing::warn!("{warning}");
        }
        let old = &running.catalog().policy;
        restart_only(old, &policy, self.listen.map(|a| a.ip().is_loopback()))?;
        // The descriptor budget was set at start; a reload cannot raise it.
        let need = policy.fd_need(self.listen.is_some());
        let allowed = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        if need.total() > allowed {
            anyhow::bail!(
                "the new configuration needs {need}, more than the {allowed} this process may \
                 open; a restart is required for that (nothing was reloaded)"
            );
        }
        if let Some(confined) = &self.confined {
            let needed = Plan::for_policy(&policy, self.source.config.as_deref(), self.listen);
            let missing = confined.missing_from(&needed);
            if !missing.is_empty() {
                anyhow::bail!(
                    "the new configuration needs {}, outside the landlock ruleset this process \
                     confined itself to; a restart is required for that (nothing was reloaded)",
                    missing.join(", ")
                );
            }
        }
        // Past the checks that refuse a reload outright: what the tags named is recorded.
        record_tags(&mut policy);
        let handle = tokio::runtime::Handle::current();
        let previous = running.clone();
        let next = tokio::task::spawn_blocking(move || handle.block_on(previous.successor(policy)))
            .await
            .map_err(|e| anyhow::anyhow!("the reload task failed: {e}"))??;
        next.authenticator()
            .refresh_keys(true)
            .await
            .map_err(|e| anyhow::anyhow!("cannot fetch the JWKS: {e}"))?;
        orphaned_overrides(
            &self.operator.overrides.current(),
            running.catalog(),
            next.catalog(),
        )?;
        Ok(next)
    }

    /// Put in force the overrides another server on the state directory (or a hand edit)
    /// wrote, checked every `every`: a kill given to any server holds in all of them. Each
    /// change taken up is logged and recorded in this server's audit chain; a file that cannot
    /// be used is logged once and the overrides in force stay.
    pub async fn watch_overrides(self: Arc<Live>, every: Duration) {
        let mut unusable = false;
        loop {
            tokio::time::sleep(every).await;
            match self.operator.overrides.refresh() {
                Ok(None) => unusable = false,
                Ok(Some(adopted)) => {
                    unusable = false;
                    self.adopted(
                        adopted,
                        "the state directory's overrides file (another server, or an edit)",
                    )
                    .await;
                }
                Err(e) if !unusable => {
                    unusable = true;
                    tracing::error!(
                        "cannot use the operator state file {}: {}; the overrides in force stay",
                        e.path.display(),
                        e.problem
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// Overrides another server put in force here: logged, recorded in this server's audit
    /// chain (`"action":"adopt"`, `by` saying where they came from), and told to clients when
    /// the lists changed.
    pub async fn adopted(&self, (before, now): crate::gate::overrides::Adopted, by: &str) {
        tracing::warn!(
            target: "airlock::operator",
            "overrides changed by {by}: now {}",
            serde_json::to_string(&*now).unwrap_or_default()
        );
        let record = serde_json::json!({"action": "adopt", "by": by, "overrides": &*now});
        if let Err(e) = self.current().audit().append("operator", &record).await {
            tracing::error!("the adopted overrides' audit record failed: {e}");
        }
        let listed = |o: &crate::gate::overrides::Overrides| {
            (
                o.all,
                o.tools.clone(),
                o.resources.clone(),
                o.prompts.clone(),
            )
        };
        if listed(&before) != listed(&now) {
            self.tools_changed();
        }
    }

    /// Join the fleet `[fleet]` names, as replica `replica`: the overrides come from its store
    /// from now on (the state directory's file keeps a copy), and calls are admitted only while
    /// this replica is current. Returns whether there is a fleet.
    pub fn join_fleet(self: &Arc<Live>, replica: String) -> anyhow::Result<bool> {
        let Some(settings) = self.current().catalog().policy.fleet.clone() else {
            return Ok(false);
        };
        let fleet =
            crate::gate::fleet::Fleet::new(&settings, replica).map_err(anyhow::Error::msg)?;
        tracing::info!(store = %settings.store, replica = %fleet.replica, "joining the fleet");
        let _ = self.operator.fleet.set(fleet.clone());
        let (adopting, interrupting, answering) = (self.clone(), self.clone(), self.clone());
        let by = format!("the fleet store {}", settings.store);
        tokio::spawn(fleet.run(
            self.operator.overrides.clone(),
            move |adopted, version| {
                let (live, by) = (adopting.clone(), format!("{by} (version {version})"));
                tokio::spawn(async move { live.adopted(adopted, &by).await });
            },
            move |which| {
                let stopped =
                    crate::control::operator::interrupt_calls(&interrupting.operator, which);
                if !stopped.is_empty() {
                    tracing::warn!(
                        target: "airlock::operator",
                        "another replica's operator interrupted {} calls here: {}",
                        stopped.len(),
                        stopped.join(", ")
                    );
                }
            },
            move |id| {
                let live = answering.clone();
                tokio::spawn(async move { live.operator.approvals.announced(&id).await });
            },
        ));
        Ok(true)
    }

    /// Wait (at most `within`) until this replica has the fleet's state: a one-off call made
    /// at once would find it not yet read.
    pub async fn fleet_current(&self, within: Duration) {
        let Some(fleet) = self.operator.fleet.get() else {
            return;
        };
        let deadline = std::time::Instant::now() + within;
        while fleet.admits().is_err() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reload whenever the content of the configuration file or of a component file changes
    /// (checked every `every`; compared by sha256, so a touch is not a change). Failures are
    /// logged and recorded; the running policy stays.
    pub async fn watch_file(self: Arc<Live>, every: Duration) {
        // The change time and mode too: a `chmod 600` after a key is written changes neither
        // its modification time nor its length.
        type Stamp = (SystemTime, u64, i64, u32);
        let stamp = |p: &PathBuf| -> Option<Stamp> {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ctime(), m.mode()))
        };
        // The first look at each file compares its content with what was loaded: it may have
        // changed between the load and this task's start.
        let mut last: std::collections::HashMap<PathBuf, Option<Stamp>> =
            std::collections::HashMap::new();
        // A certificate renewal whose reload failed (half-written files, a JWKS briefly down)
        // is tried again every 30 s while the files differ from what is loaded: otherwise the
        // old certificate would serve until it expires.
        let mut retry_tls_at: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(every).await;
            let running = self.current();
            let policy = &running.catalog().policy;
            // Each watched file, and the sha256 of what was loaded from it.
            let config = self
                .source
                .config
                .iter()
                .map(|p| (p, policy.sha256.clone(), "file-change"));
            let components = policy.components.iter().filter_map(|c| match &c.source {
                ComponentSource::File(p) => Some((p, hex::encode(c.digest), "component-change")),
                // Fetched ones are pinned by digest: they change only with the configuration
                // or the lock.
                _ => None,
            });
            // The lock of approved tool metadata: its absence is loaded as no digest.
            let lock = policy.trust.lock_file.iter().map(|p| {
                (
                    p,
                    policy.trust.lock_sha256.clone().unwrap_or_default(),
                    "lock-change",
                )
            });
            // The TLS certificate, key and client CA: a renewed certificate is served without
            // a restart.
            let mut tls: Vec<(&PathBuf, String, &str)> = Vec::new();
            if let Some(t) = &policy.server.tls {
                for (path, sha) in t.files() {
                    tls.push((path, sha.clone(), "tls-change"));
                }
            }
            let mut changed = None;
            for (path, loaded, by) in config.chain(components).chain(lock).chain(tls) {
                let now = stamp(path);
                if last.get(path) == Some(&now) {
                    continue;
                }
                last.insert(path.clone(), now);
                // A touch or a rewrite with the same content is not a change. Components may
                // be tens of MB: read and hashed off the runtime's workers.
                let file = path.clone();
                let digest = tokio::task::spawn_blocking(move || {
                    std::fs::read(&file).map(|b| hex::encode(Sha256::digest(&b)))
                })
                .await;
                let same = match &digest {
                    Ok(Ok(d)) => *d == loaded,
                    Ok(Err(e)) => e.kind() == std::io::ErrorKind::NotFound && loaded.is_empty(),
                    Err(_) => false,
                };
                if same {
                    continue;
                }
                changed.get_or_insert((path.clone(), by));
            }
            drop(running);
            if changed.is_none() && retry_tls_at.is_some_and(|at| std::time::Instant::now() >= at) {
                changed = policy_tls_files(&self.current())
                    .into_iter()
                    .next()
                    .map(|p| (p, "tls-change"));
            }
            let Some((path, by)) = changed else { continue };
            tracing::info!(path = %path.display(), "{by}; reloading");
            retry_tls_at = None;
            if let Err(e) = self.reload(by).await {
                tracing::error!("reload refused, the running configuration stays: {e:#}");
                if by == "tls-change" {
                    retry_tls_at = Some(std::time::Instant::now() + Duration::from_secs(30));
                }
            }
        }
    }
}

/// The TLS files of the configuration in force.
fn policy_tls_files(running: &Airlock) -> Vec<PathBuf> {
    running
        .catalog()
        .policy
        .server
        .tls
        .iter()
        .flat_map(|t| t.files().into_iter().map(|(p, _)| p.clone()))
        .collect()
}

/// The operator record of a reload attempt.
#[derive(Serialize)]
struct ReloadRecord<'a> {
    by: &'a str,
    action: &'static str,
    ok: bool,
    config: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Components whose risk tier the reload changes (promotions and demotions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tiers: Vec<TierChange>,
    /// Tools the new configuration holds for review (`airlock.lock`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    held: Vec<&'a str>,
    /// sha256 of the lock of approved tool metadata in force, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_sha256: Option<&'a str>,
}

#[derive(Serialize)]
struct TierChange {
    component: String,
    from: Option<crate::config::risk::Tier>,
    to: crate::config::risk::Tier,
}

/// Every `[[tool]]` entry whose tier differs between `old` and `new` (or that `new` adds with
/// a tier other than the default).
fn tier_changes(old: &Airlock, new: &Airlock) -> Vec<TierChange> {
    let tier_of = |a: &Airlock, name: &str| {
        a.catalog()
            .components
            .iter()
            .find(|c| c.entry.name == name)
            .map(|c| c.approval.policy.tier)
    };
    new.catalog()
        .components
        .iter()
        .filter_map(|c| {
            let to = c.approval.policy.tier;
            let from = tier_of(old, &c.entry.name);
            (from != Some(to) && (from.is_some() || to != crate::config::risk::Tier::default()))
                .then(|| TierChange {
                    component: c.entry.name.clone(),
                    from,
                    to,
                })
        })
        .collect()
}

/// Overrides the new configuration would no longer match while it adds something in their
/// place: a renamed `[[tool]]` entry or a rewritten grant would silently give back what an
/// operator took away, so such a reload is refused until the override is lifted. An override
/// whose target is simply gone is moot and does not stop the reload.
fn orphaned_overrides(overrides: &Overrides, old: &Catalog, new: &Catalog) -> anyhow::Result<()> {
    let names = |c: &Catalog| -> BTreeSet<String> {
        c.components
            .iter()
            .flat_map(|k| std::iter::once(k.entry.name.clone()).chain(k.tools.iter().cloned()))
            .collect()
    };
    let (old_names, new_names) = (names(old), names(new));
    let added_names: Vec<&String> = new_names.difference(&old_names).collect();
    let mut orphans = Vec::new();
    for name in &overrides.tools {
        if !new_names.contains(name) && !added_names.is_empty() {
            orphans.push(format!(
                "the kill of {name} (the new configuration drops that name and adds {})",
                join(&added_names)
            ));
        }
    }
    let grant_ids =
        |c: &Catalog, component: &str| -> Option<(BTreeSet<String>, BTreeSet<String>)> {
            let g = &c
                .components
                .iter()
                .find(|k| k.entry.name == component)?
                .entry
                .grants;
            let ids = g.ids().map(str::to_owned).collect();
            Some((ids, g.secrets.iter().map(|s| s.name.clone()).collect()))
        };
    for (component, revoked) in &overrides.revoked {
        let Some((new_ids, new_secrets)) = grant_ids(new, component) else {
            if !added_names.is_empty() {
                orphans.push(format!(
                    "the revocations of [[tool]] {component} (the new configuration drops it and adds {})",
                    join(&added_names)
                ));
            }
            continue;
        };
        let (old_ids, old_secrets) = grant_ids(old, component).unwrap_or_default();
        let added: Vec<&String> = new_ids.difference(&old_ids).collect();
        for id in revoked.grants.iter().filter(|id| !new_ids.contains(*id)) {
            if !added.is_empty() {
                orphans.push(format!(
                    "the revocation of {id} from {component} (the new configuration drops that grant and adds {})",
                    join(&added)
                ));
            }
        }
        let added: Vec<&String> = new_secrets.difference(&old_secrets).collect();
        for name in revoked.secrets.iter().filter(|n| !new_secrets.contains(*n)) {
            if !added.is_empty() {
                orphans.push(format!(
                    "the revocation of secret {name} from {component} (the new configuration drops it and adds secret {})",
                    join(&added)
                ));
            }
        }
    }
    if orphans.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the new configuration could silently lift {}; keep the names, or lift the override with \
         `airlock ctl revive` / `restore` first (nothing was reloaded)",
        orphans.join("; ")
    )
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settings a reload cannot change: they are bound at start (state and audit files, listeners'
/// checks).
fn restart_only(old: &Policy, new: &Policy, http_loopback: Option<bool>) -> anyhow::Result<()> {
    let restart = |what: &str| {
        anyhow::anyhow!("{what} changed; a restart is required for that (nothing was reloaded)")
    };
    if old.server.state_dir != new.server.state_dir || old.server.cache_dir != new.server.cache_dir
    {
        return Err(restart("[server] state_dir or cache_dir"));
    }
    if old.server.allowed_hosts != new.server.allowed_hosts
        || old.server.allowed_origins != new.server.allowed_origins
    {
        return Err(restart("[server] allowed_hosts or allowed_origins"));
    }
    if old.server.max_sessions != new.server.max_sessions
        || old.server.max_sessions_per_principal != new.server.max_sessions_per_principal
        || old.server.session_idle_timeout != new.server.session_idle_timeout
        || old.server.max_connections != new.server.max_connections
        || old.server.max_connections_per_peer != new.server.max_connections_per_peer
        || old.server.http_header_timeout != new.server.http_header_timeout
        || old.server.http_body_timeout != new.server.http_body_timeout
    {
        return Err(restart(
            "[server] sessions or connections (max_sessions, max_sessions_per_principal, \
             session_idle_timeout, max_connections, max_connections_per_peer, \
             http_header_timeout, http_body_timeout)",
        ));
    }
    // The files may change (they are reloaded); whether there is TLS, and which files, not.
    let tls_files = |p: &Policy| {
        p.server
            .tls
            .as_ref()
            .map(|t| (t.cert.clone(), t.key.clone()))
    };
    if tls_files(old) != tls_files(new) {
        return Err(restart("[server.tls] (on or off, or its files)"));
    }
    if old.audit != new.audit {
        return Err(restart("[audit]"));
    }
    if old.confine != new.confine {
        return Err(restart("[confine]"));
    }
    if old.fleet != new.fleet {
        return Err(restart("[fleet]"));
    }
    if old.metrics != new.metrics {
        return Err(restart("[metrics]"));
    }
    if old.telemetry != new.telemetry {
        return Err(restart("[telemetry]"));
    }
    if http_loopback == Some(false) && new.auth.mode == crate::config::auth::AuthMode::None {
        anyhow::bail!(
            "[auth] mode = \"none\" is refused: this server listens on a non-loopback address \
             (nothing was reloaded)"
        );
    }
    Ok(())
}
