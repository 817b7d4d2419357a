//! Authentication and authorization over Streamable HTTP, through the real binary: bearer JWTs
//! minted here with keys generated here, API keys, the RFC 9728 challenge, and per-principal
//! tool visibility and call enforcement.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{
    DpopKey, HttpServer, RawResponse, TempDir, audit_records, dpop_key, hostile_wasm, proof_with,
    raw_http, raw_mcp, sse_json,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RESOURCE: &str = "https://airlock.test/mcp";
const ISSUER: &str = "https://idp.test/";
const API_KEY: &str = "ak-test-key-0123456789";

struct Keys {
    ed: Vec<u8>,
    ed_public: Vec<u8>,
    ec: Vec<u8>,
    other_ed: Vec<u8>,
}

fn keys() -> Keys {
    let rng = SystemRandom::new();
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_public = Ed25519KeyPair::from_pkcs8(ed.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let other = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Keys {
        ed: ed.as_ref().to_vec(),
        ed_public,
        ec: ec.as_ref().to_vec(),
        other_ed: other.as_ref().to_vec(),
    }
}

fn jwks(k: &Keys) -> Value {
    let ec = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &k.ec,
        &SystemRandom::new(),
    )
    .unwrap();
    let point = ec.public_key().as_ref();
    json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": B64.encode(&k.ed_public), "kid": "ed1", "use": "sig"},
        {"kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]), "kid": "ec1", "use": "sig"}
    ]})
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": RESOURCE, "sub": sub, "roles": roles, "iat": now(), "exp": now() + 600})
}

fn ed_token(k: &Keys, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("ed1".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(&k.ed)).unwrap()
}

struct Fixture {
    _dir: TempDir,
    server: HttpServer,
    keys: Keys,
}

fn start() -> Fixture {
    let keys = keys();
    let dir = TempDir::new("auth");
    std::fs::write(dir.0.join("jwks.json"), jwks(&keys).to_string()).unwrap();
    let config = dir.config(&format!(
        r#"[auth]
mode = "jwt"
resource = "{RESOURCE}"
issuer = "{ISSUER}"
jwks_file = "jwks.json"
max_token_lifetime = "1h"
[[auth.api_keys]]
principal = "ci-bot"
sha256 = "{}"
roles = ["readers"]

[roles]
readers = ["analysts"]
admins = ["airlock-admins"]

[[tool]]
name = "text"
component = "bundled:text"
roles = ["readers", "admins"]

[[tool]]
name = "hostile"
component = "{}"
roles = ["admins"]
"#,
        hex::encode(Sha256::digest(API_KEY)),
        hostile_wasm().display()
    ));
    let server = HttpServer::start(&config);
    Fixture {
        _dir: dir,
        server,
        keys,
    }
}

fn list(f: &Fixture, token: &str) -> RawResponse {
    raw_mcp(
        &f.server.addr,
        "tools/list",
        json!({}),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .unwrap()
}

fn call(f: &Fixture, token: &str, tool: &str, args: Value) -> RawResponse {
    raw_mcp(
        &f.server.addr,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .unwrap()
}

/// Assert a 401 whose challenge points at the metadata and carries `description`.
fn refused(r: &RawResponse, description: &str) {
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r
        .header("WWW-Authenticate")
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        challenge.starts_with(
            "Bearer resource_metadata=\"https://airlock.test/.well-known/oauth-protected-resource/mcp\""
        ),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"invalid_token\"")
            && challenge.contains(&format!("error_description=\"{description}")),
        "{description}: {challenge}"
    );
}

#[test]
fn health_and_readiness_answer_without_credentials_and_say_nothing_more() {
    // A load balancer probes without a key; everything else still asks for one.
    let f = start();
    let get = |path: &str| {
        common::raw_http(&f.server.addr, &format!("GET {path} HTTP/1.1\r\n"), "").unwrap()
    };
    let health = get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get("/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    for path in ["/mcp", "/", "/metrics", "/healthz/x"] {
        assert_eq!(get(path).status, 401, "{path}");
    }
    let (ok, status) = common::ctl(&f.server, &["status"]);
    assert!(ok && status.contains("ready       yes"), "{status}");
}

#[test]
fn the_log_at_info_is_airlocks_own_lines_not_rmcps_chatter() {
    // A session's start, its notifications and its end were each an rmcp line at info, with
    // a `Debug` dump of the client's parameters: at info only Airlock's own lines remain.
    let dir = TempDir::new("log-chatter");
    let server =
        HttpServer::start(&dir.config("[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n"));
    let s = common::client(
        "auto",
        common::Transport::Http(&server.url),
        json!({"calls": [{"id": "c", "tool": "text_stats", "args": {"text": "hi"}}]}),
    );
    assert_eq!(common::outcome(s.call("c")), "completed", "{}", s.report);
    let log = server.log();
    assert!(log.contains("serving MCP over Streamable HTTP"), "{log}");
    for chatter in ["rmcp::", "InitializeRequestParams", "Service initialized"] {
        assert!(!log.contains(chatter), "{chatter} in:\n{log}");
    }
}

