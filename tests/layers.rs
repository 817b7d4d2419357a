//! The layer check: `runtime/src` is built in layers (`docs/architecture.md`), and a module may
//! use only its own layer and the layers below it. This test reads every `crate::…` path in
//! the runtime's source (comments aside) and fails on one that runs up a layer, which is also
//! what two layers importing each other would need.
//!
//! Run it alone with `cargo test -p airlock --test layers`; `scripts/test` runs it with the
//! rest.

use std::path::{Path, PathBuf};

/// Bottom to top. A new folder under `runtime/src` must be placed here.
const LAYERS: [&str; 8] = [
    "core", "supply", "config", "sandbox", "gate", "pipeline", "control", "serve",
];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("runtime/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its `//` comment (a `//` inside a string literal is rare in
/// this code base and would only hide a path, never invent one).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// What [`uses`] found in one file.
struct Uses {
    /// The first name of every `crate::<name>` path, with its line number.
    found: Vec<(usize, String)>,
    /// Lines using a form the check cannot read, and why.
    unreadable: Vec<(usize, &'static str)>,
}

/// Every layer named by a `crate::<layer>` path in `text`, with its line number; and the
/// lines that use a form the check cannot read.
///
/// `layer_root` says the file is a layer's `mod.rs`, where `super::` is the crate root and so
/// could reach any layer unseen.
fn uses(text: &str, layer_root: bool) -> Uses {
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = code(line);
        let mut rest = line;
        // `$crate::` (a macro's own crate) is read like `crate::`: a macro in a low layer
        // that expands to a path up is as much a violation as the path itself.
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if after.starts_with('{') {
                unreadable.push((n + 1, "write `use crate::<layer>::…` once per layer"));
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = after;
        }
        // Forms that reach a layer under another name, so the paths above would miss them.
        let hidden = [
            (
                "super::super",
                "`super::super` can leave a layer; name it by `crate::`",
            ),
            (
                "crate as ",
                "an alias of the crate hides which layer a path reaches; use `crate::`",
            ),
            (
                "extern crate",
                "`extern crate` can alias this crate; use `crate::`",
            ),
            (
                "#[path",
                "`#[path]` can put another layer's file in this one",
            ),
            (
                "include!",
                "`include!` can put another layer's code in this one",
            ),
        ];
        for (form, why) in hidden {
            if line.contains(form) {
                unreadable.push((n + 1, why));
            }
        }
        if layer_root && line.contains("super::") && !line.contains("super::super") {
            unreadable.push((
                n + 1,
                "`super::` in a layer's mod.rs is the crate root; name it by `crate::`",
            ));
        }
    }
    Uses { found, unreadable }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen_layers = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let mut parts = relative.components();
        let first = parts.next().expect("a path").as_os_str().to_string_lossy();
        if parts.next().is_none() {
            // lib.rs and main.rs: the crate root declares the layers and uses only the top.
            if !matches!(&*first, "lib.rs" | "main.rs") {
                problems.push(format!(
                    "{}: a module outside every layer; put it in one of {LAYERS:?}",
                    relative.display()
                ));
            }
            continue;
        }
        let Some(own) = rank(&first) else {
            problems.push(format!(
                "{}: folder `{first}` is not a layer; add it to LAYERS in tests/layers.rs, in order",
                relative.display()
            ));
            continue;
        };
        seen_layers |= 1 << own;
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let layer_root = relative.file_name().is_some_and(|f| f == "mod.rs");
        let Uses { found, unreadable } = uses(&text, layer_root);
        for (line, name) in found {
            match rank(&name) {
                Some(target) if target > own => problems.push(format!(
                    "{}:{line}: layer `{first}` uses `crate::{name}`, a layer above it",
                    relative.display()
                )),
                Some(_) => {}
                None => problems.push(format!(
                    "{}:{line}: `crate::{name}` is not a layer; paths start with one of {LAYERS:?}",
                    relative.display()
                )),
            }
        }
        for (line, why) in unreadable {
            problems.push(format!("{}:{line}: {why}", relative.display()));
        }
    }
    assert_eq!(
        seen_layers,
        (1 << LAYERS.len()) - 1,
        "every layer has a folder under runtime/src"
    );
    assert!(
        problems.is_empty(),
        "layer violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_path() {
    // The reader itself: a path up a layer is found (also through `$crate`), a comment is
    // not, and forms that hide the layer are refused.
    let Uses { found, unreadable } = uses(
        "use crate::gate::audit::AuditLog;\n// crate::serve::cli\nlet x = $crate::serve::x;\nuse crate::{core::ids, gate::auth};\n",
        false,
    );
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["gate", "serve"]);
    assert_eq!(unreadable.len(), 1);
    let hiding = "use crate as c;\nuse super::serve::cli;\n#[path = \"../serve/cli.rs\"]\nmod x;\n";
    let Uses { unreadable, .. } = uses(hiding, true);
    let lines: Vec<usize> = unreadable.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [1, 2, 3]);
    // Outside a layer's mod.rs, `super::` is the layer itself.
    assert!(uses("use super::files;\n", false).unreadable.is_empty());
}
