//! TLS on the MCP listener (`[server.tls]`): a real TLS client (rustls, trusting a CA made
//! here with openssl) reaches `/healthz` and speaks MCP over TLS 1.3 and 1.2; plain HTTP to
//! the port gets nothing; a renewed certificate is served without a restart; a key other
//! users may read, and a grant that would expose it, stop the start.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
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
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=airlock test CA",
        ],
    );
}

fn make_server_cert(dir: &Path, name: &str, cn: &str) {
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
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
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
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
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
