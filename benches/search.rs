//! The search's step costs against the fixed network (issue: a weight step of the supernet at most 1.3x a
//! step of the fixed network its sampled path forms, an architecture step at most 2.5x). Tiny TPS + attention
//! space, batch 8, CPU, teacher-forced attention loss, backward and optimizer step included. `make bench`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use strnas::data::labels::LabelCodec;
use strnas::latency::Space;
use strnas::rng::Rng;
use strnas::search::mechanics::{self, finish_arch_step};
use strnas::search::supernet::{gates, Route, SuperNet};
use strnas::train::optim::{OptimKind, Optimizer};
use tch::{nn, Device, Kind, Tensor};

fn steps(c: &mut Criterion) {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml");
    let space = Space::around(strnas::spec::load(&spec).unwrap_or_else(|e| panic!("{e}")));
    let codec = LabelCodec::from_arch(&space.base);
    let labels: Vec<String> = ["hello", "world", "search", "latency", "tiny", "cells", "alpha", "gates"].iter().map(|s| s.to_string()).collect();
    tch::manual_seed(0);
    let images = Tensor::rand([8, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let mut group = c.benchmark_group("search-step-b8");
    group.sample_size(20);

    // The fixed network of path 1 (mb3x3-e3 everywhere but the first cells' mb3x3-e1 = the spec itself).
    let vs = nn::VarStore::new(Device::Cpu);
    let net = strnas::nn::StrNet::new(&vs.root(), &space.base);
    let mut opt = Optimizer::new(&vs, OptimKind::adadelta());
    group.bench_function("fixed network", |b| {
        b.iter(|| {
            opt.zero_grad();
            strnas::train::loss(&net, &codec, &images, &labels).backward();
            opt.step();
        })
    });

    let svs = nn::VarStore::new(Device::Cpu);
    let snet = SuperNet::new(&svs.root(), &space);
    let avs = nn::VarStore::new(Device::Cpu);
    let alphas: Vec<Tensor> = space.edges.iter().enumerate().map(|(i, e)| avs.root().var(&format!("a{i}"), &[e.candidates.len() as i64], nn::Init::Const(0.0))).collect();
    let ops = space.ops_of(&space.base).unwrap();
    let path: Vec<usize> = space.edges.iter().zip(&ops).map(|(e, op)| e.candidates.iter().position(|c| c == op).unwrap()).collect();
    let mut sopt = Optimizer::new(&svs, OptimKind::adadelta());
    group.bench_function("supernet weight step (same path)", |b| {
        b.iter(|| {
            sopt.zero_grad();
            strnas::train::loss_of(&codec, &images, &labels, |t| snet.forward_t(&images, t, true, &Route::Paths(&path))).backward();
            sopt.step();
        })
    });
    let mut aopt = Optimizer::new(&avs, OptimKind::Adam { lr: 1e-3, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
    let mut k = 0u64;
    group.bench_function("supernet architecture step", |b| {
        b.iter(|| {
            k += 1;
            let pairs = mechanics::sample_pairs(&alphas, &mut Rng::for_item(1, 2, k));
            let g = gates(&pairs, Device::Cpu);
            aopt.zero_grad();
            let ce = strnas::train::loss_of(&codec, &images, &labels, |t| snet.forward_t(&images, t, true, &Route::Gates(&pairs, &g)));
            finish_arch_step(&alphas, &pairs, &g, &ce, &mut aopt);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(2)).measurement_time(std::time::Duration::from_secs(10));
    targets = steps
}
criterion_main!(benches);
