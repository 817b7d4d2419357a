//! The supply chain: components pulled from a real OCI registry (Debian's docker-registry,
//! started here) by tag and by digest, cached so a restart with the registry down still
//! serves, tags held to the digest the lock recorded; cosign-compatible signatures (valid,
//! missing, untrusted key, another artifact's signature, tampered artifact); and the refusals
//! of what is not a component, a wrong digest and an unpinned `https://` source.

mod common;

use common::*;
use serde_json::json;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Distribution registry (v2 API) on a free loopback port, storing in `dir`.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        Registry::start_on(dir, free_port())
    }

    fn start_on(dir: &Path, port: u16) -> Registry {
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (scripts/setup installs it)");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while registry_http(&addr, "GET", "/v2/", &[], &[]).map(|r| r.0) != Some(200) {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// One HTTP/1.1 request with a binary body: the status, the headers and the body.
fn registry_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    Some((status, head, response[split + 4..].to_vec()))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Push a blob and a one-layer manifest with raw registry calls (for artifacts `airlock
/// publish` would refuse); the manifest's digest.
fn push_raw(addr: &str, repo: &str, tag: &str, layer_type: &str, layer: &[u8]) -> String {
    let config = b"{}".to_vec();
    for blob in [&config, &layer.to_vec()] {
        // An upload session, then the whole blob in one PUT.
        let (status, head, _) = registry_http(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(status, 202, "{head}");
        let location = head
            .lines()
            .find_map(|l| l.strip_prefix("Location: "))
            .expect("an upload location");
        let path = location
            .strip_prefix(&format!("http://{addr}"))
            .unwrap_or(location);
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, head, _) = registry_http(
            addr,
            "PUT",
            &format!("{path}{separator}digest={}", sha256(blob)),
            &[("Content-Type", "application/octet-stream")],
            blob,
        )
        .unwrap();
        assert_eq!(status, 201, "{head}");
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": sha256(layer), "size": layer.len()}]
    }))
    .unwrap();
    put_manifest(addr, repo, tag, &manifest);
    sha256(&manifest)
}

fn put_manifest(addr: &str, repo: &str, tag: &str, manifest: &[u8]) {
    let (status, head, _) = registry_http(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        manifest,
    )
    .unwrap();
    assert_eq!(status, 201, "{head}");
}

fn get_manifest(addr: &str, repo: &str, reference: &str) -> Vec<u8> {
    let (status, head, body) = registry_http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        &[],
    )
    .unwrap();
    assert_eq!(status, 200, "{head}");
    body
}

/// `airlock ARGS` must succeed; its output.
fn airlock_ok(args: &[&str]) -> String {
    let (ok, out) = run_airlock_text(args);
    assert!(ok, "airlock {args:?}:\n{out}");
    out
}

/// The digest `airlock publish` printed.
fn published_digest(out: &str) -> String {
    out.split_whitespace()
        .skip_while(|w| *w != "digest")
        .nth(1)
        .expect("publish prints the digest")
        .to_owned()
}

