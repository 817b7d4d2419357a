//! The audit log, through the real binary: a durable, hash-chained record of every decision,
//! verified by `airlock audit verify`, which names the first damaged record however the log
//! was tampered with, and which survives `kill -9` without losing an acknowledged record.

mod common;

use common::{
    HttpServer, Session, TempDir, Transport, audit_files, audit_records, client, hostile_wasm,
    raw_call, run_airlock, run_airlock_text, state_dir_for,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn config(dir: &TempDir, extra: &str) -> PathBuf {
    config_with(dir, "", extra)
}

/// The test config with `audit` added to its `[audit]` table and `extra` after the tool.
fn config_with(dir: &TempDir, audit: &str, extra: &str) -> PathBuf {
    dir.config(&format!(
        "[audit]\ncheckpoint_every = 3\n{audit}\n[[tool]]\nname = \"hostile\"\ncomponent = \"{}\"\naudit_arguments = \"redacted\"\n[tool.limits]\nfuel = 50_000_000\nmax_argument_bytes = \"1KiB\"\n{extra}",
        hostile_wasm().display()
    ))
}

/// `airlock audit verify` over `files`, with the key of the server that wrote `audit_dir`.
fn verify(audit_dir: &Path, files: &[PathBuf]) -> (bool, String) {
    let state = state_dir_for(audit_dir);
    let key = run_airlock(&["audit", "key", "--state-dir", state.to_str().unwrap()]);
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let key = String::from_utf8(key.stdout).unwrap();
    let mut args = vec!["audit", "verify", "--key", key.trim()];
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.extend(names);
    run_airlock_text(&args)
}

fn session(dir: &TempDir) -> Session {
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    client(
        "auto",
        Transport::Stdio(Some(&config(dir, ""))),
        json!({"calls": [
            {"id": "echo", "tool": "fixture_echo", "args": {"message": format!("token {jwt}")}},
            {"id": "fails", "tool": "fixture_fails", "args": {}},
            {"id": "spin", "tool": "hostile_spin", "args": {}},
            {"id": "big", "tool": "fixture_echo", "args": {"message": "x".repeat(2000)}},
        ]}),
    )
}

fn record_of<'a>(records: &'a [Value], s: &Session, id: &str) -> &'a Value {
    let call_id = s.call(id)["meta"]["airlock/call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no call id in {}", s.call(id)));
    records
        .iter()
        .find(|r| r["call_id"] == call_id)
        .unwrap_or_else(|| panic!("no audit record for {id} ({call_id})"))
}

#[test]
fn every_decision_is_recorded_and_the_chain_verifies() {
    let dir = TempDir::new("audit-calls");
    let s = session(&dir);
    let audit_dir = s.audit_dir.clone().unwrap();
    let records = audit_records(&audit_dir);

    let echo = record_of(&records, &s, "echo");
    assert_eq!(echo["kind"], "call");
    assert_eq!(echo["principal"], "local");
    assert_eq!(echo["tool"], "fixture_echo");
    assert_eq!(echo["component"], "hostile");
    assert_eq!(echo["decision"], "completed");
    assert_eq!(echo["outcome"], "completed");
    assert_eq!(echo["correlation_id"], echo["call_id"]);
    assert!(echo["fuel_used"].as_u64().unwrap() > 0);
    assert!(echo["output_bytes"].as_u64().unwrap() > 0);
    // Arguments are kept redacted (audit_arguments = "redacted"); their digest is of the
    // canonical JSON of what was sent.
    assert_eq!(echo["arguments"]["message"], "token [REDACTED:jwt]");
    let sent =
        json!({"message": "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"});
    assert_eq!(
        echo["arguments_sha256"],
        hex::encode(Sha256::digest(sent.to_string()))
    );

    let fails = record_of(&records, &s, "fails");
    assert_eq!(
        (&fails["decision"], &fails["outcome"]),
        (&json!("failed"), &json!("tool_failed"))
    );
    assert_eq!(fails["reason"], "the fixture reports a failure");
    let spin = record_of(&records, &s, "spin");
    assert_eq!(spin["outcome"], "cpu_budget_exhausted");
    let big = record_of(&records, &s, "big");
    assert_eq!(
        (&big["decision"], &big["outcome"]),
        (&json!("denied"), &json!("arguments_too_large"))
    );
    assert!(
        records.iter().any(|r| r["kind"] == "checkpoint"),
        "checkpoint_every = 3 wrote none: {records:?}"
    );

    let (ok, text) = verify(&audit_dir, &audit_files(&audit_dir));
    assert!(ok, "{text}");
    assert!(text.starts_with("OK: 4 records, "), "{text}");
}

