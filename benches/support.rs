//! Shared by the end-to-end benches (included with `#[path]`).

use std::path::{Path, PathBuf};

/// The release `airlock` binary beside this bench executable.
pub fn binary() -> PathBuf {
    // target/release/deps/<bench>-<hash> -> target/release/airlock
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("airlock");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p airlock` first",
        bin.display()
    );
    bin
}
