//! The child's side: arguments, the line protocol with the parent, progress reports, record
//! files.
//!
//! Lines to the parent (stdout): `ready`; `progressed <token> <count>` (answer to
//! `watch <token> <k>`); `n <count>` now and then (units checked so far); anomalies `torn ..`,
//! `wrong ..`, `lost ..`, `hang ..`; typed failures `fail <variant> <start_ns> <end_ns> <text>`;
//! and role-specific lines (`stalled`, `blocked`). Lines from the parent (stdin): `watch`, and
//! role-specific commands (`stall`, `arm`). Stdin closing means the parent is gone: exit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{queue, service, topic, Scenario};
use crate::bench::process::tie_to_parent;
use crate::bench::util::{err, Result};

/// `key=value` arguments of a child.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    fn parse(words: &[String]) -> Result<Args> {
        let mut map = HashMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| err(format!("bad argument `{w}`")))?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Args { map })
    }

    /// A numeric argument.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.map
            .get(key)
            .ok_or_else(|| err(format!("missing argument {key}")))?
            .parse()
            .map_err(|e| err(format!("argument {key}: {e}")))
    }

    /// A path argument.
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        self.map
            .get(key)
            .map(PathBuf::from)
            .ok_or_else(|| err(format!("missing argument {key}")))
    }
}

/// Writes one line for the parent.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // If the parent is gone, stdin closes and we exit: nothing to do here.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Reports that the handle is open.
pub fn ready() {
    say("ready");
}

/// Progress of the child's main loop and the parent's requests about it.
pub struct Ctl {
    count: AtomicU64,
    /// Count at which to answer the pending watch (u64::MAX: none).
    target: AtomicU64,
    token: AtomicU64,
    /// Whether units are checked messages or calls, reported in `n` lines (not for roles that
    /// only send).
    counting: AtomicBool,
    /// The parent asked the main loop to stop (a stalled subscriber).
    pub stall: AtomicBool,
    /// Role state shared with the stdin thread (a publisher's blocked/armed flags).
    pub flags: Mutex<Flags>,
}

/// A publisher's waiting state, shared by its main loop and its stdin thread.
#[derive(Default)]
pub struct Flags {
    /// In a blocking loan after a full ring.
    pub waiting: bool,
    /// The parent asked to be told when the publisher waits.
    pub armed: bool,
}

/// Units between two `n` lines.
const REPORT_EVERY: u64 = 256;

impl Ctl {
    fn new() -> Arc<Ctl> {
        Arc::new(Ctl {
            count: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            token: AtomicU64::new(0),
            counting: AtomicBool::new(true),
            stall: AtomicBool::new(false),
            flags: Mutex::new(Flags::default()),
        })
    }

    /// One more unit of progress (a message checked, a send returned, an ack).
    #[inline]
    pub fn advance(&self) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.target.load(Ordering::Acquire) {
            self.answer(n);
        }
        if n % REPORT_EVERY == 0 && self.counting.load(Ordering::Relaxed) {
            say(&format!("n {n}"));
        }
    }

    #[cold]
    fn answer(&self, n: u64) {
        let t = self.target.swap(u64::MAX, Ordering::AcqRel);
        if t != u64::MAX && n >= t {
            say(&format!(
                "progressed {} {n}",
                self.token.load(Ordering::Acquire)
            ));
        } else if t != u64::MAX {
            // Another watch was set meanwhile: keep it.
            self.target.store(t, Ordering::Release);
        }
    }

    /// This role's units are not checks (a publisher's sends, a server's answers): no `n`
    /// lines.
    pub fn not_counting(&self) {
        self.counting.store(false, Ordering::Relaxed);
    }

    fn watch(&self, token: u64, k: u64) {
        self.token.store(token, Ordering::Release);
        let n = self.count.load(Ordering::Relaxed);
        self.target.store(n + k.max(1), Ordering::Release);
    }

    /// Marks the publisher as waiting (or not) for room; tells the parent if it asked.
    pub fn set_waiting(&self, waiting: bool) {
        let mut f = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        f.waiting = waiting;
        if waiting && f.armed {
            f.armed = false;
            say("blocked");
        }
    }
}