#[test]
fn an_evidence_bundle_verifies_and_any_change_to_it_is_found() {
    let dir = TempDir::new("audit-export");
    let s = session(&dir);
    let audit_dir = s.audit_dir.clone().unwrap();
    let state = state_dir_for(&audit_dir);
    let (audit, state) = (audit_dir.to_str().unwrap(), state.to_str().unwrap());
    let config = dir.0.join("airlock.toml");
    let bundle = dir.0.join("evidence.jsonl");
    let export = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "export",
            "--config",
            config.to_str().unwrap(),
            "--audit-dir",
            audit,
            "--state-dir",
            state,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_airlock_text(&args)
    };
    let (ok, out) = export(&bundle, &["--since", "1h"]);
    assert!(ok, "{out}");
    assert!(out.contains("records 1 to "), "{out}");
    let (ok, text) = verify(&audit_dir, std::slice::from_ref(&bundle));
    assert!(ok, "{text}");
    assert!(
        text.starts_with("OK: evidence bundle exported ")
            && text.contains("\nchain 1: records 1 to "),
        "{text}"
    );
    // The header names the configuration and the overrides in force.
    let lines: Vec<Value> = std::fs::read_to_string(&bundle)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let config_sha = hex::encode(Sha256::digest(std::fs::read(&config).unwrap()));
    assert_eq!(lines[0]["config"]["sha256"], config_sha.as_str());
    assert!(lines.iter().any(|r| r["tool"] == "fixture_echo"));

    // Refused: an existing file, and a window without records.
    let (ok, out) = export(&bundle, &["--since", "1h"]);
    assert!(!ok && out.contains("cannot create"), "{out}");
    let empty = dir.0.join("empty.jsonl");
    let (ok, out) = export(
        &empty,
        &[
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2000-01-02T00:00:00Z",
        ],
    );
    assert!(
        !ok && out.contains("the log has no records written between"),
        "{out}"
    );
    assert!(!empty.exists());

    // A record edited, or the bundle's summary: the signature no longer matches.
    let original = std::fs::read_to_string(&bundle).unwrap();
    let edited = dir.0.join("edited.jsonl");
    std::fs::write(
        &edited,
        original.replacen("\"fixture_echo\"", "\"fixture_ech0\"", 1),
    )
    .unwrap();
    let (ok, text) = verify(&audit_dir, std::slice::from_ref(&edited));
    assert!(
        !ok && text.contains("the bundle's signature does not match"),
        "{text}"
    );
    // Checked against another key (a forger's), a true bundle does not pass either.
    let other = run_airlock_text(&[
        "audit",
        "verify",
        "--key",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        !other.0 && other.1.contains("signature does not match"),
        "{}",
        other.1
    );

    // The export signs only what verifies: an edited record stops it, naming the record.
    let log = audit_files(&audit_dir)[0].clone();
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &log,
        text.replacen("\"fixture_echo\"", "\"fixture_ech0\"", 1),
    )
    .unwrap();
    let (ok, out) = export(&dir.0.join("again.jsonl"), &["--since", "1h"]);
    assert!(
        !ok && out.contains("the log does not verify: record ")
            && out.contains("its hash does not match its content (edited)")
            && out.contains("nothing was exported"),
        "{out}"
    );
    assert!(!dir.0.join("again.jsonl").exists());
    // And a state directory without the audit key (a wrong --state-dir) is refused.
    let elsewhere = TempDir::new("audit-export-nokey");
    let (ok, out) = run_airlock_text(&[
        "audit",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--audit-dir",
        audit,
        "--state-dir",
        elsewhere.0.to_str().unwrap(),
        "--since",
        "1h",
        "--out",
        dir.0.join("nokey.jsonl").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("has no audit key"), "{out}");
}

