//! Rank correlation between two scorings of the same models: the one-shot literature's diagnostic of whether a
//! supernet's ranking (inherited accuracy) can be trusted against stand-alone (retrained) accuracy (Yu et al.
//! 2020, "Evaluating the Search Phase of Neural Architecture Search"; Zhang et al. 2020).
//!
//! Ties are handled as the standard statistics do: Kendall's tau-b (ties in either list shrink the
//! denominator) and Spearman's rho as the Pearson correlation of average ranks (scipy.stats.kendalltau and
//! scipy.stats.spearmanr give the same values).

use serde::Serialize;

/// Kendall's tau-b and Spearman's rho of paired scores, with the number of pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RankCorrelation {
    pub models: usize,
    pub kendall_tau: f64,
    pub spearman_rho: f64,
}

/// Both correlations of `(x[i], y[i])`. `None` with fewer than two pairs, or when either list is constant (no
/// ranking to compare).
pub fn correlation(x: &[f64], y: &[f64]) -> Option<RankCorrelation> {
    assert_eq!(x.len(), y.len(), "paired scores");
    Some(RankCorrelation { models: x.len(), kendall_tau: kendall_tau_b(x, y)?, spearman_rho: spearman(x, y)? })
}

/// Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)) over all pairs.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    let (mut s, mut tx, mut ty, mut n0) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            n0 += 1;
            let (dx, dy) = (sign(x[i] - x[j]), sign(y[i] - y[j]));
            tx += i64::from(dx == 0);
            ty += i64::from(dy == 0);
            s += dx * dy;
        }
    }
    let denom = (((n0 - tx) * (n0 - ty)) as f64).sqrt();
    (denom > 0.0).then(|| s as f64 / denom)
}

/// Spearman's rho: the Pearson correlation of the average ranks of `x` and `y`.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&average_ranks(x), &average_ranks(y))
}

fn sign(d: f64) -> i64 {
    if d > 0.0 {
        1
    } else if d < 0.0 {
        -1
    } else {
        0
    }
}

/// 1-based ranks, tied values sharing the mean of the ranks they span.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_example_without_ties() {
        // x ranks 1..5, y = [1, 3, 2, 5, 4]: pairs discordant are (2,3) and (4,5): C = 8, D = 2, tau = 6/10.
        // Spearman: d = [0, -1, 1, -1, 1], sum d^2 = 4, rho = 1 - 6*4 / (5*24) = 0.8.
        let c = correlation(&[10.0, 20.0, 30.0, 40.0, 50.0], &[1.0, 3.0, 2.0, 5.0, 4.0]).unwrap();
        assert!((c.kendall_tau - 0.6).abs() < 1e-12, "{c:?}");
        assert!((c.spearman_rho - 0.8).abs() < 1e-12, "{c:?}");
        assert_eq!(c.models, 5);
    }

    #[test]
    fn hand_computed_example_with_ties() {
        // x = [1, 2, 2, 3], y = [1, 3, 2, 4]. Pairs: (1,2) C, (1,3) C, (1,4) C, (2,3) tie in x, (2,4) C, (3,4) C:
        // S = 5, n0 = 6, ties_x = 1, ties_y = 0: tau_b = 5 / sqrt(5 * 6) = 0.912870929...
        // (scipy.stats.kendalltau([1,2,2,3],[1,3,2,4]) -> 0.9128709291752769.)
        let tau = kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((tau - 5.0 / 30f64.sqrt()).abs() < 1e-12, "{tau}");
        // Average ranks of x: [1, 2.5, 2.5, 4]; rho = pearson([1,2.5,2.5,4],[1,3,2,4]) = 4.5 / sqrt(4.5 * 5)
        // = 0.9486832980505138 (scipy.stats.spearmanr gives the same).
        assert_eq!(average_ranks(&[1.0, 2.0, 2.0, 3.0]), vec![1.0, 2.5, 2.5, 4.0]);
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((rho - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn reversed_and_constant_lists() {
        let c = correlation(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert_eq!((c.kendall_tau, c.spearman_rho), (-1.0, -1.0));
        assert!(correlation(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_none());
        assert!(correlation(&[1.0], &[2.0]).is_none());
    }
}
