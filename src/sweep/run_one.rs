//! The worker every executor runs: one job, idempotent, claimed, resumed, recorded atomically.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::claim::{self, Claim};
use super::state::{self, Outcome, Record, State};
use super::{Job, Sweep};
use crate::signals;

/// What `run_one` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    /// The result already existed: nothing ran.
    AlreadyDone,
    /// A live runner holds the claim (its claim file's text).
    ClaimedElsewhere(String),
    /// A stage this job needs is not done (its name and how many of its jobs are).
    NeedsNotDone { stage: String, done: usize, of: usize },
    /// The command ran; its record.
    Attempted(Record),
}

impl Ran {
    /// The process exit status for `strnas sweep run-one`: 0 done or already done, 1 failed or refused (so a
    /// scheduler's `afterok` does not fire), 128 + n when a stop signal ended the job.
    pub fn exit_code(&self) -> i32 {
        match self {
            Ran::AlreadyDone => crate::exit::OK,
            Ran::ClaimedElsewhere(_) | Ran::NeedsNotDone { .. } => crate::exit::CHECK_FAILED,
            Ran::Attempted(r) => match r.outcome {
                Outcome::Done => crate::exit::OK,
                Outcome::Stopped => r.exit_code.unwrap_or(signals::signal_exit_code(signals::SIGTERM)),
                Outcome::Failed => crate::exit::CHECK_FAILED,
            },
        }
    }
}

