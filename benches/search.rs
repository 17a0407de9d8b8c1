//! The search's step costs against the fixed network (issue: a weight step of the supernet at most 1.3x a
//! step of the fixed network its sampled path forms, an architecture step at most 2.5x). Tiny TPS + attention
//! space, batch 8, CPU, teacher-forced attention loss, backward and optimizer step included. `make bench`.

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "common/search_steps.rs"]
mod search_steps;

fn steps(c: &mut Criterion) {
    let inputs = search_steps::Inputs::new("arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml", 8);
    let mut group = c.benchmark_group("search-step-b8");
    group.sample_size(20);
    // The fixed network of path 1 (mb3x3-e3 everywhere but the first cells' mb3x3-e1 = the spec itself).
    let mut fixed = inputs.fixed_step();
    group.bench_function("fixed network", |b| b.iter(&mut fixed));
    let mut weight = inputs.weight_step();
    group.bench_function("supernet weight step (same path)", |b| b.iter(&mut weight));
    let mut arch = inputs.arch_step();
    group.bench_function("supernet architecture step", |b| b.iter(&mut arch));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(2)).measurement_time(std::time::Duration::from_secs(10));
    targets = steps
}
criterion_main!(benches);
