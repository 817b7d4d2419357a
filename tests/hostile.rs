//! Every hostile fixture ends with its exact, named outcome, and the server keeps answering:
//! a benign call made while the hostile one runs and one made right after both succeed.

mod common;

use common::{HttpServer, Session, TempDir, Transport, client, hostile_config, outcome};
use serde_json::{Value, json};

/// Run `tool` with `args` under `limits`, with an echo during it and another right after.
fn run_hostile(limits: &str, tool: &str, args: Value) -> Session {
    let dir = TempDir::new(tool);
    let config = hostile_config(&dir, limits);
    let plan = json!({
        "calls": [
            {"id": "hostile", "tool": tool, "args": args},
            {"id": "during", "tool": "fixture_echo", "args": {"message": "during"}, "delay_ms": 30}
        ],
        "then": [{"id": "after", "tool": "fixture_echo", "args": {"message": "after"}}]
    });
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(s.call("during")["text"], "during", "{}", s.report);
    assert_eq!(s.call("after")["text"], "after", "{}", s.report);
    s
}

fn assert_outcome(s: &Session, kind: &str, text: &str) {
    let h = s.call("hostile");
    assert_eq!(h["is_error"], true, "{h}");
    assert_eq!(outcome(h), kind, "{h}");
    assert_eq!(h["text"], text, "{h}");
    assert!(
        s.stderr.contains(&format!("outcome=\"{kind}\"")),
        "no `{kind}` log event:\n{}",
        s.stderr
    );
}

/// The benign call finished while the hostile one was still running.
fn assert_answered_during(s: &Session) {
    let (during, hostile) = (
        &s.call("during")["finished_ms"],
        &s.call("hostile")["finished_ms"],
    );
    assert!(
        during.as_f64().unwrap() < hostile.as_f64().unwrap(),
        "during {during} ms, hostile {hostile} ms"
    );
}

#[test]
fn infinite_loop_exhausts_the_cpu_budget() {
    let s = run_hostile("fuel = 4_000_000_000", "hostile_spin", json!({}));
    assert_outcome(&s, "cpu_budget_exhausted", "cpu budget exhausted");
    assert_answered_during(&s);
}

#[test]
fn infinite_loop_with_ample_fuel_times_out_on_the_epoch_deadline() {
    let s = run_hostile(
        "fuel = 1_000_000_000_000_000\ntimeout = \"1s\"",
        "hostile_spin",
        json!({}),
    );
    assert_outcome(&s, "timed_out", "timed out after 1 s");
    assert_answered_during(&s);
}

#[test]
fn sleeping_past_the_timeout_times_out() {
    let s = run_hostile(
        "timeout = \"500ms\"",
        "hostile_sleep",
        json!({"ms": 60_000}),
    );
    assert_outcome(&s, "timed_out", "timed out after 500 ms");
    assert_answered_during(&s);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let s = run_hostile("memory = \"32MiB\"", "hostile_hog", json!({}));
    assert_outcome(
        &s,
        "memory_limit_exceeded",
        "memory limit of 32 MiB exceeded",
    );
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let s = run_hostile("wasm_stack = \"256KiB\"", "hostile_recurse", json!({}));
    assert_outcome(&s, "stack_overflow", "stack overflow");
}

#[test]
fn panic_is_a_trap_that_says_why() {
    let s = run_hostile("", "hostile_panic", json!({}));
    // The panic's message (and where), not the `unreachable` it ended in.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/fixtures/hostile/src/lib.rs");
    let line = std::fs::read_to_string(&source)
        .unwrap()
        .lines()
        .position(|l| l.contains("panic!(\"the fixture panicked on purpose\")"))
        .unwrap()
        + 1;
    let h = s.call("hostile");
    assert_eq!(outcome(h), "trapped", "{h}");
    // The source path is where the fixture was built: a build cache shared between checkouts
    // may hold one built in another, so only the path inside the repository is compared.
    let text = h["text"].as_str().unwrap();
    assert!(
        text.starts_with("tool trapped: the tool panicked: /")
            && text.ends_with(&format!(
                "/tests/fixtures/hostile/src/lib.rs:{line}:5: the fixture panicked on purpose"
            )),
        "{h}"
    );
    // It also went to the captured stderr, which is logged.
    assert!(
        s.stderr.contains("the fixture panicked on purpose"),
        "{}",
        s.stderr
    );
}

#[test]
fn oversized_output_is_refused() {
    let s = run_hostile(
        "max_output_bytes = \"64KiB\"",
        "hostile_big_output",
        json!({"bytes": 70_000}),
    );
    assert_outcome(&s, "output_too_large", "output larger than 64 KiB");
}

#[test]
fn oversized_arguments_are_refused_before_the_sandbox() {
    let s = run_hostile(
        "max_argument_bytes = \"1KiB\"",
        "fixture_echo",
        json!({"message": "x".repeat(2000)}),
    );
    assert_outcome(&s, "arguments_too_large", "arguments larger than 1 KiB");
}

