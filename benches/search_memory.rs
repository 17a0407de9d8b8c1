//! Peak memory and step time of the search's steps against the fixed network (issue: peak memory at most 2x
//! the fixed network's at the same batch; paper scale runs on CPU for a few iterations, with its step time and
//! memory reported). Tiny TPS + attention space at batch 32 (the training default) and the paper-scale space
//! (limited-3x3-ex3's skeleton) at batch 8, CPU, one libtorch thread; `cargo bench --bench search_memory` (in
//! `make bench`) prints a table.
//!
//! Each case runs in a fresh child process (this binary re-executed with `STRNAS_MEM_CASE` set), so one case's
//! freed-but-cached allocations cannot hide another's: the memory figure is the process's peak resident set
//! (`VmHWM`) after a warm-up step and three timed steps, minus its resident set just before the network was
//! built. That covers the weights, gradients, optimizer state and the step's activations; for the supernet,
//! every candidate's weights (ProxylessNAS keeps them all in memory) but only the sampled path's activations.
//! The time is the mean of the three timed steps (loss, backward, optimizer step).

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
/// (scale, spec, batch)
const SCALES: [(&str, &str, i64); 2] = [("tiny", "arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml", 32), ("paper", "arch_specs/paper/limited-3x3-ex3.yaml", 8)];
const STEPS: u64 = 3;

/// `VmRSS` or `VmHWM` of this process in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.trim_start_matches(':').split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("/proc/self/status has no {field} (Linux only)"))
}

fn run_case(case: &str, spec: &str, batch: i64) {
    tch::set_num_threads(1);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
    let space = Space::around(strnas::spec::load(&spec).unwrap_or_else(|e| panic!("{e}")));
    let codec = LabelCodec::from_arch(&space.base);
    let words = ["hello", "world", "search", "latency", "tiny", "cells", "alpha", "gates"];
    let labels: Vec<String> = (0..batch as usize).map(|i| words[i % words.len()].to_string()).collect();
    tch::manual_seed(0);
    let images = Tensor::rand([batch, 1, 32, 100], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let before = status_kib("VmRSS");
    // One untimed warm-up step, then STEPS timed ones.
    let mut timed = std::time::Duration::ZERO;
    let mut step = |k: u64, f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        if k > 0 {
            timed += t.elapsed();
        }
    };
    match case {
        "fixed" => {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = strnas::nn::StrNet::new(&vs.root(), &space.base);
            let mut opt = Optimizer::new(&vs, OptimKind::adadelta());
            for k in 0..=STEPS {
                step(k, &mut || {
                    opt.zero_grad();
                    strnas::train::loss(&net, &codec, &images, &labels).backward();
                    opt.step();
                });
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
                for k in 0..=STEPS {
                    step(k, &mut || {
                        sopt.zero_grad();
                        strnas::train::loss_of(&codec, &images, &labels, |t| snet.forward_t(&images, t, true, &Route::Paths(&path))).backward();
                        sopt.step();
                    });
                }
            } else {
                let mut aopt = Optimizer::new(&avs, OptimKind::Adam { lr: 1e-3, beta1: 0.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
                for k in 0..=STEPS {
                    step(k, &mut || {
                        let pairs = mechanics::sample_pairs(&alphas, &mut Rng::for_item(1, 2, k));
                        let g = gates(&pairs, Device::Cpu);
                        aopt.zero_grad();
                        let ce = strnas::train::loss_of(&codec, &images, &labels, |t| snet.forward_t(&images, t, true, &Route::Gates(&pairs, &g)));
                        finish_arch_step(&alphas, &pairs, &g, &ce, &mut aopt);
                    });
                }
            }
        }
        other => panic!("unknown case {other}"),
    }
    let peak = status_kib("VmHWM");
    println!("{} {}", peak.saturating_sub(before), timed.as_secs_f64() * 1000.0 / STEPS as f64);
}

fn main() {
    if let Ok(case) = std::env::var("STRNAS_MEM_CASE") {
        let scale = std::env::var("STRNAS_MEM_SCALE").unwrap_or_default();
        let (_, spec, batch) = SCALES.iter().find(|s| s.0 == scale).unwrap_or_else(|| panic!("unknown scale {scale:?}"));
        run_case(&case, spec, *batch);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and a measurement
    // is not a test. A filter argument is ignored.
    if !std::env::args().any(|a| a == "--bench") {
        println!("search_memory: a measurement; run it with `cargo bench --bench search_memory`");
        return;
    }
    let exe = std::env::current_exe().expect("the bench binary's path");
    println!("search steps: peak memory and time per step, CPU, 1 libtorch thread, {STEPS} timed steps after one warm-up, each case in its own process");
    println!("{:<7} {:>5} {:<48} {:>10} {:>8} {:>12} {:>8}", "scale", "batch", "case", "peak MiB", "x fixed", "ms / step", "x fixed");
    for (scale, _, batch) in SCALES {
        let mut fixed = None;
        for (case, what) in CASES {
            let out = Command::new(&exe).env("STRNAS_MEM_CASE", case).env("STRNAS_MEM_SCALE", scale).output().expect("re-running the bench binary");
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                panic!("case {scale} {case} failed");
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text.split_whitespace().map(|x| x.parse().expect("a number")).collect();
            let (kib, ms) = (v[0], v[1]);
            let (bk, bm) = *fixed.get_or_insert((kib, ms));
            println!("{scale:<7} {batch:>5} {what:<48} {:>10.1} {:>7.2}x {:>12.1} {:>7.2}x", kib / 1024.0, kib / bk, ms, ms / bm);
        }
    }
}