#[test]
fn tokens_are_checked_claim_by_claim() {
    let f = start();
    let k = &f.keys;

    // No credentials: 401 with the metadata pointer and no error code.
    let r = raw_mcp(&f.server.addr, "tools/list", json!({}), &[]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(
            "Bearer resource_metadata=\"https://airlock.test/.well-known/oauth-protected-resource/mcp\""
        )
    );

    // A good token, with either accepted algorithm.
    assert_eq!(
        list(&f, &ed_token(k, &claims("alice", &["analysts"]))).status,
        200
    );
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("ec1".into());
    let es = jsonwebtoken::encode(
        &h,
        &claims("alice", &["analysts"]),
        &EncodingKey::from_ec_der(&k.ec),
    )
    .unwrap();
    assert_eq!(list(&f, &es).status, 200);

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims("alice", &["analysts"]);
        edit(&mut c);
        ed_token(k, &c)
    };
    refused(
        &list(&f, &with(&|c| c["iss"] = json!("https://evil.test/"))),
        "wrong issuer",
    );
    refused(
        &list(&f, &with(&|c| c["aud"] = json!("https://other.test/mcp"))),
        "the token is not for this resource (audience)",
    );
    refused(
        &list(
            &f,
            &with(&|c| {
                c["iat"] = json!(now() - 900);
                c["exp"] = json!(now() - 120);
            }),
        ),
        "the token has expired",
    );
    refused(
        &list(&f, &with(&|c| c["nbf"] = json!(now() + 300))),
        "the token is not valid yet",
    );
    refused(
        &list(&f, &with(&|c| c["exp"] = json!(now() + 7200))),
        "the token lives longer than the 3600 s allowed",
    );
    refused(
        &list(
            &f,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        "a required claim is missing (iat)",
    );

    // alg: none, unsigned.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","kid":"ed1","typ":"JWT"}"#),
        B64.encode(claims("alice", &["analysts"]).to_string())
    );
    refused(&list(&f, &none), "malformed token or unsupported algorithm");

    // Signed by a key that is not in the JWKS, under a kid that is.
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("ed1".into());
    let forged = jsonwebtoken::encode(
        &h,
        &claims("alice", &["analysts"]),
        &EncodingKey::from_ed_der(&k.other_ed),
    )
    .unwrap();
    refused(&list(&f, &forged), "bad signature");

    // A kid the JWKS does not have.
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("nope".into());
    let unknown = jsonwebtoken::encode(
        &h,
        &claims("alice", &["analysts"]),
        &EncodingKey::from_ed_der(&k.ed),
    )
    .unwrap();
    refused(&list(&f, &unknown), "the token's key (kid) is unknown");

    // HS256 with the public key as the shared secret (key confusion).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("ed1".into());
    let confused = jsonwebtoken::encode(
        &h,
        &claims("alice", &["analysts"]),
        &EncodingKey::from_secret(&k.ed_public),
    )
    .unwrap();
    refused(&list(&f, &confused), "algorithm HS256 is not accepted");

    // A token in the query string is not looked at.
    let good = ed_token(k, &claims("alice", &["analysts"]));
    let r = raw_http(
        &f.server.addr,
        &format!("POST /mcp?access_token={good} HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\n"),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401);

    // A valid token whose claims carry no role: 403 insufficient_scope.
    let r = list(&f, &ed_token(k, &claims("mallory", &["strangers"])));
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.header("WWW-Authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\""),
        "{r:?}"
    );

    // API keys: the right one is a principal, any other is refused.
    assert_eq!(list(&f, API_KEY).status, 200);
    refused(
        &list(&f, "ak-wrong-key-0000000000"),
        "not a known API key or a JWT",
    );
}

