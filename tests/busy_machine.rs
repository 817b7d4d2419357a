//! A busy machine: while other processes keep every CPU busy, a long-running call (one that
//! the host has moved to its low-priority threads) still gets its share of the CPU and ends on
//! its own terms, and a short call beside it is answered. Its own test binary, so the busy
//! processes slow no other test.

mod common;

use common::{HttpServer, TempDir, TestHttpServer, hostile_config, result_outcome, tool_result};
use serde_json::json;
use std::process::{Child, Command};

/// Processes that spin until dropped, one per CPU this test may use. They share the test's
/// session with the server it starts, as the work beside Airlock in one container, one CI job
/// or on a machine without autogroups does: the kernel weighs their threads against Airlock's
/// one by one.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start() -> BusyLoops {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        BusyLoops(
            (0..cpus)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// `fixture_work` computes in rounds of about a millisecond (an epoch tick soon finds the call
// busy, and the host moves it to its low-priority threads), each followed by a wait: every
// round needs the scheduler to run the call again after a wake-up, as a tool working over I/O
// does. Starved, the call runs into its 30 s timeout (as it did on `SCHED_IDLE` threads:
// docs/performance.md).
#[test]
fn long_calls_are_not_starved_by_other_processes() {
    let dir = TempDir::new("busy");
    let web = TestHttpServer::start();
    let config = hostile_config(
        &dir,
        &format!(
            "fuel = 50_000_000_000\ntimeout = \"30s\"\n[tool.grants]\nnet = [\"http://127.0.0.1:{}\"]",
            web.port
        ),
    );
    let server = HttpServer::start(&config);
    let _busy = BusyLoops::start();
    let authority = format!("127.0.0.1:{}", web.port);
    for (args, rounds) in [
        (json!({"rounds": 100, "iterations": 2_000_000}), 100),
        (
            json!({"rounds": 20, "iterations": 2_000_000, "authority": authority}),
            20,
        ),
    ] {
        let r = tool_result(&server, "fixture_work", args);
        assert_eq!(result_outcome(&r), "completed", "{r}");
        assert_eq!(
            r["content"][0]["text"],
            format!("worked {rounds} rounds"),
            "{r}"
        );
    }
    assert_eq!(web.seen().len(), 20);
    let r = tool_result(&server, "fixture_echo", json!({"message": "short"}));
    assert_eq!(r["content"][0]["text"], "short", "{r}");
}
