//! `strnas sweep` end to end with real strnas jobs: a plan expanded into a manifest, run by the local executor
//! (two at a time, needs respected), status and collect read from the files, a stop signal checkpoints and the
//! next run resumes, Kubernetes manifests that parse and hold the documented fields, and the same plan through
//! a real single-node Slurm cluster (scripts/slurm-local.sh), with a job requeued mid-run.
#![cfg(feature = "torch")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{make_synth, root, strnas, text};

/// A plan of three tiny CTC trainings (seeds 1-3, `iters[i]` iterations for seed i + 1, one thread) on `data`,
/// then their evaluation.
fn plan(dir: &Path, data: &Path, iters: [u64; 3]) -> PathBuf {
    let spec = root().join("arch_specs/tiny/tiny-crnn-ctc.yaml");
    let yaml = format!(
        r#"version: 1
name: sweep-test
vars:
  common: [--batch-size, "2", --valid-every, "1000000", --log-every, "2", --lr-schedule, constant]
stages:
  - name: train
    grid: {{run: [{{seed: 1, iters: {i1}}}, {{seed: 2, iters: {i2}}}, {{seed: 3, iters: {i3}}}]}}
    command: [train, {spec}, --train-data, {data}, --seed, "{{run.seed}}", --iters, "{{run.iters}}", "{{common}}", --threads, "{{threads}}", --out, "{{root}}/runs/s{{run.seed}}"]
    result: "{{root}}/runs/s{{run.seed}}/done.json"
    resume: {{when: "{{root}}/runs/s{{run.seed}}/checkpoint.safetensors", add: [--resume]}}
  - name: eval
    needs: [train]
    grid: {{seed: [1, 2, 3]}}
    command: [eval, "{{root}}/runs/s{{seed}}/model.yaml", --data, {data}, --json, "{{root}}/runs/s{{seed}}/eval.json", --threads, "1", --no-timing]
    inputs: ["{{root}}/runs/s{{seed}}/model.safetensors"]
    result: "{{root}}/runs/s{{seed}}/eval.json"
"#,
        spec = spec.display(),
        data = data.display(),
        i1 = iters[0],
        i2 = iters[1],
        i3 = iters[2],
    );
    let p = dir.join("plan.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn status_json(root_dir: &Path) -> serde_json::Value {
    let o = strnas(&["sweep", "status", s(root_dir), "--json", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&out[out.find("\n{").map_or(0, |i| i + 1)..]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn states(v: &serde_json::Value, stage: &str) -> Vec<String> {
    v["stages"].as_array().unwrap().iter().find(|s| s["stage"] == stage).unwrap()["jobs"].as_array().unwrap().iter().map(|j| j["state"].as_str().unwrap().to_string()).collect()
}

/// Every tensor of a run's weights, bit for bit.
fn weights(run: &Path) -> Vec<(String, Vec<u32>)> {
    let w = strnas::weights::WeightFile::read(&run.join("model.safetensors")).unwrap();
    let mut v: Vec<_> = w.tensors.into_iter().map(|(k, t)| (k, t.data.iter().map(|x| x.to_bits()).collect())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Runs the plan with the local executor; the same plan again does nothing; status and collect agree with
/// the files; a different plan cannot take over the root.
#[test]
fn local_executor_runs_a_plan_in_dependency_order_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 16, 4);
    let p = plan(tmp.path(), &data, [6; 3]);
    let r = tmp.path().join("root");
    let o = strnas(&["sweep", "plan", s(&p), "-o", s(&r)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("6 job(s) in 2 stage(s)"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(r.join("manifest.jsonl")).unwrap().lines().count(), 6, "one line per job");

    let o = strnas(&["sweep", "run-one", s(&r), "--stage", "eval", "--index", "0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("waiting for stage \"train\" (0 of 3 done)"), "{}", text(&o));
    let st = status_json(&r);
    assert_eq!(states(&st, "train"), ["ready"; 3]);
    assert_eq!(states(&st, "eval"), ["waiting"; 3]);

    let o = strnas(&["sweep", "run", s(&r), "--jobs", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("6 done, 0 failed"), "{}", text(&o));
    let st = status_json(&r);
    assert_eq!(states(&st, "eval"), ["done"; 3]);
    for seed in 1..=3 {
        let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.join(format!("jobs/train/{}.json", seed - 1))).unwrap()).unwrap();
        assert_eq!((rec["outcome"].as_str(), rec["attempt"].as_u64(), rec["resumed"].as_bool()), (Some("done"), Some(1), Some(false)));
        assert!(r.join(format!("logs/train-{}.log", seed - 1)).exists());
        let ev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.join(format!("runs/s{seed}/eval.json"))).unwrap()).unwrap();
        assert_eq!(ev["total"]["samples"].as_u64(), Some(16));
    }
    assert_ne!(weights(&r.join("runs/s1")), weights(&r.join("runs/s2")), "seeds differ");

    // Idempotent: nothing runs again.
    let o = strnas(&["sweep", "run", s(&r)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains(": started ("), "{}", text(&o));
    let o = strnas(&["sweep", "run-one", s(&r), "--stage", "train", "--index", "1"]);
    assert!(o.status.success() && text(&o).contains("done already"), "{}", text(&o));

    let o = strnas(&["sweep", "collect", s(&r), "--columns", "20"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = std::fs::read_to_string(r.join("collect/eval.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 3);
    let tables = std::fs::read_to_string(r.join("collect/tables.md")).unwrap();
    assert!(tables.contains("## eval (3 of 3 done)") && tables.contains("total.accuracy"), "{tables}");

    let o = strnas(&["sweep", "plan", s(&p), "-o", s(&r)]);
    assert!(o.status.success() && text(&o).contains("unchanged"), "{}", text(&o));
    let o = strnas(&["sweep", "plan", s(&p), "-o", s(&r), "--set", "common=--batch-size 3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already holds a different sweep"), "{}", text(&o));
    let o = strnas(&["sweep", "plan", s(&p), "-o", s(&tmp.path().join("r2")), "--set", "iter=7"]);
    assert!(text(&o).contains("--set iter=7: the plan") && text(&o).contains("has no var \"iter\" (vars: common)"), "{}", text(&o));
}

fn wait_for(cond: impl Fn() -> bool, child: &mut std::process::Child, what: &str) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(child.try_wait().unwrap().is_none(), "ended before {what}");
        assert!(t0.elapsed().as_secs() < 600, "{what} did not happen");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGTERM to the local executor reaches the training through the worker: it checkpoints, the record says
/// stopped, the executor exits 143; the next attempt resumes (SIGTERM to `run-one` alone, as Kubernetes sends
/// it to a pod's first process, stops it the same way).
#[cfg(unix)]
#[test]
fn a_stop_signal_checkpoints_and_the_next_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 16, 4);
    let p = plan(tmp.path(), &data, [1_000_000; 3]);
    let r = tmp.path().join("root");
    assert!(strnas(&["sweep", "plan", s(&p), "-o", s(&r)]).status.success());
    let steps = r.join("runs/s1/steps.jsonl");
    let mut run = Command::new(env!("CARGO_BIN_EXE_strnas")).args(["sweep", "run", s(&r)]).current_dir(root()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(|| steps.exists(), &mut run, "the first training's first log line");
    assert!(Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap().success());
    assert_eq!(run.wait().unwrap().code(), Some(143), "the executor's exit status after SIGTERM");
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.join("jobs/train/0.json")).unwrap()).unwrap();
    assert_eq!(rec["outcome"], "stopped", "{rec}");
    assert_eq!(rec["exit_code"], 143);
    assert!(r.join("runs/s1/checkpoint.safetensors").exists());
    assert_eq!(states(&status_json(&r), "train")[0], "stopped");

    let log = r.join("runs/s1/log.txt");
    let mut one = Command::new(env!("CARGO_BIN_EXE_strnas")).args(["sweep", "run-one", s(&r), "--stage", "train", "--index", "0"]).current_dir(root()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(|| std::fs::read_to_string(&log).unwrap_or_default().contains(" resumed: "), &mut one, "the resumed training's first line");
    // The same claim cannot be taken twice.
    let o = strnas(&["sweep", "run-one", s(&r), "--stage", "train", "--index", "0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("claimed by another runner (host "), "{}", text(&o));
    assert_eq!(states(&status_json(&r), "train")[0], "running");
    assert!(Command::new("kill").args(["-TERM", &one.id().to_string()]).status().unwrap().success());
    assert_eq!(one.wait().unwrap().code(), Some(143));
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.join("jobs/train/0.json")).unwrap()).unwrap();
    assert_eq!((rec["outcome"].as_str(), rec["attempt"].as_u64(), rec["resumed"].as_bool()), (Some("stopped"), Some(2), Some(true)), "{rec}");
    assert_eq!(rec["command"].as_array().unwrap().last().unwrap(), "--resume");
}

/// One Indexed Job per stage with the documented fields, and an apply script that waits stage by stage;
/// a latency stage without a node selector is refused.
#[test]
fn kubernetes_manifests_hold_the_documented_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("root");
    let o = strnas(&["sweep", "plan", "sweeps/search-quality.yaml", "-o", s(&r)]);
    assert!(o.status.success(), "{}", text(&o));
    let base = ["sweep", "submit", s(&r), "--executor", "kubernetes", "--image", "registry.example/strnas:1", "--pvc", "sweeps", "--gpus-per-job", "1"];
    let o = strnas(&base);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("stage \"latency-table\" measures latency") && text(&o).contains("--latency-node-selector"), "{}", text(&o));
    let o = strnas(&[&base[..], &["--latency-node-selector", "strnas/bench=true", "--max-parallel", "4"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let k = r.join("kubernetes");
    let retrain: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(k.join("retrain.yaml")).unwrap()).unwrap();
    assert_eq!(retrain["kind"], "Job");
    let spec = &retrain["spec"];
    assert_eq!((spec["completionMode"].as_str(), spec["completions"].as_u64(), spec["parallelism"].as_u64()), (Some("Indexed"), Some(16), Some(4)));
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/strnas:1");
    let cmd = c["command"][2].as_str().unwrap();
    assert!(cmd.contains("sweep run-one") && cmd.contains("--stage retrain --index \"$JOB_COMPLETION_INDEX\""), "{cmd}");
    assert_eq!(c["volumeMounts"][0]["mountPath"].as_str(), Some(s(&r.canonicalize().unwrap())));
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "sweeps");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["terminationGracePeriodSeconds"].as_u64(), Some(120));
    let bench: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(k.join("bench.yaml")).unwrap()).unwrap();
    assert_eq!(bench["spec"]["template"]["spec"]["nodeSelector"]["strnas/bench"], "true");
    let apply = std::fs::read_to_string(k.join("apply.sh")).unwrap();
    let (a, b) = (apply.find("apply -f skeleton.yaml").unwrap(), apply.find("apply -f search.yaml").unwrap());
    assert!(a < b && apply[a..b].contains("wait --for=condition=complete"), "{apply}");
}

/// Every plan shipped under sweeps/ validates and expands.
#[test]
fn shipped_plans_expand() {
    let tmp = tempfile::tempdir().unwrap();
    let o = strnas(&["sweep", "plan", "sweeps/paper-table1.yaml", "-o", s(&tmp.path().join("p"))]);
    assert!(text(&o).contains("vars.train_data: this plan needs a value: --set train_data=VALUE"), "{}", text(&o));
    let data = ["--set", "train_data=/data/MJ,/data/ST", "--set", "valid_data=/data/valid"];
    for (plan, sets, jobs) in [("sweeps/tiny-table1.yaml", &[][..], 20), ("sweeps/search-quality.yaml", &[], 78), ("sweeps/paper-table1.yaml", &data[..], 17)] {
        let o = strnas(&[&["sweep", "plan", plan, "-o", s(&tmp.path().join(plan.replace('/', "-")))][..], sets].concat());
        assert!(o.status.success(), "{plan}: {}", text(&o));
        assert!(text(&o).contains(&format!("{jobs} job(s)")), "{plan}: {}", text(&o));
    }
}

/// The plan through a real single-node Slurm cluster (scripts/slurm-local.sh; root only): one job array per
/// stage, two tasks at a time, `afterok` between stages; the third training is requeued mid-run (`scontrol
/// requeue`: SIGTERM, then the task runs again) and resumes from the checkpoint it wrote; status and collect
/// agree with the files; the local executor computes the same weights from the same plan.
#[cfg(unix)]
#[test]
fn slurm_executor_runs_the_plan_and_a_requeued_job_resumes() {
    if uid() != 0 {
        eprintln!("skipped: the single-node Slurm cluster needs root (slurmctld, slurmd and munged run as root/munge)");
        return;
    }
    let up = Command::new("scripts/slurm-local.sh").arg("start").current_dir(root()).output().unwrap();
    assert!(up.status.success(), "scripts/slurm-local.sh start: {}", text(&up));
    let conf = String::from_utf8(Command::new("scripts/slurm-local.sh").arg("env").current_dir(root()).output().unwrap().stdout).unwrap();
    let conf = conf.trim().trim_start_matches("export SLURM_CONF=").to_string();
    let result = std::panic::catch_unwind(|| slurm_sweep(&conf));
    let down = Command::new("scripts/slurm-local.sh").arg("stop").current_dir(root()).output().unwrap();
    assert!(down.status.success(), "scripts/slurm-local.sh stop: {}", text(&down));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn uid() -> u32 {
    let o = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// The requeued training's iterations: it is requeued right after its first log line (iteration 2), so it
/// ends mid-run unless the requeue comes seconds late (about 30 ms per iteration here).
const SLURM_ITERS: u64 = 600;

fn slurm_sweep(conf: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_synth(&data, 16, 4);
    let p = plan(tmp.path(), &data, [20, 20, SLURM_ITERS]);
    let r = tmp.path().join("slurm-root");
    assert!(strnas(&["sweep", "plan", s(&p), "-o", s(&r)]).status.success());
    let sweep = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_strnas")).arg("sweep").args(args).env("SLURM_CONF", conf).current_dir(root()).output().unwrap();
    let o = sweep(&["submit", s(&r), "--executor", "slurm", "--max-parallel", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("train: submitted array") && text(&o).contains("eval: submitted array"), "{}", text(&o));
    let subs: Vec<serde_json::Value> = std::fs::read_to_string(r.join("slurm/submitted.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let train_id = subs[0]["job_id"].as_str().unwrap().to_string();
    let script = std::fs::read_to_string(r.join("slurm/train.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --requeue") && script.contains("--index \"$SLURM_ARRAY_TASK_ID\""), "{script}");

    // Fails at once when Slurm holds none of the sweep's tasks any more but `done` is still false.
    let queued = || {
        let q = Command::new("squeue").args(["-h", "-r", "-o", "%i"]).env("SLURM_CONF", conf).output().unwrap();
        !String::from_utf8_lossy(&q.stdout).trim().is_empty()
    };
    let wait = |done: &dyn Fn() -> bool, what: &str| {
        while !done() {
            assert!(queued() || done(), "{what}: no task queued or running any more: {}\n{}", text(&sweep(&["status", s(&r)])), std::fs::read_dir(r.join("logs")).map(|d| d.flatten().map(|e| format!("{}:\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default())).collect::<Vec<_>>().join("\n")).unwrap_or_default());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let steps = r.join("runs/s3/steps.jsonl");
    wait(&|| steps.exists(), "the third training's first log line");
    let rq = Command::new("scontrol").args(["requeue", &format!("{train_id}_2")]).env("SLURM_CONF", conf).output().unwrap();
    assert!(rq.status.success(), "scontrol requeue: {}", text(&rq));
    let st = sweep(&["status", s(&r)]);
    assert!(text(&st).contains("slurm"), "status shows Slurm's view: {}", text(&st));

    wait(&|| (1..=3).all(|seed| r.join(format!("runs/s{seed}/eval.json")).exists()), "the evaluations");
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r.join("jobs/train/2.json")).unwrap()).unwrap();
    assert_eq!((rec["outcome"].as_str(), rec["attempt"].as_u64(), rec["resumed"].as_bool()), (Some("done"), Some(2), Some(true)), "{rec}");
    assert!(rec["slurm"].as_str().unwrap().ends_with("restart 1"), "{rec}");
    let log = std::fs::read_to_string(r.join("logs/train-2.log")).unwrap();
    assert!(log.contains("attempt 1 ") && log.contains("attempt 2 ") && log.contains("SIGTERM received, checkpoint written"), "{log}");
    let st = status_json(&r);
    assert_eq!((states(&st, "train"), states(&st, "eval")), (vec!["done".to_string(); 3], vec!["done".to_string(); 3]));
    let o = strnas(&["sweep", "collect", s(&r)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(r.join("collect/train.jsonl")).unwrap().lines().count(), 3);

    // The same plan on the local executor: the same weights, seed by seed (the requeued one included).
    let l = tmp.path().join("local-root");
    assert!(strnas(&["sweep", "plan", s(&p), "-o", s(&l)]).status.success());
    let o = strnas(&["sweep", "run", s(&l), "--jobs", "2", "--stage", "train"]);
    assert!(o.status.success(), "{}", text(&o));
    for seed in 1..=3 {
        assert!(weights(&r.join(format!("runs/s{seed}"))) == weights(&l.join(format!("runs/s{seed}"))), "seed {seed}: Slurm and local weights differ");
    }
}

/// When STRNAS_TEST_WRITER names a file, this "test" is a writer process: it rewrites the file with
/// `write_atomic` for ever, alternating two 8 MB contents (all 'a' or all 'b'). Otherwise it does nothing.
#[test]
fn atomic_writer_process() {
    let Ok(path) = std::env::var("STRNAS_TEST_WRITER") else { return };
    let (a, b) = (vec![b'a'; 8 << 20], vec![b'b'; 8 << 20]);
    loop {
        strnas::io::write_atomic(Path::new(&path), &a).unwrap();
        strnas::io::write_atomic(Path::new(&path), &b).unwrap();
    }
}

/// A record or result written by the sweep (every writer goes through `io::write_atomic`) is never half
/// written: a writer killed with SIGKILL at any moment leaves the old file or the new one, whole.
#[cfg(unix)]
#[test]
fn a_killed_writer_never_leaves_a_half_written_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("jobs").join("0.json");
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "atomic_writer_process", "--nocapture"])
            .env("STRNAS_TEST_WRITER", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it at a different point of its write cycle each round: after the file changed (round + 1) times.
        let mut seen = 0;
        let mut last = None;
        while seen <= round {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if modified.is_some() && modified != last {
                seen += 1;
                last = modified;
            }
            assert!(child.try_wait().unwrap().is_none(), "the writer ended");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 8 << 20, "round {round}: a file of {} bytes", bytes.len());
        assert!(bytes.iter().all(|&c| c == bytes[0]), "round {round}: the file mixes two writes");
    }
}
