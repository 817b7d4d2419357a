//! The second wall: the host process confines itself, so that even a bug in the host or in
//! wasmtime cannot reach files, ports or syscalls the configuration does not need.
//!
//! - landlock: read access to the configuration's and components' directories (a reload reads
//!   them again), read-write to the state, cache and audit directories, each filesystem grant
//!   with its own mode, a few system files name resolution reads; TCP binds only on the listen
//!   port (and ephemeral ports) and connects only to ports an egress grant or the JWKS URL
//!   names.
//! - seccomp: a deny-list of what a tool host never needs (process creation and exec, ptrace,
//!   mounts, kernel modules, keyrings, raw and packet sockets, …), refused with EPERM.
//!
//! Both are applied before any thread exists (landlock on this kernel's ABI does not reach
//! threads created earlier), so `serve` loads its configuration, confines itself, and only then
//! starts the async runtime and wasmtime.

use crate::config::confine::{CgroupLimits, ConfineMode, Plan};
use crate::config::policy::Policy;
use std::fmt;
use std::path::Path;

/// Resolve a name once while nothing is confined: the C library loads its name-service modules
/// on first use, which it could not do afterwards.
pub fn warm_name_resolution() {
    use std::net::ToSocketAddrs;
    let _ = ("localhost", 0).to_socket_addrs();
}

/// What each layer achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub landlock: Layer,
    pub seccomp: Layer,
    /// `Off` when no `[confine.cgroup]` is configured.
    pub cgroup: Layer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Enforced(String),
    Partial(String),
    Missing(String),
    Off,
}

impl Layer {
    fn holds(&self) -> bool {
        matches!(self, Layer::Enforced(_))
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Enforced(d) => write!(f, "enforced ({d})"),
            Layer::Partial(d) => write!(f, "PARTIAL: {d}"),
            Layer::Missing(d) => write!(f, "NOT ENFORCED: {d}"),
            Layer::Off => f.write_str("off"),
        }
    }
}

impl Report {
    pub fn holds(&self) -> bool {
        self.landlock.holds()
            && self.seccomp.holds()
            && matches!(self.cgroup, Layer::Enforced(_) | Layer::Off)
    }
}

