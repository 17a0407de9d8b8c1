//! The runtime libraries themselves: locating and loading onnxruntime's shared library, the pinned and
//! compiled-in versions `strnas doctor` reports, and process set-up (allocator tuning, SIGPIPE).
//!
//! onnxruntime is loaded at run time (the `ort` crate's `load-dynamic` feature): no binary download, any
//! onnxruntime >= 1.22 works, the pinned one is 1.31.1 from PyPI. The library is looked up in this order:
//! the `--ort-lib` flag, the `ORT_DYLIB_PATH` variable, then the strnas cache that `scripts/deps.sh` fills
//! (`$STRNAS_CACHE`, default `~/.cache/strnas`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// onnxruntime version pinned by `scripts/deps.sh`.
pub const ORT_PINNED: &str = "1.31.1";
/// PyTorch release whose libtorch tch 0.26 links (`scripts/deps.sh` installs it).
pub const TORCH_PINNED: &str = "2.13.0";
/// tract version compiled in (pinned in Cargo.toml).
pub const TRACT_VERSION: &str = "0.23.9";

/// The strnas cache directory: `$STRNAS_CACHE`, else `$XDG_CACHE_HOME/strnas`, else `~/.cache/strnas`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("STRNAS_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("strnas")
}

/// Where an onnxruntime library was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLib {
    pub path: PathBuf,
    /// `--ort-lib`, `ORT_DYLIB_PATH` or `cache`.
    pub source: &'static str,
}

const INSTALL_HINT: &str = "install it with `make deps` (onnxruntime==1.31.1 into ~/.cache/strnas; `make deps GPU=1` \
     for CUDA), or point strnas at a libonnxruntime.so with --ort-lib PATH or ORT_DYLIB_PATH";

/// `libonnxruntime.so.*` inside the cache's virtual environment, newest name first.
fn find_in_cache(cache: &Path) -> Option<PathBuf> {
    let lib = cache.join("venv").join("lib");
    let mut found = vec![];
    for py in std::fs::read_dir(&lib).ok()?.flatten() {
        let capi = py.path().join("site-packages").join("onnxruntime").join("capi");
        if let Ok(entries) = std::fs::read_dir(&capi) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("libonnxruntime.so") && !name.contains("providers") {
                    found.push(e.path());
                }
            }
        }
    }
    found.sort();
    found.pop()
}

/// Finds onnxruntime: `flag`, then `ORT_DYLIB_PATH`, then the cache. The error says how to install it.
pub fn find_ort_lib(flag: Option<&Path>) -> Result<OrtLib> {
    // A given path is a file path, relative to the working directory: made absolute, since dlopen would
    // search the library path for a name without a slash.
    let given = |p: &Path, what: String, source: &'static str| -> Result<OrtLib> {
        if p.is_dir() {
            bail!("{what}: is a directory, not the onnxruntime library (name the libonnxruntime.so file in it); {INSTALL_HINT}");
        }
        if !p.is_file() {
            bail!("{what}: no such file; {INSTALL_HINT}");
        }
        let path = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(OrtLib { path, source })
    };
    if let Some(p) = flag {
        return given(p, format!("--ort-lib {}", p.display()), "--ort-lib");
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return given(&p, format!("ORT_DYLIB_PATH={}", p.display()), "ORT_DYLIB_PATH");
    }
    let cache = cache_dir();
    match find_in_cache(&cache) {
        Some(path) => Ok(OrtLib { path, source: "cache" }),
        None => bail!("onnxruntime library not found (no --ort-lib, no ORT_DYLIB_PATH, nothing in {}); {INSTALL_HINT}", cache.display()),
    }
}

static ORT_ENV: OnceLock<std::result::Result<(OrtLib, ort::environment::Environment), String>> = OnceLock::new();

/// Loads onnxruntime once per process (later calls return the first outcome, whatever `flag` they pass).
pub fn init_ort(flag: Option<&Path>) -> Result<&'static OrtLib> {
    let r = ORT_ENV.get_or_init(|| {
        let lib = find_ort_lib(flag).map_err(|e| e.to_string())?;
        let env = ort::init_from(&lib.path)
            .map_err(|e| format!("{}: cannot load onnxruntime: {e}", lib.path.display()))?
            .with_name("strnas")
            .build()
            .map_err(|e| format!("{}: cannot create an onnxruntime environment: {e}", lib.path.display()))?;
        Ok((lib, env))
    });
    match r {
        Ok((lib, _)) => Ok(lib),
        Err(e) => bail!("{e}"),
    }
}

/// The onnxruntime environment (loading the library first, see [`init_ort`]); sessions are built from it.
pub fn ort_environment(flag: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    init_ort(flag)?;
    match ORT_ENV.get() {
        Some(Ok((_, env))) => Ok(env),
        _ => bail!("onnxruntime is not loaded"),
    }
}

/// The loaded onnxruntime's version: the release tag in its build info (`git-branch=rel-1.31.1`) when the build
/// carries one, else the version in the library's file name (`libonnxruntime.so.1.31.1`).
pub fn ort_version(lib: &OrtLib) -> Option<String> {
    let info = ort::info();
    let tagged = info
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|t| t.strip_prefix("git-branch=rel-"))
        .map(str::to_string);
    tagged.or_else(|| {
        let name = lib.path.file_name()?.to_string_lossy().into_owned();
        let v = name.split_once(".so.")?.1;
        v.chars().next()?.is_ascii_digit().then(|| v.to_string())
    })
}

/// Whether the loaded onnxruntime was built with the CUDA execution provider.
pub fn ort_has_cuda() -> Result<bool> {
    use ort::ep::ExecutionProvider;
    ort::ep::CUDA::is_available().context("asking onnxruntime for its execution providers")
}

/// Keeps freed tensor memory in the process instead of returning it to the kernel after every step.
///
/// glibc serves large allocations with fresh `mmap`s and trims the heap eagerly, so each training step
/// page-faults its activations back in: measured on the 2-core machine, tiny-crnn-ctc (batch 64) trained at 54 images/s
/// with a third of the time in the kernel, and at 68 images/s with these settings. Must run before threads
/// start allocating; a no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only adjusts allocator tunables; called once at start-up.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum on 64-bit
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
            mallopt(M_TOP_PAD, 1 << 30);
        }
    }
}

/// Restores the default SIGPIPE action so `strnas ... | head` ends quietly instead of panicking on a
/// closed stdout (Rust ignores SIGPIPE by default). A no-op off Unix.
pub fn default_sigpipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(sig: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: resetting a signal disposition to its default at start-up, before any thread exists.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_pointing_nowhere_names_the_flag_and_the_fix() {
        let err = find_ort_lib(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err().to_string();
        assert!(err.contains("--ort-lib /nonexistent/libonnxruntime.so"), "{err}");
        assert!(err.contains("make deps"), "{err}");
    }

    #[test]
    fn cache_lookup_finds_the_wheel_layout() {
        let dir = tempfile::tempdir().unwrap();
        let capi = dir.path().join("venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        assert_eq!(find_in_cache(dir.path()), None);
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        assert_eq!(find_in_cache(dir.path()), Some(capi.join("libonnxruntime.so.1.31.1")));
    }
}
