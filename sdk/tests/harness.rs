//! A tool that uses the host's services, unit-tested natively with `TestHost`: this is the
//! testing guide of docs/authors.md, run.
#![cfg(not(target_arch = "wasm32"))]

use airlock_sdk::http::{HttpError, Request};
use airlock_sdk::testing::TestHost;
use airlock_sdk::{LogLevel, Output, ToolError, call_tool, caller, confirm, log, setting};
use serde_json::json;

/// Looks up a ticket in the configured tracker, and closes it once someone agrees.
fn close_ticket(id: u32) -> Result<String, ToolError> {
    let base = setting("tracker").ok_or_else(|| ToolError::failed("no tracker configured"))?;
    let ticket = Request::get(format!("{base}/tickets/{id}")).send()?;
    if !ticket.is_success() {
        return Err(ToolError::failed(format!(
            "ticket {id}: HTTP {}",
            ticket.status
        )));
    }
    let who = caller();
    log(
        LogLevel::Info,
        &format!("{} asks to close {id}", who.principal),
    );
    if !who.has_role("ops") {
        return Err(ToolError::failed("only ops may close tickets"));
    }
    if !confirm(&format!("Close ticket {id}?"), &ticket.text()) {
        return Ok("left open".into());
    }
    let notified = call_tool("notify", &json!({"text": format!("closed {id}")}))?;
    Ok(format!("closed; {}", notified.text_content()))
}

#[test]
fn the_tool_runs_against_the_test_host() {
    let (out, host) = TestHost::new()
        .setting("tracker", "https://tracker.example")
        .caller("alice", &["ops"])
        .confirm_answers(&[true])
        .http_response("https://tracker.example/tickets/", 200, "printer on fire")
        .tool("notify", Ok(Output::text("sent")))
        .run(|| close_ticket(7));
    assert_eq!(out.unwrap(), "closed; sent");
    assert_eq!(
        host.logs(),
        [(LogLevel::Info, "alice asks to close 7".to_owned())]
    );
    assert_eq!(
        host.questions(),
        [("Close ticket 7?".to_owned(), "printer on fire".to_owned())]
    );
    assert_eq!(host.requests()[0].url, "https://tracker.example/tickets/7");
    assert_eq!(host.nested_calls()[0].0, "notify");
}

#[test]
fn a_no_a_missing_role_and_a_refused_request_are_handled() {
    let base = || TestHost::new().setting("tracker", "https://tracker.example");
    let ok = |h: TestHost| h.http_response("https://tracker.example/", 200, "x");
    // Nobody said yes: nothing is closed, no tool is called.
    let (out, host) = ok(base().caller("alice", &["ops"])).run(|| close_ticket(1));
    assert_eq!(out.unwrap(), "left open");
    assert!(host.nested_calls().is_empty());
    // The caller lacks the role.
    let (out, _) = ok(base().caller("bob", &["dev"])).run(|| close_ticket(1));
    assert_eq!(
        out.unwrap_err(),
        ToolError::failed("only ops may close tickets")
    );
    // No grant for the URL: the request is refused as the host would.
    let (out, host) = base().run(|| Request::get("https://elsewhere.example/").send());
    assert!(matches!(out, Err(HttpError::BlockedByPolicy(_))), "{out:?}");
    assert_eq!(host.blocked(), ["https://elsewhere.example/"]);
    // No setting.
    let (out, _) = TestHost::new().run(|| close_ticket(1));
    assert_eq!(out.unwrap_err(), ToolError::failed("no tracker configured"));
}

#[test]
#[should_panic(expected = "outside airlock_sdk::testing::TestHost::run")]
fn imports_outside_the_test_host_say_so() {
    let _ = setting("tracker");
}
