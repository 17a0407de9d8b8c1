//! Small filesystem helpers shared by every writer: outputs and checkpoints are never left half-written.
//! Foundation layer: depends on no other strnas module.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over `path`, then
/// fsync of the directory so the rename itself is durable. A crash (or power loss) leaves either the old file
/// or the new one, never a truncated mix or a run directory missing a file that was reported written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes a directory's entries (created, renamed, removed files) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    tests::DIR_SYNCS.with(|c| c.set(c.get() + 1));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

/// Writes a `--json` style output: `-` means stdout, anything else a file written atomically.
pub fn write_output(path: &Path, text: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        println!("{text}");
        Ok(())
    } else {
        write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
    }
}

/// Appends one line to a log file (created if missing).
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        pub(super) static DIR_SYNCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn atomic_write_replaces_the_file_and_syncs_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run").join("model.safetensors");
        let before = DIR_SYNCS.with(|c| c.get());
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(DIR_SYNCS.with(|c| c.get()) - before, 2, "each rename is made durable by a directory fsync");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("model.safetensors")], "no temp file left behind");
    }
}
