//! Per-call cost inside the host: a fresh instance plus one call of a trivial tool, alone
//! (`sandbox_run`) and through the whole pipeline (`pipeline_call`: admission, argument
//! serialisation, sandbox, output conversion, log event), with the audit log off, with an audit
//! record per call at each durability level (`process`: written; `machine`: on stable
//! storage), and with the intent record a component that can act outside its sandbox adds; and the check of a call's arguments against the tool's input
//! schema alone (`input_validation`); and a call of a generic component (typed exports,
//! arguments and result converted between JSON and component values).
//!
//! Run: `cargo bench -p airlock-benches --bench call`

use airlock::config::audit::Durability;
use airlock::config::policy::{Dirs, Policy};
use airlock::core::principal::{Access, Principal};
use airlock::gate::audit::AuditLog;
use airlock::pipeline::call::{Airlock, CallContext, Caller};
use airlock::pipeline::operator_state::OperatorState;
use airlock::sandbox::live_grants::LiveGrants;
use airlock::sandbox::store::{self, Invocation};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;
use std::sync::Arc;

/// The hostile fixture component as `fixture`; `grants` (TOML lines) added under
/// `[tool.grants]`.
fn load(audit: Option<Durability>, grants: &str) -> (tokio::runtime::Runtime, Arc<Airlock>) {
    load_component("hostile", audit, grants)
}

/// The fixture `wasm` (a file of the build's wasm directory, without `.wasm`) as `fixture`.
fn load_component(
    wasm: &str,
    audit: Option<Durability>,
    grants: &str,
) -> (tokio::runtime::Runtime, Arc<Airlock>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join(format!("{wasm}.wasm"));
    let config = format!(
        "[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\n[tool.grants]\n{grants}\n",
        wasm.display()
    );
    let state = std::env::temp_dir().join("airlock-bench-state");
    let mut policy =
        Policy::parse(&config, "bench.toml", Path::new("."), &Dirs::state(&state)).unwrap();
    let log = if let Some(durability) = audit {
        policy.audit.durability = durability;
        // One log per server (each log has a single writer).
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        policy.audit.dir = std::env::temp_dir().join(format!(
            "airlock-bench-audit-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        AuditLog::open(&policy.audit, &state).unwrap()
    } else {
        AuditLog::off()
    };
    let airlock = rt
        .block_on(Airlock::load(policy, log, OperatorState::in_memory()))
        .unwrap();
    (rt, Arc::new(airlock))
}

fn bench(c: &mut Criterion) {
    let (rt, airlock) = load(None, "");
    let tool = airlock.catalog().tool("fixture_echo").unwrap();
    let component = tool.component.clone();
    let signals = store::RunSignals::default();
    let grants = LiveGrants::fixed(component.prepared.grants.clone());
    let principal = Principal {
        name: "bench".into(),
        access: Access::All,
    };
    c.bench_function("sandbox_run: fresh instance + call (fixture_echo)", |b| {
        b.to_async(&rt).iter(|| async {
            let r = store::run(
                &component.prepared,
                Invocation::Call {
                    work: store::Work::Call {
                        tool: "fixture_echo",
                        arguments: r#"{"message":"hi"}"#,
                    },
                    grants: grants.clone(),
                    services: None,
                    shadow: false,
                    caller: principal.clone(),
                },
                None,
                &signals,
            )
            .await;
            assert!(r.result.is_ok());
        })
    });

    // What the host's check of a call's arguments against the tool's input schema costs (part
    // of every `pipeline_call`): the arguments as the call path has them, cloned into a value
    // and validated by the schema compiled at load.
    let args: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"message":"hi"}"#).unwrap();
    c.bench_function(
        "input_validation: fixture_echo's schema, one call's arguments",
        |b| {
            b.iter(|| {
                let instance = serde_json::Value::Object(args.clone());
                assert!(tool.input.is_valid(std::hint::black_box(&instance)));
            })
        },
    );

    pipeline_call(
        c,
        "pipeline_call: Airlock::call (fixture_echo)",
        &rt,
        &airlock,
    );
    // A generic component (typed exports, no airlock:tool): the arguments converted to
    // component values and the result back to JSON around the same fresh instance.
    let (rt, generic) = load_component("generic", None, "");
    pipeline_call_of(
        c,
        "pipeline_call: Airlock::call, generic component (fixture_greet)",
        &rt,
        &generic,
        "fixture_greet",
        r#"{"name":"hi","times":1}"#,
    );
    // The same with an audit record per call, written (not flushed) before returning.
    let (rt, airlock) = load(Some(Durability::Process), "");
    pipeline_call(
        c,
        "pipeline_call: Airlock::call, audit with durability process (fixture_echo)",
        &rt,
        &airlock,
    );
    // The same with a durable audit record per call (on stable storage before returning).
    let (rt, airlock) = load(Some(Durability::Machine), "");
    pipeline_call(
        c,
        "pipeline_call: Airlock::call, durable audit (fixture_echo)",
        &rt,
        &airlock,
    );
    // A component that can act outside its sandbox (here: a net grant it does not use): a
    // durable intent record before the call, then its record.
    let (rt, airlock) = load(Some(Durability::Machine), "net = [\"http://127.0.0.1:9\"]");
    pipeline_call(
        c,
        "pipeline_call: Airlock::call, durable audit + intent record (fixture_echo, net grant)",
        &rt,
        &airlock,
    );
}

fn pipeline_call(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    airlock: &Arc<Airlock>,
) {
    pipeline_call_of(c, name, rt, airlock, "fixture_echo", r#"{"message":"hi"}"#);
}

fn pipeline_call_of(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    airlock: &Arc<Airlock>,
    tool: &str,
    arguments: &str,
) {
    let args: serde_json::Map<String, serde_json::Value> = serde_json::from_str(arguments).unwrap();
    c.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let principal = Principal {
                name: Arc::from("bench"),
                access: Access::All,
            };
            let ctx = CallContext::unattended(&principal);
            let caller = Caller::new(principal, None);
            let r = airlock.call(tool, Some(&args), &caller, ctx).await;
            assert!(r.is_ok(), "{r:?}");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
