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

/// A shipped tiny spec's path.
pub fn tiny_spec_path(name: &str) -> PathBuf {
    root().join("arch_specs/tiny").join(name)
}

/// An LMDB dataset of `n` synthetic words rendered with `seed` (the renderer's fonts from Debian packages).
pub fn make_synth(dir: &std::path::Path, n: u64, seed: u64) {
    use strnas::data::synth::{default_font_dirs, load_fonts, Renderer, Style};
    let r = Renderer::new(load_fonts(&default_font_dirs()).unwrap(), Style { distortion: 0.3, ..Style::default() }).unwrap();
    let mut w = strnas::data::lmdb::LmdbWriter::create(dir).unwrap();
    for i in 0..n {
        let (img, label) = r.render_encoded(seed, i).unwrap();
        w.push(img, &label).unwrap();
    }
    w.finish().unwrap();
}

/// A `w` x `h` grey PNG of value `v`.
pub fn png(w: u32, h: u32, v: u8) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(w, h, image::Luma([v]));
    let mut buf = std::io::Cursor::new(vec![]);
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// A latency table of `space` with made-up entries: entry k of the sorted keys costs (k + 1) x 0.01 ms;
/// dispatch 0.5 ms, correction 1.25 x sum + 0.125 ms.
pub fn constructed_table(space: &strnas::latency::Space) -> strnas::latency::Table {
    use strnas::latency::table;
    let entries = strnas::latency::build::distinct_blocks(space)
        .keys()
        .enumerate()
        .map(|(k, key)| (key.clone(), table::Entry { ms: (k + 1) as f64 * 0.01, ratio: 0.0, noise: 0.0, stats: Default::default() }))
        .collect();
    strnas::latency::Table {
        format: table::FORMAT.into(),
        version: table::VERSION,
        strnas: "test".into(),
        created_unix: 0,
        machine: Default::default(),
        settings: table::Settings {
            runtime: strnas::runtime::Runtime::Ort,
            runtime_version: "x".into(),
            provider: "cpu".into(),
            device: strnas::runtime::Device::Cpu,
            threads: 1,
            batch: 1,
            build: "release".into(),
            rounds: 5,
            int8_weight_bits: None,
            engine_build: strnas::runtime::ENGINE_BUILD.into(),
        },
        space: table::SpaceInfo { base: space.base.name.clone(), path: String::new(), skeleton_hash: strnas::latency::skeleton_hash(&space.base.spec), edges: space.edges.len() },
        calibration_ms: 1.0,
        dispatch_ms: 0.5,
        correction: table::Correction { scale: 1.25, offset_ms: 0.125, models: 3 },
        fitted: vec![],
        build_seconds: 0.0,
        entries,
    }
}
