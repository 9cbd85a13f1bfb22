//! The child ("pong") process and the line protocol the parent drives it with.
//!
//! The parent spawns `current_exe() bench-peer --key K --dir D --parent PID [--cpu N]`
//! once and talks to it over the child's stdin (commands) and stdout (replies). Reply
//! lines start with [`PREFIX`]; any other stdout line (e.g. from a library) is passed
//! through to stderr and otherwise ignored.
//!
//! ```text
//! child  -> "@rb hello <pid>"                         once, after start-up
//! parent -> "run <pattern> <mode> <transport> <payload> <count> <touch 0|1>"
//! child  -> "@rb ready"                               its end for (transport, payload,
//!                                                     mode) exists (created or reused)
//!           ... serves exactly <count> messages ...
//! child  -> "@rb done <count> <elapsed_ns> <checksum>"   (elapsed_ns is 0 where the
//!                                                     child does not measure: latency
//!                                                     rounds, rpc pipelined rounds)
//! parent -> "reset"        child drops all its ends  -> "@rb ok"
//!                          (after the latency phase and after each streaming size;
//!                          `queue`: after all rounds)
//! parent -> "queue open <end> <queue name> <dir as hex | ->"  -> "@rb ok"
//! parent -> "queue run <end> <mode> <count> <max µs> <first seq>"
//! child  -> "@rb ready" ... its part of the round ...
//!           "@rb done p <sent>"                                   (producer)
//!           "@rb done c <count> <first ns> <last ns> [<ns>:<n> ..]" (consumer)
//!     where <end> = "<transport> <payload> <producers> <consumers> <role> <index>";
//!     see `queue::worker` (`bench queue` drives four such children at once)
//! parent -> "quit" (or stdin EOF)                    child exits
//! child  -> "@rb error <text>"                       instead of ready / done / ok
//! ```
//!
//! Nothing waits forever: the parent waits for every reply with a timeout and kills the
//! child on any failure (also when the `Peer` is dropped without `quit`); the child exits
//! on stdin EOF, gets SIGKILL when the parent dies (`PR_SET_PDEATHSIG`), and every spin or
//! read inside a round gives up after `util::MSG_TIMEOUT`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{self, spawn_piped, tie_to_parent};
use super::queue::{
    self,
    worker::{WorkerCtx, WorkerEnds},
};
use super::transport::{registry, Mode, Pattern, PongEnd, Setup, StreamOutcome, Transport};
use super::util::{err, pin_current_thread, Result};

/// Marks protocol lines on the child's stdout.
pub const PREFIX: &str = "@rb ";

/// How long the parent waits for the child to start or to set up one transport.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the parent waits for "done" after its own side of a round finished.
const DONE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the parent waits for the child to exit after "quit".
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One protocol command from the parent.
#[derive(Clone, Debug)]
pub struct RunCommand {
    /// Pattern under test.
    pub pattern: Pattern,
    /// Latency or stream round.
    pub mode: Mode,
    /// Transport name.
    pub transport: String,
    /// Payload size in bytes.
    pub payload: usize,
    /// Messages the child serves (latency, including warm-up) or receives (stream).
    pub count: u64,
    /// Sender writes and receiver reads every byte.
    pub touch: bool,
}

impl RunCommand {
    fn to_line(&self) -> String {
        format!(
            "run {} {} {} {} {} {}",
            self.pattern.as_str(),
            self.mode,
            self.transport,
            self.payload,
            self.count,
            u8::from(self.touch)
        )
    }

    fn parse(words: &[&str]) -> Result<Self> {
        let [pattern, mode, transport, payload, count, touch] = words else {
            return Err(err(format!("bad run command: {words:?}")));
        };
        Ok(Self {
            pattern: Pattern::parse(pattern)?,
            mode: Mode::parse(mode)?,
            transport: (*transport).to_string(),
            payload: payload.parse()?,
            count: count.parse()?,
            touch: *touch == "1",
        })
    }
}

/// The parent's handle on the child process.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    clean_exit: bool,
}

