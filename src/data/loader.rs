//! Datasets, batch streams and background loading (the LMDB format of deep-text-recognition-benchmark's
//! `create_lmdb_dataset.py`).
//!
//! A [`Dataset`] is one LMDB directory, or one image folder with `gt.txt` ([`super::folder`]), with the
//! reference's label filter applied once at open (labels lowercased unless case-sensitive, dropped when
//! empty, longer than `batch_max_length` or holding characters outside the charset). An image that does not
//! decode is handled by the caller's [`BadImages`] policy: training substitutes the dataset's next sample (as
//! DTRB substitutes a dummy), evaluation leaves it out; either way it is counted on the dataset
//! ([`Dataset::bad_images`]) and reported, and never ends the run. Training draws from several datasets mixed by batch ratio: every batch takes
//! `max(floor(batch_size * ratio), 1)` samples from each source, walking an endless sequence of per-epoch
//! shuffles. Batch `i` is a pure function of `(seed, i)` ([`TrainStream::batch`]), so `--resume` replays
//! exactly the batches an uninterrupted run would have seen. [`Prefetcher`] decodes batches on worker
//! threads, in order, while the caller trains.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};

use super::folder::FolderReader;
use super::image::Preprocess;
use super::lmdb::LmdbReader;
use crate::rng::Rng;
use crate::spec::charset::Charset;

/// Where a dataset's samples are stored.
pub enum Reader {
    Lmdb(LmdbReader),
    Folder(FolderReader),
}

impl Reader {
    /// Opens `dir`: an LMDB dataset when it holds `data.mdb`, else an image folder when it holds `gt.txt`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("data.mdb").is_file() && dir.join(super::folder::GT_FILE).is_file() {
            return Ok(Reader::Folder(FolderReader::open(dir)?));
        }
        Ok(Reader::Lmdb(LmdbReader::open(dir)?))
    }

    pub fn path(&self) -> &Path {
        match self {
            Reader::Lmdb(r) => r.path(),
            Reader::Folder(r) => r.path(),
        }
    }

    /// Every stored label, in sample order (sample `i` is index `i + 1`).
    pub fn labels(&self) -> Result<Vec<String>> {
        match self {
            Reader::Lmdb(r) => r.labels(),
            Reader::Folder(r) => Ok(r.labels()),
        }
    }

    /// Encoded bytes of sample `index` (1-based).
    pub fn image(&self, index: usize) -> Result<Vec<u8>> {
        match self {
            Reader::Lmdb(r) => r.image(index),
            Reader::Folder(r) => r.image(index),
        }
    }

    /// Names sample `index` in messages: the dataset and the LMDB key, or the image file.
    pub fn describe(&self, index: usize) -> String {
        match self {
            Reader::Lmdb(r) => format!("{}: key {}", r.path().display(), super::lmdb::image_key(index)),
            Reader::Folder(r) => r.file(index).display().to_string(),
        }
    }
}

/// What loading does with a sample whose image cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadImages {
    /// The batch fails with an error naming the sample (inspection commands).
    Fail,
    /// The dataset's next readable sample takes its place (training: batches keep their size and stay a
    /// function of their index).
    Substitute,
    /// The sample is left out of the batch (evaluation).
    Skip,
}

/// One dataset after label filtering.
pub struct Dataset {
    pub reader: Reader,
    /// (1-based key index, normalised label) of every kept sample.
    pub samples: Vec<(u32, String)>,
    /// Samples dropped by the label filter.
    pub filtered: usize,
    /// Samples whose image could not be read or decoded so far, by sample index: the error.
    bad: Mutex<BTreeMap<usize, String>>,
}

