//! Filesystem grants: the `files` example tool sees exactly its preopened directories, with
//! their modes, and nothing else. Every denial is asserted as the tool reports it.

mod common;

use common::{Session, TempDir, Transport, client};
use serde_json::{Value, json};

/// reports/ (granted ro), scratch/ (granted rw), outside/ (not granted), and a symlink inside
/// the ro grant that points outside it.
fn tree(dir: &TempDir) -> std::path::PathBuf {
    let root = &dir.0;
    std::fs::create_dir_all(root.join("reports/sub")).unwrap();
    std::fs::create_dir_all(root.join("scratch")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("reports/q3.txt"), "revenue 42\ncosts 17\n").unwrap();
    std::fs::write(root.join("reports/sub/q4.txt"), "revenue 51\n").unwrap();
    std::fs::write(root.join("outside/secret.txt"), "top secret\n").unwrap();
    std::os::unix::fs::symlink(
        root.join("outside/secret.txt"),
        root.join("reports/escape.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root.join("outside"), root.join("reports/escape-dir")).unwrap();
    dir.config(
        "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\n\
         fs = [{ host = \"reports\", guest = \"/reports\", mode = \"ro\" },\n      \
               { host = \"scratch\", guest = \"/scratch\", mode = \"rw\" }]\n",
    )
}

fn call(id: &str, tool: &str, args: Value) -> Value {
    json!({"id": id, "tool": tool, "args": args})
}

fn failed(s: &Session, id: &str) -> String {
    let c = s.call(id);
    assert_eq!(c["is_error"], true, "{id}: {c}");
    assert_eq!(c["meta"]["airlock/outcome"], "tool_failed", "{id}: {c}");
    c["text"].as_str().unwrap().to_owned()
}

const NOT_FOUND: &str = "not found (or outside the granted directories)";
const DENIED: &str = "permission denied by the host";

#[test]
fn files_inside_grants_are_reachable_with_their_modes() {
    let dir = TempDir::new("fs-ok");
    let config = tree(&dir);
    let plan = json!({"calls": [
        call("read", "files_read", json!({"path": "/reports/q3.txt"})),
        call("list", "files_list", json!({"path": "/reports"})),
        call("search", "files_search", json!({"path": "/reports", "text": "revenue"})),
    ], "then": [
        call("write", "files_write", json!({"path": "/scratch/out.txt", "content": "hello"})),
        call("append", "files_write", json!({"path": "/scratch/out.txt", "content": " world", "append": true})),
        call("move", "files_move", json!({"from": "/scratch/out.txt", "to": "/scratch/renamed.txt"})),
        call("readback", "files_read", json!({"path": "/scratch/renamed.txt"})),
        call("list2", "files_list", json!({"path": "/scratch"})),
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(s.call("read")["text"], "revenue 42\ncosts 17\n");
    let names: Vec<&str> = s.call("list")["structured"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["escape-dir", "escape.txt", "q3.txt", "sub"]);
    assert_eq!(
        s.call("search")["structured"]["matches"],
        json!([
            {"path": "/reports/q3.txt", "line": 1, "text": "revenue 42"},
            {"path": "/reports/sub/q4.txt", "line": 1, "text": "revenue 51"}
        ])
    );
    assert_eq!(s.call("write")["text"], "wrote 5 bytes to /scratch/out.txt");
    assert_eq!(
        s.call("move")["text"],
        "moved /scratch/out.txt to /scratch/renamed.txt"
    );
    assert_eq!(s.call("readback")["text"], "hello world");
    assert_eq!(
        s.call("list2")["structured"]["entries"],
        json!([{"name": "renamed.txt", "kind": "file", "bytes": 11}])
    );
    // The write really happened on the host, in the granted directory only.
    assert_eq!(
        std::fs::read_to_string(dir.0.join("scratch/renamed.txt")).unwrap(),
        "hello world"
    );
    assert!(!dir.0.join("scratch/out.txt").exists());
}

#[test]
fn everything_outside_the_grants_is_denied() {
    let dir = TempDir::new("fs-deny");
    let config = tree(&dir);
    let state = common::shared_state_dir();
    let plan = json!({"calls": [
        call("ro_write", "files_write", json!({"path": "/reports/new.txt", "content": "x"})),
        call("ro_move", "files_move", json!({"from": "/reports/q3.txt", "to": "/reports/q3-old.txt"})),
        call("dotdot", "files_read", json!({"path": "/reports/../outside/secret.txt"})),
        call("dotdot_sub", "files_read", json!({"path": "/reports/sub/../../outside/secret.txt"})),
        call("absolute", "files_read", json!({"path": dir.0.join("outside/secret.txt")})),
        call("symlink", "files_read", json!({"path": "/reports/escape.txt"})),
        call("symlink_dir", "files_list", json!({"path": "/reports/escape-dir"})),
        call("proc", "files_read", json!({"path": "/proc/self/environ"})),
        call("etc", "files_read", json!({"path": "/etc/passwd"})),
        call("state", "files_list", json!({"path": state})),
        call("cross", "files_move", json!({"from": "/reports/q3.txt", "to": "/scratch/q3.txt"})),
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(
        failed(&s, "ro_write"),
        format!("cannot write /reports/new.txt: {DENIED}")
    );
    assert_eq!(
        failed(&s, "ro_move"),
        format!("cannot move /reports/q3.txt: {DENIED}")
    );
    assert_eq!(
        failed(&s, "dotdot"),
        format!("cannot read /reports/../outside/secret.txt: {DENIED}")
    );
    assert_eq!(
        failed(&s, "dotdot_sub"),
        format!("cannot read /reports/sub/../../outside/secret.txt: {DENIED}")
    );
    let abs = dir.0.join("outside/secret.txt");
    assert_eq!(
        failed(&s, "absolute"),
        format!("cannot read {}: {NOT_FOUND}", abs.display())
    );
    assert_eq!(
        failed(&s, "symlink"),
        format!("cannot read /reports/escape.txt: {DENIED}")
    );
    assert_eq!(
        failed(&s, "symlink_dir"),
        format!("cannot list /reports/escape-dir: {DENIED}")
    );
    assert_eq!(
        failed(&s, "proc"),
        format!("cannot read /proc/self/environ: {NOT_FOUND}")
    );
    assert_eq!(
        failed(&s, "etc"),
        format!("cannot read /etc/passwd: {NOT_FOUND}")
    );
    assert_eq!(
        failed(&s, "state"),
        format!("cannot list {}: {NOT_FOUND}", state.display())
    );
    assert_eq!(
        failed(&s, "cross"),
        format!("cannot move /reports/q3.txt: {DENIED}")
    );
    // Nothing changed on the host.
    assert!(!dir.0.join("reports/new.txt").exists());
    assert!(dir.0.join("reports/q3.txt").exists());
}

#[test]
fn a_tool_without_fs_grants_sees_no_files() {
    let dir = TempDir::new("fs-none");
    tree(&dir);
    let config = dir.config("[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n");
    let plan = json!({"calls": [
        call("read", "files_read", json!({"path": "/reports/q3.txt"})),
        call("list", "files_list", json!({"path": "/"})),
        call("host", "files_read", json!({"path": dir.0.join("reports/q3.txt")})),
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(
        failed(&s, "read"),
        format!("cannot read /reports/q3.txt: {NOT_FOUND}")
    );
    assert_eq!(failed(&s, "list"), format!("cannot list /: {NOT_FOUND}"));
    let host = dir.0.join("reports/q3.txt");
    assert_eq!(
        failed(&s, "host"),
        format!("cannot read {}: {NOT_FOUND}", host.display())
    );
}

#[test]
fn bad_fs_grants_stop_the_start() {
    let dir = TempDir::new("fs-bad");
    std::fs::write(dir.0.join("plain-file"), "x").unwrap();
    let state = common::shared_state_dir();
    let cases = [
        (
            "{ host = \"missing\", guest = \"/m\", mode = \"ro\" }",
            "grants › fs[0] › host",
            "No such file or directory",
        ),
        (
            "{ host = \"plain-file\", guest = \"/m\", mode = \"ro\" }",
            "grants › fs[0] › host",
            "is not a directory",
        ),
        (
            "{ host = \".\", guest = \"m\", mode = \"ro\" }",
            "grants › fs[0] › guest",
            "must be an absolute path",
        ),
        (
            "{ host = \".\", guest = \"/m\", mode = \"rwx\" }",
            "",
            "unknown variant `rwx`",
        ),
    ];
    for (grant, key, problem) in cases {
        let config = dir.config(&format!(
            "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{grant}]\n"
        ));
        let (ok, err) = common::check(&config, &state);
        assert!(!ok, "{grant} was accepted");
        assert!(err.contains(key) && err.contains(problem), "{grant}: {err}");
    }
    // A grant that would expose the state directory (here: its parent) is refused.
    let config = dir.config("[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \".\", guest = \"/all\", mode = \"ro\" }]\n");
    let inner_state = dir.0.join("state");
    let (ok, err) = common::check(&config, &inner_state);
    assert!(!ok);
    assert!(err.contains("would expose airlock's own files"), "{err}");

    // The secrets directory is airlock's own too.
    std::fs::create_dir_all(dir.0.join("secrets")).unwrap();
    std::fs::write(dir.0.join("secrets/TOKEN"), "a-long-enough-value").unwrap();
    let config = dir.config("[secrets]\ndir = \"secrets\"\nfiles = [\"TOKEN\"]\n[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \"secrets\", guest = \"/s\", mode = \"ro\" }]\n");
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(err.contains("would expose airlock's own files"), "{err}");

    // A directory inside one that a tool may write could be swapped for a symlink: refused.
    std::fs::create_dir_all(dir.0.join("outer/inner")).unwrap();
    let config = dir.config("[[tool]]\nname = \"writer\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \"outer\", guest = \"/o\", mode = \"rw\" }]\n[[tool]]\nname = \"reader\"\ncomponent = \"bundled:http-fetch\"\n[tool.grants]\nfs = [{ host = \"outer/inner\", guest = \"/i\", mode = \"ro\" }]\n");
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(
        err.contains("tool \"reader\" › grants › fs:/i")
            && err.contains("which tool \"writer\" may write (fs:/o)"),
        "{err}"
    );
}

#[test]
fn no_grant_may_expose_a_file_airlock_reads_or_trusts() {
    let dir = TempDir::new("fs-own-files");
    let state = common::shared_state_dir();
    // The configuration's own directory.
    let config = dir.config(
        "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \".\", guest = \"/cfg\", mode = \"rw\" }]\n",
    );
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(
        err.contains("tool \"files\" (entry 1) › grants › fs[0] › host")
            && err.contains("would expose airlock's own files: the configuration file")
            && err.contains(&config.canonicalize().unwrap().display().to_string()),
        "{err}"
    );
    // A component file, from another tool's grant.
    std::fs::create_dir_all(dir.0.join("components")).unwrap();
    std::fs::copy(common::hostile_wasm(), dir.0.join("components/h.wasm")).unwrap();
    let config = dir.config(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"components/h.wasm\"\n[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \"components\", guest = \"/c\", mode = \"ro\" }]\n",
    );
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(
        err.contains("tool \"files\" (entry 2) › grants › fs[0] › host")
            && err.contains("the component file of tool \"hostile\""),
        "{err}"
    );
    // The JWKS file, a tool's WIT and a signing key of [trust.keys], each in a granted
    // directory: whoever writes them decides who is authenticated, what a component's
    // functions mean, and which components are trusted.
    let trusted = dir.0.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::write(
        trusted.join("jwks.json"),
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .unwrap();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/generic/wit/world.wit");
    std::fs::copy(&wit, trusted.join("world.wit")).unwrap();
    std::fs::copy(
        std::path::Path::new(airlock::config::bundled::WASM_DIR).join("generic.wasm"),
        dir.0.join("generic.wasm"),
    )
    .unwrap();
    let (ok, out) = common::run_airlock_text(&["keygen", trusted.join("team").to_str().unwrap()]);
    assert!(ok, "{out}");
    let grant = "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \"trusted\", guest = \"/t\", mode = \"ro\" }]\n";
    for (section, what) in [
        (
            "[auth]\nmode = \"jwt\"\nresource = \"https://airlock.test/mcp\"\nissuer = \"https://issuer.test\"\njwks_file = \"trusted/jwks.json\"\n",
            "the JWKS file",
        ),
        (
            "[[tool]]\nname = \"geo\"\ncomponent = \"generic.wasm\"\nwit = \"trusted/world.wit\"\n",
            "the WIT of tool \"geo\"",
        ),
        (
            "[trust.keys]\nteam = \"trusted/team.pub\"\n",
            "the signing key \"team\" of [trust.keys]",
        ),
    ] {
        let config = dir.config(&format!("{section}{grant}"));
        let (ok, err) = common::check(&config, &state);
        assert!(
            !ok && err.contains("would expose airlock's own files") && err.contains(what),
            "{what}: {err}"
        );
    }
}

#[test]
fn no_grant_may_hold_a_link_on_the_way_to_airlocks_own_files() {
    // The configuration is read through a symlink in app/, the real file lives in etc/: a
    // grant over app/ would let a tool replace the link with a configuration of its own.
    let dir = TempDir::new("fs-own-links");
    let state = common::shared_state_dir();
    for d in ["app", "etc", "bin"] {
        std::fs::create_dir_all(dir.0.join(d)).unwrap();
    }
    let app = dir.0.join("app").canonicalize().unwrap();
    let real = dir.0.join("etc/airlock.toml");
    let link = app.join("airlock.toml");
    std::fs::write(
        &real,
        format!(
            "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{{ host = \"{}\", guest = \"/app\", mode = \"rw\" }}]\n",
            app.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (ok, err) = common::check(&link, &state);
    assert!(!ok);
    assert!(
        err.contains("would expose airlock's own files: the configuration file")
            && err.contains(&link.display().to_string()),
        "{err}"
    );
    // A component reached through a link in a granted directory, likewise.
    std::fs::copy(common::hostile_wasm(), dir.0.join("bin/h.wasm")).unwrap();
    std::os::unix::fs::symlink(dir.0.join("bin/h.wasm"), app.join("h.wasm")).unwrap();
    let config = dir.config(&format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{{ host = \"{}\", guest = \"/app\", mode = \"ro\" }}]\n",
        app.join("h.wasm").display(),
        app.display()
    ));
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(
        err.contains("tool \"files\" (entry 2) › grants › fs[0] › host")
            && err.contains("the component file of tool \"hostile\""),
        "{err}"
    );
}

#[test]
fn a_trusted_file_another_user_may_replace_stops_the_load() {
    use std::os::unix::fs::PermissionsExt;
    // Tests run as root, so files can be given away; elsewhere this case cannot be set up.
    if rustix::process::geteuid().as_raw() != 0 {
        return;
    }
    let dir = TempDir::new("fs-other-uid");
    let config = dir.config("[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n");
    std::os::unix::fs::chown(&config, Some(4242), None).unwrap();
    let (ok, err) = common::check(&config, &common::shared_state_dir());
    assert!(!ok);
    assert!(err.contains("which belongs to uid 4242"), "{err}");
    // A link to a good file, in a directory another user owns: that user could repoint it.
    std::os::unix::fs::chown(&config, Some(0), None).unwrap();
    let theirs = dir.0.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
    std::os::unix::fs::symlink(&config, theirs.join("airlock.toml")).unwrap();
    let (ok, err) = common::check(&theirs.join("airlock.toml"), &common::shared_state_dir());
    assert!(!ok);
    assert!(
        err.contains("which belongs to uid 4242") && err.contains("theirs"),
        "{err}"
    );
}

#[test]
fn a_trusted_file_others_may_write_stops_the_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("fs-loose-config");
    let config = dir.config("[[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, err) = common::check(&config, &common::shared_state_dir());
    assert!(!ok);
    assert!(
        err.contains("which other users may write (mode 666)"),
        "{err}"
    );
    // A component writable by others, likewise.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::copy(common::hostile_wasm(), dir.0.join("h.wasm")).unwrap();
    std::fs::set_permissions(dir.0.join("h.wasm"), std::fs::Permissions::from_mode(0o646)).unwrap();
    let config = dir.config("[[tool]]\nname = \"hostile\"\ncomponent = \"h.wasm\"\n");
    let (ok, err) = common::check(&config, &common::shared_state_dir());
    assert!(!ok);
    assert!(
        err.contains("the component") && err.contains("other users may write"),
        "{err}"
    );
}

#[test]
fn a_reload_that_would_grant_airlocks_own_files_is_refused_and_the_old_policy_stays() {
    // The attack: a tool with a write grant rewrites the configuration to widen itself. Here
    // the rewrite is done from outside (a grant over the configuration cannot even load),
    // and the reload that would put it in force is refused.
    let dir = TempDir::new("fs-own-reload");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::write(dir.0.join("data/a.txt"), "data\n").unwrap();
    let good = "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{ host = \"data\", guest = \"/data\", mode = \"rw\" }]\n";
    let config = dir.config(good);
    let server = common::HttpServer::start(&config);
    std::fs::write(&config, good.replace("host = \"data\"", "host = \".\"")).unwrap();
    let (ok, out) = common::ctl(&server, &["reload"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("would expose airlock's own files: the configuration file"),
        "{out}"
    );
    let s = client(
        "auto",
        Transport::Http(&server.url),
        json!({"calls": [
            {"id": "data", "tool": "files_read", "args": {"path": "/data/a.txt"}},
            {"id": "cfg", "tool": "files_read", "args": {"path": "/data/airlock.toml"}}
        ]}),
    );
    assert!(
        s.call("data")["text"].as_str().unwrap().contains("data"),
        "{}",
        s.report
    );
    assert_eq!(s.call("cfg")["is_error"], true, "{}", s.report);
}

#[test]
fn a_quota_counts_what_a_grant_holds_across_calls() {
    // 40 KiB: each 10,000-byte file costs its size plus 4 KiB for its entry, so the third
    // one does not fit, whichever call writes it. The files already there count from the
    // start.
    let dir = TempDir::new("fs-quota");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::write(dir.0.join("data/old.txt"), "x".repeat(5_000)).unwrap();
    let config = dir.config(
        "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\n\
         fs = [{ host = \"data\", guest = \"/data\", mode = \"rw\", quota = \"40KiB\" }]\n",
    );
    let content = "y".repeat(10_000);
    let write =
        |id: &str, path: &str| call(id, "files_write", json!({"path": path, "content": content}));
    let plan = json!({"calls": [], "then": [
        write("a", "/data/a.txt"),
        write("b", "/data/b.txt"),
        write("c", "/data/c.txt"),
    ]});
    let s = client("auto", Transport::Stdio(Some(&config)), plan);
    assert_eq!(
        s.call("a")["text"],
        "wrote 10000 bytes to /data/a.txt",
        "{}",
        s.report
    );
    assert_eq!(s.call("b")["text"], "wrote 10000 bytes to /data/b.txt");
    let c = s.call("c");
    assert_eq!(c["meta"]["airlock/outcome"], "quota_exceeded", "{c}");
    assert_eq!(
        c["text"],
        "grant fs:/data is over its quota of 40 KiB: the write was refused"
    );
    assert!(
        !dir.0.join("data/c.txt").exists(),
        "the entry that did not fit was not made"
    );
}

#[test]
fn quota_mistakes_are_load_errors() {
    let dir = TempDir::new("fs-quota-config");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    let state = dir.0.join("state");
    for (grants, problem) in [
        (
            "fs = [{ host = \"data\", guest = \"/data\", mode = \"ro\", quota = \"1MiB\" }]",
            "grants › fs[0] › quota: a quota applies to rw grants only",
        ),
        (
            "fs = [{ host = \"data\", guest = \"/data\", mode = \"rw\", quota = \"lots\" }]",
            "quota",
        ),
    ] {
        let config = dir.config(&format!(
            "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\n{grants}\n"
        ));
        let (ok, err) = common::check(&config, &state);
        assert!(!ok, "{grants}");
        assert!(err.contains(problem), "{grants}: {err}");
    }
    // One directory, two tools, two quotas: one tally cannot have both.
    let config = dir.config(
        "[[tool]]\nname = \"a\"\ncomponent = \"bundled:files\"\n[tool.grants]\n\
         fs = [{ host = \"data\", guest = \"/data\", mode = \"rw\", quota = \"1MiB\" }]\n\
         [[tool]]\nname = \"b\"\ncomponent = \"bundled:files\"\n[tool.grants]\n\
         fs = [{ host = \"data\", guest = \"/d\", mode = \"rw\" }]\n",
    );
    let (ok, err) = common::check(&config, &state);
    assert!(!ok);
    assert!(
        err.contains("is granted with quota 1 MiB here and 1 GiB by tool \"b\""),
        "{err}"
    );
}

#[test]
fn a_writable_grant_beside_the_audit_log_is_warned_about() {
    // The test's directories and the audit log share a filesystem: what the tool writes takes
    // the audit log's room. A read-only grant is not named.
    let dir = TempDir::new("fs-beside-audit");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::create_dir_all(dir.0.join("docs")).unwrap();
    let config = dir.config(
        "[[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\n\
         fs = [{ host = \"data\", guest = \"/data\", mode = \"rw\", quota = \"1MiB\" },\n      \
               { host = \"docs\", guest = \"/docs\", mode = \"ro\" }]\n",
    );
    let server = common::HttpServer::start(&config);
    let log = server.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("on the same filesystem as the audit log"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("tool \"files\" may write")
            && warned[0].contains("(fs:/data, quota 1 MiB)"),
        "{}",
        warned[0]
    );
}
