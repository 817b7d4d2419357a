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

/// `haproxy` in front of `backends`, round robin, on a free loopback port; stopped on drop.
struct Haproxy {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Haproxy {
    fn start(backends: &[&str]) -> Haproxy {
        let dir = TempDir::new("fleet-haproxy");
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  server r{i} {a}\n"))
            .collect();
        let config = dir.0.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  \
                 timeout client 60s\n  timeout server 60s\nfrontend mcp\n  bind 127.0.0.1:{port}\n  \
                 default_backend replicas\nbackend replicas\n  balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/setup installs it)");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

/// One `tools/call` to `addr` as `key`, from a client that can elicit: the result (`None`
/// when nothing complete came back).
fn call_at(addr: &str, key: &str, params: serde_json::Value) -> Option<serde_json::Value> {
    let auth = format!("Bearer {key}");
    let mut params = params;
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {}});
    let r = raw_mcp(
        addr,
        "tools/call",
        params,
        &[("Authorization", auth.as_str())],
    )?;
    if r.status != 200 {
        return None;
    }
    let v = sse_json(&r.body);
    Some(v.get("result")?.clone())
}

/// Calls of `tool` made back to back from `threads` clients through `addr` until `stop`:
/// each call's start, and its outcome.
fn load(
    addr: &str,
    tool: &'static str,
    threads: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<(Instant, String)>>> {
    (0..threads)
        .map(|_| {
            let (addr, stop) = (addr.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let arguments = match tool {
                        "text_stats" => json!({"text": "hi"}),
                        _ => json!({}),
                    };
                    let outcome =
                        call_at(&addr, ALICE, json!({"name": tool, "arguments": arguments}))
                            .map_or("no_answer".to_owned(), |r| result_outcome(&r).to_owned());
                    seen.push((started, outcome));
                }
                seen
            })
        })
        .collect()
}