impl Peer {
    /// Spawns the child and waits for its hello.
    pub fn spawn(key: &str, dir: &Path, cpu: Option<usize>) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("bench-peer")
            .arg("--key")
            .arg(key)
            .arg("--dir")
            .arg(dir)
            .arg("--parent")
            .arg(std::process::id().to_string());
        if let Some(cpu) = cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        let (child, stdin, stdout) = spawn_piped(&mut cmd, Stdio::inherit(), "bench-peer")?;
        let (tx, replies) = mpsc::channel();
        let reader = thread::Builder::new()
            .name("bench-peer-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match line.strip_prefix(PREFIX) {
                        Some(reply) => {
                            if tx.send(reply.to_string()).is_err() {
                                break;
                            }
                        }
                        None => eprintln!("bench-peer: {line}"),
                    }
                }
            });
        let mut peer = Self {
            child,
            stdin,
            replies,
            clean_exit: false,
        };
        reader.map_err(|e| err(format!("cannot start reader thread: {e}")))?;
        peer.expect("hello", SETUP_TIMEOUT)?
            .map_err(|e| err(format!("bench-peer failed to start: {e}")))?;
        Ok(peer)
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| err("bench-peer stdin is closed"))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| err(format!("cannot write to bench-peer: {e}")))
    }

    /// Waits for a reply starting with `keyword`. The outer error is fatal (timeout,
    /// child gone, protocol violation); the inner error is an "error" reply.
    fn expect(
        &mut self,
        keyword: &str,
        timeout: Duration,
    ) -> Result<std::result::Result<Vec<String>, String>> {
        let line = match self.replies.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(err(format!(
                    "bench-peer did not answer `{keyword}` within {timeout:?}"
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                return Err(err(format!(
                    "bench-peer exited while waiting for `{keyword}` (status {status:?})"
                )));
            }
        };
        let mut words = line.split_whitespace();
        match words.next() {
            Some(w) if w == keyword => Ok(Ok(words.map(str::to_string).collect())),
            Some("error") => Ok(Err(line["error".len()..].trim().to_string())),
            _ => Err(err(format!(
                "bench-peer answered `{line}`, expected `{keyword}`"
            ))),
        }
    }

    /// Asks the child to set up (or reuse) its end and start serving. `Ok(Err(text))`
    /// means the child could not set up this transport.
    pub fn start_run(&mut self, run: &RunCommand) -> Result<std::result::Result<(), String>> {
        self.send(&run.to_line())?;
        Ok(self.expect("ready", SETUP_TIMEOUT)?.map(|_| ()))
    }

    /// Waits for the end of the round the child is serving.
    pub fn finish_run(&mut self) -> Result<StreamOutcome> {
        let words = self
            .expect("done", DONE_TIMEOUT)?
            .map_err(|e| err(format!("bench-peer: {e}")))?;
        let field = |i: usize| -> Result<u64> {
            Ok(words
                .get(i)
                .ok_or_else(|| err("short done reply"))?
                .parse()?)
        };
        Ok(StreamOutcome::received(field(0)?, field(1)?, field(2)?))
    }

    /// Sends a `queue ...` line (see [`super::queue::worker`]) and waits for the reply
    /// `keyword` (`ok` after `open`, `ready` after `run`). `Ok(Err(text))` is an `error`
    /// reply.
    pub fn queue_command(
        &mut self,
        line: &str,
        keyword: &str,
    ) -> Result<std::result::Result<Vec<String>, String>> {
        self.send(line)?;
        self.expect(keyword, SETUP_TIMEOUT)
    }

    /// Waits for the `done` reply of a `queue run` and returns its fields; `Ok(Err(text))`
    /// is an `error` reply (the round failed in the child).
    pub fn queue_done(&mut self) -> Result<std::result::Result<Vec<String>, String>> {
        self.expect("done", DONE_TIMEOUT)
    }

    /// Makes the child drop every end (after the latency phase, after each streaming size).
    pub fn reset(&mut self) -> Result<()> {
        self.send("reset")?;
        self.expect("ok", SETUP_TIMEOUT)?
            .map_err(|e| err(format!("bench-peer reset: {e}")))?;
        Ok(())
    }

    /// Ends the child: "quit", close stdin, wait; kill it if it does not exit in time.
    pub fn quit(mut self) -> Result<()> {
        let _ = self.send("quit");
        self.stdin = None;
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.clean_exit = true;
                return if status.success() {
                    Ok(())
                } else {
                    Err(err(format!("bench-peer exited with {status}")))
                };
            }
            if t0.elapsed() > EXIT_TIMEOUT {
                return Err(err("bench-peer did not exit after quit; killed it"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.clean_exit {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes one protocol line to stdout.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // Nothing to do if the parent is gone: the next stdin read sees EOF.
    let _ = writeln!(out, "{PREFIX}{line}").and_then(|()| out.flush());
}

/// The command line of the hidden `bench-peer` subcommand (the words [`Peer::spawn`]
/// starts it with).
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// Key that names this run's resources.
    #[arg(long)]
    key: String,
    /// Directory of this run's files.
    #[arg(long)]
    dir: PathBuf,
    /// Process id of the parent (the child dies with it).
    #[arg(long)]
    parent: Option<u32>,
    /// CPU to pin the child to.
    #[arg(long)]
    cpu: Option<usize>,
}

/// Entry point of the hidden `bench-peer` subcommand.
pub fn peer_main(args: &PeerArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &PeerArgs) -> Result<()> {
    tie_to_parent(args.parent)?;
    if let Some(cpu) = args.cpu {
        pin_current_thread(cpu)?;
    }
    let transports = registry();
    let queue_transports = queue::registry();
    let queue_ctx = WorkerCtx {
        transports: &queue_transports,
        ack_path: queue::ack_path(&args.dir, &args.key),
    };
    let mut queue_ends = WorkerEnds::default();
    // Keyed by (transport, payload, mode): during the latency phase the ends of all sizes
    // are alive at once (sizes are interleaved); each has its own shared resources.
    let mut ends: HashMap<(String, usize, Mode), Box<dyn PongEnd>> = HashMap::new();
    say(&format!("hello {}", std::process::id()));
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.split_first() {
            Some((&"run", rest)) => {
                let run = match RunCommand::parse(rest) {
                    Ok(run) => run,
                    Err(e) => {
                        say(&format!("error {e}"));
                        continue;
                    }
                };
                let key = (run.transport.clone(), run.payload, run.mode);
                if !ends.contains_key(&key) {
                    match create_end(&transports, args, &run) {
                        Ok(end) => {
                            ends.insert(key.clone(), end);
                        }
                        Err(e) => {
                            say(&format!("error setup {}: {e}", run.transport));
                            continue;
                        }
                    }
                }
                let end = ends.get_mut(&key).expect("inserted above");
                say("ready");
                let outcome = match run.mode {
                    Mode::Latency => end
                        .latency_serve(run.count, run.touch)
                        .map(|checksum| StreamOutcome::served(run.count, checksum)),
                    Mode::Stream => end.stream_receive(run.count, run.touch),
                };
                match outcome {
                    Ok(o) => say(&format!("done {} {} {}", o.count, o.elapsed_ns, o.checksum)),
                    Err(e) => {
                        ends.remove(&key);
                        say(&format!("error {} round: {e}", run.transport));
                    }
                }
            }
            Some((&"queue", rest)) => queue_ends.command(&queue_ctx, rest, &say),
            Some((&"reset", _)) => {
                ends.clear();
                queue_ends.clear();
                say("ok");
            }
            Some((&"quit", _)) => break,
            _ => say(&format!("error unknown command `{line}`")),
        }
    }
    Ok(())
}

fn create_end(
    transports: &[Box<dyn Transport>],
    args: &PeerArgs,
    run: &RunCommand,
) -> Result<Box<dyn PongEnd>> {
    let transport = transports
        .iter()
        .find(|t| t.name() == run.transport)
        .ok_or_else(|| {
            err(format!(
                "transport `{}` is not in this build",
                run.transport
            ))
        })?;
    transport.pong(&Setup {
        pattern: run.pattern,
        mode: run.mode,
        payload: run.payload,
        key: args.key.clone(),
        dir: args.dir.clone(),
    })
}

/// The parent-side run directory: `$RINGBUS_ROOT`, else `/dev/shm`, else the temp dir.
pub fn run_dir() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("RINGBUS_ROOT") {
        let root = PathBuf::from(root);
        std::fs::create_dir_all(&root)
            .map_err(|e| err(format!("cannot create {}: {e}", root.display())))?;
        return Ok(root);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return Ok(shm.to_path_buf());
    }
    Ok(std::env::temp_dir())
}

/// Removes files and sockets that earlier runs left in `dir` when they were killed:
/// names `rb-bench-<pid>-...` whose process no longer exists.
pub fn remove_stale(dir: &Path) {
    process::remove_stale(dir, KEY_PREFIX, |_| true);
}

/// Prefix of every shared resource name of a run; the parent's pid follows.
pub const KEY_PREFIX: &str = "rb-bench-";
