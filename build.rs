//! With the `torch` feature, bakes libtorch's directory into the binaries' rpath so `strnas` runs without
//! LD_LIBRARY_PATH (torch-sys reports the directory it linked against as DEP_TCH_LIBTORCH_LIB).
//!
//! Always: `STRNAS_ENGINE_BUILD`, a hash of the runtime layer's source (`src/runtime/`, and the graph
//! lowerings its tract engine applies, `exporters/onnx/src/lower/`), which bench reports and gate baselines
//! and latency tables record, so a measurement taken with other engine code is recognised as stale.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=STRNAS_ENGINE_BUILD={}", engine_build(&["src/runtime", "exporters/onnx/src/lower"]));
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:rustc-env=STRNAS_LIBTORCH_LIB={dir}");
        } else {
            println!("cargo:rustc-env=STRNAS_LIBTORCH_LIB=");
        }
    }
}

/// FNV-1a (64 bit) over the sorted names and the code of the `.rs` files under (or at) `roots`, as 16 hex digits; a
/// root that does not exist stops the build (a moved file would otherwise drop out of the hash unnoticed). Code
/// means every line that is neither blank nor a `//` comment (doc comments included), each with its surrounding
/// whitespace trimmed: rewording a comment or re-indenting leaves the engine build, and so the gate's baseline,
/// as it was.
fn engine_build(roots: &[&str]) -> String {
    let mut files = vec![];
    let mut stack: Vec<std::path::PathBuf> = roots.iter().map(std::path::PathBuf::from).collect();
    if let Some(missing) = stack.iter().find(|p| !p.exists()) {
        panic!("engine build hash: {} does not exist (moved? update build.rs)", missing.display());
    }
    while let Some(d) = stack.pop() {
        if d.is_file() {
            println!("cargo:rerun-if-changed={}", d.display());
            files.push(d);
            continue;
        }
        // A directory too, so a file added to it reruns the hash.
        println!("cargo:rerun-if-changed={}", d.display());
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                println!("cargo:rerun-if-changed={}", p.display());
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let code = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//"));
        let name = f.to_string_lossy().into_owned();
        for line in std::iter::once(name.as_str()).chain(code) {
            for b in line.bytes().chain([0u8]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}
