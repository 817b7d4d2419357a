//! The `[metrics]` listener, scraped by a real Prometheus (Debian's package, installed by
//! `scripts/setup`): after calls that complete, run out of fuel, reach a granted host and are
//! refused one, Prometheus's own query API has the series, with their labels.

mod common;

use common::{
    HttpServer, TempDir, TestHttpServer, free_port, hostile_wasm, raw_mcp, sse_json, stop_child,
};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus process, stopped when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Prometheus {
    /// Scrape `target` (host:port) every 500 ms.
    fn start(target: &str) -> Prometheus {
        let binary = which("prometheus").expect(
            "prometheus is not installed: run scripts/setup (it installs Debian's package)",
        );
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: airlock\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The result vector of an instant query (empty while Prometheus is not up yet).
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let Some(r) = common::raw_http(&self.addr, &format!("GET {path} HTTP/1.1\r\n"), "") else {
            return Vec::new();
        };
        let body = if r
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(&r.body)
        } else {
            r.body
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Wait until `promql` has a result for which `good` holds; that result.
    fn wait_for(&self, promql: &str, good: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(r) = self.query(promql).into_iter().find(|r| good(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never had {promql}: {:?}",
                self.query(promql)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The value of an instant-query result.
fn value(r: &Value) -> f64 {
    r["value"][1].as_str().unwrap().parse().unwrap()
}

fn call(server: &HttpServer, tool: &str, args: Value) -> Value {
    let r = raw_mcp(
        &server.addr,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        &[],
    )
    .unwrap();
    sse_json(&r.body)["result"].clone()
}

#[test]
fn prometheus_scrapes_calls_steps_egress_audit_and_connections() {
    let upstream = TestHttpServer::start();
    let authority = format!("127.0.0.1:{}", upstream.port);
    let grant = format!("http://{authority}");
    let dir = TempDir::new("metrics");
    let config = dir.config(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[audit]\ndurability = \"process\"\n\
         [[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.limits]\nfuel = 50_000_000\n\
         [tool.grants]\nnet = [\"{grant}\"]\n",
        hostile_wasm().display()
    ));
    let server = HttpServer::start(&config);
    let log = server.log();
    let metrics = log
        .lines()
        .find_map(|l| l.strip_prefix("airlock: serving metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics listener in:\n{log}"))
        .to_owned();

    // Two calls that complete, one that runs out of fuel, one request to the granted host and
    // one to a host that is not granted.
    for _ in 0..2 {
        let r = call(&server, "fixture_echo", json!({"message": "hi"}));
        assert_eq!(common::result_outcome(&r), "completed", "{r}");
    }
    let r = call(&server, "hostile_spin", json!({}));
    assert_eq!(common::result_outcome(&r), "cpu_budget_exhausted", "{r}");
    let r = call(
        &server,
        "fixture_poll",
        json!({"authority": authority, "times": 1, "interval_ms": 0}),
    );
    assert_eq!(common::result_outcome(&r), "completed", "{r}");
    let r = call(
        &server,
        "fixture_poll",
        json!({"authority": "127.0.0.1:9", "times": 1, "interval_ms": 0}),
    );
    assert_eq!(common::result_outcome(&r), "blocked_by_policy", "{r}");

    let prometheus = Prometheus::start(&metrics);
    let up = prometheus.wait_for("up{job=\"airlock\"}", |r| value(r) == 1.0);
    assert_eq!(up["metric"]["instance"], metrics.as_str());

    let completed = prometheus.wait_for("airlock_calls_total", |r| {
        r["metric"]["tool"] == "fixture_echo" && r["metric"]["outcome"] == "completed"
    });
    assert_eq!(value(&completed), 2.0, "{completed}");
    assert_eq!(completed["metric"]["principal_class"], "anonymous");
    assert_eq!(completed["metric"]["request"], "tools/call");
    let spun = prometheus.wait_for("airlock_calls_total", |r| {
        r["metric"]["tool"] == "hostile_spin"
    });
    assert_eq!(spun["metric"]["outcome"], "cpu_budget_exhausted", "{spun}");

    // Every step of the pipeline has its histogram.
    for step in [
        "authorize",
        "validate",
        "admission",
        "sandbox",
        "output",
        "audit",
        "total",
    ] {
        let r = prometheus.wait_for(
            &format!("airlock_call_step_seconds_count{{step=\"{step}\"}}"),
            |r| value(r) >= 4.0,
        );
        assert!(value(&r) <= 5.0, "{step}: {r}");
    }
    let fuel = prometheus.wait_for("airlock_call_fuel_used_count", |r| {
        r["metric"]["tool"] == "hostile_spin"
    });
    assert_eq!(value(&fuel), 1.0);
    prometheus.wait_for("airlock_call_memory_peak_bytes_count", |r| {
        r["metric"]["tool"] == "fixture_echo" && value(r) == 2.0
    });
    prometheus.wait_for("airlock_call_output_bytes_count", |r| {
        r["metric"]["tool"] == "fixture_echo" && value(r) == 2.0
    });

    // Egress by grant and outcome: the granted host answered, the other was refused.
    let reached = prometheus.wait_for("airlock_egress_requests_total", |r| {
        r["metric"]["outcome"] == "completed"
    });
    assert_eq!(reached["metric"]["grant"], format!("net:{grant}"));
    assert_eq!(reached["metric"]["component"], "hostile");
    prometheus.wait_for("airlock_egress_requests_total", |r| {
        r["metric"]["outcome"] == "refused" && r["metric"]["grant"] == "none"
    });

    // The audit log: one record per call at this level, written and flushed.
    let written = prometheus.wait_for("airlock_audit_write_seconds_count", |r| value(r) >= 5.0);
    assert!(value(&written) >= 5.0);
    prometheus.wait_for("airlock_audit_flush_seconds_count", |r| value(r) >= 1.0);
    prometheus.wait_for("airlock_audit_healthy", |r| value(r) == 1.0);
    prometheus.wait_for("airlock_ready", |r| value(r) == 1.0);

    // Connections on each listener (Prometheus's own scrapes are on the metrics one), and the
    // state read at each scrape.
    prometheus.wait_for("airlock_http_connections_total", |r| {
        r["metric"]["listener"] == "mcp" && value(r) >= 5.0
    });
    prometheus.wait_for("airlock_http_connections_total", |r| {
        r["metric"]["listener"] == "metrics" && value(r) >= 1.0
    });
    prometheus.wait_for("airlock_sessions_open", |r| value(r) == 0.0);
    prometheus.wait_for("airlock_calls_in_flight", |r| value(r) == 0.0);
    prometheus.wait_for("airlock_approvals_waiting", |r| value(r) == 0.0);
    let (ok, out) = common::ctl(&server, &["kill", "--tool", "hostile_spin"]);
    assert!(ok, "{out}");
    prometheus.wait_for("airlock_overrides", |r| {
        r["metric"]["kind"] == "killed_tools" && value(r) == 1.0
    });
}
