//! `strnas sweep`: many strnas commands (a Table 1, the search-quality protocol) as numbered jobs under one root
//! directory, run on this machine or as job arrays on Slurm or Kubernetes, without a scheduler of our own.
//!
//! The design the cluster tools share (submitit, Optuna's journal storage, Kubernetes Indexed Jobs): a manifest
//! on shared storage is the single source of truth; one idempotent worker per index (`run-one`) claims its job,
//! resumes it, and writes its record atomically; `status` and `collect` read only files. Every executor runs
//! the same worker, so a job behaves the same under `local`, Slurm and Kubernetes.
//!
//! Layout of a root: `sweep.json` (name, plan, working directory, stages), `manifest.jsonl` (one job per line),
//! `jobs/<stage>/<index>.json` (the job's last record), `jobs/<stage>/<index>.lock` (its claim),
//! `logs/<stage>-<index>.log` (every attempt's output, appended), `slurm/` and `kubernetes/` (what was
//! submitted or written).
//!
//! Stage layer: runs strnas commands as child processes; depends on the foundation only.

pub mod claim;
pub mod collect;
pub mod kubernetes;
pub mod local;
pub mod plan;
pub mod run_one;
pub mod slurm;
pub mod state;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use plan::{Job, Stage};

/// The only manifest version this build reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A planned sweep: `sweep.json` and `manifest.jsonl` under its root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub version: u32,
    pub name: String,
    /// The plan file it was expanded from.
    pub plan: PathBuf,
    /// Every job runs here (relative paths in commands are relative to it).
    pub workdir: PathBuf,
    pub stages: Vec<Stage>,
    #[serde(skip)]
    pub root: PathBuf,
    #[serde(skip)]
    pub jobs: Vec<Job>,
}

/// What `plan` did with the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    Written,
    /// The root already held this very manifest.
    Unchanged,
}

impl Sweep {
    /// Expands `plan_path` into a manifest under `root` (created). A root that holds a different manifest is
    /// refused: its records would no longer describe the jobs.
    pub fn plan(plan_path: &Path, root: &Path, sets: &[(String, String)]) -> Result<(Sweep, Planned)> {
        std::fs::create_dir_all(root).with_context(|| format!("creating sweep root {}", root.display()))?;
        let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
        let expanded = plan::load(plan_path, &root, sets)?;
        let workdir = std::env::current_dir().context("reading the working directory")?;
        let sweep = Sweep {
            version: MANIFEST_VERSION,
            name: expanded.name,
            plan: plan_path.canonicalize().unwrap_or_else(|_| plan_path.to_path_buf()),
            workdir,
            stages: expanded.stages,
            root: root.clone(),
            jobs: expanded.jobs,
        };
        if root.join("sweep.json").exists() {
            let old = Sweep::open(&root)?;
            if old.stages == sweep.stages && old.jobs == sweep.jobs && old.workdir == sweep.workdir {
                return Ok((old, Planned::Unchanged));
            }
            bail!(
                "{} already holds a different sweep ({:?}, planned from {}); plan into another root, or delete it to start over",
                root.display(),
                old.name,
                old.plan.display()
            );
        }
        let lines: Vec<String> = sweep.jobs.iter().map(serde_json::to_string).collect::<std::result::Result<_, _>>()?;
        crate::io::write_atomic(&root.join("manifest.jsonl"), format!("{}\n", lines.join("\n")).as_bytes())?;
        crate::io::write_atomic(&root.join("sweep.json"), serde_json::to_string_pretty(&sweep)?.as_bytes())?;
        Ok((sweep, Planned::Written))
    }

    /// Reads a planned root.
    pub fn open(root: &Path) -> Result<Sweep> {
        let root = root.canonicalize().with_context(|| format!("{} is not a sweep root (run `strnas sweep plan PLAN -o {}` first)", root.display(), root.display()))?;
        let head = root.join("sweep.json");
        let text = std::fs::read_to_string(&head).with_context(|| format!("{}: not a sweep root (no sweep.json; run `strnas sweep plan` first)", root.display()))?;
        let mut sweep: Sweep = serde_json::from_str(&text).with_context(|| format!("{}: not a valid sweep header", head.display()))?;
        if sweep.version != MANIFEST_VERSION {
            bail!("{}: manifest version {} (this build reads {MANIFEST_VERSION})", head.display(), sweep.version);
        }
        let manifest = root.join("manifest.jsonl");
        let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        sweep.jobs = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a job line", manifest.display(), i + 1)))
            .collect::<Result<_>>()?;
        sweep.root = root;
        Ok(sweep)
    }

    pub fn stage(&self, name: &str) -> Result<&Stage> {
        self.stages.iter().find(|s| s.name == name).with_context(|| {
            format!("no stage {name:?} in sweep {:?} (stages: {})", self.name, self.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "))
        })
    }

    pub fn job(&self, stage: &str, index: usize) -> Result<&Job> {
        let st = self.stage(stage)?;
        self.jobs
            .iter()
            .find(|j| j.stage == stage && j.index == index)
            .with_context(|| format!("stage {stage:?} has jobs 0..{} (index {index} is out of range)", st.jobs.saturating_sub(1)))
    }

    pub fn jobs_of<'a>(&'a self, stage: &'a str) -> impl Iterator<Item = &'a Job> + 'a {
        self.jobs.iter().filter(move |j| j.stage == stage)
    }

    /// `jobs/<stage>/<index>` without extension.
    pub fn job_base(&self, job: &Job) -> PathBuf {
        self.root.join("jobs").join(&job.stage).join(job.index.to_string())
    }

    pub fn log_path(&self, job: &Job) -> PathBuf {
        self.root.join("logs").join(format!("{}-{}.log", job.stage, job.index))
    }
}
