//! `ringbus` command-line tool: `ringbus bench [pattern] [flags]` (see `ringbus bench
//! --help`), `ringbus torture [scenario] [flags]` (see `ringbus torture --help`), and the hidden
//! `bench-peer` and `torture-child` subcommands they spawn as their child processes.

use std::process::ExitCode;

mod bench;

const USAGE: &str = "\
usage: ringbus bench [pubsub|rpc|queue|recovery] [flags]   (ringbus bench --help for flags)
       ringbus torture [topic|service|queue|durable-queue|all] [--trials N] [--seed S] [--json]
                                                     (ringbus torture --help: what is checked)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench::bench_main(&args[1..]),
        // Hidden: the child process of `bench`; not meant to be run by hand.
        Some("bench-peer") => bench::peer_main(&args[1..]),
        Some("torture") => bench::torture::torture_main(&args[1..]),
        // Hidden: a child process of `torture`.
        Some("torture-child") => bench::torture::child_main(&args[1..]),
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
