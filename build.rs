//! With the `torch` feature, bakes libtorch's directory into the binaries' rpath so `strnas` runs without
//! LD_LIBRARY_PATH (torch-sys reports the directory it linked against as DEP_TCH_LIBTORCH_LIB).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:rustc-env=STRNAS_LIBTORCH_LIB={dir}");
        } else {
            println!("cargo:rustc-env=STRNAS_LIBTORCH_LIB=");
        }
    }
}
