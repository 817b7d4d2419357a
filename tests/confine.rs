//! The second wall: the host process confined by landlock and seccomp. The regular suite runs
//! every HTTP server confined (`required` is the default for `serve --http`) and every stdio
//! server best-effort; these tests check the confinement itself, through the real binary.

mod common;

use common::{HttpServer, TempDir, hostile_wasm, run_airlock, run_airlock_text};
use serde_json::json;

fn doctor(config: &std::path::Path, state: &std::path::Path, probe: bool) -> (bool, String) {
    let mut args = vec![
        "doctor",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--http",
        "127.0.0.1:8787",
    ];
    if probe {
        args.push("--probe");
    }
    run_airlock_text(&args)
}

#[test]
fn the_kernel_refuses_what_the_configuration_does_not_need() {
    let dir = TempDir::new("confine-probe");
    let config = dir.config(&format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n",
        hostile_wasm().display()
    ));
    let state = dir.0.join("state");
    let (ok, report) = doctor(&config, &state, false);
    let abi: u32 = report
        .lines()
        .find_map(|l| l.strip_prefix("landlock    ABI "))
        .and_then(|l| l.split(':').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("this machine has no landlock:\n{report}"));
    assert!(ok, "{report}");
    assert!(report.contains("mode        required"), "{report}");
    assert!(report.contains("tcp bind    {0, 8787}"), "{report}");
    assert!(report.contains("tool hostile ("), "{report}");

    let (ok, probed) = doctor(&config, &state, true);
    assert!(ok, "{probed}");
    // Plain reads, connects and spawns, with no host-side check in the way: what refuses them
    // is the kernel (landlock: EACCES; seccomp: EPERM).
    assert!(
        probed.contains("read /etc/passwd: refused: Permission denied (os error 13)"),
        "{probed}"
    );
    assert!(
        probed.contains("run /bin/true: refused: Operation not permitted (os error 1)"),
        "{probed}"
    );
    // What doctor said of landlock is what the probe saw: TCP rules need ABI 4.
    let connect_refused = probed.contains("connect 127.0.0.1:1: refused: Permission denied");
    assert_eq!(connect_refused, abi >= 4, "{report}\n{probed}");

    // The same probe unconfined: each attempt goes through, so the refusals above are real.
    let open = TempDir::new("confine-off");
    let config = open.config(&format!(
        "[confine]\nmode = \"off\"\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n",
        hostile_wasm().display()
    ));
    let (ok, unconfined) = doctor(&config, &open.0.join("state"), true);
    // Serve would not enforce the plan: doctor says so by its exit status too.
    assert!(!ok, "{unconfined}");
    let (ok, report) = doctor(&config, &open.0.join("state"), false);
    assert!(!ok, "{report}");
    assert!(report.contains("CONFINEMENT IS OFF"), "{report}");
    assert!(
        unconfined.contains("read /etc/passwd: ALLOWED"),
        "{unconfined}"
    );
    assert!(
        unconfined.contains("run /bin/true: ALLOWED"),
        "{unconfined}"
    );
}