#[test]
fn roles_decide_what_is_listed_and_what_may_be_called() {
    let f = start();
    let alice = ed_token(&f.keys, &claims("alice", &["analysts"]));
    let admin = ed_token(&f.keys, &claims("root", &["airlock-admins"]));

    let names = |r: &RawResponse| -> Vec<String> {
        let v = sse_json(&r.body);
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let seen = names(&list(&f, &alice));
    assert!(seen.contains(&"text_stats".to_owned()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|n| n.starts_with("fixture_") || n.starts_with("hostile_")),
        "{seen:?}"
    );
    assert!(names(&list(&f, &admin)).contains(&"fixture_echo".to_owned()));
    assert_eq!(
        names(&list(&f, API_KEY)),
        seen,
        "the readers' key sees what alice sees"
    );

    // Calling a tool the principal cannot see is refused by the pipeline, and recorded.
    let r = call(&f, &alice, "fixture_echo", json!({"message": "hi"}));
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("not authorized: principal alice may not call fixture_echo"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("\"airlock/outcome\":\"not_authorized\""),
        "{}",
        r.body
    );
    let r = call(&f, &alice, "text_stats", json!({"text": "one two"}));
    assert!(r.body.contains("\"isError\":false"), "{}", r.body);
    let r = call(&f, &admin, "fixture_echo", json!({"message": "hi"}));
    assert!(r.body.contains("\"isError\":false"), "{}", r.body);

    let records = audit_records(&f.server.audit_dir);
    let denied = records
        .iter()
        .find(|r| r["outcome"] == "not_authorized")
        .expect("a record of the refusal");
    assert_eq!(
        (&denied["principal"], &denied["tool"], &denied["decision"]),
        (&json!("alice"), &json!("fixture_echo"), &json!("denied"))
    );
    assert!(
        records
            .iter()
            .any(|r| r["principal"] == "root" && r["outcome"] == "completed")
    );

    // The protected resource metadata, at the path-suffixed and the plain location.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = raw_http(&f.server.addr, &format!("GET {path} HTTP/1.1\r\n"), "").unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let m: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(m["resource"], RESOURCE);
        assert_eq!(m["authorization_servers"], json!([ISSUER]));
    }
}

#[test]
fn bad_auth_configuration_stops_the_start() {
    let dir = TempDir::new("auth-bad");
    let state = common::shared_state_dir();
    let cases = [
        (
            "[roles]\nreaders = [\"analysts\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"writers\"]\n",
            "tool \"text\" (entry 1) › roles: role \"writers\" is not declared in [roles]",
        ),
        (
            "[auth]\n[[auth.api_keys]]\nprincipal = \"x\"\nsha256 = \"00\"\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › api_keys[0]: API keys need mode = \"jwt\" or \"api-key\"",
        ),
        (
            "[auth]\nmode = \"jwt\"\nissuer = \"https://idp.test/\"\njwks_file = \"missing.json\"\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › resource: required when mode = \"jwt\"",
        ),
        (
            "[auth]\nmode = \"jwt\"\nresource = \"https://a.test/mcp\"\nissuer = \"https://idp.test/\"\njwks_file = \"missing.json\"\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › jwks_file:",
        ),
        (
            "[auth]\nmode = \"api-key\"\n[[auth.api_keys]]\nprincipal = \"x\"\nsha256 = \"abc\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › api_keys[0] › sha256: must be 64 hex digits",
        ),
        // One name, one principal: an API key may not take the local principal's name or
        // one Airlock gives itself.
        (
            "[auth]\nmode = \"api-key\"\n[[auth.api_keys]]\nprincipal = \"local\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › api_keys[0] › principal: \"local\" is the name of the local principal",
        ),
        (
            "[auth]\nlocal_principal = \"anonymous\"\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › local_principal: \"anonymous\" is a name Airlock gives to other callers",
        ),
        // Sender-constrained tokens only: an API key is a bearer credential.
        (
            "[auth]\nmode = \"api-key\"\nrequire_sender_constraint = true\n[[auth.api_keys]]\nprincipal = \"x\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › require_sender_constraint: needs mode = \"jwt\" or \"client-cert\"",
        ),
        (
            "[auth]\nrequire_dpop = true\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › require_dpop: DPoP binds JWTs: needs mode = \"jwt\"",
        ),
        (
            "[auth]\nmode = \"api-key\"\ndpop_proof_lifetime = \"1h\"\n[[auth.api_keys]]\nprincipal = \"x\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › dpop_proof_lifetime: DPoP binds JWTs: needs mode = \"jwt\"",
        ),
        (
            "[auth]\nmode = \"jwt\"\nrequire_dpop = true\n[[auth.api_keys]]\nprincipal = \"x\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › require_dpop: API keys are bearer credentials",
        ),
        (
            "[auth]\nmode = \"client-cert\"\n[[auth.api_keys]]\nprincipal = \"x\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › api_keys[0]: API keys need mode = \"jwt\" or \"api-key\"",
        ),
        // Client certificates name principals only over mutual TLS.
        (
            "[auth]\nmode = \"client-cert\"\n[[auth.client_certs]]\nprincipal = \"billing\"\nspiffe_id = \"spiffe://example.org/billing\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › client_certs: client certificates need mutual TLS: set [server.tls] client_ca",
        ),
        (
            "[auth]\nmode = \"client-cert\"\n[[auth.client_certs]]\nprincipal = \"billing\"\nsubject = \"not a name\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › client_certs[0] › subject: \"not a name\" is not a distinguished name",
        ),
        (
            "[auth]\nmode = \"client-cert\"\n[[auth.client_certs]]\nprincipal = \"billing\"\nspiffe_id = \"https://example.org/billing\"\nroles = [\"r\"]\n[roles]\nr = [\"v\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
            "auth › client_certs[0] › spiffe_id: \"https://example.org/billing\" is not a SPIFFE id",
        ),
    ];
    for (config, problem) in cases {
        let cfg = dir.config(config);
        let (ok, err) = common::check(&cfg, &state);
        assert!(!ok, "accepted:\n{config}");
        assert!(err.contains(problem), "{problem}\n---\n{err}");
    }
}

