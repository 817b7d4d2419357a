//! Pinned tool metadata (the rug-pull defense): `airlock lock` writes the approved baseline, a
//! component update that redescribes a tool holds that tool (not listed, not called:
//! `held_for_review`) while the others serve, `ctl catalog diff` shows the change and `ctl
//! catalog approve` puts it in the lock and serves it again, recorded. Every call's record
//! names the component's digest.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn names(server: &HttpServer) -> Vec<String> {
    tools_listed(server)
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until `tool` is listed (`true`) or not.
fn until_listed(server: &HttpServer, tool: &str, listed: bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while names(server).iter().any(|n| n == tool) != listed {
        assert!(
            Instant::now() < deadline,
            "{tool} listed: {}, wanted {listed}\n{}",
            !listed,
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_redescribed_tool_is_held_until_an_operator_approves_it() {
    let dir = TempDir::new("catalog");
    let wasm = dir.0.join("tool.wasm");
    std::fs::copy(hostile_wasm(), &wasm).unwrap();
    let entries = "[[tool]]\nname = \"hostile\"\ncomponent = \"tool.wasm\"\n\
                   [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n";
    let config = dir.config(entries);
    let state = dir.0.join("state");
    let lock_file = dir.0.join("airlock.lock");
    let cfg = config.to_str().unwrap();
    let sd = state.to_str().unwrap();

    // The operator writes the baseline.
    let (ok, out) = run_airlock_text(&["lock", cfg, "--state-dir", sd]);
    assert!(ok, "{out}");
    assert!(out.contains("+ fixture_echo: new"), "{out}");
    assert!(out.contains("wrote "), "{out}");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lock_file).unwrap()).unwrap();
    assert_eq!(
        lock["pinned"]["fixture_echo"]["metadata"]["description"],
        "Echoes its message."
    );
    let (ok, out) = run_airlock_text(&["lock", cfg, "--state-dir", sd, "--check"]);
    assert!(ok && out.contains("is up to date"), "{out}");

    let server = HttpServer::start(&config);
    assert!(names(&server).contains(&"fixture_echo".to_owned()));
    let r = tool_result(&server, "fixture_echo", json!({"message": "hi"}));
    assert_eq!(result_outcome(&r), "completed", "{r}");
    // Provenance: the call's record names the component's digest.
    let digest = lock["pinned"]["fixture_echo"]["component_sha256"].clone();
    assert!(audit_records(&server.audit_dir).iter().any(|rec| {
        rec["kind"] == "call" && rec["tool"] == "fixture_echo" && rec["component_sha256"] == digest
    }));

    // The rug pull: an update of the component redescribes the tool (same length, so the
    // component stays valid) and the server reloads it.
    let bytes = std::fs::read(&wasm).unwrap();
    let at = bytes
        .windows(19)
        .position(|w| w == b"Echoes its message.")
        .expect("the fixture's description");
    let mut pulled = bytes.clone();
    pulled[at..at + 19].copy_from_slice(b"Echoes ALL secrets.");
    std::fs::write(&wasm, &pulled).unwrap();
    until_listed(&server, "fixture_echo", false);
    // Held: not listed, refused by name; the component's other tools and the others serve.
    let listed = names(&server);
    assert!(listed.contains(&"fixture_fails".to_owned()), "{listed:?}");
    assert!(listed.contains(&"text_stats".to_owned()), "{listed:?}");
    let held = tool_result(&server, "fixture_echo", json!({"message": "hi"}));
    assert_eq!(result_outcome(&held), "held_for_review", "{held}");
    assert_eq!(
        result_text(&held),
        "held for review: tool fixture_echo changed since airlock.lock approved it (this differs: \
         description); an operator reviews it with `airlock ctl catalog diff` before approving it"
    );
    let ok_call = tool_result(&server, "text_stats", json!({"text": "a b"}));
    assert_eq!(result_outcome(&ok_call), "completed");

    // The operator sees the change, field by field.
    let (ok, diff) = ctl(&server, &["catalog", "diff"]);
    assert!(ok, "{diff}");
    assert!(diff.contains("== tool fixture_echo"), "{diff}");
    assert!(diff.contains("  approved | Echoes its message."), "{diff}");
    assert!(diff.contains("  now      | Echoes ALL secrets."), "{diff}");
    let sha = diff
        .lines()
        .find_map(|l| l.strip_prefix("metadata sha256 "))
        .expect("the diff names the metadata's digest")
        .to_owned();
    let (ok, out) = run_airlock_text(&["lock", cfg, "--state-dir", sd, "--check"]);
    assert!(
        !ok && out.contains("~ fixture_echo: description changed"),
        "{out}"
    );

    // What is approved is what was reviewed: another digest approves nothing.
    let (ok, out) = ctl(
        &server,
        &[
            "catalog",
            "approve",
            "fixture_echo",
            "--sha256",
            "0123456789abcdef",
        ],
    );
    assert!(
        !ok && out.contains("look at `airlock ctl catalog diff` again"),
        "{out}"
    );
    let (ok, out) = run_airlock_text(&["lock", cfg, "--state-dir", sd]);
    assert!(!ok && out.contains("--accept-changes"), "{out}");
    assert!(out.contains("  now      | Echoes ALL secrets."), "{out}");

    // Approved: in the lock, served again, recorded.
    let (ok, out) = ctl(
        &server,
        &["catalog", "approve", "fixture_echo", "--sha256", &sha],
    );
    assert!(ok, "{out}");
    assert!(out.contains("OK: approved fixture_echo"), "{out}");
    until_listed(&server, "fixture_echo", true);
    let r = tool_result(&server, "fixture_echo", json!({"message": "again"}));
    assert_eq!(result_outcome(&r), "completed", "{r}");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lock_file).unwrap()).unwrap();
    assert_eq!(
        lock["pinned"]["fixture_echo"]["metadata"]["description"],
        "Echoes ALL secrets."
    );
    assert!(audit_records(&server.audit_dir).iter().any(|rec| {
        rec["kind"] == "operator"
            && rec["action"] == "catalog_approve"
            && rec["tool"] == "fixture_echo"
    }));
    let (ok, out) = ctl(
        &server,
        &["catalog", "approve", "fixture_echo", "--sha256", &sha],
    );
    assert!(!ok && out.contains("is not held for review"), "{out}");

    // `lock = "required"`: a tool the lock does not name is held too.
    dir.config(&format!(
        "[trust]\nlock = \"required\"\n{entries}[[tool]]\nname = \"json\"\ncomponent = \"bundled:json\"\n"
    ));
    // Unknown until the reload, then held (never listed).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = tool_call(&server, "json_format", json!({"text": "[1]"}));
        if m["error"].is_null() {
            let r = &m["result"];
            assert_eq!(result_outcome(r), "held_for_review", "{r}");
            assert!(result_text(r).contains("is not in airlock.lock"), "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!names(&server).contains(&"json_format".to_owned()));
    assert!(names(&server).contains(&"fixture_echo".to_owned()));
}

#[test]
fn a_lock_that_is_not_one_stops_the_start() {
    let dir = TempDir::new("catalog-bad-lock");
    let config = dir.config("[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n");
    std::fs::write(dir.0.join("airlock.lock"), "{\"version\": 1, \"tools\": 7}").unwrap();
    let state = dir.0.join("state");
    let (ok, out) = run_airlock_text(&[
        "check",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        !ok && out.contains("trust › lock") && out.contains("is not a lock file"),
        "{out}"
    );
}
