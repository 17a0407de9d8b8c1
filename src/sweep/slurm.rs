//! The `slurm` executor: one job array per stage (`sbatch --array=...%M --requeue`), chained with
//! `--dependency=afterok` (and `--kill-on-invalid-dep=yes`, else a failed stage leaves its dependants pending
//! for ever); each array task runs `strnas sweep run-one ROOT --stage S --index $SLURM_ARRAY_TASK_ID`.
//! Only jobs without a result are submitted, so submitting again re-runs what is missing. Latency-measuring
//! stages go to a named partition only: a latency measured on whichever node is free is not the deployment's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::state::{self, State};
use super::Sweep;

/// `strnas sweep submit --executor slurm` settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub partition: Option<String>,
    /// Where latency stages run (required when such a stage has jobs to submit).
    pub latency_partition: Option<String>,
    pub gpus_per_job: u32,
    /// `--time` (e.g. 4:00:00).
    pub time: Option<String>,
    /// At most this many tasks of one array at a time (`%M`); 0: no limit.
    pub max_parallel: u32,
    /// Extra `#SBATCH` lines (`--account=x`, `--qos=y`).
    pub extra: Vec<String>,
}

/// One submitted array, as `slurm/submitted.jsonl` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub stage: String,
    pub job_id: String,
    pub indices: Vec<usize>,
    /// Unix seconds.
    pub submitted: f64,
    pub script: PathBuf,
}

/// Writes one batch script per stage with jobs left and submits them in stage order.
pub fn submit(sweep: &Sweep, o: &Options, say: &mut dyn FnMut(&str)) -> Result<Vec<Submitted>> {
    let states = state::states(sweep)?;
    let running = states.iter().filter(|s| **s == State::Running).count();
    if running > 0 {
        bail!("{running} job(s) of this sweep are running; submit again when they have ended (`strnas sweep status {}`)", sweep.root.display());
    }
    let exe = std::env::current_exe().context("locating the strnas binary")?;
    // Slurm opens --output before the task starts: a missing folder fails the task with no log at all.
    let logs = sweep.root.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut out: Vec<Submitted> = vec![];
    for st in &sweep.stages {
        let indices: Vec<usize> = sweep.jobs.iter().zip(&states).filter(|(j, s)| j.stage == st.name && **s != State::Done).map(|(j, _)| j.index).collect();
        if indices.is_empty() {
            say(&format!("{}: every job done, nothing to submit", st.name));
            continue;
        }
        let partition = if st.latency {
            Some(o.latency_partition.clone().with_context(|| {
                format!("stage {:?} measures latency: name the partition of deployment-identical nodes it runs on (--latency-partition P), or run it here with `strnas sweep run {} --stage {}`", st.name, sweep.root.display(), st.name)
            })?)
        } else {
            o.partition.clone()
        };
        let deps: Vec<&str> = out.iter().filter(|s| st.needs.contains(&s.stage)).map(|s| s.job_id.as_str()).collect();
        let script = script(sweep, &exe, &st.name, st.threads, st.gpu.then_some(o.gpus_per_job).filter(|g| *g > 0), partition.as_deref(), o)?;
        let path = sweep.root.join("slurm").join(format!("{}.sbatch", st.name));
        crate::io::write_atomic(&path, script.as_bytes())?;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable").arg(format!("--array={}{}", ranges(&indices), if o.max_parallel > 0 { format!("%{}", o.max_parallel) } else { String::new() }));
        if !deps.is_empty() {
            cmd.arg(format!("--dependency=afterok:{}", deps.join(":")));
        }
        cmd.arg(&path).current_dir(&sweep.workdir);
        let output = cmd.output().context("running sbatch (is Slurm installed and is this a submit host?)")?;
        if !output.status.success() {
            bail!("sbatch {} failed: {}", path.display(), String::from_utf8_lossy(&output.stderr).trim());
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let job_id = text.trim().split(';').next().unwrap_or("").to_string();
        if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch {} printed {:?}, not a job id", path.display(), text.trim());
        }
        say(&format!("{}: submitted array {job_id} ({} job(s){})", st.name, indices.len(), if deps.is_empty() { String::new() } else { format!(", after {}", deps.join(", ")) }));
        let s = Submitted { stage: st.name.clone(), job_id, indices, submitted: state::now_unix(), script: path };
        crate::io::append_line(&sweep.root.join("slurm").join("submitted.jsonl"), &serde_json::to_string(&s)?)?;
        out.push(s);
    }
    Ok(out)
}

fn script(sweep: &Sweep, exe: &Path, stage: &str, threads: u32, gpus: Option<u32>, partition: Option<&str>, o: &Options) -> Result<String> {
    let root = sweep.root.to_str().context("the sweep root is not UTF-8")?;
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# Written by `strnas sweep submit` for stage {stage:?} of sweep {:?}; the array indices are on the sbatch line.", sweep.name),
        format!("#SBATCH --job-name={}-{stage}", sweep.name),
        "#SBATCH --requeue".into(),
        "#SBATCH --open-mode=append".into(),
        "#SBATCH --kill-on-invalid-dep=yes".into(),
        format!("#SBATCH --output={root}/logs/slurm-{stage}-%a.out"),
        format!("#SBATCH --cpus-per-task={threads}"),
        format!("#SBATCH --chdir={}", sweep.workdir.display()),
    ];
    if let Some(p) = partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(g) = gpus {
        lines.push(format!("#SBATCH --gpus-per-task={g}"));
    }
    if let Some(t) = &o.time {
        lines.push(format!("#SBATCH --time={t}"));
    }
    lines.extend(o.extra.iter().map(|e| format!("#SBATCH {e}")));
    lines.push(format!("exec {} sweep run-one {} --stage {stage} --index \"$SLURM_ARRAY_TASK_ID\"", quote(&exe.to_string_lossy()), quote(root)));
    Ok(lines.join("\n") + "\n")
}

fn quote(s: &str) -> String {
    super::run_one::shell_words(&[s.to_string()])
}

/// `0-3,5,7-8` for sorted indices.
pub fn ranges(indices: &[usize]) -> String {
    let mut parts = vec![];
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// Slurm's view of the arrays this sweep submitted: (stage, index) -> state (PENDING, RUNNING, ...), from
/// `squeue`; None when nothing was submitted or squeue does not answer (not a submit host, SLURM_CONF unset).
pub fn queue(sweep: &Sweep) -> Option<Vec<(String, usize, String)>> {
    let text = std::fs::read_to_string(sweep.root.join("slurm").join("submitted.jsonl")).ok()?;
    let subs: Vec<Submitted> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if subs.is_empty() {
        return None;
    }
    let ids: Vec<&str> = subs.iter().map(|s| s.job_id.as_str()).collect();
    let out = Command::new("squeue").args(["-h", "-r", "-o", "%i %T", "-j", &ids.join(",")]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = vec![];
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(id), Some(st)) = (it.next(), it.next()) else { continue };
        let Some((array, task)) = id.split_once('_') else { continue };
        if let (Some(sub), Ok(task)) = (subs.iter().rev().find(|s| s.job_id == array), task.parse::<usize>()) {
            rows.push((sub.stage.clone(), task, st.to_string()));
        }
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn array_ranges() {
        assert_eq!(super::ranges(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-8");
        assert_eq!(super::ranges(&[4]), "4");
    }
}
