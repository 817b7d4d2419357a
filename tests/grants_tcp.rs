//! Raw TCP through `wasi:sockets`: only the address and port a `tcp` grant names, never a
//! listening socket, and every refusal a named policy denial. Real binary, real MCP client,
//! a real TCP server on 127.0.0.1.

mod common;

use common::{Session, TempDir, Transport, client, hostile_config, outcome};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Answers `pong` to the first line of each connection and counts connections.
struct PongServer {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl PongServer {
    fn start() -> PongServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                let mut line = String::new();
                let _ = BufReader::new(stream.try_clone().unwrap()).read_line(&mut line);
                let _ = stream.write_all(b"pong\n");
            }
        });
        PongServer { port, connections }
    }
}

fn run(tcp: &str, args: serde_json::Value) -> Session {
    let dir = TempDir::new("tcp");
    let cfg = hostile_config(&dir, &format!("[tool.grants]\ntcp = [{tcp}]"));
    client(
        "auto",
        Transport::Stdio(Some(&cfg)),
        json!({"calls": [{"id": "t", "tool": "fixture_tcp", "args": args}]}),
    )
}

fn blocked(s: &Session) -> String {
    let c = s.call("t");
    assert_eq!(c["is_error"], true, "{c}");
    assert_eq!(outcome(c), "blocked_by_policy", "{c}");
    // The call's log event names the tool, the grant kind and the target.
    let event = s
        .stderr
        .lines()
        .find(|l| l.contains("call blocked by policy"))
        .unwrap_or_else(|| panic!("no policy log event:\n{}", s.stderr));
    assert!(
        event.contains("tool=\"fixture_tcp\"") && event.contains("grant_kind=\"tcp\""),
        "{event}"
    );
    let text = c["text"].as_str().unwrap().to_owned();
    let target = event
        .split("target=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap();
    assert!(text.contains(target), "{event}\n{text}");
    text
}

#[test]
fn a_granted_address_and_port_is_reachable() {
    let server = PongServer::start();
    let p = server.port;
    let s = run(
        &format!("\"127.0.0.1:{p}\""),
        json!({"address": format!("127.0.0.1:{p}")}),
    );
    assert_eq!(s.call("t")["text"], "pong", "{}", s.report);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn tcp_without_a_grant_is_blocked_before_connecting() {
    let server = PongServer::start();
    let p = server.port;
    let s = run("", json!({"address": format!("127.0.0.1:{p}")}));
    // Without a tcp grant the tool cannot even create a socket (no descriptor is spent).
    assert_eq!(
        blocked(&s),
        "blocked by policy: creating a TCP socket is not granted (the tool has no tcp grant) to tool fixture_tcp — do not retry by another route"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn a_grant_covers_only_its_own_port() {
    let (granted, other) = (PongServer::start(), PongServer::start());
    let s = run(
        &format!("\"127.0.0.1:{}\"", granted.port),
        json!({"address": format!("127.0.0.1:{}", other.port)}),
    );
    assert_eq!(
        blocked(&s),
        format!(
            "blocked by policy: a TCP connection to 127.0.0.1:{} is not granted to tool fixture_tcp — do not retry by another route",
            other.port
        )
    );
    assert_eq!(other.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn listening_is_never_granted() {
    let server = PongServer::start();
    let s = run(
        &format!("\"127.0.0.1:{}\"", server.port),
        json!({"address": "", "listen": true}),
    );
    let text = blocked(&s);
    assert!(
        text.starts_with("blocked by policy: listening for TCP connections on 0.0.0.0:"),
        "{text}"
    );
}

#[test]
fn a_host_name_cannot_be_granted() {
    let dir = TempDir::new("tcp-name");
    let cfg = hostile_config(&dir, "[tool.grants]\ntcp = [\"db.internal:5432\"]");
    let state = common::shared_state_dir();
    let (ok, err) = common::check(&cfg, &state);
    assert!(!ok);
    assert!(
        err.contains("tool \"hostile\" (entry 1) › grants › tcp[0]: \"db.internal:5432\" is not an IP address and port"),
        "{err}"
    );
}
