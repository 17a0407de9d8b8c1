//! Progress bars (indicatif): drawn on a terminal, silent otherwise (CI logs get the summary lines).

use indicatif::{ProgressBar, ProgressStyle};

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
