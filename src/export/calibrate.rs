//! Calibration for post-training INT8 export: the value ranges of the tensors a QDQ graph quantizes
//! ([`strnas_onnx::quantize::calibration_tensors`]), observed by running the float model, with those tensors
//! exposed as outputs, on calibration images under onnxruntime (libtorch-free).
//!
//! Methods: `minmax` (the observed extremes) and `percentile` (the extremes after cutting off the given share
//! of values on each side, from a 2048-bin histogram over the observed extremes: a second pass over the
//! images). Images are taken evenly spaced over the calibration datasets, so a dataset sorted by label
//! length or font still contributes all of its kinds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use strnas_onnx::quantize::Range;
use strnas_onnx::ModelProto;

use crate::data::image::Preprocess;
use crate::data::loader::Dataset;
use crate::runtime::{Device, HostTensor, Runtime};

/// How activation ranges are chosen from the calibration images.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Method {
    /// The smallest and largest value observed
    Minmax,
    /// The values at --calib-percentile and its complement (outliers clipped)
    Percentile,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Minmax => "minmax",
            Method::Percentile => "percentile",
        }
    }
}

/// What to calibrate on and how.
#[derive(Debug, Clone)]
pub struct CalibConfig {
    pub data: Vec<PathBuf>,
    /// Images used (at most the datasets' total).
    pub count: usize,
    pub method: Method,
    /// For [`Method::Percentile`]: the upper percentile kept, e.g. 99.99 (the lower one is 100 minus it).
    pub percentile: f64,
    /// Bits of the weight levels: 7 (reduce range, exact on every x86 CPU) or 8.
    pub weight_bits: u32,
    /// Store the LSTMs' weights as int8 too (weight-only: they still compute in float).
    pub lstm_int8: bool,
    pub ort_lib: Option<PathBuf>,
}

const BINS: usize = 2048;
const BATCH: usize = 16;

/// A tensor's range under `method` over all values fed to it: the min and max, and (second pass) a histogram
/// over them.
#[derive(Debug, Clone)]
pub struct Observer {
    pub min: f32,
    pub max: f32,
    hist: Vec<u64>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer { min: f32::INFINITY, max: f32::NEG_INFINITY, hist: vec![] }
    }
}

impl Observer {
    /// First pass: the extremes (non-finite values are an error naming the tensor, by the caller).
    pub fn observe_range(&mut self, v: &[f32]) {
        for &x in v {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }

    /// Second pass: counts per bin of [min, max] (values outside fall into the end bins).
    pub fn observe_histogram(&mut self, v: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
        }
        let width = (self.max - self.min).max(f32::MIN_POSITIVE);
        for &x in v {
            let b = (((x - self.min) / width) * BINS as f32) as isize;
            self.hist[b.clamp(0, BINS as isize - 1) as usize] += 1;
        }
    }

    /// The range under `method`: minmax's extremes, or the lower edge of the bin where the cumulative share
    /// first exceeds `100 - percentile` % and the upper edge of the bin where it reaches `percentile` %.
    pub fn range(&self, method: Method, percentile: f64) -> Range {
        if method == Method::Minmax || self.hist.is_empty() {
            return Range { min: self.min, max: self.max };
        }
        let total: u64 = self.hist.iter().sum();
        let width = (self.max - self.min) / BINS as f32;
        let cut = ((100.0 - percentile) / 100.0 * total as f64).floor() as u64;
        let (mut acc, mut lo) = (0u64, 0usize);
        while lo < BINS && acc + self.hist[lo] <= cut {
            acc += self.hist[lo];
            lo += 1;
        }
        let (mut acc, mut hi) = (0u64, BINS);
        while hi > 0 && acc + self.hist[hi - 1] <= cut {
            acc += self.hist[hi - 1];
            hi -= 1;
        }
        Range { min: self.min + lo.min(BINS - 1) as f32 * width, max: self.min + hi.max(1) as f32 * width }
    }
}

/// Indices of `count` samples evenly spaced over `total` (all of them when `count >= total`).
pub fn spaced(total: usize, count: usize) -> Vec<usize> {
    if count >= total {
        return (0..total).collect();
    }
    (0..count).map(|i| i * total / count).collect()
}

