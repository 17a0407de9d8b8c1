//! The run directory: opening it fresh or resuming its checkpoint, and writing checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use super::optim::{OptimKind, Optimizer};
use super::{check_device, checkpoint, TrainConfig, CHECKPOINT, MODEL_SPEC};
use crate::spec::arch::Arch;
use crate::weights::WeightFile;

/// Training state carried in checkpoint metadata (key `state`, JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct RunState {
    pub iteration: u64,
    pub seed: u64,
    pub optimizer: Option<OptimKind>,
    pub optimizer_steps: i64,
    pub best_accuracy: Option<f64>,
    /// norm_ED of the best-accuracy weights (breaks accuracy ties, e.g. 0% early on).
    #[serde(default)]
    pub best_accuracy_norm_ed: Option<f64>,
    pub best_norm_ed: Option<f64>,
}

/// A run directory opened for training, with the spec it trains.
pub(super) struct RunDir {
    /// The spec file's text, stored in every checkpoint.
    pub spec_text: String,
    pub arch: Arch,
    /// `<out>/checkpoint.safetensors`.
    pub checkpoint: PathBuf,
    /// With `--resume`: the checkpoint and the state it holds.
    pub resumed: Option<(WeightFile, RunState)>,
}

impl RunDir {
    /// Checks the device, loads the spec and opens `cfg.out`: with `cfg.resume`, reads its checkpoint (which
    /// must come from the same spec, by `spec_hash`); otherwise refuses a directory that already holds a run.
    /// Then creates the directory and writes `model.yaml` (the spec as given).
    pub fn open(cfg: &TrainConfig) -> Result<Self> {
        check_device(cfg.device)?;
        let spec_text = std::fs::read_to_string(&cfg.spec).with_context(|| format!("reading spec {}", cfg.spec.display()))?;
        let arch = crate::spec::load(&cfg.spec).map_err(|e| anyhow!("{e}"))?;
        let hash = crate::spec::arch_hash(&arch.spec);
        let checkpoint = cfg.out.join(CHECKPOINT);
        // Resume or start fresh, never silently overwrite a run.
        let resumed = if cfg.resume {
            Some(read_checkpoint(&checkpoint, cfg, &hash)?)
        } else {
            if checkpoint.exists() {
                bail!("{} already holds a run; pass --resume to continue it, or choose another --out", cfg.out.display());
            }
            None
        };
        std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
        crate::io::write_atomic(&cfg.out.join(MODEL_SPEC), spec_text.as_bytes())?;
        Ok(RunDir { spec_text, arch, checkpoint, resumed })
    }

    /// The state the run continues from: the checkpoint's when resuming, else iteration 0 with `cfg.seed`.
    pub fn state(&self, cfg: &TrainConfig) -> RunState {
        match &self.resumed {
            Some((_, s)) => s.clone(),
            None => RunState { seed: cfg.seed, ..Default::default() },
        }
    }
}

/// Reads the checkpoint at `path` for `--resume`; it must have been trained from a spec with `spec_hash`.
fn read_checkpoint(path: &Path, cfg: &TrainConfig, spec_hash: &str) -> Result<(WeightFile, RunState)> {
    let wf = WeightFile::read(path).with_context(|| format!("--resume: no usable checkpoint in {}", cfg.out.display()))?;
    if wf.metadata.get("spec_hash").map(String::as_str) != Some(spec_hash) {
        bail!(
            "{}: the checkpoint was trained from a different spec than {} (spec_hash {} vs {spec_hash})",
            path.display(),
            cfg.spec.display(),
            wf.metadata.get("spec_hash").map(String::as_str).unwrap_or("missing")
        );
    }
    let state: RunState = serde_json::from_str(wf.metadata.get("state").map(String::as_str).unwrap_or(""))
        .with_context(|| format!("{}: metadata key state is missing or invalid", path.display()))?;
    Ok((wf, state))
}

/// Writes a checkpoint atomically: the weights, the optimizer's state tensors, and metadata holding the
/// model metadata, the spec text (`spec`) and `state` as JSON.
pub(super) fn save_checkpoint(vs: &VarStore, opt: &Optimizer, arch: &Arch, spec_text: &str, st: &RunState, path: &Path) -> Result<()> {
    let mut meta: BTreeMap<String, String> = checkpoint::model_metadata(arch, "strnas-checkpoint");
    meta.insert("spec".into(), spec_text.into());
    meta.insert("state".into(), serde_json::to_string(st)?);
    let mut wf = checkpoint::weight_file(vs, meta)?;
    for (name, t) in opt.state_tensors() {
        wf.tensors.insert(name, checkpoint::to_named(&t)?);
    }
    wf.write(path).with_context(|| format!("saving checkpoint {}", path.display()))
}
