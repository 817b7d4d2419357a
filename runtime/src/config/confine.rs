//! `[confine]`, and the confinement plan a configuration implies: the directories, ports and
//! system files the serving process needs, and nothing else. The layers that enforce the plan
//! (landlock, seccomp, cgroups) are in the serve layer.

use crate::config::grants::{FsMode, HostPattern};
use crate::config::policy::{ComponentSource, Policy};
use crate::core::units::ByteSize;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[confine]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfineSection {
    mode: Option<ConfineMode>,
    cgroup: Option<CgroupSection>,
}

/// `[confine.cgroup]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CgroupSection {
    memory: Option<ByteSize>,
    /// `"150%"`: CPU time as a share of one CPU.
    cpu: Option<String>,
}

/// `[confine.cgroup]`, resolved: limits of the whole host process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory: Option<ByteSize>,
    /// Percent of one CPU.
    pub cpu_percent: Option<u32>,
}

/// Whether confinement must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfineMode {
    /// Refuse to start unless every layer is enforced (the default for `serve --http`).
    Required,
    /// Start with what can be enforced and say exactly what is missing (the default for stdio).
    BestEffort,
    /// No confinement (a warning at start).
    Off,
}

impl fmt::Display for ConfineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfineMode::Required => "required",
            ConfineMode::BestEffort => "best-effort",
            ConfineMode::Off => "off",
        })
    }
}

/// `[confine]`, resolved: `mode` `None` takes the transport's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfineSettings {
    pub mode: Option<ConfineMode>,
    pub cgroup: Option<CgroupLimits>,
}

pub(crate) fn resolve(section: &ConfineSection) -> Result<ConfineSettings, (String, String)> {
    let cgroup = match &section.cgroup {
        None => None,
        Some(c) => {
            if let Some(m) = c.memory
                && m < ByteSize::mib(32)
            {
                return Err((
                    "confine › cgroup › memory".into(),
                    "must be at least 32MiB".into(),
                ));
            }
            let cpu_percent = match &c.cpu {
                None => None,
                Some(text) => Some(
                    text.strip_suffix('%')
                        .and_then(|n| n.trim().parse::<u32>().ok())
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| {
                            (
                                "confine › cgroup › cpu".to_owned(),
                                format!("\"{text}\" is not a percentage of one CPU like \"150%\""),
                            )
                        })?,
                ),
            };
            if c.memory.is_none() && cpu_percent.is_none() {
                return Err((
                    "confine › cgroup".into(),
                    "sets no limit: give memory, cpu or both".into(),
                ));
            }
            Some(CgroupLimits {
                memory: c.memory,
                cpu_percent,
            })
        }
    };
    Ok(ConfineSettings {
        mode: section.mode,
        cgroup,
    })
}

/// Files name resolution and the C library read, and the page map wasmtime scans to reset only
/// the pages a call touched (without it every call resets its whole memory: 40% slower).
/// Missing ones are skipped.
const SYSTEM_READ: [&str; 8] = [
    "/proc/self/pagemap",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/localtime",
    "/dev/urandom",
];

/// What the process needs, from its configuration and command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The configuration file's directory (also in `read`).
    pub config_dir: Option<PathBuf>,
    pub read: BTreeSet<PathBuf>,
    pub read_write: BTreeSet<PathBuf>,
    pub bind: BTreeSet<u16>,
    pub connect: BTreeSet<u16>,
    /// The directories serve creates before it confines itself (state, cache, audit): they
    /// need not exist before the first start.
    pub created: BTreeSet<PathBuf>,
}