fn joined(handles: Vec<std::thread::JoinHandle<Vec<(Instant, String)>>>) -> Vec<(Instant, String)> {
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn a_fleet_behind_haproxy_holds_kills_tickets_approvals_and_rate_limits_under_load() {
    use sha2::Digest;
    let redis = Redis::start(free_port());
    let port = redis.port;
    let hash = |k: &str| hex::encode(sha2::Sha256::digest(k.as_bytes()));
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("fleet-lb-{i}")))
        .collect();
    let config = |d: &TempDir| {
        d.config(&format!(
            "[fleet]\nstore = \"redis://127.0.0.1:{port}\"\nmax_staleness = \"500ms\"\n\
             prefix = \"fleet-lb-{pid}\"\n\
             [auth]\nmode = \"api-key\"\n\
             [[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{alice}\"\nroles = [\"users\"]\n\
             [[auth.api_keys]]\nprincipal = \"bob\"\nsha256 = \"{bob}\"\nroles = [\"users\"]\n\
             [roles]\nusers = [\"users\"]\n\
             [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"users\"]\n\
             [[tool]]\nname = \"time\"\ncomponent = \"bundled:time\"\nroles = [\"users\"]\n\
             rate_limit = \"60/m\"\n\
             [[tool]]\nname = \"hostile\"\ncomponent = \"{hostile}\"\nroles = [\"users\"]\n\
             [tool.approval]\nwhen = {{ tools = [\"fixture_echo\"] }}\ntimeout = \"30s\"\n\
             [[tool]]\nname = \"json\"\ncomponent = \"bundled:json\"\nroles = [\"users\"]\n\
             [tool.approval]\nwhen = {{ tools = [\"json_format\"] }}\nvia = \"operator\"\n\
             four_eyes = true\ntimeout = \"30s\"\n",
            pid = std::process::id(),
            alice = hash(ALICE),
            bob = hash(BOB),
            hostile = hostile_wasm().display(),
        ))
    };
    let replicas: Vec<HttpServer> = dirs.iter().map(|d| HttpServer::start(&config(d))).collect();
    let lb = Haproxy::start(&replicas.iter().map(|r| r.addr.as_str()).collect::<Vec<_>>());
    let text = |addr: &str| {
        call_at(
            addr,
            ALICE,
            json!({"name": "text_stats", "arguments": {"text": "hi"}}),
        )
        .map_or("no_answer".to_owned(), |r| result_outcome(&r).to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while replicas.iter().any(|r| text(&r.addr) != "completed") {
        assert!(
            Instant::now() < deadline,
            "the replicas did not join the fleet"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // `--fleet` shows every replica, asked on any one.
    let (ok, out) = ctl(&replicas[1], &["--json", "status", "--fleet"]);
    assert!(ok, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["replicas"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["not_answering"], json!([]), "{status}");
    let (ok, out) = ctl(&replicas[2], &["calls", "--fleet"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("== replica ").count(), 3, "{out}");

    // A ticket issued by one replica is redeemed through another, once in the fleet.
    let echo = |message: &str| json!({"name": "fixture_echo", "arguments": {"message": message}});
    let asked = call_at(&replicas[0].addr, ALICE, echo("once")).unwrap();
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    let question = asked["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut retry = echo("once");
    retry["requestState"] = asked["requestState"].clone();
    retry["inputResponses"] =
        json!({question.as_str(): {"action": "accept", "content": {"approve": true}}});
    let first = call_at(&replicas[1].addr, ALICE, retry.clone()).unwrap();
    assert_eq!(result_outcome(&first), "completed", "{first}");
    assert_eq!(result_text(&first), "once");
    let again = call_at(&replicas[2].addr, ALICE, retry.clone()).unwrap();
    assert_eq!(result_outcome(&again), "ticket_refused", "{again}");
    assert_eq!(
        result_text(&again),
        "approval ticket refused: it was already used"
    );

    // A question asked on replica 0 is listed and answered from replica 1's ctl; the
    // four-eyes rule holds there too.
    let waiting_call = {
        let addr = replicas[0].addr.clone();
        std::thread::spawn(move || {
            call_at(
                &addr,
                ALICE,
                json!({"name": "json_format", "arguments": {"text": "[1]", "compact": true}}),
            )
        })
    };
    let pending = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (ok, out) = ctl(&replicas[1], &["--json", "approvals", "list"]);
            assert!(ok, "{out}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if let Some(a) = v["approvals"].as_array().and_then(|a| a.first()) {
                break a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no question reached the fleet's queue"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let id = pending["id"].as_str().unwrap().to_owned();
    assert!(pending["replica"].as_str().is_some(), "{pending}");
    let (ok, out) = ctl(
        &replicas[1],
        &["approvals", "approve", &id, "--as", "alice"],
    );
    assert!(!ok && out.contains("four-eyes rule"), "{out}");
    let (ok, out) = ctl(&replicas[2], &["approvals", "approve", &id, "--as", "bob"]);
    assert!(ok, "{out}");
    let done = waiting_call.join().unwrap().expect("the waiting call ends");
    assert_eq!(result_outcome(&done), "completed", "{done}");
    assert_eq!(result_text(&done), "[1]");
    let (ok, out) = ctl(&replicas[1], &["approvals", "approve", &id, "--as", "bob"]);
    assert!(!ok && out.contains("is waiting"), "{out}");

    // The tool's rate limit (60/m, a burst of 60) is the fleet's: through the balancer, three
    // replicas together admit no more than the bucket, its refill and the leases' slack
    // (3 replicas × (3 − 1) tokens).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let handles = load(&lb.addr, "time_now", 6, &stop);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = joined(handles);
    let elapsed = started.elapsed().as_secs_f64();
    let completed = seen.iter().filter(|(_, o)| o == "completed").count();
    let limited = seen.iter().filter(|(_, o)| o == "rate_limited").count();
    let most = 60.0 + elapsed * 1.0 + 6.0;
    assert!(
        (completed as f64) <= most && completed >= 50 && limited > 0,
        "{completed} completed (at most {most}), {limited} rate limited in {elapsed:.1} s"
    );

    // Under steady load through the balancer, a kill given on one replica: once ctl returns,
    // no call of the tool that starts completes, on any replica.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles = load(&lb.addr, "text_stats", 6, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = ctl(&replicas[2], &["kill", "--tool", "text_stats"]);
    let returned = Instant::now();
    assert!(ok && !out.contains("NOT APPLIED"), "{out}");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = joined(handles);
    let before = seen
        .iter()
        .filter(|(t, o)| *t < returned && o == "completed")
        .count();
    let after: Vec<&String> = seen
        .iter()
        .filter(|(t, _)| *t >= returned)
        .map(|(_, o)| o)
        .collect();
    assert!(before > 0, "no load before the kill");
    assert!(!after.is_empty(), "no load after the kill");
    assert!(
        after.iter().all(|o| *o == "disabled_by_operator"),
        "after the kill returned: {after:?}"
    );

    // Every record names its replica; the replicas' logs verify and merge into one stream.
    for r in &replicas {
        let records = audit_records(&r.audit_dir);
        assert!(!records.is_empty());
        let names: std::collections::BTreeSet<&str> = records
            .iter()
            .map(|rec| rec["replica"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(!names.contains(""), "a record without its replica");
    }
    let dirs_args: Vec<&str> = replicas
        .iter()
        .map(|r| r.audit_dir.to_str().unwrap())
        .collect();
    let mut verify = vec!["audit", "verify"];
    verify.extend(&dirs_args);
    // A directory's own signer.pub proves nothing: each replica's key is given.
    let (ok, out) = run_airlock_text(&verify);
    assert!(!ok && out.contains("--key"), "{out}");
    let keys: Vec<String> = replicas
        .iter()
        .map(|r| {
            let (ok, out) =
                run_airlock_text(&["audit", "key", "--state-dir", r.state_dir.to_str().unwrap()]);
            assert!(ok, "{out}");
            out.trim().to_owned()
        })
        .collect();
    let mut pinned = vec!["audit", "verify"];
    for k in &keys {
        pinned.extend(["--key", k.as_str()]);
    }
    pinned.extend(&dirs_args);
    let (ok, out) = run_airlock_text(&pinned);
    assert!(ok, "{out}");
    assert_eq!(out.matches("OK: ").count(), 3, "{out}");
    let mut wrong = vec!["audit", "verify", "--key", keys[0].as_str()];
    wrong.extend(&dirs_args);
    let (ok, out) = run_airlock_text(&wrong);
    assert!(!ok && out.contains("not by any --key given"), "{out}");
    let mut merge = vec!["audit", "merge", "--json"];
    merge.extend(&dirs_args);
    let (ok, out) = run_airlock_text(&merge);
    assert!(ok, "{out}");
    let merged: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let total: usize = replicas
        .iter()
        .map(|r| audit_records(&r.audit_dir).len())
        .sum();
    assert!(merged.len() >= total, "{} merged of {total}", merged.len());
    let times: Vec<&str> = merged.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not ordered by time"
    );
    let replicas_seen: std::collections::BTreeSet<&str> = merged
        .iter()
        .filter_map(|r| r["replica"].as_str())
        .collect();
    assert_eq!(replicas_seen.len(), 3);

    // The store stopped under load: every replica refuses from max_staleness on.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles = load(&lb.addr, "time_now", 4, &stop);
    std::thread::sleep(Duration::from_millis(300));
    redis.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = joined(handles);
    let late: Vec<&String> = seen
        .iter()
        .filter(|(t, _)| *t >= stopped + Duration::from_millis(600))
        .map(|(_, o)| o)
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|o| *o == "fleet_unavailable"),
        "after max_staleness without the store: {late:?}"
    );
    // Back (empty): service resumes and the kill is still there.
    let _redis = Redis::start(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    while replicas
        .iter()
        .any(|r| text(&r.addr) != "disabled_by_operator")
    {
        assert!(
            Instant::now() < deadline,
            "the fleet did not resume with its kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The store lost its record of used tickets with the rest: a ticket issued before is
    // refused, not taken a second time.
    let replayed = call_at(&replicas[0].addr, ALICE, retry).unwrap();
    assert_eq!(result_outcome(&replayed), "ticket_refused", "{replayed}");
}

#[test]
fn on_stale_serve_keeps_serving_under_the_last_overrides_but_not_what_needs_the_store() {
    let redis = Redis::start(free_port());
    let port = redis.port;
    let dir = TempDir::new("fleet-serve");
    let config = dir.config(&format!(
        "[fleet]\nstore = \"redis://127.0.0.1:{port}\"\nmax_staleness = \"500ms\"\n\
         on_stale = \"serve\"\nprefix = \"fleet-serve-{}\"\n\
         [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n\
         [[tool]]\nname = \"time\"\ncomponent = \"bundled:time\"\nrate_limit = \"600/m\"\n",
        std::process::id()
    ));
    let server = HttpServer::start(&config);
    until(&server, "completed", Duration::from_secs(10));
    let (ok, out) = ctl(&server, &["kill", "--tool", "text_transform"]);
    assert!(ok, "{out}");
    redis.stop();
    // Past max_staleness without the store: still serving, under the kill it had.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(outcome_of(&server), "completed", "{}", server.log());
    assert_eq!(ready(&server), 200);
    let killed = tool_result(
        &server,
        "text_transform",
        json!({"text": "a b", "op": "upper"}),
    );
    assert_eq!(result_outcome(&killed), "disabled_by_operator", "{killed}");
    // A shared rate limit needs the store: refused, not served from a local bucket.
    let limited = tool_result(&server, "time_now", json!({}));
    assert_eq!(result_outcome(&limited), "fleet_unavailable", "{limited}");
    // No change can be made while the store is away.
    let (ok, out) = ctl(&server, &["revive", "--tool", "text_transform"]);
    assert!(!ok && out.contains("cannot be reached"), "{out}");
    let _redis = Redis::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = tool_result(&server, "time_now", json!({}));
        if result_outcome(&r) == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One MCP 2026-07-28 `tools/list` to `addr`, naming `host` in its `Host` header, with
/// `headers`: the HTTP status and the response.
fn list_as_host(addr: &str, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = raw_send(addr, &mcp_request(host, "tools/list", json!({}), headers)).unwrap();
    (r.status, format!("{}\r\n\r\n{}", r.head, r.body))
}

#[test]
fn a_dpop_proof_one_replica_accepted_is_refused_by_every_other() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let redis = Redis::start(free_port());
    let (signing, jwks) = token_issuer();
    let dirs: Vec<TempDir> = (0..2)
        .map(|i| TempDir::new(&format!("fleet-dpop-{i}")))
        .collect();
    let replicas: Vec<HttpServer> = dirs
        .iter()
        .map(|d| {
            std::fs::write(d.0.join("jwks.json"), &jwks).unwrap();
            HttpServer::start(&d.config(&format!(
                "[fleet]\nstore = \"redis://127.0.0.1:{}\"\nprefix = \"fleet-dpop-{}\"\n\
                 [auth]\nmode = \"jwt\"\nresource = \"https://mcp.test/mcp\"\n\
                 issuer = \"https://idp.test/\"\njwks_file = \"jwks.json\"\n\
                 [roles]\nreaders = [\"analysts\"]\n\
                 [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n",
                redis.port,
                std::process::id()
            )))
        })
        .collect();
    let key = dpop_key();
    let token = bound_token(
        &signing,
        "https://mcp.test/mcp",
        "alice",
        serde_json::json!({"jkt": key.jkt}),
    );
    // Both replicas behind one name (as behind a load balancer): the proof names it.
    let host = replicas[0].addr.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let proof = |jti: &str| {
        proof_with(
            &key,
            &serde_json::json!({"jti": jti, "htm": "POST", "htu": format!("http://{host}/mcp"),
                "iat": now, "ath": b64.encode(sha2::Sha256::digest(token.as_bytes()))}),
        )
    };
    let authorization = format!("DPoP {token}");
    let once = proof("fleet-1");
    let headers = [
        ("Authorization", authorization.as_str()),
        ("DPoP", once.as_str()),
    ];
    let (status, answer) = list_as_host(&replicas[0].addr, &host, &headers);
    assert_eq!(status, 200, "{answer}");
    // The same proof at the other replica: refused, though that replica never saw it.
    let (status, answer) = list_as_host(&replicas[1].addr, &host, &headers);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("error=\"invalid_dpop_proof\"")
            && answer.contains("the proof was used before (jti)"),
        "{answer}"
    );
    // A fresh proof works at either.
    let fresh = proof("fleet-2");
    let (status, answer) = list_as_host(
        &replicas[1].addr,
        &host,
        &[("Authorization", &authorization), ("DPoP", &fresh)],
    );
    assert_eq!(status, 200, "{answer}");
    // Without the store, a proof cannot be recorded, so none is accepted (fail closed).
    redis.stop();
    let (status, answer) = list_as_host(
        &replicas[1].addr,
        &host,
        &[
            ("Authorization", &authorization),
            ("DPoP", &proof("fleet-3")),
        ],
    );
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.contains("the fleet store cannot be reached"),
        "{answer}"
    );
}
