//! Shared by the end-to-end benches (included with `#[path]`).

#![allow(dead_code)] // each bench uses a part

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release `airlock` binary beside this bench executable.
pub fn binary() -> PathBuf {
    // target/release/deps/<bench>-<hash> -> target/release/airlock
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("airlock");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p airlock` first",
        bin.display()
    );
    bin
}

/// Make the process `command` starts die with this bench, even by a signal that skips its
/// clean-up.
pub fn dies_with_bench(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Start `airlock serve --http 127.0.0.1:0` on `config`; returns it and its `host:port`.
pub fn start_http(config: &Path, state_dir: &Path, audit_dir: &Path) -> (Child, String) {
    let mut server = Command::new(binary());
    dies_with_bench(&mut server);
    let mut child = server
        .args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--audit-dir")
        .arg(audit_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("airlock starts");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let mut said = String::new();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("airlock stopped before printing its address:\n{said}");
        };
        if let Some(url) = line.strip_prefix("airlock: serving MCP on http://") {
            break url.trim_end_matches("/mcp").to_owned();
        }
        said.push_str(&line);
        said.push('\n');
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fixture_echo","arguments":{"message":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// `calls` MCP 2026-07-28 `tools/call`s of `fixture_echo` over `concurrency` keep-alive
/// connections, with `token` as bearer credentials if given; returns (elapsed, sorted
/// latencies).
pub async fn load(
    addr: &str,
    token: Option<&str>,
    calls: usize,
    concurrency: usize,
) -> (Duration, Vec<Duration>) {
    let per = calls / concurrency;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (addr, auth) = (addr.to_owned(), token.map(|t| format!("Bearer {t}")));
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let mut request = http::Request::post("/mcp").header("host", &addr);
                    if let Some(auth) = &auth {
                        request = request.header("authorization", auth);
                    }
                    let request = request
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .header("mcp-protocol-version", "2026-07-28")
                        .header("mcp-method", "tools/call")
                        .header("mcp-name", "fixture_echo")
                        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                        .unwrap();
                    let t = Instant::now();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert!(
                        body.windows(11).any(|w| w == br#""text":"hi""#),
                        "unexpected reply: {}",
                        String::from_utf8_lossy(&body)
                    );
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    (elapsed, all)
}
