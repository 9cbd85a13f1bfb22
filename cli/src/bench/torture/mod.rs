//! `ringbus torture`: a crash loop with published figures.
//!
//! For each scenario the parent runs a few child processes (this executable again, hidden verb
//! `torture-child`), each using only ringbus's public API, and repeats *trials*:
//!
//! 1. let the children run for a random time (0 to 20 ms, drawn from a seeded splitmix64);
//! 2. SIGKILL the chosen victim (one child at random; for topics, one trial in 16 kills every
//!    child and one a publisher and a subscriber, for queues and the durable topic one in four kills every child at
//!    once, and for services one in eight kills both servers);
//! 3. start a replacement for every killed child (one replacement in eight is itself killed
//!    within its first 3 ms, during start-up or while joining, and started again) and wait until
//!    it has opened its handle;
//! 4. verify that the flow resumes: every live child (for queues: every producer, and at least
//!    one consumer; for services: every client) makes progress within [`HANG_BOUND`].
//!
//! Half of the topic trials that kill a subscriber first stall it until every publisher reports
//! a full ring (it waits on that subscriber under `Block`); the publishers must then resume
//! within [`HANG_BOUND`] of the kill ("freed").
//!
//! Message-level checks run all the time, in the children: every payload carries its origin
//! (slot, incarnation, sequence number) and a checksum. Topic subscribers check each
//! publisher's order with no gap and no `Lagged` (it is `Block`); service clients check that each
//! `Ok` response echoes its own request's id and checksum and that every failure is a typed error
//! explained by a server death (`Disconnected`, `NoServer`, `Aborted`), a timeout or a busy slot,
//! within the call's timeout plus [`CALL_SLACK`]; queue producers record a message in an
//! append-only file only after `send` returned `Ok`, consumers record it before `ack` (one
//! 8-byte `write` per record), and at the end the parent kills everyone, drains what is left and
//! checks that every recorded send was delivered at least once.
//!
//! Children report anomalies as lines on stdout, read by one thread per child; stderr is kept
//! for the report of a child that exits on its own (anything but our SIGKILL).

mod child;
mod dtopic;
mod harness;
mod queue;
mod service;
mod topic;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::report::push_json_str;
use super::util::{err, positive, Result};

pub use child::{child_main, ChildArgs};

/// Trials per scenario unless `--trials` says otherwise.
pub const DEFAULT_TRIALS: u64 = 1000;

/// Longest wait for a sign of life (a replacement's handle opened, progress after a restart, a
/// blocked publisher freed) before a hang is counted.
pub const HANG_BOUND: Duration = Duration::from_secs(10);

/// How far past its timeout a service call may return before it counts as a hang.
pub const CALL_SLACK: Duration = Duration::from_secs(3);

/// Consecutive hangs after which a scenario gives up (its state is wedged).
const MAX_CONSECUTIVE_HANGS: u32 = 5;

/// Failure texts kept per kind (the counts are always complete).
const SAMPLES_PER_KIND: usize = 8;

/// `ringbus torture --help`: what the command does (above the flags).
pub const LONG_ABOUT: &str = "\
Spawns real processes that use ringbus, SIGKILLs them at random moments, restarts them and
verifies, from numbered and checksummed payloads, that nothing is torn, wrong or lost.";

