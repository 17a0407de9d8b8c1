//! Helpers shared by the integration tests: run the `strnas` binary from the repository root.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn strnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strnas")).args(args).current_dir(root()).output().expect("runs strnas")
}

/// stdout and stderr together, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
