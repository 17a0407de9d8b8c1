//! Speed of the libtorch-free spec path (parse + validate + count) on the paper-scale specs. Model latency
//! under onnxruntime and tract is in `benches/runtimes.rs`.

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("arch_specs/paper/limited-7x7-ex6.yaml")).expect("spec present");
    c.bench_function("spec/parse+validate paper 7x7-e6", |b| b.iter(|| strnas::spec::from_str(&text).expect("valid")));
    let arch = strnas::spec::from_str(&text).expect("valid");
    c.bench_function("spec/inventory+count paper 7x7-e6", |b| b.iter(|| strnas::ops::summarize(&strnas::ops::inventory(&arch))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
