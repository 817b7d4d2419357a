//! Components outside the `airlock:tool` world, end to end: a plain Rust component with typed
//! exports and a `wasi:cli` command, served by the real binary over Streamable HTTP. Each
//! exported function is a tool whose schema comes from its WIT types; the pipeline (validation,
//! kill switches, audit, limits) applies as for any tool; `airlock call` runs one call; a
//! rebuilt component is reloaded.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn wasm(name: &str) -> PathBuf {
    Path::new(airlock::config::bundled::WASM_DIR).join(format!("{name}.wasm"))
}

/// The generic fixture as `geo` (described by its WIT, `shapes/area` renamed `area`) and the
/// command fixture as `cmd`, with `extra` lines added to the `geo` entry.
fn config(dir: &TempDir, extra: &str) -> PathBuf {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/generic/wit");
    std::fs::copy(wasm("generic"), dir.0.join("generic.wasm")).unwrap();
    dir.config(&format!(
        "[[tool]]\nname = \"geo\"\ncomponent = \"generic.wasm\"\nwit = \"{}\"\nrename = {{ \"shapes/area\" = \"area\" }}\n{extra}\n\n[[tool]]\nname = \"cmd\"\ncomponent = \"{}\"\n",
        wit.display(),
        wasm("command").display()
    ))
}

#[test]
fn every_exported_function_is_a_tool_with_a_schema_from_its_wit_types() {
    let dir = TempDir::new("generic-tools");
    let server = HttpServer::start(&config(&dir, ""));
    let listed = tools_listed(&server);
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "geo_greet",
            "geo_sum",
            "geo_render",
            "geo_bytes",
            "geo_split",
            "geo_ping",
            "geo_distance",
            "area",
            "cmd"
        ]
    );
    let tool = |n: &str| listed.iter().find(|t| t["name"] == n).unwrap().clone();
    // Doc comments from the WIT are the descriptions.
    assert_eq!(tool("geo_sum")["description"], "Adds up a list of numbers.");
    assert_eq!(
        tool("area")["description"],
        "The area of a shape. A negative size is an error."
    );
    // Types become schemas: integer ranges, records, options left out of `required`,
    // variants, flags, tuples.
    let greet = tool("geo_greet");
    assert_eq!(greet["inputSchema"]["properties"]["times"]["maximum"], 255);
    assert_eq!(greet["inputSchema"]["required"], json!(["name", "times"]));
    let distance = tool("geo_distance");
    assert_eq!(distance["inputSchema"]["required"], json!(["a", "b"]));
    assert_eq!(
        distance["inputSchema"]["properties"]["a"]["required"],
        json!(["x", "y"])
    );
    assert_eq!(
        tool("geo_render")["inputSchema"]["properties"]["style"]["items"]["enum"],
        json!(["bold", "italic", "underline"])
    );
    assert!(tool("geo_sum")["outputSchema"]["properties"]["result"].is_object());
    assert!(tool("geo_ping")["outputSchema"].is_null());

    // Calls: arguments become component values, results structured content and text.
    let r = tool_result(&server, "geo_greet", json!({"name": "ada", "times": 2}));
    assert_eq!(r["structuredContent"]["result"], "hello, ada; hello, ada");
    assert_eq!(result_text(&r), "hello, ada; hello, ada");
    let r = tool_result(&server, "geo_sum", json!({"values": [1, 2, -5]}));
    assert_eq!(r["structuredContent"]["result"], -2);
    let r = tool_result(
        &server,
        "geo_render",
        json!({"style": ["bold"], "tags": [["a", 1], ["b", 2]]}),
    );
    assert_eq!(
        r["structuredContent"]["result"],
        json!(["**a×1**", "**b×2**"])
    );
    let r = tool_result(&server, "geo_split", json!({"pair": "k=v"}));
    assert_eq!(r["structuredContent"]["result"], json!(["k", "v"]));
    let r = tool_result(&server, "geo_split", json!({"pair": "kv"}));
    assert_eq!(r["structuredContent"]["result"], Value::Null);
    let r = tool_result(
        &server,
        "geo_distance",
        json!({"a": {"x": 0, "y": 0}, "b": {"x": 3, "y": 4}}),
    );
    assert_eq!(r["structuredContent"]["result"], 5.0);
    let r = tool_result(&server, "area", json!({"s": {"rect": {"x": 2, "y": 3}}}));
    assert_eq!(r["structuredContent"]["result"], 6.0);
    let r = tool_result(&server, "area", json!({"s": "dot"}));
    assert_eq!(r["structuredContent"]["result"], 0.0);
    // A top-level `result` that is `err` is the tool's reported failure.
    let r = tool_result(&server, "area", json!({"s": {"circle": -1}}));
    assert_eq!(r["isError"], true, "{r}");
    assert_eq!(result_text(&r), "negative radius -1");

    // Arguments that do not fit the types never reach the component.
    for (tool, args, at) in [
        ("geo_greet", json!({"name": "ada", "times": 256}), "/times"),
        ("geo_greet", json!({"name": "ada"}), "times"),
        ("area", json!({"s": {"square": 1}}), "/s"),
        (
            "geo_render",
            json!({"style": ["loud"], "tags": []}),
            "/style/0",
        ),
        ("geo_sum", json!({"values": [1], "extra": 1}), "extra"),
    ] {
        let m = tool_call(&server, tool, args.clone());
        let text = m.to_string();
        assert!(text.contains("invalid_arguments"), "{tool} {args}: {m}");
        assert!(text.contains(at), "{tool} {args}: {m}");
    }

    // A command: args and stdin in; stdout, stderr and exit code out.
    let r = tool_result(&server, "cmd", json!({"args": ["upper"], "stdin": "hello"}));
    assert_eq!(
        r["structuredContent"],
        json!({"stdout": "HELLO", "stderr": "", "exit_code": 0, "truncated": false})
    );
    let r = tool_result(&server, "cmd", json!({"args": ["count", "a", "b", "c"]}));
    assert_eq!(r["structuredContent"]["stdout"], "3\n");
    let r = tool_result(&server, "cmd", json!({"args": ["fail", "3"]}));
    assert_eq!(r["isError"], true);
    assert_ne!(r["structuredContent"]["exit_code"], 0);
    assert_eq!(r["structuredContent"]["stderr"], "failing with 3\n");
    // Nothing ambient: no environment.
    let r = tool_result(&server, "cmd", json!({"args": ["env"]}));
    assert_eq!(r["structuredContent"]["stdout"], "");
}

