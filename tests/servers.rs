//! Several servers on one state directory: one `airlock serve --stdio` per MCP client, all on
//! the default configuration. Each has its own admin socket and audit chain; the overrides
//! are shared and watched, so a kill given to one server holds in all of them.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A stdio server spoken to as an MCP client would: JSON-RPC messages, one per line.
struct StdioServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    next_id: u64,
}

impl StdioServer {
    /// Start `airlock serve --stdio` on the default configuration with `state_dir`, and
    /// initialize the session.
    fn start(state_dir: &Path, tag: &str) -> StdioServer {
        let log = state_dir.with_file_name(format!(
            "{}-{tag}.log",
            state_dir.file_name().unwrap().to_str().unwrap()
        ));
        let mut child = Command::new(airlock())
            .args(["serve", "--stdio", "--state-dir"])
            .arg(state_dir)
            .arg("--cache-dir")
            .arg(shared_cache_dir())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = StdioServer {
            stdin: child.stdin.take(),
            child,
            lines,
            log,
            next_id: 0,
        };
        let init = server.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "servers-test", "version": "1"}}),
        );
        assert!(init.get("result").is_some(), "{init}");
        server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("the session is open");
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// Send a request and wait (at most 60 s) for its response; notifications are skipped.
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no response to {method} within 60 s; log:\n{}", self.log())
            });
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }

    /// `text_stats` of "hi": its named outcome.
    fn call_outcome(&mut self) -> String {
        let r = self.request(
            "tools/call",
            json!({"name": "text_stats", "arguments": {"text": "hi"}}),
        );
        let result = r.get("result").unwrap_or_else(|| panic!("{r}"));
        result_outcome(result).to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Close the session (end of stdin) and wait for a clean exit.
    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status:?}; log:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "no exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(state_dir: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["ctl", "--state-dir", state_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run_airlock_text(&all)
}