/// Reads the parent's commands: `watch`, `stall`, `arm`; exits the process when stdin closes.
fn serve_stdin(ctl: Arc<Ctl>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["watch", token, k] => {
                if let (Ok(t), Ok(k)) = (token.parse(), k.parse()) {
                    ctl.watch(t, k);
                }
            }
            ["stall"] => ctl.stall.store(true, Ordering::SeqCst),
            ["arm"] => {
                let mut f = ctl.flags.lock().unwrap_or_else(|e| e.into_inner());
                if f.waiting {
                    say("blocked");
                } else {
                    f.armed = true;
                }
            }
            _ => say(&format!("wrong child got an unknown command `{line}`")),
        }
    }
    // The parent is gone (or done with us).
    std::process::exit(0);
}

/// The command line of the hidden `torture-child` verb: `torture-child <scenario> <role>
/// key=value..` (the words [`super::harness`] spawns it with).
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    /// Scenario name (`topic`, `service`, `queue`, `durable-queue`).
    scenario: String,
    /// Role in the scenario (`publisher`, `server`, `producer`, ...).
    role: String,
    /// `key=value` words, read by [`Args::parse`].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Entry point of the hidden `torture-child` verb.
pub fn child_main(args: &ChildArgs) -> ExitCode {
    match run_child(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torture-child {}: {e}", args.role);
            ExitCode::FAILURE
        }
    }
}

fn run_child(args: &ChildArgs) -> Result<()> {
    let ChildArgs {
        scenario,
        role,
        rest,
    } = args;
    let a = Args::parse(rest)?;
    tie_to_parent(Some(u32::try_from(a.u64("parent")?)?))?;
    let ctl = Ctl::new();
    let c = ctl.clone();
    std::thread::Builder::new()
        .name("torture-stdin".into())
        .spawn(move || serve_stdin(c))?;
    let scenario = Scenario::ALL
        .into_iter()
        .find(|s| s.name() == scenario)
        .ok_or_else(|| err(format!("unknown scenario {scenario}")))?;
    match (scenario, role.as_str()) {
        (Scenario::Topic, "publisher") => topic::publisher(&a, &ctl),
        (Scenario::Topic, "subscriber") => topic::subscriber(&a, &ctl),
        (Scenario::Service, "server") => service::server(&a, &ctl),
        (Scenario::Service, "client") => service::client(&a, &ctl),
        (Scenario::Queue | Scenario::DurableQueue, "producer") => {
            queue::producer(&a, &ctl, scenario == Scenario::DurableQueue)
        }
        (Scenario::Queue | Scenario::DurableQueue, "consumer") => {
            queue::consumer(&a, &ctl, scenario == Scenario::DurableQueue)
        }
        (Scenario::DurableTopic, "publisher") => super::dtopic::publisher(&a, &ctl),
        (Scenario::DurableTopic, "member") => super::dtopic::member(&a, &ctl),
        (s, r) => Err(err(format!("unknown role {r} for {}", s.name()))),
    }
}

/// An append-only record file: one 8-byte `write` per record, so a kill never leaves half a
/// record.
pub struct Records {
    file: File,
}

impl Records {
    /// Creates (or appends to) `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Result<Records> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        Ok(Records { file })
    }

    /// Appends one record.
    pub fn put(&mut self, word: u64) -> Result<()> {
        // One write(2) of 8 bytes to a regular file in append mode: all or nothing under
        // SIGKILL.
        let n = self.file.write(&word.to_le_bytes())?;
        if n != 8 {
            return Err(err(format!("short record write ({n} bytes)")));
        }
        Ok(())
    }
}

/// Reads every record of the files in `dir` whose name starts with `prefix`: (file name
/// suffix, records).
pub fn read_records(dir: &Path, prefix: &str) -> Result<Vec<(String, Vec<u64>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let bytes = std::fs::read(entry.path())?;
        let words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        out.push((rest.to_string(), words));
    }
    Ok(out)
}
