//! The run directory: opening it fresh or resuming its checkpoint, and writing checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use super::optim::{Group, OptimKind, Optimizer, Schedule};
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
    /// The settings the run was started with (absent in checkpoints written before they were recorded).
    #[serde(default)]
    pub settings: Option<Settings>,
}

/// The settings a resumed run must keep (or change only with `--allow-changes`): changing them mid-run makes
/// the resumed run differ from the uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Settings {
    pub batch_size: usize,
    pub batch_ratio: Vec<f64>,
    pub train_data: Vec<String>,
    pub optimizer: OptimKind,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub groups: Vec<Group>,
    pub grad_clip: f64,
    #[serde(default)]
    pub aux_ctc: f64,
}

impl Settings {
    pub fn of(cfg: &TrainConfig) -> Self {
        Settings {
            batch_size: cfg.batch_size,
            batch_ratio: cfg.batch_ratio.clone(),
            train_data: cfg.train_data.iter().map(|p| p.display().to_string()).collect(),
            optimizer: cfg.optimizer,
            schedule: cfg.schedule,
            groups: cfg.groups.clone(),
            grad_clip: cfg.grad_clip,
            aux_ctc: cfg.aux_ctc,
        }
    }

    /// `field: checkpoint X, now Y` for every setting that differs.
    pub fn differences(&self, now: &Settings) -> Vec<String> {
        let mut out = vec![];
        let mut cmp = |field: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{field}: checkpoint {a}, now {b}"));
            }
        };
        cmp("--batch-size", self.batch_size.to_string(), now.batch_size.to_string());
        cmp("--batch-ratio", format!("{:?}", self.batch_ratio), format!("{:?}", now.batch_ratio));
        cmp("--train-data", self.train_data.join(","), now.train_data.join(","));
        let opt = |o: &OptimKind| serde_json::to_string(o).unwrap_or_default();
        cmp("--optimizer/--lr/--weight-decay", opt(&self.optimizer), opt(&now.optimizer));
        cmp("--lr-schedule/--warmup", self.schedule.describe(), now.schedule.describe());
        cmp("--lr-group", format!("{:?}", self.groups), format!("{:?}", now.groups));
        cmp("--grad-clip", self.grad_clip.to_string(), now.grad_clip.to_string());
        cmp("--aux-ctc", self.aux_ctc.to_string(), now.aux_ctc.to_string());
        out
    }
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
    /// With `--resume --allow-changes`: the settings that changed (for the log).
    pub changes: Vec<String>,
    /// With `--init-from` on a new run: the weights to start from, checked against the spec.
    pub init: Option<WeightFile>,
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
        let mut changes = vec![];
        let resumed = if cfg.resume {
            let (wf, state) = read_checkpoint(&checkpoint, cfg, &hash)?;
            if let Some(saved) = &state.settings {
                changes = saved.differences(&Settings::of(cfg));
                if !changes.is_empty() && !cfg.allow_changes {
                    bail!(
                        "--resume: {} was started with other settings; repeat its command, or pass --allow-changes to continue with the new ones (recorded in log.txt):\n  {}",
                        cfg.out.display(),
                        changes.join("\n  ")
                    );
                }
            }
            Some((wf, state))
        } else {
            if checkpoint.exists() {
                bail!("{} already holds a run; pass --resume to continue it, or choose another --out", cfg.out.display());
            }
            None
        };
        // Checked before the run directory is written: a wrong file leaves nothing behind.
        let init = match (&cfg.init_from, cfg.resume) {
            (Some(w), false) => {
                let wf = WeightFile::read(w).with_context(|| format!("--init-from {}", w.display()))?;
                wf.check_against(&arch).map_err(|m| anyhow!("--init-from {}: {m}", w.display()))?;
                Some(wf)
            }
            _ => None,
        };
        std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
        crate::io::write_atomic(&cfg.out.join(MODEL_SPEC), spec_text.as_bytes())?;
        Ok(RunDir { spec_text, arch, checkpoint, resumed, changes, init })
    }

    /// The state the run continues from: the checkpoint's when resuming (with the settings now in force,
    /// which differ only under `--allow-changes`), else iteration 0 with `cfg.seed`.
    pub fn state(&self, cfg: &TrainConfig) -> RunState {
        match &self.resumed {
            // A checkpoint that recorded its settings continues with the (checked) settings given now; an older
            // one keeps its optimizer.
            Some((_, s)) if s.settings.is_some() => RunState { optimizer: Some(cfg.optimizer), settings: Some(Settings::of(cfg)), ..s.clone() },
            Some((_, s)) => RunState { settings: Some(Settings::of(cfg)), ..s.clone() },
            None => RunState { seed: cfg.seed, settings: Some(Settings::of(cfg)), ..Default::default() },
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