#[test]
fn rate_limits_refuse_with_a_retry_after_and_are_audited() {
    use common::{Transport, client, outcome};
    let dir = TempDir::new("ratelimit");
    let config = dir.config(&format!(
        "[rate_limits]\nper_principal = \"3/m\"\n\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nrate_limit = \"1/h\"\n",
        hostile_wasm().display()
    ));
    let calls: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("c{i}"), "tool": "fixture_echo", "args": {"message": "hi"}}))
        .collect();
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": calls}),
    );
    let outcomes: Vec<&str> = (0..4).map(|i| outcome(s.call(&format!("c{i}")))).collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "completed").count(),
        3,
        "{outcomes:?}"
    );
    let limited = (0..4)
        .map(|i| s.call(&format!("c{i}")))
        .find(|c| outcome(c) == "rate_limited")
        .expect("one call over the limit");
    let text = limited["text"].as_str().unwrap();
    assert!(
        text.starts_with("rate limited: principal local is over 3/m; retry after "),
        "{text}"
    );
    assert!(limited["meta"]["airlock/retry_after_ms"].as_u64().unwrap() > 0);
    let records = audit_records(s.audit_dir.as_ref().unwrap());
    let r = records
        .iter()
        .find(|r| r["outcome"] == "rate_limited")
        .expect("an audit record of the refusal");
    assert_eq!(r["decision"], "denied");

    // A tool's own limit holds across principals' budgets.
    let s = client(
        "auto",
        Transport::Stdio(Some(&config)),
        json!({"calls": [{"id": "a", "tool": "text_stats", "args": {"text": "x"}}],
               "then": [{"id": "b", "tool": "text_stats", "args": {"text": "y"}}]}),
    );
    assert_eq!(outcome(s.call("a")), "completed");
    assert!(
        s.call("b")["text"]
            .as_str()
            .unwrap()
            .starts_with("rate limited: tool text_stats is over 1/h"),
        "{}",
        s.call("b")
    );
}

