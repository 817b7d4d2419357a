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
fn uses(text: &str) -> Uses {
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = code(line);
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            // `$crate::` in a macro is the macro's own crate, not a path into a layer.
            let dollar = i > 0 && rest.as_bytes()[i - 1] == b'$';
            if !dollar {
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
            }
            rest = after;
        }
        if line.contains("super::super") {
            unreadable.push((
                n + 1,
                "`super::super` can leave a layer; name it by `crate::`",
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
        let Uses { found, unreadable } = uses(&text);
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
    // The reader itself: a path up a layer is found, a comment and `$crate` are not.
    let Uses { found, unreadable } = uses(
        "use crate::gate::audit::AuditLog;\n// crate::serve::cli\nlet x = $crate::x;\nuse crate::{core::ids, gate::auth};\n",
    );
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["gate"]);
    assert_eq!(unreadable.len(), 1);
}
