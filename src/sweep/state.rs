//! A job's record (`jobs/<stage>/<index>.json`, written atomically after every attempt) and the state
//! `status`, the executors and `run-one` read from the files: done, running, failed, stopped, ready, waiting.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{claim::Claim, Job, Sweep};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Exit 0 and the result file exists.
    Done,
    /// Ended by a stop signal after checkpointing (exit 128 + SIGTERM or SIGINT): resumes on the next run.
    Stopped,
    Failed,
}

/// The last attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub stage: String,
    pub index: usize,
    pub outcome: Outcome,
    /// The command's exit status (None when it was killed by a signal it did not catch).
    pub exit_code: Option<i32>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub host: String,
    /// Unix seconds.
    pub started: f64,
    pub finished: f64,
    /// The command line run (with resume arguments when it resumed).
    pub command: Vec<String>,
    pub resumed: bool,
    /// Why it failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds between taking the claim and starting the command, and spent writing this record (the sweep
    /// machinery's own cost per job).
    pub overhead_start_s: f64,
    /// Slurm's job id and restart count, when run under Slurm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<String>,
}

/// A job's state, from its record, its claim and its result file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    Running,
    Failed,
    Stopped,
    /// Its needs are done: it can start.
    Ready,
    /// A stage it needs is not done.
    Waiting,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Done => "done",
            State::Running => "running",
            State::Failed => "failed",
            State::Stopped => "stopped",
            State::Ready => "ready",
            State::Waiting => "waiting",
        }
    }
}

pub fn read_record(sweep: &Sweep, job: &Job) -> Result<Option<Record>> {
    let path = sweep.job_base(job).with_extension("json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a job record", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn write_record(sweep: &Sweep, record: &Record, job: &Job) -> Result<()> {
    let path = sweep.job_base(job).with_extension("json");
    crate::io::write_atomic(&path, serde_json::to_string_pretty(record)?.as_bytes())
}

/// True when the job's result file exists (the definition of done; a record says how it got there).
pub fn is_done(sweep: &Sweep, job: &Job) -> bool {
    result_path(sweep, job).is_file()
}

/// The result path, relative paths taken from the sweep's working directory.
pub fn result_path(sweep: &Sweep, job: &Job) -> std::path::PathBuf {
    sweep.workdir.join(&job.result)
}

/// The state of every job, in manifest order.
pub fn states(sweep: &Sweep) -> Result<Vec<State>> {
    let mut own = Vec::with_capacity(sweep.jobs.len());
    for job in &sweep.jobs {
        let s = if is_done(sweep, job) {
            State::Done
        } else if Claim::is_held(&sweep.job_base(job).with_extension("lock")) {
            State::Running
        } else {
            match read_record(sweep, job)?.map(|r| r.outcome) {
                Some(Outcome::Failed) => State::Failed,
                Some(Outcome::Stopped) => State::Stopped,
                // A record says done but the result is gone: it has to run again.
                Some(Outcome::Done) | None => State::Ready,
            }
        };
        own.push(s);
    }
    let stage_done = |name: &str| sweep.jobs.iter().zip(&own).filter(|(j, _)| j.stage == name).all(|(_, s)| *s == State::Done);
    Ok(sweep
        .jobs
        .iter()
        .zip(&own)
        .map(|(job, &s)| {
            let needs = &sweep.stage(&job.stage).map(|st| st.needs.clone()).unwrap_or_default();
            if matches!(s, State::Ready | State::Stopped | State::Failed) && !needs.iter().all(|n| stage_done(n)) {
                State::Waiting
            } else {
                s
            }
        })
        .collect())
}

/// The last `n` lines of a log file ("" when it does not exist).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    // Progress bars redraw with carriage returns: keep what the last redraw left on each line.
    let lines: Vec<&str> = text.lines().map(|l| l.rsplit('\r').next().unwrap_or(l)).filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time in Unix seconds (UTC; the civil-from-days algorithm).
pub fn rfc3339(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn now_rfc3339() -> String {
    rfc3339(now_unix())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        // date -u -d @0 / @951782400 / @1796515200 +%FT%TZ
        assert_eq!(super::rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_515_200.5), "2026-12-06T00:00:00Z");
    }
}
