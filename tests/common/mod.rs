//! Shared helpers for the integration tests: the real `airlock` binary, the real Python MCP
//! client, temporary configurations, and an HTTP server started on an ephemeral port.

#![allow(dead_code)] // each test file uses a different subset

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn airlock() -> &'static str {
    env!("CARGO_BIN_EXE_airlock")
}

/// The hostile test component built by `build.rs`.
pub fn hostile_wasm() -> PathBuf {
    Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm")
}

/// A state directory shared by all tests, so each component is compiled once per run.
pub fn shared_state_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("airlock-test-state")
}

/// The state directory of the server whose audit log is in `audit_dir`: one per server (it
/// holds the admin socket and the operator state), the same again for a restart on that log.
pub fn state_dir_for(audit_dir: &Path) -> PathBuf {
    let mut name = audit_dir.file_name().unwrap().to_os_string();
    name.push("-state");
    audit_dir.with_file_name(name)
}

/// The compile cache every test server shares, so each component is compiled once per run.
pub fn shared_cache_dir() -> PathBuf {
    shared_state_dir().join("cache")
}

/// A fresh audit log directory for one server process (each log has a single writer).
pub fn fresh_audit_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "audit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    // Process ids are reused (pid_max is often 32768): what an earlier run left under this
    // name is not this server's.
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(state_dir_for(&dir));
    dir
}

