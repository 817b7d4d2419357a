//! Builds the example tools and test fixtures (the `tools/` workspace) for `wasm32-wasip2`, so
//! the binary can embed the examples and the tests can load the fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("runtime/ sits in the workspace");
    for input in [
        "tools/Cargo.toml",
        "tools/Cargo.lock",
        "tools/text",
        "tools/json",
        "tools/time",
        "tools/files",
        "tools/http-fetch",
        "tools/docs",
        "sdk",
        "tests/fixtures",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }

    // A target directory of its own: the outer build holds a lock on its own one. One per
    // checkout: two checkouts sharing a target directory (a worktree of an older commit) would
    // otherwise overwrite each other's fixtures, and the build script of the one built first
    // would not run again to put its own back.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // Named by the checkout's path with `/` as `_` (scripts/conformance finds it the same way).
    let checkout = root.to_string_lossy().replace('/', "_");
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join(format!("airlock-wasm{checkout}"));

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("tools"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings (clippy's wrapper, host RUSTFLAGS, jobserver) must not leak
    // into a build for another target.
    cmd.env_clear();
    for keep in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_NET_OFFLINE",
        "TMPDIR",
    ] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build tools/: {e}"));
    if !status.success() {
        panic!(
            "building tools/ for wasm32-wasip2 failed (see above). If the target is missing, run \
             `rustup target add wasm32-wasip2`."
        );
    }
    let wasm_dir = target_dir.join("wasm32-wasip2/release");
    for name in [
        "text",
        "json",
        "time",
        "files",
        "http_fetch",
        "docs",
        "hostile",
        "conformance",
        "legacy",
        "generic",
        "command",
    ] {
        let file = wasm_dir.join(format!("{name}.wasm"));
        assert!(
            Path::new(&file).is_file(),
            "{} was not built",
            file.display()
        );
    }
    println!("cargo:rustc-env=AIRLOCK_WASM_DIR={}", wasm_dir.display());
}
