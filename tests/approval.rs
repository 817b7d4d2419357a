//! Human approval, risk tiers and nested calls through the real binary: the Python MCP client
//! answering elicitation in both protocol eras, raw 2026-07-28 requests for the tickets, and
//! `airlock ctl approvals` for the operator queue.

mod common;

use common::{
    HttpServer, TempDir, TestHttpServer, Transport, audit_records, client, ctl, hostile_wasm,
    outcome, raw_mcp, result_outcome, result_text, sse_json,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

fn hostile_with(dir: &TempDir, tool_lines: &str) -> PathBuf {
    dir.config(&format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n{tool_lines}\n",
        hostile_wasm().display()
    ))
}

/// API keys for alice and bob (role `users`), then `rest`.
fn with_api_keys(dir: &TempDir, rest: &str) -> PathBuf {
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    dir.config(&format!(
        "[auth]\nmode = \"api-key\"\n[[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{}\"\nroles = [\"users\"]\n[[auth.api_keys]]\nprincipal = \"bob\"\nsha256 = \"{}\"\nroles = [\"users\", \"admins\"]\n[roles]\nusers = [\"users\"]\nadmins = [\"admins\"]\n{rest}\n",
        hash(ALICE),
        hash(BOB),
    ))
}

fn hostile_entry(tool_lines: &str) -> String {
    format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\nroles = [\"users\"]\n{tool_lines}\n",
        hostile_wasm().display()
    )
}

/// One raw 2026-07-28 `tools/call` as `key`, from a client that can elicit: the result.
fn call_as(server: &HttpServer, key: &str, params: Value) -> Value {
    let auth = format!("Bearer {key}");
    let mut params = params;
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"elicitation": {}});
    let r = raw_mcp(
        &server.addr,
        "tools/call",
        params,
        &[("Authorization", auth.as_str())],
    )
    .expect("the server answers");
    assert_eq!(r.status, 200, "{r:?}");
    let v = sse_json(&r.body);
    assert!(v.get("result").is_some(), "{v}");
    v["result"].clone()
}

/// The response in an SSE body that may carry notifications before it.
fn final_result(body: &str) -> Value {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or_else(|| panic!("no response in {body}"))["result"]
        .clone()
}

/// The id of the one approval waiting (polls `ctl approvals list --json`).
fn waiting_approval(server: &HttpServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = ctl(server, &["approvals", "list", "--json"]);
        assert!(ok, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        if let Some(a) = v["approvals"].as_array().and_then(|a| a.first()) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "nothing waited for approval");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn approval_events(dir: &std::path::Path) -> Vec<Value> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r["kind"] == "approval")
        .collect()
}

