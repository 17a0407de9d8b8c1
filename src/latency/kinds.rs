//! Where a latency table is wrong, per op kind: whole-model times regressed on the table's per-kind sums.
//!
//! A model's prediction is a sum over its blocks; grouping the blocks by kind (the searchable op classes of
//! each part, and the fixed blocks) turns every measured model into a point `(S_1 .. S_K, measured)`, with
//! `S_k` the table's milliseconds of kind k in that model. Least squares of `measured ~ sum_k a_k S_k + b`
//! gives, per kind, what one table millisecond of that kind is worth in whole models: `a_k` far from the
//! correction's common scale says the table over- (a_k small) or under-states (a_k large) that kind, the
//! non-additivity nn-Meter (Zhang et al. 2021) finds between kernels measured alone and in a model. Kinds
//! whose sum does not vary over the points (the fixed blocks of a space) cannot be told from the offset and
//! keep the common scale. Used as a diagnostic only: cross-validated on 30 + 4 models per runtime and scale, no
//! per-kind correction predicted held-out models better than the common scale (`scripts/latency_kind_models.py`,
//! docs/results.md), so the table keeps one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::table::{Correction, Table};

/// The kind of a block: the expansion class of a searchable cell in its part (`rectifier/e3`,
/// `extractor/e6`; `e1` for the first cells), `identity` for a skipped cell, `fixed` for every other block
/// (stems, TPS head, BiLSTM, prediction head). Coarse on purpose: finer kinds (part x kernel x expansion, 20
/// on the tiny attention space) over-fit 34 models (`scripts/latency_kind_models.py`).
pub fn kind_of(path: &str, key: &str) -> String {
    let part = path.split('.').next().unwrap_or(path);
    let searchable = path.contains(".cells.") || path.ends_with(".first");
    if !searchable {
        return "fixed".into();
    }
    let class = key.split("-input:").next().unwrap_or(key);
    match class.split_once('-') {
        Some((op, expansion)) if op.starts_with("mb") => format!("{part}/{expansion}"),
        _ => class.to_string(),
    }
}

/// The table's milliseconds per kind of a prediction's blocks.
pub fn sums(blocks: &[(String, String, f64)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (path, key, ms) in blocks {
        *out.entry(kind_of(path, key)).or_insert(0.0) += ms;
    }
    out
}

/// Fitted worth of one table millisecond per kind, and the offset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindFit {
    /// `a_k` per kind that varies over the points; other kinds use the common scale.
    pub scales: BTreeMap<String, f64>,
    /// Standard error of each fitted `a_k` (unshrunk fits with more points than parameters plus one).
    pub errors: BTreeMap<String, f64>,
    pub offset_ms: f64,
    /// Kinds that vary over the points but were not fitted, and why (too few points, collinear kinds).
    pub unfitted: Option<(Vec<String>, String)>,
}

/// A point of the fit: the table's ms per kind of one model, and its measured time.
pub type Point = (BTreeMap<String, f64>, f64);

