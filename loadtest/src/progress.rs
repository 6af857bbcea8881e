//! Progress while a scenario runs: an indicatif bar on stderr when stderr is a terminal, and
//! plain lines (at most one every [`PLAIN_EVERY`]) when it is not, so that a run whose output
//! goes to a log file (the comparison scripts, CI) still shows where it is.
//!
//! A scenario opens one [`Progress`] per phase (connecting, holding, publishing, the storm),
//! updates it from its existing once-a-second or per-event loop with [`Progress::set`], prints
//! lasting lines (checkpoints, phase results) with [`Progress::note`] and ends the phase with
//! [`Progress::finish`]. Nothing here measures anything: progress output never feeds a report.

use std::borrow::Cow;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a hidden bar (stderr is not a terminal) prints a plain progress line.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Redraws per second of a visible bar.
const REFRESH_HZ: u8 = 4;

/// One phase of a scenario: a bar with a known total (`phase`) or a spinner (`spinner`).
pub struct Progress {
    bar: ProgressBar,
    name: String,
    /// When a hidden bar last printed a plain line.
    last_plain: Mutex<Option<Instant>>,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("name", &self.name)
            .field("position", &self.bar.position())
            .field("length", &self.bar.length())
            .finish()
    }
}

impl Progress {
    /// A bar for a phase that counts up to `total` (connections, messages, devices).
    pub fn phase(name: &str, total: u64) -> Progress {
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        Self::new(
            name,
            ProgressBar::with_draw_target(Some(total), target()),
            style,
        )
    }

    /// A spinner for a phase without a count (holding, draining, waiting for the server).
    pub fn spinner(name: &str) -> Progress {
        let style =
            ProgressStyle::with_template("{prefix:>12} [{elapsed_precise}] {spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let p = Self::new(name, ProgressBar::with_draw_target(None, target()), style);
        p.bar
            .enable_steady_tick(Duration::from_millis(1000 / u64::from(REFRESH_HZ)));
        p
    }

    fn new(name: &str, bar: ProgressBar, style: ProgressStyle) -> Progress {
        bar.set_style(style);
        bar.set_prefix(name.to_owned());
        Progress {
            bar,
            name: name.to_owned(),
            last_plain: Mutex::new(None),
        }
    }

    /// Sets the count reached so far and the message after the bar (rates, failures, …).
    pub fn set(&self, position: u64, message: impl Into<Cow<'static, str>>) {
        self.bar.set_position(position);
        self.bar.set_message(message);
        if self.bar.is_hidden() {
            self.plain(false);
        }
    }

    /// Updates the message only.
    pub fn message(&self, message: impl Into<Cow<'static, str>>) {
        self.set(self.bar.position(), message);
    }

    /// Prints a lasting line above the bar (or on stderr when the bar is hidden).
    pub fn note(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("  {}", line.as_ref());
        } else {
            self.bar.println(format!("  {}", line.as_ref()));
        }
    }

    /// Ends the phase, leaving its last state on screen (or one plain line).
    pub fn finish(self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
        if self.bar.is_hidden() {
            self.plain(true);
        } else {
            self.bar.abandon();
        }
    }

    /// One plain line for a hidden bar, at most every [`PLAIN_EVERY`] unless `force`.
    fn plain(&self, force: bool) {
        let mut last = self
            .last_plain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if !force && last.is_some_and(|t| now.duration_since(t) < PLAIN_EVERY) {
            return;
        }
        *last = Some(now);
        let count = match self.bar.length() {
            Some(len) => format!("{}/{}", self.bar.position(), len),
            None => String::new(),
        };
        let msg = self.bar.message();
        let sep = if count.is_empty() || msg.is_empty() {
            ""
        } else {
            " "
        };
        eprintln!(
            "  {} [{:.0} s] {count}{sep}{msg}",
            self.name,
            self.bar.elapsed().as_secs_f64()
        );
    }
}

/// stderr when it is a terminal, hidden otherwise (a hidden bar prints plain lines instead).
fn target() -> ProgressDrawTarget {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr_with_hz(REFRESH_HZ)
    } else {
        ProgressDrawTarget::hidden()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bar_keeps_its_state() {
        // Tests run with stderr captured or redirected: the bar is hidden, the state is kept.
        let p = Progress::phase("connecting", 10);
        p.set(4, "4 established");
        assert_eq!(p.bar.position(), 4);
        assert_eq!(p.bar.message(), "4 established");
        p.message("5 established");
        assert_eq!(p.bar.position(), 4);
        p.note("checkpoint");
        p.finish("done");
        let s = Progress::spinner("holding");
        s.message("…");
        assert_eq!(s.bar.length(), None);
        s.finish("held");
    }
}
