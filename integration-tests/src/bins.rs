//! Locates the workspace's binaries for tests that drive them as a user would.
//!
//! Cargo only exposes `CARGO_BIN_EXE_*` for binaries of the test's own
//! package, so scenario tests find the others next to the test executable
//! (`target/<profile>/deps/..`). The test command in README.md builds the
//! whole workspace first; `BERTH_BIN_DIR` overrides the directory.

use std::path::PathBuf;

/// Directory holding the built binaries.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a parent")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of the workspace binary `name`, which must have been built.
pub fn path(name: &str) -> PathBuf {
    let p = dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --workspace` first (or set BERTH_BIN_DIR)",
        p.display()
    );
    p
}
