//! Soak: hostile floods on every channel a tool or a client controls, beside a benign client,
//! against one real server for about 30 seconds. Every benign call must succeed, and the
//! server's memory and open descriptors must stay under stated bounds the whole time.
//!
//! Floods: big outputs, log and progress messages, error texts, sockets without a grant, disk
//! writes past a quota, open files past the cap, a runaway loop, sessions (initialize after
//! initialize), and half-sent requests that never finish.

mod common;

use common::{HttpServer, TempDir, hostile_config_with_server, raw_call};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SOAK: Duration = Duration::from_secs(30);
/// The server's resident memory may not exceed this at any sample.
const MAX_RSS_BYTES: u64 = 512 << 20;
/// Nor its open descriptors this many.
const MAX_FDS: usize = 400;

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn hostile_floods_beside_benign_load_leave_the_server_bounded_and_benign_calls_served() {
    let dir = TempDir::new("soak");
    std::fs::create_dir_all(dir.0.join("scratch")).unwrap();
    std::fs::write(dir.0.join("scratch/f"), "x").unwrap();
    let config = hostile_config_with_server(
        &dir,
        "max_in_flight = 64\nmax_sessions_per_principal = 16\nmax_connections_per_peer = 256\nhttp_header_timeout = \"1s\"\nhttp_body_timeout = \"2s\"",
        "max_in_flight = 32\nmax_message_volume = \"256KiB\"\nmax_output_bytes = \"1MiB\"\ntimeout = \"3s\"\n\
         [tool.grants]\nfs = [{ host = \"scratch\", guest = \"/scratch\", mode = \"rw\", quota = \"1MiB\" }]",
    );
    let server = Arc::new(HttpServer::start(&config));
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // The hostile calls, each in a loop of its own.
    let floods = [
        ("hostile_big_output", json!({"bytes": 900_000})),
        (
            "hostile_channel_flood",
            json!({"channel": "log", "size": 65536, "count": 1_000_000}),
        ),
        (
            "hostile_channel_flood",
            json!({"channel": "progress", "size": 4096, "count": 1_000_000}),
        ),
        (
            "hostile_channel_flood",
            json!({"channel": "error", "size": 8_000_000, "count": 0}),
        ),
        (
            "hostile_channel_flood",
            json!({"channel": "items", "size": 100_000, "count": 0}),
        ),
        ("fixture_tcp", json!({"address": "127.0.0.1:9"})),
        (
            "hostile_channel_flood",
            json!({"channel": "disk", "path": "/scratch/flood", "size": 65536, "count": 1_000_000}),
        ),
        (
            "hostile_channel_flood",
            json!({"channel": "files", "path": "/scratch/f", "size": 0, "count": 1_000_000}),
        ),
        ("hostile_spin", json!({})),
    ];
    for (tool, args) in floods {
        let (server, stop) = (server.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = raw_call(&server.addr, tool, &args, &[]);
            }
        }));
    }
    // Sessions: initialize after initialize (refused past the cap).
    {
        let (server, stop) = (server.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "soak", "version": "1"}}})
            .to_string();
            while !stop.load(Ordering::Relaxed) {
                let _ = common::raw_http(
                    &server.addr,
                    "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
                    &init,
                );
            }
        }));
    }
    // Half-sent requests: 32 at a time, replaced as the server drops them.
    {
        let (server, stop) = (server.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                open.retain(|s| {
                    let mut b = [0u8; 1];
                    s.set_nonblocking(true).ok();
                    !matches!(std::io::Read::read(&mut &*s, &mut b), Ok(0))
                });
                while open.len() < 32 {
                    match TcpStream::connect(&server.addr) {
                        Ok(mut s) => {
                            let _ = s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n");
                            open.push(s);
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }

    // The benign client, and the samples of the server's resources.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut failures = Vec::new();
    let (mut max_rss, mut max_fds) = (0u64, 0usize);
    let started = Instant::now();
    while started.elapsed() < SOAK {
        let n = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        let message = format!("benign {n}");
        match raw_call(
            &server.addr,
            "fixture_echo",
            &json!({"message": message}),
            &[],
        ) {
            Some((200, body)) if body.contains(&message) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                failed.fetch_add(1, Ordering::Relaxed);
                if failures.len() < 5 {
                    failures.push(format!("{other:?}"));
                }
            }
        }
        max_rss = max_rss.max(rss_bytes(pid));
        max_fds = max_fds.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 50, "only {ok} benign calls in {SOAK:?}");
    assert_eq!(failed, 0, "benign calls failed: {failures:?}");
    assert!(
        max_rss <= MAX_RSS_BYTES,
        "the server reached {} MiB",
        max_rss >> 20
    );
    assert!(max_fds <= MAX_FDS, "the server held {max_fds} descriptors");
    let on_disk: u64 = std::fs::read_dir(dir.0.join("scratch"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= 1 << 20,
        "the quota'd grant holds {on_disk} bytes"
    );
    eprintln!(
        "soak: {ok} benign calls served; server peak RSS {} MiB, peak descriptors {max_fds}",
        max_rss >> 20
    );
}