/// The hostile fixture with its echo tool's description changed (same length: still a valid
/// component, with another digest).
fn redescribed(dir: &Path, name: &str, text: &[u8; 19]) -> PathBuf {
    let mut bytes = std::fs::read(hostile_wasm()).unwrap();
    let at = bytes
        .windows(19)
        .position(|w| w == b"Echoes its message.")
        .expect("the fixture's description");
    bytes[at..at + 19].copy_from_slice(text);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn keys(dir: &Path) -> (String, String) {
    let team = dir.join("team");
    let other = dir.join("other");
    airlock_ok(&["keygen", team.to_str().unwrap()]);
    airlock_ok(&["keygen", other.to_str().unwrap()]);
    (
        format!("{}.key", team.display()),
        format!("{}.key", other.display()),
    )
}

fn trust(registry: &Registry, require: bool) -> String {
    format!(
        "[trust]\nrequire_signatures = {require}\n[trust.keys]\nteam = \"team.pub\"\n\
         [trust.registries.\"{}\"]\nplain_http = true\n",
        registry.addr
    )
}

#[test]
fn signed_components_from_a_registry_serve_by_tag_and_digest_and_from_the_cache() {
    let dir = TempDir::new("supply-pull");
    let (team_key, _) = keys(&dir.0);
    let registry = Registry::start(&dir.0);
    let reg = registry.addr.clone();
    let wasm = hostile_wasm();
    let out = airlock_ok(&[
        "publish",
        wasm.to_str().unwrap(),
        &format!("oci://{reg}/tools/echo:1.0"),
        "--plain-http",
        "--sign",
        &team_key,
    ]);
    let digest = published_digest(&out);
    assert!(out.contains("signed oci://"), "{out}");
    let component_sha = hex::encode(sha2::Sha256::digest(std::fs::read(&wasm).unwrap()));

    // verify-component reports the digest and the signer.
    let out = airlock_ok(&[
        "verify-component",
        &format!("oci://{reg}/tools/echo:1.0"),
        "--key",
        dir.0.join("team.pub").to_str().unwrap(),
        "--plain-http",
    ]);
    assert!(
        out.contains(&component_sha) && out.contains("signer  team"),
        "{out}"
    );

    // By tag (rate-limited so the second entry is a distinct component) and by digest.
    let config = dir.config(&format!(
        "{}[[tool]]\nname = \"bytag\"\ncomponent = \"oci://{reg}/tools/echo:1.0\"\ntools = [\"fixture_echo\"]\n\
         [[tool]]\nname = \"bydigest\"\ncomponent = \"oci://{reg}/tools/echo@{digest}\"\ntools = [\"fixture_work\"]\n",
        trust(&registry, true)
    ));
    let audit = fresh_audit_dir();
    let server = HttpServer::start_in(&config, &[], &audit);
    let r = tool_result(&server, "fixture_echo", json!({"message": "hi"}));
    assert_eq!(result_outcome(&r), "completed", "{r}");
    // Provenance: the digest and the signer in the call's record.
    assert!(
        audit_records(&server.audit_dir).iter().any(|rec| {
            rec["kind"] == "call"
                && rec["tool"] == "fixture_echo"
                && rec["component_sha256"] == component_sha.as_str()
                && rec["signer"] == "team"
        }),
        "{:?}",
        audit_records(&server.audit_dir)
    );
    // The tag was resolved once and recorded.
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("airlock.lock")).unwrap())
            .unwrap();
    assert_eq!(
        lock["sources"][format!("oci://{reg}/tools/echo:1.0")],
        digest.as_str()
    );
    drop(server);
    // The operator pins the tools' metadata too.
    airlock_ok(&[
        "lock",
        config.to_str().unwrap(),
        "--state-dir",
        dir.0.join("state").to_str().unwrap(),
    ]);

    // The registry is down: a restart serves from the cache, signatures included.
    let port: u16 = reg.rsplit_once(':').unwrap().1.parse().unwrap();
    drop(registry);
    let server = HttpServer::start_in(&config, &[], &audit);
    let r = tool_result(&server, "fixture_echo", json!({"message": "cached"}));
    assert_eq!(result_outcome(&r), "completed", "{r}\n{}", server.log());
    drop(server);

    // The tag moves to an unsigned build: later starts keep the recorded digest, and
    // `lock --update-tags` refuses the unsigned build and keeps the lock as it was.
    let registry = Registry::start_on(&dir.0, port);
    let moved = redescribed(&dir.0, "moved.wasm", b"Echoes ALL secrets.");
    let moved_digest = published_digest(&airlock_ok(&[
        "publish",
        moved.to_str().unwrap(),
        &format!("oci://{reg}/tools/echo:1.0"),
        "--plain-http",
    ]));
    let server = HttpServer::start_in(&config, &[], &audit);
    let listed = tools_listed(&server);
    let echo = listed.iter().find(|t| t["name"] == "fixture_echo").unwrap();
    assert_eq!(echo["description"], "Echoes its message.");
    drop(server);
    let state = dir.0.join("state");
    let (ok, out) = run_airlock_text(&[
        "lock",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--update-tags",
    ]);
    assert!(
        !ok && out.contains("is not signed by a trusted key"),
        "{out}"
    );
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("airlock.lock")).unwrap())
            .unwrap();
    assert_eq!(
        lock["sources"][format!("oci://{reg}/tools/echo:1.0")],
        digest.as_str()
    );

    // Signed (by digest: a tag is refused), the moved tag can be taken. --check shows it and
    // writes nothing; the changed description must be accepted explicitly.
    let (ok, out) = run_airlock_text(&[
        "sign",
        "--key",
        &team_key,
        &format!("oci://{reg}/tools/echo:1.0"),
        "--plain-http",
    ]);
    assert!(!ok && out.contains("names a tag: sign a digest"), "{out}");
    airlock_ok(&[
        "sign",
        "--key",
        &team_key,
        &format!("oci://{reg}/tools/echo@{moved_digest}"),
        "--plain-http",
    ]);
    let lock_file = dir.0.join("airlock.lock");
    let before = std::fs::read(&lock_file).unwrap();
    let cfg = config.to_str().unwrap();
    let sd = state.to_str().unwrap();
    let tag_line = format!("~ oci://{reg}/tools/echo:1.0: {digest} → {moved_digest}");
    let (ok, out) = run_airlock_text(&["lock", cfg, "--state-dir", sd, "--check", "--update-tags"]);
    assert!(!ok && out.contains(&tag_line), "{out}");
    assert_eq!(std::fs::read(&lock_file).unwrap(), before, "--check wrote");
    let (ok, out) = run_airlock_text(&["lock", cfg, "--state-dir", sd, "--update-tags"]);
    assert!(
        !ok && out.contains("description changed")
            && out.contains("airlock lock --update-tags --accept-changes"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&lock_file).unwrap(),
        before,
        "refused, yet wrote"
    );
    let out = airlock_ok(&[
        "lock",
        cfg,
        "--state-dir",
        sd,
        "--update-tags",
        "--accept-changes",
    ]);
    assert!(out.contains(&tag_line), "{out}");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&lock_file).unwrap()).unwrap();
    assert_eq!(
        lock["sources"][format!("oci://{reg}/tools/echo:1.0")],
        moved_digest.as_str()
    );
    let server = HttpServer::start_in(&config, &[], &audit);
    let listed = tools_listed(&server);
    let echo = listed.iter().find(|t| t["name"] == "fixture_echo").unwrap();
    assert_eq!(echo["description"], "Echoes ALL secrets.");
    drop(server);
    drop(registry);
}