/// `ringbus torture --help`: what a trial is and what the columns count (below the flags).
pub const AFTER_LONG_HELP: &str = "\
A trial: the children run for a random 0-20 ms; the victim is SIGKILLed (one child at random;
topics: 1 trial in 16 kills every child, 1 in 16 a publisher and a subscriber; queues: 1 in 4
kills every child; services: 1 in 8 kills both servers); each killed child is replaced (1
replacement in 8 is itself killed within 3 ms, during start-up or join, and replaced again);
the trial ends when each replacement has opened its handle and the flow has resumed: every
live child progressed (topic: a publisher sent 512 messages, a subscriber received 512;
service: each client got 8 Ok responses; queue: each producer sent 8, a consumer acked 4;
durable topic: each publisher sent 8, a group member committed 2)
within 10 s, else a hang is counted and every child is restarted. Topics: half the subscriber
kills first stall that subscriber until every publisher reports a full ring (it waits on the
subscriber), kill it within 5 ms (half of these start the replacement at once, while the
publishers still wait) and require every publisher to send 512 more messages within 10 s of
the kill (\"freed\"; the table notes the time it took when nobody joined meanwhile).
Queues: at the end every child is killed, the parent drains the queue and checks that every
message whose send returned Ok was delivered at least once. Durable topic: at the end the
parent reads the whole log (every sent message there, whole, each publisher's in order) and
joins the group (it must resume exactly at the commits, and every sent message must have
been received by some member).

Columns: kills = SIGKILLs sent; verified = messages checked (topic: received by subscribers,
counted in steps of 256; service: Ok responses, same; queues: every delivery); torn = payloads
whose checksum or length failed; wrong = a result that must not happen (a response to another
request, a reordered or repeated topic message, a failure no server death explains, an
unexpected error, a delivered message whose send failed or never happened); lost = topic gaps
or Lagged reports under Block (one per event), queue messages whose send returned Ok and that
were never delivered; duplicates = extra deliveries of queue messages (expected after kills);
hangs = no progress within 10 s, a call returning more than 3 s after its timeout; unexpected
= a child that exited on its own (its stderr is shown). The exit code is 1 if any torn, wrong,
lost, hang or unexpected exit was counted.";

/// The `SCENARIO` word of `ringbus torture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// 2 publishers, 2 subscribers (Policy::Block, 256 slots, history 64, 40..512-byte
    /// messages)
    Topic,
    /// 2 echo servers, 2 clients (1..4 calls in flight, 1 s timeout)
    Service,
    /// 2 producers, 2 consumers, in shared memory (the parent keeps one producer handle
    /// open, so the queue outlives "every child killed")
    Queue,
    /// the same on disk (SyncPolicy::Always, 64-record log segments, so the log rotates
    /// often); "every child killed" kills every process of the queue
    DurableQueue,
    /// 2 keyed publishers and a consumer group of 2 members on a durable topic of 2
    /// partitions (SyncPolicy::Always, 64-record segments, a commit after every message)
    DurableTopic,
    /// all five, one after the other (default)
    All,
}

/// The command line of `ringbus torture`.
#[derive(clap::Args, Debug)]
pub struct TortureArgs {
    /// Scenario to run
    #[arg(value_enum, value_name = "SCENARIO", default_value_t = Which::All)]
    scenario: Which,
    /// Trials per scenario
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TRIALS, value_parser = positive)]
    trials: u64,
    /// Seed of the PRNG that picks victims and moments, decimal or 0x-prefixed hex
    /// (default: from the clock; printed either way). Process timing is not seeded, so a
    /// seed replays the choices, not the exact interleaving.
    #[arg(long, value_name = "S", value_parser = parse_seed)]
    seed: Option<u64>,
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
}

/// A scenario of the crash loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Publish/subscribe under `Policy::Block`.
    Topic,
    /// Request/response.
    Service,
    /// Work queue in shared memory.
    Queue,
    /// Work queue on disk, `SyncPolicy::Always`.
    DurableQueue,
    /// Durable topic with a consumer group, `SyncPolicy::Always`.
    DurableTopic,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 5] = [
        Scenario::Topic,
        Scenario::Service,
        Scenario::Queue,
        Scenario::DurableQueue,
        Scenario::DurableTopic,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Topic => "topic",
            Scenario::Service => "service",
            Scenario::Queue => "queue",
            Scenario::DurableQueue => "durable-queue",
            Scenario::DurableTopic => "durable-topic",
        }
    }
}

/// Parsed `torture` options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Trials per scenario.
    pub trials: u64,
    /// PRNG seed.
    pub seed: u64,
    /// One JSON object instead of the table.
    pub json: bool,
}

