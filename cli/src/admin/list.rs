//! `ringbus list`: every topic, service and queue under the root (and in durable queue
//! directories), with its participants.

use std::path::PathBuf;
use std::process::ExitCode;

use ringbus::admin::{self, SegmentInfo};
use serde_json::json;

use super::show;
use crate::args::{fail, RootArgs};

/// `ringbus list`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Columns: KIND, NAME, STATUS (live: a participant is alive; dead: none \
    is, `ringbus clean` removes it; unfinished: its creator is initialising it or died doing \
    so; unreadable: not a segment this ringbus reads), PAYLOAD (type, encoding, size), SHAPE \
    (capacity × largest message), SHM (bytes mapped), PARTICIPANTS (role and pid).\n\
    Nothing is joined or changed: segments are mapped read-only."
)]
pub struct ListArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Also list the durable queues in this directory (the one given to
    /// `QueueBuilder::durable`); repeatable
    #[arg(long, value_name = "DIR")]
    pub dir: Vec<PathBuf>,
    /// One JSON object on stdout: {"segments": [...]} ({"remote": [...]} with --remote)
    #[arg(long)]
    pub json: bool,
    /// List what the bridges of other hosts export instead (their zenoh liveliness tokens),
    /// connecting as the bridge configuration given with --config says
    #[arg(long, requires = "config")]
    pub remote: bool,
    /// A bridge configuration (JSON5, as `ringbus bridge --config`): where to connect
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With --remote: how long to wait for the answers
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::talk::parse_duration)]
    pub wait: std::time::Duration,
}

/// Runs `ringbus list`.
pub fn main(args: &ListArgs) -> ExitCode {
    if args.remote {
        return remote(args);
    }
    let mut dirs = vec![args.root.dir()];
    dirs.extend(args.dir.iter().cloned());
    let mut found: Vec<SegmentInfo> = Vec::new();
    for dir in &dirs {
        match admin::list(dir) {
            Ok(list) => found.extend(list),
            Err(e) => return fail(format_args!("cannot list {}: {e}", dir.display())),
        }
    }
    if args.json {
        let segments: Vec<_> = found.iter().map(|s| show::segment_json(s, None)).collect();
        println!("{}", json!({ "dirs": dirs, "segments": segments }));
        return ExitCode::SUCCESS;
    }
    if found.is_empty() {
        let where_ = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("no topics, services or queues in {where_}");
        return ExitCode::SUCCESS;
    }
    let mut rows = vec![[
        "KIND",
        "NAME",
        "STATUS",
        "PAYLOAD",
        "SHAPE",
        "SHM",
        "PARTICIPANTS",
    ]
    .map(String::from)
    .to_vec()];
    for s in &found {
        rows.push(vec![
            s.kind.to_string(),
            s.name.clone(),
            s.status.as_str().to_string(),
            show::payload(s),
            show::shape(s),
            show::bytes(s.bytes),
            show::participants(s),
        ]);
    }
    print!("{}", show::table(&rows));
    ExitCode::SUCCESS
}

/// `ringbus list --remote`: the exports of other hosts' bridges.
fn remote(args: &ListArgs) -> ExitCode {
    let Some(path) = &args.config else {
        return fail("--remote needs --config FILE");
    };
    let config = match ringbus_zenoh::BridgeConfig::from_file(path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let found = match ringbus_zenoh::list_remote(&config, args.wait) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if args.json {
        let remote: Vec<_> = found
            .iter()
            .map(|e| json!({"kind": e.kind.to_string(), "name": e.name, "bridge": e.bridge}))
            .collect();
        println!("{}", json!({ "remote": remote }));
        return ExitCode::SUCCESS;
    }
    if found.is_empty() {
        eprintln!("no exports found (waited {:?})", args.wait);
        return ExitCode::SUCCESS;
    }
    let mut rows = vec![["KIND", "NAME", "BRIDGE"].map(String::from).to_vec()];
    for e in &found {
        rows.push(vec![e.kind.to_string(), e.name.clone(), e.bridge.clone()]);
    }
    print!("{}", show::table(&rows));
    ExitCode::SUCCESS
}
