//! Batch-1 latency of the exported tiny models under onnxruntime and tract (one thread, random weights), with
//! criterion's statistics. `make bench`; onnxruntime is found as `strnas` finds it (`make deps` installs it).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use strnas::bench::model::{input_data, resolve_inputs, BenchModel, Resolve, INPUT_SEED};
use strnas::runtime::{self, Device, Runtime};

const MODELS: &[&str] = &["arch_specs/tiny/tiny-crnn-ctc.yaml", "arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml"];

fn runtimes(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut group = c.benchmark_group("batch1");
    for spec in MODELS {
        let arch = strnas::spec::load(&root.join(spec)).unwrap_or_else(|e| panic!("{e}"));
        let model = BenchModel::from_arch(arch, spec).unwrap_or_else(|e| panic!("{e:#}"));
        let Resolve::Inputs(inputs) = resolve_inputs(&model, &[], 1).expect("inputs") else { panic!("{spec}: batch 1 skipped") };
        let data = input_data(&inputs, INPUT_SEED);
        for rt in [Runtime::Ort, Runtime::Tract] {
            let mut e = runtime::open(rt, Device::Cpu, &model.model_ref(), 1, None).unwrap_or_else(|e| panic!("{e:#} (run `make deps`)"));
            e.prepare(&data).unwrap_or_else(|e| panic!("{e:#}"));
            group.bench_function(format!("{}/{}", model.name, rt.name()), |b| b.iter(|| e.run().expect("inference")));
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = runtimes
}
criterion_main!(benches);