impl Dataset {
    pub fn open(dir: &Path, charset: &Charset, max_len: usize) -> Result<Self> {
        let reader = Reader::open(dir)?;
        let labels = reader.labels()?;
        let mut samples = Vec::with_capacity(labels.len());
        for (i, l) in labels.iter().enumerate() {
            if let Some(l) = charset.normalize_label(l, max_len) {
                samples.push(((i + 1) as u32, l));
            }
        }
        let filtered = labels.len() - samples.len();
        Ok(Dataset { reader, samples, filtered, bad: Mutex::new(BTreeMap::new()) })
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
        let bytes = self.reader.image(key).with_context(|| self.reader.describe(key))?;
        pre.encoded_into(&bytes, out).with_context(|| self.reader.describe(key))
    }

    /// The samples met so far whose image could not be read or decoded (substituted or skipped), with the
    /// error of each, in sample order.
    pub fn bad_images(&self) -> Vec<(usize, String)> {
        self.bad.lock().map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect()).unwrap_or_default()
    }

    fn record_bad(&self, i: usize, e: &anyhow::Error) {
        if let Ok(mut m) = self.bad.lock() {
            m.entry(i).or_insert_with(|| format!("{e:#}"));
        }
    }
}

/// One line per dataset with unreadable images: how many, and the first one's error.
pub fn bad_image_report(datasets: &[Dataset], what: &str) -> Vec<String> {
    datasets
        .iter()
        .filter_map(|d| {
            let bad = d.bad_images();
            let (_, first) = bad.first()?;
            Some(format!("{}: {} image(s) could not be read or decoded and were {what} (first: {first})", d.path().display(), bad.len()))
        })
        .collect()
}

/// The datasets under `root`: every folder holding `data.mdb` (LMDB), or `gt.txt` without `data.mdb` (an
/// image folder, not searched further), `root` included.
pub fn find_all(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.exists() {
        bail!("dataset {}: no such file or directory", root.display());
    }
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let lmdb = dir.join("data.mdb").is_file();
        if lmdb || dir.join(super::folder::GT_FILE).is_file() {
            out.push(dir.clone());
            if !lmdb {
                continue;
            }
        }
        if dir.is_dir() {
            for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("{}: no dataset here (expected an LMDB data.mdb, or an image folder with gt.txt, in it or in a subfolder)", root.display());
    }
    Ok(out)
}

