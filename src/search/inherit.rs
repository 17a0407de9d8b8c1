//! Inherited accuracy: a fixed architecture of the space scored with the weights it inherits from a trained
//! supernet, after BatchNorm recalibration (SPOS's `retrain_bn`, Guo et al. 2020; OFA's
//! `reset_running_statistics`). A supernet's shared BatchNorm statistics were gathered over every sampled path
//! and belong to no single one; with the path fixed they are reset and re-estimated on a few hundred training
//! images, then the network is scored on validation data. This is the evolution search's fitness and the
//! supernet ranking that `strnas rank` correlates with stand-alone accuracy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::supernet::SuperNet;
use crate::data::image::Preprocess;
use crate::data::labels::LabelCodec;
use crate::data::loader::Dataset;
use crate::latency::Space;
use crate::nn::StrNet;
use crate::ops::torch::BN_MOMENTUM;
use crate::spec::arch::{Arch, Op};
use crate::weights::WeightFile;

/// The supernet's weights for the fixed network `ops` forms: `{edge}.ops.{i}.x` -> `{edge}.x`.
pub fn inherit(vs: &VarStore, space: &Space, ops: &[Op], arch: &Arch) -> Result<WeightFile> {
    let vars = vs.variables();
    let mut wf = WeightFile { metadata: crate::weights::model_metadata(arch, "strnas-weights"), ..Default::default() };
    for t in crate::ops::tensors(arch) {
        let src = match space.edges.iter().position(|e| t.name.starts_with(&format!("{}.", e.path))) {
            Some(e) => {
                let edge = &space.edges[e];
                let i = edge.candidates.iter().position(|c| *c == ops[e]).context("op among the edge's candidates")?;
                format!("{}.ops.{i}.{}", edge.path, &t.name[edge.path.len() + 1..])
            }
            None => t.name.clone(),
        };
        let v = vars.get(&src).with_context(|| format!("supernet variable {src} for {}", t.name))?;
        wf.tensors.insert(t.name, crate::nn::weights::to_named(v)?);
    }
    Ok(wf)
}

/// Resets every BatchNorm's running statistics in `vs` and re-estimates them as the plain mean, over
/// `batches`, of each batch's statistics (torch's `momentum=None`, as SPOS and OFA recalibrate): `forward`
/// must run the network in train mode. Only running statistics change; a BatchNorm that `forward` does not
/// reach keeps its statistics. Returns how many BatchNorms were recalibrated.
pub fn recalibrate_bn(vs: &VarStore, batches: &[Tensor], forward: impl Fn(&Tensor)) -> usize {
    let vars = vs.variables();
    let stats: Vec<(Tensor, Tensor)> = vars
        .iter()
        .filter_map(|(name, m)| {
            let prefix = name.strip_suffix(".running_mean")?;
            Some((m.shallow_clone(), vars.get(&format!("{prefix}.running_var"))?.shallow_clone()))
        })
        .collect();
    if batches.is_empty() || stats.is_empty() {
        return 0;
    }
    tch::no_grad(|| {
        let saved: Vec<(Tensor, Tensor)> = stats.iter().map(|(m, v)| (m.copy(), v.copy())).collect();
        let mut sums: Vec<(Tensor, Tensor)> = stats.iter().map(|(m, v)| (m.zeros_like(), v.zeros_like())).collect();
        let mut reached = vec![false; stats.len()];
        for b in batches {
            for (m, v) in &stats {
                let _ = m.shallow_clone().zero_();
                let _ = v.shallow_clone().zero_();
            }
            // From zero, one train-mode forward leaves running = m x (this batch's statistic).
            forward(b);
            for (((m, v), (sm, sv)), r) in stats.iter().zip(sums.iter_mut()).zip(reached.iter_mut()) {
                *r |= v.abs().sum(tch::Kind::Double).double_value(&[]) > 0.0;
                *sm += m / BN_MOMENTUM;
                *sv += v / BN_MOMENTUM;
            }
        }
        let n = batches.len() as f64;
        for ((((m, v), (sm, sv)), (om, ov)), r) in stats.iter().zip(&sums).zip(&saved).zip(&reached) {
            let (nm, nv) = if *r { (sm / n, sv / n) } else { (om.shallow_clone(), ov.shallow_clone()) };
            m.shallow_clone().copy_(&nm);
            v.shallow_clone().copy_(&nv);
        }
        reached.iter().filter(|r| **r).count()
    })
}

/// A fixed architecture's scores with inherited weights.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Inherited {
    /// Word accuracy in percent, pooled over the validation datasets.
    pub accuracy: f64,
    pub norm_ed: f64,
}

