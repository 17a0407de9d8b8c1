//! Recognition and scoring with the tch network: greedy decoding, per-dataset and pooled scores, and
//! time per image measured two ways (deep-text-recognition-benchmark's batched ms/image and batch 1), and the
//! device check shared with training.

use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::metrics::Score;
use super::result::Timing;
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::{eval_plans, BadImages, Batch, Dataset, Prefetcher};
use crate::nn::StrNet;

/// Checks that `device` can be used: CUDA must be available to libtorch and the index within its devices.
pub fn check_device(device: Device) -> Result<()> {
    if let Device::Cuda(i) = device {
        if !crate::nn::cuda_available() {
            let why = crate::nn::cuda_backend().err().map(|e| format!(": {e}")).unwrap_or_default();
            bail!("--device cuda: libtorch sees no CUDA device (is this the CPU build of torch, or no GPU?){why}");
        }
        if i as i64 >= tch::Cuda::device_count() {
            bail!("--device cuda:{i}: only {} CUDA devices", tch::Cuda::device_count());
        }
    }
    Ok(())
}

/// Images of a batch as a `[n, C, H, W]` tensor on `device`.
pub fn images_tensor(batch: &Batch, pre: &Preprocess, device: Device) -> Tensor {
    Tensor::from_slice(&batch.images)
        .reshape([batch.len() as i64, pre.channels as i64, pre.height as i64, pre.width as i64])
        .to_device(device)
}

/// Decodes per-step logits `[b, steps, C]`: text and the reference confidence per sample.
pub fn decode_logits(codec: &LabelCodec, logits: &Tensor) -> Result<Vec<(String, f32)>> {
    let probs = logits.softmax(2, Kind::Float);
    let (maxp, idx) = probs.max_dim(2, false);
    let steps = idx.size()[1] as usize;
    let idx = Vec::<i64>::try_from(idx.to_device(Device::Cpu).contiguous().view(-1))?;
    let maxp = Vec::<f32>::try_from(maxp.to_device(Device::Cpu).contiguous().view(-1))?;
    Ok(idx
        .chunks(steps)
        .zip(maxp.chunks(steps))
        .map(|(k, p)| {
            let (text, used) = codec.decode(k);
            (text, LabelCodec::confidence(p, used))
        })
        .collect())
}

/// Greedy recognition of a batch of images (eval mode, no gradients).
pub fn recognise(net: &StrNet, codec: &LabelCodec, images: &Tensor) -> Result<Vec<(String, f32)>> {
    let logits = tch::no_grad(|| net.forward_t(images, None, false));
    decode_logits(codec, &logits)
}

/// Scores every sample of `datasets`; one [`Score`] per dataset, in order. Images that cannot be read or
/// decoded are left out and recorded on their dataset ([`Dataset::bad_images`]). `on_batch` sees every batch with
/// its predictions (text, confidence), in order (progress, sample lines).
pub fn score(
    net: &StrNet,
    codec: &LabelCodec,
    pre: &Preprocess,
    datasets: Arc<Vec<Dataset>>,
    batch_size: usize,
    device: Device,
    workers: usize,
    mut on_batch: impl FnMut(&Batch, &[(String, f32)]),
) -> Result<Vec<Score>> {
    let mut scores = vec![Score::default(); datasets.len()];
    let plans = eval_plans(&datasets, batch_size);
    for batch in Prefetcher::over(datasets.clone(), *pre, workers, BadImages::Skip, plans) {
        let batch = batch?;
        let preds = recognise(net, codec, &images_tensor(&batch, pre, device))?;
        for ((pred, _), (gt, &src)) in preds.iter().zip(batch.labels.iter().zip(&batch.sources)) {
            scores[src].add(pred, gt);
        }
        on_batch(&batch, &preds);
    }
    Ok(scores)
}

pub use crate::measure::Stats as TimeStats;

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Times forward passes (eval mode, greedy decoding included) on copies of `sample` (`[1, C, H, W]`):
/// `warmup` unmeasured runs, then at least `min_runs` runs and `min_secs` seconds. A failing forward (for example
/// CUDA out of memory at the batched size) is an error naming the batch, never zero statistics.
pub fn time_forward(net: &StrNet, sample: &Tensor, batch_size: usize, warmup: usize, min_runs: usize, min_secs: f64) -> Result<Timing> {
    let device = sample.device();
    let budget = crate::measure::Budget { warmup, min_iters: min_runs, min_time_s: min_secs, max_iters: usize::MAX };
    let measure = |x: &Tensor| -> Result<Vec<f64>> {
        let what = format!("timing a forward pass at batch {}", x.size()[0]);
        crate::measure::measure(&budget, || {
            crate::nn::guarded(&what, || {
                tch::no_grad(|| {
                    let _ = net.forward_t(x, None, false);
                    sync(device);
                })
            })
        })
    };
    let batch1 = TimeStats::from_ms(&measure(sample)?);
    let big = sample.repeat([batch_size as i64, 1, 1, 1]);
    let batched = TimeStats::from_ms(&measure(&big)?);
    Ok(Timing {
        device: format!("{device:?}"),
        threads: tch::get_num_threads(),
        batch1,
        batched_ms_per_image: batched.median_ms / batch_size as f64,
        batch_size,
    })
}
