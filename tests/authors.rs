//! Tools written in Python and JavaScript, end to end: `scripts/build-authors` builds the SDK
//! examples (`tools/python`, `tools/js`: the `airlock:tool` world through `sdk/python` and
//! `sdk/js`) with componentize-py and componentize-js, and the generic `notes` fixture (a plain
//! world) in both languages; the real binary serves all four over Streamable HTTP.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where `scripts/build-authors` put the components (built once per test run; it installs the
/// pinned toolchains on first use).
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = std::process::Command::new(root.join("scripts/build-authors"))
            .output()
            .expect("scripts/build-authors runs");
        assert!(
            out.status.success(),
            "scripts/build-authors failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn config(dir: &TempDir, web: &TestHttpServer) -> PathBuf {
    let notes_wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/notes/wit");
    let w = |name: &str| built().join(format!("{name}.wasm")).display().to_string();
    // The tests check what the tools answer, not how fast: beside the other test's cargo build
    // on a small machine a Python call can take seconds, so the timeout is far from the default.
    dir.config(&format!(
        "[[tool]]\nname = \"py\"\ncomponent = \"{py}\"\n[tool.settings]\ngreeting = \"hi\"\n\
         [tool.grants]\nnet = [\"http://127.0.0.1:{port}\"]\n{slow}\n\
         [[tool]]\nname = \"js\"\ncomponent = \"{js}\"\n[tool.settings]\ngreeting = \"howdy\"\n\
         [tool.grants]\nnet = [\"http://127.0.0.1:{port}\"]\n{slow}\n\
         [[tool]]\nname = \"pynotes\"\ncomponent = \"{pyn}\"\nwit = \"{wit}\"\n{slow}\n\
         [[tool]]\nname = \"jsnotes\"\ncomponent = \"{jsn}\"\nwit = \"{wit}\"\n{slow}",
        py = w("py_tool"),
        js = w("js_tool"),
        pyn = w("py_notes"),
        jsn = w("js_notes"),
        wit = notes_wit.display(),
        port = web.port,
        slow = "[tool.limits]\ntimeout = \"2m\"\n",
    ))
}