impl TortureArgs {
    /// The options of the run (the seed drawn from the clock unless given).
    pub fn options(&self) -> Options {
        let scenarios = match self.scenario {
            Which::Topic => vec![Scenario::Topic],
            Which::Service => vec![Scenario::Service],
            Which::Queue => vec![Scenario::Queue],
            Which::DurableQueue => vec![Scenario::DurableQueue],
            Which::DurableTopic => vec![Scenario::DurableTopic],
            Which::All => Scenario::ALL.to_vec(),
        };
        Options {
            scenarios,
            trials: self.trials,
            seed: self.seed.unwrap_or_else(clock_seed),
            json: self.json,
        }
    }
}

/// A `--seed` value: decimal, or hexadecimal after `0x`.
fn parse_seed(s: &str) -> std::result::Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("bad number `{s}`"))
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Keep printed seeds short enough to retype.
    Rng::new(t ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
}

/// splitmix64: tiny, seedable, good enough to pick victims and moments.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// FNV-1a (64 bit) over `bytes`, continuing from `h` (start with [`FNV_START`]).
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The FNV-1a offset basis.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// `CLOCK_MONOTONIC` in ns: comparable across processes of this machine.
pub fn mono_ns() -> u64 {
    super::queue::worker::monotonic_ns()
}

/// Kinds of failure a scenario counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A payload whose checksum or length is wrong.
    Torn,
    /// A result that must not happen.
    Wrong,
    /// A message lost (queue) or a gap (topic).
    Lost,
    /// No progress, or a call far past its timeout.
    Hang,
    /// A child that exited on its own.
    Unexpected,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Torn => "torn",
            Kind::Wrong => "wrong",
            Kind::Lost => "lost",
            Kind::Hang => "hang",
            Kind::Unexpected => "unexpected exit",
        }
    }
}

/// The figures of one scenario.
#[derive(Debug)]
pub struct Tally {
    /// Scenario name.
    pub scenario: &'static str,
    /// Trials completed.
    pub trials: u64,
    /// SIGKILLs sent (victims, start-up kills, restarts after hangs).
    pub kills: u64,
    /// Messages or calls checked (as reported by the children; a killed child's last few are
    /// not counted).
    pub verified: u64,
    /// Torn payloads.
    pub torn: u64,
    /// Wrong results.
    pub wrong: u64,
    /// Lost messages or gaps.
    pub lost: u64,
    /// Extra deliveries (queues).
    pub duplicates: u64,
    /// Hangs.
    pub hangs: u64,
    /// Children that exited on their own.
    pub unexpected: u64,
    /// Wall time of the scenario.
    pub wall: Duration,
    /// Extra figures, name and value.
    pub notes: Vec<(String, String)>,
    /// The first failure texts of each kind.
    pub failures: Vec<String>,
    /// Why the scenario stopped early, if it did.
    pub aborted: Option<String>,
}

impl Tally {
    fn new(scenario: &'static str) -> Tally {
        Tally {
            scenario,
            trials: 0,
            kills: 0,
            verified: 0,
            torn: 0,
            wrong: 0,
            lost: 0,
            duplicates: 0,
            hangs: 0,
            unexpected: 0,
            wall: Duration::ZERO,
            notes: Vec::new(),
            failures: Vec::new(),
            aborted: None,
        }
    }

    /// Counts `n` failures of `kind`, keeping the text of the first few.
    pub fn add(&mut self, kind: Kind, n: u64, text: &str) {
        let counter = match kind {
            Kind::Torn => &mut self.torn,
            Kind::Wrong => &mut self.wrong,
            Kind::Lost => &mut self.lost,
            Kind::Hang => &mut self.hangs,
            Kind::Unexpected => &mut self.unexpected,
        };
        *counter += n;
        let prefix = format!("{}: ", kind.name());
        let kept = self
            .failures
            .iter()
            .filter(|f| f.starts_with(&prefix))
            .count();
        if kept < SAMPLES_PER_KIND {
            let mut t = text.trim().to_string();
            if t.len() > 1500 {
                let mut cut = 1500;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
                t.push_str(" [...]");
            }
            self.failures.push(format!("{prefix}{t}"));
        }
    }

