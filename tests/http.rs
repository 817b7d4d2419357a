//! Streamable HTTP transport checks that need raw requests: Host and Origin validation.

mod common;

use common::{
    HttpServer, TempDir, Transport, airlock, client, fresh_audit_dir, hostile_config, raw_http,
    raw_post, run_airlock, shared_cache_dir, state_dir_for, stop_child,
};
use serde_json::json;

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[test]
fn host_and_origin_are_validated() {
    let dir = TempDir::new("http-dns");
    let server = HttpServer::start(&hostile_config(&dir, ""));
    let port = server.addr.rsplit(':').next().unwrap();
    let good_host = format!("127.0.0.1:{port}");
    assert_eq!(
        raw_post(&server.addr, &good_host, None, INIT),
        200,
        "a plain local request is served"
    );
    assert_eq!(
        raw_post(&server.addr, "evil.example.com", None, INIT),
        403,
        "DNS rebinding: foreign Host"
    );
    assert_eq!(
        raw_post(
            &server.addr,
            &good_host,
            Some("http://evil.example.com"),
            INIT
        ),
        403,
        "a browser page from another origin"
    );
}

#[test]
fn the_listeners_own_loopback_origins_are_accepted_by_default() {
    // `allowed_origins = []`: a page of Airlock's own port is not another site.
    let dir = TempDir::new("http-own-origin");
    let server = HttpServer::start(&hostile_config(&dir, ""));
    let port = server.addr.rsplit(':').next().unwrap();
    let host = format!("127.0.0.1:{port}");
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        assert_eq!(
            raw_post(&server.addr, &host, Some(&origin), INIT),
            200,
            "{origin}"
        );
    }
    // Another port on the same machine is another origin.
    assert_eq!(
        raw_post(&server.addr, &host, Some("http://127.0.0.1:1"), INIT),
        403
    );
}

/// Open `subscriptions/listen` with `filter` and read the stream until the acknowledgement
/// (or an error, or 10 s): the status and what was read.
fn listen(addr: &str, filter: serde_json::Value) -> (u16, String) {
    use std::io::{Read, Write};
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}},
        "notifications": filter}})
    .to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: subscriptions/listen\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("acknowledged") && !seen.contains("\"error\"") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let status = seen.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, seen)
}

#[test]
fn a_subscription_without_tool_changes_is_acknowledged_not_refused() {
    let dir = TempDir::new("http-listen");
    let server = HttpServer::start(&hostile_config(&dir, ""));
    for filter in [
        json!({}),
        json!({"promptsListChanged": true}),
        json!({"toolsListChanged": true}),
    ] {
        let (status, seen) = listen(&server.addr, filter.clone());
        assert_eq!(status, 200, "{filter}: {seen}");
        assert!(
            seen.contains("notifications/subscriptions/acknowledged"),
            "{filter}: {seen}"
        );
        let granted = filter.get("toolsListChanged").is_some();
        assert_eq!(
            seen.contains("\"toolsListChanged\":true"),
            granted,
            "{filter}: {seen}"
        );
    }
}

#[test]
fn configured_origins_are_accepted() {
    let dir = TempDir::new("http-origin");
    let config = common::hostile_config_with_server(
        &dir,
        "allowed_origins = [\"http://app.example.com\"]",
        "",
    );
    let server = HttpServer::start(&config);
    let host = format!("127.0.0.1:{}", server.addr.rsplit(':').next().unwrap());
    assert_eq!(
        raw_post(&server.addr, &host, Some("http://app.example.com"), INIT),
        200
    );
    assert_eq!(
        raw_post(&server.addr, &host, Some("http://other.example.com"), INIT),
        403
    );
}

#[test]
fn half_sent_requests_time_out_and_connections_are_capped_per_peer() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = TempDir::new("http-slowloris");
    let config = common::hostile_config_with_server(
        &dir,
        "max_connections_per_peer = 8\nhttp_header_timeout = \"1s\"\nhttp_body_timeout = \"1s\"",
        "",
    );
    let server = HttpServer::start(&config);
    // Eight connections each send half a request's headers, and one half a body.
    let mut half: Vec<TcpStream> = (0..7)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut slow_body = TcpStream::connect(&server.addr).unwrap();
    slow_body
        .write_all(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\"",
                server.addr
            )
            .as_bytes(),
        )
        .unwrap();
    half.push(slow_body);
    std::thread::sleep(Duration::from_millis(200));
    // The ninth from the same address is refused at once, with a reason.
    let mut ninth = TcpStream::connect(&server.addr).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = ninth.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("too many connections from this address"),
        "{answer}"
    );
    // Each half-sent request is dropped within its timeout (plus scheduling slack).
    let started = Instant::now();
    for s in &mut half {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // With their slots back, a benign client is served.
    let s = client(
        "auto",
        Transport::Http(&server.url),
        json!({"calls": [{"id": "e", "tool": "fixture_echo", "args": {"message": "served"}}]}),
    );
    assert_eq!(s.call("e")["text"], "served", "{}", s.report);
    assert!(
        server.log().contains("connections refused"),
        "{}",
        server.log()
    );
}

#[test]
fn sdk_schemas_carry_no_nonstandard_number_formats() {
    // `hostile_channel_flood` takes a `usize` and a `u64`: schemars would mark them
    // `format: "uint"` / `"uint64"`, which clients' validators warn about.
    let dir = TempDir::new("http-schema-formats");
    let server = HttpServer::start(&hostile_config(&dir, ""));
    let listed = common::raw_mcp(&server.addr, "tools/list", json!({}), &[]).unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    let tools = common::sse_json(&listed.body)["result"]["tools"].clone();
    let flood = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hostile_channel_flood")
        .unwrap()
        .clone();
    let size = &flood["inputSchema"]["properties"]["size"];
    assert_eq!(size["type"], "integer", "{flood}");
    assert_eq!(size["minimum"], 0, "{flood}");
    assert!(size.get("format").is_none(), "{flood}");
    assert!(!flood.to_string().contains("\"uint"), "{flood}");
}

#[test]
fn http_listens_on_localhost_by_name() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("http-localhost");
    let config = dir.config("[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n");
    let audit = fresh_audit_dir();
    let mut child = std::process::Command::new(airlock())
        .args(["serve", "--http", "localhost:0", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(state_dir_for(&audit))
        .arg("--cache-dir")
        .arg(shared_cache_dir())
        .arg("--audit-dir")
        .arg(&audit)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread to the end: a server whose stderr is closed cannot log.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("airlock: serving MCP on ") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let seen = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("airlock serves");
    let url = seen
        .lines()
        .find_map(|l| l.strip_prefix("airlock: serving MCP on "))
        .unwrap()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        !seen.contains("allowed_hosts"),
        "no Host warning on loopback: {seen}"
    );
    let addr = url.trim_start_matches("http://").trim_end_matches("/mcp");
    let r = raw_http(addr, "GET /healthz HTTP/1.1\r\n", "").unwrap();
    assert_eq!(r.status, 200);
    stop_child(&mut child);
    let out = run_airlock(&["serve", "--http", "nowhere:80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not IP:PORT, [IPv6]:PORT or localhost:PORT"),
        "{err}"
    );
}
