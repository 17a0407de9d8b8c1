//! The `kubernetes` executor: one Indexed Job manifest per stage (`completionMode: Indexed`, the index in
//! `JOB_COMPLETION_INDEX`), and `apply.sh`, which applies them in stage order and waits for each stage to
//! complete before the next (Jobs have no dependencies of their own). A failed pod is replaced by one with the
//! same index; `run-one` is idempotent, so that is safe. The user applies them with kubectl.
//!
//! The pods see the sweep where it was planned: the volume claim is mounted at the root's path and the image
//! holds the checkout at the sweep's working directory.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::Sweep;

/// `strnas sweep submit --executor kubernetes` settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The container image (strnas and the checkout inside).
    pub image: String,
    /// The PersistentVolumeClaim that holds the sweep root (ReadWriteMany for parallel pods).
    pub pvc: String,
    pub namespace: Option<String>,
    /// Pods of one stage at a time (0: all its jobs).
    pub parallelism: u32,
    /// Memory request and limit per pod (e.g. 8Gi).
    pub memory: String,
    pub gpus_per_job: u32,
    /// `key=value` node selector for latency stages (required when the plan has one).
    pub latency_node_selector: Option<String>,
    /// terminationGracePeriodSeconds: time between SIGTERM and SIGKILL (the job checkpoints in between).
    pub grace_seconds: u32,
}

/// Writes `kubernetes/<stage>.yaml` for every stage and `kubernetes/apply.sh`; returns the files written.
pub fn write(sweep: &Sweep, o: &Options) -> Result<Vec<PathBuf>> {
    if o.image.is_empty() || o.pvc.is_empty() {
        bail!("--image and --pvc are required for the kubernetes executor");
    }
    let dir = sweep.root.join("kubernetes");
    let root = sweep.root.to_str().context("the sweep root is not UTF-8")?;
    let mut written = vec![];
    let mut apply = vec![
        "#!/usr/bin/env bash".to_string(),
        format!("# Written by `strnas sweep submit --executor kubernetes` for sweep {:?}: applies each stage's Indexed Job", sweep.name),
        "# and waits for it to complete before the next (stages in the order their needs allow).".into(),
        "set -euo pipefail".into(),
        "cd \"$(dirname \"$0\")\"".into(),
    ];
    let ns = o.namespace.as_ref().map(|n| format!(" -n {n}")).unwrap_or_default();
    for st in &sweep.stages {
        let name = k8s_name(&format!("{}-{}", sweep.name, st.name));
        let mut resources = json!({"requests": {"cpu": st.threads.to_string(), "memory": o.memory}, "limits": {"memory": o.memory}});
        if st.gpu && o.gpus_per_job > 0 {
            resources["limits"]["nvidia.com/gpu"] = json!(o.gpus_per_job.to_string());
        }
        let run = format!("exec strnas sweep run-one {} --stage {} --index \"$JOB_COMPLETION_INDEX\"", super::run_one::shell_words(&[root.to_string()]), st.name);
        let mut pod = json!({
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": o.grace_seconds,
            "containers": [{
                "name": "strnas",
                "image": o.image,
                "workingDir": sweep.workdir.to_string_lossy(),
                "command": ["/bin/sh", "-c", run],
                "resources": resources,
                "volumeMounts": [{"name": "sweep", "mountPath": root}],
            }],
            "volumes": [{"name": "sweep", "persistentVolumeClaim": {"claimName": o.pvc}}],
        });
        if st.latency {
            let sel = o.latency_node_selector.as_deref().with_context(|| {
                format!("stage {:?} measures latency: name the deployment-identical nodes it runs on (--latency-node-selector key=value)", st.name)
            })?;
            let (k, v) = sel.split_once('=').with_context(|| format!("--latency-node-selector {sel:?}: expected key=value"))?;
            pod["nodeSelector"] = json!({ k: v });
        }
        let parallelism = if o.parallelism == 0 { st.jobs as u32 } else { o.parallelism.min(st.jobs as u32) };
        let mut meta = json!({"name": name, "labels": {"strnas.sweep": sweep.name, "strnas.stage": st.name}});
        if let Some(n) = &o.namespace {
            meta["namespace"] = json!(n);
        }
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": {
                "completionMode": "Indexed",
                "completions": st.jobs,
                "parallelism": parallelism,
                "backoffLimit": st.jobs * 3,
                "template": {"metadata": {"labels": {"strnas.sweep": sweep.name, "strnas.stage": st.name}}, "spec": pod},
            },
        });
        let path = dir.join(format!("{}.yaml", st.name));
        let text = format!("# Stage {:?} of sweep {:?}: {} job(s), index from JOB_COMPLETION_INDEX.\n{}", st.name, sweep.name, st.jobs, serde_yaml::to_string(&job)?);
        crate::io::write_atomic(&path, text.as_bytes())?;
        apply.push(format!("kubectl{ns} apply -f {}.yaml", st.name));
        apply.push(format!("kubectl{ns} wait --for=condition=complete --timeout=-1s job/{name}"));
        written.push(path);
    }
    let script = dir.join("apply.sh");
    crate::io::write_atomic(&script, (apply.join("\n") + "\n").as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("making {} executable", script.display()))?;
    }
    written.push(script);
    Ok(written)
}

/// A DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters (Job names also label pods).
fn k8s_name(s: &str) -> String {
    let mut n: String = s.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    n.truncate(52);
    n.trim_matches('-').to_string()
}
