//! End-to-end load run over Streamable HTTP: the release `airlock` binary with JWT
//! authentication (an Ed25519 key generated here, a JWKS file) and the audit log off, durable
//! at the `"process"` level or at the `"machine"` level, driven by C concurrent keep-alive
//! connections each sending MCP 2026-07-28 `tools/call`s. The three servers run side by side and
//! the runs alternate between them, round after round, so that the machine's changing load
//! falls on all alike. Prints, per concurrency, the median calls/s and p50/p99 latency over the
//! rounds, and the cost of each durability level (the median of each round's cost against the
//! audit-off run of the same round, with its range). The server's CPU time per call (user and system, all
//! threads, from `/proc`) is printed beside, steadier than throughput on a shared machine, and
//! the disks' cache flushes per call (from `/sys/block`): how many calls share a durable batch,
//! and the cores the server and this client kept busy together.
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench e2e_http`
//! (`scripts/bench` does both). Environment: `E2E_CALLS` per run (default 4000),
//! `E2E_CONCURRENCY` (comma-separated, default `1,4,16,64`), `E2E_ROUNDS` (default 3).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{load, start_http};

const RESOURCE: &str = "https://airlock.bench/mcp";
const ISSUER: &str = "https://idp.bench/";

/// The audit settings of each server: off, and the two durability levels.
const AUDIT: [(&str, &str); 3] = [
    ("off", "mode = \"off\""),
    ("process", "durability = \"process\""),
    ("machine", "durability = \"machine\""),
];

/// Start the server; returns it and its `host:port`.
fn start(dir: &Path, (audit, settings): (&str, &str)) -> (Child, String) {
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let config = dir.join(format!("airlock-{audit}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nmax_in_flight = 128\n[auth]\nmode = \"jwt\"\nresource = \"{RESOURCE}\"\nissuer = \"{ISSUER}\"\njwks_file = \"jwks.json\"\n[roles]\nusers = [\"bench\"]\n[audit]\n{settings}\n[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\nroles = [\"users\"]\n[tool.limits]\nmax_in_flight = 128\n",
            wasm.display()
        ),
    )
    .unwrap();
    start_http(
        &config,
        &dir.join(format!("state-{audit}")),
        &dir.join(format!("audit-{audit}")),
    )
}

fn token(dir: &Path) -> String {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": B64.encode(public), "kid": "k"}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": ISSUER, "aud": RESOURCE, "sub": "bench", "roles": ["bench"], "iat": now, "exp": now + 3000});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
    .unwrap()
}

/// CPU time the process `pid` has used (all its threads, user and system), in µs.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks * 1e6 / 100.0 // USER_HZ is 100 on Linux
}

/// Cache flushes the machine's disks have completed (field 16 of `/sys/block/*/stat`): each
/// durable audit batch costs one, so flushes per call tell how many calls share a batch.
fn disk_flushes() -> f64 {
    let Ok(disks) = std::fs::read_dir("/sys/block") else {
        return 0.0;
    };
    disks
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("stat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(15)?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let calls: usize = std::env::var("E2E_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let levels: Vec<usize> = std::env::var("E2E_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let dir = std::env::temp_dir().join(format!("airlock-e2e-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = token(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rounds: usize = std::env::var("E2E_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let pct =
        |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "e2e HTTP tools/call (fixture_echo) with JWT auth, {calls} calls per run, {rounds} rounds alternating audit off, durability process and durability machine"
    );
    let servers: Vec<(&str, Child, String)> = AUDIT
        .into_iter()
        .map(|audit| {
            let (child, addr) = start(&dir, audit);
            let audit = audit.0;
            rt.block_on(load(&addr, Some(&token), 200, 4)); // warm-up
            (audit, child, addr)
        })
        .collect();
    for &c in &levels {
        // (calls/s, p50 µs, p99 µs, server CPU µs per call, disk flushes per call, machine
        // CPU use in cores: server and this client) per server, per round.
        type Run = (f64, f64, f64, f64, f64, f64);
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); servers.len()];
        for _ in 0..rounds {
            for (i, (_, child, addr)) in servers.iter().enumerate() {
                let me = std::process::id();
                let (cpu, mine, flushes) = (cpu_us(child.id()), cpu_us(me), disk_flushes());
                let (elapsed, lat) = rt.block_on(load(addr, Some(&token), calls, c));
                let n = lat.len() as f64;
                let cpu = cpu_us(child.id()) - cpu;
                let cores = (cpu + cpu_us(me) - mine) / elapsed.as_secs_f64() / 1e6;
                let flushes = (disk_flushes() - flushes) / n;
                let rate = n / elapsed.as_secs_f64();
                runs[i].push((
                    rate,
                    pct(&lat, 0.5),
                    pct(&lat, 0.99),
                    cpu / n,
                    flushes,
                    cores,
                ));
            }
        }
        for (i, (audit, _, _)) in servers.iter().enumerate() {
            let col = |f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
            println!(
                "  audit {audit:>7}, concurrency {c:>3}: {:>6.0} calls/s, p50 {:.0} us, p99 {:.0} us, server CPU {:.0} us/call, {:.2} disk flushes/call, {:.2} cores busy (medians)",
                col(|r| r.0),
                col(|r| r.1),
                col(|r| r.2),
                col(|r| r.3),
                col(|r| r.4),
                col(|r| r.5)
            );
        }
        for (i, (audit, _, _)) in servers.iter().enumerate().skip(1) {
            let costs: Vec<f64> = runs[0]
                .iter()
                .zip(&runs[i])
                .map(|(off, on)| (1.0 - on.0 / off.0) * 100.0)
                .collect();
            let (lo, hi) = costs
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
            println!(
                "  durability {audit} costs {:.0}% of throughput at concurrency {c} (median of {rounds} rounds; {lo:.0}% to {hi:.0}%)",
                median(costs.clone())
            );
        }
    }
    for (_, mut child, _) in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
