//! Shared by the end-to-end benches (included with `#[path]`).

#![allow(dead_code)] // each bench uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Start `airlock serve --http 127.0.0.1:0` on `config`; returns it and its `host:port`.
pub fn start_http(config: &Path, state_dir: &Path, audit_dir: &Path) -> (Child, String) {
    let mut child = Command::new(binary())
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
    let addr = loop {
        let line = lines.next().expect("airlock prints its address").unwrap();
        if let Some(url) = line.strip_prefix("airlock: serving MCP on http://") {
            break url.trim_end_matches("/mcp").to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}
