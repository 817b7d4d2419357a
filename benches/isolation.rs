//! Isolation: the latency of benign calls while runaway calls spin. The release binary over
//! Streamable HTTP (audit off); 0, 1 and 2 concurrent `hostile_spin` calls (ample fuel, each
//! ended by its timeout and started again), and one benign client calling `fixture_echo`
//! sequentially. Prints p50 and p99 of the benign calls at each level, in rounds.
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench isolation`
//! (`ISOLATION_CALLS`, default 1000 benign calls per level; `ISOLATION_ROUNDS`, default 3;
//! `ISOLATION_SPIN_TIMEOUT`, default `2s`, the runaway calls' timeout; `ISOLATION_SERVER`,
//! TOML put first in the configuration, such as a `[server]` line and `epoch_tick = "2ms"`).

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One `tools/call` on a fresh connection, waited for to the end.
fn call(addr: &str, tool: &str, arguments: &str) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
}

fn main() {
    let calls: usize = std::env::var("ISOLATION_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rounds: usize = std::env::var("ISOLATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("airlock-isolation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = std::path::Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "{}[audit]\nmode = \"off\"\n[confine]\nmode = \"off\"\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.limits]\nfuel = 1_000_000_000_000_000\ntimeout = \"{}\"\n",
            std::env::var("ISOLATION_SERVER").unwrap_or_default(),
            wasm.display(),
            std::env::var("ISOLATION_SPIN_TIMEOUT").unwrap_or_else(|_| "2s".into()),
        ),
    )
    .unwrap();
    let (mut server, addr) = support::start_http(&config, &dir.join("state"), &dir.join("audit"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pct =
        |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "isolation: benign fixture_echo latency (ms) while N hostile_spin calls run, {calls} calls per level"
    );
    println!("| round | spinning | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for round in 1..=rounds {
        for spinning in [0usize, 1, 2] {
            let stop = Arc::new(AtomicBool::new(false));
            let spinners: Vec<_> = (0..spinning)
                .map(|_| {
                    let (addr, stop) = (addr.clone(), stop.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            call(&addr, "hostile_spin", "{}");
                        }
                    })
                })
                .collect();
            // Let the spinners get going.
            std::thread::sleep(Duration::from_millis(300));
            let (_, latencies) = rt.block_on(support::load(&addr, None, calls, 1));
            stop.store(true, Ordering::Relaxed);
            println!(
                "| {round} | {spinning} | {:.2} | {:.2} | {:.2} |",
                pct(&latencies, 0.5),
                pct(&latencies, 0.99),
                pct(&latencies, 1.0)
            );
            for s in spinners {
                let _ = s.join();
            }
        }
    }
    let _ = server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