impl Plan {
    /// The plan for serving `policy` (from `config`, if a file) on `listen` (HTTP; stdio: none).
    pub fn for_policy(policy: &Policy, config: Option<&Path>, listen: Option<SocketAddr>) -> Plan {
        let mut plan = Plan::default();
        let parent = |p: &Path| resolved(p).parent().map(Path::to_path_buf);
        // Directories, not files: an editor replaces a file by renaming a new one over it, and
        // a rule holds the inode it was made for.
        if let Some(dir) = config.and_then(parent) {
            plan.read.insert(dir.clone());
            // The directory the path names, too: a symlinked configuration (a Kubernetes
            // ConfigMap) is re-pointed at a new directory on update.
            if let Some(named) = config
                .and_then(|c| std::path::absolute(c).ok())
                .and_then(|c| c.parent().map(Path::to_path_buf))
            {
                plan.read.insert(named);
            }
            plan.config_dir = Some(dir);
        }
        for c in &policy.components {
            if let ComponentSource::File(path) = &c.source
                && let Some(dir) = parent(path)
            {
                plan.read.insert(dir);
            }
            // The WIT of a generic component is read again at every reload.
            if let Some(wit) = &c.wit {
                if wit.is_dir() {
                    plan.read.insert(resolved(wit));
                } else if let Some(dir) = parent(wit) {
                    plan.read.insert(dir);
                }
            }
            for g in &c.grants.fs {
                match g.mode {
                    FsMode::Ro => plan.read.insert(resolved(&g.host)),
                    FsMode::Rw => plan.read_write.insert(resolved(&g.host)),
                };
            }
            plan.connect.extend(c.grants.net.iter().map(|g| g.port));
            // A name is looked up; a large answer comes back over TCP.
            let by_name = c.grants.net.iter().any(|g| match &g.host {
                HostPattern::Exact(h) => h.parse::<std::net::IpAddr>().is_err(),
                HostPattern::Subdomains(_) => true,
            });
            if by_name {
                plan.connect.insert(53);
            }
            plan.connect
                .extend(c.grants.tcp.iter().map(|g| g.address.port()));
            // A reload may pull a component its cache does not hold.
            match &c.source {
                ComponentSource::Oci { reference, .. } => {
                    if let Ok(r) = crate::supply::oci::parse(reference) {
                        plan.connect.insert(policy.trust.registries.port_of(&r));
                        let host = r.resolve_registry();
                        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                        if host.parse::<std::net::IpAddr>().is_err() {
                            plan.connect.insert(53);
                        }
                    }
                }
                ComponentSource::Https(url) => {
                    let without_query = url.split('?').next().unwrap_or_default();
                    if let Ok(uri) = without_query.parse::<http::Uri>() {
                        plan.connect.insert(uri.port_u16().unwrap_or(443));
                        if uri
                            .host()
                            .is_none_or(|h| h.parse::<std::net::IpAddr>().is_err())
                        {
                            plan.connect.insert(53);
                        }
                    }
                }
                ComponentSource::File(_) | ComponentSource::Bundled(_) => {}
            }
        }
        if let Some(dir) = &policy.secrets.dir {
            plan.read.insert(resolved(dir));
        }
        // Files read again at reloads: the TLS certificate, key and client CA (when they
        // change), the keys that verify signatures. Their directories as resolved and as
        // named: a Kubernetes Secret's files are symlinks into a directory replaced at each
        // rotation.
        let tls_files = policy
            .server
            .tls
            .iter()
            .flat_map(|t| t.files().into_iter().map(|(p, _)| p));
        let key_files = policy.trust.key_files.iter().map(|(_, key)| key);
        for file in tls_files.chain(key_files) {
            let named = std::path::absolute(file)
                .ok()
                .and_then(|f| f.parent().map(Path::to_path_buf));
            plan.read.extend(parent(file).into_iter().chain(named));
        }
        if let Some(scanner) = &policy.safety.scanner {
            plan.connect.insert(scanner.port());
            if scanner.by_name() {
                plan.connect.insert(53);
            }
        }
        if let Some(notify) = &policy.notify {
            plan.connect.insert(notify.port());
            if notify.by_name() {
                plan.connect.insert(53);
            }
        }
        if let Some(fleet) = &policy.fleet {
            plan.connect.insert(fleet.port);
            if fleet.by_name() {
                plan.connect.insert(53);
            }
        }
        if let Some(telemetry) = &policy.telemetry {
            plan.connect.insert(telemetry.port());
            if telemetry.by_name() {
                plan.connect.insert(53);
            }
        }
        if let Some(jwt) = &policy.auth.jwt {
            if let Some(dir) = jwt.jwks_file.as_deref().and_then(parent) {
                plan.read.insert(dir);
            }
            if let Some(port) = jwt.jwks_port() {
                plan.connect.extend([port, 53]);
            }
        }
        for dir in [
            &policy.server.state_dir,
            &policy.server.cache_dir,
            &policy.audit.dir,
        ] {
            plan.read_write.insert(resolved(dir));
            plan.created.insert(resolved(dir));
        }
        plan.read
            .extend(SYSTEM_READ.iter().map(PathBuf::from).filter(|p| p.exists()));
        // A resolv.conf that is a symlink (systemd-resolved) is replaced by rename in its
        // target's directory: the rule goes there.
        if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf")
            && target != Path::new("/etc/resolv.conf")
            && let Some(dir) = target.parent()
        {
            plan.read.insert(dir.to_path_buf());
        }
        plan.read_write.insert(PathBuf::from("/dev/null"));
        plan.bind.extend(listen.map(|a| a.port()));
        plan.bind.extend(policy.metrics.listen.map(|a| a.port()));
        // Ephemeral ports: a tool's explicit bind of the unspecified address must reach the
        // host's socket check for listening, which refuses it by name; listening is refused
        // there, not by the kernel (landlock has no right for it).
        plan.bind.insert(0);
        plan
    }

