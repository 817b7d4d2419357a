//! A fleet on a real `redis-server`: replicas share their overrides through it, a kill given
//! on one holds on all of them when `ctl` returns, and a replica that loses the store fails
//! closed (`fleet_unavailable`, not ready) and resumes on its own when the store is back,
//! with no override lost.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a loopback port, without persistence (a restart loses everything: the
/// replicas must put their state back).
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut got = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"+PONG\r\n"
    }

    fn stop(mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn outcome_of(server: &HttpServer) -> String {
    let r = tool_result(server, "text_stats", json!({"text": "hi"}));
    result_outcome(&r).to_owned()
}

/// Call until `server`'s outcome is `wanted`, at most `within`.
fn until(server: &HttpServer, wanted: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = outcome_of(server);
        if got == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got}, not {wanted}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready(server: &HttpServer) -> u16 {
    raw_http(&server.addr, "GET /readyz HTTP/1.1\r\n", "")
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn replicas_share_kills_through_redis_and_fail_closed_without_it() {
    let redis = Redis::start(free_port());
    let port = redis.port;
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("fleet-{i}")))
        .collect();
    let config = |d: &TempDir| {
        d.config(&format!(
            "[fleet]\nstore = \"redis://127.0.0.1:{port}\"\nmax_staleness = \"500ms\"\n\
             prefix = \"fleet-test-{}\"\n\
             [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            std::process::id()
        ))
    };
    let replicas: Vec<HttpServer> = dirs.iter().map(|d| HttpServer::start(&config(d))).collect();
    for r in &replicas {
        until(r, "completed", Duration::from_secs(10));
    }

    // Each replica is one of its own in the fleet.
    let ids: std::collections::BTreeSet<String> = replicas
        .iter()
        .map(|r| {
            let (ok, out) = ctl(r, &["--json", "status"]);
            assert!(ok, "{out}");
            let status: serde_json::Value = serde_json::from_str(&out).unwrap();
            let fleet = status["fleet"].as_str().unwrap().to_owned();
            assert!(fleet.ends_with(", current"), "{fleet}");
            fleet
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");

    // A kill on one replica: when ctl returns, no replica completes a call of the tool.
    let (ok, out) = ctl(&replicas[0], &["kill", "--tool", "text_stats"]);
    assert!(ok, "{out}");
    assert!(!out.contains("NOT APPLIED"), "{out}");
    for r in &replicas {
        assert_eq!(outcome_of(r), "disabled_by_operator", "{}", r.log());
    }
    // Each other replica recorded the kill it took up.
    for r in &replicas[1..] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records = audit_records(&r.audit_dir);
            if records.iter().any(|rec| {
                rec["kind"] == "operator"
                    && rec["action"] == "adopt"
                    && rec["overrides"]["tools"] == json!(["text_stats"])
            }) {
                break;
            }
            assert!(Instant::now() < deadline, "{records:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The store gone: every replica fails closed within max_staleness, and says it is not
    // ready.
    redis.stop();
    for r in &replicas {
        until(r, "fleet_unavailable", Duration::from_secs(5));
        assert_eq!(ready(r), 503);
    }
    let r = tool_result(&replicas[1], "text_stats", json!({"text": "hi"}));
    assert!(result_text(&r).starts_with("fleet unavailable: "), "{r}");

    // The store back (empty: no persistence): the replicas put their overrides back and
    // resume; the kill was not lost.
    let redis = Redis::start(port);
    for r in &replicas {
        until(r, "disabled_by_operator", Duration::from_secs(10));
        assert_eq!(ready(r), 200);
    }
    let (ok, out) = ctl(&replicas[2], &["revive", "--tool", "text_stats"]);
    assert!(ok, "{out}");
    for r in &replicas {
        assert_eq!(outcome_of(r), "completed", "{}", r.log());
    }
    drop(redis);
}
