//! Resources, prompts, completions, sampling and the client's input, end to end: the real
//! binary serving the conformance fixture component, spoken to over Streamable HTTP as a
//! 2026-07-28 client would. Each goes through the same pipeline as a tool call: roles, kills,
//! the audit log, the grants.

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

fn conformance_wasm() -> PathBuf {
    Path::new(airlock::config::bundled::WASM_DIR).join("conformance.wasm")
}

/// The fixture component for role `users` (alice and bob), and `rest`.
fn config(dir: &TempDir, tool_lines: &str, rest: &str) -> PathBuf {
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    dir.config(&format!(
        "[auth]\nmode = \"api-key\"\n[[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{}\"\nroles = [\"users\"]\n[[auth.api_keys]]\nprincipal = \"bob\"\nsha256 = \"{}\"\nroles = [\"others\"]\n[roles]\nusers = [\"users\"]\nothers = [\"others\"]\n\n[[tool]]\nname = \"conformance\"\ncomponent = \"{}\"\nroles = [\"users\"]\n{tool_lines}\n{rest}\n",
        hash(ALICE),
        hash(BOB),
        conformance_wasm().display()
    ))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// One 2026-07-28 request as `key`'s principal, with the client declaring `capabilities`.
fn request(server: &HttpServer, key: &str, method: &str, mut params: Value) -> (u16, Value) {
    let auth = bearer(key);
    let mut headers = vec![("Authorization", auth.as_str())];
    let uri = params["uri"].as_str().map(str::to_owned);
    if let Some(uri) = &uri {
        headers.push(("Mcp-Name", uri.as_str()));
    }
    if params["_meta"]["io.modelcontextprotocol/clientCapabilities"].is_null() {
        params["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
            json!({"elicitation": {}, "sampling": {}, "roots": {}});
    }
    let r = raw_mcp(&server.addr, method, params, &headers).expect("the server answers");
    let body = if r.body.contains("data: ") {
        sse_json(&r.body)
    } else {
        serde_json::from_str(r.body.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.body))
    };
    (r.status, body)
}

#[test]
fn resources_prompts_and_completions_are_served_to_the_roles_that_reach_them() {
    let dir = TempDir::new("offer-roles");
    let server = HttpServer::start(&config(&dir, "", ""));

    let (_, listed) = request(&server, ALICE, "resources/list", json!({}));
    let uris: Vec<&str> = listed["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            "test://static-text",
            "test://static-binary",
            "test://watched-resource"
        ]
    );
    let (_, templates) = request(&server, ALICE, "resources/templates/list", json!({}));
    assert_eq!(
        templates["result"]["resourceTemplates"][0]["uriTemplate"],
        "test://template/{id}/data"
    );
    let (_, read) = request(
        &server,
        ALICE,
        "resources/read",
        json!({"uri": "test://template/42/data"}),
    );
    let text = read["result"]["contents"][0]["text"].as_str().unwrap();
    assert!(text.contains("\"id\":\"42\""), "{read}");
    let (_, blob) = request(
        &server,
        ALICE,
        "resources/read",
        json!({"uri": "test://static-binary"}),
    );
    assert_eq!(blob["result"]["contents"][0]["mimeType"], "image/png");
    assert!(
        blob["result"]["contents"][0]["blob"]
            .as_str()
            .unwrap()
            .starts_with("iVBOR")
    );

    let (_, prompts) = request(&server, ALICE, "prompts/list", json!({}));
    assert!(
        prompts["result"]["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "test_prompt_with_arguments")
    );
    let (_, got) = request(
        &server,
        ALICE,
        "prompts/get",
        json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}),
    );
    assert_eq!(
        got["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='a', arg2='b'"
    );
    // A required argument missing is the client's mistake: invalid params, and the tool did
    // not run.
    let (_, missing) = request(
        &server,
        ALICE,
        "prompts/get",
        json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "a"}}),
    );
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the argument arg2")
    );
    let (_, completed) = request(
        &server,
        ALICE,
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
               "argument": {"name": "arg1", "value": "test"}}),
    );
    assert_eq!(
        completed["result"]["completion"]["values"],
        json!(["test1", "test2", "testValue1"])
    );
    let (_, template_values) = request(
        &server,
        ALICE,
        "completion/complete",
        json!({"ref": {"type": "ref/resource", "uri": "test://template/{id}/data"},
               "argument": {"name": "id", "value": "4"}}),
    );
    assert_eq!(
        template_values["result"]["completion"]["values"],
        json!(["456"])
    );

    // Bob's roles do not reach the component: he sees none of it and reads none of it.
    let (_, none) = request(&server, BOB, "resources/list", json!({}));
    assert_eq!(none["result"]["resources"], json!([]));
    let (_, none) = request(&server, BOB, "prompts/list", json!({}));
    assert_eq!(none["result"]["prompts"], json!([]));
    let (_, refused) = request(
        &server,
        BOB,
        "resources/read",
        json!({"uri": "test://static-text"}),
    );
    assert_eq!(
        refused["error"]["data"]["airlock/outcome"],
        "not_authorized"
    );
    let (_, refused) = request(
        &server,
        BOB,
        "prompts/get",
        json!({"name": "test_simple_prompt"}),
    );
    assert_eq!(
        refused["error"]["data"]["airlock/outcome"],
        "not_authorized"
    );

    // An unknown resource: MCP's error, naming the URI.
    let (_, unknown) = request(
        &server,
        ALICE,
        "resources/read",
        json!({"uri": "test://nothing-here"}),
    );
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert_eq!(unknown["error"]["data"]["uri"], "test://nothing-here");

    // Every request left its record, named by its method.
    let records = audit_records(&server.audit_dir);
    let calls: Vec<&Value> = records.iter().filter(|r| r["kind"] == "call").collect();
    for (method, name, outcome) in [
        ("resources/read", "test://template/42/data", "completed"),
        ("prompts/get", "test_prompt_with_arguments", "completed"),
        (
            "prompts/get",
            "test_prompt_with_arguments",
            "invalid_arguments",
        ),
        (
            "completion/complete",
            "test_prompt_with_arguments",
            "completed",
        ),
        ("resources/read", "test://static-text", "not_authorized"),
        ("resources/read", "test://nothing-here", "not_found"),
    ] {
        assert!(
            calls
                .iter()
                .any(|r| r["request"] == method && r["tool"] == name && r["outcome"] == outcome),
            "no {method} {name} {outcome} record in {calls:#?}"
        );
    }
}

