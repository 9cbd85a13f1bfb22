//! Talking to byte topics, queues and services from a terminal or a shell script: `pub`, `sub`,
//! `send`, `recv` and `call`.
//!
//! What the verbs share lives here: where messages come from ([`InputArgs`]: lines of stdin or
//! of a file, the whole input as one message, or `-m` arguments; text or hex), how received
//! messages are printed ([`OutputArgs`], [`Printer`]: text, hex or JSON lines), the shape a
//! verb gives a segment it creates ([`CreateArgs`]), and durations (`500ms`, `2s`).

pub mod queue;
pub mod service;
pub mod stop;
pub mod topic;

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use stop::{Lines, Slice, Stop};

/// Where the messages a verb sends come from.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InputArgs {
    /// Send TEXT as a message (repeatable); stdin is then not read
    #[arg(short, long = "message", value_name = "TEXT")]
    pub messages: Vec<String>,
    /// Read the messages from FILE instead of stdin
    #[arg(long, value_name = "FILE", conflicts_with = "messages")]
    pub file: Option<PathBuf>,
    /// Send the whole input (stdin or FILE) as one message, bytes as they are, instead of one
    /// message per line
    #[arg(long, conflicts_with = "messages")]
    pub whole: bool,
}

impl InputArgs {
    /// Calls `each` with every message, in order, as they are read (a line is sent when it is
    /// typed). A line is a message without its `\n`; an empty line is an empty message. With
    /// `hex`, each message is written in hex digits (whitespace ignored). Once `stop` is asked
    /// for, no further message is taken (the input is read on a helper thread, so a read that
    /// waits for stdin does not hold the stop up) and this returns `Ok`.
    ///
    /// A message is at most `max` bytes: a longer line (or whole input) is an error once
    /// `max + 1` bytes of it are read (so `--file /dev/zero` fails at once instead of filling
    /// memory).
    pub fn for_each(
        &self,
        hex: bool,
        max: usize,
        stop: &Stop,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let decode = |raw: &[u8]| -> Result<Vec<u8>, String> {
            if hex {
                from_hex(raw)
            } else {
                Ok(raw.to_vec())
            }
        };
        if !self.messages.is_empty() {
            for m in &self.messages {
                if stop.requested() {
                    break;
                }
                each(&decode(m.as_bytes())?)?;
            }
            return Ok(());
        }
        let (input, what): (Box<dyn io::Read + Send>, String) = match &self.file {
            Some(path) => (
                Box::new(File::open(path).map_err(|e| {
                    format!("cannot read {}: {e}; name a readable file", path.display())
                })?),
                path.display().to_string(),
            ),
            None => (Box::new(io::stdin()), "stdin".to_string()),
        };
        // Hex takes two digits a byte, and whitespace between them.
        let limit = if hex {
            max.saturating_mul(3).saturating_add(2)
        } else {
            max
        };
        let lines = Lines::spawn(input, self.whole, limit, what);
        while let Some(raw) = lines.next(stop)? {
            each(&decode(&raw)?)?;
        }
        Ok(())
    }
}

/// Decodes hex digits (whitespace ignored).
pub fn from_hex(raw: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bad = || {
        // At most the first 40 bytes of the input: enough to find it, never a page of it.
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(40)]).into_owned();
        let more = if raw.len() > 40 { "…" } else { "" };
        format!(
            "{shown:?}{more} is not hex: write pairs of hex digits such as \"68 69\", or drop --hex"
        )
    };
    if digits.len() % 2 != 0 {
        return Err(bad());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Lowercase hex of `bytes`, two digits a byte, no separator.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// How received messages are printed.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print each message as hex (one line each)
    #[arg(long)]
    pub hex: bool,
    /// Print each message as a JSON line: its number from 0 ("n"), what the verb knows about it,
    /// its length ("len") and its bytes as text ("text", invalid UTF-8 replaced by U+FFFD), or as
    /// hex ("hex") with --hex
    #[arg(long)]
    pub json: bool,
}

/// One printed JSON line: the message's number, the verb's fields, its length and its bytes.
#[derive(Serialize)]
struct Line<'a, E: Serialize> {
    n: u64,
    #[serde(flatten)]
    extra: E,
    len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