/// Least squares of `y ~ sum_k a_k x_k + b` over `points`, every `a_k` shrunk towards `prior.scale` with
/// weight `ridge` times that kind's own spread (scale-free: `ridge` 0 is plain least squares, 1 pulls each
/// scale halfway for a single kind). Kinds whose sum varies by less than 0.5% of the mean time over the
/// points (fixed blocks, identities) keep `prior.scale`; with fewer points than free parameters plus two,
/// every kind keeps it and only the offset is fitted.
pub fn fit(points: &[Point], prior: &Correction, ridge: f64) -> KindFit {
    let n = points.len();
    if n == 0 {
        return KindFit { offset_ms: prior.offset_ms, ..Default::default() };
    }
    let mean = |f: &dyn Fn(&Point) -> f64| points.iter().map(f).sum::<f64>() / n as f64;
    let mut kinds: Vec<String> = points.iter().flat_map(|p| p.0.keys().cloned()).collect();
    kinds.sort();
    kinds.dedup();
    let x = |p: &Point, k: &str| p.0.get(k).copied().unwrap_or(0.0);
    let means: Vec<f64> = kinds.iter().map(|k| mean(&|p| x(p, k))).collect();
    let spread: Vec<f64> = kinds.iter().zip(&means).map(|(k, m)| points.iter().map(|p| (x(p, k) - m).powi(2)).sum::<f64>()).collect();
    let floor = 0.005 * mean(&|p| p.1).abs();
    let varying: Vec<usize> = (0..kinds.len()).filter(|&i| (spread[i] / n as f64).sqrt() > floor).collect();
    let names = |idx: &[usize]| idx.iter().map(|&i| kinds[i].clone()).collect::<Vec<_>>();
    // Centered normal equations in the free scales' deviations d_k = a_k - prior: the offset follows.
    let resid = |p: &Point| p.1 - prior.scale * kinds.iter().map(|k| x(p, k)).sum::<f64>();
    let my = mean(&|p| resid(p));
    if n < varying.len() + 2 {
        let why = format!("too few models ({n} for {} varying kinds)", varying.len());
        return KindFit { offset_ms: my, unfitted: Some((names(&varying), why)), ..Default::default() };
    }
    let free = varying;
    let dev = |p: &Point, i: usize| x(p, &kinds[i]) - means[i];
    let m = free.len();
    let mut gram = vec![vec![0.0; m]; m];
    let mut rhs = vec![0.0; m];
    for (r, &i) in free.iter().enumerate() {
        for (c, &j) in free.iter().enumerate() {
            gram[r][c] = points.iter().map(|p| dev(p, i) * dev(p, j)).sum();
        }
        gram[r][r] += ridge * spread[i];
        rhs[r] = points.iter().map(|p| dev(p, i) * (resid(p) - my)).sum();
    }
    let Some(d) = solve(&gram, &rhs) else {
        return KindFit { offset_ms: my, unfitted: Some((names(&free), "collinear kinds".into())), ..Default::default() };
    };
    let mut out = KindFit { offset_ms: my, ..Default::default() };
    for (r, &i) in free.iter().enumerate() {
        out.scales.insert(kinds[i].clone(), prior.scale + d[r]);
        out.offset_ms -= d[r] * means[i];
    }
    // Standard errors of the unshrunk fit: residual variance times the diagonal of the inverse Gram matrix.
    if n > m + 1 && ridge == 0.0 {
        let ssr: f64 = points.iter().map(|p| (resid(p) - my - free.iter().enumerate().map(|(r, &i)| d[r] * dev(p, i)).sum::<f64>()).powi(2)).sum();
        let sigma2 = ssr / (n - m - 1) as f64;
        for (r, &i) in free.iter().enumerate() {
            let unit: Vec<f64> = (0..m).map(|c| f64::from(u8::from(c == r))).collect();
            if let Some(col) = solve(&gram, &unit) {
                out.errors.insert(kinds[i].clone(), (sigma2 * col[r]).max(0.0).sqrt());
            }
        }
    }
    out
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let m = a.len();
    let mut a: Vec<Vec<f64>> = a.iter().zip(b).map(|(row, &v)| row.iter().copied().chain([v]).collect()).collect();
    let tol = 1e-12 * a.iter().enumerate().map(|(i, r)| r[i].abs()).fold(0.0, f64::max);
    for c in 0..m {
        let p = (c..m).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() <= tol.max(f64::MIN_POSITIVE) {
            return None;
        }
        a.swap(c, p);
        for r in 0..m {
            if r != c {
                let f = a[r][c] / a[c][c];
                for k in c..=m {
                    a[r][k] -= f * a[c][k];
                }
            }
        }
    }
    Some((0..m).map(|i| a[i][m] / a[i][i]).collect())
}

/// One kind's share of the predictions and what the check's models say it is worth.
#[derive(Debug, Clone, Serialize)]
pub struct KindError {
    pub kind: String,
    /// Blocks of this kind over all checked models, and their mean table ms per model.
    pub blocks: usize,
    pub mean_ms: f64,
    /// The table's correction scale for this kind.
    pub table_scale: f64,
    /// Fitted worth of one table ms of this kind in whole models, with its standard error; `None` where the
    /// kind's sum hardly varies over the checked models (it cannot be told from the offset) or `unfitted` says.
    pub fitted_scale: Option<f64>,
    pub fitted_error: Option<f64>,
    /// Why a kind that varies has no fitted scale.
    pub unfitted: Option<String>,
}

/// Per-kind errors and the one scale that fits the same models best: a kind is wrong in the table's
/// proportions only where its own scale differs from that common one.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub kinds: Vec<KindError>,
    /// One scale for every searchable block, fitted on the checked models (`None` when it cannot be).
    pub common_scale: Option<f64>,
}

