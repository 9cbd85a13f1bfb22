//! How a talking verb is stopped: Ctrl-C (SIGINT), SIGTERM or SIGHUP set a flag instead of
//! killing the process, and the verb's waits notice it, so that the verb drops its handles (it
//! leaves the topic, queue or service: no dead participant is left in the segment) and exits 0.
//!
//! Every wait of a verb is cut into slices of at most [`SLICE`] with the flag checked between
//! them ([`Wait`]), and input lines are read on a helper thread ([`Lines`]) whose channel is
//! waited on the same way (a `read` of stdin blocked when the signal arrives is restarted by
//! `SA_RESTART`, so the main thread could not notice the flag while in it).

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The longest a verb waits before it looks at the stop flag again.
pub const SLICE: Duration = Duration::from_millis(50);

/// Set once SIGINT, SIGTERM or SIGHUP arrived.
#[derive(Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
}

impl Stop {
    /// Installs the handlers of SIGINT, SIGTERM and SIGHUP: the first sets the flag, a second
    /// (while the flag is set) exits at once with status 1.
    pub fn install() -> io::Result<Stop> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            // Registered first, so it runs before the flag is set by the same signal: it sees
            // the flag set only from a previous signal.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&flag))?;
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Stop { flag })
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        // Relaxed: a flag; nothing else is published with it (the handler only sets it).
        self.flag.load(Ordering::Relaxed)
    }

    /// A wait of up to `timeout` (for ever if `None`), cut into slices.
    pub fn wait(&self, timeout: Option<Duration>) -> Wait<'_> {
        Wait {
            stop: self,
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
        }
    }
}

/// A wait in slices: ask [`Wait::slice`] before each, and wait at most the duration it gives.
pub struct Wait<'s> {
    stop: &'s Stop,
    deadline: Option<Instant>,
}

/// What to do next in a [`Wait`].
pub enum Slice {
    /// Wait at most this long, then ask again.
    Wait(Duration),
    /// The whole timeout passed.
    TimedOut,
    /// A stop was asked for: leave and exit 0.
    Stopped,
}

impl Wait<'_> {
    /// The next slice (the stop is checked first, then the deadline).
    pub fn slice(&self) -> Slice {
        if self.stop.requested() {
            return Slice::Stopped;
        }
        match self.deadline {
            None => Slice::Wait(SLICE),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Slice::Wait(left.min(SLICE)),
                _ => Slice::TimedOut,
            },
        }
    }
}

impl Wait<'_> {
    /// Calls `receive(slice)` slice by slice until it returns something other than a slice's
    /// own timeout (`sliced` tells which errors those are): `Ok` with what it returned, or the
    /// slice that ended the wait first (`TimedOut` or `Stopped`).
    pub fn receive<T, E>(
        &self,
        mut receive: impl FnMut(Duration) -> Result<T, E>,
        sliced: impl Fn(&E) -> bool,
    ) -> Result<Result<T, E>, Slice> {
        loop {
            match self.slice() {
                Slice::Wait(slice) => match receive(slice) {
                    Err(e) if sliced(&e) => {}
                    got => return Ok(got),
                },
                end => return Err(end),
            }
        }
    }
}

/// Input read on a helper thread, one item at a time: lines (or the whole input) or the error
/// that ended the reading.
pub struct Lines {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
}

impl Lines {
    /// Starts reading `reader` (named `what` in errors) on a helper thread: one item per line
    /// (without its `\n`), or the whole input as one item. The thread ends at the end of input
    /// or an error; if the verb stops first, it is left blocked in its read and ends with the
    /// process.
    pub fn spawn(input: Box<dyn Read + Send>, whole: bool, limit: usize, what: String) -> Lines {
        // One line ahead at most: reading does not run far ahead of sending.
        let (tx, rx) = mpsc::sync_channel(1);
        thread::spawn(move || {
            let mut reader = BufReader::new(input);
            let err = |e: io::Error| Err(format!("reading {what}: {e}"));
            let too_long = || {
                Err(format!(
                    "{what}: a message longer than {limit} bytes, the largest this segment takes: \
                     send shorter lines (or a smaller --whole input)"
                ))
            };
            // Never more than one byte past the limit is read into memory.
            let cap = (limit as u64).saturating_add(1);
            if whole {
                let mut all = Vec::new();
                let read = (&mut reader).take(cap).read_to_end(&mut all);
                let _ = tx.send(match read {
                    Err(e) => err(e),
                    Ok(_) if all.len() > limit => too_long(),
                    Ok(_) => Ok(all),
                });
                return;
            }
            loop {
                let mut line = Vec::new();
                // A line is at most `limit` bytes and its newline.
                match (&mut reader)
                    .take(cap.saturating_add(1))
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if line.len() > limit {
                            let _ = tx.send(too_long());
                            return;
                        }
                        if tx.send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(err(e));
                        return;
                    }
                }
            }
        });
        Lines { rx }
    }

    /// The next item; `Ok(None)` at the end of input or once a stop is asked for.
    pub fn next(&self, stop: &Stop) -> Result<Option<Vec<u8>>, String> {
        loop {
            if stop.requested() {
                return Ok(None);
            }
            match self.rx.recv_timeout(SLICE) {
                Ok(item) => return item.map(Some),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}
