//! The machine's measured matrix-multiply peak: the reference beside `strnas bench`'s GFLOP/s column and in
//! `strnas doctor`, so a user sees how close a runtime runs a model to what the machine can do.
//!
//! The workload is one square float32 MatMul (`n` x `n` by `n` x `n`, 2 n^3 FLOPs) run by onnxruntime on the
//! bench's device and thread count: MLAS's SGEMM (cuBLAS under `--device cuda`), a kernel tuned close to the
//! hardware's limit, measured through the same runtime layer as the models.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use strnas_onnx::{Dim, Elem, GraphBuilder};

use crate::measure::{Budget, Stats};
use crate::rng::Rng;
use crate::runtime::{Device, InputData, ModelRef, Runtime};

/// Size of the square GEMM: large enough that its time is arithmetic (2.1 GFLOP, ~15-30 ms per run on one
/// or two x86 cores), small enough to measure in about a second.
pub const GEMM_N: usize = 1024;

/// One measured peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// What ran the GEMM (`onnxruntime 1.31.1 MatMul`).
    pub workload: String,
    pub device: Device,
    pub threads: usize,
    /// The GEMM's size (n x n by n x n).
    pub n: usize,
    /// GFLOP/s at the median time: the reference for shares of peak.
    pub median_gflops: f64,
    /// GFLOP/s at the fastest run.
    pub best_gflops: f64,
    pub runs: usize,
}

impl Peak {
    /// `gflops` as a fraction of the median peak.
    pub fn share(&self, gflops: f64) -> f64 {
        if self.median_gflops > 0.0 {
            gflops / self.median_gflops
        } else {
            0.0
        }
    }
}

/// The GEMM model: input `a` [n, n] times the initializer `b` [n, n] (values uniform in [-1, 1]).
pub fn gemm_model(n: usize) -> Result<Vec<u8>> {
    let mut g = GraphBuilder::new("gemm_peak");
    let d = Dim::Fixed(n as i64);
    g.input("a", Elem::F32, &[d.clone(), d.clone()])?;
    let mut rng = Rng::new(1);
    let b: Vec<f32> = (0..n * n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    g.initializer_f32("b", &[n as i64, n as i64], &b)?;
    g.node("MatMul", "gemm", &["a", "b"], &["y"], &[])?;
    g.output("y", Elem::F32, &[d.clone(), d])?;
    strnas_onnx::to_bytes(&g.finish(env!("CARGO_PKG_VERSION"), &[]))
}

/// GFLOP/s of an `n`-sized GEMM that took `ms` milliseconds.
pub fn gemm_gflops(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        2.0 * (n as f64).powi(3) / (ms * 1e6)
    } else {
        0.0
    }
}

/// Measures the peak on onnxruntime at `device` with `threads` intra-op threads: 3 warm-up runs, then at
/// least 10 runs and 0.5 s.
pub fn measure(device: Device, threads: usize, ort_lib: Option<&std::path::Path>) -> Result<Peak> {
    let n = GEMM_N;
    let bytes = gemm_model(n)?;
    let model = ModelRef { source: "GEMM peak workload", onnx: &bytes, network: None };
    let mut engine = crate::runtime::open(Runtime::Ort, device, &model, threads, ort_lib)?;
    let mut rng = Rng::new(2);
    let a: Vec<f32> = (0..n * n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    engine.prepare(&[InputData::f32("a", vec![n, n], a)])?;
    let budget = Budget { warmup: 3, min_iters: 10, min_time_s: 0.5, max_iters: 200 };
    let samples = crate::measure::measure(&budget, || engine.run()).context("GEMM peak workload")?;
    let stats = Stats::from_ms(&samples);
    let info = engine.info();
    Ok(Peak {
        workload: format!("{} {} MatMul", info.runtime.full_name(), info.version),
        device,
        threads: info.threads,
        n,
        median_gflops: gemm_gflops(n, stats.median_ms),
        best_gflops: gemm_gflops(n, stats.min_ms),
        runs: stats.runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_flops_and_shares() {
        // 2 * 1024^3 = 2_147_483_648 FLOPs in 20 ms -> 107.37 GFLOP/s.
        assert!((gemm_gflops(1024, 20.0) - 107.374_182_4).abs() < 1e-6);
        let p = Peak { workload: "x".into(), device: Device::Cpu, threads: 1, n: 1024, median_gflops: 100.0, best_gflops: 120.0, runs: 10 };
        assert!((p.share(25.0) - 0.25).abs() < 1e-12);
        assert_eq!(Peak { median_gflops: 0.0, ..p }.share(25.0), 0.0);
    }

    #[test]
    fn gemm_model_is_one_matmul_of_the_declared_size() {
        let m = strnas_onnx::from_bytes(&gemm_model(8).unwrap()).unwrap();
        let i = strnas_onnx::inspect(&m);
        assert_eq!(i.op_counts.get("MatMul"), Some(&1));
        assert_eq!(i.inputs.len(), 1);
        assert_eq!(i.inputs[0].dims, vec![Dim::Fixed(8), Dim::Fixed(8)]);
        assert_eq!(i.weight_elements, 64);
    }
}