/// Serves `jwks` at any path and counts requests.
fn jwks_server(
    jwks: std::sync::Arc<std::sync::Mutex<String>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = jwks.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn keys_from_a_jwks_url_are_refetched_on_an_unknown_kid_at_a_bounded_rate() {
    use std::sync::atomic::Ordering;
    let (first, second) = (keys(), keys());
    let with_kid = |k: &Keys, kid: &str| {
        let mut set = jwks(k);
        set["keys"][0]["kid"] = json!(kid);
        set.to_string()
    };
    let served = std::sync::Arc::new(std::sync::Mutex::new(with_kid(&first, "old")));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let port = jwks_server(served.clone(), hits.clone());
    let dir = TempDir::new("auth-jwks-url");
    let config = dir.config(&format!(
        "[auth]\nmode = \"jwt\"\nresource = \"{RESOURCE}\"\nissuer = \"{ISSUER}\"\njwks_url = \"http://127.0.0.1:{port}/jwks.json\"\njwks_refresh_min_interval = \"1s\"\n[roles]\nreaders = [\"analysts\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n"
    ));
    let server = HttpServer::start(&config);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once at start");
    let token = |k: &Keys, kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            &claims("alice", &["analysts"]),
            &EncodingKey::from_ed_der(&k.ed),
        )
        .unwrap()
    };
    let list = |t: &str| {
        raw_mcp(
            &server.addr,
            "tools/list",
            json!({}),
            &[("Authorization", &format!("Bearer {t}"))],
        )
        .unwrap()
    };
    // The same token twice: the second is let in from the verified-token cache.
    let old = token(&first, "old");
    assert_eq!(list(&old).status, 200);
    assert_eq!(list(&old).status, 200);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "known keys are not fetched again"
    );

    // The issuer rotates its key: the first token with the new kid makes airlock fetch again.
    *served.lock().unwrap() = with_kid(&second, "new");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(list(&token(&second, "new")).status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // A token verified before the rotation is not let in from the cache: its key is gone.
    refused(&list(&old), "the token's key (kid) is unknown");
    // Unknown kids right after do not make it fetch again: refused without a request.
    for _ in 0..3 {
        refused(
            &list(&token(&second, "bogus")),
            "the token's key (kid) is unknown",
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2, "refreshes are rate limited");
}

#[test]
fn a_jwt_subject_cannot_take_a_principal_name_of_another_source() {
    let f = start();
    // An API key's principal, the local principal, and the names Airlock gives itself.
    for sub in ["ci-bot", "local", "anonymous", "unauthenticated"] {
        let r = list(&f, &ed_token(&f.keys, &claims(sub, &["analysts"])));
        refused(
            &r,
            "the token's subject (sub) is the name of a principal that is not a JWT subject",
        );
    }
    // The API key itself still works, and so does a subject of its own.
    assert_eq!(list(&f, API_KEY).status, 200);
    let alice = list(&f, &ed_token(&f.keys, &claims("alice", &["analysts"])));
    assert_eq!(alice.status, 200, "{alice:?}");
}

/// A 2025-era MCP request (sessions) over a raw connection.
fn legacy(
    f: &Fixture,
    token: &str,
    method: &str,
    session: Option<&str>,
    body: &Value,
) -> RawResponse {
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
        .unwrap_or_default();
    common::raw_http(
        &f.server.addr,
        &format!(
            "{method} /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer {token}\r\n{session}"
        ),
        &if method == "POST" { body.to_string() } else { String::new() },
    )
    .expect("the server answers")
}

#[test]
fn a_session_belongs_to_the_principal_that_opened_it() {
    let f = start();
    let alice = ed_token(&f.keys, &claims("alice", &["analysts"]));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "session-test", "version": "1"}}});
    let opened = legacy(&f, &alice, "POST", None, &init);
    assert_eq!(opened.status, 200, "{opened:?}");
    let session = opened
        .header("Mcp-Session-Id")
        .unwrap_or_else(|| panic!("no session: {opened:?}"))
        .to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        legacy(&f, &alice, "POST", Some(&session), &initialized).status,
        202
    );
    let tools = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});

    // Another principal (the API key's ci-bot) with Alice's session id: answered exactly as an
    // unknown session is, for every method.
    let unknown = legacy(
        &f,
        API_KEY,
        "POST",
        Some("6f1c1c55-0000-4000-8000-000000000000"),
        &tools,
    );
    assert_eq!(unknown.status, 404, "{unknown:?}");
    for method in ["POST", "GET", "DELETE"] {
        let r = legacy(&f, API_KEY, method, Some(&session), &tools);
        assert_eq!(r.status, 404, "{method}: {r:?}");
        assert_eq!(r.body, unknown.body, "{method}");
    }
    // Alice's session is untouched (the DELETE above did not end it).
    let mine = legacy(&f, &alice, "POST", Some(&session), &tools);
    assert_eq!(mine.status, 200, "{mine:?}");
    assert!(
        mine.body.contains("fixture_echo") || mine.body.contains("\"tools\""),
        "{mine:?}"
    );

    // Each refusal is an audit record naming both principals, and the id never appears whole.
    let records: Vec<Value> = common::audit_records(&f.server.audit_dir)
        .into_iter()
        .filter(|r| r["kind"] == "session")
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert_eq!(r["event"], "refused");
        assert_eq!(r["principal"], "ci-bot");
        assert_eq!(r["owner"], "alice");
        assert_eq!(r["session"].as_str().unwrap().len(), 12, "{r}");
    }
    let log = f.server.log();
    assert!(
        log.contains("request on another principal's session refused"),
        "{log}"
    );
    assert!(
        !log.contains(&session),
        "the session id is in the log:\n{log}"
    );
    let audit = common::audit_files(&f.server.audit_dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(
        !audit.contains(&session),
        "the session id is in the audit log"
    );
}

