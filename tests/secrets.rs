//! Secrets: loaded from files or airlock's environment, injected as a header at egress where
//! the tool cannot read them, exposed as an environment variable only where granted, and
//! redacted to `[REDACTED]` from everything that leaves the host. Real binary, real MCP
//! client, a real HTTP server on 127.0.0.1.

mod common;

use common::{HttpServer, TempDir, TestHttpServer, Transport, client, hostile_wasm, outcome};
use serde_json::json;

const TOKEN: &str = "rpt-9f3c2a7e51d04b88";
const PASSWORD: &str = "pw-4471c0ffee-d2e8";

/// A secrets directory holding `files`, and the `[secrets]` section naming them.
fn secrets_dir(dir: &TempDir, files: &[(&str, &str)]) -> String {
    let d = dir.0.join("secrets");
    std::fs::create_dir_all(&d).unwrap();
    for (name, value) in files {
        // A trailing newline, as `echo` writes it, is not part of the value.
        std::fs::write(d.join(name), format!("{value}\n")).unwrap();
    }
    let names: Vec<String> = files.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    format!(
        "[secrets]\ndir = \"{}\"\nfiles = [{}]\n",
        d.display(),
        names.join(", ")
    )
}

/// `http-fetch` granted `127.0.0.1:<port>`, with `REPORTS_TOKEN` injected there as a bearer
/// token.
fn fetch_with_token(dir: &TempDir, port: u16) -> std::path::PathBuf {
    dir.config(&format!(
        "{}\n[[tool]]\nname = \"http-fetch\"\ncomponent = \"bundled:http-fetch\"\n[tool.grants]\n\
         net = [\"http://127.0.0.1:{port}\"]\n\
         secrets = [{{ name = \"REPORTS_TOKEN\", host = \"127.0.0.1\", header = \"Authorization\", format = \"Bearer {{}}\" }}]\n",
        secrets_dir(dir, &[("REPORTS_TOKEN", TOKEN)]),
    ))
}

fn hostile(grants: &str) -> String {
    format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.grants]\n{grants}\n",
        hostile_wasm().display()
    )
}

#[test]
fn a_header_secret_reaches_only_its_host_and_never_the_tool() {
    let server = TestHttpServer::start();
    let p = server.port;
    let dir = TempDir::new("secret-header");
    let cfg = dir.config(&format!(
        "{}\n[[tool]]\nname = \"http-fetch\"\ncomponent = \"bundled:http-fetch\"\n[tool.grants]\n\
         net = [\"http://127.0.0.1:{p}\", {{ url = \"http://localhost:{p}\", addresses = [\"127.0.0.0/8\"] }}]\n\
         secrets = [{{ name = \"REPORTS_TOKEN\", host = \"127.0.0.1\", header = \"Authorization\", format = \"Bearer {{}}\" }}]\n\n{}",
        secrets_dir(&dir, &[("REPORTS_TOKEN", TOKEN)]),
        hostile(&format!(
            "net = [\"http://127.0.0.1:{p}\"]\nsecrets = [{{ name = \"REPORTS_TOKEN\", host = \"127.0.0.1\", header = \"X-Reports-Key\" }}]"
        ))
    ));
    let s = client(
        "auto",
        Transport::Stdio(Some(&cfg)),
        json!({"calls": [
            {"id": "echo", "tool": "http_fetch", "args": {"url": format!("http://127.0.0.1:{p}/headers")}},
            {"id": "elsewhere", "tool": "http_fetch", "args": {"url": format!("http://localhost:{p}/headers")}},
            {"id": "ambient", "tool": "fixture_ambient", "args": {}}
        ]}),
    );
    let seen = server.seen();
    let to_granted_host = seen
        .iter()
        .find(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == "host" && v.starts_with("127.0.0.1"))
        })
        .expect("a request to 127.0.0.1");
    assert!(
        to_granted_host
            .headers
            .contains(&("authorization".into(), format!("Bearer {TOKEN}"))),
        "{to_granted_host:?}"
    );
    // The server echoed the header; the value comes back redacted.
    let body = s.call("echo")["structured"]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(body.contains("authorization: Bearer [REDACTED]"), "{body}");
    // Another host, though granted and the same server, does not get the secret.
    let to_other_host = seen
        .iter()
        .find(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == "host" && v.starts_with("localhost"))
        })
        .expect("a request to localhost");
    assert!(
        !to_other_host
            .headers
            .iter()
            .any(|(k, _)| k == "authorization"),
        "{to_other_host:?}"
    );
    assert_eq!(s.call("elsewhere")["structured"]["status"], 200);
    // A header grant puts nothing in the tool's environment.
    assert_eq!(s.call("ambient")["structured"]["env"], json!([]));
    let everything = format!("{}{}", s.report, s.stderr);
    assert!(
        !everything.contains(TOKEN),
        "the value leaked:\n{everything}"
    );
}