#[test]
fn unsigned_untrusted_misattributed_and_tampered_components_do_not_load() {
    let dir = TempDir::new("supply-sign");
    let (team_key, other_key) = keys(&dir.0);
    let registry = Registry::start(&dir.0);
    let reg = registry.addr.clone();
    let state = dir.0.join("state");
    let load = |component: &str, extra: &str, require: bool| {
        let config = dir.config(&format!(
            "{}[[tool]]\nname = \"t\"\ncomponent = \"{component}\"\n{extra}",
            trust(&registry, require)
        ));
        check(&config, &state)
    };
    let publish = |file: &Path, tag: &str, key: Option<&str>| {
        let target = format!("oci://{reg}/tools/{tag}");
        let mut args = vec!["publish", file.to_str().unwrap(), &target, "--plain-http"];
        if let Some(k) = key {
            args.extend(["--sign", k]);
        }
        published_digest(&airlock_ok(&args))
    };
    // Each case its own bytes (so its own digest, and its own cached signatures).
    let a = redescribed(&dir.0, "a.wasm", b"Echoes its message!");
    let b = redescribed(&dir.0, "b.wasm", b"Echoes its message?");
    let c = redescribed(&dir.0, "c.wasm", b"Echoes its message;");
    let d = redescribed(&dir.0, "d.wasm", b"Echoes its message,");

    // Missing: no signature in the registry.
    let unsigned = publish(&c, "unsigned:1", None);
    let (ok, err) = load(&format!("oci://{reg}/tools/unsigned:1"), "", true);
    assert!(!ok, "{err}");
    assert!(
        err.contains("tool \"t\" (entry 1) › component")
            && err.contains(&unsigned)
            && err.contains("is not signed by a trusted key: no signature"),
        "{err}"
    );
    // Not required (here, per tool): it loads.
    let (ok, err) = load(
        &format!("oci://{reg}/tools/unsigned:1"),
        "require_signatures = false\n",
        true,
    );
    assert!(ok, "{err}");

    // Signed by a key [trust.keys] does not list.
    publish(&d, "untrusted:1", Some(&other_key));
    let (ok, err) = load(&format!("oci://{reg}/tools/untrusted:1"), "", true);
    assert!(
        !ok && err.contains("none verifying with a key in [trust.keys]"),
        "{err}"
    );

    // A valid signature of another artifact, copied to this one's signature tag.
    let signed = publish(&a, "pair:a", Some(&team_key));
    let other = publish(&b, "pair:b", None);
    let sig = get_manifest(
        &reg,
        "tools/pair",
        &signed.replacen(':', "-", 1).add(".sig"),
    );
    put_manifest(
        &reg,
        "tools/pair",
        &other.replacen(':', "-", 1).add(".sig"),
        &sig,
    );
    let (ok, err) = load(&format!("oci://{reg}/tools/pair@{other}"), "", true);
    assert!(
        !ok && err.contains(&format!("the signature is for another artifact ({signed})")),
        "{err}"
    );
    let (ok, err) = load(&format!("oci://{reg}/tools/pair@{signed}"), "", true);
    assert!(ok, "{err}");

    // A detached signature of a file, then the file changed after signing.
    let local = dir.0.join("local.wasm");
    std::fs::copy(hostile_wasm(), &local).unwrap();
    airlock_ok(&["sign", "--key", &team_key, local.to_str().unwrap()]);
    assert!(dir.0.join("local.wasm.sig").exists());
    let (ok, err) = load("local.wasm", "", true);
    assert!(ok, "{err}");
    let mut bytes = std::fs::read(&local).unwrap();
    let at = bytes
        .windows(19)
        .position(|w| w == b"Echoes its message.")
        .unwrap();
    bytes[at] = b'e';
    std::fs::write(&local, bytes).unwrap();
    let (ok, err) = load("local.wasm", "", true);
    assert!(
        !ok && err.contains("none verifying with a key in [trust.keys]"),
        "{err}"
    );
    // Without the signature file: missing.
    std::fs::remove_file(dir.0.join("local.wasm.sig")).unwrap();
    let (ok, err) = load("local.wasm", "", true);
    assert!(!ok && err.contains("no signature (no "), "{err}");

    drop(registry);
}

