//! The cost of confinement per call: the release `airlock` binary serving HTTP (audit off, no
//! authentication) with `[confine] mode = "required"` (landlock and seccomp) against
//! `mode = "off"`, `CONFINE_CALLS` calls (default 10000) of `fixture_echo` at concurrency 1
//! and 16, alternating the two servers over `CONFINE_ROUNDS` rounds (default 3).
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench confine`.

use std::path::Path;
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{load, start_http};

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (calls, rounds) = (env("CONFINE_CALLS", 10_000), env("CONFINE_ROUNDS", 3));
    let dir = std::env::temp_dir().join(format!("airlock-bench-confine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut servers = Vec::new();
    for mode in ["required", "off"] {
        let config = dir.join(format!("airlock-{mode}.toml"));
        std::fs::write(
            &config,
            format!(
                "[confine]\nmode = \"{mode}\"\n[audit]\nmode = \"off\"\n[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\n[tool.limits]\nmax_in_flight = 64\n",
                wasm.display()
            ),
        )
        .unwrap();
        let (child, addr) = start_http(
            &config,
            &dir.join(format!("state-{mode}")),
            &dir.join(format!("audit-{mode}")),
        );
        rt.block_on(load(&addr, None, 500, 4)); // warm-up
        servers.push((mode, child, addr));
    }
    println!(
        "confinement per call: HTTP tools/call (fixture_echo), audit off, {calls} calls per run"
    );
    for concurrency in [1, 16] {
        let mut rates = [Vec::new(), Vec::new()];
        let mut p50s = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, (_, _, addr)) in servers.iter().enumerate() {
                let (elapsed, lat): (Duration, Vec<Duration>) =
                    rt.block_on(load(addr, None, calls, concurrency));
                rates[i].push(lat.len() as f64 / elapsed.as_secs_f64());
                p50s[i].push(lat[lat.len() / 2].as_secs_f64() * 1e6);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (on, off) = (median(&mut rates[0]), median(&mut rates[1]));
        println!(
            "  concurrency {concurrency:>2}: confined {on:>6.0} calls/s (p50 {:.0} us), unconfined {off:>6.0} calls/s (p50 {:.0} us): {:+.1}%",
            median(&mut p50s[0]),
            median(&mut p50s[1]),
            (on / off - 1.0) * 100.0
        );
    }
    for (_, mut child, _) in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