/// Scores fixed architectures of a space with weights inherited from a supernet.
pub struct Scorer {
    /// Training images for the recalibration, `[b, C, H, W]` per batch, on the device.
    pub recal: Vec<Tensor>,
    pub valid: Arc<Vec<Dataset>>,
    pub codec: LabelCodec,
    pub pre: Preprocess,
    pub batch_size: usize,
    pub device: Device,
}

impl Scorer {
    /// The network of `choice` (a candidate index per edge) with the supernet `vs`'s weights, BatchNorm
    /// recalibrated, scored on the validation data.
    pub fn score(&self, vs: &VarStore, space: &Space, choice: &[usize]) -> Result<Inherited> {
        let (_, _fvs, net) = self.network_of(vs, space, choice, &format!("{}-inherited", space.base.name))?;
        self.evaluate(&net)
    }

    /// The network of `choice` as the space builds it, named `name`, with the supernet's weights and BatchNorm
    /// recalibrated ([`Self::network`]): its spec, weights and module.
    pub fn network_of(&self, vs: &VarStore, space: &Space, choice: &[usize], name: &str) -> Result<(Arch, VarStore, StrNet)> {
        let arch = space.with_ops(&space.ops_at(choice), name)?;
        let (fvs, net) = self.network(vs, space, &arch)?;
        Ok((arch, fvs, net))
    }

    /// `arch` (a network of `space`) with the supernet `vs`'s weights, BatchNorm recalibrated: the weights a
    /// searched network starts from when it is fine-tuned (`strnas train --init-from`).
    pub fn network(&self, vs: &VarStore, space: &Space, arch: &Arch) -> Result<(VarStore, StrNet)> {
        let wf = inherit(vs, space, &space.ops_of(arch)?, arch)?;
        let mut fvs = VarStore::new(self.device);
        let net = StrNet::new(&fvs.root(), arch);
        crate::nn::weights::load_model(&mut fvs, arch, &wf, Path::new("supernet"))?;
        recalibrate_bn(&fvs, &self.recal, |x| {
            let _ = net.forward_t(x, None, true);
        });
        Ok((fvs, net))
    }

    /// `net`'s scores on the validation data.
    pub fn evaluate(&self, net: &StrNet) -> Result<Inherited> {
        let scores = crate::eval::tch_eval::score(net, &self.codec, &self.pre, self.valid.clone(), self.batch_size, self.device, 1, |_, _| {})?;
        let mut total = crate::eval::metrics::Score::default();
        scores.iter().for_each(|s| total.merge(s));
        Ok(Inherited { accuracy: total.accuracy(), norm_ed: total.norm_ed() })
    }
}

/// A supernet of `space` on `device` with the weights of a search checkpoint (`supernet.safetensors`).
/// Variables the checkpoint lacks are an error naming the file; extra tensors (architecture logits, optimizer
/// state, an auxiliary head) are ignored.
pub fn load_supernet(checkpoint: &Path, space: &Space, device: Device) -> Result<(VarStore, SuperNet)> {
    let wf = WeightFile::read(checkpoint)?;
    let vs = VarStore::new(device);
    let net = SuperNet::new(&vs.root(), space);
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &vars {
            let saved = wf.tensors.get(name).with_context(|| format!("{}: no tensor {name} (a checkpoint of a search over another space?)", checkpoint.display()))?;
            let shape: Vec<i64> = saved.shape.iter().map(|&d| d as i64).collect();
            if shape != t.size() {
                anyhow::bail!("{}: {name} has shape {shape:?}, the supernet's {:?}", checkpoint.display(), t.size());
            }
            t.shallow_clone().copy_(&Tensor::from_slice(&saved.data).reshape(t.size()).to_device(device));
        }
        Ok(())
    })?;
    Ok((vs, net))
}

/// The first `ceil(images / batch_size)` batches of a training stream of `data` (its own seed stream, so the
/// same images for every candidate and on resume), as image tensors on `device`: BatchNorm recalibration's
/// data.
pub(crate) fn recal_batches(data: &crate::train::data::TrainData, images: usize, batch_size: usize, seed: u64, pre: Preprocess, device: Device) -> Result<Vec<Tensor>> {
    let n = images.div_ceil(batch_size.max(1)) as u64;
    let stream = data.stream(batch_size, seed ^ 0xB1C4)?;
    data.loader(stream, 0, n, pre, 1).map(|b| b.map(|b| crate::eval::tch_eval::images_tensor(&b, &pre, device))).collect()
}