trait Add {
    fn add(self, tail: &str) -> String;
}

impl Add for String {
    fn add(mut self, tail: &str) -> String {
        self.push_str(tail);
        self
    }
}

#[test]
fn what_is_not_a_pinned_component_is_refused_by_name() {
    let dir = TempDir::new("supply-refuse");
    airlock_ok(&["keygen", dir.0.join("team").to_str().unwrap()]);
    let keys = "[trust.keys]\nteam = \"team.pub\"\n";
    let registry = Registry::start(&dir.0);
    let reg = registry.addr.clone();
    let state = dir.0.join("state");
    let load = |component: &str, extra: &str, trust_extra: &str| {
        let config = dir.config(&format!(
            "[trust]\n{trust_extra}[trust.registries.\"{reg}\"]\nplain_http = true\n\
             [[tool]]\nname = \"t\"\ncomponent = \"{component}\"\n{extra}"
        ));
        check(&config, &state)
    };

    // A core module, and an image whose layer is a tarball: not components.
    push_raw(&reg, "x/core", "1", "application/wasm", b"\0asm\x01\0\0\0");
    let (ok, err) = load(&format!("oci://{reg}/x/core:1"), "", "");
    assert!(
        !ok && err.contains("it is a core Wasm module, not a component"),
        "{err}"
    );
    push_raw(
        &reg,
        "x/image",
        "1",
        "application/vnd.oci.image.layer.v1.tar",
        b"not a tarball either",
    );
    let (ok, err) = load(&format!("oci://{reg}/x/image:1"), "", "");
    assert!(
        !ok && err.contains("it is not a Wasm component artifact"),
        "{err}"
    );

    // A digest the registry does not hold, and a sha256 pin the component does not match.
    let wasm = hostile_wasm();
    let digest = published_digest(&airlock_ok(&[
        "publish",
        wasm.to_str().unwrap(),
        &format!("oci://{reg}/x/echo:1"),
        "--plain-http",
    ]));
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (ok, err) = load(&format!("oci://{reg}/x/echo@{wrong}"), "", "");
    assert!(!ok && err.contains("cannot pull the manifest"), "{err}");
    let (ok, err) = load(
        &format!("oci://{reg}/x/echo@{digest}"),
        &format!("sha256 = \"{}\"\n", "1".repeat(64)),
        "",
    );
    assert!(!ok && err.contains("does not match"), "{err}");

    // A tag where the configuration requires digests.
    let (ok, err) = load(
        &format!("oci://{reg}/x/echo:1"),
        "",
        "require_digests = true\n",
    );
    assert!(!ok && err.contains("require_digests"), "{err}");
    let (ok, err) = load(
        &format!("oci://{reg}/x/echo@{digest}"),
        "",
        "require_digests = true\n",
    );
    assert!(ok, "{err}");

    // A cached component changed on disk is not served: pulled again while the registry is
    // up, refused while it is down.
    let cached = state
        .join("cache/components/oci/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .join("component.wasm");
    let tamper = || {
        let mut bytes = std::fs::read(&cached).unwrap();
        let at = bytes
            .windows(19)
            .position(|w| w == b"Echoes its message.")
            .unwrap();
        bytes[at] = b'e';
        std::fs::write(&cached, bytes).unwrap();
    };
    tamper();
    let (ok, err) = load(&format!("oci://{reg}/x/echo@{digest}"), "", "");
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(&wasm).unwrap(),
        "pulled again"
    );
    // The registry down: signatures that cannot be fetched stop only a load that requires
    // them.
    let port: u16 = reg.rsplit_once(':').unwrap().1.parse().unwrap();
    drop(registry);
    let (ok, err) = load(&format!("oci://{reg}/x/echo@{digest}"), "", keys);
    assert!(ok, "{err}");
    let (ok, err) = load(
        &format!("oci://{reg}/x/echo@{digest}"),
        "require_signatures = true\n",
        keys,
    );
    assert!(
        !ok && err.contains("the signatures could not be fetched"),
        "{err}"
    );
    tamper();
    let (ok, err) = load(&format!("oci://{reg}/x/echo@{digest}"), "", "");
    assert!(!ok && err.contains("cannot pull the manifest"), "{err}");
    let registry = Registry::start_on(&dir.0, port);

    // https:// only with a sha256 pin; pinned and cached, it loads without the network.
    let (ok, err) = load("https://components.invalid/echo.wasm", "", "");
    assert!(!ok && err.contains("needs a sha256 pin"), "{err}");
    let bytes = std::fs::read(&wasm).unwrap();
    let hex_sha = hex::encode(sha2::Sha256::digest(&bytes));
    let cache = state.join("cache/components/https/sha256");
    std::fs::create_dir_all(&cache).unwrap();
    let pin = format!("sha256 = \"{hex_sha}\"\n");
    let (ok, err) = load("https://components.invalid/echo.wasm", &pin, "");
    assert!(
        !ok && err.contains("› component: https://components.invalid:"),
        "{err}"
    );
    // No credentials in a URL (they would be in every log line naming it).
    let (ok, err) = load(
        "https://user:hunter2@components.invalid/echo.wasm",
        &pin,
        "",
    );
    assert!(
        !ok && err.contains("no credentials in the URL") && !err.contains("hunter2"),
        "{err}"
    );
    std::fs::write(cache.join(format!("{hex_sha}.wasm")), &bytes).unwrap();
    let (ok, err) = load("https://components.invalid/echo.wasm", &pin, "");
    assert!(ok, "{err}");
    // With keys listed but signatures not required, a signature that cannot be fetched
    // does not stop the load; required, it does, and says why.
    let (ok, err) = load("https://components.invalid/echo.wasm", &pin, keys);
    assert!(ok, "{err}");
    let (ok, err) = load(
        "https://components.invalid/echo.wasm",
        &format!("{pin}require_signatures = true\n"),
        keys,
    );
    assert!(
        !ok && err.contains("is not signed by a trusted key: the signatures could not be fetched"),
        "{err}"
    );
    // A registry must be named; credentials never go over plain HTTP to another machine.
    let (ok, err) = load("oci://team/echo:1", "", "");
    assert!(!ok && err.contains("names no registry"), "{err}");
    let config = dir.config(
        "[trust.registries.\"registry.example\"]\n\
         username = \"u\"\npassword_secret = \"REG\"\nplain_http = true\n\
         [[tool]]\nname = \"t\"\ncomponent = \"bundled:text\"\n",
    );
    let (ok, err) = check(&config, &state);
    assert!(
        !ok && err.contains("plain_http") && err.contains("credentials over plain HTTP"),
        "{err}"
    );
    let (ok, out) = run_airlock_text(&[
        "publish",
        wasm.to_str().unwrap(),
        "oci://registry.example/x/echo:1",
        "--plain-http",
        "--username",
        "u",
    ]);
    assert!(!ok && out.contains("password in the clear"), "{out}");
    drop(registry);
}