#[test]
fn stdout_flood_is_capped_and_the_call_completes() {
    let s = run_hostile(
        "capture_bytes = \"4KiB\"",
        "hostile_flood",
        json!({"bytes": 4_000_000}),
    );
    let h = s.call("hostile");
    assert_eq!(h["is_error"], false, "{h}");
    assert_eq!(h["text"], "flooded 4000768 bytes");
    // Both streams kept 4 KiB for the log and discarded the rest; none of it reached the client.
    let discarded = format!("kept=4096 discarded={}", 4_000_768 - 4096);
    assert_eq!(
        s.stderr.matches(&discarded).count(),
        2,
        "{}",
        &s.stderr[s.stderr.len().saturating_sub(3000)..]
    );
}

#[test]
fn a_tool_error_is_a_tool_result() {
    let s = run_hostile("", "fixture_fails", json!({}));
    assert_outcome(&s, "tool_failed", "the fixture reports a failure");
}

#[test]
fn tools_list_is_answered_while_a_runaway_call_runs() {
    let dir = TempDir::new("list-during");
    let config = hostile_config(&dir, "fuel = 1_000_000_000_000_000\ntimeout = \"2s\"");
    let plan = json!({"calls": [
        {"id": "hostile", "tool": "hostile_spin", "args": {}},
        {"id": "list", "op": "list", "delay_ms": 50}
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(outcome(s.call("hostile")), "timed_out");
    assert!(
        s.call("list")["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("fixture_echo"))
    );
    assert!(
        s.call("list")["finished_ms"].as_f64().unwrap()
            < s.call("hostile")["finished_ms"].as_f64().unwrap()
    );
}

#[test]
fn per_component_in_flight_limit_answers_busy() {
    let dir = TempDir::new("busy-tool");
    let config = hostile_config(&dir, "max_in_flight = 1\ntimeout = \"10s\"");
    let plan = json!({"calls": [
        {"id": "first", "tool": "hostile_sleep", "args": {"ms": 1500}},
        {"id": "second", "tool": "fixture_echo", "args": {"message": "x"}, "delay_ms": 300}
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(s.call("first")["text"], "slept 1500 ms");
    let second = s.call("second");
    assert_eq!(outcome(second), "tool_busy");
    assert_eq!(
        second["text"],
        "tool fixture_echo busy: 1 calls of component hostile already in flight, try again shortly"
    );
}

#[test]
fn server_in_flight_limit_answers_busy() {
    let dir = TempDir::new("busy-server");
    let config = common::hostile_config_with_server(&dir, "max_in_flight = 1", "");
    let plan = json!({"calls": [
        {"id": "first", "tool": "hostile_sleep", "args": {"ms": 1500}},
        {"id": "second", "tool": "fixture_echo", "args": {"message": "x"}, "delay_ms": 300}
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(s.call("first")["text"], "slept 1500 ms");
    assert_eq!(outcome(s.call("second")), "server_busy");
    assert_eq!(
        s.call("second")["text"],
        "server busy: 1 calls already in flight, try again shortly"
    );
}

#[test]
fn one_principal_cannot_take_every_server_slot() {
    // Alice holds her two slots with slow calls; her third call is refused by name, while
    // Bob, on the same server with slots to spare, is served.
    use sha2::Digest;
    let (alice, bob) = ("ak-alice-0123456789abcdef", "ak-bob-0123456789abcdef");
    let digest = |k: &str| hex::encode(sha2::Sha256::digest(k));
    let dir = TempDir::new("busy-principal");
    let config = dir.config(&format!(
        "[server]\nmax_in_flight = 4\nmax_in_flight_per_principal = 2\n[auth]\nmode = \"api-key\"\n\
         [[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{}\"\nroles = [\"users\"]\n\
         [[auth.api_keys]]\nprincipal = \"bob\"\nsha256 = \"{}\"\nroles = [\"users\"]\n\
         [roles]\nusers = [\"people\"]\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\nroles = [\"users\"]\n\
         [tool.limits]\ntimeout = \"10s\"\n",
        digest(alice),
        digest(bob),
        common::hostile_wasm().display()
    ));
    let server = HttpServer::start(&config);
    let call = |addr: &str, key: &str, tool: &str, args: Value| {
        let auth = format!("Bearer {key}");
        let r = common::raw_mcp(
            addr,
            "tools/call",
            json!({"name": tool, "arguments": args}),
            &[("Authorization", &auth)],
        )
        .expect("an answer");
        assert_eq!(r.status, 200, "{r:?}");
        common::sse_json(&r.body)["result"].clone()
    };
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                call(&addr, alice, "hostile_sleep", json!({"ms": 3000}))["content"][0]["text"]
                    .clone()
            })
        })
        .collect();
    // Both slow calls are running once `ctl calls` lists them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, out) = common::ctl(&server, &["calls"]);
        if out.matches("hostile_sleep").count() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let third = call(&server.addr, alice, "fixture_echo", json!({"message": "x"}));
    assert_eq!(
        third["_meta"]["airlock/outcome"], "principal_busy",
        "{third}"
    );
    assert_eq!(
        third["content"][0]["text"],
        "principal busy: alice already has 2 calls in flight (max_in_flight_per_principal), try again shortly"
    );
    let other = call(&server.addr, bob, "fixture_echo", json!({"message": "bob"}));
    assert_eq!(other["content"][0]["text"], "bob", "{other}");
    for s in slow {
        assert_eq!(s.join().unwrap(), "slept 3000 ms");
    }
    // Her slots are hers again.
    let after = call(
        &server.addr,
        alice,
        "fixture_echo",
        json!({"message": "again"}),
    );
    assert_eq!(after["content"][0]["text"], "again", "{after}");
}

#[test]
fn hostile_calls_over_http_get_the_same_outcomes() {
    let dir = TempDir::new("hostile-http");
    let config = hostile_config(&dir, "memory = \"32MiB\"");
    let server = HttpServer::start(&config);
    let plan = json!({"calls": [
        {"id": "spin", "tool": "hostile_spin", "args": {}},
        {"id": "hog", "tool": "hostile_hog", "args": {}},
        {"id": "recurse", "tool": "hostile_recurse", "args": {}},
        {"id": "echo", "tool": "fixture_echo", "args": {"message": "fine"}, "delay_ms": 30}
    ]});
    for mode in ["legacy", "auto"] {
        let s = client(mode, Transport::Http(&server.url), plan.clone());
        assert_eq!(outcome(s.call("spin")), "cpu_budget_exhausted");
        assert_eq!(s.call("hog")["text"], "memory limit of 32 MiB exceeded");
        assert_eq!(outcome(s.call("recurse")), "stack_overflow");
        assert_eq!(s.call("echo")["text"], "fine");
    }
}

#[test]
fn nothing_ambient_is_reachable() {
    let s = run_hostile("", "fixture_ambient", json!({}));
    let a = &s.call("hostile")["structured"];
    assert_eq!(a["env"], json!([]), "{a}");
    assert_eq!(a["args"], json!([]), "{a}");
    // No preopened directory: every path is outside the (empty) filesystem.
    assert_eq!(a["read_root"], "denied: NotFound", "{a}");
    assert_eq!(a["read_etc_passwd"], "denied: NotFound", "{a}");
    assert_eq!(a["write_tmp"], "denied: NotFound", "{a}");
    // No name lookup (TCP without a grant is a policy denial: see tests/grants_net.rs).
    assert_eq!(a["name_lookup"], "denied: Uncategorized", "{a}");
}

#[test]
fn control_characters_from_tools_and_clients_never_reach_the_log_raw() {
    // A newline that would forge a log line, and terminal escape sequences (7-bit and C1).
    let forged = "x\n2026-12-01T00:00:00.000000Z  INFO airlock::call: forged\u{1b}[2J\u{9b}31m";
    for format in ["text", "json"] {
        let dir = TempDir::new(&format!("log-injection-{format}"));
        // The content checks would refuse the escapes on the way in and strip them on the way
        // out: off, so that the log's own escaping is what is tested.
        let config = hostile_config(
            &dir,
            "[tool.safety]\ninput_encoding = \"off\"\ninvisible = \"off\"",
        );
        let server = HttpServer::start_with_args(
            &config,
            &[],
            &common::fresh_audit_dir(),
            &["--log-format", format],
        );
        // Legacy: the 2026-07-28 era would carry the tool's name in an HTTP header, where the
        // client itself refuses a newline.
        let s = client(
            "legacy",
            Transport::Http(&server.url),
            json!({"calls": [
                {"id": "fails", "tool": "fixture_fails", "args": {"message": forged}},
                {"id": "unknown", "tool": forged, "args": {}},
                {"id": "echo", "tool": "fixture_echo", "args": {"message": "fine"}}
            ]}),
        );
        assert_eq!(outcome(s.call("fails")), "tool_failed", "{}", s.report);
        assert_eq!(s.call("echo")["text"], "fine");
        let log = server.wait_for_log_count("call failed", 2);
        assert!(
            log.contains("forged"),
            "the tool's text is not logged at all:\n{log}"
        );
        assert!(
            !log.lines()
                .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")),
            "a forged line:\n{log}"
        );
        assert!(!log.contains('\u{1b}'), "a raw escape:\n{log}");
        assert!(!log.contains('\u{9b}'), "a raw C1 control:\n{log}");
        if format == "json" {
            for line in log.lines().filter(|l| l.starts_with('{')) {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            }
        }
    }
}

#[test]
fn every_channel_a_tool_makes_the_host_carry_is_bounded() {
    // Log and progress floods, a huge error, a huge question and a flood of empty items: each
    // ends (or is cut) with its named outcome while a benign call goes on.
    let dir = TempDir::new("channels");
    let config = hostile_config(
        &dir,
        "max_message_volume = \"64KiB\"\nmax_error_bytes = \"1KiB\"\nmax_question_bytes = \"1KiB\"\nmax_output_items = 100\ntimeout = \"30s\"",
    );
    let flood = |channel: &str, size: u64, count: u64| json!({"channel": channel, "size": size, "count": count});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({
            "calls": [
                {"id": "log", "tool": "hostile_channel_flood", "args": flood("log", 32 << 10, 1 << 20)},
                {"id": "progress", "tool": "hostile_channel_flood", "args": flood("progress", 1 << 10, 1 << 24), "progress": true},
                {"id": "tiny", "tool": "hostile_channel_flood", "args": flood("log", 0, 1 << 24)},
                {"id": "error", "tool": "hostile_channel_flood", "args": flood("error", 8 << 20, 0)},
                {"id": "confirm", "tool": "hostile_channel_flood", "args": flood("confirm", 100_000, 0)},
                {"id": "items", "tool": "hostile_channel_flood", "args": flood("items", 400_000, 0)},
                {"id": "elicit", "tool": "hostile_channel_flood", "args": flood("elicit", 100_000, 0)},
                {"id": "some_items", "tool": "hostile_channel_flood", "args": flood("items", 101, 0)},
                {"id": "enough_items", "tool": "hostile_channel_flood", "args": flood("items", 100, 0)},
                {"id": "during", "tool": "fixture_echo", "args": {"message": "during"}, "delay_ms": 30}
            ],
            "then": [{"id": "after", "tool": "fixture_echo", "args": {"message": "after"}}],
            "elicit": [{"action": "accept", "content": {"approve": true}}]
        }),
    );
    for id in ["log", "progress", "tiny"] {
        let c = s.call(id);
        assert_eq!(outcome(c), "message_limit_exceeded", "{id}: {c}");
        assert_eq!(
            c["text"], "the tool sent more than 64 KiB of log and progress messages",
            "{id}"
        );
    }
    // The client got no more than the budget's worth of progress.
    let progress = s.call("progress")["progress"].as_array().unwrap().len();
    assert!(progress <= 64, "{progress} progress messages");
    let error = s.call("error");
    assert_eq!(outcome(error), "tool_failed", "{error}");
    let text = error["text"].as_str().unwrap();
    assert!(
        text.len() < 1200 && text.ends_with("bytes not shown)"),
        "{} bytes",
        text.len()
    );
    let confirm = s.call("confirm");
    assert_eq!(outcome(confirm), "question_too_large", "{confirm}");
    assert_eq!(confirm["text"], "the tool's question is larger than 1 KiB");
    let elicit = s.call("elicit");
    assert_eq!(outcome(elicit), "question_too_large", "{elicit}");
    assert_eq!(elicit["text"], "the tool's question is larger than 1 KiB");
    // One item past max_output_items is refused; exactly the cap is a result.
    let some = s.call("some_items");
    assert_eq!(outcome(some), "output_too_large", "{some}");
    assert_eq!(some["text"], "output has more than 100 content items");
    let enough = s.call("enough_items");
    assert_eq!(
        enough["content"].as_array().map(Vec::len),
        Some(100),
        "{enough}"
    );
    // 400,000 items are more than the host holds for one result: stopped while copied.
    let items = s.call("items");
    assert_eq!(outcome(items), "output_too_large", "{items}");
    assert_eq!(
        items["text"],
        "the tool handed the host more at once than its limits allow (16 × max_output_bytes, at least 16 MiB)"
    );
    assert_eq!(s.call("during")["text"], "during", "{}", s.report);
    assert_eq!(s.call("after")["text"], "after", "{}", s.report);
    // Airlock's own log stayed small: messages are cut, and the floods stopped early.
    assert!(
        s.stderr.len() < 512 << 10,
        "{} bytes of log",
        s.stderr.len()
    );
    // The audit log holds the cut error, not 8 MiB of it.
    let audit = common::audit_files(s.audit_dir.as_ref().unwrap())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum::<u64>();
    assert!(audit < 256 << 10, "{audit} bytes of audit log");
}

#[test]
fn what_a_component_declares_is_capped_at_load() {
    let dir = TempDir::new("describe-caps");
    let state = common::shared_state_dir();
    for (limits, problem) in [
        ("max_tools = 3", "tools, more than max_tools = 3"),
        (
            "max_description_bytes = 64",
            "more than max_description_bytes = 64 bytes",
        ),
        (
            "max_schema_bytes = 64",
            "more than max_schema_bytes = 64 bytes",
        ),
    ] {
        let config = hostile_config(&dir, limits);
        let (ok, err) = common::check(&config, &state);
        assert!(!ok, "{limits}");
        assert!(err.contains(problem), "{limits}: {err}");
    }
}

#[test]
fn a_call_holds_a_bounded_number_of_outgoing_requests() {
    // Each request in flight holds a connection of the host's: the seventeenth at once ends
    // the call; sixteen are served.
    let upstream = common::TestHttpServer::start();
    let authority = format!("127.0.0.1:{}", upstream.port);
    let dir = TempDir::new("http-in-flight");
    let config = hostile_config(
        &dir,
        &format!("\n[tool.grants]\nnet = [\"http://{authority}\"]"),
    );
    let burst =
        |count: u32| json!({"channel": "http", "size": 0, "count": count, "authority": authority});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [
            {"id": "sixteen", "tool": "hostile_channel_flood", "args": burst(16)},
            {"id": "forty", "tool": "hostile_channel_flood", "args": burst(40), "delay_ms": 50}
        ]}),
    );
    assert_eq!(
        s.call("sixteen")["text"],
        "16 of 16 answered",
        "{}",
        s.report
    );
    let forty = s.call("forty");
    assert_eq!(outcome(forty), "blocked_by_policy", "{forty}");
    assert_eq!(
        forty["text"],
        "blocked by policy: more than 16 outgoing HTTP requests at once in one call are not granted (max_requests_in_flight) to tool hostile_channel_flood — do not retry by another route"
    );
    assert!(
        upstream.seen().len() <= 32,
        "{} requests reached the server",
        upstream.seen().len()
    );
}

#[test]
fn a_call_holds_a_bounded_number_of_sockets() {
    // Each open socket holds a descriptor of the host's: past 16 at once (the default), the
    // call ends. Sockets created and dropped one after another never add up.
    let dir = TempDir::new("socket-cap");
    let config = hostile_config(&dir, "\n[tool.grants]\ntcp = [\"127.0.0.1:9\"]");
    let sockets =
        |channel: &str, count: u32| json!({"channel": channel, "size": 0, "count": count});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [
            {"id": "some", "tool": "hostile_channel_flood", "args": sockets("sockets", 16)},
            {"id": "churn", "tool": "hostile_channel_flood", "args": sockets("sockets_churn", 500)},
            {"id": "many", "tool": "hostile_channel_flood", "args": sockets("sockets", 1000)},
            {"id": "benign", "tool": "fixture_echo", "args": {"message": "still here"}}
        ]}),
    );
    assert_eq!(s.call("some")["text"], "16 sockets created", "{}", s.report);
    assert_eq!(
        s.call("churn")["text"],
        "500 sockets created",
        "{}",
        s.report
    );
    let many = s.call("many");
    assert_eq!(outcome(many), "blocked_by_policy", "{many}");
    assert_eq!(
        many["text"],
        "blocked by policy: more than 16 open TCP sockets at once in one call are not granted (max_open_sockets) to tool hostile_channel_flood — do not retry by another route"
    );
    assert_eq!(s.call("benign")["text"], "still here");
}