    /// Adds a named figure.
    pub fn note(&mut self, name: &str, value: impl std::fmt::Display) {
        self.notes.push((name.to_string(), value.to_string()));
    }

    /// The counts, in report order: JSON name, table column head and width, value.
    fn counts(&self) -> [(&'static str, &'static str, usize, u64); 9] {
        [
            ("trials", "trials", 7, self.trials),
            ("kills", "kills", 6, self.kills),
            ("verified", "verified", 10, self.verified),
            ("torn", "torn", 5, self.torn),
            ("wrong", "wrong", 6, self.wrong),
            ("lost", "lost", 5, self.lost),
            ("duplicates", "dups", 6, self.duplicates),
            ("hangs", "hangs", 6, self.hangs),
            ("unexpected_exits", "unexpected", 10, self.unexpected),
        ]
    }

    /// Whether anything that must be zero is not.
    pub fn failed(&self) -> bool {
        self.torn + self.wrong + self.lost + self.hangs + self.unexpected > 0
            || self.aborted.is_some()
    }
}

/// Private directories of one run: segments (`/dev/shm`) and disk files (durable queues,
/// records), both removed at the end.
struct RunDirs {
    shm: PathBuf,
    disk: PathBuf,
}

const DIR_PREFIX: &str = "ringbus-torture-";

impl RunDirs {
    fn create() -> Result<RunDirs> {
        let shm_base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let disk_base = std::env::temp_dir();
        remove_stale(&shm_base);
        remove_stale(&disk_base);
        let stamp = mono_ns();
        let name = format!("{DIR_PREFIX}{}-{stamp}", std::process::id());
        let mut dirs = RunDirs {
            shm: shm_base.join(&name),
            disk: disk_base.join(&name),
        };
        if dirs.shm == dirs.disk {
            dirs.shm = dirs.shm.join("shm");
        }
        for d in [&dirs.shm, &dirs.disk] {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| err(format!("cannot create {}: {e}", d.display())))?;
        }
        Ok(dirs)
    }

    /// (segment root, durable data directory, records directory) of a scenario.
    fn scenario(&self, s: Scenario) -> Result<(PathBuf, PathBuf, PathBuf)> {
        let root = self.shm.join(s.name());
        let data = self.disk.join(s.name()).join("data");
        let records = self.disk.join(s.name()).join("records");
        std::fs::create_dir_all(&records)
            .map_err(|e| err(format!("cannot create {}: {e}", records.display())))?;
        Ok((root, data, records))
    }
}

impl Drop for RunDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.shm);
        let _ = std::fs::remove_dir_all(&self.disk);
    }
}

/// Removes run directories left by torture runs that were killed (their pid is gone).
fn remove_stale(base: &Path) {
    crate::bench::process::remove_stale(base, DIR_PREFIX, |_| true);
}

/// What a scenario needs from the run.
pub struct Ctx {
    /// Segment root (a private directory).
    pub root: PathBuf,
    /// Durable queue directory (on disk).
    pub data: PathBuf,
    /// Directory of the record files.
    pub records: PathBuf,
    /// Trials to run.
    pub trials: u64,
    /// The scenario's own seed.
    pub seed: u64,
}

fn scenario_seed(seed: u64, s: Scenario) -> u64 {
    // The same seed gives a scenario the same draws whether it runs alone or within `all`.
    Rng::new(fnv(seed, s.name().as_bytes())).next_u64()
}