#[test]
fn sessions_are_capped_per_principal_with_a_named_refusal() {
    let dir = TempDir::new("auth-session-cap");
    let config = dir.config(&format!(
        "[server]\nmax_sessions_per_principal = 2\n[auth]\nmode = \"api-key\"\n\
         [[auth.api_keys]]\nprincipal = \"ci-bot\"\nsha256 = \"{}\"\nroles = [\"readers\"]\n\
         [[auth.api_keys]]\nprincipal = \"other-bot\"\nsha256 = \"{}\"\nroles = [\"readers\"]\n\
         [roles]\nreaders = [\"analysts\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n",
        hex::encode(Sha256::digest(API_KEY)),
        hex::encode(Sha256::digest("ak-other-key-0123456789")),
    ));
    let server = HttpServer::start(&config);
    let open = |key: &str| {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "cap-test", "version": "1"}}});
        common::raw_http(
            &server.addr,
            &format!(
                "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer {key}\r\n"
            ),
            &init.to_string(),
        )
        .expect("an answer")
    };
    assert_eq!(open(API_KEY).status, 200);
    assert_eq!(open(API_KEY).status, 200);
    let refused = open(API_KEY);
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused
            .body
            .contains("session limit: principal ci-bot has 2 sessions open")
            && refused
                .body
                .contains("\"airlock/outcome\":\"session_limit\""),
        "{refused:?}"
    );
    // Another principal is not affected.
    assert_eq!(open("ak-other-key-0123456789").status, 200);

    // With API keys only, a client without one is told there is no OAuth to try.
    let r = common::raw_http(
        &server.addr,
        "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
        "{}",
    )
    .expect("an answer");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"airlock\""),
        "{r:?}"
    );
    assert!(
        r.body.contains("no OAuth authorization server")
            && r.body.contains("Authorization: Bearer KEY"),
        "{r:?}"
    );
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = common::raw_http(&server.addr, &format!("GET {path} HTTP/1.1\r\n"), "").unwrap();
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(r.body.contains("API key"), "{path}: {r:?}");
    }
    let records = common::audit_records(&server.audit_dir);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "session" && r["event"] == "limit" && r["principal"] == "ci-bot"),
        "{records:?}"
    );
}

/// A token of alice's bound to `key` (`cnf.jkt`).
fn dpop_bound_token(f: &Fixture, key: &DpopKey) -> String {
    let mut c = claims("alice", &["analysts"]);
    c["cnf"] = json!({"jkt": key.jkt});
    ed_token(&f.keys, &c)
}

static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh proof for `POST /mcp` on `f`'s server with `token`.
fn proof(f: &Fixture, key: &DpopKey, token: &str) -> String {
    proof_with(key, &proof_claims(f, token))
}

fn proof_claims(f: &Fixture, token: &str) -> Value {
    let n = JTI.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    json!({
        "jti": format!("proof-{n}-{}", now()),
        "htm": "POST",
        "htu": format!("http://{}/mcp", f.server.addr),
        "iat": now(),
        "ath": B64.encode(Sha256::digest(token.as_bytes())),
    })
}

fn list_dpop(f: &Fixture, scheme: &str, token: &str, proof: Option<&str>) -> RawResponse {
    let authorization = format!("{scheme} {token}");
    let mut headers = vec![("Authorization", authorization.as_str())];
    if let Some(p) = proof {
        headers.push(("DPoP", p));
    }
    raw_mcp(&f.server.addr, "tools/list", json!({}), &headers).unwrap()
}

/// Assert a 401 in the DPoP scheme with `error` and `description`.
fn dpop_refused(r: &RawResponse, error: &str, description: &str) {
    assert_eq!(r.status, 401, "{description}: {r:?}");
    let challenge = r
        .header("WWW-Authenticate")
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        challenge.starts_with("DPoP algs=\"RS256 ES256 EdDSA\", resource_metadata=")
            && challenge.contains(&format!("error=\"{error}\""))
            && challenge.contains(&format!("error_description=\"{description}")),
        "{description}: {challenge}"
    );
}

