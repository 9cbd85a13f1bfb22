//! `ringbus bridge --config FILE`: a bridge as a sidecar process. It runs until SIGINT, SIGTERM
//! or SIGHUP, then withdraws its exports, leaves the segments it joined and exits 0; a second
//! signal exits at once (talk/stop.rs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringbus_zenoh::{Bridge, BridgeConfig, Stats};
use serde_json::json;

use crate::args::{fail, RootArgs};
use crate::talk::stop::{Slice, Stop};

/// `ringbus bridge`.
#[derive(clap::Args, Debug)]
#[command(after_help = "The configuration file is JSON5, for example:\n\n\
{\n  zenoh: { mode: \"peer\", listen: [\"tcp/0.0.0.0:7447\"], connect: [\"tcp/10.0.0.2:7447\"] },\n  \
topics: { export: [\"prices\"], import: [\"orders-*\"] },\n  \
services: { export: [\"quote\"], import: [] },\n}\n\n\
Nothing crosses the network unless a pattern names it. Other keys: zenoh.tls {root_ca, \
certificate, private_key, mutual}, zenoh.lease_ms, zenoh.multicast_scouting, prefix (of the \
zenoh keys, default \"ringbus\"). See ARCHITECTURE.md, \"The network bridge\".")]
pub struct BridgeArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// The bridge's configuration (JSON5)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Print the bridge's counters on stderr this often (e.g. 10s; default: only at exit)
    #[arg(long, value_name = "DURATION", value_parser = crate::talk::parse_duration)]
    pub stats_every: Option<Duration>,
    /// At exit, print the counters as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

fn stats_json(s: &Stats) -> serde_json::Value {
    json!({
        "exported": s.exported,
        "skipped_relayed": s.skipped_relayed,
        "imported": s.imported,
        "dropped_backpressure": s.dropped_backpressure,
        "lost_upstream": s.lost_upstream,
        "dropped_malformed": s.dropped_malformed,
        "dropped_mismatch": s.dropped_mismatch,
        "dropped_not_ready": s.dropped_not_ready,
        "calls_served": s.calls_served,
        "calls_relayed": s.calls_relayed,
        "calls_failed": s.calls_failed,
        "queue_accepted": s.queue_accepted,
        "queue_lent": s.queue_lent,
        "queue_acked": s.queue_acked,
        "queue_forwarded": s.queue_forwarded,
        "queue_received": s.queue_received,
        "queue_refused": s.queue_refused,
    })
}

/// Runs `ringbus bridge`.
pub fn main(args: &BridgeArgs) -> ExitCode {
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("cannot install the signal handlers: {e}")),
    };
    let config = match BridgeConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let node = match args.root.node() {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let bridge = match Bridge::start(&node, config) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    eprintln!(
        "ringbus bridge {} running for {} (Ctrl-C to stop)",
        bridge.zid(),
        args.root.dir().display()
    );
    // Nothing to do here but wait for the stop: the bridge runs on its own threads.
    let wait = stop.wait(None);
    let mut last = Instant::now();
    while let Slice::Wait(slice) = wait.slice() {
        std::thread::sleep(slice);
        if args
            .stats_every
            .is_some_and(|every| last.elapsed() >= every)
        {
            eprintln!("{}", stats_json(&bridge.stats()));
            last = Instant::now();
        }
    }
    let stats = bridge.stats();
    drop(bridge);
    if args.json {
        println!("{}", stats_json(&stats));
    } else {
        eprintln!("ringbus bridge stopped: {}", stats_json(&stats));
    }
    ExitCode::SUCCESS
}