/// Entry point of the `torture` subcommand (`args` follow the word `torture`).
pub fn torture_main(opts: &Options) -> ExitCode {
    eprintln!(
        "ringbus torture: seed {} ({} trials per scenario: {})",
        opts.seed,
        opts.trials,
        opts.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dirs = match RunDirs::create() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ringbus torture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut tallies = Vec::new();
    for &s in &opts.scenarios {
        let t0 = Instant::now();
        let mut tally = Tally::new(s.name());
        // Moved by the harness at the end of each trial (super::progress::advance).
        let progress = super::progress::Progress::start(
            format!("ringbus torture: {}", s.name()),
            opts.trials,
            "trials",
        );
        let result = dirs.scenario(s).and_then(|(root, data, records)| {
            let ctx = Ctx {
                root,
                data,
                records,
                trials: opts.trials,
                seed: scenario_seed(opts.seed, s),
            };
            match s {
                Scenario::Topic => topic::run(&ctx, &mut tally),
                Scenario::Service => service::run(&ctx, &mut tally),
                Scenario::Queue => queue::run(&ctx, &mut tally, false),
                Scenario::DurableQueue => queue::run(&ctx, &mut tally, true),
                Scenario::DurableTopic => dtopic::run(&ctx, &mut tally),
            }
        });
        if let Err(e) = result {
            tally.aborted = Some(e.to_string());
        }
        drop(progress);
        tally.wall = t0.elapsed();
        if !opts.json {
            eprintln!(
                "ringbus torture: {} done in {:.1} s",
                s.name(),
                tally.wall.as_secs_f64()
            );
        }
        tallies.push(tally);
    }
    drop(dirs);
    if opts.json {
        println!("{}", json(opts, &tallies));
    } else {
        print!("{}", table(opts, &tallies));
    }
    if tallies.iter().any(Tally::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `{"seed":S,"trials_per_scenario":N,"ok":bool,"scenarios":[{"scenario":"topic","trials":..,
/// "kills":..,"verified":..,"torn":..,"wrong":..,"lost":..,"duplicates":..,"hangs":..,
/// "unexpected_exits":..,"wall_s":..,"aborted":null|"..","notes":{..},"failures":[..]},..]}`
fn json(opts: &Options, tallies: &[Tally]) -> String {
    let mut out = String::new();
    let ok = !tallies.iter().any(Tally::failed);
    let _ = write!(
        out,
        "{{\"seed\":{},\"trials_per_scenario\":{},\"ok\":{ok},\"scenarios\":[",
        opts.seed, opts.trials
    );
    for (i, t) in tallies.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"scenario\":");
        push_json_str(&mut out, t.scenario);
        for (name, _, _, value) in t.counts() {
            let _ = write!(out, ",\"{name}\":{value}");
        }
        let _ = write!(out, ",\"wall_s\":{:.2},\"aborted\":", t.wall.as_secs_f64());
        match &t.aborted {
            Some(a) => push_json_str(&mut out, a),
            None => out.push_str("null"),
        }
        out.push_str(",\"notes\":{");
        for (j, (k, v)) in t.notes.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_json_str(&mut out, k);
            out.push(':');
            push_json_str(&mut out, v);
        }
        out.push_str("},\"failures\":[");
        for (j, f) in t.failures.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_json_str(&mut out, f);
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

fn table(opts: &Options, tallies: &[Tally]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringbus torture: seed {}, {} trials per scenario (ringbus torture --help: what a trial is)",
        opts.seed, opts.trials
    );
    let _ = write!(out, "{:<14}", "scenario");
    for (_, head, width, _) in Tally::new("").counts() {
        let _ = write!(out, " {head:>width$}");
    }
    let _ = writeln!(out, " {:>8}", "wall");
    for t in tallies {
        let _ = write!(out, "{:<14}", t.scenario);
        for (_, _, width, value) in t.counts() {
            let _ = write!(out, " {value:>width$}");
        }
        let _ = writeln!(out, " {:>6.1} s", t.wall.as_secs_f64());
    }
    for t in tallies {
        if !t.notes.is_empty() {
            let notes: Vec<String> = t.notes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  {}: {}", t.scenario, notes.join(", "));
        }
    }
    let failing: Vec<&Tally> = tallies.iter().filter(|t| t.failed()).collect();
    if failing.is_empty() {
        let _ = writeln!(
            out,
            "result: ok (no torn, wrong, lost, hang or unexpected exit)"
        );
    } else {
        let _ = writeln!(out, "result: FAILED");
        for t in failing {
            if let Some(a) = &t.aborted {
                let _ = writeln!(out, "  {}: aborted: {a}", t.scenario);
            }
            for f in &t.failures {
                let _ = writeln!(out, "  {}: {}", t.scenario, f.replace('\n', "\n      "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ringbus torture ARGS` as parsed by the tool's own command line.
    fn parse(args: &str) -> std::result::Result<Options, String> {
        use clap::Parser as _;
        let words = ["ringbus", "torture"]
            .into_iter()
            .chain(args.split_whitespace());
        match crate::Cli::try_parse_from(words)
            .map_err(|e| e.to_string())?
            .command
        {
            crate::Command::Torture(args) => Ok(args.options()),
            other => Err(format!("not torture: {other:?}")),
        }
    }

    #[test]
    fn options_parse() {
        let o = parse("queue --trials 5 --seed 0x10 --json").unwrap();
        assert_eq!(o.scenarios, vec![Scenario::Queue]);
        assert_eq!((o.trials, o.seed, o.json), (5, 16, true));
        let o = parse("--seed 3").unwrap();
        assert_eq!(o.scenarios, Scenario::ALL);
        assert_eq!((o.trials, o.seed, o.json), (DEFAULT_TRIALS, 3, false));
        // The scenario may follow the flags.
        let o = parse("--trials 2 durable-queue").unwrap();
        assert_eq!((o.scenarios, o.trials), (vec![Scenario::DurableQueue], 2));
        assert_eq!(parse("all").unwrap().scenarios, Scenario::ALL);
        assert!(parse("bogus").is_err());
        assert!(parse("--trials 0").is_err());
        assert!(parse("--seed 0xg").is_err());
        assert!(parse("topic queue").is_err());
    }

    #[test]
    fn rng_is_seeded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0..1000).all(|_| a.below(10) < 10));
    }

    /// The options of a run of one scenario.
    fn options(scenario: Scenario, trials: u64, seed: u64) -> Options {
        Options {
            scenarios: vec![scenario],
            trials,
            seed,
            json: false,
        }
    }

    #[test]
    fn table_columns_line_up_with_their_heads() {
        let mut t = Tally::new("durable-queue");
        (t.trials, t.kills, t.verified, t.duplicates) = (1000, 1234, 5_678_901, 17);
        t.wall = Duration::from_millis(61_250);
        let out = table(&options(Scenario::DurableQueue, 1000, 7), &[t]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "scenario        trials  kills   verified  torn  wrong  lost   dups  hangs unexpected     wall"
        );
        assert_eq!(
            lines[2],
            "durable-queue     1000   1234    5678901     0      0     0     17      0          0   61.2 s"
        );
        assert!(lines[3].starts_with("result: ok"));
    }

    #[test]
    fn json_is_one_object_and_escapes() {
        let mut t = Tally::new("topic");
        t.add(Kind::Wrong, 2, "a \"quoted\"\nline");
        t.note("freed_max_ms", 12);
        let j = json(&options(Scenario::Topic, 3, 1), &[t]);
        assert!(j.starts_with("{\"seed\":1,") && j.ends_with("]}]}"));
        assert!(j.contains(
            "\"trials\":0,\"kills\":0,\"verified\":0,\"torn\":0,\"wrong\":2,\"lost\":0,\
             \"duplicates\":0,\"hangs\":0,\"unexpected_exits\":0,\"wall_s\":0.00,\"aborted\":null,"
        ));
        assert!(j.contains("\\\"quoted\\\"\\nline"));
        assert!(j.contains("\"ok\":false"));
    }
}
