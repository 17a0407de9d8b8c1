//! Progress bars (indicatif): drawn on a terminal, silent otherwise (CI logs get the summary lines).
//!
//! [`Bars`] implements the library's [`crate::progress::Progress`] so long library jobs (training, scoring)
//! show the same bars as the commands that draw their own.

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

/// A bar over `len` steps; `unit` names the steps ("images", "iters").
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:32.cyan/blue}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}");
    pb.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "));
    pb
}

/// Prints a line above the bar when it is drawn, to stderr otherwise.
pub fn note(pb: &ProgressBar, line: &str) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

/// [`Progress`] drawn as one [`bar`] per phase. Notes go above the bar on a terminal, to stderr otherwise
/// (also outside a phase).
#[derive(Default)]
pub struct Bars {
    pb: Option<ProgressBar>,
}

impl Bars {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Progress for Bars {
    fn start(&mut self, total: u64, unit: &str) {
        if let Some(old) = self.pb.replace(bar(total, unit)) {
            old.finish_and_clear();
        }
    }
    fn set_position(&mut self, done: u64) {
        if let Some(pb) = &self.pb {
            pb.set_position(done);
        }
    }
    fn advance(&mut self, n: u64) {
        if let Some(pb) = &self.pb {
            pb.inc(n);
        }
    }
    fn message(&mut self, msg: &str) {
        if let Some(pb) = &self.pb {
            pb.set_message(msg.to_string());
        }
    }
    fn note(&mut self, line: &str) {
        match &self.pb {
            Some(pb) => note(pb, line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&mut self) {
        if let Some(pb) = self.pb.take() {
            pb.finish_and_clear();
        }
    }
}
