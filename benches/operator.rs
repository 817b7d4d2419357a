//! The operator plane under measurement, against the release `airlock` binary over HTTP:
//!
//! - `kill --interrupt` → stop latency: a CPU-bound call (`hostile_spin`) is running; the
//!   time from sending the kill on the admin socket to the call's response arriving, over
//!   `OP_TRIALS` trials (default 100), at epoch ticks of 1, 5 and 10 ms.
//! - the epoch tick's per-call cost: the same fuel-bounded CPU-bound call at each tick.
//! - reload under load: `OP_CLIENTS` (default 8) clients calling `fixture_echo` while the
//!   configuration is reloaded `OP_RELOADS` times (default 5): failed calls, and latency
//!   percentiles of calls overlapping a reload against the rest.
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench operator`.

use airlock::control::admin::{self, Answer, Request};
use airlock::control::operator::Change;
use airlock::core::kill_scope::KillScope;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::start_http;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One MCP 2026-07-28 `tools/call` on a fresh connection; returns the response body.
fn call(addr: &str, tool: &str, arguments: &str) -> String {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn ask(rt: &tokio::runtime::Runtime, socket: &Path, request: Request) -> Answer {
    rt.block_on(admin::request(socket, &request)).unwrap()
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn config(dir: &Path, tick_ms: u64, extra: &str) -> std::path::PathBuf {
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let path = dir.join(format!("airlock-{tick_ms}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\nepoch_tick = \"{tick_ms}ms\"\n[audit]\nmode = \"off\"\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.limits]\ntimeout = \"60s\"\nfuel = 2_000_000_000\n{extra}",
            wasm.display()
        ),
    )
    .unwrap();
    path
}

fn interrupt_latency(rt: &tokio::runtime::Runtime, dir: &Path, tick_ms: u64, trials: usize) {
    let state = dir.join(format!("state-{tick_ms}"));
    let (mut child, addr) = start_http(
        &config(dir, tick_ms, ""),
        &state,
        &dir.join(format!("audit-{tick_ms}")),
    );
    let socket = admin::running(&state)
        .expect("the state directory can be read")
        .pop()
        .expect("the server listens on its admin socket")
        .socket;

    // The tick's cost: one CPU-bound call that ends when its fuel runs out.
    let spin_fuel = r#"{}"#;
    let mut spins = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = call(&addr, "hostile_spin", spin_fuel);
        assert!(r.contains("cpu_budget_exhausted"), "{r}");
        spins.push(t.elapsed());
    }
    spins.sort();

    let mut stops = Vec::with_capacity(trials);
    for _ in 0..trials {
        let a = addr.clone();
        let running = std::thread::spawn(move || call(&a, "hostile_spin", "{}"));
        // Wait until the call is registered and has run for a moment.
        loop {
            if let Answer::Calls { calls } = ask(rt, &socket, Request::Calls { fleet: false })
                && calls
                    .iter()
                    .any(|c| c.tool == "hostile_spin" && c.age_ms >= 5)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        ask(
            rt,
            &socket,
            Request::Change {
                change: Change::Kill {
                    scope: KillScope::Tool("hostile_spin".into()),
                    interrupt: true,
                },
                force: false,
            },
        );
        let body = running.join().unwrap();
        stops.push(t.elapsed());
        assert!(body.contains("stopped_by_operator"), "{body}");
        ask(
            rt,
            &socket,
            Request::Change {
                change: Change::Revive {
                    scope: KillScope::Tool("hostile_spin".into()),
                },
                force: false,
            },
        );
    }
    stops.sort();
    println!(
        "  epoch tick {tick_ms:>2} ms: kill --interrupt → response p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({trials} trials); 2G-fuel spin {:.0} ms median",
        pct(&stops, 0.5),
        pct(&stops, 0.99),
        pct(&stops, 1.0),
        pct(&spins, 0.5),
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn reload_under_load(rt: &tokio::runtime::Runtime, dir: &Path, clients: usize, reloads: usize) {
    let state = dir.join("state-reload");
    let config = config(dir, 10, "");
    let (mut child, addr) = start_http(&config, &state, &dir.join("audit-reload"));
    let socket = admin::running(&state)
        .expect("the state directory can be read")
        .pop()
        .expect("the server listens on its admin socket")
        .socket;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let body = call(&addr, "fixture_echo", r#"{"message":"hi"}"#);
                    out.push((t, t.elapsed(), body.contains(r#""text":"hi""#)));
                }
                out
            })
        })
        .collect();
    let mut windows = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..reloads {
        let t = Instant::now();
        ask(rt, &socket, Request::Reload);
        windows.push((t, Instant::now()));
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut during, mut other, mut failed) = (Vec::new(), Vec::new(), 0);
    for w in workers {
        for (start, took, ok) in w.join().unwrap() {
            failed += usize::from(!ok);
            let end = start + took;
            if windows.iter().any(|(a, b)| start <= *b && end >= *a) {
                during.push(took);
            } else {
                other.push(took);
            }
        }
    }
    during.sort();
    other.sort();
    println!(
        "  reload under load ({clients} clients, {reloads} reloads): {failed} failed of {} calls; calls overlapping a reload p50 {:.2} ms, p99 {:.2} ms; others p50 {:.2} ms, p99 {:.2} ms",
        during.len() + other.len(),
        pct(&during, 0.5),
        pct(&during, 0.99),
        pct(&other, 0.5),
        pct(&other, 0.99),
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let dir = std::env::temp_dir().join(format!("airlock-bench-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("operator plane (release binary, HTTP, audit off)");
    let trials = env("OP_TRIALS", 100);
    for tick in [1, 5, 10] {
        interrupt_latency(&rt, &dir, tick, trials);
    }
    reload_under_load(&rt, &dir, env("OP_CLIENTS", 8), env("OP_RELOADS", 5));
    let _ = std::fs::remove_dir_all(&dir);
}