#[test]
fn tail_reaches_back_across_rotated_files() {
    // Small files: the log rotates every few records, so the last ten selected records span
    // several files.
    let dir = TempDir::new("audit-tail-rotated");
    let config = dir.config(
        "[audit]\nmax_file_bytes = \"4KiB\"\ncheckpoint_every = 5\n\
         [[tool]]\nname = \"text\"\ncomponent = \"bundled:text\"\n",
    );
    let audit = common::fresh_audit_dir();
    let state = state_dir_for(&audit);
    let dirs = [
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--audit-dir",
        audit.to_str().unwrap(),
    ];
    for _ in 0..12 {
        let mut args = vec!["call", "text_stats", "--args", "{\"text\": \"hello\"}"];
        args.extend_from_slice(&dirs);
        let out = run_airlock(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(audit_files(&audit).len() >= 3, "{:?}", audit_files(&audit));
    let mut args = vec![
        "audit",
        "tail",
        "-n",
        "10",
        "--no-follow",
        "--tool",
        "text_stats",
        "--json",
    ];
    args.extend_from_slice(&dirs);
    let out = run_airlock(&args);
    let tail = String::from_utf8(out.stdout).unwrap();
    let seqs: Vec<u64> = tail
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs.len(), 10, "{tail}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
}

#[test]
fn audit_search_and_tail_select_by_field_call_and_time_and_read_as_lines() {
    let dir = TempDir::new("audit-search");
    let s = session(&dir);
    let audit_dir = s.audit_dir.clone().unwrap();
    let audit = audit_dir.to_str().unwrap();
    let search = |args: &[&str]| {
        let mut all = vec!["audit", "search", "--audit-dir", audit];
        all.extend_from_slice(args);
        let out = run_airlock(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // JSON lines by default when stdout is not a terminal: the records as written.
    let spun = search(&["--outcome", "cpu_budget_exhausted"]);
    let lines: Vec<Value> = spun
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{spun}");
    assert_eq!(lines[0]["tool"], "hostile_spin");
    // A call id selects the call's records.
    let call_id = s.call("echo")["meta"]["airlock/call_id"].as_str().unwrap();
    let echo = search(&["--call", call_id, "--human"]);
    assert_eq!(echo.lines().count(), 1, "{echo}");
    assert!(
        echo.contains("call       tools/call fixture_echo by local: completed  [call "),
        "{echo}"
    );
    assert_eq!(
        search(&["--tool", "fixture_echo", "--principal", "nobody"]),
        ""
    );
    assert_eq!(search(&["--until", "2000-01-01T00:00:00Z"]), "");
    let all = search(&["--since", "1d"]);
    assert!(all.lines().count() >= 5, "{all}");
    let bad = run_airlock(&[
        "audit",
        "search",
        "--audit-dir",
        audit,
        "--since",
        "yesterday",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(
            "--since: \"yesterday\" is neither a time (2026-12-01T09:30:00Z) nor a span before now"
        ),
        "{bad:?}"
    );
    // tail: the last selected record of the current file, readable, its reason included.
    let out = run_airlock(&[
        "audit",
        "tail",
        "--audit-dir",
        audit,
        "-n",
        "1",
        "--no-follow",
        "--outcome",
        "tool_failed",
        "--human",
    ]);
    let tail = String::from_utf8(out.stdout).unwrap();
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(
        tail.contains("fixture_fails by local: tool_failed — the fixture reports a failure"),
        "{tail}"
    );
}

/// Rewrite line `from` of `file` with `edit`, then recompute the hash of that line and the
/// chain after it, as a forger who knows the format would.
fn rechain(file: &Path, from: usize, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut prev: Option<String> = None;
    for (i, line) in lines.iter_mut().enumerate().skip(from) {
        let mut l = if i == from { edit(line) } else { line.clone() };
        if let Some(p) = &prev {
            let start = l.find("\"prev\":\"").unwrap() + 8;
            l.replace_range(start..start + 64, p);
        }
        let at = l.rfind(",\"hash\":\"").unwrap();
        let body = l[..at].to_owned();
        let hash = hex::encode(Sha256::digest(format!("{body}}}")));
        *line = format!("{body},\"hash\":\"{hash}\"}}");
        prev = Some(hash);
    }
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

#[test]
fn tampering_is_found_and_the_record_named() {
    let dir = TempDir::new("audit-tamper");
    let s = session(&dir);
    let original = audit_files(s.audit_dir.as_ref().unwrap());
    assert_eq!(original.len(), 1);
    let text = std::fs::read_to_string(&original[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // 4 calls, a checkpoint after the third record, and the seal at the session's end.
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[5].contains("\"kind\":\"checkpoint\""), "{text}");
    let scratch = TempDir::new("audit-tamper-copy");
    let copy = scratch.0.join("audit-000000000001.jsonl");
    let write = |content: &str| std::fs::write(&copy, content).unwrap();
    let check = |expect: &str| {
        let (ok, out) = verify(s.audit_dir.as_ref().unwrap(), std::slice::from_ref(&copy));
        assert!(!ok, "tampering not found ({expect}):\n{out}");
        assert!(out.contains(expect), "expected `{expect}` in:\n{out}");
    };

    // One byte edited inside a record.
    let at = lines
        .iter()
        .position(|l| l.contains("\"tool\":\"fixture_fails\""))
        .unwrap();
    let edited = text.replacen(
        "\"tool\":\"fixture_fails\"",
        "\"tool\":\"fixture_failz\"",
        1,
    );
    write(&edited);
    check(&format!("record {} (", at + 1));
    check("its hash does not match its content (edited)");

    // Record 2 deleted.
    let mut without: Vec<&str> = lines.clone();
    without.remove(1);
    write(&(without.join("\n") + "\n"));
    check("record 2 (");
    check("is missing or out of order: found record 3 instead");

    // Records 2 and 3 swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    write(&(swapped.join("\n") + "\n"));
    check("record 2 (");
    check("found record 3 instead");

    // The tail cut mid-record.
    write(&text[..text.len() - 20]);
    check(&format!("record {} (", lines.len()));
    check("is truncated");

    // A checkpoint whose signature was altered, the chain recomputed around it.
    write(&text);
    let at = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    rechain(&copy, at, |line| {
        let start = line.find("\"signature\":\"").unwrap() + 13;
        let flipped = if &line[start..start + 1] == "0" {
            "1"
        } else {
            "0"
        };
        let mut forged = line.to_owned();
        forged.replace_range(start..start + 1, flipped);
        forged
    });
    check(&format!("checkpoint {} (", at + 1));
    check("is not signed by the given key (forged)");

    // The untouched log still verifies.
    write(&text);
    let (ok, out) = verify(s.audit_dir.as_ref().unwrap(), std::slice::from_ref(&copy));
    assert!(ok, "{out}");
}

#[test]
fn traceparent_sets_the_correlation_id() {
    let dir = TempDir::new("audit-trace");
    let server = HttpServer::start(&config(&dir, ""));
    let (status, body) = raw_call(
        &server.addr,
        "fixture_echo",
        &json!({"message": "traced"}),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"airlock/correlation_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""),
        "{body}"
    );
    let records = audit_records(&server.audit_dir);
    let r = records.iter().find(|r| r["kind"] == "call").unwrap();
    assert_eq!(r["correlation_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["principal"], "anonymous");
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_record() {
    kill_9_under_load("machine");
}

/// `durability = "process"` answers once a record is written, before it is flushed: a
/// record in the kernel survives the process, so `kill -9` still loses nothing acknowledged.
#[test]
fn kill_9_under_load_loses_no_acknowledged_record_with_process_durability() {
    kill_9_under_load("process");
}

fn kill_9_under_load(durability: &str) {
    let dir = TempDir::new("audit-crash");
    let cfg = config_with(&dir, &format!("durability = \"{durability}\"\n"), "");
    let mut server = HttpServer::start(&cfg);
    let audit_dir = server.audit_dir.clone();
    let addr = server.addr.clone();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (addr, answered) = (addr.clone(), answered.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let args = json!({"message": format!("w{w} call {i}")});
                    let Some((200, body)) = raw_call(&addr, "fixture_echo", &args, &[]) else {
                        return;
                    };
                    let Some(id) = body
                        .split("\"airlock/call_id\":\"")
                        .nth(1)
                        .and_then(|t| t.get(..32))
                    else {
                        return;
                    };
                    answered.lock().unwrap().push(id.to_owned());
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while answered.lock().unwrap().len() < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "calls were not answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (_, status) = common::ctl(&server, &["status"]);
    assert!(
        status.contains(&format!("audit       on, durability {durability}")),
        "{status}"
    );
    server.kill9();
    for w in workers {
        w.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    // Restarting on the same log recovers its tail and continues the chain.
    let restarted = HttpServer::start_in(&cfg, &[], &audit_dir);
    let (status, _) = raw_call(
        &restarted.addr,
        "fixture_echo",
        &json!({"message": "after"}),
        &[],
    )
    .expect("the restarted server answers");
    assert_eq!(status, 200);
    let (ok, out) = verify(&audit_dir, &audit_files(&audit_dir));
    assert!(ok, "{out}");
    let recorded: std::collections::HashSet<String> = audit_records(&audit_dir)
        .iter()
        .filter_map(|r| r["call_id"].as_str().map(str::to_owned))
        .collect();
    for id in &answered {
        assert!(recorded.contains(id), "answered call {id} has no record");
    }
    // The restart recorded that the log was not closed, right after the last record kept.
    let records = audit_records(&audit_dir);
    let unclean: Vec<usize> = (0..records.len())
        .filter(|&i| records[i]["event"] == "unclean_stop")
        .collect();
    assert_eq!(unclean.len(), 1, "{durability}");
    let at = unclean[0];
    assert_eq!(records[at]["kind"], "audit");
    assert_eq!(records[at]["last"], records[at - 1]["seq"]);
    assert!(
        out.contains("1 unclean stop(s) recorded"),
        "{durability}: {out}"
    );
}

/// A small tmpfs mounted at a path for the life of the value (the test runs as root, as the
/// suite does).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "this test mounts a {size} tmpfs for the audit log, which needs root"
        );
        SmallDisk(at.to_path_buf())
    }

    /// Fill the disk with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // The last partial block, byte by byte.
        while f.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_audit_disk_refuses_calls_before_they_act_and_recovers_by_itself() {
    full_audit_disk("machine");
}

/// The same with `durability = "process"`: the recovery writes again what was answered since
/// the last flush, and flushes it.
#[test]
fn a_full_audit_disk_refuses_calls_and_recovers_with_process_durability() {
    full_audit_disk("process");
}

fn full_audit_disk(durability: &str) {
    let dir = TempDir::new("audit-full");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    let audit_dir = common::fresh_audit_dir();
    let disk = SmallDisk::mount(&audit_dir, "4m");
    let config = dir.config(&format!(
        "[audit]\ndurability = \"{durability}\"\n\
         [[tool]]\nname = \"files\"\ncomponent = \"bundled:files\"\n[tool.grants]\nfs = [{{ host = \"data\", guest = \"/data\", mode = \"rw\" }}]\n",
    ));
    let server = HttpServer::start_in(&config, &[], &audit_dir);
    let write = |name: &str| {
        client(
            "auto",
            Transport::Http(&server.url),
            json!({"calls": [{"id": "w", "tool": "files_write", "args": {"path": format!("/data/{name}"), "content": "x"}}]}),
        )
    };
    assert_eq!(common::outcome(write("before.txt").call("w")), "completed");

    let filler = disk.fill();
    // Records keep fitting in the log file's last page for a few calls; then a write fails.
    let mut first_refused = None;
    for i in 0..100 {
        let name = format!("during-{i}.txt");
        let s = write(&name);
        match common::outcome(s.call("w")) {
            "completed" => continue,
            "audit_unavailable" => {
                first_refused = Some(name);
                break;
            }
            other => panic!("{other}: {}", s.report),
        }
    }
    let first_refused = first_refused.expect("the full disk never refused a call");
    let first_ran = dir.0.join("data").join(&first_refused).exists();
    // From now on a call is refused before it acts: the writer is broken.
    for name in ["refused-1.txt", "refused-2.txt"] {
        let s = write(name);
        assert_eq!(
            common::outcome(s.call("w")),
            "audit_unavailable",
            "{}",
            s.report
        );
        assert!(
            !dir.0.join("data").join(name).exists(),
            "{name} was written with no record"
        );
    }
    let (ok, status) = common::ctl(&server, &["status"]);
    assert!(ok, "{status}");
    assert!(status.contains("audit       UNAVAILABLE"), "{status}");
    // A load balancer sees the server as not ready, and only the operator sees why.
    let ready = common::raw_http(&server.addr, "GET /readyz HTTP/1.1\r\n", "").unwrap();
    assert_eq!((ready.status, ready.body.as_str()), (503, "not ready\n"));
    assert!(
        status.contains("ready       NO: the audit log cannot be written: "),
        "{status}"
    );
    // The server's log is read from its stderr in the background: waited for, not sampled.
    server.wait_for_log_count("not ready: the audit log cannot be written", 1);
    server.wait_for_log_count(
        "calls are refused until the audit log can be written again",
        1,
    );

    // Space comes back: the writer recovers by itself, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, status) = common::ctl(&server, &["status"]);
        if status.contains("audit       on") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered:\n{status}\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(common::outcome(write("after.txt").call("w")), "completed");
    assert!(dir.0.join("data/after.txt").exists());
    assert!(server.log().contains("the audit log is writable again"));
    let ready = common::raw_http(&server.addr, "GET /readyz HTTP/1.1\r\n", "").unwrap();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    // The chain is whole, and it says when it recovered.
    let records = audit_records(&audit_dir);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "audit" && r["event"] == "recovered"),
        "{records:?}"
    );
    // No action without a record: every call that wrote has an intent record, and an intent
    // without a call record is the one whose own record failed after it acted.
    let completed: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "call" && r["outcome"] == "completed")
        .collect();
    let intents: Vec<&Value> = records.iter().filter(|r| r["kind"] == "intent").collect();
    for c in &completed {
        assert!(
            intents.iter().any(|i| i["call_id"] == c["call_id"]),
            "a completed call with no intent record: {c}"
        );
    }
    let unfinished = intents
        .iter()
        .filter(|i| !completed.iter().any(|c| c["call_id"] == i["call_id"]))
        .count();
    assert_eq!(unfinished, usize::from(first_ran), "{records:?}");
    let (ok, text) = verify(&audit_dir, &audit_files(&audit_dir));
    assert!(ok, "{text}");
    drop(server);
}
