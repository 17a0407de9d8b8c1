//! The resumable state of `strnas latency build` and `latency pairs`: the measurements taken so far, written
//! atomically beside the output (`<output>.partial.json`) after each one. A run stopped by SIGTERM or Ctrl-C
//! (or killed) continues from it when run again with the same settings; a file from other settings is ignored
//! and replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::build::Timed;

/// Measurements of an unfinished build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Partial {
    /// What the measurements depend on (space, runtime, device, threads, batch, rounds, fit models, strnas).
    pub settings: String,
    pub dispatch: Option<Timed>,
    /// Block key (or chain key, [`super::build::chain_key`]) -> measurement.
    pub blocks: BTreeMap<String, Timed>,
    /// Whole models: name -> calibrated ratio.
    pub models: BTreeMap<String, f64>,
}

/// The partial file of the table written to `output`.
pub fn path_for(output: &Path) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "table.json".into());
    output.with_file_name(format!("{name}.partial.json"))
}

/// What a run's measurements depend on, as recorded in its partial file: `job` (a prefix naming the kind of
/// run and its own settings), then strnas, the space's skeleton, the measurement options and the models.
pub fn settings(job: &str, space: &super::Space, o: &super::Options, models: &[crate::spec::arch::Arch]) -> String {
    format!(
        "{job}strnas {} space {} runtime {:?} quantization {:?} device {:?} threads {} batch {} rounds {} budget {:?} seed {} models {}",
        env!("CARGO_PKG_VERSION"),
        super::space::skeleton_hash(&space.base.spec),
        o.runtime,
        o.int8_weight_bits,
        o.device,
        o.threads,
        o.batch,
        o.rounds,
        o.budget,
        o.seed,
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",")
    )
}

impl Partial {
    /// The measurements at `path` taken with `settings`; empty when there are none or they were taken with
    /// other settings (`note` then says why they are not used).
    pub fn load(path: &Path, settings: &str, note: &mut dyn FnMut(&str)) -> Partial {
        let fresh = Partial { settings: settings.to_string(), ..Default::default() };
        let Ok(text) = std::fs::read_to_string(path) else { return fresh };
        match serde_json::from_str::<Partial>(&text) {
            Ok(p) if p.settings == settings => {
                note(&format!("continuing from {} ({} blocks and {} models measured)", path.display(), p.blocks.len(), p.models.len()));
                p
            }
            Ok(_) => {
                note(&format!("{} was measured with other settings: starting over", path.display()));
                fresh
            }
            Err(e) => {
                note(&format!("{} is unreadable ({e}): starting over", path.display()));
                fresh
            }
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, serde_json::to_string(self)?.as_bytes()).with_context(|| format!("saving progress to {}", path.display()))
    }

    /// Between two measurements: after a stop signal, saves to `path` and returns [`Stopped`] (`total`
    /// measurements in the whole run); otherwise nothing.
    pub fn checkpoint(&self, path: &Path, total: usize) -> Result<()> {
        match crate::signals::stop_signal() {
            Some(signal) => {
                self.save(path)?;
                let done = usize::from(self.dispatch.is_some()) + self.blocks.len() + self.models.len();
                Err(Stopped { signal, partial: path.to_path_buf(), done, total }.into())
            }
            None => Ok(()),
        }
    }
}

/// A build stopped by a signal after saving its measurements.
#[derive(Debug)]
pub struct Stopped {
    pub signal: i32,
    pub partial: PathBuf,
    pub done: usize,
    pub total: usize,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by {} after {} of {} measurements, saved to {} (run the same command again to continue)",
            crate::signals::signal_name(self.signal),
            self.done,
            self.total,
            self.partial.display()
        )
    }
}

impl std::error::Error for Stopped {}