#[test]
fn a_call_holds_a_bounded_number_of_open_files() {
    // Each open file holds a descriptor of the host's: past `max_open_files` at once, the call
    // ends; a call within it is served.
    let dir = TempDir::new("file-cap");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::write(dir.0.join("data/f"), "x").unwrap();
    let config = hostile_config(
        &dir,
        "max_open_files = 8\n[tool.grants]\nfs = [{ host = \"data\", guest = \"/data\", mode = \"ro\" }]",
    );
    let files =
        |count: u32| json!({"channel": "files", "size": 0, "count": count, "path": "/data/f"});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [
            {"id": "eight", "tool": "hostile_channel_flood", "args": files(8)},
            {"id": "many", "tool": "hostile_channel_flood", "args": files(100_000)},
            {"id": "again", "tool": "hostile_channel_flood", "args": files(8)},
            {"id": "streams", "tool": "hostile_channel_flood",
             "args": {"channel": "file_streams", "size": 0, "count": 1000, "path": "/data/f"}}
        ]}),
    );
    assert_eq!(s.call("eight")["text"], "8 files open", "{}", s.report);
    let many = s.call("many");
    assert_eq!(outcome(many), "blocked_by_policy", "{many}");
    assert_eq!(
        many["text"],
        "blocked by policy: more than 8 open files at once in one call are not granted (max_open_files) to tool hostile_channel_flood — do not retry by another route"
    );
    assert_eq!(s.call("again")["text"], "8 files open", "{}", s.report);
    // A stream keeps its file open after the descriptor is gone: it still counts.
    let streams = s.call("streams");
    assert_eq!(outcome(streams), "blocked_by_policy", "{streams}");
    assert_eq!(streams["text"], many["text"]);
}

