//! What approvals and nested calls add to a call: the approval check when no approval is needed
//! (no rule, and an argument rule that does not match), alone and inside a whole pipeline call;
//! and a nested `call-tool` (fixture_nest → fixture_echo) against calling fixture_echo directly.
//!
//! Run: `cargo bench -p airlock-benches --bench approval`

use airlock::config::policy::{Dirs, Policy};
use airlock::core::principal::{Access, Principal};
use airlock::gate::audit::AuditLog;
use airlock::pipeline::call::{Airlock, CallContext, Caller};
use airlock::pipeline::operator_state::OperatorState;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

fn load(rt: &tokio::runtime::Runtime, approval: &str) -> Arc<Airlock> {
    let wasm = Path::new(airlock::config::bundled::WASM_DIR).join("hostile.wasm");
    let config = format!(
        "[[tool]]\nname = \"fixture\"\ncomponent = \"{}\"\n{approval}\n",
        wasm.display()
    );
    let state = std::env::temp_dir().join("airlock-bench-state");
    let policy =
        Policy::parse(&config, "bench.toml", Path::new("."), &Dirs::state(&state)).unwrap();
    Arc::new(
        rt.block_on(Airlock::load(
            policy,
            AuditLog::off(),
            OperatorState::in_memory(),
        ))
        .unwrap(),
    )
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain = load(&rt, "");
    let ruled = load(
        &rt,
        "[tool.approval]\nwhen = { tools = [\"fixture_echo\"], arguments = { message = [\"rm *\", \"/etc/*\", \"drop table\"] } }\n",
    );
    let echo = object(json!({"message": "hi"}));

    for (name, airlock) in [("no rule", &plain), ("argument rule, no match", &ruled)] {
        let rule = &airlock
            .catalog()
            .tool("fixture_echo")
            .unwrap()
            .component
            .approval;
        assert!(!rule.needs_approval("fixture_echo", Some(&echo)));
        c.bench_function(&format!("approval_check: {name}"), |b| {
            b.iter(|| {
                black_box(rule.needs_approval(black_box("fixture_echo"), Some(black_box(&echo))))
            })
        });
    }

    let call = |airlock: &Arc<Airlock>, tool: &'static str, args: Map<String, Value>| {
        let airlock = airlock.clone();
        async move {
            let principal = Principal {
                name: Arc::from("bench"),
                access: Access::All,
            };
            let ctx = CallContext::unattended(&principal);
            let caller = Caller::new(principal, None);
            let r = airlock.call(tool, Some(&args), &caller, ctx).await;
            assert!(r.is_ok_and(|r| r.is_error != Some(true)));
        }
    };
    for (name, airlock) in [
        ("pipeline_call: fixture_echo, no rule", &plain),
        (
            "pipeline_call: fixture_echo, argument rule, no match",
            &ruled,
        ),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| call(airlock, "fixture_echo", echo.clone()))
        });
    }
    let nest = object(json!({"tool": "fixture_echo", "arguments": {"message": "hi"}}));
    c.bench_function("nested: fixture_nest → fixture_echo (two calls)", |b| {
        b.to_async(&rt)
            .iter(|| call(&plain, "fixture_nest", nest.clone()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
