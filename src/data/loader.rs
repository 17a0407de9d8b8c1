//! Datasets, batch streams and background loading (REFERENCE.md §3, "LMDB dataset format").
//!
//! A [`Dataset`] is one LMDB directory with the reference's label filter applied once at open (labels
//! lowercased unless case-sensitive, dropped when empty, longer than `batch_max_length` or holding characters
//! outside the charset). Training draws from several datasets mixed by batch ratio: every batch takes
//! `max(floor(batch_size * ratio), 1)` samples from each source, walking an endless sequence of per-epoch
//! shuffles. Batch `i` is a pure function of `(seed, i)` ([`TrainStream::batch`]), so `--resume` replays
//! exactly the batches an uninterrupted run would have seen. [`Prefetcher`] decodes batches on worker
//! threads, in order, while the caller trains.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};

use super::image::Preprocess;
use super::lmdb::LmdbReader;
use crate::rng::Rng;
use crate::spec::charset::Charset;

/// One LMDB dataset after label filtering.
pub struct Dataset {
    pub reader: LmdbReader,
    /// (1-based key index, normalised label) of every kept sample.
    pub samples: Vec<(u32, String)>,
    /// Samples dropped by the label filter.
    pub filtered: usize,
}

impl Dataset {
    pub fn open(dir: &Path, charset: &Charset, max_len: usize) -> Result<Self> {
        let reader = LmdbReader::open(dir)?;
        let labels = reader.labels()?;
        let mut samples = Vec::with_capacity(labels.len());
        for (i, l) in labels.iter().enumerate() {
            if let Some(l) = charset.normalize_label(l, max_len) {
                samples.push(((i + 1) as u32, l));
            }
        }
        let filtered = labels.len() - samples.len();
        Ok(Dataset { reader, samples, filtered })
    }

    pub fn path(&self) -> &Path {
        self.reader.path()
    }
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// A short name for tables: the directory's file name.
    pub fn name(&self) -> String {
        self.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| self.path().display().to_string())
    }

    /// Decodes and preprocesses sample `i` (index into `samples`) into `out`; errors name file and key.
    pub fn load_into(&self, i: usize, pre: &Preprocess, out: &mut [f32]) -> Result<()> {
        let key = self.samples[i].0 as usize;
        let bytes = self.reader.image(key)?;
        pre.encoded_into(&bytes, out)
            .with_context(|| format!("{}: key {}", self.path().display(), super::lmdb::image_key(key)))
    }
}

/// Opens every dataset under each root (a root may hold several, like the reference's `hierarchical_dataset`).
pub fn open_all(roots: &[PathBuf], charset: &Charset, max_len: usize) -> Result<Vec<Dataset>> {
    let mut out = vec![];
    for r in roots {
        for d in super::lmdb::find_datasets(r)? {
            out.push(Dataset::open(&d, charset, max_len)?);
        }
    }
    Ok(out)
}

/// A batch of preprocessed images (`[n, C, H, W]` row-major) with their normalised labels.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<String>,
    /// Index of the source dataset of each sample.
    pub sources: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Which samples make up a batch: (dataset, sample index) pairs.
pub type Plan = Vec<(usize, usize)>;

/// The training stream over several sources mixed by batch ratio.
#[derive(Debug, Clone)]
pub struct TrainStream {
    pub seed: u64,
    sizes: Vec<usize>,
    per_batch: Vec<usize>,
}

impl TrainStream {
    /// `ratios` has one entry per source (the reference's `--batch_ratio`).
    pub fn new(sizes: Vec<usize>, ratios: &[f64], batch_size: usize, seed: u64) -> Result<Self> {
        if sizes.len() != ratios.len() {
            bail!("--batch-ratio has {} values but there are {} training sources", ratios.len(), sizes.len());
        }
        if let Some(i) = sizes.iter().position(|&s| s == 0) {
            bail!("training source {} has no usable samples after label filtering", i + 1);
        }
        let per_batch = ratios.iter().map(|r| ((batch_size as f64 * r).floor() as usize).max(1)).collect();
        Ok(TrainStream { seed, sizes, per_batch })
    }

    pub fn batch_size(&self) -> usize {
        self.per_batch.iter().sum()
    }

