//! What a call costs above the protocol's floor, over stdio: the release `airlock` binary with
//! the audit log off, durable at the `"process"` level and durable at the `"machine"` level,
//! side by side. On each server's one connection the client alternates `ping` and a trivial
//! `tools/call` (`fixture_echo`), one request at a time, so both see the same moment of the
//! machine; `ping` is answered by the MCP layer alone, so call p50 − ping p50 is what the
//! pipeline, the sandbox and the audit record add. The servers take turns in rounds so that the
//! machine's changing load falls on all of them alike; the figures are medians over the rounds.
//!
//! Run: `cargo build --release -p airlock && cargo bench -p airlock-benches --bench call_floor`
//! (`scripts/bench` does both). Environment: `FLOOR_PAIRS` ping/call pairs per round (default
//! 2000), `FLOOR_ROUNDS` (default 5), `FLOOR_AUDIT` the servers to run (default
//! `off,process,machine`), `FLOOR_BINARIES` other `airlock` binaries to run the same servers of,
//! interleaved with this build's (comma-separated paths: a before-and-after comparison on a
//! machine whose speed drifts between runs). The servers log at their default level (`info`),
//! to /dev/null.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;
use support::{binary, dies_with_bench};

/// The audit settings of each server: off, and the two durability levels ("machine" as the
/// default of `mode = "durable"`).
const AUDIT: [(&str, &str); 3] = [
    ("off", "mode = \"off\""),
    ("process", "durability = \"process\""),
    ("machine", "mode = \"durable\""),
];

/// One server on stdio, initialised.
struct Server {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
    next_id: u64,
}

impl Server {
    fn start(dir: &Path, binary: &Path, name: String, audit: &str) -> Server {
        let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
        let key: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let config = dir.join(format!("airlock-{key}.toml"));
        std::fs::write(
            &config,
            format!(
                "[audit]\n{audit}\n[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\n",
                wasm.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(binary);
        dies_with_bench(&mut command);
        let mut child = command
            .args(["serve", "--stdio", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join(format!("state-{key}")))
            .arg("--audit-dir")
            .arg(dir.join(format!("audit-{key}")))
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("airlock starts");
        let mut server = Server {
            name,
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            line: String::new(),
            next_id: 1,
        };
        server.send(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"floor","version":"1"}}}"#,
        );
        server.receive("protocolVersion");
        server.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        server
    }

    fn send(&mut self, msg: &str) {
        self.stdin.write_all(msg.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn receive(&mut self, expect: &str) {
        self.line.clear();
        self.stdout.read_line(&mut self.line).unwrap();
        assert!(
            self.line.contains(expect),
            "{}: unexpected reply: {}",
            self.name,
            self.line
        );
    }

    /// One `ping` and one call, each timed from its request to its response.
    fn pair(&mut self) -> (Duration, Duration) {
        let id = self.next_id;
        self.next_id += 2;
        let ping = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"fixture_echo","arguments":{{"message":"hi"}}}}}}"#,
            id + 1
        );
        let t = Instant::now();
        self.send(&ping);
        self.receive(r#""result":{}"#);
        let ping = t.elapsed();
        let t = Instant::now();
        self.send(&call);
        self.receive(r#""text":"hi""#);
        (ping, t.elapsed())
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn p50_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let pairs = env_usize("FLOOR_PAIRS", 2000).max(1);
    let rounds = env_usize("FLOOR_ROUNDS", 5).max(1);
    let dir = std::env::temp_dir().join(format!("airlock-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chosen = std::env::var("FLOOR_AUDIT").unwrap_or_else(|_| "off,process,machine".into());
    let mut binaries = vec![binary()];
    if let Ok(others) = std::env::var("FLOOR_BINARIES") {
        binaries.extend(
            others
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| std::path::PathBuf::from(p.trim())),
        );
    }
    let mut servers: Vec<Server> = Vec::new();
    for (name, audit) in AUDIT
        .iter()
        .filter(|(name, _)| chosen.split(',').any(|c| c.trim() == *name))
    {
        for (i, bin) in binaries.iter().enumerate() {
            let label = if i == 0 {
                (*name).to_owned()
            } else {
                format!("{name} ({})", bin.display())
            };
            servers.push(Server::start(&dir, bin, label, audit));
        }
    }
    assert!(
        !servers.is_empty(),
        "FLOOR_AUDIT names none of off, process, machine"
    );
    for s in &mut servers {
        for _ in 0..300 {
            s.pair(); // warm-up
        }
    }
    println!(
        "stdio ping and tools/call (fixture_echo) alternated on one connection, {pairs} pairs per round, {rounds} rounds; p50s are medians over the rounds"
    );
    // Per server, per round: (ping p50, call p50, call p50 - ping p50), in µs.
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); servers.len()];
    for _ in 0..rounds {
        for (i, s) in servers.iter_mut().enumerate() {
            let (mut pings, mut calls) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
            for _ in 0..pairs {
                let (p, c) = s.pair();
                pings.push(p);
                calls.push(c);
            }
            let (ping, call) = (p50_us(pings), p50_us(calls));
            runs[i].push((ping, call, call - ping));
        }
    }
    for (s, runs) in servers.iter().zip(&runs) {
        let col = |f: fn(&(f64, f64, f64)) -> f64| median(runs.iter().map(f).collect());
        let diffs: Vec<f64> = runs.iter().map(|r| r.2).collect();
        let (lo, hi) = diffs
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
        println!(
            "  audit {:>7}: ping p50 {:.1} us, call p50 {:.1} us, call - ping {:.1} us (rounds: {lo:.1} to {hi:.1} us)",
            s.name,
            col(|r| r.0),
            col(|r| r.1),
            col(|r| r.2),
        );
    }
    for mut s in servers {
        drop(s.stdin);
        let _ = s.child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