#[test]
fn client_approval_in_both_eras() {
    let dir = TempDir::new("approval-client");
    let config = hostile_with(
        &dir,
        "[tool.approval]\nwhen = { tools = [\"fixture_echo\"] }\ntimeout = \"2s\"\n",
    );
    let echo = |id: &str| json!({"id": id, "tool": "fixture_echo", "args": {"message": "hi"}});
    for mode in ["legacy", "auto"] {
        let s = client(
            mode,
            Transport::Stdio(Some(&config)),
            json!({
                "calls": [echo("yes")],
                "then": [echo("no"), echo("dismissed"), echo("unticked"), echo("late"),
                         {"id": "free", "tool": "fixture_fails", "args": {}}],
                "elicit": [
                    {"action": "accept", "content": {"approve": true}},
                    {"action": "decline"},
                    {"action": "cancel"},
                    {"action": "accept", "content": {"approve": false}},
                    {"action": "accept", "content": {"approve": true}, "delay_ms": 3000},
                ],
            }),
        );
        let expected_protocol = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(s.report["protocol"], expected_protocol, "{}", s.report);
        assert_eq!(s.call("yes")["text"], "hi", "{mode}: {}", s.report);
        assert_eq!(outcome(s.call("no")), "approval_denied", "{mode}");
        assert!(
            s.call("no")["text"]
                .as_str()
                .unwrap()
                .starts_with("approval denied by client user of local"),
            "{}",
            s.call("no")
        );
        assert_eq!(outcome(s.call("dismissed")), "approval_cancelled", "{mode}");
        assert_eq!(outcome(s.call("unticked")), "approval_denied", "{mode}");
        // Too late: inline, the wait ends at the timeout; in rounds, the ticket has expired
        // by the time the answer comes back.
        let late = s.call("late");
        if mode == "legacy" {
            assert_eq!(outcome(late), "approval_timed_out", "{late}");
        } else {
            assert_eq!(outcome(late), "ticket_refused", "{late}");
            assert!(late["text"].as_str().unwrap().contains("expired"), "{late}");
        }
        // A tool the rule does not name is not asked about.
        assert_eq!(outcome(s.call("free")), "tool_failed");
        let asked = s.report["elicitations"].as_array().unwrap();
        assert_eq!(asked.len(), 5, "{}", s.report);
        assert!(
            asked[0].as_str().unwrap().contains(
                "Allow local to run the tool \"fixture_echo\" with arguments {\"message\":\"hi\"}"
            ),
            "{asked:?}"
        );
        let events: Vec<String> = approval_events(s.audit_dir.as_ref().unwrap())
            .iter()
            .map(|r| r["event"].as_str().unwrap().to_owned())
            .collect();
        if mode == "legacy" {
            assert_eq!(
                events,
                [
                    "requested",
                    "granted",
                    "requested",
                    "denied",
                    "requested",
                    "cancelled",
                    "requested",
                    "denied",
                    "requested",
                    "timed_out"
                ],
                "{mode}"
            );
        } else {
            // Rounds: asked, then the retry carries the answer in its ticket.
            assert_eq!(
                events.iter().filter(|e| *e == "requested").count(),
                5,
                "{events:?}"
            );
        }
        let granted = audit_records(s.audit_dir.as_ref().unwrap())
            .into_iter()
            .find(|r| {
                r["kind"] == "call" && r["outcome"] == "completed" && r["tool"] == "fixture_echo"
            })
            .expect("the approved call's record");
        assert_eq!(granted["approved_by"], "client user of local", "{granted}");
    }
}

#[test]
fn a_client_that_cannot_elicit_is_told_so_unless_the_operator_answers() {
    let dir = TempDir::new("approval-unable");
    let config = hostile_with(&dir, "[tool.approval]\nwhen = \"always\"\n");
    for mode in ["legacy", "auto"] {
        let s = client(
            mode,
            Transport::Stdio(Some(&config)),
            json!({"calls": [{"id": "a", "tool": "fixture_echo", "args": {"message": "hi"}}]}),
        );
        let a = s.call("a");
        assert_eq!(outcome(a), "approval_unavailable", "{a}");
        assert_eq!(
            a["text"],
            "approval required for tool fixture_echo; this client cannot ask its user"
        );
    }
}

#[test]
fn confirm_and_elicit_from_inside_a_tool_in_both_eras() {
    let dir = TempDir::new("approval-confirm");
    let config = hostile_with(
        &dir,
        "[tool.approval]\ntimeout = \"30s\"\nwhen = \"never\"\n",
    );
    for mode in ["legacy", "auto"] {
        let s = client(
            mode,
            Transport::Stdio(Some(&config)),
            json!({
                "calls": [{"id": "yes", "tool": "fixture_confirm", "args": {"action": "the purge"}}],
                "then": [
                    {"id": "no", "tool": "fixture_confirm", "args": {"action": "the purge"}},
                    {"id": "form", "tool": "fixture_elicit", "args": {}},
                    {"id": "refused", "tool": "fixture_elicit", "args": {}},
                ],
                "elicit": [
                    {"action": "accept", "content": {"approve": true}},
                    {"action": "decline"},
                    {"action": "accept", "content": {"name": "Ada", "age": 36}},
                    {"action": "decline"},
                ],
            }),
        );
        assert_eq!(
            s.call("yes")["text"],
            "confirmed the purge",
            "{mode}: {}",
            s.report
        );
        assert_eq!(s.call("no")["text"], "declined the purge", "{mode}");
        assert_eq!(s.call("form")["text"], "hello Ada, 36", "{mode}");
        assert_eq!(s.call("refused")["text"], "declined", "{mode}");
        let asked = s.report["elicitations"].as_array().unwrap();
        assert_eq!(
            asked[0],
            "fixture_confirm: Proceed with the purge?\n\nThe fixture only reports the answer."
        );
        assert_eq!(asked[2], "fixture_elicit: Who are you?");
        let records = audit_records(s.audit_dir.as_ref().unwrap());
        let confirm_runs = records
            .iter()
            .filter(|r| r["kind"] == "call" && r["tool"] == "fixture_confirm")
            .count();
        // 2026-07-28: each confirm ends a run with input_required, and the retry runs the tool
        // again from the start.
        assert_eq!(confirm_runs, if mode == "legacy" { 2 } else { 4 }, "{mode}");
        if mode == "auto" {
            assert!(
                records
                    .iter()
                    .any(|r| r["kind"] == "call" && r["outcome"] == "input_required")
            );
        }
    }
}

