//! `strnas sweep`: plan, run (here or on Slurm/Kubernetes), watch and collect many strnas jobs under one root.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use crate::exit;
use crate::sweep::state::{self, State};
use crate::sweep::{collect, kubernetes, local, run_one, slurm, Planned, Sweep};

#[derive(Subcommand, Debug)]
#[command(after_help = "A sweep is a plan (YAML, see sweeps/) expanded into numbered jobs under a root directory; the \
    manifest there is the single source of truth. Every executor runs each job through `run-one`, which skips a \
    job whose result exists, claims it (a second runner is refused; a dead runner's claim is not), resumes its \
    run directory and writes its record atomically, so running or submitting again re-runs only what is missing.\n\n\
    Example:\n  strnas sweep plan sweeps/tiny-table1.yaml -o runs/sweep\n  strnas sweep run runs/sweep --jobs 2\n  \
    strnas sweep status runs/sweep\n  strnas sweep collect runs/sweep\n\nOn a cluster (the root on a shared filesystem):\n  \
    strnas sweep submit runs/sweep --executor slurm --partition gpu --gpus-per-job 1 --latency-partition bench\n  \
    strnas sweep submit runs/sweep --executor kubernetes --image IMG --pvc sweeps && runs/sweep/kubernetes/apply.sh")]
pub enum SweepCommand {
    /// Validate a plan and expand it into the manifest under ROOT (idempotent for the same plan)
    Plan(PlanArgs),
    /// Run the jobs without a result on this machine, N at a time, stages in dependency order
    Run(RunArgs),
    /// Run one job (what each scheduler task runs): skip when done, claim, resume, record
    RunOne(RunOneArgs),
    /// Submit the jobs without a result to Slurm (job arrays) or write Kubernetes Indexed Jobs
    Submit(SubmitArgs),
    /// Done / running / failed / stopped / waiting per stage, failed jobs with their log's tail
    Status(StatusArgs),
    /// Gather the done jobs' results into tables (and the accuracy/latency charts of `strnas report`)
    Collect(CollectArgs),
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The plan (YAML)
    plan: PathBuf,
    /// The sweep's root directory (on shared storage for a cluster)
    #[arg(long, short)]
    out: PathBuf,
    /// Replace a plan var, e.g. --set iters=30 (a list var takes space-separated words); repeatable
    #[arg(long = "set", value_name = "VAR=VALUE", value_parser = parse_set)]
    sets: Vec<(String, String)>,
}

fn parse_set(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.trim().to_string(), v.to_string())).filter(|(k, _)| !k.is_empty()).ok_or_else(|| format!("{s:?}: expected VAR=VALUE"))
}

