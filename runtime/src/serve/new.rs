//! `airlock new NAME --lang rust|python|js`: a project that builds a component with one tool,
//! a configuration that serves it, and a README saying how. The SDK for the language is copied
//! into the project (from this binary), so it builds with no clone of Airlock at hand.

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

const WIT: &str = include_str!("../../../sdk/wit/v0.2.0/tool.wit");

/// The Rust SDK, as its files.
const RUST_SDK: [(&str, &str); 7] = [
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/client.rs", include_str!("../../../sdk/src/client.rs")),
    ("src/host.rs", include_str!("../../../sdk/src/host.rs")),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
    ("src/offer.rs", include_str!("../../../sdk/src/offer.rs")),
    (
        "src/testing.rs",
        include_str!("../../../sdk/src/testing.rs"),
    ),
    ("wit/v0.2.0/tool.wit", WIT),
];

/// The world Python and JavaScript tools are built for (the `airlock:tool` world plus outgoing
/// HTTP) and the packages it needs.
const HTTP_WIT: [(&str, &str); 9] = [
    (
        "wit/world.wit",
        include_str!("../../../sdk/wit/http/world.wit"),
    ),
    ("wit/deps/airlock-tool.wit", WIT),
    (
        "wit/deps/http.wit",
        include_str!("../../../sdk/wit/http/deps/http.wit"),
    ),
    (
        "wit/deps/io.wit",
        include_str!("../../../sdk/wit/http/deps/io.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../sdk/wit/http/deps/clocks.wit"),
    ),
    (
        "wit/deps/random.wit",
        include_str!("../../../sdk/wit/http/deps/random.wit"),
    ),
    (
        "wit/deps/cli.wit",
        include_str!("../../../sdk/wit/http/deps/cli.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../sdk/wit/http/deps/filesystem.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../sdk/wit/http/deps/sockets.wit"),
    ),
];

/// The Rust SDK's manifest: the SDK's own, without the Airlock workspace it sits in there.
fn rust_sdk_manifest() -> String {
    include_str!("../../../sdk/Cargo.toml")
        .lines()
        .filter(|l| !l.starts_with("workspace ="))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Write the project `name` in `dir/name`.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        bail!(
            "the name must be 1 to 48 characters of a-z 0-9 - _, starting with a letter (it \
             names the project, the component and its [[tool]] entry)"
        );
    }
    // Names cargo refuses for a package, or that would clash with the SDK beside it.
    if [
        "test",
        "std",
        "core",
        "alloc",
        "proc-macro",
        "proc_macro",
        "airlock-sdk",
        "airlock_sdk",
    ]
    .contains(&name)
    {
        bail!(
            "\"{name}\" is reserved (by cargo, or by the SDK the project holds); choose another name"
        );
    }
    let root = dir.join(name);
    // Made here, not found: a directory that exists already (or appears meanwhile) is never
    // written into.
    std::fs::create_dir(&root).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!("{} exists already; nothing was written", root.display())
        }
        _ => anyhow::anyhow!("cannot create {}: {e}", root.display()),
    })?;
    let fill = |t: &str| t.replace("{{name}}", name);
    let wasm = format!("{name}.wasm");
    let mut files: Vec<(String, String, bool)> = Vec::new();
    let mut add = |path: &str, text: String| files.push((path.to_owned(), text, false));
    match lang {
        Lang::Rust => {
            add(
                "Cargo.toml",
                format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
                     # Without cdylib the build makes no .wasm.\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
                     [dependencies]\nairlock-sdk = {{ path = \"airlock-sdk\" }}\n\
                     serde = {{ version = \"1\", features = [\"derive\"] }}\nschemars = \"1\"\n\n\
                     [profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\n\n[workspace]\n"
                ),
            );
            add("src/lib.rs", fill(include_str!("templates/lib.rs.tmpl")));
            add("airlock-sdk/Cargo.toml", rust_sdk_manifest());
            for (path, text) in RUST_SDK {
                add(&format!("airlock-sdk/{path}"), text.to_owned());
            }
        }
        Lang::Python => {
            add("app.py", fill(include_str!("templates/app.py.tmpl")));
            add(
                "airlock_sdk/__init__.py",
                include_str!("../../../sdk/python/airlock_sdk/__init__.py").to_owned(),
            );
            add(
                "airlock_sdk/http.py",
                include_str!("../../../sdk/python/airlock_sdk/http.py").to_owned(),
            );
            for (path, text) in HTTP_WIT {
                add(path, text.to_owned());
            }
        }
        Lang::Js => {
            add("tool.js", fill(include_str!("templates/tool.js.tmpl")));
            add(
                "airlock.js",
                include_str!("../../../sdk/js/airlock.js").to_owned(),
            );
            for (path, text) in HTTP_WIT {
                add(path, text.to_owned());
            }
        }
    }
    let build = match lang {
        Lang::Rust => format!(
            "cargo build --release --target wasm32-wasip2\ncp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{}.wasm\" {name}.wasm",
            name.replace('-', "_")
        ),
        Lang::Python => format!(
            "\"${{COMPONENTIZE_PY:-componentize-py}}\" -d wit -w airlock:tool-http/tool componentize -p . app -o {name}.wasm"
        ),
        Lang::Js => format!(
            "\"${{COMPONENTIZE_JS:-componentize-js}}\" tool.js --wit wit --world-name airlock:tool-http/tool -o {name}.wasm"
        ),
    };
    files.push((
        "build".to_owned(),
        format!(
            "#!/usr/bin/env bash\n# Builds {wasm}, the component airlock.toml serves.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n{build}\n"
        ),
        true,
    ));
    files.push((
        "airlock.toml".to_owned(),
        format!(
            "# Serves the tool of this project. Try it:\n#   airlock call greet --config airlock.toml --args '{{\"name\": \"ada\"}}'\n# Serve it to an MCP client on stdio:\n#   airlock serve --stdio --config airlock.toml\n# A rebuilt component is reloaded while serving.\n\n[[tool]]\nname = \"{name}\"\ncomponent = \"{wasm}\"\n\n# Plain settings the tool reads (never secrets: grant those).\n[tool.settings]\ngreeting = \"hello\"\n"
        ),
        false,
    ));
    let toolchain = match lang {
        Lang::Rust => "the Rust target `wasm32-wasip2` (`rustup target add wasm32-wasip2`)",
        Lang::Python => "componentize-py 0.25 (`pip install componentize-py==0.25.1`)",
        Lang::Js => {
            "componentize-js 0.23 (`npm install @bytecodealliance/componentize-js@0.23.0 @bytecodealliance/preview2-shim@0.17.9`)"
        }
    };
    files.push((
        "README.md".to_owned(),
        format!(
            "# {name}\n\nAn Airlock tool, `greet`. Needs {toolchain}.\n\n```sh\n./build\nairlock call greet --config airlock.toml --args '{{\"name\": \"ada\"}}'\nairlock serve --stdio --config airlock.toml\n```\n\nSee docs/authors.md in Airlock's repository for the SDK: settings, the caller, HTTP, asking\npeople, and testing.\n"
        ),
        false,
    ));
    for (path, text, executable) in &files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(root)
}
