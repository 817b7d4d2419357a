//! The operator plane through the real binary: `airlock ctl` over the real admin socket against
//! a real server, with calls made by an MCP client over HTTP while the operator acts.

mod common;

use common::{
    HttpServer, TempDir, TestHttpServer, audit_records, ctl, fresh_audit_dir, hostile_wasm,
    raw_mcp, result_outcome as outcome, result_text as text, run_airlock, sse_json,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

fn ctl_ok(server: &HttpServer, args: &[&str]) -> String {
    let (ok, out) = ctl(server, args);
    assert!(ok, "ctl {args:?} failed:\n{out}\n{}", server.log());
    out
}

/// One `tools/call` as `key` (an API key, or none): the result object.
fn call(server: &HttpServer, key: Option<&str>, tool: &str, args: Value) -> Value {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = raw_mcp(
        &server.addr,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        &headers,
    )
    .expect("the server answers");
    assert_eq!(r.status, 200, "{r:?}");
    sse_json(&r.body)["result"].clone()
}

fn listed(server: &HttpServer, key: Option<&str>) -> Vec<String> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = raw_mcp(&server.addr, "tools/list", json!({}), &headers).unwrap();
    sse_json(&r.body)["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until `ctl calls --json` shows a call of `tool`; returns its id.
fn running_call(server: &HttpServer, tool: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl_ok(server, &["--json", "calls"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        if let Some(c) = v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tool"] == tool)
        {
            return c["call_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no running {tool} call: {out}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hostile(dir: &TempDir, extra: &str) -> std::path::PathBuf {
    dir.config(&format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.limits]\ntimeout = \"60s\"\nfuel = 1_000_000_000_000\n{extra}",
        hostile_wasm().display()
    ))
}

#[test]
fn kill_with_interrupt_stops_a_running_call_and_revive_restores_the_tool() {
    let dir = TempDir::new("op-kill");
    let server = HttpServer::start(&hostile(&dir, ""));
    let runner = {
        let addr = server.addr.clone();
        std::thread::spawn(move || {
            let r = raw_mcp(
                &addr,
                "tools/call",
                json!({"name": "hostile_spin", "arguments": {}}),
                &[],
            )
            .unwrap();
            sse_json(&r.body)["result"].clone()
        })
    };
    let id = running_call(&server, "hostile_spin");
    let calls = ctl_ok(&server, &["calls"]);
    // The call's target: its tool, and its arguments as the digest its audit record has.
    let digest = hex::encode(Sha256::digest(b"{}"));
    assert!(
        calls.contains(&id)
            && calls.contains("hostile_spin")
            && calls.contains("anonymous")
            && calls.contains(&digest[..12]),
        "{calls}"
    );
    let running: Value = serde_json::from_str(&ctl_ok(&server, &["--json", "calls"])).unwrap();
    assert_eq!(running["calls"][0]["arguments_sha256"], digest.as_str());

    let out = ctl_ok(&server, &["kill", "--tool", "hostile_spin", "--interrupt"]);
    assert!(out.contains("OK: tool hostile_spin disabled"), "{out}");
    assert!(out.contains(&id), "the interrupted call is named: {out}");
    let stopped = runner.join().unwrap();
    assert_eq!(outcome(&stopped), "stopped_by_operator", "{stopped}");
    assert_eq!(text(&stopped), "stopped by operator");
    // The log says it in one readable line.
    assert!(
        server
            .log()
            .contains(": kill tool hostile_spin, interrupting, 1 running calls interrupted"),
        "{}",
        server.log()
    );

    // The next call is refused before it runs, and the tool is no longer listed.
    let refused = call(&server, None, "hostile_spin", json!({}));
    assert_eq!(outcome(&refused), "disabled_by_operator", "{refused}");
    assert_eq!(
        text(&refused),
        "disabled by operator: tool hostile_spin is disabled"
    );
    let tools = listed(&server, None);
    assert!(!tools.contains(&"hostile_spin".to_owned()), "{tools:?}");
    assert!(tools.contains(&"fixture_echo".to_owned()), "{tools:?}");
    let echo = call(&server, None, "fixture_echo", json!({"message": "hi"}));
    assert_eq!(outcome(&echo), "completed", "{echo}");

    // A name that is neither a tool nor a [[tool]] entry protects nothing: refused.
    let (ok, out) = ctl(&server, &["kill", "--tool", "hostile_spn"]);
    assert!(
        !ok && out.contains("no tool or [[tool]] entry is named hostile_spn"),
        "{out}"
    );
    // With --json, the refusal is JSON too.
    let out = common::run_airlock(&[
        "ctl",
        "--state-dir",
        server.state_dir.to_str().unwrap(),
        "--json",
        "kill",
        "--tool",
        "hostile_spn",
    ]);
    assert!(!out.status.success());
    let refusal: Value = serde_json::from_slice(&out.stdout).expect("a JSON refusal");
    assert_eq!(refusal["ok"], false);
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("no tool or [[tool]] entry is named hostile_spn"),
        "{refusal}"
    );

    // A revive that another kill still overrides says so.
    ctl_ok(&server, &["kill", "--tool", "hostile"]);
    let out = ctl_ok(&server, &["revive", "--tool", "hostile_spin"]);
    assert!(
        out.contains("but it stays disabled: tool hostile is disabled"),
        "{out}"
    );
    ctl_ok(&server, &["revive", "--tool", "hostile"]);
    assert!(listed(&server, None).contains(&"hostile_spin".to_owned()));

    // Everything is on the record, with who did it.
    let records = audit_records(&server.audit_dir);
    let uid = euid();
    let kill = records
        .iter()
        .find(|r| r["kind"] == "operator" && r["action"] == "kill")
        .expect("the kill is recorded");
    let by = kill["by"].as_str().unwrap();
    assert!(by.starts_with(&format!("uid:{uid} pid:")), "{by}");
    assert_eq!(kill["scope"], json!({"tool": "hostile_spin"}));
    assert_eq!(kill["interrupted"], json!([id]));
    let call_record = records
        .iter()
        .find(|r| r["call_id"] == id.as_str())
        .expect("the stopped call is recorded");
    assert_eq!(call_record["outcome"], "stopped_by_operator");
    assert!(
        records
            .iter()
            .any(|r| r["outcome"] == "disabled_by_operator")
    );
    assert!(records.iter().any(|r| r["action"] == "revive"));
}

/// The effective uid, as the admin socket sees the test.
fn euid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn api_key_config(dir: &TempDir) -> (std::path::PathBuf, String, String) {
    let (alice, bob) = ("alice-key-0123456789abcdef", "bob-key-0123456789abcdef");
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let config = dir.config(&format!(
        "[auth]\nmode = \"api-key\"\n[[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{}\"\nroles = [\"users\"]\n[[auth.api_keys]]\nprincipal = \"bob\"\nsha256 = \"{}\"\nroles = [\"users\"]\n[roles]\nusers = [\"users\"]\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\nroles = [\"users\"]\n",
        hash(alice),
        hash(bob),
        hostile_wasm().display()
    ));
    (config, alice.to_owned(), bob.to_owned())
}

#[test]
fn kills_of_a_principal_and_of_everything_survive_a_restart() {
    let dir = TempDir::new("op-principal");
    let (config, alice, bob) = api_key_config(&dir);
    let audit = fresh_audit_dir();
    let echo = json!({"message": "hi"});
    {
        let server = HttpServer::start_in(&config, &[], &audit);
        ctl_ok(&server, &["kill", "--principal", "alice"]);
        // A name no key, configuration or running call knows would protect nothing (a typo):
        // refused, naming those it knows, unless forced (a token's subject not seen yet).
        let (ok, out) = ctl(&server, &["kill", "--principal", "carol"]);
        assert!(
            !ok && out.contains(
                "no API key, client certificate, local principal or running call is named \
                 carol (known: alice, bob, local); if it is a token's subject, kill it with \
                 --force"
            ),
            "{out}"
        );
        ctl_ok(&server, &["kill", "--principal", "carol", "--force"]);
        ctl_ok(&server, &["revive", "--principal", "carol"]);
        let r = call(&server, Some(&alice), "fixture_echo", echo.clone());
        assert_eq!(
            text(&r),
            "disabled by operator: principal alice is disabled",
            "{r}"
        );
        assert!(listed(&server, Some(&alice)).is_empty());
        assert_eq!(
            outcome(&call(&server, Some(&bob), "fixture_echo", echo.clone())),
            "completed"
        );
        ctl_ok(&server, &["kill", "--all"]);
        let r = call(&server, Some(&bob), "fixture_echo", echo.clone());
        assert_eq!(
            text(&r),
            "disabled by operator: all tools are disabled",
            "{r}"
        );
    }
    // A restart on the same state directory keeps both.
    let server = HttpServer::start_in(&config, &[], &audit);
    let status = ctl_ok(&server, &["status"]);
    assert!(
        status.contains("killed      ALL TOOLS") && status.contains("killed      principal alice"),
        "{status}"
    );
    let r = call(&server, Some(&bob), "fixture_echo", echo.clone());
    assert_eq!(outcome(&r), "disabled_by_operator", "{r}");
    ctl_ok(&server, &["revive", "--all"]);
    assert_eq!(
        outcome(&call(&server, Some(&bob), "fixture_echo", echo.clone())),
        "completed"
    );
    assert_eq!(
        outcome(&call(&server, Some(&alice), "fixture_echo", echo)),
        "disabled_by_operator"
    );
}

#[test]
fn a_revoked_filesystem_grant_ends_calls_as_blocked_by_policy_until_restored() {
    // Before the fix the revoked directory simply vanished from the guest, whose open then
    // failed as "not found": a tool failure that outcome-based monitoring does not see.
    let dir = TempDir::new("op-revoke-fs");
    std::fs::create_dir_all(dir.0.join("reports")).unwrap();
    std::fs::write(dir.0.join("reports/q3.txt"), "revenue 42\n").unwrap();
    let server = HttpServer::start(&dir.config(
        "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\n\
         fs = [{ host = \"reports\", guest = \"/reports\", mode = \"ro\" }]\n",
    ));
    let read = || {
        call(
            &server,
            None,
            "files_read",
            json!({"path": "/reports/q3.txt"}),
        )
    };
    let list = || call(&server, None, "files_list", json!({"path": "/reports"}));
    assert_eq!(text(&read()), "revenue 42\n");

    ctl_ok(&server, &["revoke", "--tool", "files", "--fs", "/reports"]);
    for (r, target) in [(read(), "/reports/q3.txt"), (list(), "/reports")] {
        assert_eq!(outcome(&r), "blocked_by_policy", "{r}");
        assert!(
            text(&r).contains(&format!(
                "access to {target} was granted by fs:/reports, which an operator revoked"
            )),
            "{r}"
        );
    }
    // A path that was never granted is still the tool's own failure.
    let r = call(&server, None, "files_read", json!({"path": "/elsewhere/x"}));
    assert_eq!(outcome(&r), "tool_failed", "{r}");
    assert!(
        server.log().contains("grant_kind=\"fs\""),
        "{}",
        server.log()
    );

    ctl_ok(&server, &["restore", "--tool", "files", "--fs", "/reports"]);
    assert_eq!(text(&read()), "revenue 42\n");
}

#[test]
fn a_kill_is_posted_to_the_notify_webhook_and_a_failed_post_is_logged_without_the_path() {
    let hook = TestHttpServer::start();
    let dir = TempDir::new("op-notify");
    let server = HttpServer::start(&dir.config(&format!(
        "[notify]\nurl = \"http://127.0.0.1:{}/hook\"\ntimeout = \"2s\"\n\
         [[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n",
        hook.port,
        hostile_wasm().display()
    )));
    ctl_ok(&server, &["kill", "--tool", "hostile_spin"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let posted = loop {
        if let Some(r) = hook.seen().into_iter().find(|r| r.path == "/hook") {
            break r;
        }
        assert!(Instant::now() < deadline, "the kill was not notified");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(posted.method, "POST");
    let event: Value = serde_json::from_str(&posted.body).unwrap();
    assert_eq!(event["event"], "kill");
    assert_eq!(event["what"], "kill tool hostile_spin");
    assert_eq!(event["scope"], json!({"tool": "hostile_spin"}));
    assert!(event["by"].as_str().unwrap().starts_with("uid:"), "{event}");

    // A webhook that does not answer: the kill still holds, and the log says so (its path,
    // which may carry a token, is not logged).
    let dead = TempDir::new("op-notify-dead");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = HttpServer::start(&dead.config(&format!(
        "[notify]\nurl = \"http://127.0.0.1:{port}/hook/secret-token\"\n\
         [[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n",
        hostile_wasm().display()
    )));
    ctl_ok(&server, &["kill", "--tool", "hostile_spin"]);
    let log = server.wait_for_log_count(
        &format!("kill notification to http://127.0.0.1:{port} failed"),
        1,
    );
    assert!(!log.contains("secret-token"), "{log}");
    let r = call(&server, None, "hostile_spin", json!({}));
    assert_eq!(outcome(&r), "disabled_by_operator", "{r}");
}

#[test]
fn revoking_a_network_grant_denies_the_next_request_of_a_running_call() {
    let web = TestHttpServer::start();
    let dir = TempDir::new("op-revoke");
    let grant = format!("http://127.0.0.1:{}", web.port);
    let server = HttpServer::start(&hostile(
        &dir,
        &format!("[tool.grants]\nnet = [\"{grant}\"]\n"),
    ));
    let authority = format!("127.0.0.1:{}", web.port);
    let runner = {
        let addr = server.addr.clone();
        let authority = authority.clone();
        std::thread::spawn(move || {
            let r = raw_mcp(
                &addr,
                "tools/call",
                json!({"name": "fixture_poll", "arguments": {"authority": authority, "times": 600, "interval_ms": 50}}),
                &[],
            )
            .unwrap();
            sse_json(&r.body)["result"].clone()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while web.seen().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the tool never reached the server"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = ctl_ok(
        &server,
        &["revoke", "--tool", "fixture_poll", "--net", &grant],
    );
    assert!(
        out.contains(&format!("net:{grant} revoked from fixture_poll")),
        "{out}"
    );
    let at_revoke = web.seen().len();
    let r = runner.join().unwrap();
    assert_eq!(outcome(&r), "blocked_by_policy", "{r}");
    assert!(
        text(&r).contains(&format!(
            "network egress to {authority} was granted by net:{grant}, which an operator revoked"
        )),
        "{r}"
    );
    // At most the request already on its way when the revocation landed got through.
    assert!(
        web.seen().len() <= at_revoke + 1,
        "requests after the revocation"
    );
    assert!(ctl_ok(&server, &["status"]).contains(&format!("revoked     hostile: net:{grant}")));

    // New calls start without the grant; restoring it gives it back.
    let r = call(
        &server,
        None,
        "fixture_poll",
        json!({"authority": authority, "times": 1, "interval_ms": 0}),
    );
    assert_eq!(outcome(&r), "blocked_by_policy", "{r}");
    let (ok, out) = ctl(
        &server,
        &[
            "revoke",
            "--tool",
            "fixture_poll",
            "--net",
            "http://nowhere",
        ],
    );
    assert!(
        !ok && out
            .contains("[[tool]] hostile has no grant net:http://nowhere; its grants are: net:"),
        "{out}"
    );
    ctl_ok(&server, &["restore", "--tool", "hostile", "--net", &grant]);
    let r = call(
        &server,
        None,
        "fixture_poll",
        json!({"authority": authority, "times": 1, "interval_ms": 0}),
    );
    assert_eq!(outcome(&r), "completed", "{r}");
}

#[test]
fn a_corrupt_state_file_stops_the_start_until_reset() {
    let dir = TempDir::new("op-corrupt");
    let config = hostile(&dir, "");
    let audit = fresh_audit_dir();
    let state = common::state_dir_for(&audit);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("overrides.json"),
        b"{\"version\": 1, \"all\": tr",
    )
    .unwrap();
    let out = run_airlock(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--audit-dir",
        audit.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot use the operator state file")
            && stderr.contains("overrides.json: it is not valid")
            && stderr.contains("--reset-state"),
        "{stderr}"
    );
    let server = HttpServer::start_with_args(&config, &[], &audit, &["--reset-state"]);
    assert!(ctl_ok(&server, &["status"]).contains("overrides   none"));
    let r = call(&server, None, "fixture_echo", json!({"message": "hi"}));
    assert_eq!(outcome(&r), "completed");
}

#[test]
fn a_broken_reload_keeps_the_running_policy_and_a_good_one_loses_no_call() {
    let dir = TempDir::new("op-reload");
    let config = hostile(&dir, "");
    let server = HttpServer::start(&config);
    let good = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, format!("{good}\n[tool.limits]\nfuel = \"lots\"\n")).unwrap();
    let (ok, out) = ctl(&server, &["reload"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&config.display().to_string()),
        "the error names the file: {out}"
    );
    let r = call(
        &server,
        None,
        "fixture_echo",
        json!({"message": "still here"}),
    );
    assert_eq!(outcome(&r), "completed", "{r}");

    // A reload that renames the [[tool]] entry would lift a kill of it: refused.
    ctl_ok(&server, &["kill", "--tool", "hostile"]);
    std::fs::write(
        &config,
        good.replace("name = \"hostile\"", "name = \"hostile2\""),
    )
    .unwrap();
    let (ok, out) = ctl(&server, &["reload"]);
    assert!(
        !ok && out.contains(
            "could silently lift the kill of hostile (the new configuration drops that name and adds hostile2)"
        ),
        "{out}"
    );
    ctl_ok(&server, &["revive", "--tool", "hostile"]);
    std::fs::write(&config, &good).unwrap();

    // A good configuration, swapped in while four clients keep calling.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (server.addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = raw_mcp(
                        &addr,
                        "tools/call",
                        json!({"name": "fixture_echo", "arguments": {"message": "x"}}),
                        &[],
                    );
                    results.push(r.map(|r| sse_json(&r.body)["result"].clone()));
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(
        &config,
        format!("{good}\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n"),
    )
    .unwrap();
    let out = ctl_ok(&server, &["reload"]);
    assert!(out.contains("OK: reloaded"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        for r in c.join().unwrap() {
            let r = r.expect("every call is answered");
            assert_eq!(outcome(&r), "completed", "{r}");
            total += 1;
        }
    }
    assert!(total > 4, "calls ran across the reload");
    assert!(listed(&server, None).contains(&"text_stats".to_owned()));
    // The rejected reload and the accepted one are on the record.
    let records = audit_records(&server.audit_dir);
    let reloads: Vec<&Value> = records.iter().filter(|r| r["action"] == "reload").collect();
    assert!(reloads.iter().any(|r| r["ok"] == false), "{reloads:?}");
    assert!(reloads.iter().any(|r| r["ok"] == true), "{reloads:?}");
}

#[test]
fn the_admin_socket_answers_only_its_own_uid() {
    let dir = TempDir::new("op-socket");
    // Under /tmp, so that another uid can reach the socket's directory.
    let audit =
        std::env::temp_dir().join(format!("airlock-op-socket-{}/audit", std::process::id()));
    std::fs::create_dir_all(audit.parent().unwrap()).unwrap();
    let server = HttpServer::start_in(&hostile(&dir, ""), &[], &audit);
    // Each server's own socket: `servers/<id>.sock` in the state directory.
    let servers_dir = server.state_dir.join("servers");
    let sockets: Vec<_> = std::fs::read_dir(&servers_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let socket = sockets[0].clone();
    assert!(socket.to_str().unwrap().ends_with(".sock"), "{socket:?}");
    assert_eq!(
        std::fs::metadata(&servers_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let state = std::fs::metadata(&server.state_dir).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o700);
    if euid() != 0 {
        eprintln!("skipped the other-uid connection: the test cannot switch uid without root");
        return;
    }
    // Open the directory and the socket up (as a careless chmod would) and connect as another
    // uid: the server itself refuses by the peer's credentials.
    std::fs::set_permissions(&server.state_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&servers_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ntry:\n  s.sendall(b'{\"command\":\"status\"}\\n')\n  print(repr(s.recv(4096)))\nexcept (BrokenPipeError, ConnectionResetError):\n  print('closed')",
        )
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(audit.parent().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(stdout.trim(), "b''" | "closed"),
        "another uid got an answer: {stdout}"
    );
    server.wait_for_log_count("connection from another uid refused", 1);
}

/// A kill changes the tool list, and a listening client hears of it: on 2026-07-28 through its
/// `subscriptions/listen` stream, before it as `notifications/tools/list_changed`.
#[test]
fn a_kill_tells_listening_clients_that_the_tool_list_changed() {
    use std::io::BufRead;
    let dir = TempDir::new("op-listen");
    let config = hostile(&dir, "");
    for mode in ["auto", "legacy"] {
        let plan = json!({"list": true, "await_tools_changed": true});
        let (mut cmd, audit) =
            common::client_command(mode, common::Transport::Stdio(Some(&config)), &plan);
        let state = common::state_dir_for(audit.as_ref().unwrap());
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line == "LISTENING" {
                break;
            }
        }
        assert!(
            seen.ends_with("LISTENING\n"),
            "{mode}: the client never listened:\n{seen}"
        );
        let out = run_airlock(&[
            "ctl",
            "--state-dir",
            state.to_str().unwrap(),
            "kill",
            "--tool",
            "fixture_echo",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        let out = child.wait_with_output().unwrap();
        let stderr = rest.join().unwrap().join("\n");
        assert!(out.status.success(), "{mode}: {stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().or(t["name"].as_str()).unwrap().to_owned())
                .collect()
        };
        assert!(
            names(&report["tools"]).contains(&"fixture_echo".to_owned()),
            "{report}"
        );
        assert!(
            !names(&report["tools_after"]).contains(&"fixture_echo".to_owned()),
            "{mode}: {report}"
        );
    }
}

/// The reload triggers besides `ctl reload`: a change of the file's content, and SIGHUP (which
/// reloads even an unchanged file). Each is recorded with what triggered it.
#[test]
fn a_file_change_and_sighup_reload_and_are_recorded_as_such() {
    let dir = TempDir::new("op-triggers");
    let config = hostile(&dir, "");
    let server = HttpServer::start(&config);
    let good = std::fs::read_to_string(&config).unwrap();
    let reloads_by = |by: &str| {
        audit_records(&server.audit_dir)
            .into_iter()
            .filter(|r| r["action"] == "reload" && r["by"] == by && r["ok"] == true)
            .count()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what} never happened:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    std::fs::write(
        &config,
        format!("{good}\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n"),
    )
    .unwrap();
    wait_for("the reload on a file change", &|| {
        listed(&server, None).contains(&"text_stats".to_owned())
    });
    assert_eq!(reloads_by("file-change"), 1);

    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the reload on SIGHUP", &|| reloads_by("sighup") == 1);
    // An unchanged file is not reloaded by the watcher: still one file-change reload.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reloads_by("file-change"), 1);
}