/// Runs job `index` of `stage`: skips it when its result exists; refuses while a stage it needs is not done or
/// another runner holds its claim; otherwise runs its command (with the resume arguments when the resume file
/// exists) in the sweep's working directory, its output appended to `logs/<stage>-<index>.log`, and writes the
/// attempt's record. A SIGTERM or SIGINT received meanwhile is forwarded to the command as SIGTERM (the
/// command checkpoints and exits 128 + n; the record says stopped).
pub fn run_one(sweep: &Sweep, stage: &str, index: usize) -> Result<Ran> {
    let job = sweep.job(stage, index)?;
    if state::is_done(sweep, job) {
        return Ok(Ran::AlreadyDone);
    }
    for need in &sweep.stage(stage)?.needs {
        let jobs: Vec<&Job> = sweep.jobs_of(need).collect();
        let done = jobs.iter().filter(|j| state::is_done(sweep, j)).count();
        if done < jobs.len() {
            return Ok(Ran::NeedsNotDone { stage: need.clone(), done, of: jobs.len() });
        }
    }
    let lock = sweep.job_base(job).with_extension("lock");
    let claimed_at = state::now_unix();
    let Some(claim) = Claim::try_take(&lock)? else { return Ok(Ran::ClaimedElsewhere(claim::holder(&lock))) };
    // Re-check under the claim: a runner that finished between the check above and the claim wrote the result.
    if state::is_done(sweep, job) {
        return Ok(Ran::AlreadyDone);
    }
    let previous = state::read_record(sweep, job)?;
    let attempt = previous.as_ref().map_or(1, |r| r.attempt + 1);
    for input in &job.inputs {
        let p = sweep.workdir.join(input);
        if !p.exists() {
            let reason = format!("input {} does not exist (an output of a stage this one needs?)", p.display());
            return finish(sweep, job, attempt, claimed_at, claimed_at, job.command.clone(), false, None, Some(reason)).map(Ran::Attempted);
        }
    }
    let resumed = job.resume.as_ref().is_some_and(|(when, _)| sweep.workdir.join(when).exists());
    let mut command = job.command.clone();
    if let (true, Some((_, add))) = (resumed, &job.resume) {
        command.extend(add.iter().cloned());
    }
    let log_path = sweep.log_path(job);
    std::fs::create_dir_all(log_path.parent().unwrap()).with_context(|| format!("creating {}", sweep.root.join("logs").display()))?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    writeln!(log, "== sweep {} job {stage}#{index} attempt {attempt} on {} at {}: strnas {}", sweep.name, state::hostname(), state::now_rfc3339(), shell_words(&command))
        .with_context(|| format!("writing {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the strnas binary")?;
    signals::install_stop_handler();
    claim.inherit_to_children()?;
    let started = state::now_unix();
    let mut child = Command::new(&exe)
        .args(&command)
        .current_dir(&sweep.workdir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .env("STRNAS_SWEEP_JOB", format!("{}/{stage}/{index}", sweep.root.display()))
        .spawn()
        .with_context(|| format!("starting {} {}", exe.display(), shell_words(&command)))?;
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the job")? {
            break status;
        }
        if !forwarded && signals::stop_signal().is_some() {
            signals::send(child.id(), signals::SIGTERM);
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(claim);
    let code = status.code();
    let reason = reason_for(sweep, job, code);
    finish(sweep, job, attempt, claimed_at, started, command, resumed, code, reason).map(Ran::Attempted)
}

/// None when the attempt is done; else why not.
fn reason_for(sweep: &Sweep, job: &Job, code: Option<i32>) -> Option<String> {
    match code {
        Some(0) if state::is_done(sweep, job) => None,
        Some(0) => Some(format!("the command exited 0 without writing its result {}", state::result_path(sweep, job).display())),
        Some(c) => match signals::stop_signal_of_exit_code(c) {
            Some(sig) => Some(format!("stopped by {} (checkpointed; the next run resumes)", signals::signal_name(sig))),
            None => Some(format!("exit status {c}")),
        },
        None => Some("killed by a signal it could not catch".into()),
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(sweep: &Sweep, job: &Job, attempt: u32, claimed: f64, started: f64, command: Vec<String>, resumed: bool, code: Option<i32>, reason: Option<String>) -> Result<Record> {
    let outcome = match (&reason, code.and_then(signals::stop_signal_of_exit_code)) {
        (None, _) => Outcome::Done,
        (Some(_), Some(_)) => Outcome::Stopped,
        (Some(_), None) => Outcome::Failed,
    };
    let slurm = std::env::var("SLURM_JOB_ID").ok().map(|id| {
        let array = std::env::var("SLURM_ARRAY_JOB_ID").map(|a| format!(" (array {a}_{})", std::env::var("SLURM_ARRAY_TASK_ID").unwrap_or_default())).unwrap_or_default();
        format!("{id}{array} restart {}", std::env::var("SLURM_RESTART_COUNT").unwrap_or_else(|_| "0".into()))
    });
    let record = Record {
        stage: job.stage.clone(),
        index: job.index,
        outcome,
        exit_code: code,
        attempt,
        host: state::hostname(),
        started,
        finished: state::now_unix(),
        command,
        resumed,
        reason,
        overhead_start_s: (started - claimed).max(0.0),
        slurm,
    };
    state::write_record(sweep, &record, job)?;
    Ok(record)
}

/// The command as a shell would show it (arguments with spaces or quotes single-quoted).
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,%+@".contains(c)) { a.clone() } else { format!("'{}'", a.replace('\'', "'\\''")) })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line for a job's attempt, as `run-one` and the local executor print it.
pub fn describe(job: &Job, ran: &Ran) -> String {
    let id = format!("{}#{}", job.stage, job.index);
    match ran {
        Ran::AlreadyDone => format!("{id}: done already (result exists)"),
        Ran::ClaimedElsewhere(h) => format!("{id}: claimed by another runner ({h})"),
        Ran::NeedsNotDone { stage, done, of } => format!("{id}: waiting for stage {stage:?} ({done} of {of} done)"),
        Ran::Attempted(r) => {
            let took = r.finished - r.started;
            match &r.reason {
                None => format!("{id}: {} in {took:.1} s (attempt {}{})", State::Done.name(), r.attempt, if r.resumed { ", resumed" } else { "" }),
                Some(why) => format!("{id}: {} after {took:.1} s: {why}", if r.outcome == Outcome::Stopped { "stopped" } else { "failed" }),
            }
        }
    }
}