#[test]
fn tickets_are_single_use_and_bound_to_caller_tool_arguments_and_time() {
    let dir = TempDir::new("approval-tickets");
    let config = with_api_keys(
        &dir,
        &hostile_entry(
            "[tool.approval]\nwhen = { tools = [\"fixture_echo\"] }\ntimeout = \"2s\"\n",
        ),
    );
    let server = HttpServer::start(&config);
    let ask = |key: &str, message: &str| {
        let r = call_as(
            &server,
            key,
            json!({"name": "fixture_echo", "arguments": {"message": message}}),
        );
        assert_eq!(r["resultType"], "input_required", "{r}");
        let question = r["inputRequests"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        (r["requestState"].as_str().unwrap().to_owned(), question)
    };
    let retry = |key: &str, message: &str, state: &str, question: &str| {
        call_as(
            &server,
            key,
            json!({"name": "fixture_echo", "arguments": {"message": message},
                   "requestState": state,
                   "inputResponses": {question: {"action": "accept", "content": {"approve": true}}}}),
        )
    };
    let (state, q) = ask(ALICE, "one");
    let done = retry(ALICE, "one", &state, &q);
    assert_eq!(result_text(&done), "one", "{done}");
    assert_eq!(result_outcome(&done), "completed");

    let replay = retry(ALICE, "one", &state, &q);
    assert_eq!(result_outcome(&replay), "ticket_refused");
    assert_eq!(
        result_text(&replay),
        "approval ticket refused: it was already used"
    );

    let (state, q) = ask(ALICE, "two");
    let changed = retry(ALICE, "TWO", &state, &q);
    assert_eq!(
        result_text(&changed),
        "approval ticket refused: it was issued for other arguments"
    );
    let other = retry(BOB, "two", &state, &q);
    assert_eq!(
        result_text(&other),
        "approval ticket refused: it was issued to another caller"
    );
    // A request state this server never issued is a malformed request: a JSON-RPC error.
    let mut forged = state.clone();
    forged.insert(forged.len() / 2, 'A');
    let auth = format!("Bearer {ALICE}");
    let forged = raw_mcp(
        &server.addr,
        "tools/call",
        json!({"name": "fixture_echo", "arguments": {"message": "two"},
               "requestState": forged,
               "inputResponses": {q.as_str(): {"action": "accept", "content": {"approve": true}}},
               "_meta": {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}}),
        &[("Authorization", auth.as_str())],
    )
    .expect("the server answers");
    let forged = sse_json(&forged.body);
    assert_eq!(forged["error"]["code"], -32602, "{forged}");
    assert_eq!(
        forged["error"]["message"],
        "approval ticket refused: it is not one this server issued, or it was altered"
    );
    assert_eq!(forged["error"]["data"]["airlock/outcome"], "ticket_refused");
    // The refusals above did not use the genuine ticket up.
    assert_eq!(result_text(&retry(ALICE, "two", &state, &q)), "two");

    let (state, q) = ask(ALICE, "three");
    std::thread::sleep(Duration::from_millis(2300));
    let late = retry(ALICE, "three", &state, &q);
    assert_eq!(
        result_text(&late),
        "approval ticket refused: it has expired; call again to be asked again"
    );
    let outcomes: Vec<String> = audit_records(&server.audit_dir)
        .iter()
        .filter(|r| r["kind"] == "call")
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "ticket_refused").count(),
        5,
        "{outcomes:?}"
    );
}

