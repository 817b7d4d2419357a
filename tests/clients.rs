//! The real binary driven by the real Python MCP client (mcp 2.3.0), over stdio and Streamable
//! HTTP, in the legacy (initialize) and the 2026-07-28 (auto) mode.

mod common;

use common::{HttpServer, Session, TempDir, Transport, client, hostile_config, outcome};
use serde_json::{Value, json};

fn example_plan() -> Value {
    json!({
        "list": true,
        "calls": [
            {"id": "stats", "tool": "text_stats", "args": {"text": "hello world\nbye"}},
            {"id": "slug", "tool": "text_transform", "args": {"text": "Hello, World!", "op": "slug"}},
            {"id": "replace", "tool": "text_replace", "args": {"text": "a-b-c", "find": "-", "replace": "+", "limit": 1}},
            {"id": "query", "tool": "json_query", "args": {"document": {"a": [1, {"b": "x"}]}, "pointer": "/a/1/b"}},
            {"id": "format", "tool": "json_format", "args": {"text": "{\"b\": 1, \"a\": [1, 2]}", "compact": true}},
            {"id": "patch", "tool": "json_merge_patch", "args": {"document": {"a": 1, "b": 2}, "patch": {"b": null, "c": 3}}},
            {"id": "add", "tool": "time_add", "args": {"timestamp": "2026-11-25T10:00:00Z", "duration": "1d2h30m"}},
            {"id": "diff", "tool": "time_diff", "args": {"from": "2026-11-25T10:00:00Z", "to": "2026-11-26T12:30:05Z"}},
            {"id": "now", "tool": "time_now", "args": {}},
            {"id": "bad", "tool": "time_add", "args": {"timestamp": "2026-11-25T10:00:00Z", "duration": "soon"}},
            {"id": "unknown", "tool": "no_such_tool", "args": {}}
        ]
    })
}

fn check_examples(s: &Session) {
    let tools = s.report["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "text_stats",
            "text_transform",
            "text_replace",
            "json_query",
            "json_format",
            "json_merge_patch",
            "time_add",
            "time_diff",
            "time_now"
        ]
    );
    for t in tools {
        assert!(!t["description"].as_str().unwrap().is_empty());
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
    }
    let stats = tools.iter().find(|t| t["name"] == "text_stats").unwrap();
    assert_eq!(stats["inputSchema"]["required"], json!(["text"]));
    assert_eq!(stats["outputSchema"]["type"], "object");

    assert_eq!(
        s.call("stats")["structured"],
        json!({"bytes": 15, "chars": 15, "words": 3, "lines": 2})
    );
    assert_eq!(s.call("slug")["text"], "hello-world");
    assert_eq!(
        s.call("replace")["structured"],
        json!({"text": "a+b-c", "replacements": 1})
    );
    assert_eq!(s.call("query")["structured"], json!({"value": "x"}));
    assert_eq!(s.call("format")["text"], "{\"a\":[1,2],\"b\":1}");
    assert_eq!(
        s.call("patch")["structured"],
        json!({"document": {"a": 1, "c": 3}})
    );
    assert_eq!(s.call("add")["text"], "2026-11-26T12:30:00Z");
    assert_eq!(
        s.call("diff")["structured"],
        json!({"seconds": 95405, "human": "1d 2h 30m 5s"})
    );
    let now = &s.call("now")["structured"];
    assert!(now["utc"].as_str().unwrap().ends_with('Z'), "{now}");
    assert!(
        now["unix_seconds"].as_i64().unwrap() > 1_700_000_000,
        "{now}"
    );
    let bad = s.call("bad");
    assert_eq!(bad["is_error"], true);
    assert_eq!(outcome(bad), "invalid_arguments");
    assert_eq!(
        bad["text"],
        "invalid arguments: `duration` must look like `1d2h30m`, `-90s` or `250ms`: soon"
    );
    // An unknown tool is a protocol error, not a tool result.
    assert!(
        s.call("unknown")["error"]
            .as_str()
            .unwrap()
            .contains("unknown tool `no_such_tool`"),
        "{}",
        s.call("unknown")
    );
    for c in s.report["calls"].as_object().unwrap().values() {
        assert!(c.get("cancelled").is_none(), "{c}");
    }
}

