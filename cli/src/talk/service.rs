//! `ringbus call NAME`: calls a byte service (requests and responses of bytes) from a terminal
//! or a script.

use std::process::ExitCode;
use std::time::Duration;

use ringbus::{CallError, OpenError, OpenMode};
use serde::Serialize;

use super::stop::{Slice, Stop};
use super::{parse_duration, InputArgs, OutputArgs, PrintError, Printer};
use crate::args::{fail, RootArgs};

const CALL_AFTER: &str = "\
Each line of stdin (or of --file, or each -m) is one request, without its newline; with --whole
the entire input is one request. Requests are sent one at a time: each response is printed (as
text, as hex with --hex, or as JSON lines {\"n\":0,\"call\":0,\"last\":true,\"len\":2,\"text\":\"hi\"})
before the next request goes. A streamed answer prints every response of the stream.

The service must exist and have a server: `call` fails at once if there is none, unless
--wait-for-server is given (then it creates the service if needed, with the default sizes, and
each call waits up to --timeout for a server).

Exit status: 0 once every request was answered; 1 on a timeout or any other error.

Ctrl-C, SIGTERM or SIGHUP end it cleanly: it leaves the service and exits 0 (a response being
printed is finished first; a call still waiting for its response is abandoned); a second one
ends it at once (exit 1).

Examples:
  ringbus call echo -m 'hello'
  printf 'a\\nb\\n' | ringbus call echo --json --timeout 5s";

/// How often `call --wait-for-server` looks for a server while none is registered.
const SERVER_POLL: Duration = Duration::from_millis(10);

/// `ringbus call NAME`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = CALL_AFTER)]
pub struct CallArgs {
    /// The service's name
    pub name: String,
    #[command(flatten)]
    pub input: InputArgs,
    // With --hex, requests are read in hex too.
    #[command(flatten)]
    pub output: OutputArgs,
    /// How long each call waits for its response (250ms, 2s, 1m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub timeout: Duration,
    /// Wait (up to --timeout) for a server to appear instead of failing at once
    #[arg(long)]
    pub wait_for_server: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// What `call --json` tells about a response besides its bytes.
#[derive(Serialize)]
struct ResponseFields {
    /// The request it answers (from 0).
    call: u64,
    /// Whether it is the last response of its call.
    last: bool,
}

fn call_problem(name: &str, e: &CallError) -> String {
    match e {
        CallError::NoServer => {
            format!("{e}: start a server of service {name}, or wait for one with --wait-for-server")
        }
        CallError::Timeout(_) => {
            format!("{e}: the server is slow or stuck; wait longer with --timeout")
        }
        CallError::TooLarge { .. } => format!("{e}: send shorter requests"),
        _ => e.to_string(),
    }
}

/// Runs `ringbus call`.
pub fn call_main(args: &CallArgs) -> ExitCode {
    let name = &args.name;
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("call {name}: cannot handle signals: {e}")),
    };
    let opened = args.root.node().and_then(|node| {
        node.service::<ringbus::Bytes, ringbus::Bytes>(name)
            // Every wait of this client is explicit, in slices: the response's
            // (`next_response_timeout`) and, with --wait-for-server, the server's (below). The
            // client's own timeout bounds only the wait for a server within `send`: none, so
            // that `send` answers at once and the wait is cut into slices here.
            .timeout(Duration::ZERO)
            .wait_for_server(args.wait_for_server)
            .open_mode(if args.wait_for_server {
                // The client then holds the service while it waits for a server to join.
                OpenMode::OpenOrCreate
            } else {
                OpenMode::OpenExisting
            })
            .client()
    });
    let client = match opened {
        Ok(c) => c,
        Err(OpenError::NotFound(_)) => {
            return fail(format_args!(
                "call {name}: no service {name} under {}: start its server first",
                args.root.dir().display()
            ))
        }
        Err(e) => return fail(format_args!("call {name}: {e}")),
    };
    let mut printer = Printer::new(&args.output);
    let mut call = 0u64;
    let mut closed = false;
    let max = client.max_request_size();
    let done = args.input.for_each(args.output.hex, max, &stop, |request| {
        if closed {
            return Ok(());
        }
        // With --wait-for-server, a send while no server is registered fails at once
        // (the client's timeout is zero): it is tried again, for up to --timeout.
        let wait = stop.wait(Some(args.timeout));
        let mut pending = loop {
            match client.send(request) {
                Err(CallError::NoServer) if args.wait_for_server => {}
                sent => break sent.map_err(|e| call_problem(name, &e))?,
            }
            match wait.slice() {
                // A server's join is polled, at most every SERVER_POLL (as the library does).
                Slice::Wait(slice) => std::thread::sleep(slice.min(SERVER_POLL)),
                Slice::Stopped => return Ok(()),
                Slice::TimedOut => return Err(call_problem(name, &CallError::NoServer)),
            }
        };
        loop {
            // Each response is waited for up to --timeout, in slices (a slice that ends does
            // not abandon the call).
            let wait = stop.wait(Some(args.timeout));
            let got = loop {
                match wait.slice() {
                    Slice::Wait(slice) => match pending.next_response_timeout(slice) {
                        Err(CallError::Timeout(_)) => {}
                        got => break got,
                    },
                    // Dropping the pending call abandons it; `for_each` then stops.
                    Slice::Stopped => return Ok(()),
                    Slice::TimedOut => {
                        return Err(call_problem(name, &CallError::Timeout(args.timeout)))
                    }
                }
            };
            let response = match got {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(call_problem(name, &e)),
            };
            let last = response.is_last();
            match printer.print(&response, ResponseFields { call, last }) {
                Ok(()) => {}
                Err(PrintError::Closed) => {
                    closed = true;
                    break;
                }
                Err(PrintError::Failed(e)) => return Err(format!("stdout: {e}")),
            }
            if last {
                break;
            }
        }
        call += 1;
        Ok(())
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("call {name}: {e}")),
    }
}
