//! Shared setup: locating the binary and the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Returns the path of the `umbra` binary that cargo built for this test run.
pub fn umbra_binary() -> PathBuf {
    // Integration tests live in target/<profile>/deps; the binary sits one
    // level up.
    let mut path = std::env::current_exe().expect("test executable path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let binary = path.join("umbra");
    assert!(
        binary.exists(),
        "`{}` is missing: build it with `cargo build -p umbra-host`",
        binary.display()
    );
    binary
}

/// Runs `umbra` with `args` from the repository root.
pub fn umbra(args: &[&str]) -> Output {
    Command::new(umbra_binary())
        .current_dir(repo_root())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("umbra runs")
}
