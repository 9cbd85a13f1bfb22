//! `ringbus pub NAME` and `ringbus sub NAME`: a byte topic from a terminal or a script.

use std::process::ExitCode;

use ringbus::{ReceiveError, SendError};
use serde::Serialize;

use super::stop::Stop;
use super::{CreateArgs, InputArgs, OutputArgs, PrintError, Printer, UntilArgs};
use crate::args::{fail, RootArgs};

const PUB_AFTER: &str = "\
Each line of stdin (or of --file) is one message, sent as it is read, without its newline; an
empty line is an empty message. With --whole the entire input is one message, bytes as they are.

The topic is created (with --capacity and --max-size) if it does not exist. A topic keeps no
message for a subscriber that is not there yet: start `ringbus sub NAME` first and wait for its
\"subscribed\" line on stderr. With subscribers that fall behind, a send waits for room up to 1 s,
then fails.

Ctrl-C, SIGTERM or SIGHUP end it cleanly: it leaves the topic and exits 0 (a message being sent
is finished first); a second one ends it at once (exit 1).

Examples:
  printf 'a\\nb\\n' | ringbus pub temps
  ringbus pub temps -m 'hello' -m 'world'
  ringbus pub blobs --file image.png --whole";

const SUB_AFTER: &str = "\
Once subscribed, `sub` writes the line \"ringbus: subscribed to topic NAME\" on stderr: a script
starts its publishers after that line. It receives what is sent from then on, and prints each
message on stdout as it arrives: as text (invalid UTF-8 replaced by U+FFFD; use --hex or --json
for binary or multi-line messages), as hex, or as JSON lines
  {\"n\":0,\"publisher\":0,\"len\":5,\"text\":\"hello\"}
where \"publisher\" is the publisher's ring (messages of one publisher arrive in order). Messages
missed because the subscriber fell behind are reported on stderr.

The topic is created (with --capacity and --max-size) if it does not exist.

Exit status: 0 after --count messages (or when stdout is closed); 1 if --timeout passed first
(or on an error); without --count, a --timeout with at least one message received is 0.

Ctrl-C, SIGTERM or SIGHUP end it cleanly: it leaves the topic and exits 0 (a message being
printed is finished first); a second one ends it at once (exit 1).

Examples:
  ringbus sub temps --count 3
  ringbus sub temps --json --timeout 5s";

/// `ringbus pub NAME`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = PUB_AFTER)]
pub struct PubArgs {
    /// The topic's name
    pub name: String,
    #[command(flatten)]
    pub input: InputArgs,
    /// Messages are written in hex ("68 69" or "6869"; whitespace is ignored)
    #[arg(long)]
    pub hex: bool,
    #[command(flatten)]
    pub create: CreateArgs,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `ringbus sub NAME`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = SUB_AFTER)]
pub struct SubArgs {
    /// The topic's name
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub until: UntilArgs,
    #[command(flatten)]
    pub create: CreateArgs,
    #[command(flatten)]
    pub root: RootArgs,
}

/// What `sub --json` tells about a sample besides its bytes.
#[derive(Serialize)]
struct SampleFields {
    publisher: usize,
}

fn builder(
    root: &RootArgs,
    name: &str,
    create: &CreateArgs,
) -> Result<ringbus::TopicBuilder<ringbus::Bytes>, ringbus::OpenError> {
    let mut topic = root.node()?.topic_bytes(name);
    if let Some(n) = create.capacity {
        topic = topic.capacity(n);
    }
    if let Some(n) = create.max_size {
        topic = topic.max_message_size(n);
    }
    Ok(topic)
}

/// A failed send, with what to do about it.
pub fn send_problem(e: &SendError) -> String {
    match e {
        SendError::TooLarge { .. } => {
            format!("{e}: send shorter messages, or create the segment with a larger --max-size")
        }
        SendError::Timeout(_) | SendError::AllSlotsHeld => format!(
            "{e}: a subscriber is not keeping up; stop it (`ringbus inspect` shows its lag) or \
             create the topic with a larger --capacity"
        ),
        _ => e.to_string(),
    }
}

/// Runs `ringbus pub`.
pub fn pub_main(args: &PubArgs) -> ExitCode {
    let name = &args.name;
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("pub {name}: cannot handle signals: {e}")),
    };
    let mut publisher = match builder(&args.root, name, &args.create).and_then(|t| t.publisher()) {
        Ok(p) => p,
        Err(e) => return fail(format_args!("pub {name}: {e}")),
    };
    let max = publisher.max_message_size();
    let sent = args.input.for_each(args.hex, max, &stop, |msg| {
        publisher.send_copy(msg).map_err(|e| send_problem(&e))
    });
    match sent {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("pub {name}: {e}")),
    }
}

/// Runs `ringbus sub`.
pub fn sub_main(args: &SubArgs) -> ExitCode {
    let name = &args.name;
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("sub {name}: cannot handle signals: {e}")),
    };
    let sub = match builder(&args.root, name, &args.create).and_then(|t| t.subscriber()) {
        Ok(s) => s,
        Err(e) => return fail(format_args!("sub {name}: {e}")),
    };
    eprintln!("ringbus: subscribed to topic {name}");
    let mut printer = Printer::new(&args.output);
    while !args.until.done(printer.n) {
        let got = match stop.wait(args.until.timeout).receive(
            |slice| sub.receive_timeout(slice),
            |e| matches!(e, ReceiveError::Timeout(_)),
        ) {
            Ok(got) => got,
            // Returning drops the subscriber: it leaves the topic.
            Err(end) => {
                return args.until.ended(
                    end,
                    printer.n,
                    &format!("topic {name}"),
                    &format!("sub {name}"),
                )
            }
        };
        let sample = match got {
            Ok(sample) => sample,
            Err(ReceiveError::Lagged(n)) => {
                eprintln!("ringbus: sub {name}: missed {n} messages (this subscriber fell behind)");
                continue;
            }
            Err(ReceiveError::Invalid(why)) => {
                eprintln!("ringbus: sub {name}: {why}");
                continue;
            }
            Err(e) => return fail(format_args!("sub {name}: {e}")),
        };
        let fields = SampleFields {
            publisher: sample.publisher_index(),
        };
        match printer.print(&sample, fields) {
            Ok(()) => {}
            Err(PrintError::Closed) => return ExitCode::SUCCESS,
            Err(PrintError::Failed(e)) => return fail(format_args!("sub {name}: stdout: {e}")),
        }
    }
    ExitCode::SUCCESS
}
