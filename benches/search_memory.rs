//! Peak memory of the search's steps against the fixed network (issue: peak memory at most 2x the fixed
//! network's at the same batch). Tiny TPS + attention space, batch 32 (the training default), CPU, one
//! libtorch thread; `cargo bench --bench search_memory` (in `make bench`) prints a table.
//!
//! Each case runs in a fresh child process (this binary re-executed with `STRNAS_MEM_CASE` set), so one case's
//! freed-but-cached allocations cannot hide another's: the figure is the process's peak resident set
//! (`VmHWM`) after three steps minus its resident set just before the network was built. That covers the
//! weights, gradients, optimizer state and the step's activations; for the supernet, every candidate's weights
//! (ProxylessNAS keeps them all in memory) but only the sampled path's activations.

use std::path::Path;
use std::process::Command;

use strnas::data::labels::LabelCodec;
use strnas::latency::Space;
use strnas::rng::Rng;
use strnas::search::mechanics::{self, finish_arch_step};
use strnas::search::supernet::{gates, Route, SuperNet};
use strnas::train::optim::{OptimKind, Optimizer};
use tch::{nn, Device, Kind, Tensor};

const CASES: [(&str, &str); 3] = [
    ("fixed", "fixed network (the spec), weight step"),
    ("weight", "supernet weight step (same path)"),
    ("arch", "supernet architecture step (two ops per cell)"),
];
const BATCH: i64 = 32;
const STEPS: u64 = 3;

/// `VmRSS` or `VmHWM` of this process in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.trim_start_matches(':').split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("/proc/self/status has no {field} (Linux only)"))
}

fn run_case(case: &str) {
    tch::set_num_threads(1);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml");
    let space = Space::around(strnas::spec::load(&spec).unwrap_or_else(|e| panic!("{e}")));
    let codec = LabelCodec::from_arch(&space.base);
    let words = ["hello", "world", "search", "latency", "tiny", "cells", "alpha", "gates"];
    let labels: Vec<String> = (0..BATCH as usize).map(|i| words[i % words.len()].to_string()).collect();
    tch::manual_seed(0);
    let images = Tensor::rand([BATCH, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let before = status_kib("VmRSS");
    match case {
        "fixed" => {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = strnas::nn::StrNet::new(&vs.root(), &space.base);
            let mut opt = Optimizer::new(&vs, OptimKind::adadelta());
            for _ in 0..STEPS {
                opt.zero_grad();
                strnas::train::loss(&net, &codec, &images, &labels).backward();
                opt.step();
            }
        }
        "weight" | "arch" => {
            let svs = nn::VarStore::new(Device::Cpu);
            let snet = SuperNet::new(&svs.root(), &space);
            let avs = nn::VarStore::new(Device::Cpu);
            let alphas: Vec<Tensor> = space.edges.iter().enumerate().map(|(i, e)| avs.root().var(&format!("a{i}"), &[e.candidates.len() as i64], nn::Init::Const(0.0))).collect();
            if case == "weight" {
                let ops = space.ops_of(&space.base).expect("the base spec is in its own space");
                let path: Vec<usize> = space.edges.iter().zip(&ops).map(|(e, op)| e.candidates.iter().position(|c| c == op).expect("op among the candidates")).collect();
                let mut sopt = Optimizer::new(&svs, OptimKind::adadelta());
                for _ in 0..STEPS {
                    sopt.zero_grad();
                    strnas::train::loss_of(&codec, &images, &labels, |t| snet.forward_t(&images, t, true, &Route::Paths(&path))).backward();
                    sopt.step();
                }
            } else {
                let mut aopt = Optimizer::new(&avs, OptimKind::Adam { lr: 1e-3, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
                for k in 0..STEPS {
                    let pairs = mechanics::sample_pairs(&alphas, &mut Rng::for_item(1, 2, k));
                    let g = gates(&pairs, Device::Cpu);
                    aopt.zero_grad();
                    let ce = strnas::train::loss_of(&codec, &images, &labels, |t| snet.forward_t(&images, t, true, &Route::Gates(&pairs, &g)));
                    finish_arch_step(&alphas, &pairs, &g, &ce, &mut aopt);
                }
            }
        }
        other => panic!("unknown case {other}"),
    }
    let peak = status_kib("VmHWM");
    println!("{}", peak.saturating_sub(before));
}

fn main() {
    if let Ok(case) = std::env::var("STRNAS_MEM_CASE") {
        run_case(&case);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and a measurement
    // is not a test. A filter argument is ignored (three cases, each a few seconds).
    if !std::env::args().any(|a| a == "--bench") {
        println!("search_memory: a measurement; run it with `cargo bench --bench search_memory`");
        return;
    }
    let exe = std::env::current_exe().expect("the bench binary's path");
    println!("search-step peak memory: tiny-limited-3x3-ex3-attn space, batch {BATCH}, CPU, 1 thread, {STEPS} steps per case");
    println!("{:<48} {:>14} {:>10}", "case", "peak MiB", "x fixed");
    let mut fixed = None;
    for (case, what) in CASES {
        let out = Command::new(&exe).env("STRNAS_MEM_CASE", case).output().expect("re-running the bench binary");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            panic!("case {case} failed");
        }
        let kib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a KiB figure");
        let base = *fixed.get_or_insert(kib);
        println!("{:<48} {:>14.1} {:>9.2}x", what, kib / 1024.0, kib / base);
    }
}
