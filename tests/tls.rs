//! TLS on the MCP listener (`[server.tls]`): a real TLS client (rustls, trusting a CA made
//! here with openssl) reaches `/healthz` and speaks MCP over TLS 1.3 and 1.2; plain HTTP to
//! the port gets nothing; a renewed certificate is served without a restart; a key other
//! users may read, and a grant that would expose it, stop the start. Mutual TLS: client
//! certificates name principals (SPIFFE id, subject), bind tokens (RFC 8705), and one another
//! CA signed gets no handshake.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`), and a server certificate for localhost and 127.0.0.1 signed by it
/// (`NAME.pem`, `NAME.key`, mode 0600).
fn make_ca(dir: &Path) {
    make_named_ca(dir, "ca");
}

/// A CA of its own (`NAME.pem`, `NAME.key`).
fn make_named_ca(dir: &Path, name: &str) {
    let (key, pem, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=airlock test {name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subject,
        ],
    );
}

fn make_server_cert(dir: &Path, name: &str, cn: &str) {
    make_cert(
        dir,
        "ca",
        name,
        &format!("/CN={cn}"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
}

/// A client certificate signed by CA `ca`, with `subject` and extensions `ext`.
fn make_client_cert(dir: &Path, ca: &str, name: &str, subject: &str, san: Option<&str>) {
    let mut ext = "extendedKeyUsage=clientAuth\n".to_owned();
    if let Some(san) = san {
        ext.push_str(&format!("subjectAltName={san}\n"));
    }
    make_cert(dir, ca, name, subject, &ext);
}

/// A certificate `NAME.pem` (key `NAME.key`, mode 0600) signed by CA `ca`.
fn make_cert(dir: &Path, ca: &str, name: &str, subject: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join(format!("{name}.key")),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// One request over TLS (`Connection: close`), as a client trusting only `ca.pem`: the
/// response, and the certificate the server showed.
fn tls_request(
    addr: &str,
    dir: &Path,
    version: &'static rustls::SupportedProtocolVersion,
    request: &str,
) -> Result<(String, Vec<u8>), String> {
    tls_request_as(addr, dir, version, None, request)
}

/// [`tls_request`], showing client certificate `client` (`NAME.pem`, `NAME.key`) if given.
fn tls_request_as(
    addr: &str,
    dir: &Path,
    version: &'static rustls::SupportedProtocolVersion,
    client: Option<&str>,
    request: &str,
) -> Result<(String, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            config.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A server that closes without close_notify ends the stream with an error after the
    // whole response: what arrived is the answer.
    let _ = tls.read_to_end(&mut response);
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    if response.is_empty() {
        return Err("no response".into());
    }
    Ok((String::from_utf8_lossy(&response).into_owned(), cert))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

#[test]
fn mcp_over_tls_with_a_renewed_certificate_served_without_a_restart() {
    let dir = TempDir::new("tls");
    make_ca(&dir.0);
    make_server_cert(&dir.0, "server", "airlock first");
    let config = dir.config(
        "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
    );
    let server = HttpServer::start(&config);
    assert!(server.url.starts_with("https://"), "{}", server.url);

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (answer, _) = tls_request(&server.addr, &dir.0, version, &get("/healthz")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"tls","version":"1"}}}"#;
    let (answer, first_cert) = tls_request(
        &server.addr,
        &dir.0,
        &rustls::version::TLS13,
        &format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{init}",
            init.len()
        ),
    )
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("serverInfo"),
        "{answer}"
    );

    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = raw_http(&server.addr, "GET /healthz HTTP/1.1\r\n", "");
    assert!(plain.as_ref().is_none_or(|r| r.status != 200), "{plain:?}");

    // Renewal: new files in place; new connections get the new certificate.
    make_server_cert(&dir.0, "renewed", "airlock renewed");
    std::fs::copy(dir.0.join("renewed.key"), dir.0.join("server.key")).unwrap();
    std::fs::copy(dir.0.join("renewed.pem"), dir.0.join("server.pem")).unwrap();
    let renewed = CertificateDer::pem_file_iter(dir.0.join("renewed.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    assert_ne!(renewed, first_cert);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((answer, cert)) = tls_request(
            &server.addr,
            &dir.0,
            &rustls::version::TLS13,
            &get("/healthz"),
        ) && cert == renewed
        {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Turning TLS off is not a reload: refused, and TLS goes on.
    dir.config("[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n");
    server.wait_for_log_count("[server.tls] (on or off, or its files) changed", 1);
    let (answer, _) = tls_request(
        &server.addr,
        &dir.0,
        &rustls::version::TLS13,
        &get("/healthz"),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn an_exposed_tls_key_stops_the_start() {
    let dir = TempDir::new("tls-bad");
    make_ca(&dir.0);
    make_server_cert(&dir.0, "server", "airlock");
    let state = dir.0.join("state");
    let tool = "[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n";
    let tls = "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n";
    let config = dir.config(&format!("{tls}{tool}"));
    let (ok, err) = check(&config, &state);
    assert!(ok, "{err}");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.0.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, err) = check(&config, &state);
    assert!(
        !ok && err.contains("server › tls › key") && err.contains("may be read by other users"),
        "{err}"
    );
    std::fs::set_permissions(
        dir.0.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // A grant of the directory that holds the key.
    let keys = dir.0.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::rename(dir.0.join("server.key"), keys.join("server.key")).unwrap();
    let config = dir.config(&format!(
        "[server.tls]\ncert = \"server.pem\"\nkey = \"keys/server.key\"\n{tool}\
         [[tool.grants.fs]]\nhost = \"keys\"\nguest = \"/keys\"\nmode = \"ro\"\n"
    ));
    let (ok, err) = check(&config, &state);
    assert!(!ok && err.contains("the TLS key"), "{err}");

    // A key that does not belong to the certificate.
    make_server_cert(&dir.0, "other", "other");
    let config = dir.config(&format!(
        "[server.tls]\ncert = \"server.pem\"\nkey = \"other.key\"\n{tool}"
    ));
    let (ok, err) = check(&config, &state);
    assert!(
        !ok && err.contains("server › tls › key") && err.contains("does not fit"),
        "{err}"
    );
}

/// An MCP 2026-07-28 request over TLS as `client` (a certificate name) with extra headers:
/// the HTTP status and the whole response, or why the connection failed.
fn mcp_over_tls(
    server: &HttpServer,
    dir: &Path,
    client: Option<&str>,
    method: &str,
    params: serde_json::Value,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let request = mcp_request("localhost", method, params, headers);
    let (answer, _) = tls_request_as(&server.addr, dir, &rustls::version::TLS13, client, &request)?;
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {answer}"))?;
    Ok((status, answer))
}

#[test]
fn client_certificates_name_principals_and_bind_tokens() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let dir = TempDir::new("mtls");
    make_ca(&dir.0);
    make_server_cert(&dir.0, "server", "airlock");
    make_named_ca(&dir.0, "clients");
    make_named_ca(&dir.0, "rogue");
    make_client_cert(
        &dir.0,
        "clients",
        "billing",
        "/CN=billing-7f3a",
        Some("URI:spiffe://example.org/ns/prod/sa/billing"),
    );
    make_client_cert(
        &dir.0,
        "clients",
        "reporting",
        "/O=Example Corp/CN=reporting",
        None,
    );
    make_client_cert(&dir.0, "clients", "stranger", "/CN=stranger", None);
    make_client_cert(&dir.0, "rogue", "forged", "/CN=reporting", None);
    let (signing, jwks) = token_issuer();
    std::fs::write(dir.0.join("jwks.json"), jwks).unwrap();
    let tool = "[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\nroles = [\"readers\"]\n";
    let jwt = "mode = \"jwt\"\nresource = \"https://localhost/mcp\"\n\
               issuer = \"https://idp.test/\"\njwks_file = \"jwks.json\"\n";
    let mtls = |client_auth: &str, auth: &str| {
        format!(
            "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
             client_ca = \"clients.pem\"\nclient_auth = \"{client_auth}\"\n\
             {}[auth]\n{auth}\
             [[auth.client_certs]]\nprincipal = \"billing\"\n\
             spiffe_id = \"spiffe://example.org/ns/prod/sa/billing\"\nroles = [\"readers\"]\n\
             [[auth.client_certs]]\nprincipal = \"reporting\"\n\
             subject = \"CN=reporting, O=Example Corp\"\nroles = [\"readers\"]\n\
             [roles]\nreaders = [\"analysts\"]\n{tool}",
            if client_auth == "required" {
                "client_crl = \"clients.crl\"\n"
            } else {
                ""
            }
        )
    };
    let server = HttpServer::start(&dir.config(&mtls("optional", jwt)));
    let call = |client: Option<&str>, headers: &[(&str, &str)]| {
        mcp_over_tls(
            &server,
            &dir.0,
            client,
            "tools/call",
            serde_json::json!({"name": "text_stats", "arguments": {"text": "a b"}}),
            headers,
        )
    };

    // A certificate names its principal by SPIFFE id or by subject.
    for who in ["billing", "reporting"] {
        let (status, answer) = call(Some(who), &[]).unwrap();
        assert_eq!(status, 200, "{who}: {answer}");
    }
    let records = audit_records(&server.audit_dir);
    for who in ["billing", "reporting"] {
        assert!(
            records
                .iter()
                .any(|r| r["principal"] == who && r["outcome"] == "completed"),
            "{who}: {records:?}"
        );
    }
    // A certificate the CA signed that names no principal, and no certificate at all.
    let (status, answer) = call(Some("stranger"), &[]).unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("the client certificate (subject CN=stranger) names no principal"),
        "{answer}"
    );
    let (status, _) = call(None, &[]).unwrap();
    assert_eq!(status, 401);
    // A certificate of another CA does not get through the handshake, whatever it says.
    assert!(call(Some("forged"), &[]).is_err());

    // A certificate-bound token (RFC 8705): only with that certificate.
    let billing_der = CertificateDer::pem_file_iter(dir.0.join("billing.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    use sha2::Digest as _;
    let token = bound_token(
        &signing,
        "https://localhost/mcp",
        "alice",
        serde_json::json!({"x5t#S256": b64.encode(sha2::Sha256::digest(&billing_der))}),
    );
    let bearer = format!("Bearer {token}");
    let (status, answer) = call(Some("billing"), &[("Authorization", &bearer)]).unwrap();
    assert_eq!(status, 200, "{answer}");
    let records = audit_records(&server.audit_dir);
    assert!(
        records.iter().any(|r| r["principal"] == "alice"),
        "the token, not the certificate, names the caller: {records:?}"
    );
    for other in [Some("reporting"), Some("stranger"), None] {
        let (status, answer) = call(other, &[("Authorization", &bearer)]).unwrap();
        assert_eq!(status, 401, "{other:?}: {answer}");
        assert!(
            answer.contains("error=\"invalid_token\"")
                && answer.contains("the token is bound to a client certificate (cnf.x5t#S256)"),
            "{other:?}: {answer}"
        );
    }
    // A DPoP-bound token over TLS: the proof names the https URL, once.
    let key = dpop_key();
    let token = bound_token(
        &signing,
        "https://localhost/mcp",
        "alice",
        serde_json::json!({"jkt": key.jkt}),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let proof = |jti: &str, htu: &str| {
        proof_with(
            &key,
            &serde_json::json!({
                "jti": jti, "htm": "POST", "htu": htu, "iat": now,
                "ath": b64.encode(sha2::Sha256::digest(token.as_bytes())),
            }),
        )
    };
    let dpop = format!("DPoP {token}");
    let good = proof("tls-1", "https://localhost/mcp");
    let (status, answer) = call(
        Some("reporting"),
        &[("Authorization", &dpop), ("DPoP", &good)],
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    for (proof, why) in [
        (good.clone(), "the proof was used before (jti)"),
        (
            proof("tls-2", "http://localhost/mcp"),
            "the proof is for another URL (htu)",
        ),
    ] {
        let (status, answer) = call(
            Some("reporting"),
            &[("Authorization", &dpop), ("DPoP", &proof)],
        )
        .unwrap();
        assert_eq!(status, 401, "{answer}");
        assert!(
            answer.contains("error=\"invalid_dpop_proof\"") && answer.contains(why),
            "{why}: {answer}"
        );
    }

    // The metadata says certificate-bound tokens are supported.
    let (answer, _) = tls_request(
        &server.addr,
        &dir.0,
        &rustls::version::TLS13,
        &get("/.well-known/oauth-protected-resource/mcp"),
    )
    .unwrap();
    assert!(
        answer.contains("\"tls_client_certificate_bound_access_tokens\":true"),
        "{answer}"
    );
    drop(server);

    // client_auth = "required": no certificate, no handshake; the benign client is served.
    // With mode = "client-cert": certificates only; and the CA's revocation list, which
    // revokes `reporting`.
    std::fs::write(
        dir.0.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 2\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("index.txt"), "").unwrap();
    std::fs::write(dir.0.join("crlnumber"), "1000\n").unwrap();
    let ca = [
        "-config",
        "ca.cnf",
        "-keyfile",
        "clients.key",
        "-cert",
        "clients.pem",
    ];
    openssl(
        &dir.0,
        &[&["ca"][..], &ca, &["-revoke", "reporting.pem"]].concat(),
    );
    openssl(
        &dir.0,
        &[&["ca"][..], &ca, &["-gencrl", "-out", "clients.crl"]].concat(),
    );
    let server = HttpServer::start(&dir.config(&mtls("required", "mode = \"client-cert\"\n")));
    assert!(
        tls_request(
            &server.addr,
            &dir.0,
            &rustls::version::TLS13,
            &get("/healthz")
        )
        .is_err(),
        "a client without a certificate got through"
    );
    let (status, answer) = mcp_over_tls(
        &server,
        &dir.0,
        Some("billing"),
        "tools/list",
        serde_json::json!({}),
        &[],
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("text_stats"), "{answer}");
    let revoked = mcp_over_tls(
        &server,
        &dir.0,
        Some("reporting"),
        "tools/list",
        serde_json::json!({}),
        &[],
    );
    assert!(
        revoked.is_err(),
        "a revoked certificate got through: {revoked:?}"
    );
    // A token is no way in on a certificates-only server, even beside a good certificate.
    let (status, answer) = mcp_over_tls(
        &server,
        &dir.0,
        Some("billing"),
        "tools/list",
        serde_json::json!({}),
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("this server authenticates by client certificate only")
            && answer.contains("it takes client certificates (mutual TLS)"),
        "{answer}"
    );
}
