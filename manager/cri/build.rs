//! Builds berth's pause program (pause/pause.c) as a static executable and
//! leaves it in OUT_DIR, where `src/pause.rs` embeds it: the daemon makes
//! the pod infra image from it, so pods need no image from a registry.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "pause/pause.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("pause");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running {cc} to build the pause program: {e}"));
    assert!(
        status.success(),
        "{cc} could not build the static pause program (is libc6-dev installed?)"
    );
}