#[test]
fn a_served_process_is_confined_and_a_reload_cannot_widen_it() {
    let dir = TempDir::new("confine-serve");
    let body = format!(
        "[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n",
        hostile_wasm().display()
    );
    let config = dir.config(&body);
    let server = HttpServer::start(&config);
    let log = server.log();
    assert!(
        log.contains("enforced (")
            && log.contains("layer=\"landlock\"")
            && log.contains("layer=\"seccomp\""),
        "{log}"
    );
    assert!(!log.contains("confinement incomplete"), "{log}");

    // A directory the running ruleset does not cover: only a restart could grant it.
    let outside = TempDir::new("confine-outside");
    std::fs::write(
        &config,
        format!(
            "{body}[tool.grants]\nfs = [{{ host = \"{}\", guest = \"/data\", mode = \"ro\" }}]\n",
            outside.0.display()
        ),
    )
    .unwrap();
    let out = run_airlock(&[
        "ctl",
        "--state-dir",
        server.state_dir.to_str().unwrap(),
        "reload",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "the new configuration needs read access to {}, outside the landlock ruleset this process confined itself to; a restart is required",
            outside.0.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_cgroup_memory_limit_ends_the_host_by_the_kernel() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("confine-cgroup");
    // The tool may grow to 2 GiB; the whole host process may use 300 MiB.
    let config = dir.config(&format!(
        "[confine]\nmode = \"best-effort\"\n[confine.cgroup]\nmemory = \"300MiB\"\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\n[tool.limits]\nmemory = \"2GiB\"\ntimeout = \"60s\"\nfuel = 1_000_000_000_000\n",
        hostile_wasm().display()
    ));
    let mut server = HttpServer::start(&config);
    let log = server.log();
    if !log.contains("memory 300 MiB) layer=\"cgroup\"") {
        eprintln!("skipped: this machine cannot give the process a cgroup memory limit:\n{log}");
        return;
    }
    let answer = common::raw_call(&server.addr, "hostile_hog", &serde_json::json!({}), &[]);
    assert!(
        answer.is_none(),
        "the host answered instead of being stopped: {answer:?}"
    );
    let status = server
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("the host was ended");
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by the kernel's OOM killer: {status:?}"
    );
    // The cgroup is named after the state directory and the server's id on it (1: the only
    // server); remove it now that it is empty.
    use sha2::Digest;
    let tag =
        hex::encode(&sha2::Sha256::digest(server.state_dir.as_os_str().as_encoded_bytes())[..6]);
    let _ = std::process::Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "6",
            "-mindepth",
            "1",
            "-type",
            "d",
        ])
        .args(["-name", &format!("airlock-{tag}-1"), "-delete"])
        .status();
}

#[test]
fn a_bare_config_name_beside_its_component_is_confined_in_full() {
    // `--config airlock.toml` and `component = "tool.wasm"`: every path of the plan is
    // absolute, so nothing falls out of the landlock ruleset.
    let dir = TempDir::new("confine-relative");
    std::fs::copy(hostile_wasm(), dir.0.join("tool.wasm")).unwrap();
    std::fs::write(
        dir.0.join("airlock.toml"),
        "[[tool]]\nname = \"hostile\"\ncomponent = \"tool.wasm\"\n",
    )
    .unwrap();
    let state = dir.0.join("state");
    let out = std::process::Command::new(common::airlock())
        .current_dir(&dir.0)
        .args([
            "doctor",
            "--config",
            "airlock.toml",
            "--probe",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    for line in report.lines() {
        if let Some(path) = line
            .strip_prefix("  read        ")
            .or_else(|| line.strip_prefix("  read-write  "))
        {
            assert!(
                path.starts_with('/'),
                "a plan path is not absolute: `{line}`\n{report}"
            );
        }
    }
    assert!(
        report.contains(&format!(
            "  read        {}",
            dir.0.canonicalize().unwrap().display()
        )),
        "{report}"
    );
    assert!(
        report.contains("read /etc/passwd: refused: Permission denied (os error 13)"),
        "{report}"
    );

    // serve --stdio from the same directory, by the same bare name: landlock holds.
    let plan = json!({"calls": [{"id": "e", "tool": "fixture_echo", "args": {"message": "hi"}}]});
    let (mut cmd, audit) = common::client_command(
        "auto",
        common::Transport::Stdio(Some(std::path::Path::new("airlock.toml"))),
        &plan,
    );
    let s = common::finish_client(cmd.current_dir(&dir.0).output().unwrap(), audit);
    assert_eq!(s.call("e")["text"], "hi", "{}", s.stderr);
    assert!(
        s.stderr.lines().any(|l| l.contains("layer=\"landlock\"")
            && !l.contains("NOT ENFORCED")
            && !l.contains("incomplete")),
        "{}",
        s.stderr
    );
}
