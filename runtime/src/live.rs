//! The policy in force and how it is replaced while serving (hot reload). A reload parses,
//! validates and compiles the new configuration off the request path, then swaps it in with
//! one atomic store; calls already running keep the [`Airlock`] they started with. A
//! configuration that does not load leaves the running one in place and says why.

use crate::audit::AuditLog;
use crate::operator::Operator;
use crate::pipeline::Airlock;
use crate::policy::{Dirs, Policy};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
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

/// What a reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reloaded {
    pub origin: String,
    pub components: usize,
    pub tools: usize,
}

/// The serving process's policy and what outlives it.
pub struct Live {
    current: ArcSwap<Airlock>,
    source: Source,
    audit: AuditLog,
    operator: Arc<Operator>,
    /// Whether every HTTP listener is on loopback (`None`: stdio), for the `mode = "none"` rule.
    http_loopback: Option<bool>,
    /// Bumped whenever the tools a caller may see can have changed (reload, kill, revive).
    tools_changed: watch::Sender<u64>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    pub fn new(airlock: Airlock, source: Source, http_loopback: Option<bool>) -> Arc<Live> {
        Arc::new(Live {
            audit: airlock.audit().clone(),
            operator: airlock.operator().clone(),
            current: ArcSwap::from_pointee(airlock),
            source,
            http_loopback,
            tools_changed: watch::channel(0).0,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The policy in force now. A call keeps the one it started with.
    pub fn current(&self) -> Arc<Airlock> {
        self.current.load_full()
    }

    pub fn operator(&self) -> &Arc<Operator> {
        &self.operator
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Tell every listening client that the tool list may have changed.
    pub fn tools_changed(&self) {
        self.tools_changed.send_modify(|n| *n += 1);
    }

    /// Changes of the tool list, for `list_changed` notifications.
    pub fn watch_tools(&self) -> watch::Receiver<u64> {
        self.tools_changed.subscribe()
    }

    /// Load the configuration again and, if it is good, put it in force.
    pub async fn reload(&self) -> anyhow::Result<Reloaded> {
        let _one = self.reloading.lock().await;
        let policy = self.source.load()?;
        let running = self.current();
        let old = &running.catalog().policy;
        restart_only(old, &policy, self.http_loopback)?;
        if let Some(jwt) = &policy.auth.jwt {
            jwt.refresh_keys(true)
                .await
                .map_err(|e| anyhow::anyhow!("cannot fetch the JWKS: {e}"))?;
        }
        let airlock = Airlock::load(policy, self.audit.clone(), self.operator.clone()).await?;
        let done = Reloaded {
            origin: airlock.catalog().policy.origin.clone(),
            components: airlock.catalog().components.len(),
            tools: airlock.tools().len(),
        };
        self.current.store(Arc::new(airlock));
        self.tools_changed();
        tracing::info!(origin = %done.origin, components = done.components, tools = done.tools, "configuration reloaded");
        Ok(done)
    }

    /// Reload whenever the configuration file's modification time or size changes, checking
    /// every `every`. Failures are logged; the running policy stays.
    pub async fn watch_file(self: Arc<Live>, every: Duration) {
        let Some(path) = self.source.config.clone() else {
            return;
        };
        let stamp = |p: &PathBuf| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let mut last = stamp(&path);
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            tracing::info!(path = %path.display(), "configuration file changed; reloading");
            if let Err(e) = self.reload().await {
                tracing::error!("reload refused, the running configuration stays: {e:#}");
            }
        }
    }
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
    if old.audit != new.audit {
        return Err(restart("[audit]"));
    }
    if http_loopback == Some(false) && new.auth.mode == crate::auth::AuthMode::None {
        anyhow::bail!(
            "[auth] mode = \"none\" is refused: this server listens on a non-loopback address \
             (nothing was reloaded)"
        );
    }
    Ok(())
}
