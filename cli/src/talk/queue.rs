//! `ringbus send NAME` and `ringbus recv NAME`: a byte queue from a terminal or a script.

use std::path::PathBuf;
use std::process::ExitCode;

use ringbus::{OpenError, OpenMode, ReceiveError, SendError};
use serde::Serialize;

use super::stop::Stop;
use super::{CreateArgs, InputArgs, OutputArgs, PrintError, Printer, UntilArgs};
use crate::args::{fail, RootArgs};

const SEND_AFTER: &str = "\
Each line of stdin (or of --file) is one message, sent as it is read, without its newline; an
empty line is an empty message. With --whole the entire input is one message, bytes as they are.

A queue in shared memory lives only while some process holds it, so `send` does not create one
(its messages would vanish when it exits): it fails unless the queue exists, e.g. while a
`ringbus recv NAME` or your consumer runs. A durable queue (--durable DIR) lives in files and is
created (with --capacity and --max-size) if missing. A full queue makes a send wait up to 1 s,
then fail.

Ctrl-C, SIGTERM or SIGHUP end it cleanly: it leaves the queue and exits 0 (a message being sent
is finished first); a second one ends it at once (exit 1).

Examples:
  printf 'job 1\\njob 2\\n' | ringbus send jobs
  ringbus send jobs --durable /var/lib/app/queues -m 'job 3'";

const RECV_AFTER: &str = "\
Once attached, `recv` writes the line \"ringbus: consuming from queue NAME\" on stderr. It prints
each message on stdout as it is delivered: as text (invalid UTF-8 replaced by U+FFFD; use --hex
or --json for binary or multi-line messages), as hex, or as JSON lines
  {\"n\":0,\"position\":0,\"deliveries\":1,\"len\":5,\"text\":\"job 1\"}
where \"deliveries\" counts this delivery (2 and more: the message was handed back before).

Each message is acknowledged (removed from the queue) once it is printed, unless --nack is
given: then it is handed back at once, to be delivered again (to this or another consumer), and
the next message received may be the same one. A message that cannot be printed (stdout closed)
is handed back.

The queue is created (with --capacity and --max-size) if it does not exist; give --durable DIR
for a durable queue.

Exit status: 0 after --count messages (or when stdout is closed); 1 if --timeout passed first
(or on an error); without --count, a --timeout with at least one message received is 0.

Ctrl-C, SIGTERM or SIGHUP end it cleanly: it leaves the queue and exits 0 (a message being
printed is finished first, and acknowledged; no message is acknowledged unprinted); a second one
ends it at once (exit 1).

Examples:
  ringbus recv jobs --count 2
  ringbus recv jobs --nack --json --timeout 1s";

/// Where a durable queue lives.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DurableArgs {
    /// The queue is durable, kept in files under DIR (its ring and log), instead of in shared
    /// memory under the root
    #[arg(long, value_name = "DIR")]
    pub durable: Option<PathBuf>,
}

/// `ringbus send NAME`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = SEND_AFTER)]
pub struct SendArgs {
    /// The queue's name
    pub name: String,
    #[command(flatten)]
    pub input: InputArgs,
    /// Messages are written in hex ("68 69" or "6869"; whitespace is ignored)
    #[arg(long)]
    pub hex: bool,
    #[command(flatten)]
    pub durable: DurableArgs,
    #[command(flatten)]
    pub create: CreateArgs,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `ringbus recv NAME`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = RECV_AFTER)]
pub struct RecvArgs {
    /// The queue's name
    pub name: String,
    /// Acknowledge each message once printed: it leaves the queue (the default)
    #[arg(long, conflicts_with = "nack")]
    pub ack: bool,
    /// Hand each message back once printed: it stays in the queue and is delivered again
    /// (needs --count: the same message would otherwise come back forever)
    #[arg(long, requires = "count")]
    pub nack: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub until: UntilArgs,
    #[command(flatten)]
    pub durable: DurableArgs,
    #[command(flatten)]
    pub create: CreateArgs,
    #[command(flatten)]
    pub root: RootArgs,
}

/// What `recv --json` tells about a delivery besides its bytes.
#[derive(Serialize)]
struct DeliveryFields {
    position: u64,
    deliveries: u32,
}

