//! `ringbus` command-line tool: `ringbus bench [pattern] [flags]` (see `ringbus bench
//! --help`) and the hidden `bench-peer` subcommand the benchmark spawns as its peer.

#[cfg(not(loom))]
use std::process::ExitCode;

#[cfg(not(loom))]
use ringbus::bench;

#[cfg(not(loom))]
const USAGE: &str =
    "usage: ringbus bench [pubsub|rpc|queue] [flags]   (ringbus bench --help for flags)";

#[cfg(not(loom))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench::bench_main(&args[1..]),
        // Hidden: the child process of `bench`; not meant to be run by hand.
        Some("bench-peer") => bench::peer_main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Loom builds model the rings only; the tool is not built for them.
#[cfg(loom)]
fn main() {}