#[derive(Args, Debug)]
pub struct RunArgs {
    root: PathBuf,
    /// Jobs at a time (each uses its stage's `threads`)
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Only these stages (repeatable); their needs must be done
    #[arg(long = "stage", value_name = "STAGE")]
    stages: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunOneArgs {
    root: PathBuf,
    #[arg(long)]
    stage: String,
    #[arg(long)]
    index: usize,
    /// Print nothing (the local executor reports for its workers)
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Executor {
    Slurm,
    Kubernetes,
}

#[derive(Args, Debug)]
#[command(after_help = "Slurm: one `sbatch --array` per stage with jobs left (`--requeue`, `--open-mode=append`), chained \
    with `--dependency=afterok`; a preempted or requeued task gets SIGTERM, checkpoints and resumes when it runs \
    again. Latency stages (bench, latency build) go only to --latency-partition.\n\nKubernetes: writes \
    ROOT/kubernetes/<stage>.yaml (Indexed Jobs) and apply.sh (applies them in order, waiting for each stage); the \
    volume claim is mounted at ROOT's path and the image must hold strnas and the checkout at the sweep's working \
    directory.")]
pub struct SubmitArgs {
    root: PathBuf,
    #[arg(long, value_enum)]
    executor: Executor,
    /// Slurm partition for every stage but latency ones
    #[arg(long)]
    partition: Option<String>,
    /// Slurm partition of deployment-identical nodes for latency stages
    #[arg(long)]
    latency_partition: Option<String>,
    /// GPUs per job of the stages marked `gpu: true`
    #[arg(long, default_value_t = 0)]
    gpus_per_job: u32,
    /// Slurm time limit per job (e.g. 4:00:00)
    #[arg(long)]
    time: Option<String>,
    /// Slurm: tasks of one array at a time; Kubernetes: parallelism per stage (0: no limit)
    #[arg(long, default_value_t = 0)]
    max_parallel: u32,
    /// Extra #SBATCH option, e.g. --sbatch=--account=proj (repeatable)
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch: Vec<String>,
    /// Kubernetes: container image holding strnas and the checkout
    #[arg(long)]
    image: Option<String>,
    /// Kubernetes: PersistentVolumeClaim holding the sweep root
    #[arg(long)]
    pvc: Option<String>,
    #[arg(long)]
    namespace: Option<String>,
    /// Kubernetes: memory per pod
    #[arg(long, default_value = "8Gi")]
    memory: String,
    /// Kubernetes: node selector key=value for latency stages
    #[arg(long)]
    latency_node_selector: Option<String>,
    /// Kubernetes: seconds between SIGTERM and SIGKILL
    #[arg(long, default_value_t = 120)]
    grace_seconds: u32,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    root: PathBuf,
    /// Also write the status as JSON (`-` for stdout)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Lines of a failed job's log to show
    #[arg(long, default_value_t = 5)]
    tail: usize,
}

#[derive(Args, Debug)]
pub struct CollectArgs {
    root: PathBuf,
    /// Result columns per table at most
    #[arg(long, default_value_t = 10)]
    columns: usize,
}

pub fn run(c: SweepCommand) -> Result<i32> {
    match c {
        SweepCommand::Plan(a) => {
            let (sweep, planned) = Sweep::plan(&a.plan, &a.out, &a.sets)?;
            let what = if planned == Planned::Unchanged { "unchanged" } else { "planned" };
            println!("sweep {:?} {what}: {} job(s) in {} stage(s) under {}", sweep.name, sweep.jobs.len(), sweep.stages.len(), sweep.root.display());
            for st in &sweep.stages {
                let needs = if st.needs.is_empty() { String::new() } else { format!(" after {}", st.needs.join(", ")) };
                println!("  {:<16} {:>4} job(s), {} thread(s){}{}", st.name, st.jobs, st.threads, if st.latency { ", measures latency" } else { "" }, needs);
            }
            Ok(exit::OK)
        }
        SweepCommand::Run(a) => {
            let sweep = Sweep::open(&a.root)?;
            let s = local::run(&sweep, a.jobs, &a.stages, &mut |l| println!("{} {l}", state::now_rfc3339()))?;
            println!("sweep {:?}: {} done, {} failed, {} stopped, {} not started (see `strnas sweep status {}`)", sweep.name, s.done, s.failed, s.stopped, s.blocked, a.root.display());
            Ok(s.exit_code())
        }
        SweepCommand::RunOne(a) => {
            let sweep = Sweep::open(&a.root)?;
            let ran = run_one::run_one(&sweep, &a.stage, a.index)?;
            if !a.quiet {
                println!("{}", run_one::describe(sweep.job(&a.stage, a.index)?, &ran));
            }
            Ok(ran.exit_code())
        }
        SweepCommand::Submit(a) => submit(a),
        SweepCommand::Status(a) => status(a),
        SweepCommand::Collect(a) => collect_cmd(a),
    }
}

fn submit(a: SubmitArgs) -> Result<i32> {
    let sweep = Sweep::open(&a.root)?;
    match a.executor {
        Executor::Slurm => {
            let o = slurm::Options { partition: a.partition, latency_partition: a.latency_partition, gpus_per_job: a.gpus_per_job, time: a.time, max_parallel: a.max_parallel, extra: a.sbatch };
            let subs = slurm::submit(&sweep, &o, &mut |l| println!("{l}"))?;
            println!("{} array(s) submitted; follow with `strnas sweep status {}`", subs.len(), a.root.display());
        }
        Executor::Kubernetes => {
            let o = kubernetes::Options {
                image: a.image.unwrap_or_default(),
                pvc: a.pvc.unwrap_or_default(),
                namespace: a.namespace,
                parallelism: a.max_parallel,
                memory: a.memory,
                gpus_per_job: a.gpus_per_job,
                latency_node_selector: a.latency_node_selector,
                grace_seconds: a.grace_seconds,
            };
            for p in kubernetes::write(&sweep, &o)? {
                println!("wrote {}", p.display());
            }
            println!("apply with {}", sweep.root.join("kubernetes").join("apply.sh").display());
        }
    }
    Ok(exit::OK)
}

fn status(a: StatusArgs) -> Result<i32> {
    let sweep = Sweep::open(&a.root)?;
    let states = state::states(&sweep)?;
    let queue = slurm::queue(&sweep);
    let all = [State::Done, State::Running, State::Failed, State::Stopped, State::Ready, State::Waiting];
    let mut header = vec!["stage".to_string(), "jobs".into()];
    header.extend(all.iter().map(|s| s.name().to_string()));
    if queue.is_some() {
        header.push("slurm".into());
    }
    let mut t = crate::report::Table::new(header);
    let mut json_stages = vec![];
    for st in &sweep.stages {
        let mine: Vec<State> = sweep.jobs.iter().zip(&states).filter(|(j, _)| j.stage == st.name).map(|(_, s)| *s).collect();
        let mut row = vec![st.name.clone(), st.jobs.to_string()];
        row.extend(all.iter().map(|s| mine.iter().filter(|m| *m == s).count().to_string()));
        let mut counts = std::collections::BTreeMap::new();
        if let Some(q) = &queue {
            for (_, _, s) in q.iter().filter(|(stage, _, _)| *stage == st.name) {
                *counts.entry(s.to_lowercase()).or_insert(0usize) += 1;
            }
            row.push(counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
        }
        t.row(row);
        let jobs: Vec<_> = sweep.jobs_of(&st.name).zip(mine.iter()).map(|(j, s)| serde_json::json!({"index": j.index, "state": s, "vars": j.vars})).collect();
        json_stages.push(serde_json::json!({"stage": st.name, "jobs": jobs, "slurm": counts}));
    }
    println!("sweep {:?} ({})", sweep.name, sweep.root.display());
    print!("{}", t.render());
    for (job, s) in sweep.jobs.iter().zip(&states) {
        if matches!(s, State::Failed | State::Stopped) {
            let rec = state::read_record(&sweep, job)?;
            let why = rec.and_then(|r| r.reason).unwrap_or_default();
            println!("\n{}#{} {}: {why}\n  log {}:", job.stage, job.index, s.name(), sweep.log_path(job).display());
            for l in state::log_tail(&sweep.log_path(job), a.tail).lines() {
                println!("  | {l}");
            }
        }
    }
    if let Some(p) = &a.json {
        crate::io::write_output(p, &serde_json::to_string_pretty(&serde_json::json!({"sweep": sweep.name, "root": sweep.root, "stages": json_stages}))?)?;
    }
    Ok(exit::OK)
}

fn collect_cmd(a: CollectArgs) -> Result<i32> {
    let sweep = Sweep::open(&a.root)?;
    let stages = collect::collect(&sweep)?;
    let dir = sweep.root.join("collect");
    let mut md = format!("# Sweep {}\n\nCollected {} from {}.\n", sweep.name, state::now_rfc3339(), sweep.root.display());
    let (mut evals, mut benches) = (vec![], vec![]);
    for s in &stages {
        let lines: Vec<String> = s.rows.iter().map(serde_json::to_string).collect::<std::result::Result<_, _>>()?;
        crate::io::write_atomic(&dir.join(format!("{}.jsonl", s.stage)), (lines.join("\n") + "\n").as_bytes())?;
        let table = s.table(a.columns);
        println!("\n{} ({} of {} done)", s.stage, s.rows.len(), s.jobs);
        print!("{}", table.render());
        md.push_str(&format!("\n## {} ({} of {} done)\n\n{}", s.stage, s.rows.len(), s.jobs, table.markdown()));
        for r in &s.rows {
            if r.values.contains_key("total.accuracy") && r.values.contains_key("model") {
                evals.push(r.result.clone());
            } else if r.values.get("format").and_then(|f| f.as_str()) == Some(crate::bench::REPORT_FORMAT) {
                benches.push(r.result.clone());
            }
        }
    }
    crate::io::write_atomic(&dir.join("tables.md"), md.as_bytes())?;
    println!("\nwrote {} (tables.md and one <stage>.jsonl per stage)", dir.display());
    if !evals.is_empty() && !benches.is_empty() {
        let charts = dir.join("charts");
        let args = super::report_cmd::ReportArgs::from_files(benches, evals, charts.clone());
        super::report_cmd::run(args)?;
    }
    Ok(exit::OK)
}