/// The size of everything under `dir`, as `du --apparent-size` would count file data.
fn data_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                data_under(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

#[test]
fn writes_past_a_grants_quota_end_the_call_on_every_path() {
    // Streams (std's writes), `descriptor.write` at offsets and `set-size` are all charged
    // before they happen: each flood ends `quota_exceeded`, and the directory never holds more
    // than the quota. A write within it is served, before and after.
    // One grant per path, so that each flood meets the quota in its own way.
    let dir = TempDir::new("quota");
    for d in ["s", "a", "p"] {
        std::fs::create_dir_all(dir.0.join(d)).unwrap();
    }
    let config = hostile_config(
        &dir,
        "\n[tool.grants]\nfs = [{ host = \"s\", guest = \"/s\", mode = \"rw\", quota = \"64KiB\" },\n\
         { host = \"a\", guest = \"/a\", mode = \"rw\", quota = \"64KiB\" },\n\
         { host = \"p\", guest = \"/p\", mode = \"rw\", quota = \"64KiB\" }]",
    );
    let disk = |channel: &str, path: &str, size: u64, count: u64| json!({"channel": channel, "size": size, "count": count, "path": path});
    let call =
        |id: &str, args: Value| json!({"id": id, "tool": "hostile_channel_flood", "args": args});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [], "then": [
            call("small", disk("disk", "/s/small", 1000, 10)),
            call("stream", disk("disk", "/s/stream", 4096, 1000)),
            call("at", disk("disk_at", "/a/at", 4096, 1000)),
            call("sparse", disk("sparse", "/p/sparse", 0, 1 << 40)),
            call("small2", disk("disk_at", "/p/small2", 1000, 1)),
            {"id": "benign", "tool": "fixture_echo", "args": {"message": "still here"}}
        ]}),
    );
    assert_eq!(s.call("small")["text"], "wrote 10000 bytes", "{}", s.report);
    for (id, grant) in [("stream", "/s"), ("at", "/a"), ("sparse", "/p")] {
        let c = s.call(id);
        assert_eq!(outcome(c), "quota_exceeded", "{id}: {c}");
        assert_eq!(
            c["text"],
            format!("grant fs:{grant} is over its quota of 64 KiB: the write was refused"),
            "{id}"
        );
    }
    assert_eq!(s.call("small2")["text"], "wrote 1000 bytes", "{}", s.report);
    assert_eq!(s.call("benign")["text"], "still here");
    for d in ["s", "a", "p"] {
        let held = data_under(&dir.0.join(d));
        assert!(held <= 64 * 1024, "/{d} holds {held} bytes");
    }
    assert_eq!(
        std::fs::metadata(dir.0.join("p/sparse")).unwrap().len(),
        0,
        "the stretch was refused"
    );
}