#[test]
fn an_operator_kills_a_components_resources_or_prompts_without_its_tools() {
    let dir = TempDir::new("offer-kill");
    let server = HttpServer::start(&config(&dir, "", ""));
    let (ok, out) = ctl(&server, &["kill", "--resources", "conformance"]);
    assert!(ok, "{out}");
    let (_, listed) = request(&server, ALICE, "resources/list", json!({}));
    assert_eq!(listed["result"]["resources"], json!([]));
    let (_, templates) = request(&server, ALICE, "resources/templates/list", json!({}));
    assert_eq!(templates["result"]["resourceTemplates"], json!([]));
    let (_, refused) = request(
        &server,
        ALICE,
        "resources/read",
        json!({"uri": "test://static-text"}),
    );
    assert_eq!(
        refused["error"]["data"]["airlock/outcome"],
        "disabled_by_operator"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the resources of conformance are disabled")
    );
    // Its prompts and tools are untouched.
    let (_, got) = request(
        &server,
        ALICE,
        "prompts/get",
        json!({"name": "test_simple_prompt"}),
    );
    assert!(got["result"]["messages"].is_array(), "{got}");
    let (_, called) = request(
        &server,
        ALICE,
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    );
    assert_eq!(result_outcome(&called["result"]), "completed");

    let (ok, out) = ctl(&server, &["kill", "--prompts", "conformance"]);
    assert!(ok, "{out}");
    let (_, refused) = request(
        &server,
        ALICE,
        "prompts/get",
        json!({"name": "test_simple_prompt"}),
    );
    assert_eq!(
        refused["error"]["data"]["airlock/outcome"],
        "disabled_by_operator"
    );
    let (ok, out) = ctl(&server, &["revive", "--resources", "conformance"]);
    assert!(ok, "{out}");
    let (_, read) = request(
        &server,
        ALICE,
        "resources/read",
        json!({"uri": "test://static-text"}),
    );
    assert_eq!(
        read["result"]["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    // A kill of a component that is not there protects nothing: refused.
    let (ok, out) = ctl(&server, &["kill", "--prompts", "nothing"]);
    assert!(!ok, "{out}");
}

#[test]
fn sampling_needs_the_tools_grant_and_the_clients_capability() {
    // Without the grant: blocked by policy, whatever the client supports.
    let dir = TempDir::new("offer-sample-nogrant");
    let server = HttpServer::start(&config(&dir, "", ""));
    let (_, r) = request(
        &server,
        ALICE,
        "tools/call",
        json!({"name": "test_input_required_result_sampling", "arguments": {}}),
    );
    assert_eq!(result_outcome(&r["result"]), "blocked_by_policy", "{r}");
    assert!(result_text(&r["result"]).contains("sampling"), "{r}");
    drop(server);

    // With it: the client is asked, under the tool's own key.
    let dir = TempDir::new("offer-sample-grant");
    let server = HttpServer::start(&config(&dir, "grants = { sample = true }", ""));
    let (_, r) = request(
        &server,
        ALICE,
        "tools/call",
        json!({"name": "test_input_required_result_sampling", "arguments": {}}),
    );
    let asked = &r["result"]["inputRequests"]["capital_question"];
    assert_eq!(asked["method"], "sampling/createMessage", "{r}");
    assert_eq!(asked["params"]["maxTokens"], 100);

    // A client that did not declare sampling: MCP's missing-capability error, HTTP 400.
    let (status, r) = request(
        &server,
        ALICE,
        "tools/call",
        json!({"name": "test_missing_capability", "arguments": {},
               "_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}),
    );
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["code"], -32021, "{r}");
    assert_eq!(
        r["error"]["data"]["requiredCapabilities"],
        json!({"sampling": {}})
    );
}

#[test]
fn one_round_carries_several_questions_under_the_tools_keys() {
    let dir = TempDir::new("offer-rounds");
    let server = HttpServer::start(&config(&dir, "grants = { sample = true }", ""));
    let call = json!({"name": "test_input_required_result_multiple_inputs", "arguments": {}});
    let (_, first) = request(&server, ALICE, "tools/call", call.clone());
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let requests = result["inputRequests"].as_object().unwrap();
    let mut keys: Vec<&str> = requests.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["client_roots", "greeting", "user_name"]);
    assert_eq!(requests["user_name"]["method"], "elicitation/create");
    assert_eq!(requests["greeting"]["method"], "sampling/createMessage");
    assert_eq!(requests["client_roots"]["method"], "roots/list");

    let mut retry = call.clone();
    retry["requestState"] = result["requestState"].clone();
    retry["inputResponses"] = json!({
        "user_name": {"action": "accept", "content": {"name": "Alice"}},
        "greeting": {"role": "assistant", "content": {"type": "text", "text": "Hello there!"},
                     "model": "test-model", "stopReason": "endTurn"},
        "client_roots": {"roots": [{"uri": "file:///test/root", "name": "Test Root"}]}
    });
    let (_, done) = request(&server, ALICE, "tools/call", retry);
    let text = result_text(&done["result"]);
    assert_eq!(result_outcome(&done["result"]), "completed", "{done}");
    for part in ["\"name\":\"Alice\"", "Hello there!", "file:///test/root"] {
        assert!(text.contains(part), "{part} not in {text}");
    }

    // Answers sent without a request state: the tool's own form takes a well-formed one under
    // its key; a wrong key or a malformed answer is asked again.
    let elicit = json!({"name": "test_input_required_result_elicitation", "arguments": {}});
    let mut early = elicit.clone();
    early["inputResponses"] = json!({"user_name": {"action": "accept", "content": {"name": "Ann"}},
                                     "extra": {"action": "accept", "content": {}}});
    let (_, done) = request(&server, ALICE, "tools/call", early);
    assert_eq!(result_text(&done["result"]), "Hello, Ann!", "{done}");
    for wrong in [
        json!({"wrong_key": {"action": "accept", "content": {"name": "Ann"}}}),
        json!({"user_name": 12345}),
        json!({"user_name": {"action": "accept"}}),
    ] {
        let mut retry = elicit.clone();
        retry["inputResponses"] = wrong.clone();
        let (_, again) = request(&server, ALICE, "tools/call", retry);
        assert_eq!(
            again["result"]["resultType"], "input_required",
            "{wrong}: {again}"
        );
    }

    // A prompt asks too, and its retry completes it.
    let get = json!({"name": "test_input_required_result_prompt"});
    let (_, first) = request(&server, ALICE, "prompts/get", get.clone());
    assert_eq!(
        first["result"]["inputRequests"]["user_context"]["method"], "elicitation/create",
        "{first}"
    );
    let mut retry = get;
    retry["requestState"] = first["result"]["requestState"].clone();
    retry["inputResponses"] =
        json!({"user_context": {"action": "accept", "content": {"context": "ops"}}});
    let (_, done) = request(&server, ALICE, "prompts/get", retry);
    assert_eq!(
        done["result"]["messages"][0]["content"]["text"],
        "Use this context: ops"
    );
}

#[test]
fn a_component_built_against_the_0_1_contract_still_runs() {
    let dir = TempDir::new("offer-legacy");
    let config = dir.config(&format!(
        "[[tool]]\nname = \"legacy\"\ncomponent = \"{}\"\n",
        Path::new(airlock::config::bundled::WASM_DIR)
            .join("legacy.wasm")
            .display()
    ));
    let server = HttpServer::start(&config);
    let (status, body) = raw_call(&server.addr, "legacy_echo", &json!({"text": "hi"}), &[])
        .expect("the server answers");
    assert_eq!(status, 200, "{body}");
    let r = sse_json(&body);
    assert_eq!(
        result_text(&r["result"]),
        "0.1.0 echo: {\"text\":\"hi\"}",
        "{r}"
    );
    // It offers no resources: reading one is MCP's not-found, not a failure of the host.
    let r = raw_mcp(
        &server.addr,
        "resources/read",
        json!({"uri": "test://static-text"}),
        &[("Mcp-Name", "test://static-text")],
    )
    .unwrap();
    let v: Value = serde_json::from_str(r.body.trim()).unwrap_or_else(|_| sse_json(&r.body));
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[test]
fn the_docs_component_serves_a_grants_files_as_resources_and_prompts() {
    let dir = TempDir::new("offer-docs");
    let docs = dir.0.join("docs");
    std::fs::create_dir_all(docs.join("runbooks")).unwrap();
    std::fs::write(
        docs.join("runbooks/deploy.md"),
        "# Deploy\n1. Build\n2. Ship\n",
    )
    .unwrap();
    std::fs::write(docs.join("faq.txt"), "Q: why?\nA: because.\n").unwrap();
    let config = dir.config(
        "[[tool]]\nname = \"docs\"\ncomponent = \"bundled:docs\"\ngrants = { fs = [{ host = \"docs\", guest = \"/docs\", mode = \"ro\" }] }\n",
    );
    let server = HttpServer::start(&config);
    let call = |method: &str, params: Value| {
        let uri = params["uri"].as_str().map(str::to_owned);
        let mut headers = Vec::new();
        if let Some(u) = &uri {
            headers.push(("Mcp-Name", u.as_str()));
        }
        let r = raw_mcp(&server.addr, method, params, &headers).unwrap();
        if r.body.contains("data: ") {
            sse_json(&r.body)
        } else {
            serde_json::from_str::<Value>(r.body.trim()).unwrap()
        }
    };
    let index = call("resources/read", json!({"uri": "docs://index"}));
    assert_eq!(
        index["result"]["contents"][0]["text"],
        "- docs:///faq.txt\n- docs:///runbooks/deploy.md"
    );
    let doc = call(
        "resources/read",
        json!({"uri": "docs:///runbooks/deploy.md"}),
    );
    assert_eq!(doc["result"]["contents"][0]["mimeType"], "text/markdown");
    assert!(
        doc["result"]["contents"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("# Deploy")
    );
    // Nothing outside the grant: a path that climbs is refused by the component, and the
    // sandbox would not let it out anyway.
    let out = call("resources/read", json!({"uri": "docs:///../airlock.toml"}));
    assert_eq!(out["error"]["code"], -32602, "{out}");
    let values = call(
        "completion/complete",
        json!({"ref": {"type": "ref/resource", "uri": "docs:///{+path}"},
               "argument": {"name": "path", "value": "run"}}),
    );
    assert_eq!(
        values["result"]["completion"]["values"],
        json!(["runbooks/deploy.md"])
    );
    let prompt = call(
        "prompts/get",
        json!({"name": "follow_runbook", "arguments": {"path": "runbooks/deploy.md", "service": "billing"}}),
    );
    let messages = prompt["result"]["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"]["type"], "resource", "{prompt}");
    assert_eq!(
        messages[0]["content"]["resource"]["uri"],
        "docs:///runbooks/deploy.md"
    );
    assert!(
        messages[1]["content"]["text"]
            .as_str()
            .unwrap()
            .contains("for billing")
    );
    let hits = call(
        "tools/call",
        json!({"name": "docs_search", "arguments": {"query": "ship"}}),
    );
    assert_eq!(
        hits["result"]["structuredContent"]["hits"][0]["uri"], "docs:///runbooks/deploy.md",
        "{hits}"
    );
}

/// A `subscriptions/listen` stream of `key`'s principal, open, asking for `notifications`.
fn listen(server: &HttpServer, key: &str, notifications: Value) -> std::net::TcpStream {
    use std::io::Write;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {
        "notifications": notifications,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}
    }})
    .to_string();
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: subscriptions/listen\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    s
}