#[test]
fn a_dpop_bound_token_needs_a_fresh_proof_of_its_key_for_this_request() {
    let f = start();
    let key = dpop_key();
    let token = dpop_bound_token(&f, &key);

    // Token and proof: in, once.
    let good = proof(&f, &key, &token);
    assert_eq!(list_dpop(&f, "DPoP", &token, Some(&good)).status, 200);
    dpop_refused(
        &list_dpop(&f, "DPoP", &token, Some(&good)),
        "invalid_dpop_proof",
        "the proof was used before (jti)",
    );
    // A reload does not forget it.
    let (ok, reloaded) = common::ctl(&f.server, &["reload"]);
    assert!(ok, "{reloaded}");
    dpop_refused(
        &list_dpop(&f, "DPoP", &token, Some(&good)),
        "invalid_dpop_proof",
        "the proof was used before (jti)",
    );

    // Each claim is checked.
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = proof_claims(&f, &token);
        edit(&mut c);
        proof_with(&key, &c)
    };
    for (edit, description) in [
        (
            &(|c: &mut Value| c["htm"] = json!("GET")) as &dyn Fn(&mut Value),
            "the proof is for another method (htm is not POST)",
        ),
        (
            &|c: &mut Value| c["htu"] = json!("http://other.test/mcp"),
            "the proof is for another URL (htu)",
        ),
        (
            &|c: &mut Value| c["htu"] = json!(format!("https://{}/mcp", f.server.addr)),
            "the proof is for another URL (htu)",
        ),
        (
            &|c: &mut Value| c["iat"] = json!(now() - 600),
            "the proof is older than 60 s (iat)",
        ),
        (
            &|c: &mut Value| c["iat"] = json!(now() + 600),
            "the proof was made in the future (iat)",
        ),
        (
            &|c: &mut Value| c["ath"] = json!(B64.encode(Sha256::digest(b"another token"))),
            "the proof is not for this access token (ath)",
        ),
        (
            &|c: &mut Value| {
                c.as_object_mut().unwrap().remove("jti");
            },
            "the proof has no jti",
        ),
    ] {
        dpop_refused(
            &list_dpop(&f, "DPoP", &token, Some(&with(edit))),
            "invalid_dpop_proof",
            description,
        );
    }

    // A proof by another key: the token is bound to this one.
    let other = dpop_key();
    dpop_refused(
        &list_dpop(&f, "DPoP", &token, Some(&proof(&f, &other, &token))),
        "invalid_token",
        "the token is bound to another DPoP key (cnf.jkt)",
    );
    // A proof whose jwk is not the key that signed it.
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("dpop+jwt".into());
    h.jwk = Some(serde_json::from_value(key.jwk.clone()).unwrap());
    let forged = jsonwebtoken::encode(
        &h,
        &proof_claims(&f, &token),
        &EncodingKey::from_ec_der(&other.pkcs8),
    )
    .unwrap();
    dpop_refused(
        &list_dpop(&f, "DPoP", &token, Some(&forged)),
        "invalid_dpop_proof",
        "the proof's signature does not verify with its jwk",
    );
    // Not a DPoP proof at all (a plain JWT).
    dpop_refused(
        &list_dpop(&f, "DPoP", &token, Some(&token)),
        "invalid_dpop_proof",
        "the proof's typ is not dpop+jwt",
    );
    // No proof, or two.
    dpop_refused(
        &list_dpop(&f, "DPoP", &token, None),
        "invalid_dpop_proof",
        "no DPoP header with the request",
    );
    let authorization = format!("DPoP {token}");
    let (p1, p2) = (proof(&f, &key, &token), proof(&f, &key, &token));
    let r = raw_mcp(
        &f.server.addr,
        "tools/list",
        json!({}),
        &[
            ("Authorization", authorization.as_str()),
            ("DPoP", p1.as_str()),
            ("DPoP", p2.as_str()),
        ],
    )
    .unwrap();
    dpop_refused(&r, "invalid_dpop_proof", "more than one DPoP header");

    // The bound token as a bearer token: refused, with or without a proof.
    refused(
        &list_dpop(&f, "Bearer", &token, Some(&proof(&f, &key, &token))),
        "the token is DPoP-bound: send it as Authorization: DPoP",
    );
    // An unbound token in the DPoP scheme.
    let plain = ed_token(&f.keys, &claims("alice", &["analysts"]));
    dpop_refused(
        &list_dpop(&f, "DPoP", &plain, Some(&proof(&f, &key, &plain))),
        "invalid_token",
        "the token is not DPoP-bound (no cnf.jkt)",
    );
    // A token bound to a client certificate, over a connection without one.
    let mut c = claims("alice", &["analysts"]);
    c["cnf"] = json!({"x5t#S256": B64.encode([7u8; 32])});
    refused(
        &list(&f, &ed_token(&f.keys, &c)),
        "the token is bound to a client certificate (cnf.x5t#S256) this connection did not present",
    );
    // A confirmation method Airlock cannot check is not taken as no binding.
    let mut c = claims("alice", &["analysts"]);
    c["cnf"] = json!({"jwk": key.jwk});
    refused(
        &list(&f, &ed_token(&f.keys, &c)),
        "the token is bound by a confirmation method Airlock cannot check (cnf.jwk)",
    );

    // The benign client goes on: a fresh proof is accepted, and so are plain bearer tokens
    // (DPoP is not required here).
    assert_eq!(
        list_dpop(&f, "DPoP", &token, Some(&proof(&f, &key, &token))).status,
        200
    );
    assert_eq!(list(&f, &plain).status, 200);
    let refusals = f.server.log();
    assert!(
        refusals.contains("the proof was used before (jti)"),
        "{refusals}"
    );
}