#[test]
fn http_bodies_the_host_carries_are_charged_to_the_calls_fuel() {
    // Draining a response costs the guest almost nothing per byte; the host carries every byte
    // (4 fuel each). 8 MiB is past a budget of 10 million fuel that the guest's own work would
    // fit in many times; 64 KiB is well inside it.
    let upstream = common::TestHttpServer::start();
    let authority = format!("127.0.0.1:{}", upstream.port);
    let dir = TempDir::new("http-charge");
    let config = hostile_config(
        &dir,
        &format!("fuel = 10_000_000\n[tool.grants]\nnet = [\"http://{authority}\"]"),
    );
    let drain = |count: u64| json!({"channel": "http_drain", "size": 0, "count": count, "authority": authority});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [], "then": [
            {"id": "small", "tool": "hostile_channel_flood", "args": drain(65_536)},
            {"id": "big", "tool": "hostile_channel_flood", "args": drain(8 << 20)},
            {"id": "benign", "tool": "fixture_echo", "args": {"message": "still here"}}
        ]}),
    );
    assert_eq!(
        s.call("small")["text"],
        "drained 65536 bytes",
        "{}",
        s.report
    );
    let big = s.call("big");
    assert_eq!(outcome(big), "cpu_budget_exhausted", "{big}");
    assert_eq!(s.call("benign")["text"], "still here");
}