#[test]
fn operator_approves_and_denies_through_ctl_with_four_eyes() {
    let dir = TempDir::new("approval-operator");
    let hook = TestHttpServer::start();
    // A secret of the policy, which an operator's careless reason quotes below.
    let secrets = dir.0.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("DEPLOY_KEY"), "dk-5512abcdef99\n").unwrap();
    let config = with_api_keys(
        &dir,
        &format!(
            "[secrets]\ndir = \"{}\"\nfiles = [\"DEPLOY_KEY\"]\n[notify]\nurl = \"http://127.0.0.1:{}/hook/secret-token\"\n{}",
            secrets.display(),
            hook.port,
            hostile_entry(
                "[tool.approval]\nwhen = { tools = [\"fixture_echo\"] }\nvia = \"operator\"\nfour_eyes = true\ntimeout = \"30s\"\n",
            )
        ),
    );
    let server = std::sync::Arc::new(HttpServer::start(&config));
    let background = |message: &'static str| {
        let server = server.clone();
        std::thread::spawn(move || {
            let auth = format!("Bearer {ALICE}");
            let r = raw_mcp(
                &server.addr,
                "tools/call",
                json!({"name": "fixture_echo", "arguments": {"message": message},
                       "_meta": {"progressToken": "p1"}}),
                &[("Authorization", auth.as_str())],
            )
            .unwrap();
            r.body
        })
    };

    // An operator watching sees each question as it arrives, without polling themselves.
    let mut watch = std::process::Command::new(common::airlock())
        .args([
            "ctl",
            "--state-dir",
            server.state_dir.to_str().unwrap(),
            "--json",
            "approvals",
            "watch",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut watched = std::io::BufReader::new(watch.stdout.take().unwrap());
    let pending = background("approve me");
    let waiting = waiting_approval(&server);
    assert_eq!(waiting["principal"], "alice");
    assert_eq!(waiting["tool"], "fixture_echo");
    assert_eq!(waiting["four_eyes"], true);
    let id = waiting["id"].as_str().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut watched, &mut line).unwrap();
    let seen: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&seen["event"], &seen["id"], &seen["tool"]),
        (&json!("waiting"), &json!(id), &json!("fixture_echo")),
        "{line}"
    );
    // The [notify] webhook is told, once, with what the operator needs to answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let notified = loop {
        if let Some(r) = hook.seen().into_iter().find(|r| r.method == "POST") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no notification reached the hook"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(notified.path, "/hook/secret-token");
    let event: Value = serde_json::from_str(&notified.body).unwrap();
    assert_eq!(
        (
            &event["event"],
            &event["id"],
            &event["principal"],
            &event["tool"]
        ),
        (
            &json!("approval_waiting"),
            &json!(id),
            &json!("alice"),
            &json!("fixture_echo")
        ),
        "{event}"
    );
    // And the server's log names it, with what to type.
    assert!(
        server.log().contains(&format!(
            "{id} waiting: approval of fixture_echo by alice (call "
        )) && server
            .log()
            .contains(&format!("`airlock ctl approvals approve {id}`")),
        "{}",
        server.log()
    );
    let (ok, out) = ctl(&server, &["approvals", "approve", id, "--as", "alice"]);
    assert!(!ok);
    assert!(
        out.contains("four-eyes rule: alice made this call and cannot approve it"),
        "{out}"
    );
    let (ok, out) = ctl(&server, &["approvals", "approve", id, "--as", "bob"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("OK: approved approval of fixture_echo by alice"),
        "{out}"
    );
    line.clear();
    std::io::BufRead::read_line(&mut watched, &mut line).unwrap();
    let gone: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(gone, json!({"event": "gone", "id": id}));
    let _ = watch.kill();
    let _ = watch.wait();
    let body = pending.join().unwrap();
    assert!(
        body.contains("waiting for an operator's approval of fixture_echo"),
        "{body}"
    );
    let result = final_result(&body);
    assert_eq!(result_text(&result), "approve me", "{body}");

    let pending = background("deny me");
    let id = waiting_approval(&server)["id"].as_str().unwrap().to_owned();
    let (ok, out) = ctl(
        &server,
        &[
            "approvals",
            "deny",
            &id,
            "--reason",
            "not today, dk-5512abcdef99",
            "--as",
            "carol",
        ],
    );
    assert!(ok, "{out}");
    let body = pending.join().unwrap();
    assert!(
        body.contains("approval denied by operator carol (uid:"),
        "{body}"
    );
    assert!(
        body.contains("(not today, ") && body.contains("): tool fixture_echo was not run"),
        "{body}"
    );
    // The secret the reason quoted is in no result, record or log line.
    assert!(!body.contains("dk-5512abcdef99"), "{body}");
    assert!(!server.log().contains("dk-5512abcdef99"));
    for f in common::audit_files(&server.audit_dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(!text.contains("dk-5512abcdef99"), "{}", f.display());
    }
    let (ok, out) = ctl(&server, &["approvals", "approve", &id]);
    assert!(!ok);
    assert!(
        out.contains(&format!("no approval {id} is waiting")),
        "{out}"
    );
    // Each answer is one operator line in the log, with who gave it and why.
    let log = server.log();
    assert!(
        log.contains("operator bob (uid:")
            && log.contains("approved approval of fixture_echo by alice"),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("operator carol (uid:")
            && l.contains("denied approval of fixture_echo by alice")
            && l.contains("not today")),
        "{log}"
    );

    let events: Vec<(String, String)> = approval_events(&server.audit_dir)
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_owned(),
                r["by"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(events[0].0, "requested");
    assert_eq!(events[1].0, "refused");
    assert!(
        events[1].1.starts_with("operator alice (uid:"),
        "{events:?}"
    );
    assert_eq!(events[2].0, "granted");
    assert!(events[2].1.starts_with("operator bob (uid:"), "{events:?}");
    assert_eq!(events[4].0, "denied");

    // A reload while a call waits: approving it afterwards does not run it under the old
    // configuration.
    let pending = background("outlived");
    let id = waiting_approval(&server)["id"].as_str().unwrap().to_owned();
    with_api_keys(
        &dir,
        &hostile_entry(
            "[tool.approval]\nwhen = { tools = [\"fixture_echo\"] }\nvia = \"operator\"\nfour_eyes = true\ntimeout = \"31s\"\n",
        ),
    );
    let (ok, out) = ctl(&server, &["reload"]);
    assert!(ok, "{out}");
    let (ok, out) = ctl(&server, &["approvals", "approve", &id, "--as", "bob"]);
    assert!(ok, "{out}");
    let result = final_result(&pending.join().unwrap());
    assert_eq!(
        result_outcome(&result),
        "reloaded_while_waiting",
        "{result}"
    );
}

