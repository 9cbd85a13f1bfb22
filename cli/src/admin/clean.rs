//! `ringbus clean`: removes what dead processes left.

use std::path::PathBuf;
use std::process::ExitCode;

use ringbus::admin::{self, Outcome};
use serde_json::json;

use super::show;
use crate::args::{fail, RootArgs};

/// `ringbus clean`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Removes each segment whose registered participants are all dead (or \
    whose creator died before finishing it), with its lock file, and lock files whose segment \
    is gone. Each is judged again under its lock: a live segment is never touched, nor one \
    being opened right now (busy), nor a durable queue (its messages are on disk; the next \
    open recovers it), nor a file that is not a segment of this ringbus (unreadable)."
)]
pub struct CleanArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Also clean this directory (a durable queue's directory: only lock files can go there);
    /// repeatable
    #[arg(long, value_name = "DIR")]
    pub dir: Vec<PathBuf>,
    /// Change nothing: say what would be removed
    #[arg(long)]
    pub dry_run: bool,
    /// JSON on stdout: {"files": [{"path", "kind", "outcome", "reason"}]}
    #[arg(long)]
    pub json: bool,
}

fn outcome_str(o: &Outcome) -> &'static str {
    match o {
        Outcome::Removed => "removed",
        Outcome::WouldRemove => "would remove",
        Outcome::Live => "live",
        Outcome::Durable => "durable",
        Outcome::Busy => "busy",
        Outcome::Unreadable(_) => "unreadable",
        Outcome::Failed(_) => "failed",
    }
}

/// Runs `ringbus clean`.
pub fn main(args: &CleanArgs) -> ExitCode {
    let mut dirs = vec![args.root.dir()];
    dirs.extend(args.dir.iter().cloned());
    let mut done = Vec::new();
    for dir in &dirs {
        match admin::clean(dir, args.dry_run) {
            Ok(d) => done.extend(d),
            Err(e) => return fail(format_args!("cannot clean {}: {e}", dir.display())),
        }
    }
    let failed = done
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .count();
    if args.json {
        let files: Vec<_> = done
            .iter()
            .map(|c| {
                json!({
                    "path": c.path,
                    "kind": c.kind.map(|k| k.as_str()).unwrap_or("lock"),
                    "outcome": outcome_str(&c.outcome),
                    "reason": match &c.outcome {
                        Outcome::Unreadable(w) | Outcome::Failed(w) => Some(w),
                        _ => None,
                    },
                })
            })
            .collect();
        println!("{}", json!({ "dry_run": args.dry_run, "files": files }));
        return status(failed);
    }
    let mut rows = vec![vec!["OUTCOME".to_string(), "KIND".into(), "FILE".into()]];
    for c in &done {
        let mut row = vec![
            outcome_str(&c.outcome).to_string(),
            c.kind.map(|k| k.as_str()).unwrap_or("lock").to_string(),
            c.path.display().to_string(),
        ];
        // The reason last, so that it does not widen the other columns.
        if let Outcome::Unreadable(why) | Outcome::Failed(why) = &c.outcome {
            row.push(format!("({why})"));
        }
        rows.push(row);
    }
    let removed = done
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Removed | Outcome::WouldRemove))
        .count();
    if done.is_empty() {
        eprintln!("nothing to clean");
    } else {
        print!("{}", show::table(&rows));
        // The summary follows the table, also when both go to one pipe.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        eprintln!(
            "{removed} file(s) {}",
            if args.dry_run {
                "would be removed (dry run: nothing changed)"
            } else {
                "removed"
            }
        );
    }
    status(failed)
}

/// Exit 1 (after the report) if some file could not be cleaned: its row says why.
fn status(failed: usize) -> ExitCode {
    if failed == 0 {
        return ExitCode::SUCCESS;
    }
    crate::args::fail(format_args!(
        "{failed} file(s) could not be cleaned: see their rows for the reason and the fix"
    ))
}