#[test]
fn log_messages_the_host_handles_are_charged_to_the_calls_fuel() {
    // With room for 64 MiB of messages, the budget is the fuel: each 64 KiB message costs the
    // host 4 fuel a byte, so a thousand of them are past 10 million fuel, though the guest's
    // own work (passing one string again and again) fits in it many times.
    let dir = TempDir::new("log-charge");
    let config = hostile_config(
        &dir,
        "fuel = 10_000_000\nmax_message_volume = \"256MiB\"\nmax_message_bytes = \"64KiB\"",
    );
    let flood = |count: u64| json!({"channel": "log", "size": 65_536, "count": count});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [], "then": [
            {"id": "few", "tool": "hostile_channel_flood", "args": flood(4)},
            {"id": "many", "tool": "hostile_channel_flood", "args": flood(1000)}
        ]}),
    );
    assert_eq!(s.call("few")["text"], "sent 4 on log", "{}", s.report);
    let many = s.call("many");
    assert_eq!(outcome(many), "cpu_budget_exhausted", "{many}");
}

#[test]
fn stdout_and_random_bytes_the_host_serves_are_charged_to_the_calls_fuel() {
    // A tool with no grants at all can make the host copy its stdout or draw random bytes
    // in a loop; the guest's own work per 64 KiB is a few hundred instructions, the host's
    // is charged by the byte, so 64 MiB of either is past 50 million fuel and 64 KiB is not.
    let dir = TempDir::new("wasi-charge");
    let config = hostile_config(
        &dir,
        "fuel = 50_000_000
capture_bytes = \"4KiB\"",
    );
    let stdout = |count: u64| json!({"channel": "stdout", "size": 65_536, "count": count});
    let random = |size: u64| json!({"channel": "random_loop", "size": size, "count": 65_536});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [
            {"id": "stdout_small", "tool": "hostile_channel_flood", "args": stdout(1)},
            {"id": "stdout_big", "tool": "hostile_channel_flood", "args": stdout(1024)},
            {"id": "random_small", "tool": "hostile_channel_flood", "args": random(1)},
            {"id": "random_big", "tool": "hostile_channel_flood", "args": random(1024)},
            {"id": "during", "tool": "fixture_echo", "args": {"message": "during"}, "delay_ms": 30}
        ], "then": [{"id": "after", "tool": "fixture_echo", "args": {"message": "after"}}]}),
    );
    assert_eq!(
        s.call("stdout_small")["text"],
        "wrote 1 times",
        "{}",
        s.report
    );
    assert_eq!(s.call("random_small")["text"], "got 65536 random bytes");
    for id in ["stdout_big", "random_big"] {
        let c = s.call(id);
        assert_eq!(outcome(c), "cpu_budget_exhausted", "{id}: {c}");
    }
    assert_eq!(s.call("during")["text"], "during");
    assert_eq!(s.call("after")["text"], "after");
}

