//! Configuration errors stop the start with a message naming the file, the key and the problem;
//! good configurations pass `check` and are reported by `tools`.

mod common;

use common::{
    TempDir, fresh_audit_dir, hostile_wasm, run_airlock, shared_cache_dir, shared_state_dir,
    state_dir_for,
};

/// `serve`'s directories for one test process: its own state (admin socket) and audit log
/// (locked while it runs), so that servers of tests running at once do not refuse each other.
fn own_serve_dirs() -> Vec<String> {
    let audit = fresh_audit_dir();
    [
        "--state-dir".to_owned(),
        state_dir_for(&audit).display().to_string(),
        "--cache-dir".to_owned(),
        shared_cache_dir().display().to_string(),
        "--audit-dir".to_owned(),
        audit.display().to_string(),
    ]
    .into()
}
use std::path::Path;

/// Run `airlock check CONFIG` and `airlock serve --stdio --config CONFIG`; both must fail with
/// a message containing every one of `needles`.
fn assert_rejected(config: &Path, needles: &[&str]) {
    let state = shared_state_dir();
    let (config, state) = (config.to_str().unwrap(), state.to_str().unwrap());
    let serve_dirs = own_serve_dirs();
    let mut serve = vec!["serve", "--stdio", "--config", config];
    serve.extend(serve_dirs.iter().map(String::as_str));
    for args in [vec!["check", config, "--state-dir", state], serve] {
        let out = run_airlock(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded on a bad config");
        for n in needles {
            assert!(
                stderr.contains(n),
                "{args:?}: `{n}` missing from:\n{stderr}"
            );
        }
    }
}

#[test]
fn malformed_toml_is_rejected_with_its_line() {
    let d = TempDir::new("cfg");
    let c = d.config("[server]\nmax_in_flight = 4\n[[tool]\nname = \"x\"\n");
    assert_rejected(&c, &[c.to_str().unwrap(), "line 3"]);
}

#[test]
fn unknown_key_is_rejected() {
    let d = TempDir::new("cfg");
    let c = d.config(&format!(
        "[[tool]]\nname = \"h\"\ncomponent = \"{}\"\n[tool.limits]\nmemroy = \"1MiB\"\n",
        hostile_wasm().display()
    ));
    assert_rejected(
        &c,
        &[c.to_str().unwrap(), "unknown field `memroy`", "line 5"],
    );
}

#[test]
fn missing_component_is_rejected() {
    let d = TempDir::new("cfg");
    let c = d.config("[[tool]]\nname = \"gone\"\ncomponent = \"nowhere/gone.wasm\"\n");
    assert_rejected(
        &c,
        &[
            c.to_str().unwrap(),
            "tool \"gone\" (entry 1) › component",
            "cannot read component",
            "nowhere/gone.wasm",
        ],
    );
}

#[test]
fn wrong_sha256_pin_is_rejected() {
    let d = TempDir::new("cfg");
    let c = d.config(&format!(
        "[[tool]]\nname = \"h\"\ncomponent = \"{}\"\nsha256 = \"{}\"\n",
        hostile_wasm().display(),
        "ab".repeat(32)
    ));
    assert_rejected(
        &c,
        &[
            c.to_str().unwrap(),
            "tool \"h\" (entry 1) › sha256",
            &format!("pinned digest {} does not match", "ab".repeat(32)),
        ],
    );
}

#[test]
fn correct_sha256_pin_is_accepted() {
    use sha2::{Digest, Sha256};
    let d = TempDir::new("cfg");
    let pin = hex::encode(Sha256::digest(std::fs::read(hostile_wasm()).unwrap()));
    let c = d.config(&format!(
        "[[tool]]\nname = \"h\"\ncomponent = \"{}\"\nsha256 = \"{pin}\"\n",
        hostile_wasm().display()
    ));
    let out = run_airlock(&[
        "check",
        c.to_str().unwrap(),
        "--state-dir",
        shared_state_dir().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn not_a_component_is_rejected() {
    let d = TempDir::new("cfg");
    std::fs::write(d.0.join("junk.wasm"), b"this is not wasm").unwrap();
    let c = d.config("[[tool]]\nname = \"junk\"\ncomponent = \"junk.wasm\"\n");
    assert_rejected(&c, &["tool \"junk\" › component", "invalid component"]);
}

#[test]
fn duplicate_tool_names_across_components_are_rejected() {
    let d = TempDir::new("cfg");
    let w = hostile_wasm();
    let c = d.config(&format!(
        "[[tool]]\nname = \"first\"\ncomponent = \"{0}\"\n[[tool]]\nname = \"second\"\ncomponent = \"{0}\"\n",
        w.display()
    ));
    assert_rejected(
        &c,
        &[
            "tool name \"hostile_spin\" is declared by both \"first\"",
            "and \"second\"",
            "must be unique",
        ],
    );
}

#[test]
fn out_of_range_limit_is_rejected() {
    let d = TempDir::new("cfg");
    let c = d.config(
        "[limits]\ntimeout = \"2h\"\n[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n",
    );
    assert_rejected(
        &c,
        &["limits › timeout", "7200 s is outside 10 ms..=3600 s"],
    );
}

#[test]
fn audit_durability_keys_are_checked() {
    let d = TempDir::new("cfg");
    let tool = "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n";
    let c = d.config(&format!("[audit]\ndurability = \"disk\"\n{tool}"));
    assert_rejected(&c, &["unknown variant `disk`", "machine", "process"]);
    let c = d.config(&format!(
        "[audit]\ndurability = \"process\"\nflush_interval = \"2s\"\n{tool}"
    ));
    assert_rejected(&c, &["audit › flush_interval", "2 s is outside 1 ms..=1 s"]);
    let c = d.config(&format!("[audit]\nflush_interval = \"5ms\"\n{tool}"));
    assert_rejected(
        &c,
        &[
            "audit › flush_interval",
            "applies only with durability = \"process\"",
        ],
    );
}

#[test]
fn metrics_notify_and_telemetry_keys_are_checked() {
    let d = TempDir::new("cfg");
    let tool = "[[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n";
    let c = d.config(&format!("[metrics]\nlisten = \"localhost\"\n{tool}"));
    assert_rejected(
        &c,
        &[
            "metrics › listen",
            "is not an address and port, such as \"127.0.0.1:9464\"",
        ],
    );
    let c = d.config(&format!("[metrics]\nport = 9464\n{tool}"));
    assert_rejected(&c, &["unknown field `port`"]);
    let c = d.config(&format!(
        "[notify]\nurl = \"http://hooks.example.com/x\"\n{tool}"
    ));
    assert_rejected(
        &c,
        &[
            "notify › url",
            "must be https:// (http:// only to a loopback address)",
        ],
    );
    let c = d.config(&format!(
        "[notify]\nurl = \"https://user:pw@hooks.example.com/x\"\n{tool}"
    ));
    assert_rejected(&c, &["notify › url", "carries user information"]);
    let c = d.config(&format!(
        "[notify]\nurl = \"https://hooks.example.com/x\"\ntimeout = \"5m\"\n{tool}"
    ));
    assert_rejected(&c, &["notify › timeout", "must be between 100ms and 60s"]);
    let c = d.config(&format!("[notify]\ntimeout = \"5s\"\n{tool}"));
    assert_rejected(&c, &["notify › timeout", "set without notify › url"]);
    let c = d.config(&format!(
        "[telemetry]\notlp_endpoint = \"http://otel.example.com:4318\"\n{tool}"
    ));
    assert_rejected(
        &c,
        &[
            "telemetry › otlp_endpoint",
            "must be https:// (http:// only to a loopback address)",
        ],
    );
    let c = d.config(&format!("[telemetry]\nservice_name = \"x\"\n{tool}"));
    assert_rejected(&c, &["telemetry", "without otlp_endpoint"]);
    let c = d.config(&format!(
        "[telemetry]\notlp_endpoint = \"https://otel.example.com\"\nservice_name = \"a\\nb\"\n{tool}"
    ));
    assert_rejected(&c, &["telemetry › service_name", "control character"]);
}

#[test]
fn http_refuses_non_loopback_addresses() {
    let dirs = own_serve_dirs();
    let mut args = vec!["serve", "--http", "0.0.0.0:0"];
    args.extend(dirs.iter().map(String::as_str));
    let out = run_airlock(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
}

#[test]
fn embedded_default_checks_and_lists_the_bundled_tools() {
    let state = shared_state_dir();
    let out = run_airlock(&["check", "--state-dir", state.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "OK: <embedded default> is valid: 3 components, 9 tools, 0 resources, 0 resource templates, 0 prompts"
    );

    let out = run_airlock(&["tools", "--json", "--state-dir", state.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["text", "json", "time"]);
    let text = &v["components"][0];
    assert_eq!(text["component"], "bundled:text");
    assert_eq!(
        text["tools"],
        serde_json::json!(["text_stats", "text_transform", "text_replace"])
    );
    assert_eq!(text["limits"]["memory_bytes"], 64 << 20);
    // Each tool with its description and schemas, as clients see them.
    let stats = &text["tool_specs"][0];
    assert_eq!(stats["name"], "text_stats");
    assert_eq!(
        stats["description"],
        "Count bytes, characters, words and lines of a text."
    );
    assert_eq!(stats["input_schema"]["type"], "object");
    assert!(stats["input_schema"]["properties"]["text"].is_object());
    let out = run_airlock(&["tools", "--state-dir", state.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("    text_stats(text)  Count bytes, characters, words and lines of a text.")
    );
    assert_eq!(text["limits"]["timeout_ms"], 5000);
    assert_eq!(
        text["grants"],
        serde_json::json!({"fs": [], "net": [], "tcp": [], "secrets": []})
    );
    assert_eq!(text["holds_readable_secret"], false);
}

#[test]
fn an_entry_serves_only_the_tools_it_names() {
    let dir = TempDir::new("only-tools");
    let state = dir.0.join("state");
    let wasm = hostile_wasm();
    let config = dir.config(&format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\ntools = [\"fixture_echo\", \"fixture_fails\"]\n",
        wasm.display()
    ));
    let out = run_airlock(&[
        "tools",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["components"][0]["tools"],
        serde_json::json!(["fixture_echo", "fixture_fails"])
    );
    // A name the component does not declare protects nothing: a load error naming it.
    let config = dir.config(&format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\ntools = [\"fixture_echo\", \"no_such_tool\"]\n",
        wasm.display()
    ));
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(
        err.contains("tool \"hostile\" › tools")
            && err.contains("declares no tool \"no_such_tool\""),
        "{err}"
    );
}
