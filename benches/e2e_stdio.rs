//! End-to-end load run over stdio: the release `airlock` binary, JSON-RPC over its stdin and
//! stdout, exactly as an MCP client speaks to it, with the durable audit log on.
//!
//! - sequential: one `tools/call` at a time, N round trips; p50/p90/p99 latency and calls/s.
//! - pipelined: W requests kept outstanding; calls/s.
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench e2e_stdio`
//! (`scripts/bench` does both). Environment: `E2E_CALLS` (default 5000), `E2E_WINDOW` (8).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::binary;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let calls = env_usize("E2E_CALLS", 5000);
    let window = env_usize("E2E_WINDOW", 8).max(1);
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let dir = std::env::temp_dir().join(format!("airlock-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            "[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\n",
            wasm.display()
        ),
    )
    .unwrap();

    let mut child = Command::new(binary())
        .args(["serve", "--stdio", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(std::env::temp_dir().join("airlock-bench-state"))
        // Each run its own log: every call's record is fsynced before its response.
        .arg("--audit-dir")
        .arg(dir.join("audit"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("airlock starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let send = |stdin: &mut std::process::ChildStdin, msg: &str| {
        stdin.write_all(msg.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#,
    );
    stdout.read_line(&mut line).unwrap();
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    let call = |id: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fixture_echo","arguments":{{"message":"hi"}}}}}}"#
        )
    };
    let mut read = |stdout: &mut BufReader<std::process::ChildStdout>| {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains(r#""text":"hi""#), "unexpected reply: {line}");
    };

    // Warm-up.
    for id in 1..=200 {
        send(&mut stdin, &call(id));
        read(&mut stdout);
    }

    let mut lat = Vec::with_capacity(calls);
    let started = Instant::now();
    for i in 0..calls {
        let t = Instant::now();
        send(&mut stdin, &call(1000 + i));
        read(&mut stdout);
        lat.push(t.elapsed());
    }
    let seq_elapsed = started.elapsed();
    lat.sort();

    let started = Instant::now();
    let mut next = 0;
    let mut done = 0;
    while done < calls {
        while next < calls && next - done < window {
            send(&mut stdin, &call(1_000_000 + next));
            next += 1;
        }
        read(&mut stdout);
        done += 1;
    }
    let pipe_elapsed = started.elapsed();
    drop(stdin);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("e2e stdio tools/call (fixture_echo), {calls} calls");
    println!(
        "  sequential: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, {:.0} calls/s",
        us(percentile(&lat, 0.5)),
        us(percentile(&lat, 0.9)),
        us(percentile(&lat, 0.99)),
        calls as f64 / seq_elapsed.as_secs_f64()
    );
    println!(
        "  pipelined (window {window}): {:.0} calls/s",
        calls as f64 / pipe_elapsed.as_secs_f64()
    );
}