    /// The configuration's directory when it is one whose whole content should not be
    /// readable (the root, `/etc`, a home directory).
    pub fn broad_config_dir(&self) -> Option<&Path> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        self.config_dir.as_deref().filter(|d| {
            *d == Path::new("/") || *d == Path::new("/etc") || Some(d.to_path_buf()) == home
        })
    }

    /// Can every rule of the plan be made? Each path must be absolute and exist: the paths
    /// come from Airlock's own input (the command line and the configuration), so one that
    /// cannot be made is that input's fault, and serving without its rule would leave the
    /// process less confined than configured. The error names the path.
    pub fn check(&self) -> Result<(), String> {
        for (access, set) in [("read", &self.read), ("read-write", &self.read_write)] {
            for p in set.iter().filter(|p| !is_system(p)) {
                if !p.is_absolute() {
                    return Err(format!(
                        "the confinement plan's {access} path \"{}\" is not absolute",
                        p.display()
                    ));
                }
                if !p.exists() && !self.created.contains(p) {
                    return Err(format!(
                        "the confinement plan's {access} path {} does not exist, so no landlock \
                         rule can be made for it",
                        p.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Does this plan (the one in force) allow everything `other` needs? A reload cannot
    /// widen a ruleset: the kernel would refuse what it does not cover. System files are the
    /// same for both (one appearing later does not stop reloads).
    pub fn missing_from(&self, other: &Plan) -> Vec<String> {
        let covered = |p: &Path, set: &BTreeSet<PathBuf>| set.iter().any(|a| p.starts_with(a));
        let mut missing = Vec::new();
        for p in other.read.iter().filter(|p| !is_system(p)) {
            if !covered(p, &self.read) && !covered(p, &self.read_write) {
                missing.push(format!("read access to {}", p.display()));
            }
        }
        for p in &other.read_write {
            if !covered(p, &self.read_write) {
                missing.push(format!("write access to {}", p.display()));
            }
        }
        for port in other.connect.difference(&self.connect) {
            missing.push(format!("TCP connections to port {port}"));
        }
        missing
    }
}

fn is_system(p: &Path) -> bool {
    SYSTEM_READ.iter().any(|s| Path::new(s) == p) || p.starts_with("/run")
}

/// `p` absolute, with symlinks resolved where it exists: a landlock rule holds the inode it
/// was made for, and a relative path (even an empty one, the parent of a bare file name)
/// would name nothing.
fn resolved(p: &Path) -> PathBuf {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The mode in force: the configured one, else `required` for HTTP and `best-effort` for stdio.
pub fn mode_for(policy: &Policy, http: Option<SocketAddr>) -> ConfineMode {
    policy.confine.mode.unwrap_or(if http.is_some() {
        ConfineMode::Required
    } else {
        ConfineMode::BestEffort
    })
}