/// The Python interpreter with `mcp==2.3.0` (made by `scripts/test`).
pub fn python() -> PathBuf {
    let p = std::env::var_os("AIRLOCK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").expect("HOME is set"))
                .join(".cache/airlock/venv/bin/python")
        });
    assert!(
        p.is_file(),
        "no Python MCP client at {}: run ./scripts/test (it creates the venv), or set AIRLOCK_TEST_PYTHON",
        p.display()
    );
    p
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/mcp_client.py")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Write `airlock.toml` in this directory and return its path.
    pub fn config(&self, body: &str) -> PathBuf {
        let p = self.0.join("airlock.toml");
        std::fs::write(&p, body).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A configuration serving the hostile fixture with `limits` (TOML lines) added.
pub fn hostile_config(dir: &TempDir, limits: &str) -> PathBuf {
    hostile_config_with_server(dir, "", limits)
}

/// The same, with `[server]` lines as well.
pub fn hostile_config_with_server(dir: &TempDir, server: &str, limits: &str) -> PathBuf {
    dir.config(&format!(
        "[server]\n{server}\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.limits]\n{limits}\n",
        hostile_wasm().display()
    ))
}

/// Run `airlock ARGS` to completion.
pub fn run_airlock(args: &[&str]) -> Output {
    Command::new(airlock())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("airlock runs")
}

/// Run `airlock ARGS` to completion: whether it succeeded, and its stdout then stderr.
pub fn run_airlock_text(args: &[&str]) -> (bool, String) {
    let out = run_airlock(args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Run `airlock check CONFIG --state-dir STATE`: whether it accepted the configuration, and
/// its stderr.
pub fn check(config: &Path, state_dir: &Path) -> (bool, String) {
    let out = run_airlock(&[
        "check",
        config.to_str().unwrap(),
        "--state-dir",
        state_dir.to_str().unwrap(),
    ]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The audit log files in `dir`, oldest first.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// How the client reaches the server.
pub enum Transport<'a> {
    /// The client starts `airlock serve --stdio` with this config (`None`: the embedded default).
    Stdio(Option<&'a Path>),
    Http(&'a str),
}

/// What the Python client reported, and the client's stderr (which holds the server's log
/// for stdio sessions).
pub struct Session {
    pub report: Value,
    pub stderr: String,
    /// The audit log directory of the server the client started (stdio only).
    pub audit_dir: Option<PathBuf>,
}

impl Session {
    pub fn call(&self, id: &str) -> &Value {
        let c = &self.report["calls"][id];
        assert!(!c.is_null(), "no call `{id}` in {}", self.report);
        c
    }
}

/// Run the Python MCP client with `plan` (see tests/py/mcp_client.py) in `mode` (`legacy` or `auto`).
pub fn client(mode: &str, transport: Transport<'_>, plan: Value) -> Session {
    let (mut cmd, audit_dir) = client_command(mode, transport, &plan);
    let out = cmd.output().expect("the Python client runs");
    finish_client(out, audit_dir)
}

/// The command that runs the Python MCP client, and the audit directory of the stdio server it
/// starts (whose state directory is [`state_dir_for`] it).
pub fn client_command(
    mode: &str,
    transport: Transport<'_>,
    plan: &Value,
) -> (Command, Option<PathBuf>) {
    let mut cmd = Command::new(python());
    cmd.arg(client_script()).args(["--mode", mode]);
    let mut audit_dir = None;
    match transport {
        Transport::Stdio(config) => {
            let audit = fresh_audit_dir();
            cmd.arg("--stdio")
                .arg(airlock())
                .args(["serve", "--stdio", "--state-dir"])
                .arg(state_dir_for(&audit))
                .arg("--cache-dir")
                .arg(shared_cache_dir())
                .arg("--audit-dir")
                .arg(&audit);
            audit_dir = Some(audit);
            if let Some(config) = config {
                cmd.arg("--config").arg(config);
            }
        }
        Transport::Http(url) => {
            cmd.args(["--http", url]);
        }
    }
    cmd.arg("--").arg(plan.to_string());
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    (cmd, audit_dir)
}

/// The session report of a client that ended with `out`.
pub fn finish_client(out: Output, audit_dir: Option<PathBuf>) -> Session {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad client report ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Session {
        report,
        stderr,
        audit_dir,
    }
}

/// The named outcome of a failed call (`_meta["airlock/outcome"]`).
pub fn outcome(call: &Value) -> &str {
    call["meta"]["airlock/outcome"]
        .as_str()
        .unwrap_or("completed")
}

/// `airlock serve --http 127.0.0.1:0`, killed on drop.
pub struct HttpServer {
    child: Child,
    pub url: String,
    pub addr: String,
    pub audit_dir: PathBuf,
    pub state_dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl HttpServer {
    pub fn start(config: &Path) -> HttpServer {
        HttpServer::start_with_env(config, &[])
    }

    /// The same, with `env` added to airlock's environment.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> HttpServer {
        HttpServer::start_in(config, env, &fresh_audit_dir())
    }

    /// The same, with the audit log in `audit_dir` (to restart a server on its log).
    pub fn start_in(config: &Path, env: &[(&str, &str)], audit_dir: &Path) -> HttpServer {
        HttpServer::start_with_args(config, env, audit_dir, &[])
    }

    /// The same, with extra `serve` arguments.
    pub fn start_with_args(
        config: &Path,
        env: &[(&str, &str)],
        audit_dir: &Path,
        args: &[&str],
    ) -> HttpServer {
        HttpServer::spawn(config, env, audit_dir, args, Duration::from_secs(120))
    }

    /// A server whose components take long to compile (Python and JavaScript components
    /// carry their interpreters; the compile cache makes later starts quick).
    pub fn start_compiling(config: &Path) -> HttpServer {
        HttpServer::spawn(
            config,
            &[],
            &fresh_audit_dir(),
            &[],
            Duration::from_secs(900),
        )
    }

    fn spawn(
        config: &Path,
        env: &[(&str, &str)],
        audit_dir: &Path,
        args: &[&str],
        start_within: Duration,
    ) -> HttpServer {
        let state_dir = state_dir_for(audit_dir);
        let mut child = Command::new(airlock())
            .args(["serve", "--http", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(args)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--cache-dir")
            .arg(shared_cache_dir())
            .arg("--audit-dir")
            .arg(audit_dir)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("airlock starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("airlock: serving MCP on ") {
                    let _ = tx.send(url.to_owned());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let url = rx.recv_timeout(start_within).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "airlock did not start serving HTTP:\n{}",
                log.lock().unwrap()
            )
        });
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches("/mcp")
            .to_owned();
        HttpServer {
            child,
            url,
            addr,
            audit_dir: audit_dir.to_path_buf(),
            state_dir,
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for the server to exit by itself; its status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kill the server with SIGKILL (no shutdown of any kind) and wait for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until the server log contains `needle` at least `n` times.
    pub fn wait_for_log_count(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared in the server log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one raw HTTP request and return the status code.
pub fn raw_post(addr: &str, host: &str, origin: Option<&str>, body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// An HTTP response read whole.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Send one raw HTTP/1.1 request (`Connection: close`) and read the whole response.
pub fn raw_http(addr: &str, request_head: &str, body: &str) -> Option<RawResponse> {
    raw_send(addr, &close_request(request_head, addr, body))
}

/// `request_head` (request line and headers) completed with `Host`, `Content-Length`,
/// `Connection: close` and `body`.
pub fn close_request(request_head: &str, host: &str, body: &str) -> String {
    format!(
        "{request_head}Host: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Send a whole raw request to `addr` and read the whole response.
pub fn raw_send(addr: &str, request: &str) -> Option<RawResponse> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    parse_response(&response)
}

/// A raw HTTP/1.1 response, split.
pub fn parse_response(response: &str) -> Option<RawResponse> {
    let status = response.get(9..12)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some(RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// One MCP 2026-07-28 request (`method` with `params`, to which the protocol `_meta` is added)
/// over a raw HTTP connection, with extra `headers`.
pub fn raw_mcp(
    addr: &str,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
) -> Option<RawResponse> {
    raw_send(addr, &mcp_request(addr, method, params, headers))
}

/// The raw HTTP/1.1 text of [`raw_mcp`]'s request, naming `host` in its `Host` header.
pub fn mcp_request(
    host: &str,
    method: &str,
    mut params: Value,
    headers: &[(&str, &str)],
) -> String {
    // `_meta` keys the caller set (capabilities, a progress token) are kept.
    let mut meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    if let Some(given) = params.get("_meta").and_then(|m| m.as_object()) {
        for (k, v) in given {
            meta[k] = v.clone();
        }
    }
    params["_meta"] = meta;
    let name = params["name"]
        .as_str()
        .map(|n| format!("Mcp-Name: {n}\r\n"))
        .unwrap_or_default();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    close_request(
        &format!(
            "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: {method}\r\n{name}{extra}"
        ),
        host,
        &body,
    )
}

/// One MCP 2026-07-28 `tools/call` over a raw HTTP connection (no client library). Returns the
/// HTTP status and the response body, or `None` when the server could not be reached or did
/// not answer completely.
pub fn raw_call(
    addr: &str,
    tool: &str,
    arguments: &Value,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    raw_mcp(
        addr,
        "tools/call",
        serde_json::json!({"name": tool, "arguments": arguments}),
        headers,
    )
    .map(|r| (r.status, r.body))
}

/// The JSON-RPC message in a (possibly chunked) SSE response body.
pub fn sse_json(body: &str) -> Value {
    let line = body
        .lines()
        .find_map(|l| l.strip_prefix("data: {").map(|rest| format!("{{{rest}")))
        .unwrap_or_else(|| panic!("no JSON event in {body}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The audit records in `dir` (all files, oldest first), parsed.
pub fn audit_records(dir: &Path) -> Vec<Value> {
    audit_files(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// One request the test HTTP server received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The request's body (as long as its Content-Length says).
    pub body: String,
}

/// A small HTTP/1.1 server on 127.0.0.1 for egress tests. Routes:
/// `/hello` (200, text), `/hook` (200, for webhooks; the body is kept), `/headers` (200, the
/// request's headers, one per line),
/// `/big` (200, 4096 bytes), `/redirect?to=URL` (302 to URL), `/reflect` (200, every request
/// header value as is and encoded, in the body and an `X-Reflect` header), `/encoded` (the
/// headers, labelled `Content-Encoding: gzip`), anything else 404.
pub struct TestHttpServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl TestHttpServer {
    pub fn start() -> TestHttpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                std::thread::spawn(move || serve_one(stream, &log));
            }
        });
        TestHttpServer { port, seen }
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(stream: std::net::TcpStream, log: &Mutex<Vec<SeenRequest>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut request_body = vec![0u8; length.min(1 << 20)];
    let _ = std::io::Read::read_exact(&mut reader, &mut request_body);
    let request_body = String::from_utf8_lossy(&request_body).into_owned();
    let (status, extra, body) = if path == "/hello" {
        (
            "200 OK",
            String::new(),
            "hello from the test server".to_owned(),
        )
    } else if path == "/headers" {
        let body: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        ("200 OK", String::new(), body.join("\n"))
    } else if path == "/encoded" {
        // A server that compresses whatever the client asked for (the body is the request's
        // headers, labelled gzip): the guest would decode what the host cannot scrub.
        let body: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        (
            "200 OK",
            "Content-Encoding: gzip\r\n".to_owned(),
            body.join("\n"),
        )
    } else if path == "/reflect" {
        // Every request header value echoed back as is and in the encodings a server might use,
        // in the body and in a response header.
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let mut lines = Vec::new();
        for (k, v) in &headers {
            lines.push(format!("{k} plain: {v}"));
            lines.push(format!("{k} base64: {}", STANDARD.encode(v)));
            lines.push(format!(
                "{k} base64url: {}",
                URL_SAFE.encode(format!("x{v}"))
            ));
            lines.push(format!("{k} hex: {}", hex::encode(v)));
            let pct: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            lines.push(format!("{k} percent: {pct}"));
        }
        let all: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
        (
            "200 OK",
            format!("X-Reflect: {}\r\n", all.join(" | ")),
            lines.join("\n"),
        )
    } else if path == "/hook" {
        ("200 OK", String::new(), "ok".to_owned())
    } else if path == "/big" {
        ("200 OK", String::new(), "y".repeat(4096))
    } else if let Some(n) = path.strip_prefix("/bytes?n=") {
        let n: usize = n.parse().unwrap_or(0).min(64 << 20);
        ("200 OK", String::new(), "y".repeat(n))
    } else if let Some(to) = path.strip_prefix("/redirect?to=") {
        ("302 Found", format!("Location: {to}\r\n"), String::new())
    } else {
        ("404 Not Found", String::new(), "no such route".to_owned())
    };
    log.lock().unwrap().push(SeenRequest {
        method: method.clone(),
        path,
        headers,
        body: request_body,
    });
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let mut w = stream;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        if method == "HEAD" { 26 } else { body.len() }
    );
}

/// `airlock ctl --state-dir STATE ARGS…` against `server`: success, and stdout + stderr.
pub fn ctl(server: &HttpServer, args: &[&str]) -> (bool, String) {
    let mut all = vec!["ctl", "--state-dir", server.state_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run_airlock_text(&all)
}

/// The named outcome of a tool result as sent on the wire (`_meta["airlock/outcome"]`).
pub fn result_outcome(result: &Value) -> &str {
    result["_meta"]["airlock/outcome"]
        .as_str()
        .unwrap_or("completed")
}

/// The first text item of a tool result as sent on the wire.
pub fn result_text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}

/// One unauthenticated `tools/call` over HTTP: the JSON-RPC message.
pub fn tool_call(server: &HttpServer, tool: &str, args: Value) -> Value {
    let r = raw_mcp(
        &server.addr,
        "tools/call",
        serde_json::json!({"name": tool, "arguments": args}),
        &[],
    )
    .expect("the server answers");
    assert_eq!(r.status, 200, "{r:?}");
    sse_json(&r.body)
}

/// The same, for a call that gets a result (not a JSON-RPC error): the result.
pub fn tool_result(server: &HttpServer, tool: &str, args: Value) -> Value {
    let m = tool_call(server, tool, args);
    assert!(m["error"].is_null(), "{tool}: {m}");
    m["result"].clone()
}

/// One unauthenticated `tools/list` over HTTP: the tools.
pub fn tools_listed(server: &HttpServer) -> Vec<Value> {
    let r = raw_mcp(&server.addr, "tools/list", serde_json::json!({}), &[]).unwrap();
    sse_json(&r.body)["result"]["tools"]
        .as_array()
        .unwrap()
        .clone()
}

/// A free TCP port on loopback (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// End a helper process the test started.
pub fn stop_child(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A client's DPoP key (ECDSA P-256): its PKCS#8, public JWK and RFC 7638 thumbprint.
pub struct DpopKey {
    pub pkcs8: Vec<u8>,
    pub jwk: Value,
    pub jkt: String,
}

pub fn dpop_key() -> DpopKey {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    use sha2::Digest as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let point = pair.public_key().as_ref();
    let (x, y) = (b64.encode(&point[1..33]), b64.encode(&point[33..65]));
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    DpopKey {
        pkcs8: pkcs8.as_ref().to_vec(),
        jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
        jkt: b64.encode(sha2::Sha256::digest(canonical.as_bytes())),
    }
}

/// A DPoP proof by `key` with these claims.
pub fn proof_with(key: &DpopKey, claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.typ = Some("dpop+jwt".into());
    h.jwk = Some(serde_json::from_value(key.jwk.clone()).unwrap());
    jsonwebtoken::encode(
        &h,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&key.pkcs8),
    )
    .unwrap()
}

/// A token issuer's Ed25519 key (PKCS#8) and its JWK set (kid `k1`), as JSON.
pub fn token_issuer() -> (Vec<u8>, String) {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let signing = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(signing.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&public);
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"}]});
    (signing.as_ref().to_vec(), jwks.to_string())
}

/// A JWT of [`token_issuer`]'s key (issuer `https://idp.test/`) for `aud`, `sub` with role
/// claim `analysts`, and `cnf`.
pub fn bound_token(key: &[u8], aud: &str, sub: &str, cnf: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({
        "iss": "https://idp.test/", "aud": aud, "sub": sub,
        "roles": ["analysts"], "iat": now, "exp": now + 600, "cnf": cnf
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(key),
    )
    .unwrap()
}
