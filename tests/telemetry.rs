//! OpenTelemetry traces over OTLP/HTTP, received by a real OTLP endpoint in the test that
//! decodes the protobuf (`opentelemetry-proto`): one span per call continuing the client's
//! `traceparent`, a child span per pipeline step, the trace carried into the tool's granted
//! egress, and argument values only when the tool's `audit_arguments` keeps them.

mod common;

use common::{HttpServer, TempDir, TestHttpServer, hostile_wasm, raw_mcp, sse_json};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP traces endpoint: every span POSTed to `/v1/traces`, decoded.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Receiver { port, spans }
    }

    /// Wait until a span satisfies `good`.
    fn wait_for(&self, what: &str, good: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((_, s)) = self.spans.lock().unwrap().iter().find(|(_, s)| good(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no span {what}; received: {:?}",
                self.names()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn names(&self) -> Vec<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.name.clone())
            .collect()
    }

    fn children_of(&self, parent: &[u8]) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.parent_span_id == parent)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn services(&self) -> Vec<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|(svc, _)| svc.clone())
            .collect()
    }
}

fn serve(stream: std::net::TcpStream, kept: &Mutex<Vec<(String, Span)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if path == "/v1/traces" {
            let request = ExportTraceServiceRequest::decode(body.as_slice())
                .expect("an OTLP protobuf export request");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|a| a.key == "service.name")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        kept.lock().unwrap().push((service.clone(), span));
                    }
                }
            }
        }
        let mut w = &stream;
        let _ = write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn server(
    dir: &TempDir,
    receiver: &Receiver,
    upstream: &TestHttpServer,
    arguments: &str,
) -> HttpServer {
    HttpServer::start(&dir.config(&format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\nservice_name = \"airlock-test\"\n\
         [[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\naudit_arguments = \"{arguments}\"\n\
         [tool.grants]\nnet = [\"http://127.0.0.1:{}\"]\n",
        receiver.port,
        hostile_wasm().display(),
        upstream.port
    )))
}

fn call(server: &HttpServer, tool: &str, args: serde_json::Value) -> serde_json::Value {
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let r = raw_mcp(
        &server.addr,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        &[("traceparent", traceparent.as_str())],
    )
    .unwrap();
    sse_json(&r.body)["result"].clone()
}

#[test]
fn a_call_is_a_span_of_the_clients_trace_with_its_steps_and_its_egress_joins_it() {
    let receiver = Receiver::start();
    let upstream = TestHttpServer::start();
    let dir = TempDir::new("otel");
    let server = server(&dir, &receiver, &upstream, "none");
    let authority = format!("127.0.0.1:{}", upstream.port);
    let r = call(
        &server,
        "fixture_poll",
        json!({"authority": authority, "times": 1, "interval_ms": 0}),
    );
    assert_eq!(common::result_outcome(&r), "completed", "{r}");

    let span = receiver.wait_for("for the call", |s| s.name == "tools/call fixture_poll");
    assert_eq!(
        hex::encode(&span.trace_id),
        TRACE,
        "the client's trace continues"
    );
    assert_eq!(hex::encode(&span.parent_span_id), PARENT);
    assert_eq!(span.kind, 2, "a server span");
    assert_eq!(
        attribute(&span, "airlock.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(
        attribute(&span, "airlock.tool").as_deref(),
        Some("fixture_poll")
    );
    assert!(attribute(&span, "airlock.call_id").is_some());
    assert_eq!(receiver.services()[0], "airlock-test");

    // One child per step, inside the call's time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let steps = loop {
        let steps: Vec<String> = receiver
            .children_of(&span.span_id)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        if steps.len() >= 7 || Instant::now() > deadline {
            break steps;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for step in [
        "authenticate",
        "authorize",
        "validate",
        "admission",
        "sandbox",
        "output",
        "audit",
    ] {
        assert!(
            steps.iter().any(|s| s == step),
            "no {step} span in {steps:?}"
        );
    }
    for child in receiver.children_of(&span.span_id) {
        assert_eq!(child.trace_id, span.trace_id);
        if child.name != "authenticate" {
            assert!(
                child.start_time_unix_nano >= span.start_time_unix_nano
                    && child.end_time_unix_nano <= span.end_time_unix_nano,
                "{} outside the call",
                child.name
            );
        }
    }

    // The tool's request carried the trace on, with the call's span as its parent.
    let seen = upstream.seen();
    let sent = seen
        .iter()
        .flat_map(|r| r.headers.iter())
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("the granted request carries a traceparent");
    assert_eq!(
        sent,
        format!("00-{TRACE}-{}-01", hex::encode(&span.span_id))
    );

    // No argument values without audit_arguments.
    let r = call(
        &server,
        "fixture_echo",
        json!({"message": "private-words-42"}),
    );
    assert_eq!(common::result_outcome(&r), "completed", "{r}");
    let echo = receiver.wait_for("for the echo", |s| s.name == "tools/call fixture_echo");
    assert!(
        echo.attributes
            .iter()
            .all(|a| !format!("{a:?}").contains("private-words-42")),
        "{echo:?}"
    );
    assert!(attribute(&echo, "airlock.arguments").is_none());
}

#[test]
fn argument_values_reach_a_span_only_as_audit_arguments_allows() {
    let receiver = Receiver::start();
    let upstream = TestHttpServer::start();
    let dir = TempDir::new("otel-args");
    let server = server(&dir, &receiver, &upstream, "full");
    let r = call(&server, "fixture_echo", json!({"message": "kept-words-42"}));
    assert_eq!(common::result_outcome(&r), "completed", "{r}");
    let echo = receiver.wait_for("for the echo", |s| s.name == "tools/call fixture_echo");
    let kept = attribute(&echo, "airlock.arguments").expect("the arguments are kept");
    assert!(kept.contains("kept-words-42"), "{kept}");
}
