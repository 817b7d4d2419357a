//! Network egress: the `http-fetch` example tool against a real HTTP server on 127.0.0.1,
//! through the real binary and the Python MCP client. Every request is checked against the
//! tool's grants, names are resolved and checked by the host, and redirects are re-checked.

mod common;

use common::{Session, TempDir, TestHttpServer, Transport, client};
use serde_json::{Value, json};

fn config(dir: &TempDir, net: &str, limits: &str) -> std::path::PathBuf {
    dir.config(&format!(
        "[[tool]]\nname = \"http-fetch\"\ncomponent = \"bundled:http-fetch\"\n[tool.limits]\n{limits}\n[tool.grants]\nnet = [{net}]\n"
    ))
}

fn fetch(cfg: &std::path::Path, args: Value) -> Session {
    client(
        "auto",
        Transport::Stdio(Some(cfg)),
        json!({"calls": [{"id": "f", "tool": "http_fetch", "args": args}]}),
    )
}

fn blocked(s: &Session) -> String {
    let c = s.call("f");
    assert_eq!(c["is_error"], true, "{c}");
    assert_eq!(c["meta"]["airlock/outcome"], "blocked_by_policy", "{c}");
    assert!(
        s.stderr.contains("grant_kind=\"net\""),
        "no policy log event:\n{}",
        s.stderr
    );
    c["text"].as_str().unwrap().to_owned()
}

#[test]
fn a_granted_address_is_reachable() {
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-ok");
    let p = server.port;
    let cfg = config(&dir, &format!("\"http://127.0.0.1:{p}\""), "");
    let s = fetch(&cfg, json!({"url": format!("http://127.0.0.1:{p}/hello")}));
    let f = &s.call("f")["structured"];
    assert_eq!(f["status"], 200, "{}", s.call("f"));
    assert_eq!(f["body"], "hello from the test server");
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].path, "/hello");
}

#[test]
fn an_address_without_a_grant_is_blocked_before_connecting() {
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-none");
    let p = server.port;
    let cfg = dir.config("[[tool]]\nname = \"http-fetch\"\ncomponent = \"bundled:http-fetch\"\n");
    let s = fetch(&cfg, json!({"url": format!("http://127.0.0.1:{p}/hello")}));
    assert_eq!(
        blocked(&s),
        format!(
            "blocked by policy: network egress to 127.0.0.1:{p} (GET) is not granted to tool http_fetch — do not retry by another route"
        )
    );
    assert!(
        server.seen().is_empty(),
        "the server was reached: {:?}",
        server.seen()
    );
}

#[test]
fn a_name_resolving_to_loopback_needs_an_address_grant() {
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-rebind");
    let p = server.port;
    let cfg = config(&dir, &format!("\"http://localhost:{p}\""), "");
    let s = fetch(&cfg, json!({"url": format!("http://localhost:{p}/hello")}));
    let text = blocked(&s);
    let prefix = format!("blocked by policy: network egress to localhost:{p} resolves to ");
    assert!(text.starts_with(&prefix), "{text}");
    assert!(text.ends_with("a loopback address, which is not granted to tool http_fetch — do not retry by another route"), "{text}");
    assert!(server.seen().is_empty());

    // Naming the range lets it through.
    let cfg = config(
        &dir,
        &format!(
            "{{ url = \"http://localhost:{p}\", addresses = [\"127.0.0.0/8\", \"::1/128\"] }}"
        ),
        "",
    );
    let s = fetch(&cfg, json!({"url": format!("http://localhost:{p}/hello")}));
    assert_eq!(s.call("f")["structured"]["status"], 200, "{}", s.call("f"));
}

#[test]
fn a_redirect_to_a_host_without_a_grant_is_blocked() {
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-redirect");
    let p = server.port;
    let cfg = config(&dir, &format!("\"http://127.0.0.1:{p}\""), "");
    let s = fetch(
        &cfg,
        json!({"url": format!("http://127.0.0.1:{p}/redirect?to=http://127.0.0.2:{p}/hello")}),
    );
    assert_eq!(
        blocked(&s),
        format!(
            "blocked by policy: network egress to 127.0.0.2:{p} (GET) is not granted to tool http_fetch — do not retry by another route"
        )
    );
    let paths: Vec<String> = server.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [format!("/redirect?to=http://127.0.0.2:{p}/hello")]);

    // A redirect inside the grant is followed.
    let s = fetch(
        &cfg,
        json!({"url": format!("http://127.0.0.1:{p}/redirect?to=/hello")}),
    );
    let f = &s.call("f")["structured"];
    assert_eq!(f["body"], "hello from the test server", "{f}");
    assert_eq!(
        f["redirects"],
        json!([format!("http://127.0.0.1:{p}/hello")])
    );
}

#[test]
fn a_method_grant_limits_methods() {
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-method");
    let p = server.port;
    let cfg = config(
        &dir,
        &format!("{{ url = \"http://127.0.0.1:{p}\", methods = [\"HEAD\"] }}"),
        "",
    );
    let s = fetch(
        &cfg,
        json!({"url": format!("http://127.0.0.1:{p}/hello"), "method": "HEAD"}),
    );
    assert_eq!(s.call("f")["structured"]["status"], 200, "{}", s.call("f"));
    let s = fetch(&cfg, json!({"url": format!("http://127.0.0.1:{p}/hello")}));
    assert_eq!(
        blocked(&s),
        format!(
            "blocked by policy: network egress to 127.0.0.1:{p} (GET) is not granted to tool http_fetch — do not retry by another route"
        )
    );
}

#[test]
fn the_response_body_limit_holds() {
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-big");
    let p = server.port;
    let cfg = config(
        &dir,
        &format!("\"http://127.0.0.1:{p}\""),
        "max_response_bytes = \"1KiB\"",
    );
    let s = fetch(&cfg, json!({"url": format!("http://127.0.0.1:{p}/big")}));
    let c = s.call("f");
    assert_eq!(c["meta"]["airlock/outcome"], "tool_failed", "{c}");
    assert!(
        c["text"]
            .as_str()
            .unwrap()
            .starts_with("request failed: reading the body: "),
        "{c}"
    );
    assert!(c["text"].as_str().unwrap().contains("1024"), "{c}");
}

#[test]
fn a_url_with_userinfo_is_refused_and_never_sent() {
    // `admin.internal@` would otherwise reach the server's Host header verbatim.
    let server = TestHttpServer::start();
    let dir = TempDir::new("net-userinfo");
    let p = server.port;
    let cfg = config(&dir, &format!("\"http://127.0.0.1:{p}\""), "");
    let s = fetch(
        &cfg,
        json!({"url": format!("http://admin.internal@127.0.0.1:{p}/headers")}),
    );
    assert_eq!(
        blocked(&s),
        format!(
            "blocked by policy: a URL with userinfo (user:password@) to 127.0.0.1:{p} is refused: \
             credentials are never sent in URLs; grant the secret as a header instead to tool \
             http_fetch — do not retry by another route"
        )
    );
    assert!(server.seen().is_empty(), "sent: {:?}", server.seen());
    assert!(!s.stderr.contains("admin.internal"), "{}", s.stderr);
}