    /// Samples of batch `i` (0-based): source `s` contributes positions `[i*k, (i+1)*k)` of its endless
    /// stream of per-epoch permutations.
    pub fn batch(&self, i: u64) -> Plan {
        let mut out = Vec::with_capacity(self.batch_size());
        for (s, (&n, &k)) in self.sizes.iter().zip(&self.per_batch).enumerate() {
            let mut epoch = u64::MAX;
            let mut perm: Vec<usize> = vec![];
            for p in i * k as u64..(i + 1) * k as u64 {
                let e = p / n as u64;
                if e != epoch {
                    epoch = e;
                    perm = (0..n).collect();
                    Rng::for_item(self.seed, s as u64, e).shuffle(&mut perm);
                }
                out.push((s, perm[(p % n as u64) as usize]));
            }
        }
        out
    }
}

/// Splits every sample of `datasets` into evaluation batches, in order.
pub fn eval_plans(datasets: &[Dataset], batch_size: usize) -> Vec<Plan> {
    let mut plans = vec![];
    for (d, ds) in datasets.iter().enumerate() {
        let idx: Vec<(usize, usize)> = (0..ds.len()).map(|i| (d, i)).collect();
        plans.extend(idx.chunks(batch_size.max(1)).map(|c| c.to_vec()));
    }
    plans
}

/// Loads a plan synchronously.
pub fn load_batch(datasets: &[Dataset], pre: &Preprocess, plan: &Plan) -> Result<Batch> {
    let per = pre.len();
    let mut images = vec![0f32; per * plan.len()];
    let mut labels = Vec::with_capacity(plan.len());
    let mut sources = Vec::with_capacity(plan.len());
    for (k, &(d, i)) in plan.iter().enumerate() {
        datasets[d].load_into(i, pre, &mut images[k * per..(k + 1) * per])?;
        labels.push(datasets[d].samples[i].1.clone());
        sources.push(d);
    }
    Ok(Batch { images, labels, sources })
}

/// Loads batches on background threads and hands them out in order. Batch `j` of the sequence is produced
/// by worker `j % workers`; each worker keeps at most two batches ready.
pub struct Prefetcher {
    receivers: Vec<Receiver<Result<Batch>>>,
    next: usize,
    total: Option<u64>,
    handles: Vec<JoinHandle<()>>,
}

impl Prefetcher {
    /// `plan(j)` gives the j-th batch of the sequence (`None` ends it).
    pub fn spawn<F>(datasets: Arc<Vec<Dataset>>, pre: Preprocess, workers: usize, plan: F) -> Self
    where
        F: Fn(u64) -> Option<Plan> + Send + Sync + 'static,
    {
        let plan = Arc::new(plan);
        let workers = workers.max(1);
        let mut receivers = vec![];
        let mut handles = vec![];
        for w in 0..workers {
            let (tx, rx) = sync_channel(2);
            let (datasets, plan) = (datasets.clone(), plan.clone());
            handles.push(std::thread::spawn(move || {
                let mut j = w as u64;
                while let Some(p) = plan(j) {
                    if tx.send(load_batch(&datasets, &pre, &p)).is_err() {
                        return;
                    }
                    j += workers as u64;
                }
            }));
            receivers.push(rx);
        }
        Prefetcher { receivers, next: 0, total: None, handles }
    }

    /// A prefetcher over a fixed list of plans.
    pub fn over(datasets: Arc<Vec<Dataset>>, pre: Preprocess, workers: usize, plans: Vec<Plan>) -> Self {
        let n = plans.len() as u64;
        let plans = Arc::new(plans);
        let mut p = Self::spawn(datasets, pre, workers, move |j| plans.get(j as usize).cloned());
        p.total = Some(n);
        p
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.total.is_some_and(|t| self.next as u64 >= t) {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        self.receivers[w].recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channels stops the workers at their next send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_mixes_by_ratio_and_is_a_function_of_the_index() {
        let s = TrainStream::new(vec![10, 7], &[0.5, 0.5], 6, 1).unwrap();
        assert_eq!(s.batch_size(), 6);
        let b = s.batch(3);
        assert_eq!(b.iter().filter(|(d, _)| *d == 0).count(), 3);
        assert_eq!(b, s.batch(3));
        // Each epoch of a source visits every sample once.
        let mut seen: Vec<usize> = (0..10).flat_map(|i| s.batch(i)).filter(|(d, _)| *d == 1).map(|(_, i)| i).take(7).collect();
        seen.sort();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert!(TrainStream::new(vec![10], &[0.5, 0.5], 6, 1).is_err());
    }
}