#[test]
fn a_call_holds_a_bounded_number_of_handles_of_any_kind() {
    // Every handle (here: timers) is an entry in the host's table, host memory: past
    // `max_handles` the call ends.
    let dir = TempDir::new("handle-cap");
    let config = hostile_config(&dir, "max_handles = 128");
    let pollables = |count: u64| json!({"channel": "pollables", "size": 0, "count": count});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [], "then": [
            {"id": "some", "tool": "hostile_channel_flood", "args": pollables(64)},
            {"id": "many", "tool": "hostile_channel_flood", "args": pollables(1_000_000)},
            {"id": "benign", "tool": "fixture_echo", "args": {"message": "still here"}}
        ]}),
    );
    assert_eq!(s.call("some")["text"], "64 pollables held", "{}", s.report);
    let many = s.call("many");
    assert_eq!(outcome(many), "trapped", "{many}");
    assert_eq!(
        many["text"],
        "tool trapped: the call holds more handles at once than its limit (max_handles)"
    );
    assert_eq!(s.call("benign")["text"], "still here");
}

#[test]
fn a_random_request_is_bounded() {
    // wasmtime-wasi would make up to 64 MiB of random bytes in one host step, unpreempted:
    // past `max_random_bytes` the call ends instead.
    let dir = TempDir::new("random-cap");
    let config = hostile_config(&dir, "max_random_bytes = \"4KiB\"");
    let random = |count: u64| json!({"channel": "random", "size": 0, "count": count});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [], "then": [
            {"id": "some", "tool": "hostile_channel_flood", "args": random(4096)},
            {"id": "many", "tool": "hostile_channel_flood", "args": random(4097)},
            {"id": "huge", "tool": "hostile_channel_flood", "args": random(64 << 20)},
            {"id": "benign", "tool": "fixture_echo", "args": {"message": "still here"}}
        ]}),
    );
    assert_eq!(
        s.call("some")["text"],
        "got 4096 random bytes",
        "{}",
        s.report
    );
    for id in ["many", "huge"] {
        let c = s.call(id);
        assert_eq!(outcome(c), "trapped", "{id}: {c}");
        assert_eq!(
            c["text"],
            "tool trapped: the tool asked for more random bytes at once than its limit (max_random_bytes)"
        );
    }
    assert_eq!(s.call("benign")["text"], "still here");
}