/// A server taking JWTs only (no API keys), with `auth` added to its `[auth]` table.
fn start_jwt_only(auth: &str) -> Fixture {
    let keys = keys();
    let dir = TempDir::new("auth-jwt");
    std::fs::write(dir.0.join("jwks.json"), jwks(&keys).to_string()).unwrap();
    let config = dir.config(&format!(
        "[auth]\nmode = \"jwt\"\nresource = \"{RESOURCE}\"\nissuer = \"{ISSUER}\"\n\
         jwks_file = \"jwks.json\"\n{auth}\
         [roles]\nreaders = [\"analysts\"]\n\
         [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n"
    ));
    let server = HttpServer::start(&config);
    Fixture {
        _dir: dir,
        server,
        keys,
    }
}

#[test]
fn dpop_or_any_sender_constraint_can_be_required() {
    let f = start_jwt_only("require_dpop = true\ndpop_proof_lifetime = \"30s\"\n");
    let key = dpop_key();
    let plain = ed_token(&f.keys, &claims("alice", &["analysts"]));
    // Without credentials, the challenge is DPoP's.
    let r = raw_mcp(&f.server.addr, "tools/list", json!({}), &[]).unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.header("WWW-Authenticate")
            .unwrap()
            .starts_with("DPoP algs=\"RS256 ES256 EdDSA\", resource_metadata="),
        "{r:?}"
    );
    dpop_refused(
        &list_dpop(&f, "Bearer", &plain, None),
        "invalid_token",
        "DPoP is required: the token must be DPoP-bound (cnf.jkt)",
    );
    let bound = dpop_bound_token(&f, &key);
    assert_eq!(
        list_dpop(&f, "DPoP", &bound, Some(&proof(&f, &key, &bound))).status,
        200
    );
    let mut old = proof_claims(&f, &bound);
    old["iat"] = json!(now() - 90);
    dpop_refused(
        &list_dpop(&f, "DPoP", &bound, Some(&proof_with(&key, &old))),
        "invalid_dpop_proof",
        "the proof is older than 30 s (iat)",
    );
    // The metadata says so.
    let meta = raw_http(
        &f.server.addr,
        "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\n",
        "",
    )
    .unwrap();
    let meta: Value = serde_json::from_str(&meta.body).unwrap();
    assert_eq!(meta["dpop_bound_access_tokens_required"], json!(true));
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["RS256", "ES256", "EdDSA"])
    );
    drop(f);

    // require_sender_constraint: no plain bearer token (nor API key) at all.
    let f = start_jwt_only("require_sender_constraint = true\n");
    refused(
        &list(&f, &ed_token(&f.keys, &claims("alice", &["analysts"]))),
        "only sender-constrained tokens are accepted",
    );
    let bound = dpop_bound_token(&f, &key);
    assert_eq!(
        list_dpop(&f, "DPoP", &bound, Some(&proof(&f, &key, &bound))).status,
        200
    );
}

#[test]
fn a_flood_of_bad_credentials_is_counted_not_logged_line_by_line() {
    // Anyone can send bad credentials: each refusal is counted in the metrics by reason, and
    // the log gets one line a second at most, carrying the count since the last one.
    let dir = TempDir::new("auth-refusal-flood");
    let config = dir.config(&format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[auth]\nmode = \"api-key\"\n\
         [[auth.api_keys]]\nprincipal = \"ci-bot\"\nsha256 = \"{}\"\nroles = [\"readers\"]\n\
         [roles]\nreaders = [\"analysts\"]\n[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n",
        hex::encode(Sha256::digest(API_KEY)),
    ));
    let server = HttpServer::start(&config);
    let started = std::time::Instant::now();
    let flood = 60;
    for i in 0..flood {
        let r = raw_mcp(
            &server.addr,
            "tools/list",
            json!({}),
            &[("Authorization", &format!("Bearer ak-wrong-{i}"))],
        )
        .unwrap();
        assert_eq!(r.status, 401, "{r:?}");
    }
    let seconds = started.elapsed().as_secs() as usize;
    // The benign client is unaffected.
    let ok = raw_mcp(
        &server.addr,
        "tools/list",
        json!({}),
        &[("Authorization", &format!("Bearer {API_KEY}"))],
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    let log = server.log();
    let lines = log.matches("request refused").count();
    assert!(
        (1..=seconds + 2).contains(&lines),
        "{lines} refusal lines for {flood} refusals in {seconds} s:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("request refused") && l.ends_with("refused=1")),
        "the first refusal is logged at once:\n{log}"
    );
    let metrics = log
        .lines()
        .find_map(|l| l.strip_prefix("airlock: serving metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics listener in:\n{log}"))
        .to_owned();
    let scraped = common::raw_http(&metrics, "GET /metrics HTTP/1.1\r\n", "").unwrap();
    assert!(
        scraped.body.contains(&format!(
            "airlock_auth_refused_total{{reason=\"invalid_token\"}} {flood}"
        )),
        "{}",
        scraped.body
    );
}