/// What the stream carries within `wait`, read as it comes.
fn read_for(stream: &mut std::net::TcpStream, wait: std::time::Duration) -> String {
    use std::io::Read;
    let deadline = std::time::Instant::now() + wait;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn updates_reach_only_listeners_that_asked_and_may_still_read() {
    let dir = TempDir::new("offer-listen");
    let server = HttpServer::start(&config(&dir, "", ""));
    let wait = std::time::Duration::from_millis(1500);
    let mut alice = listen(
        &server,
        ALICE,
        json!({"resourceSubscriptions": ["test://watched-resource"]}),
    );
    let mut tools = listen(&server, ALICE, json!({"toolsListChanged": true}));
    // Bob asks for the same URI, but no role of his reaches the component.
    let mut bob = listen(
        &server,
        BOB,
        json!({"resourceSubscriptions": ["test://watched-resource"]}),
    );
    for s in [&mut alice, &mut tools, &mut bob] {
        let ack = read_for(s, std::time::Duration::from_millis(800));
        assert!(
            ack.contains("notifications/subscriptions/acknowledged"),
            "{ack}"
        );
    }
    let touch = json!({"name": "test_update_watched_resource", "arguments": {}});
    let (_, r) = request(&server, ALICE, "tools/call", touch.clone());
    assert_eq!(result_outcome(&r["result"]), "completed", "{r}");
    let got = read_for(&mut alice, wait);
    assert!(
        got.contains("notifications/resources/updated") && got.contains("test://watched-resource"),
        "{got}"
    );
    assert!(
        got.contains("io.modelcontextprotocol/subscriptionId"),
        "{got}"
    );
    // The tools listener asked for list changes only.
    let other = read_for(&mut tools, std::time::Duration::from_millis(300));
    assert!(!other.contains("resources/updated"), "{other}");
    assert!(
        !read_for(&mut bob, std::time::Duration::from_millis(300)).contains("resources/updated")
    );

    let (_, r) = request(
        &server,
        ALICE,
        "tools/call",
        json!({"name": "test_trigger_tool_change", "arguments": {}}),
    );
    assert_eq!(result_outcome(&r["result"]), "completed", "{r}");
    let changed = read_for(&mut tools, wait);
    assert!(
        changed.contains("notifications/tools/list_changed"),
        "{changed}"
    );

    // Once an operator kills the component's resources, its updates reach nobody.
    let (ok, out) = ctl(&server, &["kill", "--resources", "conformance"]);
    assert!(ok, "{out}");
    let (_, r) = request(&server, ALICE, "tools/call", touch);
    assert_eq!(result_outcome(&r["result"]), "completed", "{r}");
    let after = read_for(&mut alice, std::time::Duration::from_millis(800));
    assert!(!after.contains("resources/updated"), "{after}");
}