#[test]
fn no_operator_answer_before_the_timeout_is_a_denial() {
    let dir = TempDir::new("approval-timeout");
    let config = hostile_with(
        &dir,
        "[tool.approval]\nwhen = \"always\"\nvia = \"operator\"\ntimeout = \"1s\"\n",
    );
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [{"id": "a", "tool": "fixture_echo", "args": {"message": "hi"}}]}),
    );
    let a = s.call("a");
    assert_eq!(outcome(a), "approval_timed_out", "{a}");
    assert_eq!(
        a["text"],
        "approval for tool fixture_echo not answered within 1 s: denied"
    );
}

#[test]
fn shadow_tier_withholds_writes_and_marks_calls() {
    let dir = TempDir::new("approval-shadow");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    let upstream = TestHttpServer::start();
    let port = upstream.port;
    // files is autonomous: a shadow call reaches it only through hostile's nested calls.
    let config = dir.config(&format!(
        "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{{ host = \"data\", guest = \"/data\", mode = \"rw\" }}]\n\
         [[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\ntier = \"shadow\"\n[tool.grants]\nnet = [\"http://127.0.0.1:{port}\"]\n",
        hostile_wasm().display()
    ));
    let poll = |method: &str| json!({"authority": format!("127.0.0.1:{port}"), "times": 1, "interval_ms": 0, "method": method});
    let write = json!({"path": "/data/x.txt", "content": "x"});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [
            {"id": "write", "tool": "fixture_nest", "args": {"tool": "files_write", "arguments": write}},
            {"id": "post", "tool": "fixture_poll", "args": poll("POST")},
            {"id": "get", "tool": "fixture_poll", "args": poll("GET")},
        ],
        "then": [
            {"id": "direct", "tool": "files_write", "args": {"path": "/data/y.txt", "content": "y"}},
        ]}),
    );
    // A shadow call's nested call runs in the shadow tier too, whatever its own tier.
    let nested = s.call("write");
    assert!(
        nested["text"]
            .as_str()
            .unwrap()
            .starts_with("call 1 refused: tool_failed: cannot write /data/x.txt"),
        "{nested}"
    );
    assert!(
        !dir.0.join("data/x.txt").exists(),
        "the shadow write reached the disk"
    );
    assert_eq!(s.call("direct")["text"], "wrote 1 bytes to /data/y.txt");
    let post = s.call("post");
    assert_eq!(outcome(post), "blocked_by_policy", "{post}");
    assert!(
        post["text"].as_str().unwrap().contains(&format!(
            "HTTP POST to 127.0.0.1:{port} is withheld in the shadow tier"
        )),
        "{post}"
    );
    let get = s.call("get");
    assert_eq!(get["text"], "1 requests answered", "{get}");
    assert_eq!(get["meta"]["airlock/shadow"], true, "{get}");
    assert!(upstream.seen().iter().all(|r| r.method == "GET"));
    let records = audit_records(s.audit_dir.as_ref().unwrap());
    let tiers: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "call")
        .map(|r| (r["tool"].as_str().unwrap(), r["tier"].as_str().unwrap()))
        .collect();
    assert!(tiers.contains(&("files_write", "shadow")), "{tiers:?}");
    assert!(tiers.contains(&("files_write", "autonomous")), "{tiers:?}");
    assert!(
        tiers
            .iter()
            .filter(|(t, _)| t.starts_with("fixture"))
            .all(|(_, tier)| *tier == "shadow")
    );
}