/// Opens every dataset under each root (a root may hold several, like the reference's `hierarchical_dataset`).
pub fn open_all(roots: &[PathBuf], charset: &Charset, max_len: usize) -> Result<Vec<Dataset>> {
    let mut out = vec![];
    for r in roots {
        for d in find_all(r)? {
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
    /// stream of per-epoch permutations. O(batch) time and memory whatever the dataset sizes: each position
    /// is mapped through [`crate::rng::permuted_index`] rather than shuffling the whole epoch.
    pub fn batch(&self, i: u64) -> Plan {
        let mut out = Vec::with_capacity(self.batch_size());
        for (s, (&n, &k)) in self.sizes.iter().zip(&self.per_batch).enumerate() {
            let n = n as u64;
            for p in i * k as u64..(i + 1) * k as u64 {
                let key = Rng::for_item(self.seed, s as u64, p / n).next_u64();
                out.push((s, crate::rng::permuted_index(p % n, n, key) as usize));
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

/// Loads a plan synchronously; an unreadable image is an error naming it.
pub fn load_batch(datasets: &[Dataset], pre: &Preprocess, plan: &Plan) -> Result<Batch> {
    load_batch_with(datasets, pre, plan, BadImages::Fail)
}

/// Loads a plan, treating unreadable images as `bad` says. With [`BadImages::Substitute`], a dataset none of
/// whose images can be read is an error.
pub fn load_batch_with(datasets: &[Dataset], pre: &Preprocess, plan: &Plan, bad: BadImages) -> Result<Batch> {
    let per = pre.len();
    let mut images = vec![0f32; per * plan.len()];
    let mut labels = Vec::with_capacity(plan.len());
    let mut sources = Vec::with_capacity(plan.len());
    for &(d, i) in plan {
        let ds = &datasets[d];
        let k = labels.len();
        let out = &mut images[k * per..(k + 1) * per];
        let mut chosen = None;
        for attempt in 0..ds.len().max(1) {
            let j = (i + attempt) % ds.len().max(1);
            match ds.load_into(j, pre, out) {
                Ok(()) => {
                    chosen = Some(j);
                    break;
                }
                Err(e) => {
                    if bad == BadImages::Fail {
                        return Err(e);
                    }
                    ds.record_bad(j, &e);
                    if bad == BadImages::Skip {
                        break;
                    }
                }
            }
        }
        match chosen {
            Some(j) => {
                labels.push(ds.samples[j].1.clone());
                sources.push(d);
            }
            None if bad == BadImages::Skip => {}
            None => bail!("{}: no image of this dataset could be read or decoded", ds.path().display()),
        }
    }
    images.truncate(per * labels.len());
    Ok(Batch { images, labels, sources })
}

/// Loads batches on background threads and hands them out in order. Batch `j` of the sequence is produced
/// by worker `j % workers`; each worker keeps at most two batches ready.
pub struct Prefetcher {
    receivers: Vec<Receiver<Result<Batch>>>,
    next: usize,
    total: Option<u64>,
    /// Worker threads (taken when joined).
    handles: Vec<Option<JoinHandle<()>>>,
}

impl Prefetcher {
    /// `plan(j)` gives the j-th batch of the sequence (`None` ends it); unreadable images are handled as
    /// `bad` says.
    pub fn spawn<F>(datasets: Arc<Vec<Dataset>>, pre: Preprocess, workers: usize, bad: BadImages, plan: F) -> Self
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
                    if tx.send(load_batch_with(&datasets, &pre, &p, bad)).is_err() {
                        return;
                    }
                    j += workers as u64;
                }
            }));
            receivers.push(rx);
        }
        Prefetcher { receivers, next: 0, total: None, handles: handles.into_iter().map(Some).collect() }
    }

    /// A prefetcher over a fixed list of plans.
    pub fn over(datasets: Arc<Vec<Dataset>>, pre: Preprocess, workers: usize, bad: BadImages, plans: Vec<Plan>) -> Self {
        let n = plans.len() as u64;
        let plans = Arc::new(plans);
        let mut p = Self::spawn(datasets, pre, workers, bad, move |j| plans.get(j as usize).cloned());
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
        match self.receivers[w].recv() {
            Ok(b) => Some(b),
            // The worker hung up: the sequence ended, or the thread died. A dead loader is an error, never a
            // silently short run.
            Err(_) => match self.handles[w].take().map(|h| h.join()) {
                Some(Err(p)) => {
                    let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    Some(Err(anyhow!("data loader thread {w} failed: {msg}")))
                }
                _ if self.total.is_some() => Some(Err(anyhow!("data loader thread {w} ended before its last batch"))),
                _ => None,
            },
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channels stops the workers at their next send.
        self.receivers.clear();
        for h in self.handles.drain(..).flatten() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_loader_thread_is_an_error_not_an_early_end() {
        let pre = Preprocess { height: 4, width: 4, channels: 1, keep_ratio_pad: false };
        let mut p = Prefetcher::spawn(Arc::new(vec![]), pre, 1, BadImages::Fail, |j| {
            if j == 2 {
                panic!("plan {j} exploded");
            }
            (j < 5).then(Vec::new)
        });
        assert!(p.next().unwrap().is_ok() && p.next().unwrap().is_ok());
        let e = format!("{:#}", p.next().expect("an error, not the end").unwrap_err());
        assert!(e.contains("data loader thread 0 failed") && e.contains("plan 2 exploded"), "{e}");
        // A sequence that ends normally ends.
        let p = Prefetcher::spawn(Arc::new(vec![]), pre, 2, BadImages::Fail, |j| (j < 3).then(Vec::new));
        assert_eq!(p.map(|b| b.unwrap().len()).collect::<Vec<_>>(), vec![0, 0, 0]);
    }

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