fn builder(
    root: &RootArgs,
    name: &str,
    durable: &DurableArgs,
    create: &CreateArgs,
) -> Result<ringbus::QueueBuilder<ringbus::Bytes>, OpenError> {
    let mut queue = root.node()?.queue_bytes(name).prefetch(1);
    if let Some(dir) = &durable.durable {
        queue = queue.durable(dir);
    }
    if let Some(n) = create.capacity {
        queue = queue.capacity(n);
    }
    if let Some(n) = create.max_size {
        queue = queue.max_message_size(n);
    }
    Ok(queue)
}

fn send_problem(e: &SendError) -> String {
    match e {
        SendError::Timeout(_) | SendError::Full => format!(
            "{e}: the queue is full; start a consumer (`ringbus recv NAME`), or create the queue \
             with a larger --capacity"
        ),
        _ => super::topic::send_problem(e),
    }
}

/// Runs `ringbus send`.
pub fn send_main(args: &SendArgs) -> ExitCode {
    let name = &args.name;
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("send {name}: cannot handle signals: {e}")),
    };
    let durable = args.durable.durable.is_some();
    let opened = builder(&args.root, name, &args.durable, &args.create).and_then(|q| {
        let mode = if durable {
            OpenMode::OpenOrCreate
        } else {
            OpenMode::OpenExisting
        };
        q.open_mode(mode).producer()
    });
    let mut producer = match opened {
        Ok(p) => p,
        Err(OpenError::NotFound(_)) => {
            return fail(format_args!(
                "send {name}: no queue {name} under {}; a queue in shared memory lives only \
                 while a process holds it: start its consumer first (e.g. `ringbus recv {name}`), \
                 or keep the queue in files with --durable DIR",
                args.root.dir().display()
            ))
        }
        Err(e) => return fail(format_args!("send {name}: {e}")),
    };
    let max = producer.max_message_size();
    let sent = args.input.for_each(args.hex, max, &stop, |msg| {
        producer
            .send(msg)
            .map(drop)
            .map_err(|e| send_problem(&e).replace("NAME", name))
    });
    match sent {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("send {name}: {e}")),
    }
}

/// Runs `ringbus recv`.
pub fn recv_main(args: &RecvArgs) -> ExitCode {
    let name = &args.name;
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("recv {name}: cannot handle signals: {e}")),
    };
    let consumer =
        match builder(&args.root, name, &args.durable, &args.create).and_then(|q| q.consumer()) {
            Ok(c) => c,
            Err(e) => return fail(format_args!("recv {name}: {e}")),
        };
    eprintln!("ringbus: consuming from queue {name}");
    let mut printer = Printer::new(&args.output);
    while !args.until.done(printer.n) {
        let got = match stop.wait(args.until.timeout).receive(
            |slice| consumer.receive_timeout(slice),
            |e| matches!(e, ReceiveError::Timeout(_)),
        ) {
            Ok(got) => got,
            // Returning drops the consumer: it leaves the queue (nothing is held unacked).
            Err(end) => {
                return args.until.ended(
                    end,
                    printer.n,
                    &format!("queue {name}"),
                    &format!("recv {name}"),
                )
            }
        };
        let delivery = match got {
            Ok(d) => d,
            Err(ReceiveError::Invalid(why)) => {
                eprintln!("ringbus: recv {name}: {why}");
                continue;
            }
            Err(e) => return fail(format_args!("recv {name}: {e}")),
        };
        let position = delivery.position();
        let fields = DeliveryFields {
            position,
            deliveries: delivery.delivery_count(),
        };
        match printer.print(&delivery, fields) {
            Ok(()) => {}
            // Dropping the delivery hands it back.
            Err(PrintError::Closed) => return ExitCode::SUCCESS,
            Err(PrintError::Failed(e)) => return fail(format_args!("recv {name}: stdout: {e}")),
        }
        let done = if args.nack {
            delivery.nack()
        } else {
            delivery.ack()
        };
        if let Err(e) = done {
            eprintln!("ringbus: recv {name}: message at position {position}: {e}");
        }
    }
    ExitCode::SUCCESS
}
