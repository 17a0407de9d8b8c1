//! Timing statistics and the measurement loop: explicit warm-up, then at least N runs and
//! at least T seconds; median, mean, p90, p99, stdev %, min.
//!
//! Owns [`measure`], [`Budget`] and [`Stats`], which `bench` and `eval` both time with. A leaf: depends on no
//! other strnas module.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Summary of repeated timings, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub runs: usize,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Sample standard deviation as a percentage of the mean.
    pub stdev_pct: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

/// The `f`-quantile of sorted `xs` (nearest rank on `(n - 1) f`); 0 when empty.
pub fn quantile(sorted: &[f64], f: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * f).round() as usize]
}

/// Median of unsorted values (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

impl Stats {
    pub fn from_ms(samples: &[f64]) -> Self {
        let mut ms = samples.to_vec();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        if n == 0 {
            return Stats::default();
        }
        let mean = ms.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { ms.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Stats {
            runs: n,
            median_ms: quantile(&ms, 0.5),
            mean_ms: mean,
            p90_ms: quantile(&ms, 0.9),
            p99_ms: quantile(&ms, 0.99),
            stdev_pct: if mean > 0.0 { 100.0 * var.sqrt() / mean } else { 0.0 },
            min_ms: ms[0],
            max_ms: ms[n - 1],
        }
    }
}

/// How long to measure: `warmup` unmeasured runs, then runs until both `min_iters` and `min_time` are reached
/// (or `max_iters`, a cap for very fast models).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub warmup: usize,
    pub min_iters: usize,
    pub min_time_s: f64,
    pub max_iters: usize,
}

impl Budget {
    /// The same budget split into `parts` blocks (alternating measurements): iterations and time divided,
    /// at least 3 runs per block, no warm-up beyond one run.
    pub fn split(&self, parts: usize) -> Budget {
        let p = parts.max(1);
        Budget { warmup: 1, min_iters: self.min_iters.div_ceil(p).max(3), min_time_s: self.min_time_s / p as f64, max_iters: self.max_iters }
    }
}

/// Runs `f` per `budget` and returns the measured durations in milliseconds (warm-up excluded).
pub fn measure(budget: &Budget, f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let t0 = Instant::now();
    measure_on(budget, || t0.elapsed(), f)
}

/// [`measure`] on the clock `now` (time since any fixed origin): the loop's logic apart from the real clock.
fn measure_on(budget: &Budget, mut now: impl FnMut() -> Duration, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..budget.warmup {
        f()?;
    }
    let min_time = Duration::from_secs_f64(budget.min_time_s.max(0.0));
    let mut out = Vec::with_capacity(budget.min_iters.max(16));
    let start = now();
    while (out.len() < budget.min_iters || now() - start < min_time) && out.len() < budget.max_iters.max(1) {
        let t = now();
        f()?;
        out.push((now() - t).as_secs_f64() * 1e3);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        // 1..=100 ms: median rounds (n-1)/2 = 49.5 up to index 50 -> 51; p90 index 89.1 -> 89 -> 90.
        let xs: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Stats::from_ms(&xs);
        assert_eq!((s.runs, s.median_ms, s.p90_ms, s.p99_ms, s.min_ms, s.max_ms), (100, 51.0, 90.0, 99.0, 1.0, 100.0));
        assert!((s.mean_ms - 50.5).abs() < 1e-12);
        // sample stdev of 1..=100 is 29.0115...; as % of the mean 50.5:
        assert!((s.stdev_pct - 57.4486).abs() < 1e-3, "{}", s.stdev_pct);
        assert_eq!(Stats::from_ms(&[]).runs, 0);
    }

    #[test]
    fn measure_honours_iterations_time_and_cap() {
        let mut calls = 0;
        let b = Budget { warmup: 2, min_iters: 5, min_time_s: 0.0, max_iters: 100 };
        let ms = measure(&b, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((ms.len(), calls), (5, 7));
        // The time rule on a clock that each run advances by exactly 5 ms: runs until 50 ms have passed.
        let b = Budget { warmup: 0, min_iters: 1, min_time_s: 0.05, max_iters: 1_000_000 };
        let clock = std::cell::Cell::new(Duration::ZERO);
        let ms = measure_on(&b, || clock.get(), || {
            clock.set(clock.get() + Duration::from_millis(5));
            Ok(())
        })
        .unwrap();
        assert_eq!(ms, vec![5.0; 10]);
        let b = Budget { warmup: 0, min_iters: 1, min_time_s: 10.0, max_iters: 3 };
        assert_eq!(measure(&b, || Ok(())).unwrap().len(), 3);
        let e = measure(&b, || anyhow::bail!("boom")).unwrap_err();
        assert_eq!(e.to_string(), "boom");
    }
}
