//! Progress bars for long operations: shown with rate and ETA when stderr is a
//! terminal, silent in pipes and logs (so output stays machine-readable).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar over a known number of events.
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for `total` events doing `what`; hidden unless stderr is a terminal.
    pub fn new(total: u64, what: &str) -> Progress {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let template = format!("{what:>10} [{{bar:40}}] {{pos}}/{{len}} events, {{per_sec}}, ETA {{eta}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(bar)
    }

    /// Moves to `done` events.
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Adds `done` events.
    pub fn add(&self, done: u64) {
        self.0.inc(done);
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
