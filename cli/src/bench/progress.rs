//! Progress of the long runs (`bench`, `bench recovery`, `torture`) on stderr, never stdout:
//! a progress bar (indicatif) when stderr is a terminal, otherwise a plain line at most every
//! [`PLAIN_EVERY`] (so a log of a long run shows it is alive, and a short run prints nothing).
//!
//! Updates come between rounds or trials only, from the thread that runs them: the bar has
//! no steady tick (no thread of its own that could wake during a measured round), so it is
//! redrawn when it is updated and never inside a measured loop.
//!
//! One progress at a time is current (a process-wide slot): [`advance`] lets code that has no
//! handle (the torture harness's end of a trial) move it, and [`note`] prints a line above
//! the bar instead of through it.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Least time between two plain progress lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// What is shown of the current progress.
enum Shown {
    Bar(ProgressBar),
    Plain {
        what: String,
        unit: &'static str,
        total: u64,
        done: u64,
        start: Instant,
        last: Instant,
    },
}

static CURRENT: Mutex<Option<Shown>> = Mutex::new(None);

fn with_current(f: impl FnOnce(&mut Option<Shown>)) {
    // A panic elsewhere while holding the lock only poisons progress display: go on.
    let mut slot = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut slot);
}

/// The current progress while it lives (dropping it clears the bar).
#[must_use = "the progress ends when this is dropped"]
pub struct Progress(());

impl Progress {
    /// Starts showing `total` steps of `what` (e.g. `ringbus bench: latency`), counted in
    /// `unit` (e.g. `rounds`); replaces the current progress, if any.
    pub fn start(what: impl Into<String>, total: u64, unit: &'static str) -> Progress {
        let what = what.into();
        let shown = if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{prefix} [{wide_bar}] {pos}/{len} {msg}, {elapsed} (eta {eta})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            // Styled before it is given a target: its first draw is already the right one.
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
                .with_style(style)
                .with_prefix(what)
                .with_message(unit);
            bar.set_draw_target(ProgressDrawTarget::stderr());
            Shown::Bar(bar)
        } else {
            let now = Instant::now();
            Shown::Plain {
                what,
                unit,
                total,
                done: 0,
                start: now,
                last: now,
            }
        };
        with_current(|slot| {
            if let Some(Shown::Bar(old)) = slot.replace(shown) {
                old.finish_and_clear();
            }
        });
        Progress(())
    }

    /// Adds `n` steps done.
    pub fn inc(&self, n: u64) {
        advance(n);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        with_current(|slot| {
            if let Some(Shown::Bar(bar)) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}

fn set_done(done: u64) {
    with_current(|slot| match slot {
        Some(Shown::Bar(bar)) => bar.set_position(done),
        Some(Shown::Plain {
            what,
            unit,
            total,
            done: d,
            start,
            last,
        }) => {
            *d = done;
            if last.elapsed() >= PLAIN_EVERY {
                *last = Instant::now();
                eprintln!(
                    "{what}: {done}/{total} {unit} ({:.0} s)",
                    start.elapsed().as_secs_f64()
                );
            }
        }
        None => {}
    });
}

/// Adds `n` steps to the current progress, if there is one.
pub fn advance(n: u64) {
    let mut done = None;
    with_current(|slot| {
        done = match slot {
            Some(Shown::Bar(bar)) => Some(bar.position() + n),
            Some(Shown::Plain { done, .. }) => Some(*done + n),
            None => None,
        };
    });
    if let Some(done) = done {
        set_done(done);
    }
}

/// Prints `line` on stderr, above the progress bar if one is shown.
pub fn note(line: &str) {
    let mut printed = false;
    with_current(|slot| {
        if let Some(Shown::Bar(bar)) = slot {
            bar.suspend(|| eprintln!("{line}"));
            printed = true;
        }
    });
    if !printed {
        eprintln!("{line}");
    }
}