#[test]
fn signals_and_questions_a_component_gives_are_bounded() {
    // A flood of list-changed signals (each would reach every listening session), more
    // requests in one `ask` than a call may ask in all, one key twice, and updates of a
    // resource the component does not serve: each ends or is refused by name.
    let dir = TempDir::new("signals");
    let config = hostile_config(&dir, "max_signals = 8");
    let flood = |channel: &str, size: u64, count: u64| json!({"channel": channel, "size": size, "count": count});
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({
            "calls": [
                {"id": "signals", "tool": "hostile_channel_flood", "args": flood("signals", 0, 1 << 24)},
                {"id": "few", "tool": "hostile_channel_flood", "args": flood("signals", 0, 8)},
                {"id": "many", "tool": "hostile_channel_flood", "args": flood("ask", 0, 20)},
                {"id": "twice", "tool": "hostile_channel_flood", "args": flood("ask", 1, 2)},
                {"id": "updates", "tool": "hostile_channel_flood",
                 "args": {"channel": "updates", "size": 0, "count": 3, "path": "test://not-mine"}},
                {"id": "during", "tool": "fixture_echo", "args": {"message": "during"}, "delay_ms": 30}
            ],
            "then": [{"id": "after", "tool": "fixture_echo", "args": {"message": "after"}}]
        }),
    );
    let signals = s.call("signals");
    assert_eq!(outcome(signals), "signal_limit_exceeded", "{signals}");
    assert_eq!(
        signals["text"],
        "the component gave more than 8 signals in one request"
    );
    assert_eq!(s.call("few")["text"], "8 signals given", "{}", s.report);
    let many = s.call("many");
    assert_eq!(outcome(many), "too_many_questions", "{many}");
    assert_eq!(
        many["text"],
        "tool hostile_channel_flood asked more than 16 questions in one call: denied"
    );
    let twice = s.call("twice");
    assert_eq!(outcome(twice), "tool_failed", "{twice}");
    assert_eq!(
        twice["text"],
        "cannot ask the client: the key \"same\" is used twice"
    );
    // An update of a resource the component does not serve goes nowhere, and says so.
    assert_eq!(s.call("updates")["text"], "3 updates given", "{}", s.report);
    assert!(
        s.stderr
            .contains("signal ignored: hostile does not serve the resource test://not-mine"),
        "{}",
        s.stderr
    );
    assert_eq!(s.call("during")["text"], "during", "{}", s.report);
    assert_eq!(s.call("after")["text"], "after", "{}", s.report);
}

#[test]
fn arguments_and_structured_output_are_checked_against_the_tools_schemas() {
    // The host checks every call's arguments against the tool's input schema before approval
    // and execution, and structured output against its output schema: the component's own
    // checks are not what keeps a mismatch out.
    let dir = TempDir::new("schemas");
    let config = hostile_config(&dir, "");
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({
            "then": [
                {"id": "missing", "tool": "fixture_echo", "args": {}},
                {"id": "wrong_type", "tool": "fixture_echo", "args": {"message": 42}},
                {"id": "fits", "tool": "fixture_shape", "args": {"wrong": false}},
                {"id": "misfit", "tool": "fixture_shape", "args": {"wrong": true}},
                {"id": "after", "tool": "fixture_echo", "args": {"message": "after"}}
            ]
        }),
    );
    let missing = s.call("missing");
    assert_eq!(outcome(missing), "invalid_arguments", "{missing}");
    assert!(
        missing["text"]
            .as_str()
            .unwrap()
            .starts_with("invalid arguments: the arguments do not match the schema at /: "),
        "{missing}"
    );
    let wrong = s.call("wrong_type");
    assert_eq!(outcome(wrong), "invalid_arguments", "{wrong}");
    let text = wrong["text"].as_str().unwrap();
    assert!(
        text.starts_with("invalid arguments: the arguments do not match the schema at /message: "),
        "{wrong}"
    );
    // The value itself is not quoted back.
    assert!(!text.contains("42"), "{text}");
    assert_eq!(
        s.call("fits")["structured"],
        json!({"count": 3}),
        "{}",
        s.report
    );
    let misfit = s.call("misfit");
    assert_eq!(outcome(misfit), "invalid_output", "{misfit}");
    assert!(
        misfit["text"].as_str().unwrap().starts_with(
            "tool returned malformed output: the structured content does not match the schema at /count: "
        ),
        "{misfit}"
    );
    assert_eq!(s.call("after")["text"], "after", "{}", s.report);
}

#[test]
fn nested_calls_count_against_their_principals_share() {
    // A share of one: the top-level call holds it, so its nested call is refused by name (as
    // `server_busy` would refuse it), and the caller sees the outcome. With a share of two the
    // same nesting runs. Without this, a principal whose calls nest would hold (1 + max_depth)
    // times its share of the server's slots.
    for (share, expected) in [
        (
            1,
            "call 1 refused: principal_busy: principal busy: local already has 1 calls in flight",
        ),
        (2, "hi"),
    ] {
        let dir = TempDir::new("nested-share");
        let config = common::hostile_config_with_server(
            &dir,
            &format!("max_in_flight = 4\nmax_in_flight_per_principal = {share}"),
            "",
        );
        let s = client(
            "auto",
            Transport::Stdio(Some(&config)),
            json!({"calls": [{"id": "nest", "tool": "fixture_nest",
                "args": {"tool": "fixture_echo", "arguments": {"message": "hi"}}}]}),
        );
        let text = s.call("nest")["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            text.starts_with(expected),
            "share {share}: {text}\n{}",
            s.report
        );
    }
}