/// The calibration images of `cfg` for `model` (float, exported by strnas), preprocessed with `pre`, as
/// batches of the model's `image` input.
pub fn feeds(model: &ModelProto, pre: Preprocess, chw: [usize; 3], cfg: &CalibConfig) -> Result<Vec<Vec<HostTensor>>> {
    let datasets = open(&cfg.data, model)?;
    let index: Vec<(usize, usize)> = datasets.iter().enumerate().flat_map(|(d, ds)| (0..ds.len()).map(move |i| (d, i))).collect();
    let picked: Vec<(usize, usize)> = spaced(index.len(), cfg.count).into_iter().map(|i| index[i]).collect();
    if picked.is_empty() {
        bail!("--calib: no usable images in {}", cfg.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let mut feeds = vec![];
    for chunk in picked.chunks(BATCH) {
        let mut images = vec![0f32; chunk.len() * pre.len()];
        for (k, &(d, i)) in chunk.iter().enumerate() {
            datasets[d].load_into(i, &pre, &mut images[k * pre.len()..(k + 1) * pre.len()]).with_context(|| format!("--calib {} sample {i}", datasets[d].path().display()))?;
        }
        feeds.push(vec![HostTensor::f32("image", vec![chunk.len(), chw[0], chw[1], chw[2]], images)]);
    }
    Ok(feeds)
}

/// The ranges of `tensors` of `model` over `feeds` (each one run's inputs), run by onnxruntime on the CPU with
/// those tensors exposed as outputs: one pass for minmax, two for percentile.
pub fn observe(model: &ModelProto, tensors: &[String], feeds: &[Vec<HostTensor>], method: Method, percentile: f64, ort_lib: Option<&Path>) -> Result<BTreeMap<String, Range>> {
    let exposed = strnas_onnx::quantize::expose(model, tensors)?;
    let bytes = strnas_onnx::to_bytes(&exposed)?;
    let source = "the float model with its calibration tensors exposed";
    let mut engine = crate::runtime::open(Runtime::Ort, Device::Cpu, &crate::runtime::ModelRef { source, onnx: &bytes, network: None }, 1, ort_lib)?;
    let mut obs: Vec<Observer> = vec![Observer::default(); tensors.len()];
    let names: Vec<&str> = tensors.iter().map(String::as_str).collect();
    let passes = if method == Method::Minmax { 1 } else { 2 };
    for pass in 0..passes {
        for feed in feeds {
            engine.prepare(feed)?;
            for (o, t) in obs.iter_mut().zip(engine.run_and_fetch(&names)?) {
                let crate::runtime::Data::F32(v) = &t.data else { bail!("calibration tensor {} is not float32", t.name) };
                if v.iter().any(|x| !x.is_finite()) {
                    bail!("calibration tensor {} holds a non-finite value on the calibration images", t.name);
                }
                if pass == 0 {
                    o.observe_range(v);
                } else {
                    o.observe_histogram(v);
                }
            }
        }
    }
    Ok(tensors.iter().zip(&obs).map(|(t, o)| (t.clone(), o.range(method, percentile))).collect())
}

/// The calibration datasets, opened with the model's charset and label length (labels are not used, but a
/// dataset strnas cannot read is refused naming it).
fn open(paths: &[PathBuf], model: &ModelProto) -> Result<Arc<Vec<Dataset>>> {
    let meta = super::metadata::ModelMetadata::read(model, "the exported model")?;
    let ds = crate::data::loader::open_all(paths, &meta.charset, meta.batch_max_length as usize).context("--calib")?;
    Ok(Arc::new(ds))
}

/// `--calib` paths joined for the model's metadata.
pub fn describe(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.file_name().map(Path::new).unwrap_or(p).display().to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_and_percentile_of_a_constructed_input() {
        // 10 000 values 0, 1, ..., 9999 plus two outliers at -1e4 and 1e5.
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        v.push(-1e4);
        v.push(1e5);
        let mut o = Observer::default();
        o.observe_range(&v[..5000]);
        o.observe_range(&v[5000..]);
        assert_eq!(o.range(Method::Minmax, 99.99), Range { min: -1e4, max: 1e5 });
        o.observe_histogram(&v);
        // 99.99 % of 10 002 values: one value may be cut on each side, exactly the outliers. Bins are
        // w = 110 000 / 2048 wide from -1e4: 0 lies in bin floor(1e4 / w) = 186, 9999 in bin 372, so the kept range
        // is [-1e4 + 186 w, -1e4 + 373 w] = [-9.77, 10034.18].
        let r = o.range(Method::Percentile, 99.99);
        let w = 110_000f32 / 2048.0;
        assert!((r.min - (-1e4 + 186.0 * w)).abs() < 1e-2, "{r:?}");
        assert!((r.max - (-1e4 + 373.0 * w)).abs() < 1e-2, "{r:?}");
        // Without outliers to cut, the percentile range is the bins' span of the data.
        assert_eq!(o.range(Method::Percentile, 100.0), Range { min: -1e4, max: -1e4 + 2048.0 * w });
    }

    #[test]
    fn spaced_indices_cover_the_whole_set() {
        assert_eq!(spaced(10, 5), [0, 2, 4, 6, 8]);
        assert_eq!(spaced(3, 5), [0, 1, 2]);
        assert_eq!(spaced(7, 3), [0, 2, 4]);
    }
}