#[test]
fn python_and_javascript_tools_are_built_and_called() {
    let dir = TempDir::new("authors");
    let web = TestHttpServer::start();
    let server = HttpServer::start_compiling(&config(&dir, &web));
    let listed = tools_listed(&server);
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "py_word_stats",
            "py_greet",
            "py_divide",
            "py_fetch",
            "py_relay",
            "py_careful",
            "js_word_stats",
            "js_greet",
            "js_divide",
            "js_relay",
            "js_fetch",
            "js_careful",
            "pynotes_word-count",
            "pynotes_summarise",
            "jsnotes_word-count",
            "jsnotes_summarise"
        ]
    );
    let tool = |n: &str| listed.iter().find(|t| t["name"] == n).unwrap().clone();
    // Python: the schema comes from the type hints, the description from the docstring.
    let py = tool("py_word_stats");
    assert_eq!(
        py["description"],
        "Counts the words of a text and names the most frequent ones."
    );
    assert_eq!(py["inputSchema"]["properties"]["top"]["type"], "integer");
    assert_eq!(py["inputSchema"]["required"], json!(["text"]));
    assert_eq!(py["annotations"]["readOnlyHint"], true);
    let greet = tool("py_greet");
    assert_eq!(
        greet["inputSchema"]["properties"]["style"]["enum"],
        json!(["plain", "loud"])
    );
    // An Optional parameter may be left out; a tool returning `Output` declares no schema.
    assert_eq!(greet["inputSchema"]["required"], json!([]));
    assert!(greet["outputSchema"].is_null(), "{greet}");
    // Generic: from the WIT types, and its doc comments.
    let notes = tool("jsnotes_summarise");
    assert_eq!(
        notes["inputSchema"]["properties"]["min"]["enum"],
        json!(["low", "high"])
    );
    assert_eq!(
        notes["inputSchema"]["properties"]["notes"]["items"]["required"],
        json!(["title", "tags"])
    );
    assert_eq!(
        tool("pynotes_word-count")["description"],
        "Counts the words in a text."
    );

    // The HTTP helpers, within the grants: a URL they allow answers, another is refused by the
    // host (and the call ends as blocked, whatever the tool made of the refusal).
    let p = web.port;
    let hello = json!({"status": 200, "body": "hello from the test server", "truncated": false});
    let r = tool_result(
        &server,
        "py_fetch",
        json!({"url": format!("http://127.0.0.1:{p}/hello")}),
    );
    assert_eq!(r["structuredContent"]["result"], hello, "{r}");
    let r = tool_result(
        &server,
        "js_fetch",
        json!({"url": format!("http://127.0.0.1:{p}/hello")}),
    );
    assert_eq!(r["structuredContent"], hello, "{r}");
    for tool in ["py_fetch", "js_fetch"] {
        let r = tool_result(
            &server,
            tool,
            json!({"url": format!("http://localhost:{p}/hello")}),
        );
        assert_eq!(result_outcome(&r), "blocked_by_policy", "{tool}: {r}");
    }
    assert_eq!(web.seen().len(), 2, "the refused requests never left");

    // Nested calls from both SDKs, across languages, as the same caller.
    let r = tool_result(
        &server,
        "py_relay",
        json!({"tool_name": "js_greet", "arguments": {"loud": true}}),
    );
    assert_eq!(result_text(&r), "HOWDY, ANONYMOUS", "{r}");
    let r = tool_result(
        &server,
        "js_relay",
        json!({"tool": "py_greet", "arguments": {"style": "plain"}}),
    );
    assert_eq!(result_text(&r), "hi, anonymous", "{r}");
    // A nested call's refusal comes back to the caller as its failure.
    let r = tool_result(
        &server,
        "js_relay",
        json!({"tool": "py_divide", "arguments": {"a": 1, "b": "x"}}),
    );
    assert_eq!(result_outcome(&r), "tool_failed", "{r}");
    assert!(result_text(&r).contains("invalid_arguments"), "{r}");

    // `confirm` from both SDKs reaches the host's approval machinery: this client declared no
    // way to ask its user, and no operator channel is configured, so nobody can be asked.
    for tool in ["py_careful", "js_careful"] {
        let r = tool_result(&server, tool, json!({"step": "cleanup"}));
        assert_eq!(result_outcome(&r), "approval_unavailable", "{tool}: {r}");
    }

    for lang in ["py", "js"] {
        let r = tool_result(
            &server,
            &format!("{lang}_word_stats"),
            json!({"text": "b a b c a b", "top": 2}),
        );
        assert_eq!(
            r["structuredContent"],
            json!({"words": 6, "top": ["b", "a"]}),
            "{lang}: {r}"
        );
        // Settings and the caller's identity reach the tool.
        let greeting = if lang == "py" { "hi" } else { "howdy" };
        let args = if lang == "py" {
            json!({"style": "plain"})
        } else {
            json!({"loud": false})
        };
        let r = tool_result(&server, &format!("{lang}_greet"), args);
        assert_eq!(
            result_text(&r),
            format!("{greeting}, anonymous"),
            "{lang}: {r}"
        );
        if lang == "py" {
            let r = tool_result(&server, "py_greet", json!({"name": "ada"}));
            assert_eq!(result_text(&r), "hi, ada", "{r}");
        }
        // The tool's refusal and the host's are both `invalid_arguments`.
        let r = tool_result(&server, &format!("{lang}_divide"), json!({"a": 1, "b": 0}));
        assert_eq!(result_outcome(&r), "invalid_arguments", "{lang}: {r}");
        assert!(result_text(&r).contains("b must not be 0"), "{lang}: {r}");
        let r = tool_result(
            &server,
            &format!("{lang}_divide"),
            json!({"a": "one", "b": 2}),
        );
        assert_eq!(result_outcome(&r), "invalid_arguments", "{lang}: {r}");
        assert!(result_text(&r).contains("/a"), "{lang}: {r}");
        let r = tool_result(&server, &format!("{lang}_divide"), json!({"a": 1, "b": 4}));
        assert_eq!(result_text(&r), "0.25", "{lang}: {r}");

        // The generic notes world: records, an enum, an option, a result, lists.
        let r = tool_result(
            &server,
            &format!("{lang}notes_word-count"),
            json!({"text": "one two  three"}),
        );
        assert_eq!(r["structuredContent"]["result"], 3, "{lang}: {r}");
        let r = tool_result(
            &server,
            &format!("{lang}notes_summarise"),
            json!({"notes": [
                {"title": "urgent", "tags": ["x"], "priority": 9},
                {"title": "later", "tags": []}
            ], "min": "high"}),
        );
        assert_eq!(
            r["structuredContent"]["result"],
            json!(["urgent"]),
            "{lang}: {r}"
        );
        let r = tool_result(
            &server,
            &format!("{lang}notes_summarise"),
            json!({"notes": [], "min": "low"}),
        );
        assert_eq!(r["isError"], true, "{lang}: {r}");
        assert_eq!(result_text(&r), "no notes at that level", "{lang}: {r}");
        let r = tool_result(
            &server,
            &format!("{lang}notes_summarise"),
            json!({"notes": [{"title": 1, "tags": []}], "min": "low"}),
        );
        assert_eq!(result_outcome(&r), "invalid_arguments", "{lang}: {r}");
    }
}

/// `airlock new` in each language: the project builds as written (`./build`, with the pinned
/// toolchains) and its tool answers `airlock call`.
#[test]
fn airlock_new_writes_a_project_that_builds_and_answers() {
    let env = std::fs::read_to_string(built().join("toolchain.env")).unwrap();
    let toolchain: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dir = TempDir::new("authors-new");
    let audit = fresh_audit_dir();
    let state = state_dir_for(&audit);
    for lang in ["rust", "python", "js"] {
        let name = format!("hello-{lang}");
        let out = run_airlock(&[
            "new",
            &name,
            "--lang",
            lang,
            "--dir",
            dir.0.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{lang}: {out:?}");
        let project = dir.0.join(&name);
        // Rust builds share one target directory across runs, so the SDK's dependencies are
        // compiled once.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("airlock-new");
        let built = std::process::Command::new(project.join("build"))
            .envs(toolchain.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{lang}: ./build failed:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let call = |args: &str| {
            run_airlock(&[
                "call",
                "greet",
                "--config",
                project.join("airlock.toml").to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--audit-dir",
                audit.to_str().unwrap(),
                "--args",
                args,
            ])
        };
        let called = call(r#"{"name": "ada"}"#);
        let stdout = String::from_utf8_lossy(&called.stdout);
        assert!(called.status.success(), "{lang}: {called:?}");
        assert_eq!(stdout.trim(), "hello, ada!", "{lang}");
        // The tool's own refusal.
        let refused = call(r#"{"name": " "}"#);
        assert!(!refused.status.success(), "{lang}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("outcome: invalid_arguments"),
            "{lang}: {refused:?}"
        );
    }
    // An existing directory is never overwritten.
    let again = run_airlock(&["new", "hello-js", "--dir", dir.0.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
}