/// Per-kind errors of `table` on checked models (their blocks and calibrated measurements), fitted without
/// shrinkage, and the common scale of the same models.
pub fn diagnose(table: &Table, rows: &[super::build::CheckRow]) -> Diagnosis {
    let points: Vec<Point> = rows.iter().map(|r| (sums(&r.blocks), r.measured_ms)).collect();
    let f = fit(&points, &table.correction, 0.0);
    let merged: Vec<Point> = points
        .iter()
        .map(|(k, y)| {
            let searchable: f64 = k.iter().filter(|(n, _)| n.as_str() != "fixed").map(|(_, v)| v).sum();
            ([("searchable".to_string(), searchable), ("fixed".to_string(), k.get("fixed").copied().unwrap_or(0.0))].into_iter().collect(), *y)
        })
        .collect();
    let common_scale = fit(&merged, &table.correction, 0.0).scales.get("searchable").copied();
    let mut out: BTreeMap<String, KindError> = BTreeMap::new();
    for r in rows {
        for (path, key, ms) in &r.blocks {
            let k = kind_of(path, key);
            let e = out.entry(k.clone()).or_insert(KindError { table_scale: table.scale_of(&k), kind: k, blocks: 0, mean_ms: 0.0, fitted_scale: None, fitted_error: None, unfitted: None });
            e.blocks += 1;
            e.mean_ms += ms / rows.len().max(1) as f64;
        }
    }
    for e in out.values_mut() {
        e.fitted_scale = f.scales.get(&e.kind).copied();
        e.fitted_error = f.errors.get(&e.kind).copied();
        e.unfitted = f.unfitted.as_ref().filter(|(kinds, _)| kinds.contains(&e.kind)).map(|(_, why)| why.clone());
    }
    Diagnosis { kinds: out.into_values().collect(), common_scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(e3: f64, e6: f64, fixed: f64, y: f64) -> Point {
        ([("x/e3".to_string(), e3), ("x/e6".to_string(), e6), ("fixed".to_string(), fixed)].into_iter().collect(), y)
    }

    #[test]
    fn fit_recovers_per_kind_scales_and_keeps_constant_kinds_at_the_prior() {
        // y = 1.0 e3 + 0.8 e6 + 1.2 x fixed(= 2) - 0.1: the fixed kind is constant, so it stays at the prior
        // (1.2) and its contribution lands in the offset.
        let truth = |e3: f64, e6: f64| 1.0 * e3 + 0.8 * e6 + 1.2 * 2.0 - 0.1;
        let pts: Vec<_> = [(1.0, 2.0), (2.0, 1.0), (3.0, 3.0), (0.5, 4.0), (2.5, 0.5)].iter().map(|&(a, b)| point(a, b, 2.0, truth(a, b))).collect();
        let prior = Correction { scale: 1.2, offset_ms: 0.0, models: 0 };
        let f = fit(&pts, &prior, 0.0);
        assert!((f.scales["x/e3"] - 1.0).abs() < 1e-9 && (f.scales["x/e6"] - 0.8).abs() < 1e-9, "{f:?}");
        assert!(!f.scales.contains_key("fixed") && (f.offset_ms - -0.1).abs() < 1e-9, "{f:?}");
        // An exact fit has no residual: zero standard errors.
        assert!(f.errors.values().all(|e| *e < 1e-6) && f.errors.len() == 2, "{f:?}");
        // Shrinkage pulls both towards the prior, never past it.
        let s = fit(&pts, &prior, 1.0);
        for (k, t) in [("x/e3", 1.0), ("x/e6", 0.8)] {
            assert!(s.scales[k] > t && s.scales[k] < 1.2, "{k}: {s:?}");
        }
        // Too few points for the free scales: the offset alone, and the reason.
        let f = fit(&pts[..3], &prior, 0.0);
        assert!(f.scales.is_empty(), "{f:?}");
        assert_eq!(f.unfitted, Some((vec!["x/e3".to_string(), "x/e6".to_string()], "too few models (3 for 2 varying kinds)".to_string())));
    }

    #[test]
    fn standard_error_of_a_single_kind_is_the_regression_slopes() {
        // One varying kind: simple regression of y on x. x = 1..4, y = 2, 3, 5, 5: slope 1.1 (Sxy 5.5 / Sxx 5),
        // intercept 1.0, residuals -0.1, -0.2, 0.7, -0.4 (SSR 0.70), s.e. = sqrt(0.70 / 2 / 5) = sqrt(0.07).
        let pts: Vec<Point> = [(1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (4.0, 5.0)].iter().map(|&(x, y)| ([("k".to_string(), x)].into_iter().collect(), y)).collect();
        let f = fit(&pts, &Correction { scale: 1.0, offset_ms: 0.0, models: 0 }, 0.0);
        assert!((f.scales["k"] - 1.1).abs() < 1e-12 && (f.offset_ms - 1.0).abs() < 1e-12, "{f:?}");
        assert!((f.errors["k"] - 0.07f64.sqrt()).abs() < 1e-12, "{f:?}");
        // Shrunk fits report no standard error.
        assert!(fit(&pts, &Correction { scale: 1.0, offset_ms: 0.0, models: 0 }, 1.0).errors.is_empty());
    }

    #[test]
    fn kinds_by_part_and_op_class() {
        assert_eq!(kind_of("extractor.cells.3", "mb5x5-e6-input:16x8x25-output:16x8x25-stride:1x1-idskip:1"), "extractor/e6");
        assert_eq!(kind_of("rectifier.first", "mb3x3-e1-input:8x32x100-output:8x32x100-stride:1x1-idskip:1"), "rectifier/e1");
        assert_eq!(kind_of("rectifier.cells.0", "identity-input:8x32x100-output:8x32x100-stride:1x1-idskip:0"), "identity");
        assert_eq!(kind_of("sequence.0", "BiLSTM 192->2x96 + linear ->96-input:T=25 x 192-output:T=25 x 96"), "fixed");
    }
}