#[test]
fn an_exposed_secret_is_readable_by_the_tool_and_redacted_everywhere_it_leaves() {
    let dir = TempDir::new("secret-env");
    let cfg = dir.config(&format!(
        "{}\n{}",
        secrets_dir(&dir, &[("DB_PASSWORD", PASSWORD)]),
        hostile("secrets = [{ name = \"DB_PASSWORD\", expose = \"env\" }]")
    ));
    let s = client(
        "auto",
        Transport::Stdio(Some(&cfg)),
        json!({"calls": [
            {"id": "reveal", "tool": "fixture_env", "args": {"name": "DB_PASSWORD"}},
            {"id": "ambient", "tool": "fixture_ambient", "args": {}},
            {"id": "home", "tool": "fixture_env", "args": {"name": "HOME"}}
        ]}),
    );
    assert_eq!(
        s.call("reveal")["text"],
        "value is [REDACTED]",
        "{}",
        s.report
    );
    assert_eq!(
        s.call("ambient")["structured"]["env"],
        json!(["DB_PASSWORD"])
    );
    assert_eq!(outcome(s.call("home")), "tool_failed");
    for leak in ["stdout has", "stderr has", "log has"] {
        assert!(
            s.stderr.contains(&format!("{leak} [REDACTED]")),
            "no redacted `{leak}` in the log:\n{}",
            s.stderr
        );
    }
    let everything = format!("{}{}", s.report, s.stderr);
    assert!(
        !everything.contains(PASSWORD),
        "the value leaked:\n{everything}"
    );

    let state = common::shared_state_dir();
    let cfg = cfg.to_str().unwrap();
    let out = common::run_airlock(&[
        "tools",
        "--config",
        cfg,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("holds a readable secret"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    let out = common::run_airlock(&[
        "tools",
        "--json",
        "--config",
        cfg,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["components"][0]["holds_readable_secret"], true);
    assert_eq!(
        listed["components"][0]["grants"]["secrets"][0]["id"],
        "secret:DB_PASSWORD:env"
    );
}

#[test]
fn a_secret_from_the_environment_is_injected_over_http() {
    let upstream = TestHttpServer::start();
    let p = upstream.port;
    let dir = TempDir::new("secret-envsource");
    let cfg = dir.config(&format!(
        "[secrets]\nenv = [\"AIRLOCK_TEST_API_KEY\"]\n\n[[tool]]\nname = \"http-fetch\"\ncomponent = \"bundled:http-fetch\"\n\
         [tool.grants]\nnet = [\"http://127.0.0.1:{p}\"]\n\
         secrets = [{{ name = \"AIRLOCK_TEST_API_KEY\", host = \"127.0.0.1\", header = \"X-Api-Key\" }}]\n"
    ));
    let server = HttpServer::start_with_env(&cfg, &[("AIRLOCK_TEST_API_KEY", TOKEN)]);
    let s = client(
        "auto",
        Transport::Http(&server.url),
        json!({"calls": [{"id": "f", "tool": "http_fetch", "args": {"url": format!("http://127.0.0.1:{p}/headers")}}]}),
    );
    assert_eq!(s.call("f")["structured"]["status"], 200, "{}", s.report);
    assert!(
        upstream.seen()[0]
            .headers
            .contains(&("x-api-key".into(), TOKEN.into())),
        "{:?}",
        upstream.seen()
    );
    assert!(!s.report.to_string().contains(TOKEN));
    assert!(!server.log().contains(TOKEN), "{}", server.log());

    // Without the variable the configuration does not load.
    let state = common::shared_state_dir();
    let (ok, err) = common::check(&cfg, &state);
    assert!(!ok);
    assert!(
        err.contains(
            "secrets › env: secret AIRLOCK_TEST_API_KEY is not set in airlock's environment"
        ),
        "{err}"
    );
}

#[test]
fn bad_secret_configuration_stops_the_start() {
    let dir = TempDir::new("secret-bad");
    let state = common::shared_state_dir();
    let declared = secrets_dir(&dir, &[("GOOD_TOKEN", TOKEN)]);
    let fetch = |grants: &str| {
        format!(
            "[[tool]]\nname = \"http-fetch\"\ncomponent = \"bundled:http-fetch\"\n[tool.grants]\nnet = [\"https://api.example.com\"]\n{grants}\n"
        )
    };
    let cases = [
        (
            format!(
                "{declared}{}",
                fetch("secrets = [{ name = \"MISSING\", expose = \"env\" }]")
            ),
            "grants › secrets[0]: secret MISSING is not declared in [secrets]",
        ),
        (
            format!(
                "{declared}{}",
                fetch(
                    "secrets = [{ name = \"GOOD_TOKEN\", host = \"api.other.com\", header = \"Authorization\" }]"
                )
            ),
            "no net grant of this tool covers api.other.com, so the header would never be sent",
        ),
        (
            format!(
                "{declared}{}",
                fetch(
                    "secrets = [{ name = \"GOOD_TOKEN\", host = \"api.example.com\", header = \"Authorization\", format = \"Bearer\" }]"
                )
            ),
            "must contain `{}` exactly once",
        ),
        (
            format!("{}{}", secrets_dir(&dir, &[("SHORT", "abc")]), fetch("")),
            "secrets › files: secret SHORT is shorter than 8 bytes",
        ),
        (
            format!("[secrets]\nfiles = [\"GOOD_TOKEN\"]\n{}", fetch("")),
            "secrets › dir: `files` needs `dir`",
        ),
        (
            format!(
                "[secrets]\ndir = \"{}\"\nfiles = [\"ABSENT\"]\n{}",
                dir.0.join("secrets").display(),
                fetch("")
            ),
            "secrets › files: cannot read secret ABSENT from",
        ),
    ];
    for (config, problem) in cases {
        let cfg = dir.config(&config);
        let (ok, err) = common::check(&cfg, &state);
        assert!(!ok, "accepted:\n{config}");
        assert!(err.contains(problem), "{problem}\n---\n{err}");
        assert!(!err.contains(TOKEN), "{err}");
    }
}

#[test]
fn an_injected_secret_echoed_back_in_any_common_encoding_is_scrubbed_before_the_tool_reads_it() {
    use base64::Engine as _;
    let server = TestHttpServer::start();
    let p = server.port;
    let dir = TempDir::new("secret-reflect");
    let cfg = fetch_with_token(&dir, p);
    let s = client(
        "auto",
        Transport::Stdio(Some(&cfg)),
        json!({"calls": [
            {"id": "reflect", "tool": "http_fetch", "args": {"url": format!("http://127.0.0.1:{p}/reflect"), "all_headers": true}}
        ]}),
    );
    let c = s.call("reflect");
    assert_eq!(c["structured"]["status"], 200, "{c}");
    // The server did get the secret, and echoed it.
    assert!(
        server.seen().iter().any(|r| r
            .headers
            .contains(&("authorization".into(), format!("Bearer {TOKEN}")))),
        "the secret was not sent"
    );
    let seen_by_tool = c.to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE;
    let forms = [
        TOKEN.to_owned(),
        b64.encode(format!("Bearer {TOKEN}")),
        b64url.encode(format!("xBearer {TOKEN}")),
        hex::encode(TOKEN),
    ];
    for form in &forms {
        // The whole encoded header holds the token's encoding at some alignment; no part of
        // 12 characters or more of its middle may survive.
        let middle = &form[form.len() / 2 - 6..form.len() / 2 + 6];
        assert!(
            !seen_by_tool.contains(middle),
            "`{middle}` (from {form}) reached the tool:\n{seen_by_tool}"
        );
    }
    let body = c["structured"]["body"].as_str().unwrap();
    for encoding in ["plain", "base64", "base64url", "hex", "percent"] {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("authorization {encoding}:")))
            .unwrap_or_else(|| panic!("no {encoding} line:\n{body}"));
        assert!(line.contains("[REDACTED]"), "{line}");
    }
    // The response header was scrubbed too.
    assert!(seen_by_tool.contains("Bearer [REDACTED]"), "{seen_by_tool}");
    let everything = format!("{}{}", s.report, s.stderr);
    assert!(
        !everything.contains(TOKEN),
        "the value leaked:\n{everything}"
    );
}

#[test]
fn a_nested_call_never_carries_a_secret_into_the_audit_log_or_the_log() {
    // The caller put a secret into a nested call's arguments and into a nested tool name; the
    // target audits its arguments in full. Neither the record nor the log holds the value, and
    // the marker names no secret.
    let dir = TempDir::new("secret-nested");
    let cfg = dir.config(&format!(
        "{}\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\naudit_arguments = \"full\"\n",
        secrets_dir(&dir, &[("DB_PASSWORD", PASSWORD)]),
        hostile_wasm().display()
    ));
    let s = client(
        "auto",
        Transport::Stdio(Some(&cfg)),
        json!({"calls": [
            {"id": "args", "tool": "fixture_nest", "args": {"tool": "fixture_echo", "arguments": {"message": format!("pw {PASSWORD}")}}},
            {"id": "name", "tool": "fixture_nest", "args": {"tool": format!("x{PASSWORD}"), "arguments": {}}}
        ]}),
    );
    let audit = common::audit_files(s.audit_dir.as_ref().unwrap())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(
        !audit.contains(PASSWORD),
        "the audit log holds the secret:\n{audit}"
    );
    assert!(
        !s.stderr.contains(PASSWORD),
        "the log holds the secret:\n{}",
        s.stderr
    );
    assert!(audit.contains("\"message\":\"pw [REDACTED]\""), "{audit}");
    assert!(audit.contains("\"tool\":\"x[REDACTED]\""), "{audit}");
    assert!(
        !audit.contains("REDACTED:"),
        "a marker names a secret:\n{audit}"
    );
}

#[test]
fn an_encoded_response_to_a_request_carrying_a_secret_is_refused() {
    // The host cannot scrub what the guest would decode itself, so such a response never
    // reaches the tool.
    let server = TestHttpServer::start();
    let p = server.port;
    let dir = TempDir::new("secret-encoded");
    let cfg = fetch_with_token(&dir, p);
    let s = client(
        "auto",
        Transport::Stdio(Some(&cfg)),
        json!({"calls": [
            {"id": "encoded", "tool": "http_fetch", "args": {"url": format!("http://127.0.0.1:{p}/encoded")}}
        ]}),
    );
    let c = s.call("encoded");
    assert_eq!(c["is_error"], true, "{c}");
    assert!(
        c["text"].as_str().unwrap().contains("encoded")
            || c["text"].as_str().unwrap().contains("content coding"),
        "{c}"
    );
    // The request went out with the secret, and asked for no encoding.
    let seen = server.seen();
    assert!(
        seen[0]
            .headers
            .contains(&("accept-encoding".into(), "identity".into())),
        "{seen:?}"
    );
    let everything = format!("{}{}", s.report, s.stderr);
    assert!(
        !everything.contains(TOKEN),
        "the value leaked:\n{everything}"
    );
}
