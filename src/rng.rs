//! A small deterministic PRNG (SplitMix64) so data streams and rendered images depend only on a seed and
//! an index: resumed training sees the same batches, and `dataset synth --seed S` the same images on every
//! machine and thread count.

#[derive(Debug, Clone)]
pub struct Rng(u64);

/// Position `i` of a pseudo-random permutation of `0..n` chosen by `key`, in O(1) time and memory: a
/// 4-round Feistel network over the smallest even number of bits covering `n`, walked until it lands inside
/// `0..n` (cycle walking; under 4 steps on average, since the domain is less than 4n). A data stream draws
/// each epoch's order through this instead of shuffling all n indices, so planning a batch costs O(batch)
/// even for the paper's 14.4M images.
pub fn permuted_index(i: u64, n: u64, key: u64) -> u64 {
    assert!(i < n, "index {i} outside 0..{n}");
    if n <= 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let half = bits.div_ceil(2).max(1);
    let mask = (1u64 << half) - 1;
    let round = |r: u64, x: u64| Rng::for_item(key, 0xFE15 + r, x).next_u64() & mask;
    let mut x = i;
    loop {
        let (mut l, mut rgt) = (x >> half, x & mask);
        for r in 0..4 {
            (l, rgt) = (rgt, l ^ round(r, rgt));
        }
        x = (l << half) | rgt;
        if x < n {
            return x;
        }
    }
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// An independent stream for `(seed, stream, index)`.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(stream.wrapping_add(1)));
        r.0 ^= r.next_u64().wrapping_add(index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform integer in [lo, hi] (inclusive).
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as usize) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.f64().max(1e-300);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::permuted_index;

    #[test]
    fn permuted_index_is_a_permutation_that_depends_on_the_key() {
        for n in [1u64, 2, 3, 5, 64, 100, 1000, 4097] {
            let mut seen: Vec<u64> = (0..n).map(|i| permuted_index(i, n, 9)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
        let a: Vec<u64> = (0..100).map(|i| permuted_index(i, 100, 1)).collect();
        let b: Vec<u64> = (0..100).map(|i| permuted_index(i, 100, 2)).collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        // The paper's 14.4M images: any position is found without materialising the order.
        assert!(permuted_index(14_399_999, 14_400_000, 3) < 14_400_000);
    }
}
