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

use std::process::Command;

#[path = "common/search_steps.rs"]
mod search_steps;

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
    let inputs = search_steps::Inputs::new(spec, batch);
    let before = status_kib("VmRSS");
    let mut step: Box<dyn FnMut() + '_> = match case {
        "fixed" => Box::new(inputs.fixed_step()),
        "weight" => Box::new(inputs.weight_step()),
        "arch" => Box::new(inputs.arch_step()),
        other => panic!("unknown case {other}"),
    };
    // One untimed warm-up step, then STEPS timed ones.
    step();
    let t = std::time::Instant::now();
    for _ in 0..STEPS {
        step();
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / STEPS as f64;
    let peak = status_kib("VmHWM");
    println!("{} {ms}", peak.saturating_sub(before));
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