/// Prints received messages on stdout, one a line, flushed at once (a script reading the pipe
/// sees each message when it arrives).
pub struct Printer {
    args: OutputArgs,
    out: io::Stdout,
    /// Messages printed so far.
    pub n: u64,
}

/// Why printing stopped: stdout was closed by its reader (`| head -1`), which ends a verb
/// quietly, or another error.
pub enum PrintError {
    /// The reader of stdout is gone.
    Closed,
    /// Any other write error.
    Failed(io::Error),
}

impl Printer {
    /// A printer in the format `args` picks.
    pub fn new(args: &OutputArgs) -> Printer {
        Printer {
            args: args.clone(),
            out: io::stdout(),
            n: 0,
        }
    }

    /// Prints message `bytes`; `extra` are the verb's JSON fields (a struct, or `()`).
    pub fn print(&mut self, bytes: &[u8], extra: impl Serialize) -> Result<(), PrintError> {
        let mut out = self.out.lock();
        let written = if self.args.json {
            let line = Line {
                n: self.n,
                extra,
                len: bytes.len(),
                text: (!self.args.hex).then(|| String::from_utf8_lossy(bytes)),
                hex: self.args.hex.then(|| to_hex(bytes)),
            };
            serde_json::to_writer(&mut out, &line)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        } else if self.args.hex {
            writeln!(out, "{}", to_hex(bytes))
        } else {
            out.write_all(String::from_utf8_lossy(bytes).as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        };
        self.n += 1;
        match written.and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(PrintError::Closed),
            Err(e) => Err(PrintError::Failed(e)),
        }
    }
}

/// The shape of a segment the verb creates (ignored when it joins an existing one, whose own
/// shape wins).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// If this creates the segment: its capacity in messages, a power of two [default: the
    /// library's, 64 for a topic, 1024 for a queue]
    #[arg(long, value_name = "N")]
    pub capacity: Option<usize>,
    /// If this creates the segment: the largest message in bytes [default: 4096]
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<usize>,
}

/// Parses a duration: a number with a unit `ms`, `s` or `m` (`250ms`, `2s`, `1.5m`); a bare
/// number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let bad = || format!("{s:?} is not a duration: write e.g. 250ms, 2s or 1m");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(v * scale).map_err(|_| bad())
}

/// What ends a receiving verb: `--count` messages, or (with `--timeout`) a wait that found
/// nothing.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UntilArgs {
    /// Exit (0) after N messages
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Give up waiting for the next message after DURATION (250ms, 2s, 1m): exit 1 if fewer than
    /// --count messages (or, without --count, none at all) arrived, else 0 [default: wait for
    /// ever]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

impl UntilArgs {
    /// Whether `got` messages are all that was asked for.
    pub fn done(&self, got: u64) -> bool {
        self.count.is_some_and(|n| got >= n)
    }

    /// How verb `verb` (e.g. `"sub temps"`) on `what` (`"topic temps"`) ends when its wait
    /// ended with `end` after `got` messages: 0 when stopped, else as
    /// [`UntilArgs::timed_out`] judges the timeout.
    pub fn ended(&self, end: Slice, got: u64, what: &str, verb: &str) -> ExitCode {
        if matches!(end, Slice::Stopped) {
            return ExitCode::SUCCESS;
        }
        match self.timed_out(got, what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => crate::args::fail(format_args!("{verb}: {e}")),
        }
    }

    /// The outcome once a wait timed out after `got` messages: `Ok` if that is enough, else the
    /// message naming the problem and the fix.
    pub fn timed_out(&self, got: u64, what: &str) -> Result<(), String> {
        let wait = self.timeout.unwrap_or_default();
        match self.count {
            Some(n) if got < n => Err(format!(
                "{got} of {n} messages from {what} within {wait:?} each; wait longer with \
                 --timeout, or check that something sends"
            )),
            None if got == 0 => Err(format!(
                "no message from {what} within {wait:?}; wait longer with --timeout, or check \
                 that something sends"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "x", "-1s", "1h", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex(b"68 69\n0a"), Ok(b"hi\n".to_vec()));
        assert_eq!(to_hex(b"hi\n"), "68690a");
        assert!(from_hex(b"6").is_err());
        assert!(from_hex(b"zz").is_err());
    }
}
