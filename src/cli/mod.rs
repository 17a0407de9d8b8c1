//! Command-line interface. `main.rs` only calls [`main`]; each command lives in its own module and returns an
//! exit code (0 ok, 1 check failed, 2 error).

mod doctor;
mod spec_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit;

#[derive(Parser, Debug)]
#[command(
    name = "strnas",
    version,
    about = "STR-NAS: search, train, export and benchmark memory-efficient scene text recognisers",
    long_about = "STR-NAS: search, train, export and benchmark memory-efficient scene text recognisers.\n\n\
        A model is described by a YAML architecture spec (see arch_specs/): TPS rectifier + inverted-residual \
        feature extractor + BiLSTM + attention or CTC head. Start with `strnas spec show arch_specs/paper/\
        limited-3x3-ex3.yaml`.\n\nExit codes: 0 ok, 1 a check failed (invalid spec, regression), 2 error."
)]
pub struct Cli {
    /// Path to libonnxruntime.so (else ORT_DYLIB_PATH, else the strnas cache filled by `make deps`)
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate, inspect and generate architecture specs
    #[command(subcommand)]
    Spec(spec_cmd::SpecCommand),
    /// Report the libtorch, onnxruntime and tract this build uses, and whether CUDA is usable
    Doctor(doctor::DoctorArgs),
}

/// Parses arguments, runs the command, returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::ERROR } else { exit::OK };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Spec(c) => spec_cmd::run(c),
        Command::Doctor(a) => doctor::run(a, cli.ort_lib.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::ERROR
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