/// Create the directories a serving process writes (the state directory private), so that
/// landlock has something to make their rules for.
pub fn prepare_dirs(policy: &Policy) -> anyhow::Result<()> {
    use anyhow::Context;
    crate::core::files::private_state_dir(&policy.server.state_dir)?;
    for dir in [&policy.server.cache_dir, &policy.audit.dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// [`apply`] with the policy's cgroup limits, if any, for the server `server` (its id on the
/// state directory: each server on it gets its cgroup, and its limits, of its own).
pub fn apply_for(
    policy: &Policy,
    plan: &Plan,
    mode: ConfineMode,
    server: &str,
) -> anyhow::Result<Report> {
    use sha2::Digest;
    let cgroup = policy.confine.cgroup.as_ref().map(|c| {
        let dir = policy.server.state_dir.as_os_str().as_encoded_bytes();
        let tag = hex::encode(&sha2::Sha256::digest(dir)[..6]);
        (c, format!("airlock-{tag}-{server}"))
    });
    apply(
        plan,
        mode,
        cgroup.as_ref().map(|(c, name)| (*c, name.as_str())),
    )
}

/// Confine the calling process (which must have no other thread yet) by `plan`. With
/// `Required`, a layer that cannot be enforced fully is an error; with `BestEffort` the report
/// says what is missing.
pub fn apply(
    plan: &Plan,
    mode: ConfineMode,
    cgroup: Option<(&CgroupLimits, &str)>,
) -> anyhow::Result<Report> {
    if mode == ConfineMode::Off {
        tracing::warn!("[confine] mode = \"off\": the host process is not confined");
        return Ok(Report {
            landlock: Layer::Off,
            seccomp: Layer::Off,
            cgroup: Layer::Off,
        });
    }
    // A rule that cannot be made is the configuration's fault, not the kernel's: in every mode
    // it stops the start rather than leaving the process less confined than configured.
    plan.check().map_err(anyhow::Error::msg)?;
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads > 1 {
        anyhow::bail!(
            "confinement must be applied before any thread starts, but this process already has \
             {threads}: landlock would not reach them"
        );
    }
    // The cgroup first: landlock then closes /sys/fs/cgroup to this process.
    let cgroup = match cgroup {
        Some((limits, name)) => cgroup_layer(limits, name),
        None => Layer::Off,
    };
    let landlock = landlock_layer(plan);
    let seccomp = seccomp_layer();
    let report = Report {
        landlock,
        seccomp,
        cgroup,
    };
    if mode == ConfineMode::Required && !report.holds() {
        anyhow::bail!(
            "confinement is required ([confine] mode = \"required\", the default for serve --http) \
             but does not hold: landlock {}; seccomp {}; cgroup {}. Run `airlock doctor` for \
             details, or set [confine] mode = \"best-effort\"",
            report.landlock,
            report.seccomp,
            report.cgroup
        );
    }
    for (name, layer) in [
        ("landlock", &report.landlock),
        ("seccomp", &report.seccomp),
        ("cgroup", &report.cgroup),
    ] {
        if *layer == Layer::Off {
            continue;
        }
        if layer.holds() {
            tracing::info!(layer = name, "{layer}");
        } else {
            tracing::warn!(layer = name, "confinement incomplete: {layer}");
        }
    }
    Ok(report)
}

/// Put this process in the cgroup `name` (named after the state directory and the server's
/// id on it, so a restart reuses it) with `limits`, on cgroup v2 where the controllers are
/// there and v1 otherwise.
fn cgroup_layer(limits: &CgroupLimits, name: &str) -> Layer {
    use cgroups_rs::CgroupPid;
    use cgroups_rs::fs::cgroup::get_cgroups_relative_paths;
    use cgroups_rs::fs::cpu::CpuController;
    use cgroups_rs::fs::memory::MemController;
    use cgroups_rs::fs::{Cgroup, hierarchies};
    let hierarchy = hierarchies::auto();
    let version = if hierarchy.v2() { "v2" } else { "v1" };
    let result = (|| -> Result<String, String> {
        let not_writable = |e: cgroups_rs::fs::error::Error| {
            format!(
                "cannot create cgroup {name} ({version}): {e} (the cgroup hierarchy is not writable by this process)"
            )
        };
        // Under the process's own cgroup, never at the root: leaving a service manager's
        // cgroup would also leave its limits. (v1: per-controller relative paths; v2: the
        // one unified path, which the crate does not apply by itself.)
        let cg = if hierarchy.v2() {
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
                })
                .ok_or("cannot read this process's cgroup v2 path")?;
            let nested = format!("{}/{name}", own.trim().trim_matches('/'));
            Cgroup::new(hierarchy, nested.trim_start_matches('/')).map_err(not_writable)?
        } else {
            let relative = get_cgroups_relative_paths().map_err(|e| e.to_string())?;
            Cgroup::new_with_relative_paths(hierarchy, name, relative).map_err(not_writable)?
        };
        let mut set = Vec::new();
        if let Some(m) = limits.memory {
            let mem: &MemController = cg
                .controller_of()
                .ok_or("no memory controller in this hierarchy")?;
            mem.set_limit(m.bytes() as i64)
                .map_err(|e| format!("cannot set the memory limit: {e}"))?;
            set.push(format!("memory {m}"));
        }
        if let Some(p) = limits.cpu_percent {
            let cpu: &CpuController = cg
                .controller_of()
                .ok_or("no cpu controller in this hierarchy")?;
            cpu.set_cfs_quota_and_period(Some(i64::from(p) * 1000), Some(100_000))
                .map_err(|e| format!("cannot set the cpu limit: {e}"))?;
            set.push(format!("cpu {p}%"));
        }
        cg.add_task_by_tgid(CgroupPid::from(u64::from(std::process::id())))
            .map_err(|e| format!("cannot move this process into {name}: {e}"))?;
        Ok(format!("{name} ({version}): {}", set.join(", ")))
    })();
    match result {
        Ok(summary) => Layer::Enforced(summary),
        Err(why) => Layer::Missing(why),
    }
}

fn landlock_layer(plan: &Plan) -> Layer {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    // Every path exists and is absolute: `Plan::check` ran before (the crate would skip a
    // path it cannot open).
    let abi = ABI::V4;
    let tcp = AccessNet::BindTcp | AccessNet::ConnectTcp;
    // No abstract unix sockets and no signals outside this process: scopes, from ABI 6. They
    // are asked for only where the kernel has them, so that a kernel with ABI 4 or 5 enforces
    // all that was asked (the plan) instead of reporting the whole ruleset as partial.
    let scoped = landlock_abi() >= 6;
    let result = (|| -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(tcp)?;
        if scoped {
            ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
        }
        let mut created = ruleset
            .create()?
            .add_rules(path_beneath_rules(&plan.read, AccessFs::from_read(abi)))?
            .add_rules(path_beneath_rules(
                &plan.read_write,
                AccessFs::from_all(abi),
            ))?;
        for port in &plan.bind {
            created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
        }
        for port in &plan.connect {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
        created.restrict_self()
    })();
    let summary = format!(
        "{} read, {} read-write paths; bind {:?}; connect {:?}{}",
        plan.read.len(),
        plan.read_write.len(),
        plan.bind,
        plan.connect,
        if scoped {
            ""
        } else {
            "; no scopes (abstract sockets, signals: ABI 6)"
        }
    );
    match result {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => Layer::Enforced(summary),
            RulesetStatus::PartiallyEnforced => Layer::Partial(format!(
                "the kernel's landlock ABI lacks some rights (network rules need ABI 4): {summary}"
            )),
            RulesetStatus::NotEnforced => {
                Layer::Missing("landlock is not available in this kernel".into())
            }
        },
        Err(e) => Layer::Missing(format!("landlock failed: {e}")),
    }
}