#[test]
fn a_result_too_large_to_hold_is_stopped_and_others_are_unaffected() {
    let dir = TempDir::new("generic-hostile");
    let server = HttpServer::start(&config(&dir, ""));
    // 40 million bytes are 40 MB in the guest, but over a gigabyte as host values: the call
    // ends while they are copied, before the host holds them.
    let r = tool_result(&server, "geo_bytes", json!({"n": 40_000_000}));
    assert_eq!(result_outcome(&r), "output_too_large", "{r}");
    assert!(
        result_text(&r).contains("more at once than its limits allow"),
        "{r}"
    );
    let r = tool_result(&server, "geo_bytes", json!({"n": 4}));
    assert_eq!(r["structuredContent"]["result"], json!([0, 1, 2, 3]));
    let r = tool_result(&server, "geo_greet", json!({"name": "bo", "times": 1}));
    assert_eq!(r["structuredContent"]["result"], "hello, bo");

    // The output limit holds for generic results as for any.
    drop(server);
    let dir = TempDir::new("generic-output");
    let server = HttpServer::start(&config(&dir, "[tool.limits]\nmax_output_bytes = \"4 KiB\""));
    let r = tool_result(&server, "geo_bytes", json!({"n": 10_000}));
    assert_eq!(result_outcome(&r), "output_too_large", "{r}");

    // So do the kill switch and the audit log.
    let (ok, out) = ctl(&server, &["kill", "--tool", "geo_sum"]);
    assert!(ok, "{out}");
    let r = tool_result(&server, "geo_sum", json!({"values": [1]}));
    assert_eq!(result_outcome(&r), "disabled_by_operator", "{r}");
    let r = tool_result(&server, "geo_greet", json!({"name": "bo", "times": 1}));
    assert_eq!(r["structuredContent"]["result"], "hello, bo");
    let audit_dir = server.audit_dir.clone();
    drop(server);
    let outcomes: Vec<(String, String)> = audit_records(&audit_dir)
        .iter()
        .filter(|r| r["kind"] == "call")
        .map(|r| {
            (
                r["tool"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("geo_bytes".into(), "output_too_large".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("geo_sum".into(), "disabled_by_operator".into())),
        "{outcomes:?}"
    );
}

#[test]
fn naming_mistakes_are_load_errors() {
    let state = TempDir::new("generic-check-state");
    for (extra, expect) in [
        (
            "rename = { \"shapes/volume\" = \"v\" }",
            "rename names \"shapes/volume\", which is not a function the component serves",
        ),
        (
            "rename = { \"sum\" = \"geo_greet\" }",
            "would both be the tool \"geo_greet\"",
        ),
        (
            "rename = { \"sum\" = \"bad name\" }",
            "must be 1 to 64 characters",
        ),
        (
            "tools = [\"geo_nothing\"]",
            "declares no tool \"geo_nothing\"",
        ),
    ] {
        let dir = TempDir::new("generic-check");
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/generic/wit");
        std::fs::copy(wasm("generic"), dir.0.join("generic.wasm")).unwrap();
        let cfg = dir.config(&format!(
            "[[tool]]\nname = \"geo\"\ncomponent = \"generic.wasm\"\nwit = \"{}\"\n{extra}\n",
            wit.display()
        ));
        let (ok, out) = check(&cfg, &state.0);
        assert!(!ok, "{extra}: {out}");
        assert!(out.contains(expect), "{extra}: {out}");
    }
    let dir = TempDir::new("generic-bad-wit");
    std::fs::copy(wasm("generic"), dir.0.join("generic.wasm")).unwrap();
    std::fs::write(
        dir.0.join("bad.wit"),
        "package a:b; world w { export f: func(; }",
    )
    .unwrap();
    let cfg =
        dir.config("[[tool]]\nname = \"geo\"\ncomponent = \"generic.wasm\"\nwit = \"bad.wit\"\n");
    let (ok, out) = check(&cfg, &state.0);
    assert!(!ok && out.contains("cannot parse the WIT"), "{out}");
}

#[test]
fn airlock_call_runs_one_call_through_the_pipeline() {
    let dir = TempDir::new("generic-call");
    let cfg = config(&dir, "");
    let audit = fresh_audit_dir();
    let state = state_dir_for(&audit);
    let args = |tool: &'static str, json: &'static str| {
        vec![
            "call".to_owned(),
            "--config".into(),
            cfg.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--audit-dir".into(),
            audit.display().to_string(),
            tool.into(),
            "--args".into(),
            json.into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run_airlock(&a)
    };
    let out = run(args("geo_sum", r#"{"values": [40, 2]}"#));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("42\n"), "{stdout}");
    assert!(stderr.contains("outcome: completed"), "{stderr}");
    let out = run(args("geo_sum", r#"{"values": "many"}"#));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("outcome: invalid_arguments"), "{stderr}");
    let out = run(args("cmd", r#"{"args": ["upper"], "stdin": "quiet"}"#));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("QUIET"));
    // Each call has its record, as any call through a server.
    let calls: Vec<String> = audit_records(&audit)
        .iter()
        .filter(|r| r["kind"] == "call")
        .map(|r| r["outcome"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(calls, ["completed", "invalid_arguments", "completed"]);
}

#[test]
fn serve_reloads_a_component_whose_file_changed() {
    let dir = TempDir::new("generic-reload");
    let path = dir.0.join("generic.wasm");
    std::fs::copy(wasm("generic"), &path).unwrap();
    let server =
        HttpServer::start(&dir.config("[[tool]]\nname = \"geo\"\ncomponent = \"generic.wasm\"\n"));
    assert!(tools_listed(&server).iter().any(|t| t["name"] == "geo_sum"));
    // The same content again is not a change.
    std::fs::write(&path, std::fs::read(wasm("generic")).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !server.log().contains("component-change"),
        "{}",
        server.log()
    );
    // A rebuilt component (here, another one in its place) is put in force.
    let tmp = dir.0.join("generic.wasm.new");
    std::fs::copy(wasm("command"), &tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names: Vec<String> = tools_listed(&server)
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        if names == ["geo"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload: {names:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.log().contains("component-change"),
        "{}",
        server.log()
    );
    let r = tool_result(&server, "geo", json!({"args": ["count", "x"]}));
    assert_eq!(r["structuredContent"]["stdout"], "1\n");
}
