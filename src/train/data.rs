//! Training and validation data of a run: sources mixed by batch ratio, and the batch loader.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::TrainConfig;
use crate::data::image::Preprocess;
use crate::data::loader::{open_all, BadImages, Dataset, Prefetcher, TrainStream};
use crate::spec::arch::Arch;

/// The datasets of a run. Each `--train-data` entry is one source (its datasets concatenated); sources are
/// mixed by `--batch-ratio`.
pub(crate) struct TrainData {
    /// Every training dataset, source by source.
    pub datasets: Arc<Vec<Dataset>>,
    /// Per source: `(index into datasets, size)` of its members, in order.
    pub sources: Vec<Vec<(usize, usize)>>,
    /// One share of each batch per source.
    pub ratios: Vec<f64>,
    /// Validation datasets (none: no validation).
    pub valid: Arc<Vec<Dataset>>,
}

impl TrainData {
    /// Opens the training sources and validation sets with `arch`'s charset and maximum label length.
    /// Fails when a validation set has no usable sample after label filtering.
    pub fn open(cfg: &TrainConfig, arch: &Arch) -> Result<Self> {
        let max_len = arch.batch_max_length as usize;
        let mut datasets: Vec<Dataset> = vec![];
        let mut sources: Vec<Vec<(usize, usize)>> = vec![];
        for root in &cfg.train_data {
            let mut members = vec![];
            for d in open_all(std::slice::from_ref(root), &arch.charset, max_len)? {
                members.push((datasets.len(), d.len()));
                datasets.push(d);
            }
            sources.push(members);
        }
        for (root, members) in cfg.train_data.iter().zip(&sources) {
            if members.iter().all(|&(_, n)| n == 0) {
                bail!("training data {}: no usable samples after label filtering (charset and batch_max_length of {})", root.display(), arch.name);
            }
        }
        let ratios = if cfg.batch_ratio.is_empty() { vec![1.0 / sources.len() as f64; sources.len()] } else { cfg.batch_ratio.clone() };
        let valid = Arc::new(open_all(&cfg.valid_data, &arch.charset, max_len)?);
        if valid.iter().any(|d| d.is_empty()) {
            let empty: Vec<String> = valid.iter().filter(|d| d.is_empty()).map(|d| d.path().display().to_string()).collect();
            bail!("validation data has no usable samples after label filtering: {}", empty.join(", "));
        }
        Ok(TrainData { datasets: Arc::new(datasets), sources, ratios, valid })
    }

    /// The batch stream: batch `i` is a function of `(seed, i)` only, so a resumed run sees the same batches.
    pub fn stream(&self, batch_size: usize, seed: u64) -> Result<TrainStream> {
        let sizes: Vec<usize> = self.sources.iter().map(|m| m.iter().map(|x| x.1).sum()).collect();
        TrainStream::new(sizes, &self.ratios, batch_size, seed)
    }

    /// `"n1+n2+..."`: the size of every training dataset (for the log).
    pub fn sizes_text(&self) -> String {
        self.datasets.iter().map(|d| d.len().to_string()).collect::<Vec<_>>().join("+")
    }

    /// One line per dataset whose labels were dropped by the filters (charset, batch_max_length), training
    /// and validation.
    pub fn filter_report(&self) -> Vec<String> {
        self.datasets
            .iter()
            .map(|d| ("training", d))
            .chain(self.valid.iter().map(|d| ("validation", d)))
            .filter(|(_, d)| d.filtered > 0)
            .map(|(what, d)| format!("{what} data {}: {} labels dropped by the filters (characters outside the charset or longer than batch_max_length), {} kept", d.path().display(), d.filtered, d.len()))
            .collect()
    }

    /// Number of validation samples.
    pub fn valid_samples(&self) -> usize {
        self.valid.iter().map(|d| d.len()).sum()
    }

    /// Loads batches `start..iters` of `stream` on `workers` background threads, in order.
    pub fn loader(&self, stream: TrainStream, start: u64, iters: u64, pre: Preprocess, workers: usize) -> Prefetcher {
        let sources = self.sources.clone();
        let datasets = self.datasets.clone();
        Prefetcher::spawn(datasets, pre, workers, BadImages::Substitute, move |j| {
            let i = start + j;
            (i < iters).then(|| stream.batch(i).into_iter().map(|(s, k)| locate(&sources[s], k)).collect())
        })
    }
}

/// Sample `k` of a source made of `members` (`(dataset, size)` in order) as `(dataset, index in it)`.
pub(crate) fn locate(members: &[(usize, usize)], mut k: usize) -> (usize, usize) {
    for &(d, n) in members {
        if k < n {
            return (d, k);
        }
        k -= n;
    }
    unreachable!("sample index within its source")
}

#[cfg(test)]
mod tests {
    use super::locate;

    #[test]
    fn locate_walks_the_members_of_a_source() {
        let members = [(2, 3), (5, 4)];
        assert_eq!(locate(&members, 0), (2, 0));
        assert_eq!(locate(&members, 2), (2, 2));
        assert_eq!(locate(&members, 3), (5, 0));
        assert_eq!(locate(&members, 6), (5, 3));
    }
}