fn check_protocol(s: &Session, mode: &str) {
    let expected = if mode == "legacy" {
        "2025-11-25"
    } else {
        "2026-07-28"
    };
    assert_eq!(s.report["protocol"], expected);
}

#[test]
fn stdio_serves_the_bundled_examples_in_both_eras() {
    for mode in ["legacy", "auto"] {
        let s = client(mode, Transport::Stdio(None), example_plan());
        check_protocol(&s, mode);
        check_examples(&s);
    }
}

#[test]
fn http_serves_the_bundled_examples_in_both_eras() {
    let dir = TempDir::new("http-examples");
    let config = dir.config(airlock::config::bundled::DEFAULT_CONFIG);
    let server = HttpServer::start(&config);
    for mode in ["legacy", "auto"] {
        let s = client(mode, Transport::Http(&server.url), example_plan());
        check_protocol(&s, mode);
        check_examples(&s);
    }
}

fn chatty_plan() -> Value {
    json!({"log_level": "info", "calls": [{"id": "c", "tool": "fixture_chatty", "args": {}, "progress": true}]})
}

fn check_chatty(s: &Session) {
    let c = s.call("c");
    assert_eq!(c["text"], "chatted");
    let progress: Vec<f64> = c["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0]);
    assert_eq!(c["progress"][2]["message"], "step 3 of 3");
    let logs: Vec<(&str, &str)> = s.report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["level"].as_str().unwrap(), l["data"].as_str().unwrap()))
        .collect();
    assert_eq!(
        logs,
        [
            ("info", "chatty step 1"),
            ("warning", "chatty step 2"),
            ("error", "chatty step 3")
        ]
    );
}

#[test]
fn tool_logs_and_progress_reach_the_client() {
    let dir = TempDir::new("chatty");
    let config = hostile_config(&dir, "");
    for mode in ["legacy", "auto"] {
        check_chatty(&client(
            mode,
            Transport::Stdio(Some(&config)),
            chatty_plan(),
        ));
    }
    let server = HttpServer::start(&config);
    for mode in ["legacy", "auto"] {
        check_chatty(&client(mode, Transport::Http(&server.url), chatty_plan()));
    }
}

/// A call that would spin for 30 s is cancelled by the client after 200 ms; the server records
/// it as cancelled and keeps serving.
fn cancel_plan() -> Value {
    json!({
        "calls": [{"id": "spin", "tool": "hostile_spin", "args": {}, "cancel_after_ms": 200}],
        // The pause gives the server time to stop the call (within an epoch tick) before the
        // session, and with it the server process, ends.
        "then": [{"id": "after", "tool": "fixture_echo", "args": {"message": "still here"}, "delay_ms": 500}]
    })
}

const SPIN_30S: &str = "fuel = 1_000_000_000_000_000\ntimeout = \"30s\"";

fn check_cancelled(s: &Session) {
    assert_eq!(s.call("spin")["cancelled"], true);
    assert_eq!(s.call("after")["text"], "still here");
}

#[test]
fn client_cancellation_stops_the_call_over_stdio() {
    let dir = TempDir::new("cancel-stdio");
    let config = hostile_config(&dir, SPIN_30S);
    for mode in ["legacy", "auto"] {
        let s = client(mode, Transport::Stdio(Some(&config)), cancel_plan());
        check_cancelled(&s);
        assert!(
            s.stderr.contains("outcome=\"cancelled\""),
            "{mode}: no cancelled record in:\n{}",
            s.stderr
        );
    }
}

#[test]
fn client_cancellation_stops_the_call_over_http() {
    let dir = TempDir::new("cancel-http");
    let config = hostile_config(&dir, SPIN_30S);
    let server = HttpServer::start(&config);
    for mode in ["legacy", "auto"] {
        check_cancelled(&client(mode, Transport::Http(&server.url), cancel_plan()));
    }
    // One record per session's cancelled call, long before the 30 s timeout.
    server.wait_for_log_count("outcome=\"cancelled\"", 2);
    let log = server.log();
    assert!(
        !log.contains("outcome=\"timed_out\""),
        "a cancelled call ran to its timeout:\n{log}"
    );
}
