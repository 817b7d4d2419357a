//! `airlock doctor`: what confinement this machine can enforce for a configuration, and what
//! each tool can reach. With `--probe` the doctor confines itself exactly as `serve` would and
//! then tries what confinement must refuse, so the report is observed, not inferred.

use crate::config::confine::{ConfineMode, Plan, mode_for};
use crate::config::grants::SecretUse;
use crate::config::policy::Policy;
use crate::serve::confine;
use std::net::SocketAddr;
use std::path::Path;

fn status_field(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
}

/// The cgroup version and whether this process could create a cgroup under its own (where
/// serve creates its own), and that answer.
fn cgroups() -> (String, bool) {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            })
            .unwrap_or_default();
        let dir = root.join(own.trim_start_matches('/'));
        let (text, ok) = writable(&dir);
        return (format!("v2 (unified); {text}"), ok);
    }
    if root.join("memory").exists() {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == "memory")
                        .then(|| path.to_owned())
                })
            })
            .unwrap_or_default();
        let dir = root.join("memory").join(own.trim_start_matches('/'));
        let (text, ok) = writable(&dir);
        return (
            format!("v1 hierarchies (memory at {}); {text}", dir.display()),
            ok,
        );
    }
    ("none found under /sys/fs/cgroup".into(), false)
}

fn writable(dir: &Path) -> (String, bool) {
    let probe = dir.join(format!("airlock-doctor-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            (
                format!("{} is writable (a cgroup can be created)", dir.display()),
                true,
            )
        }
        Err(e) => (format!("{} is NOT writable: {e}", dir.display()), false),
    }
}

/// Print the report; `Ok(true)` when the configured (or default) mode can hold.
pub fn run(
    policy: &Policy,
    config: Option<&Path>,
    http: Option<SocketAddr>,
    probe: bool,
) -> anyhow::Result<bool> {
    let mode = mode_for(policy, http);
    let plan = Plan::for_policy(policy, config, http);
    let abi = crate::serve::confine::landlock_abi();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("config      {}", policy.origin);
    println!(
        "mode        {mode} ([confine] mode{})",
        match policy.confine.mode {
            Some(_) => "",
            None => ", the default for this transport",
        }
    );
    println!("kernel      {}", kernel.trim());
    let landlock = match abi {
        0 => "NOT AVAILABLE (the kernel has no landlock, or it is disabled)".to_owned(),
        1..=3 => format!("ABI {abi}: filesystem rules only, NO network rules (needs ABI 4)"),
        _ => format!("ABI {abi}: filesystem and TCP rules"),
    };
    println!("landlock    {landlock}");
    let seccomp = match status_field("Seccomp:") {
        Some(_) => "available (filter mode)".to_owned(),
        None => "NOT AVAILABLE".to_owned(),
    };
    println!("seccomp     {seccomp}");
    let (cgroup_text, cgroup_creatable) = cgroups();
    println!("cgroups     {cgroup_text}");
    println!();
    println!("what serve would enforce:");
    for p in &plan.read {
        println!("  read        {}", p.display());
    }
    for p in &plan.read_write {
        println!("  read-write  {}", p.display());
    }
    println!("  tcp bind    {:?}", plan.bind);
    println!("  tcp connect {:?}", plan.connect);
    let plan_ok = match plan.check() {
        Ok(()) => true,
        Err(e) => {
            println!("  PLAN CANNOT BE MADE: {e}; serve would refuse to start");
            false
        }
    };
    println!();
    for c in &policy.components {
        let g = &c.grants;
        println!("tool {} ({})", c.name, c.source);
        if g.is_empty() {
            println!("  reaches nothing outside its sandbox");
        }
        for f in &g.fs {
            println!("  fs      {} ({}) as {}", f.host.display(), f.mode, f.guest);
        }
        for n in &g.net {
            println!("  net     {}", n.id.trim_start_matches("net:"));
        }
        for t in &g.tcp {
            println!("  tcp     {}", t.address);
        }
        for s in &g.secrets {
            match &s.usage {
                SecretUse::Header { host, header, .. } => {
                    println!("  secret  {} as {header} to {host}", s.name)
                }
                SecretUse::Env => println!("  secret  {} (readable by the tool)", s.name),
            }
        }
    }
    // [confine.cgroup] asks for limits serve could not set where no cgroup can be created.
    let cgroup_holds = policy.confine.cgroup.is_none() || cgroup_creatable;
    if !cgroup_holds {
        println!("  cgroup      [confine.cgroup] is set, but no cgroup can be created here");
    }
    let would_hold = abi >= 4 && status_field("Seccomp:").is_some() && cgroup_holds;
    if !probe {
        if !would_hold {
            println!();
            if mode == ConfineMode::Required {
                println!(
                    "REQUIRED CONFINEMENT CANNOT HOLD on this machine: serve would refuse to start"
                );
            } else {
                println!(
                    "CONFINEMENT WOULD BE INCOMPLETE on this machine: serve would start ({mode}) without all of it"
                );
            }
        }
        if mode == ConfineMode::Off {
            println!();
            println!(
                "CONFINEMENT IS OFF ([confine] mode = \"off\"): serve would not confine itself"
            );
        }
        // Non-zero whenever serve would not enforce the whole plan.
        return Ok(plan_ok && would_hold && mode != ConfineMode::Off);
    }
    if !plan_ok {
        return Ok(false);
    }
    println!();
    println!("probe: confining this process as serve would, then trying what must be refused");
    let effort = if mode == ConfineMode::Off {
        ConfineMode::Off
    } else {
        ConfineMode::BestEffort
    };
    confine::prepare_dirs(policy)?;
    // Not the cgroup: joining it would change a running server's (same state directory).
    let report = confine::apply(&plan, effort, None)?;
    println!("  landlock    {}", report.landlock);
    println!("  seccomp     {}", report.seccomp);
    println!("  cgroup      {}", report.cgroup);
    let outside = ["/etc/passwd", "/etc/hostname", "/proc/version"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists() && !plan.read.iter().any(|a| p.starts_with(a)))
        .unwrap_or(Path::new("/etc/passwd"));
    let port = (1..=1023u16)
        .find(|p| !plan.connect.contains(p))
        .unwrap_or(9);
    let mut all_refused = report.holds();
    for (what, outcome) in confine::probe(outside, port) {
        match outcome {
            Ok(how) => println!("  {what}: {how}"),
            Err(how) => {
                all_refused = false;
                println!("  {what}: {how}");
            }
        }
    }
    // Non-zero whenever serve would not enforce the whole plan.
    Ok(all_refused && mode != ConfineMode::Off)
}