#[test]
fn nested_calls_are_capped_and_go_through_the_pipeline() {
    let dir = TempDir::new("approval-nesting");
    let config = with_api_keys(
        &dir,
        &format!(
            "{}[tool.limits]\nmax_depth = 4\nmax_nested_calls = 5\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"admins\"]\n",
            hostile_entry("")
        ),
    );
    let server = HttpServer::start(&config);
    let call = |key: &str, tool: &str, args: Value| {
        let r = call_as(&server, key, json!({"name": tool, "arguments": args}));
        result_text(&r).to_owned()
    };
    let deep = call(ALICE, "fixture_nest_forever", json!({"level": 0}));
    assert!(
        deep.starts_with("level 4 stopped: nesting_too_deep: nested call to fixture_nest_forever refused: depth 5 is beyond the cap of 4"),
        "{deep}"
    );
    let fan = call(
        ALICE,
        "fixture_nest",
        json!({"tool": "fixture_echo", "arguments": {"message": "x"}, "times": 10}),
    );
    assert!(
        fan.starts_with("call 6 refused: nested_budget_exhausted: nested call to fixture_echo refused: the top-level call has used its budget of 5 nested calls"),
        "{fan}"
    );
    let cycle = call(ALICE, "fixture_cycle_a", json!({}));
    assert_eq!(
        cycle,
        "fixture_cycle_a refused: call_cycle: nested call to fixture_cycle_a refused: it is already on the call stack with the same arguments (a cycle)"
    );
    let text_tool = "text_stats";
    let denied = call(
        ALICE,
        "fixture_nest",
        json!({"tool": text_tool, "arguments": {"text": "a"}}),
    );
    assert_eq!(
        denied,
        format!(
            "call 1 refused: not_authorized: not authorized: principal alice may not call {text_tool}"
        )
    );
    // bob may use both: the nested call runs, as bob.
    let allowed = call(
        BOB,
        "fixture_nest",
        json!({"tool": text_tool, "arguments": {"text": "a"}}),
    );
    assert!(!allowed.contains("refused"), "{allowed}");

    let records = audit_records(&server.audit_dir);
    let calls: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call").collect();
    let root = calls
        .iter()
        .find(|r| r["tool"] == "fixture_cycle_a" && r["parent_call_id"].is_null())
        .unwrap();
    let child = calls
        .iter()
        .find(|r| r["tool"] == "fixture_cycle_b")
        .unwrap();
    assert_eq!(child["parent_call_id"], root["call_id"]);
    assert_eq!(child["correlation_id"], root["correlation_id"]);
    let refused = calls.iter().find(|r| r["outcome"] == "call_cycle").unwrap();
    assert_eq!(refused["parent_call_id"], child["call_id"]);
    assert!(calls.iter().any(|r| r["outcome"] == "nesting_too_deep"));
    assert!(
        calls
            .iter()
            .any(|r| r["outcome"] == "nested_budget_exhausted")
    );
    assert!(calls.iter().any(|r| r["outcome"] == "not_authorized"
        && r["principal"] == "alice"
        && !r["parent_call_id"].is_null()));
}

