//! `ringbus` command-line tool: `ringbus bench [pattern] [flags]` (see `ringbus bench
//! --help`), `ringbus torture [scenario] [flags]` (see `ringbus torture --help`), and the hidden
//! `bench-peer` and `torture-child` subcommands they spawn as their child processes.
//!
//! The command line is parsed by clap: `--help` prints the help and exits 0, a bad command
//! line prints the error and the usage on stderr and exits 2; a failed run exits 1.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod admin;
mod args;
mod bench;
mod completions;
mod logging;
mod net;
mod talk;

use bench::{async_waits, durable as bench_durable, net as bench_net, recovery, torture};

/// The `ringbus` command line.
#[derive(Parser, Debug)]
#[command(
    name = "ringbus",
    about = "The ringbus tool: see, clean and talk to the topics, services and queues under a \
             root; same-run benchmarks against reference transports; and a crash loop that \
             checks nothing is torn, wrong or lost",
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Log the library's rare events (a dead participant reclaimed, a recovery, a torn record,
    /// a dead-letter move, a lock taken over) on stderr; -vv for more
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Same-run latency and throughput of ringbus against reference transports
    #[command(
        long_about = bench::LONG_ABOUT,
        after_long_help = bench::AFTER_LONG_HELP,
        args_conflicts_with_subcommands = true,
        args_override_self = true
    )]
    Bench {
        #[command(subcommand)]
        sub: Option<BenchCommand>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Crash loop: SIGKILLs processes that use ringbus at random moments and checks that
    /// nothing is torn, wrong, lost or hung
    #[command(
        long_about = torture::LONG_ABOUT,
        after_long_help = torture::AFTER_LONG_HELP,
        args_override_self = true
    )]
    Torture(torture::TortureArgs),
    // --- Operating: see what exists under a root and remove what dead processes left (admin/).
    /// Every topic, service and queue under the root, with its participants
    List(admin::list::ListArgs),
    /// One topic, service or queue in detail: participants, lag, depth, counters
    Inspect(admin::inspect::InspectArgs),
    /// Remove segments (and lock files) whose participants are all dead
    Clean(admin::clean::CleanArgs),
    /// Consumer groups of durable topics: `group reset` sets where a group resumes
    Group {
        #[command(subcommand)]
        sub: admin::durable::GroupCommand,
    },
    // --- Talking: byte topics, queues and services from a terminal or a script (talk/).
    /// Publish messages (lines of stdin, a file, or -m) to a byte topic
    Pub(talk::topic::PubArgs),
    /// Print the messages of a byte topic as they arrive
    Sub(talk::topic::SubArgs),
    /// Send messages (lines of stdin, a file, or -m) to a byte queue
    Send(talk::queue::SendArgs),
    /// Receive (and acknowledge, or hand back) messages of a byte queue
    Recv(talk::queue::RecvArgs),
    /// Call a byte service: each line of stdin is a request, each response is printed
    Call(talk::service::CallArgs),
    // --- The network adapter (net/).
    /// Run a network bridge (sidecar): the configured topics and services reach other hosts
    /// through zenoh
    Bridge(net::bridge::BridgeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_long_help = completions::AFTER_LONG_HELP)]
    Completions(completions::CompletionsArgs),
    // --- End of the verbs.
    /// The child process of `bench` (not meant to be run by hand).
    #[command(name = "bench-peer", hide = true)]
    BenchPeer(bench::PeerArgs),
    /// A child process of `torture` (not meant to be run by hand).
    #[command(name = "torture-child", hide = true)]
    TortureChild(torture::ChildArgs),
    /// Host B of `bench net` (not meant to be run by hand).
    #[command(name = "bench-net-peer", hide = true)]
    BenchNetPeer(bench_net::NetPeerArgs),
    /// A group member of `bench durable` (not meant to be run by hand).
    #[command(name = "bench-durable-member", hide = true)]
    BenchDurableMember(bench_durable::MemberArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time to open a durable queue holding 1,000,000 messages after every participant is
    /// gone (same-boot recovery, and the rebuild after a restart)
    #[command(long_about = recovery::LONG_ABOUT, args_override_self = true)]
    Recovery(recovery::RecoveryArgs),
    /// What async waits cost: idle CPU of one awaiting future, and the wake latency of 1,000
    /// parked futures on 1,000 topics beside one
    #[command(name = "async", long_about = async_waits::LONG_ABOUT, args_override_self = true)]
    Async(async_waits::AsyncArgs),
    /// The network adapter beside plain zenoh: pub/sub and rpc round trips and streaming
    /// between two "hosts" on this machine (rows zenoh, ringbus-zenoh sidecar and embedded)
    #[command(long_about = bench_net::LONG_ABOUT, args_override_self = true)]
    Net(bench_net::NetArgs),
    /// Durable topics: append and replay speed, live latency beside an in-memory topic, and
    /// the time to rebalance a consumer group after a member dies
    #[command(long_about = bench_durable::LONG_ABOUT, args_override_self = true)]
    Durable(bench_durable::DurableArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match cli.command {
        Command::Pub(args) => talk::topic::pub_main(&args),
        Command::Sub(args) => talk::topic::sub_main(&args),
        Command::Send(args) => talk::queue::send_main(&args),
        Command::Recv(args) => talk::queue::recv_main(&args),
        Command::Call(args) => talk::service::call_main(&args),
        Command::Bridge(args) => net::bridge::main(&args),
        Command::Completions(args) => completions::main(&args, Cli::command()),
        Command::List(args) => admin::list::main(&args),
        Command::Inspect(args) => admin::inspect::main(&args),
        Command::Clean(args) => admin::clean::main(&args),
        Command::Group { sub } => admin::durable::main(&sub),
        Command::Bench {
            sub: Some(BenchCommand::Recovery(args)),
            ..
        } => recovery::main(&args),
        Command::Bench {
            sub: Some(BenchCommand::Async(args)),
            ..
        } => async_waits::main(&args),
        Command::Bench {
            sub: Some(BenchCommand::Net(args)),
            ..
        } => bench_net::main(&args),
        Command::Bench {
            sub: Some(BenchCommand::Durable(args)),
            ..
        } => bench_durable::main(&args),
        Command::Bench { sub: None, args } => match args.options() {
            Ok(opts) => bench::bench_main(&opts),
            Err(msg) => usage_error("bench", &msg),
        },
        Command::Torture(args) => torture::torture_main(&args.options()),
        Command::BenchPeer(args) => bench::peer_main(&args),
        Command::TortureChild(args) => torture::child_main(&args),
        Command::BenchNetPeer(args) => bench_net::peer_main(&args),
        Command::BenchDurableMember(args) => bench_durable::member_main(&args),
    }
}

/// Reports a command line of `ringbus <sub>` that clap accepted but the subcommand cannot
/// run (e.g. a transport the pattern does not have) as clap reports usage errors: the
/// message and the usage on stderr, exit code 2.
pub(crate) fn usage_error(sub: &str, msg: &str) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let sub = cmd.find_subcommand_mut(sub).expect("a subcommand of Cli");
    sub.error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringbus").chain(line.split_whitespace()))
            .map(|cli| cli.command)
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_readme_commands_parse() {
        let Command::Bench { sub: None, args } = parse("bench").unwrap() else {
            panic!("bench")
        };
        let o = args.options().unwrap();
        assert_eq!(o.pattern, bench::transport::Pattern::PubSub);
        let Command::Bench { sub: None, args } = parse("bench rpc --sizes 64 --rounds 3").unwrap()
        else {
            panic!("bench rpc")
        };
        let o = args.options().unwrap();
        assert_eq!(o.pattern, bench::transport::Pattern::Rpc);
        assert_eq!((o.sizes, o.rounds), (vec![64], 3));
        let Command::Torture(args) = parse("torture all --trials 50 --seed 1 --json").unwrap()
        else {
            panic!("torture")
        };
        let o = args.options();
        assert_eq!(
            (o.scenarios.len(), o.trials, o.seed, o.json),
            (5, 50, 1, true)
        );
        let Command::Bench {
            sub: Some(BenchCommand::Recovery(_)),
            ..
        } = parse("bench recovery --json --messages 1000 --rounds 2 --cold").unwrap()
        else {
            panic!("bench recovery")
        };
    }

    #[test]
    fn a_bad_command_line_is_a_usage_error() {
        for line in [
            "bench --bogus",
            "bench --rounds 0",
            "bench --sizes 4",
            "bench nope",
            "bench pubsub extra",
            "bench recovery --msgs 3",
            "bench recovery --messages 16777217",
            "torture --trials",
            "torture bogus",
            "",
            "nope",
        ] {
            let e = parse(line).expect_err(line);
            assert_eq!(e.exit_code(), 2, "{line}: {e}");
        }
        assert_eq!(parse("--help").unwrap_err().exit_code(), 0);
        assert_eq!(parse("bench --help").unwrap_err().exit_code(), 0);
    }

    #[test]
    fn the_hidden_children_parse_their_spawn_words() {
        let Command::BenchPeer(_) =
            parse("bench-peer --key rb-bench-1 --dir /tmp/x --parent 12 --cpu 1").unwrap()
        else {
            panic!("bench-peer")
        };
        assert!(
            parse("bench-peer --dir /tmp/x").is_err(),
            "--key is required"
        );
        let Command::TortureChild(_) =
            parse("torture-child topic publisher slot=0 inc=1 parent=2 seed=3").unwrap()
        else {
            panic!("torture-child")
        };
    }

    #[test]
    fn the_help_keeps_the_documented_text() {
        let mut cmd = Cli::command();
        let bench = cmd.find_subcommand_mut("bench").unwrap();
        let help = bench.render_long_help().to_string();
        for text in [
            "--transports",
            "ringbus-blocking",
            "tokio-uds",
            "ringbus-async",
            "ringbus-async-parked",
            "x floor",
            "recovery",
            "--no-pin",
        ] {
            assert!(help.contains(text), "bench --help lacks {text}:\n{help}");
        }
        let torture = cmd.find_subcommand_mut("torture").unwrap();
        let help = torture.render_long_help().to_string();
        for text in ["durable-queue", "Columns:", "--seed"] {
            assert!(help.contains(text), "torture --help lacks {text}:\n{help}");
        }
    }
}
