//! The `local` executor: the sweep's jobs on this machine, `jobs` at a time, stages in the order their
//! `needs` allow. Each job runs as `strnas sweep run-one` (the worker Slurm and Kubernetes run), so claims,
//! resume and records are the same everywhere. A stop signal is passed on to the running jobs, which
//! checkpoint; the root then resumes with the next `run`. A stage that measures latency (`latency: true`) runs
//! its jobs alone on the machine, as Slurm and Kubernetes give them nodes of their own.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::state::{self, State};
use super::Sweep;
use crate::signals;

/// What a local run left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub done: usize,
    pub failed: usize,
    pub stopped: usize,
    /// Jobs that could not start (a stage they need failed or was stopped).
    pub blocked: usize,
    /// The stop signal that ended the run early, if one did.
    pub signal: Option<i32>,
}

impl Summary {
    /// 0 when every selected job is done, 128 + n after a stop signal, else 1.
    pub fn exit_code(&self) -> i32 {
        match self.signal {
            Some(s) => signals::signal_exit_code(s),
            None if self.failed + self.stopped + self.blocked == 0 => crate::exit::OK,
            None => crate::exit::CHECK_FAILED,
        }
    }
}

/// Runs every job of `only` (all stages when empty) that has no result, at most `jobs` at a time; a job that
/// fails is not retried in this run (a later run retries it). `say` receives one line per event.
pub fn run(sweep: &Sweep, jobs: usize, only: &[String], say: &mut dyn FnMut(&str)) -> Result<Summary> {
    for s in only {
        sweep.stage(s)?;
    }
    let selected = |stage: &str| only.is_empty() || only.iter().any(|s| s == stage);
    let exe = std::env::current_exe().context("locating the strnas binary")?;
    signals::install_stop_handler();
    let mut running: Vec<(usize, Child)> = vec![];
    let mut tried: BTreeSet<usize> = BTreeSet::new();
    let mut forwarded = false;
    loop {
        // Reap finished workers.
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait().context("waiting for a job")? {
                let (k, _) = running.remove(i);
                let job = &sweep.jobs[k];
                let line = match state::read_record(sweep, job)? {
                    Some(r) if r.finished >= r.started && status.code().is_some() => super::run_one::describe(job, &super::run_one::Ran::Attempted(r)),
                    _ => format!("{}#{}: worker ended with {status}", job.stage, job.index),
                };
                say(&line);
            } else {
                i += 1;
            }
        }
        if let Some(sig) = signals::stop_signal() {
            if !forwarded {
                say(&format!("{} received: stopping {} running job(s) (they checkpoint; `strnas sweep run` resumes)", signals::signal_name(sig), running.len()));
                for (_, c) in &running {
                    signals::send(c.id(), signals::SIGTERM);
                }
                forwarded = true;
            }
            if running.is_empty() {
                let mut s = summarize(sweep, &selected)?;
                s.signal = Some(sig);
                return Ok(s);
            }
        } else {
            let states = state::states(sweep)?;
            let busy: BTreeSet<usize> = running.iter().map(|(k, _)| *k).collect();
            let startable: Vec<bool> = (0..sweep.jobs.len())
                .map(|k| {
                    let st = matches!(states[k], State::Ready | State::Stopped | State::Failed);
                    selected(&sweep.jobs[k].stage) && st && !busy.contains(&k) && !tried.contains(&k)
                })
                .collect();
            let latency_ready = (0..sweep.jobs.len()).any(|k| startable[k] && measures_latency(sweep, k));
            for (k, job) in sweep.jobs.iter().enumerate() {
                if running.len() >= jobs.max(1) {
                    break;
                }
                let running_latency: Vec<bool> = running.iter().map(|(r, _)| measures_latency(sweep, *r)).collect();
                if startable[k] && may_start(measures_latency(sweep, k), &running_latency, latency_ready) {
                    let child = Command::new(&exe)
                        .args(["sweep", "run-one"])
                        .arg(&sweep.root)
                        .args(["--stage", &job.stage, "--index", &job.index.to_string(), "--quiet"])
                        .stdin(Stdio::null())
                        .spawn()
                        .with_context(|| format!("starting the worker for {}#{}", job.stage, job.index))?;
                    say(&format!("{}#{}: started ({})", job.stage, job.index, super::run_one::shell_words(&job.command)));
                    tried.insert(k);
                    running.push((k, child));
                }
            }
            if running.is_empty() {
                return summarize(sweep, &selected);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn measures_latency(sweep: &Sweep, job: usize) -> bool {
    sweep.stage(&sweep.jobs[job].stage).map(|s| s.latency).unwrap_or(false)
}

/// Whether a job may start beside the running ones (`running`: whether each measures latency). A job that
/// measures latency runs alone: it starts only on an idle machine, nothing starts beside it, and while one is
/// ready no other job starts, so the running ones drain and it is not starved.
fn may_start(measures_latency: bool, running: &[bool], latency_ready: bool) -> bool {
    if running.iter().any(|&l| l) {
        return false;
    }
    if measures_latency {
        running.is_empty()
    } else {
        !latency_ready
    }
}

fn summarize(sweep: &Sweep, selected: &dyn Fn(&str) -> bool) -> Result<Summary> {
    let states = state::states(sweep)?;
    let mut s = Summary::default();
    for (job, st) in sweep.jobs.iter().zip(states) {
        if !selected(&job.stage) {
            continue;
        }
        match st {
            State::Done => s.done += 1,
            State::Failed => s.failed += 1,
            State::Stopped => s.stopped += 1,
            State::Ready | State::Waiting | State::Running => s.blocked += 1,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::may_start;

    #[test]
    fn a_latency_job_runs_alone_and_is_not_starved() {
        // Idle machine: either kind starts, but a ready latency job goes first.
        assert!(may_start(true, &[], true));
        assert!(!may_start(false, &[], true));
        assert!(may_start(false, &[], false));
        // Beside a training: the latency job waits, and no other job starts while it waits.
        assert!(!may_start(true, &[false], true));
        assert!(!may_start(false, &[false], true));
        assert!(may_start(false, &[false], false));
        // Beside a latency job: nothing starts.
        assert!(!may_start(false, &[true], false));
        assert!(!may_start(true, &[true], true));
    }
}
