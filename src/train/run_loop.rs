//! The loop every long training job runs: `strnas train` and the weight steps of both search strategies.
//!
//! It owns what the jobs have in common: the cadence (a `--log-every` line, a validation window with its
//! checkpoint every `--valid-every` iterations and at the end), the progress phase and its message, and the
//! three ways a run stops: its last iteration, `--max-time`, or a stop signal (SIGTERM, as a scheduler sends
//! before preempting a job, or Ctrl-C). Every stop ends a validation window first, so the checkpoint on disk
//! holds the last iteration done and `--resume` continues from it. What a step, a log line and a window do is
//! the job's ([`Job`]).

use std::time::{Duration, Instant};

use anyhow::Result;

use super::TrainConfig;
use crate::data::loader::Batch;
use crate::progress::Progress;
use crate::signals::{install_stop_handler, signal_name, stop_signal};

/// How often a job logs and validates, and how long it may run.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// The run's last iteration.
    pub iters: u64,
    pub valid_every: u64,
    /// 0: no `--log-every` lines.
    pub log_every: u64,
    pub max_time: Option<Duration>,
}

impl Cadence {
    pub fn of(cfg: &TrainConfig) -> Self {
        Cadence { iters: cfg.iters, valid_every: cfg.valid_every.max(1), log_every: cfg.log_every, max_time: cfg.max_time }
    }
}

/// The loss and pace over the iterations since the last `--log-every` line.
#[derive(Debug, Clone, Copy)]
pub struct LogWindow {
    pub mean_loss: f64,
    pub secs_per_iter: f64,
    /// Seconds to the run's end at this pace, or to `--max-time` when that comes first.
    pub eta_secs: f64,
}

/// One long job: its step, its `--log-every` line and its validation window.
pub trait Job {
    /// One step at `iteration` (1-based) on `batch`, which the loader took `waited` seconds to deliver;
    /// returns the step's loss. `logged`: [`Job::log_line`] follows this step (a job that diagnoses its steps,
    /// e.g. gradient norms, does so on these).
    fn step(&mut self, batch: Batch, iteration: u64, waited: f64, logged: bool) -> Result<f64>;
    /// The `--log-every` line after `iteration`, over `window` (which includes that step); `None` logs nothing
    /// (e.g. where the validation line of the same iteration says more).
    fn log_line(&mut self, iteration: u64, window: &LogWindow) -> Result<Option<String>>;
    /// Ends a validation window after `iteration`: validates, writes the checkpoint and logs what it found.
    /// Returns the suffix of the progress message until the next window (e.g. ` | val acc 61.2%`).
    /// `scheduled` is false for the window a stop signal adds between the cadence's windows: a job whose
    /// validation selects weights (train's best model) then only writes its checkpoint, so an interrupted and
    /// resumed run selects the same weights as an uninterrupted one.
    fn end_window(&mut self, iteration: u64, scheduled: bool, progress: &mut dyn Progress) -> Result<String>;
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The last iteration (`Cadence::iters`) is done, or the loader ran dry.
    Done,
    /// `--max-time` was reached.
    MaxTime,
    /// A stop signal (its number) arrived.
    Signal(i32),
}

/// Where the loop ended and why.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub iteration: u64,
    pub stop: Stop,
}

/// Runs `job` over `batches` from iteration `start` to `cadence.iters` as one progress phase; every
/// `log.txt` line goes through `log(progress, line)`. Errors of a step, a batch or a window end the loop.
pub fn run(
    cadence: &Cadence,
    start: u64,
    batches: impl IntoIterator<Item = Result<Batch>>,
    job: &mut dyn Job,
    progress: &mut dyn Progress,
    log: &mut dyn FnMut(&mut dyn Progress, &str) -> Result<()>,
) -> Result<Outcome> {
    install_stop_handler();
    progress.start(cadence.iters, "iters");
    progress.set_position(start.min(cadence.iters));
    let wall = Instant::now();
    let mut iteration = start;
    let mut suffix = String::new();
    // The `--log-every` window: loss sum, steps, and when it began.
    let mut window = (0.0, 0u64, Instant::now());
    let mut stop = Stop::Done;
    let mut batches = batches.into_iter();
    loop {
        let waited = Instant::now();
        let Some(batch) = batches.next() else { break };
        let waited = waited.elapsed().as_secs_f64();
        let batch = batch?;
        iteration += 1;
        let logged = cadence.log_every > 0 && iteration.is_multiple_of(cadence.log_every);
        let loss = job.step(batch, iteration, waited, logged)?;
        window = (window.0 + loss, window.1 + 1, window.2);
        if logged {
            let per_iter = window.2.elapsed().as_secs_f64() / window.1 as f64;
            let to_end = per_iter * cadence.iters.saturating_sub(iteration) as f64;
            let to_limit = cadence.max_time.map_or(f64::INFINITY, |m| m.saturating_sub(wall.elapsed()).as_secs_f64());
            let w = LogWindow { mean_loss: window.0 / window.1 as f64, secs_per_iter: per_iter, eta_secs: to_end.min(to_limit) };
            if let Some(line) = job.log_line(iteration, &w)? {
                log(progress, &line)?;
            }
            window = (0.0, 0, Instant::now());
        }
        progress.set_position(iteration);
        progress.message(&format!("loss {loss:.4}{suffix}"));

        if let Some(sig) = stop_signal() {
            stop = Stop::Signal(sig);
        } else if cadence.max_time.is_some_and(|m| wall.elapsed() >= m) {
            stop = Stop::MaxTime;
        }
        let at_end = iteration >= cadence.iters || stop != Stop::Done;
        if iteration.is_multiple_of(cadence.valid_every) || at_end {
            let scheduled = iteration.is_multiple_of(cadence.valid_every) || iteration >= cadence.iters || !matches!(stop, Stop::Signal(_));
            suffix = job.end_window(iteration, scheduled, progress)?;
            window = (0.0, 0, Instant::now());
        }
        match stop {
            Stop::Done => {}
            Stop::MaxTime => {
                log(progress, &format!("stopped at iteration {iteration}: --max-time reached (continue with --resume)"))?;
                break;
            }
            Stop::Signal(sig) => {
                log(progress, &format!("stopped at iteration {iteration}: {} received, checkpoint written (continue with --resume)", signal_name(sig)))?;
                break;
            }
        }
        if iteration >= cadence.iters {
            break;
        }
    }
    progress.finish();
    Ok(Outcome { iteration, stop })
}