#[test]
fn a_tool_watching_cancelled_stops_cleanly_when_interrupted() {
    let dir = TempDir::new("approval-cancelled");
    let config = hostile_with(&dir, "[tool.limits]\ntimeout = \"60s\"\n");
    let server = std::sync::Arc::new(HttpServer::start(&config));
    let s = server.clone();
    let pending = std::thread::spawn(move || {
        raw_mcp(
            &s.addr,
            "tools/call",
            json!({"name": "fixture_until_cancelled", "arguments": {}}),
            &[],
        )
        .unwrap()
        .body
    });
    // Registered is not yet running: wait until its guest has run (fuel used, published at
    // each epoch tick), by then it has asked `cancelled()` and gets its grace when stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = ctl(&server, &["--json", "calls"]);
        let running: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let started = running["calls"].as_array().is_some_and(|calls| {
            calls.iter().any(|c| {
                c["tool"] == "fixture_until_cancelled" && c["fuel_used"].as_u64() > Some(0)
            })
        });
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "the call never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = ctl(
        &server,
        &["kill", "--tool", "fixture_until_cancelled", "--interrupt"],
    );
    assert!(ok, "{out}");
    let body = pending.join().unwrap();
    assert!(body.contains("stopped by operator"), "{body}");
    server.wait_for_log_count("stopping cleanly", 1);
}

#[test]
fn files_delete_asks_before_deleting_in_both_eras() {
    for mode in ["legacy", "auto"] {
        let dir = TempDir::new("approval-delete");
        let data = dir.0.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("keep.txt"), "k").unwrap();
        std::fs::write(data.join("drop.txt"), "d").unwrap();
        let config = dir.config(
            "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \"data\", guest = \"/data\", mode = \"rw\" }]\n",
        );
        let s = client(
            mode,
            Transport::Stdio(Some(&config)),
            json!({
                "calls": [{"id": "keep", "tool": "files_delete", "args": {"path": "/data/keep.txt"}}],
                "then": [{"id": "drop", "tool": "files_delete", "args": {"path": "/data/drop.txt"}}],
                "elicit": [{"action": "decline"}, {"action": "accept", "content": {"approve": true}}],
            }),
        );
        assert_eq!(
            s.call("keep")["text"],
            "kept /data/keep.txt: deletion not confirmed",
            "{mode}"
        );
        assert_eq!(s.call("drop")["text"], "deleted /data/drop.txt", "{mode}");
        assert!(data.join("keep.txt").exists());
        assert!(!data.join("drop.txt").exists());
        assert_eq!(
            s.report["elicitations"][1],
            "files_delete: Delete /data/drop.txt?\n\n1 bytes; this cannot be undone."
        );
    }
}

#[test]
fn approval_rules_that_can_never_match_stop_the_start() {
    let dir = TempDir::new("approval-config");
    let state = dir.0.join("state");
    for (lines, expected) in [
        (
            "[tool.approval]\nwhen = { tools = [\"fixture_ech\"] }\n",
            "tool \"hostile\": approval › when › tools: the component declares no tool \"fixture_ech\"",
        ),
        (
            "[tool.approval]\nwhen = { arguments = { mesage = \"x\" } }\n",
            "approval › when › arguments › mesage: no tool the rule covers has an argument `mesage`",
        ),
        (
            "[tool.approval]\nwhen = { tools = [\"fixture_echo\"], arguments = { message = 3 } }\n",
            "approval › when › arguments › message: 3 can never be a value of `message`",
        ),
        (
            "tier = \"supervised\"\n[tool.approval]\nwhen = \"never\"\n",
            "tool \"hostile\" (entry 1) › approval › when: tier \"supervised\" asks for approval of every call",
        ),
        (
            "[tool.approval]\nwhen = { tools = [] }\n",
            "approval › when: `tools` is empty, so the rule can never match",
        ),
    ] {
        let config = hostile_with(&dir, lines);
        let (ok, out) = common::check(&config, &state);
        assert!(!ok, "{lines}: accepted");
        assert!(out.contains(expected), "{lines}:\n{out}");
    }
}

#[test]
fn a_tier_change_is_recorded_by_the_reload() {
    let dir = TempDir::new("approval-promotion");
    let config = hostile_with(&dir, "tier = \"shadow\"\n");
    let server = HttpServer::start(&config);
    hostile_with(&dir, "tier = \"autonomous\"\n");
    let (ok, out) = ctl(&server, &["reload"]);
    assert!(ok, "{out}");
    let reload = audit_records(&server.audit_dir)
        .into_iter()
        .find(|r| r["kind"] == "operator" && r["action"] == "reload")
        .expect("the reload's record");
    assert_eq!(
        reload["tiers"],
        json!([{"component": "hostile", "from": "shadow", "to": "autonomous"}]),
        "{reload}"
    );
}

