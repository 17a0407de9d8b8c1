//! Recognition metrics of the STR benchmark protocol (Baek et al. 2019, deep-text-recognition-benchmark): word
//! accuracy (exact match) and norm_ED = 1 - ED / max(len(gt), len(pred)), averaged over samples (0 when either is
//! empty, as the reference).

use serde::Serialize;

/// Levenshtein distance over Unicode scalar values.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// One sample's norm_ED contribution.
pub fn norm_ed(pred: &str, gt: &str) -> f64 {
    let (lp, lg) = (pred.chars().count(), gt.chars().count());
    if lp == 0 || lg == 0 {
        return 0.0;
    }
    1.0 - edit_distance(pred, gt) as f64 / lp.max(lg) as f64
}

/// Running totals; merge them to pool datasets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Score {
    pub samples: u64,
    pub correct: u64,
    pub norm_ed_sum: f64,
}

impl Score {
    pub fn add(&mut self, pred: &str, gt: &str) {
        self.samples += 1;
        self.correct += u64::from(pred == gt);
        self.norm_ed_sum += norm_ed(pred, gt);
    }
    pub fn merge(&mut self, o: &Score) {
        self.samples += o.samples;
        self.correct += o.correct;
        self.norm_ed_sum += o.norm_ed_sum;
    }
    /// Word accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        if self.samples == 0 { 0.0 } else { 100.0 * self.correct as f64 / self.samples as f64 }
    }
    /// Mean norm_ED in [0, 1].
    pub fn norm_ed(&self) -> f64 {
        if self.samples == 0 { 0.0 } else { self.norm_ed_sum / self.samples as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert!((norm_ed("hallo", "hello") - 0.8).abs() < 1e-12);
        assert_eq!(norm_ed("", "x"), 0.0);
    }

    #[test]
    fn pooled_score() {
        let mut a = Score::default();
        a.add("cat", "cat");
        a.add("cot", "cat");
        let mut b = Score::default();
        b.add("dog", "dog");
        a.merge(&b);
        assert_eq!(a.samples, 3);
        assert!((a.accuracy() - 200.0 / 3.0).abs() < 1e-9);
        assert!((a.norm_ed() - (1.0 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
    }
}
