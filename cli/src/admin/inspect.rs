//! `ringbus inspect NAME`: one topic, service or queue in detail, once or redrawn (`--watch`).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringbus::admin::{self, SegmentInfo};
use serde_json::json;

use super::show::{self, Rates};
use crate::args::{fail, RootArgs};

/// `ringbus inspect`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Shows, for a topic: its publishers (messages sent) and subscribers \
    (lag: messages not read yet; read and rate: positions read, and per second: one per \
    message, and one per publisher that left); for a service: its servers, \
    clients, calls in flight and timeouts; for a queue: depth (waiting), in flight \
    (unacknowledged), redelivered, dead-lettered, dropped and torn counts, its consumers with \
    their prefetch and, for a durable queue, its log files and disk use.\n\
    Rates are measured over --interval. Nothing is joined or changed: segments are mapped \
    read-only."
)]
pub struct InspectArgs {
    /// The topic, service or queue (every kind with that name is shown)
    pub name: String,
    #[command(flatten)]
    pub root: RootArgs,
    /// Look in this directory instead of the root (a durable queue's or durable topic's
    /// directory)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Redraw every --interval until interrupted, like `top` (with --json: one JSON line each)
    #[arg(long)]
    pub watch: bool,
    /// Seconds over which rates are measured (and between redraws); 0 shows no rates (and
    /// cannot --watch)
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0,
          value_parser = parse_interval)]
    pub interval: f64,
    /// JSON on stdout: {"segments": [...]}
    #[arg(long)]
    pub json: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s} is not a number of seconds in 0..=3600")),
    }
}

/// Runs `ringbus inspect`.
pub fn main(args: &InspectArgs) -> ExitCode {
    let dir = args.dir.clone().unwrap_or_else(|| args.root.dir());
    if super::durable::exists(&dir, &args.name) {
        if args.watch {
            crate::usage_error("inspect", "--watch does not apply to a durable topic");
        }
        return super::durable::inspect(&dir, &args.name, args.json);
    }
    let read = || admin::inspect(&dir, &args.name);
    let mut before = match read() {
        Ok(found) => found,
        Err(ringbus::OpenError::NotFound(_)) => {
            return fail(format_args!(
                "no topic, service or queue named {} in {}: `ringbus list` shows what exists \
                 there (--root DIR or --dir DIR look elsewhere)",
                args.name,
                dir.display()
            ))
        }
        Err(e) => return fail(format_args!("cannot inspect {}: {e}", args.name)),
    };
    let interval = Duration::from_secs_f64(args.interval);
    let mut taken = Instant::now();
    if interval.is_zero() {
        if args.watch {
            crate::usage_error(
                "inspect",
                "--watch redraws every --interval: give one above 0 (e.g. --interval 1)",
            );
        }
        return shown(show(args, &before, None));
    }
    let clear = args.watch && !args.json && std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(interval);
        let now = match read() {
            Ok(found) => found,
            // What was watched is gone: its last participant left (or `clean` removed it).
            Err(ringbus::OpenError::NotFound(_)) => {
                eprintln!(
                    "ringbus: {} is gone from {}: its last participant left, or it was cleaned",
                    args.name,
                    dir.display()
                );
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(format_args!("cannot inspect {}: {e}", args.name)),
        };
        let dt = taken.elapsed();
        taken = Instant::now();
        let rates: Vec<Rates> = now
            .iter()
            .map(|n| {
                before
                    .iter()
                    .find(|b| b.kind == n.kind)
                    .map(|b| Rates::between(b, n, dt))
                    .unwrap_or_default()
            })
            .collect();
        let drawn = (|| {
            if clear {
                // Clear the screen and go home, as `watch` and `top` redraw.
                write!(std::io::stdout(), "\x1b[2J\x1b[H")?;
            }
            show(args, &now, Some(&rates))?;
            std::io::stdout().flush()
        })();
        if drawn.is_err() || !args.watch {
            return shown(drawn);
        }
        before = now;
    }
}

/// The exit status once output ended with `written`: 0 also when the reader of stdout went
/// away (`inspect NAME --watch | head`), 1 on another write error.
fn shown(written: std::io::Result<()>) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("stdout: {e}")),
    }
}

fn show(args: &InspectArgs, found: &[SegmentInfo], rates: Option<&[Rates]>) -> std::io::Result<()> {
    let rate = |i: usize| rates.and_then(|r| r.get(i));
    let mut out = std::io::stdout().lock();
    if args.json {
        let segments: Vec<_> = found
            .iter()
            .enumerate()
            .map(|(i, s)| show::segment_json(s, rate(i)))
            .collect();
        writeln!(
            out,
            "{}",
            json!({ "interval_s": rates.map(|_| args.interval), "segments": segments })
        )?;
    } else {
        for (i, s) in found.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            write!(out, "{}", show::segment_text(s, rate(i)))?;
        }
    }
    out.flush()
}
