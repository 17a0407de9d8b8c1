//! Weights and checkpoints between a tch VarStore and [`WeightFile`] (safetensors, see [`crate::weights`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::spec::arch::Arch;
use crate::weights::{NamedTensor, WeightFile, TRAINING_PREFIX};

pub fn to_named(t: &Tensor) -> Result<NamedTensor> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let flat = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view(-1);
    let data = Vec::<f32>::try_from(&flat).context("copying a tensor to the host")?;
    Ok(NamedTensor::new(shape, data))
}

/// Every variable of `vs` (parameters and BN running statistics) plus `metadata`.
pub fn weight_file(vs: &VarStore, metadata: BTreeMap<String, String>) -> Result<WeightFile> {
    let mut wf = WeightFile { metadata, ..Default::default() };
    for (name, t) in vs.variables() {
        wf.tensors.insert(name.clone(), to_named(&t).with_context(|| format!("tensor {name}"))?);
    }
    Ok(wf)
}

pub use crate::weights::model_metadata;

/// Saves the model weights (`strnas-weights`) atomically.
pub fn save_weights(vs: &VarStore, arch: &Arch, path: &Path, extra: &[(&str, String)]) -> Result<()> {
    let mut meta = model_metadata(arch, "strnas-weights");
    for (k, v) in extra {
        meta.insert((*k).into(), v.clone());
    }
    let mut wf = weight_file(vs, meta)?;
    wf.tensors.retain(|name, _| !name.starts_with(TRAINING_PREFIX));
    wf.write(path).with_context(|| format!("saving {}", path.display()))
}

/// Copies the model tensors of `file` into `vs` after checking them against the spec; a mismatch lists the
/// offending tensors by name. Training-only variables of `vs` ([`TRAINING_PREFIX`]) are loaded when the file
/// has them and otherwise keep their values.
pub fn load_model(vs: &mut VarStore, arch: &Arch, file: &WeightFile, origin: &Path) -> Result<()> {
    file.check_against(arch).map_err(|m| anyhow::anyhow!("{}: {m}", origin.display()))?;
    let mut vars = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in vars.iter_mut() {
            let Some(saved) = file.tensors.get(name) else {
                if name.starts_with(TRAINING_PREFIX) {
                    continue;
                }
                anyhow::bail!("{}: tensor {name} is missing", origin.display());
            };
            let v = Tensor::from_slice(&saved.data).reshape(t.size()).to_device(t.device());
            t.f_copy_(&v).with_context(|| format!("{}: loading {name}", origin.display()))?;
        }
        Ok(())
    })
}

/// Reads `path` and loads it into `vs` (see [`load_model`]).
pub fn load_weights(vs: &mut VarStore, arch: &Arch, path: &Path) -> Result<WeightFile> {
    let wf = WeightFile::read(path)?;
    load_model(vs, arch, &wf, path)?;
    Ok(wf)
}
