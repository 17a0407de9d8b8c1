//! Progress reporting for long library jobs (training, scoring).
//!
//! Owns the [`Progress`] trait and its no-op [`Silent`] implementation. Library code reports what it is
//! doing through a `&mut dyn Progress` handed in by the caller and never draws anything itself; the command
//! line implements the trait with terminal progress bars (`cli::progress`). Foundation layer: depends on
//! nothing else in the crate.

/// Receives progress from a long job. One job runs one phase at a time: [`start`](Progress::start), then any
/// number of position updates, messages and notes, then [`finish`](Progress::finish).
///
/// Implementations must not fail or block for long: progress is advisory and the job does not wait on it.
pub trait Progress {
    /// A phase of `total` steps begins; `unit` names the steps in the plural ("iters", "images").
    fn start(&mut self, total: u64, unit: &str);
    /// `done` steps of the current phase are complete (absolute position).
    fn set_position(&mut self, done: u64);
    /// `n` more steps of the current phase are complete.
    fn advance(&mut self, n: u64);
    /// A short status shown beside the progress (e.g. the current loss); replaces the previous one.
    fn message(&mut self, msg: &str);
    /// A line of text for the user (e.g. a log line), kept visible after the phase ends.
    fn note(&mut self, line: &str);
    /// The current phase is over; whatever was drawn for it is removed.
    fn finish(&mut self);
}

/// A duration for people: `45s`, `12m30s`, `2h05m` (negative or non-finite as `0s`).
pub fn duration(secs: f64) -> String {
    let s = if secs.is_finite() { secs.max(0.0).round() as u64 } else { 0 };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Reports nothing: for tests and library users that do not want progress output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _total: u64, _unit: &str) {}
    fn set_position(&mut self, _done: u64) {}
    fn advance(&mut self, _n: u64) {}
    fn message(&mut self, _msg: &str) {}
    fn note(&mut self, _line: &str) {}
    fn finish(&mut self) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(super::duration(44.6), "45s");
        assert_eq!(super::duration(750.0), "12m30s");
        assert_eq!(super::duration(7500.0), "2h05m");
        assert_eq!(super::duration(f64::NAN), "0s");
    }
}
