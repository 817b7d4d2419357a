//! Streamable HTTP transport checks that need raw requests: Host and Origin validation.

mod common;

use common::{HttpServer, TempDir, hostile_config, raw_post};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[test]
fn host_and_origin_are_validated() {
    let dir = TempDir::new("http-dns");
    let server = HttpServer::start(&hostile_config(&dir, ""));
    let port = server.addr.rsplit(':').next().unwrap();
    let good_host = format!("127.0.0.1:{port}");
    assert_eq!(
        raw_post(&server.addr, &good_host, None, INIT),
        200,
        "a plain local request is served"
    );
    assert_eq!(
        raw_post(&server.addr, "evil.example.com", None, INIT),
        403,
        "DNS rebinding: foreign Host"
    );
    assert_eq!(
        raw_post(
            &server.addr,
            &good_host,
            Some("http://evil.example.com"),
            INIT
        ),
        403,
        "a browser page from another origin"
    );
}

#[test]
fn configured_origins_are_accepted() {
    let dir = TempDir::new("http-origin");
    let config = common::hostile_config_with_server(
        &dir,
        "allowed_origins = [\"http://app.example.com\"]",
        "",
    );
    let server = HttpServer::start(&config);
    let host = format!("127.0.0.1:{}", server.addr.rsplit(':').next().unwrap());
    assert_eq!(
        raw_post(&server.addr, &host, Some("http://app.example.com"), INIT),
        200
    );
    assert_eq!(
        raw_post(&server.addr, &host, Some("http://other.example.com"), INIT),
        403
    );
}