/// Syscalls a tool host never makes. Threads are created with clone(CLONE_THREAD); a clone
/// without it would be a new process and is refused by argument.
fn denied_syscalls() -> Vec<i64> {
    let mut denied = vec![
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_pidfd_getfd,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
    ];
    #[cfg(target_arch = "x86_64")]
    denied.extend([
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_iopl,
        libc::SYS_ioperm,
    ]);
    denied
}

fn seccomp_layer() -> Layer {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    let build = || -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
            denied_syscalls().into_iter().map(|s| (s, vec![])).collect();
        // A new process: clone without CLONE_THREAD; and any clone into new namespaces
        // (flags are an unsigned long).
        let flag = |mask: u64, value: u64| -> Result<SeccompRule, seccompiler::BackendError> {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(mask),
                value,
            )?])
        };
        let mut clone = vec![flag(libc::CLONE_THREAD as u64, 0)?];
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ] {
            clone.push(flag(ns as u64, ns as u64)?);
        }
        rules.insert(libc::SYS_clone, clone);
        // Unix sockets (the admin socket is bound before this), raw and packet sockets
        // (domain and type are ints).
        rules.insert(
            libc::SYS_socket,
            vec![
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::AF_UNIX as u64,
                )?])?,
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::AF_PACKET as u64,
                )?])?,
                SeccompRule::new(vec![SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(0xf),
                    libc::SOCK_RAW as u64,
                )?])?,
            ],
        );
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            std::env::consts::ARCH
                .try_into()
                .map_err(|_| seccompiler::BackendError::InvalidTargetArch("unsupported".into()))?,
        )?;
        filter.try_into()
    };
    // clone3 passes its flags in memory a filter cannot read: it is answered "not
    // implemented", and the C library falls back to clone, whose flags are checked above.
    let program = match build() {
        Ok(p) => p,
        Err(e) => return Layer::Missing(format!("the seccomp filter could not be built: {e}")),
    };
    let clone3 = clone3_filter();
    let applied = seccompiler::apply_filter(&program).and_then(|_| match &clone3 {
        Some(p) => seccompiler::apply_filter(p),
        None => Ok(()),
    });
    match applied {
        Ok(()) if clone3.is_some() => Layer::Enforced(format!(
            "{} syscalls refused, process-creating or namespace clone, unix, raw and packet sockets",
            denied_syscalls().len()
        )),
        Ok(()) => Layer::Partial("clone3 could not be filtered".into()),
        Err(e) => Layer::Missing(format!("seccomp failed: {e}")),
    }
}

/// A second filter: clone3 → ENOSYS.
fn clone3_filter() -> Option<seccompiler::BpfProgram> {
    use seccompiler::{SeccompAction, SeccompFilter};
    let rules = [(libc::SYS_clone3, vec![])].into_iter().collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        std::env::consts::ARCH.try_into().ok()?,
    )
    .ok()?;
    filter.try_into().ok()
}

/// Try what confinement must refuse and say what happened to each attempt: read a file
/// outside the plan, connect to a port outside it, start a process. `Ok` means refused.
pub fn probe(outside_file: &Path, outside_port: u16) -> Vec<(String, Result<String, String>)> {
    fn verdict<T>(attempt: std::io::Result<T>) -> Result<String, String> {
        match attempt {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ENOSYS)
                ) =>
            {
                Ok(format!("refused: {e}"))
            }
            Err(e) => Err(format!("failed, but not by confinement: {e}")),
            Ok(_) => Err("ALLOWED".into()),
        }
    }
    vec![
        (
            format!("read {}", outside_file.display()),
            verdict(std::fs::read(outside_file)),
        ),
        (
            format!("connect 127.0.0.1:{outside_port}"),
            verdict(std::net::TcpStream::connect(("127.0.0.1", outside_port))),
        ),
        (
            "run /bin/true".into(),
            verdict(std::process::Command::new("/bin/true").status()),
        ),
    ]
}

/// The kernel's landlock ABI version (0: none).
pub(crate) fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or -1 with errno); it creates nothing and touches no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}
