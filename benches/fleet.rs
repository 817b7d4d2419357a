//! A fleet on a real `redis-server` (loopback): how long a kill takes to hold on every replica,
//! and what the fleet store costs a call.
//!
//! - Kill propagation: three replicas; 100 times, `ctl kill` (an admin-socket request to one
//!   replica, as `airlock ctl` sends it) of a tool, then its revival. A change returns only once
//!   every live replica has applied it (or names the laggards: none may), so the time to its
//!   answer bounds when the last replica applied it. Prints p50, p99 and the maximum.
//! - Throughput: the same server configuration with and without `[fleet]`, with no rate limit
//!   and with a per-principal one (a shared bucket in the store, leased `rate_lease` tokens at a
//!   time), driven at one concurrency (16 unless `FLEET_CONCURRENCY`) over keep-alive
//!   Streamable HTTP connections, rounds alternating between the servers. The audit log is off
//!   so that the store's cost is not hidden behind the log's. Prints the median calls/s and p50
//!   and p99 latency, and the fleet's cost against the same configuration without it.
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench fleet`
//! (needs `redis-server`: `scripts/setup` installs it). Environment: `FLEET_CALLS` per run
//! (default 4000), `FLEET_ROUNDS` (default 3), `FLEET_KILLS` (default 100).

use airlock::control::admin::{Answer, Request, request};
use airlock::control::operator::Change;
use airlock::core::kill_scope::KillScope;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{dies_with_bench, load, start_http};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-server` on a loopback port, without persistence.
fn start_redis(port: u16) -> Child {
    let mut command = Command::new("redis-server");
    dies_with_bench(&mut command);
    let child = command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/setup installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A server named `name` in `dir`: the hostile fixture's tools, audit off, `extra` sections.
fn start(dir: &Path, name: &str, extra: &str) -> (Child, String, PathBuf) {
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let config = dir.join(format!("airlock-{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "{extra}\n[server]\nmax_in_flight = 128\n[audit]\nmode = \"off\"\n[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\n[tool.limits]\nmax_in_flight = 128\n",
            wasm.display()
        ),
    )
    .unwrap();
    let state = dir.join(format!("state-{name}"));
    let (child, addr) = start_http(&config, &state, &dir.join(format!("audit-{name}")));
    (child, addr, state.join("servers").join("1.sock"))
}

/// Wait until the server on `socket` says it is current in its fleet.
async fn current(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Answer::Status(s)) = request(socket, &Request::Status { fleet: false }).await
            && s.fleet.as_deref().is_some_and(|f| f.ends_with(", current"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a replica did not join the fleet"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let calls = env_or("FLEET_CALLS", 4000);
    let rounds = env_or("FLEET_ROUNDS", 3);
    let kills = env_or("FLEET_KILLS", 100);
    let concurrency = env_or("FLEET_CONCURRENCY", 16);
    let dir = std::env::temp_dir().join(format!("airlock-fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut redis = start_redis(port);
    let fleet = |prefix: &str| {
        format!("[fleet]\nstore = \"redis://127.0.0.1:{port}\"\nprefix = \"{prefix}\"\n")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];

    // Kill propagation across three replicas.
    let replicas: Vec<(Child, String, PathBuf)> = (0..3)
        .map(|i| start(&dir, &format!("replica-{i}"), &fleet("kills")))
        .collect();
    let mut took = Vec::with_capacity(kills);
    rt.block_on(async {
        for (_, _, socket) in &replicas {
            current(socket).await;
        }
        let scope = KillScope::Tool("fixture_fails".into());
        for i in 0..kills {
            // Asked of each replica in turn.
            let socket = &replicas[i % replicas.len()].2;
            let kill = Request::Change {
                change: Change::Kill {
                    scope: scope.clone(),
                    interrupt: false,
                },
                force: false,
            };
            let t = Instant::now();
            let answer = request(socket, &kill).await.expect("the kill is answered");
            took.push(t.elapsed());
            match answer {
                Answer::Changed(c) => assert!(
                    c.changed && c.laggards.is_empty(),
                    "kill {i}: laggards {:?}",
                    c.laggards
                ),
                other => panic!("kill {i}: {other:?}"),
            }
            let revive = Request::Change {
                change: Change::Revive {
                    scope: scope.clone(),
                },
                force: false,
            };
            request(socket, &revive)
                .await
                .expect("the revival is answered");
        }
    });
    took.sort();
    println!(
        "kill propagation, 3 replicas, {kills} kills: ctl answered (every replica applied) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(&took, 0.5)),
        ms(pct(&took, 0.99)),
        ms(*took.last().unwrap())
    );
    for (mut child, _, _) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }

    // Throughput with the fleet store on and off.
    let limit = "[rate_limits]\nper_principal = \"1000000/s\"\n";
    let configs = [
        ("no fleet, no rate limit", String::new()),
        ("fleet, no rate limit", fleet("throughput")),
        ("no fleet, rate limit", limit.to_owned()),
        (
            "fleet, rate limit",
            format!("{}{limit}", fleet("throughput")),
        ),
    ];
    let servers: Vec<(&str, Child, String)> = configs
        .iter()
        .enumerate()
        .map(|(i, (name, extra))| {
            let (child, addr, socket) = start(&dir, &format!("load-{i}"), extra);
            rt.block_on(async {
                if extra.contains("[fleet]") {
                    current(&socket).await;
                }
                load(&addr, None, 400, 4).await; // warm-up
            });
            (*name, child, addr)
        })
        .collect();
    println!(
        "throughput, HTTP tools/call (fixture_echo), audit off, concurrency {concurrency}, {calls} calls per run, {rounds} rounds alternating"
    );
    let mut runs: Vec<Vec<(f64, Duration, Duration)>> = vec![Vec::new(); servers.len()];
    for _ in 0..rounds {
        for (i, (_, _, addr)) in servers.iter().enumerate() {
            let (elapsed, lat) = rt.block_on(load(addr, None, calls, concurrency));
            runs[i].push((
                lat.len() as f64 / elapsed.as_secs_f64(),
                pct(&lat, 0.5),
                pct(&lat, 0.99),
            ));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rates: Vec<f64> = runs
        .iter()
        .map(|r| median(r.iter().map(|x| x.0).collect()))
        .collect();
    for (i, (name, _, _)) in servers.iter().enumerate() {
        println!(
            "  {name:<24} {:>6.0} calls/s, p50 {:.2} ms, p99 {:.2} ms (medians)",
            rates[i],
            median(runs[i].iter().map(|x| ms(x.1)).collect()),
            median(runs[i].iter().map(|x| ms(x.2)).collect()),
        );
    }
    for (off, on) in [(0, 1), (2, 3)] {
        let costs: Vec<f64> = runs[off]
            .iter()
            .zip(&runs[on])
            .map(|(a, b)| (1.0 - b.0 / a.0) * 100.0)
            .collect();
        println!(
            "  the fleet costs {:.1}% of throughput ({}; median of {rounds} rounds, each against the same round without it)",
            median(costs),
            if off == 0 {
                "no rate limit"
            } else {
                "per-principal rate limit in the store"
            }
        );
    }
    for (_, mut child, _) in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
