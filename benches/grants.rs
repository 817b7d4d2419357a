//! What grants cost per call and per request, beside the call itself:
//! - `egress_check`: the policy check of one outgoing HTTP request (covering grant, secret
//!   header injection, address check of an already-resolved name), excluding DNS;
//! - `wasi_context`: building one call's WASI context with a typical set of grants (two
//!   directory preopens, network, TCP, a secret in the environment).
//!
//! Run: `cargo bench -p airlock-benches --bench grants`

use airlock::config::policy::{Dirs, Policy};
use airlock::gate::audit::AuditLog;
use airlock::pipeline::call::Airlock;
use airlock::pipeline::operator_state::OperatorState;
use airlock::sandbox::capture::{Capture, HostMeter};
use airlock::sandbox::egress::{self, DenialCell};
use airlock::sandbox::live_grants::LiveGrants;
use airlock::sandbox::store;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A scratch directory with a secret file and two directories to grant.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-bench-grants-{}", std::process::id()));
    for d in ["secrets", "reports", "scratch"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("secrets/REPORTS_TOKEN"), "bench-token-0123456789").unwrap();
    dir
}

fn config(dir: &Path) -> String {
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    format!(
        r#"[secrets]
dir = "{dir}/secrets"
files = ["REPORTS_TOKEN"]

[[tool]]
name = "fixture"
component = "{wasm}"
[tool.grants]
fs = [{{ host = "{dir}/reports", guest = "/reports", mode = "ro" }},
      {{ host = "{dir}/scratch", guest = "/scratch", mode = "rw" }}]
net = ["https://status.example.org", "https://*.cdn.example.net",
       {{ url = "https://api.example.com", methods = ["GET", "POST"] }}]
tcp = ["10.0.0.5:5432"]
secrets = [{{ name = "REPORTS_TOKEN", host = "api.example.com", header = "Authorization", format = "Bearer {{}}" }},
           {{ name = "REPORTS_TOKEN", expose = "env" }}]
"#,
        dir = dir.display(),
        wasm = wasm.display()
    )
}

fn bench(c: &mut Criterion) {
    let dir = scratch();
    let state = std::env::temp_dir().join("airlock-bench-state");
    let policy = Policy::parse(
        &config(&dir),
        "bench.toml",
        Path::new("."),
        &Dirs::state(&state),
    )
    .unwrap();
    let grants = policy.components[0].grants.clone();

    let resolved: [SocketAddr; 2] = [
        "93.184.216.34:443".parse().unwrap(),
        "[2606:2800:220:1::1]:443".parse().unwrap(),
    ];
    c.bench_function("egress_check: admit + address check, no DNS", |b| {
        b.iter_batched(
            || {
                http::Request::builder()
                    .method("GET")
                    .uri("https://api.example.com/v1/reports?since=2026-01-01")
                    .header("accept", "application/json")
                    .body(())
                    .unwrap()
            },
            |mut request| {
                let admitted = egress::admit(&grants, &mut request).unwrap();
                let address = egress::pick_address(&grants, &admitted.covering, &resolved).unwrap();
                (request, address)
            },
            BatchSize::SmallInput,
        )
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let airlock = rt
        .block_on(Airlock::load(
            policy,
            AuditLog::off(),
            OperatorState::in_memory(),
        ))
        .unwrap();
    let component = airlock
        .catalog()
        .tool("fixture_echo")
        .unwrap()
        .component
        .clone();
    let prepared = &component.prepared;
    let granted = LiveGrants::fixed(prepared.grants.clone());
    let cap = prepared.limits.capture_bytes.as_usize();
    c.bench_function(
        "wasi_context: build with grants (2 dirs, net, tcp, env secret)",
        |b| {
            b.iter(|| {
                let (stdout, stderr) = (
                    Capture::new(cap, HostMeter::default()),
                    Capture::new(cap, HostMeter::default()),
                );
                let denial = DenialCell::default();
                store::wasi_context(
                    &prepared.name,
                    Some((&granted, &prepared.grants)),
                    false,
                    None,
                    prepared.limits.max_random_bytes.bytes(),
                    &stdout,
                    &stderr,
                    &denial,
                )
                .unwrap()
            })
        },
    );
    c.bench_function("wasi_context: build without grants (baseline)", |b| {
        b.iter(|| {
            let (stdout, stderr) = (
                Capture::new(cap, HostMeter::default()),
                Capture::new(cap, HostMeter::default()),
            );
            let denial = DenialCell::default();
            store::wasi_context(
                &prepared.name,
                None,
                false,
                None,
                prepared.limits.max_random_bytes.bytes(),
                &stdout,
                &stderr,
                &denial,
            )
            .unwrap()
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