fn ls(state_dir: &Path) -> Vec<Value> {
    let (ok, out) = ctl(state_dir, &["--json", "ls"]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Call until `server`'s outcome is `wanted` (the other server's change reaches it through
/// the shared file, watched every 250 ms), at most 10 s.
fn until_outcome(server: &mut StdioServer, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = server.call_outcome();
        if outcome == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {outcome}, not {wanted}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn several_stdio_servers_share_a_state_directory_and_its_overrides() {
    let audit = fresh_audit_dir();
    let state = state_dir_for(&audit);
    let mut a = StdioServer::start(&state, "a");
    let mut b = StdioServer::start(&state, "b");
    assert_eq!(a.call_outcome(), "completed");
    assert_eq!(b.call_outcome(), "completed");

    // Each has its own admin socket and audit chain.
    let servers = ls(&state);
    assert_eq!(servers.len(), 2, "{servers:?}");
    let ids: Vec<&str> = servers
        .iter()
        .map(|s| s["server"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(servers[0]["pid"], a.child.id());
    assert_eq!(servers[1]["pid"], b.child.id());
    assert!(servers.iter().all(|s| s["serving"] == "stdio"));
    let chains: Vec<&str> = servers
        .iter()
        .map(|s| s["audit_chain"].as_str().unwrap())
        .collect();
    let audit_dir = state.join("audit");
    assert_eq!(chains[0], audit_dir.to_str().unwrap());
    assert_eq!(chains[1], audit_dir.join("chains/2").to_str().unwrap());
    let (ok, text) = ctl(&state, &["ls"]);
    assert!(
        ok && text.contains("SERVER") && text.contains("stdio"),
        "{text}"
    );

    // A view of one server needs a choice; --server picks one, --all-servers takes both.
    let (ok, out) = ctl(&state, &["status"]);
    assert!(
        !ok && out.contains("2 servers run with the state directory")
            && out.contains("--server ID"),
        "{out}"
    );
    let (ok, out) = ctl(&state, &["--server", "2", "--json", "status"]);
    assert!(ok, "{out}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["server"], "2");
    let (ok, out) = ctl(&state, &["--server", "7", "status"]);
    assert!(!ok && out.contains("no server 7"), "{out}");
    let (ok, out) = ctl(&state, &["--all-servers", "--json", "calls"]);
    assert!(ok, "{out}");
    let each: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(each.len(), 2, "{each:?}");

    // A kill given to one server holds in the other, which watches the shared file.
    let (ok, out) = ctl(&state, &["--server", "1", "kill", "--tool", "text_stats"]);
    assert!(ok, "{out}");
    assert_eq!(a.call_outcome(), "disabled_by_operator");
    until_outcome(&mut b, "disabled_by_operator");
    assert!(
        b.log()
            .contains("overrides changed by the state directory's overrides file"),
        "{}",
        b.log()
    );
    // Without a choice, a change goes to every server (each records and interrupts its own).
    let (ok, out) = ctl(&state, &["revive", "--tool", "text_stats"]);
    assert!(
        ok && out.contains("== server 1") && out.contains("== server 2"),
        "{out}"
    );
    assert_eq!(a.call_outcome(), "completed");
    assert_eq!(b.call_outcome(), "completed");

    // The shared overrides are not discarded from under a running server.
    refused_start(
        &[
            "serve",
            "--stdio",
            "--reset-state",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        "--reset-state would discard",
    );

    // A server killed outright leaves its id; the next server takes it again, and its chain,
    // recording the unclean stop there.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let servers = ls(&state);
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["server"], "2");
    assert!(!state.join("servers/1.sock").exists());
    let mut c = StdioServer::start(&state, "c");
    assert_eq!(c.call_outcome(), "completed");
    let servers = ls(&state);
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["server"], "1");
    assert_eq!(servers[0]["pid"], c.child.id());

    b.stop();
    c.stop();

    // Both chains verify, each sealed by its clean stop; the search merges them.
    let (ok, text) = run_airlock_text(&["audit", "verify", "--state-dir", state.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        text.contains("chain 1: OK") && text.contains("chain 2: OK"),
        "{text}"
    );
    assert_eq!(
        text.matches("(sealed by a clean stop)").count(),
        2,
        "{text}"
    );
    let chain_1 = audit_records(&audit_dir);
    let chain_2 = audit_records(&audit_dir.join("chains/2"));
    assert!(
        chain_1
            .iter()
            .any(|r| r["kind"] == "audit" && r["event"] == "unclean_stop"),
        "{chain_1:?}"
    );
    assert!(
        chain_2
            .iter()
            .any(|r| r["kind"] == "operator" && r["action"] == "adopt"),
        "the kill taken up from the file is in the second server's chain: {chain_2:?}"
    );
    let found = run_airlock(&[
        "audit",
        "search",
        "--state-dir",
        state.to_str().unwrap(),
        "--tool",
        "text_stats",
    ]);
    assert!(found.status.success());
    let calls: Vec<Value> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let in_chain = |records: &[Value]| {
        records
            .iter()
            .filter(|r| r["tool"] == "text_stats" && r["kind"] == "call")
            .count()
    };
    assert_eq!(calls.len(), in_chain(&chain_1) + in_chain(&chain_2));
    let times: Vec<&str> = calls.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.is_sorted(), "merged by time: {times:?}");

    // The evidence bundle holds both chains, and verifies.
    let bundle = state.with_file_name(format!(
        "{}-evidence.jsonl",
        state.file_name().unwrap().to_str().unwrap()
    ));
    let _ = std::fs::remove_file(&bundle);
    let (ok, out) = run_airlock_text(&[
        "audit",
        "export",
        "--state-dir",
        state.to_str().unwrap(),
        "--since",
        "1h",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("chain 1: ") && out.contains("chain 2: "),
        "{out}"
    );
    let (ok, out) = run_airlock_text(&[
        "audit",
        "verify",
        "--state-dir",
        state.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("chain 1: ") && out.contains("chain 2: "),
        "{out}"
    );
    let _ = std::fs::remove_file(&bundle);

    // The audit directory's chains are one key's: a server of another state directory (its
    // own key) is refused there.
    let other = fresh_audit_dir();
    refused_start(
        &[
            "serve",
            "--stdio",
            "--state-dir",
            state_dir_for(&other).to_str().unwrap(),
            "--audit-dir",
            audit_dir.to_str().unwrap(),
        ],
        "is signed by another key",
    );

    // A server of an earlier version (its socket `admin.sock` in the state directory) neither
    // locks the overrides nor is found by ctl: a new server does not start beside it.
    let legacy = std::os::unix::net::UnixListener::bind(state.join("admin.sock")).unwrap();
    refused_start(
        &["serve", "--stdio", "--state-dir", state.to_str().unwrap()],
        "an airlock of an earlier version",
    );
    drop(legacy);
}

/// `airlock ARGS` (a start) stops, saying `why`.
fn refused_start(args: &[&str], why: &str) {
    let refused = run_airlock(args);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains(why), "{err}");
}