#[test]
fn client_approval_over_streamable_http_in_both_eras() {
    let dir = TempDir::new("approval-http");
    let config = hostile_with(&dir, "[tool.approval]\nwhen = \"always\"\n");
    let server = HttpServer::start(&config);
    for mode in ["legacy", "auto"] {
        let s = client(
            mode,
            Transport::Http(&server.url),
            json!({
                "calls": [{"id": "yes", "tool": "fixture_echo", "args": {"message": mode}}],
                "then": [{"id": "no", "tool": "fixture_echo", "args": {"message": mode}}],
                "elicit": [{"action": "accept", "content": {"approve": true}}, {"action": "decline"}],
            }),
        );
        assert_eq!(s.call("yes")["text"], mode, "{mode}: {}", s.report);
        assert_eq!(outcome(s.call("no")), "approval_denied", "{mode}");
        assert!(
            s.call("no")["text"]
                .as_str()
                .unwrap()
                .starts_with("approval denied by client user of anonymous"),
            "{}",
            s.call("no")
        );
    }
}

#[test]
fn a_nested_call_outlived_by_its_caller_is_cancelled_and_recorded() {
    let dir = TempDir::new("approval-nested-timeout");
    let config = hostile_with(&dir, "[tool.limits]\ntimeout = \"600ms\"\n");
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [{"id": "a", "tool": "fixture_nest",
                          "args": {"tool": "hostile_sleep", "arguments": {"ms": 5000}}}]}),
    );
    assert_eq!(outcome(s.call("a")), "timed_out", "{}", s.call("a"));
    // The nested call's record is written by its own task, after the caller's.
    let audit_dir = s.audit_dir.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records = audit_records(audit_dir);
        if records.iter().any(|r| r["tool"] == "hostile_sleep") || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let parent = records
        .iter()
        .find(|r| r["tool"] == "fixture_nest")
        .unwrap();
    let nested = records
        .iter()
        .find(|r| r["tool"] == "hostile_sleep")
        .expect("the nested call has a record");
    assert_eq!(nested["parent_call_id"], parent["call_id"]);
    assert!(
        matches!(nested["outcome"].as_str(), Some("cancelled" | "timed_out")),
        "{nested}"
    );
}

#[test]
fn one_yes_authorises_exactly_one_run_in_both_eras() {
    // A tool calls a supervised tool five times with the same arguments; the user says yes
    // once, then no. Only one run happens: each nested call is its own occurrence, and a yes
    // is used up by the run it authorised (in a later 2026-07-28 round too).
    for mode in ["legacy", "auto"] {
        let dir = TempDir::new(&format!("approval-once-{mode}"));
        std::fs::create_dir_all(dir.0.join("data")).unwrap();
        let config = dir.config(&format!(
            "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\ntier = \"supervised\"\n[tool.grants]\nfs = [{{ host = \"data\", guest = \"/data\", mode = \"rw\" }}]\n\
             [[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n",
            hostile_wasm().display()
        ));
        let append = json!({"path": "/data/log.txt", "content": "x", "append": true});
        let s = client(
            mode,
            Transport::Stdio(Some(&config)),
            json!({
                "calls": [{"id": "fan", "tool": "fixture_nest",
                           "args": {"tool": "files_write", "arguments": append, "times": 5}}],
                "elicit": [{"action": "accept", "content": {"approve": true}}, {"action": "decline"}]
            }),
        );
        let fan = s.call("fan");
        assert!(
            fan["text"]
                .as_str()
                .unwrap()
                .contains("refused: approval_denied"),
            "{mode}: {fan}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.0.join("data/log.txt")).unwrap(),
            "x",
            "{mode}: one yes ran the tool more than once: {}",
            s.report
        );
        let records = audit_records(s.audit_dir.as_ref().unwrap());
        let completed = records
            .iter()
            .filter(|r| {
                r["kind"] == "call" && r["tool"] == "files_write" && r["outcome"] == "completed"
            })
            .count();
        let granted = records
            .iter()
            .filter(|r| r["kind"] == "approval" && r["event"] == "granted")
            .count();
        assert_eq!(completed, 1, "{mode}: {records:?}");
        assert_eq!(granted, 1, "{mode}: {records:?}");
        // files_write can act outside its sandbox: its run was announced by an intent record.
        let intents = records
            .iter()
            .filter(|r| r["kind"] == "intent" && r["tool"] == "files_write")
            .count();
        assert_eq!(intents, 1, "{mode}: {records:?}");
    }
}
